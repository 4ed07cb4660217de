"""`ymir-runner new-plugin`: the distribution it writes builds as a wheel, is found through its entry point
once installed, passes its own tests as generated, and its outputs pass `ymir-runner verify`."""

import json
import os
import subprocess
import sys
import zipfile

import pytest

from ymir_runner import ConfigError
from ymir_runner.cli import main
from ymir_runner.scaffold import new_plugin, parse_tasks
from ymir_runner.testing import TaskTree

BIN = os.path.dirname(sys.executable)


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
    assert "mining_algorithm: aldd" in mining and "one of: aldd, cald, entropy, random" in mining


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


def test_a_subset_of_tasks_and_bad_requests(tmp_path):
    folder = new_plugin("infer-only", parse_tasks("infer"), str(tmp_path))
    package = os.path.join(folder, "ymir_runner_infer_only")
    assert sorted(os.listdir(package)) == ["__init__.py", "data.py", "inference.py", "model.py", "plugin.py"]
    assert sorted(os.listdir(os.path.join(folder, "tests"))) == ["conftest.py", "test_inference.py"]
    with open(os.path.join(package, "plugin.py"), encoding="utf-8") as stream:
        plugin = stream.read()
    assert "tasks={TaskKind.INFER}" in plugin and "mining_algorithms" not in plugin
    with pytest.raises(ConfigError, match="already exists"):
        new_plugin("infer-only", parse_tasks("infer"), str(tmp_path))
    with pytest.raises(ConfigError, match="lowercase"):
        new_plugin("My Plugin", out=str(tmp_path))
    with pytest.raises(ConfigError, match="--tasks 'train'"):
        parse_tasks("train")
