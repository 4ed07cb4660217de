"""`ymir-runner new-plugin`: the distribution it writes builds as a wheel, is found through its entry point
once installed, passes its own tests as generated, and its outputs pass `ymir-runner verify`."""

import ast
import configparser
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile

import pytest
from packaging.requirements import Requirement

from ymir_runner import ConfigError, __version__
from ymir_runner.cli import main
from ymir_runner.scaffold import new_plugin, parse_tasks
from ymir_runner.testing import TaskTree

BIN = os.path.dirname(sys.executable)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: mypy's cache between runs (a cold run reads the core's imports too)
MYPY_CACHE = os.path.join(tempfile.gettempdir(), f"ymir-runner-mypy-scaffold-{os.getuid()}")


def install_wheel(source: str, site: str) -> str:
    """Build ``source`` as a wheel (no network) and unpack it into ``site``, as pip would install it."""
    wheels = os.path.join(os.path.dirname(site), "wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", wheels, source], check=True, capture_output=True)
    (wheel,) = os.listdir(wheels)
    with zipfile.ZipFile(os.path.join(wheels, wheel)) as archive:
        archive.extractall(site)
    return wheel


def ymir_runner(site: str, *args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": site}
    return subprocess.run([os.path.join(BIN, "ymir-runner"), *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The scaffold of executor ``colours`` (all tasks), built and installed into a folder of its own."""
    root = tmp_path_factory.mktemp("scaffold")
    assert main(["new-plugin", "colours", "--out", str(root)]) == 0
    source = str(root / "ymir-runner-colours")
    site = str(root / "site")
    wheel = install_wheel(source, site)
    return source, site, wheel


def test_the_wheel_declares_the_entry_point(installed):
    _source, site, wheel = installed
    assert wheel.startswith("ymir_runner_colours-0.1.0-")
    (info,) = [name for name in os.listdir(site) if name.endswith(".dist-info")]
    with open(os.path.join(site, info, "entry_points.txt"), encoding="utf-8") as stream:
        assert "[ymir_runner]\ncolours = ymir_runner_colours.plugin" in stream.read()


def test_installed_it_is_listed_with_its_tasks_and_templates(installed, tmp_path):
    _source, site, _wheel = installed
    listed = ymir_runner(site, "plugins", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = [row for row in json.loads(listed.stdout) if row["name"] == "colours"]
    assert row["status"] == "loaded" and row["distribution"] == "ymir-runner-colours"
    assert row["executors"][0]["tasks"] == ["infer", "mining", "training"]
    written = ymir_runner(site, "img-man", "--out", str(tmp_path / "img-man"))
    assert written.returncode == 0, written.stderr
    mining = (tmp_path / "img-man" / "mining-template.yaml").read_text()
    assert "mining_algorithm: aldd" in mining and "legal values: one of 'aldd', 'cald', 'entropy', 'random'" in mining


def test_its_own_tests_pass_as_generated(installed):
    source, site, _wheel = installed
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=source,
                           env={**os.environ, "PYTHONPATH": site}, capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "7 passed" in tests.stdout


def test_cli_runs_train_then_mine_and_infer_and_verify_accepts_them(installed, tmp_path):
    """As the platform would: `ymir-runner run` in a process of its own, then `ymir-runner verify`."""
    _source, site, _wheel = installed
    training = TaskTree(str(tmp_path / "training"), images=6)
    ran = ymir_runner(site, "run", "--env", training.env_file, "--root", training.root)
    assert ran.returncode == 0, ran.stderr
    checked = ymir_runner(site, "verify", training.out_dir, "--task", "training", "--task-id", "t-test")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for algorithm in ("aldd", "cald", "entropy", "random"):
        tree = TaskTree(str(tmp_path / algorithm), kinds=("mining", "infer"), models_from=training.local("/out/models"),
                        config={"mining_algorithm": algorithm})
        ran = ymir_runner(site, "run", "--env", tree.env_file, "--root", tree.root)
        assert ran.returncode == 0, ran.stderr
        assert f"mining ({algorithm}): scored 4 images" in ran.stderr
        checked = ymir_runner(site, "verify", tree.out_dir, "--task", "mining", "--task", "infer", "--candidates",
                              tree.local("/in/candidate-index.tsv"), "--root", tree.root, "--class-names", "cat,dog")
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_readme_installs_the_core_first_and_links_only_pages_that_exist(installed, capsys, tmp_path):
    """ymir-runner is not on PyPI: the README says so and installs the core (a checkout or a wheel) before the
    plugin; its one link is YMIR's repository (it once linked a PyPI page of ymir-runner that does not exist)."""
    source, _site, _wheel = installed
    with open(os.path.join(source, "README.md"), encoding="utf-8") as stream:
        readme = stream.read()
    assert re.findall(r"https?://[^\s)>]+", readme) == ["https://github.com/IndustryEssentials/ymir"]
    assert f"requires `ymir-runner>={__version__}` (setup.cfg), and ymir-runner is not published on PyPI" in readme
    core = readme.index("pip install -e /path/to/ymir-runner ")
    assert core < readme.index("pip wheel --no-deps -w wheelhouse /path/to/ymir-runner") < readme.index(
        'pip install -e ".[test]"')
    assert main(["new-plugin", "other", "--out", str(tmp_path)]) == 0
    assert "ymir-runner is not on PyPI: " in capsys.readouterr().out


def test_its_requirement_on_the_core_is_met_by_a_wheel_of_the_core(installed, tmp_path):
    """Outside a development checkout: the generated setup.cfg asks for ymir-runner>=<this core's version>, the
    wheel its README has a user build from a checkout meets it, and the plugin's tests pass with the core imported
    from that wheel's files."""
    source, site, _wheel = installed
    config = configparser.ConfigParser()
    config.read(os.path.join(source, "setup.cfg"), encoding="utf-8")
    lines = [line.strip() for line in config["options"]["install_requires"].splitlines()]
    requirements = [Requirement(line) for line in lines if line and not line.startswith("#")]
    (core,) = [requirement for requirement in requirements if requirement.name == "ymir-runner"]
    assert str(core.specifier) == f">={__version__}"
    checkout = tmp_path / "ymir-runner"  # a copy: building in the shared checkout would write build/ into it
    shutil.copytree(os.path.join(REPO, "ymir_runner"), checkout / "ymir_runner",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(os.path.join(REPO, name), checkout / name)
    core_site = str(tmp_path / "core-site")
    core_wheel = install_wheel(str(checkout), core_site)
    assert core_wheel.startswith("ymir_runner-") and core.specifier.contains(core_wheel.split("-")[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([core_site, site])}
    imported = subprocess.run([sys.executable, "-c", "import ymir_runner; print(ymir_runner.__file__)"], cwd=source,
                              env=env, capture_output=True, text=True, check=True)
    assert imported.stdout.startswith(core_site)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=source,
                           env=env, capture_output=True, text=True, timeout=600)
    assert tests.returncode == 0 and "7 passed" in tests.stdout, tests.stdout + tests.stderr


def test_a_subset_of_tasks_and_bad_requests(tmp_path):
    folder = new_plugin("infer-only", parse_tasks("infer"), str(tmp_path))
    package = os.path.join(folder, "ymir_runner_infer_only")
    assert sorted(os.listdir(package)) == ["__init__.py", "inference.py", "model.py", "plugin.py", "predict.py",
                                           "templates.py"]
    assert sorted(os.listdir(os.path.join(folder, "tests"))) == ["conftest.py", "test_inference.py"]
    with open(os.path.join(package, "plugin.py"), encoding="utf-8") as stream:
        plugin = stream.read()
    assert "tasks={TaskKind.INFER}" in plugin and "mining_algorithms" not in plugin
    assert "stage_evaluation" not in plugin
    with pytest.raises(ConfigError, match="already exists"):
        new_plugin("infer-only", parse_tasks("infer"), str(tmp_path))
    with pytest.raises(ConfigError, match="lowercase"):
        new_plugin("My Plugin", out=str(tmp_path))
    with pytest.raises(ConfigError, match="--tasks 'train'"):
        parse_tasks("train")


def test_every_task_and_hook_is_typed_against_the_task_context(tmp_path):
    """The template teaches every new plugin its layout and its types: plugin.py holds the hooks only, each task
    module's function and each hook takes ``context: TaskContext`` (never ``Any``), and the package type-checks
    against the core's annotations."""
    folder = new_plugin("typed", out=str(tmp_path))
    package = pathlib.Path(folder) / "ymir_runner_typed"
    plugin = ast.parse((package / "plugin.py").read_text(encoding="utf-8"))
    functions = [node for node in plugin.body if isinstance(node, ast.FunctionDef)]
    assert sorted(function.name for function in functions) == ["ymir_runner_infer", "ymir_runner_mine",
                                                               "ymir_runner_register_executors", "ymir_runner_train"]
    for module, function in (("plugin", "ymir_runner_train"), ("plugin", "ymir_runner_mine"),
                             ("plugin", "ymir_runner_infer"), ("training", "train"), ("mining", "mine"),
                             ("inference", "infer")):
        tree = ast.parse((package / f"{module}.py").read_text(encoding="utf-8"))
        (node,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == function]
        assert [(arg.arg, ast.unparse(arg.annotation)) for arg in node.args.args] == [("context", "TaskContext")]
    assert not any("Any" in path.read_text(encoding="utf-8") for path in package.glob("*.py"))
    # mypy reads the core as an installed wheel shows it (an editable install's import hook is invisible to it)
    checked = subprocess.run([sys.executable, "-m", "mypy", "--check-untyped-defs", "--no-implicit-optional",
                              "--follow-imports", "silent", "--cache-dir", MYPY_CACHE, "ymir_runner_typed"],
                             cwd=folder, env={**os.environ, "MYPYPATH": REPO}, capture_output=True, text=True,
                             timeout=600)
    assert checked.returncode == 0, checked.stdout + checked.stderr
