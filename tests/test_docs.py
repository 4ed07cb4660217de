"""docs/plugins.md is executed, as datasette tests its documentation: the guide's plugin is written from its
`# file:` blocks and its own tests are run; every other Python block runs in order in one namespace."""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
FILE = re.compile(r"^# file: (\S+)\n")


def python_blocks(name: str) -> list[str]:
    return BLOCK.findall((DOCS / name).read_text(encoding="utf-8"))


def test_the_guide_has_examples_of_both_kinds():
    blocks = python_blocks("plugins.md")
    assert sum(bool(FILE.match(block)) for block in blocks) >= 4
    assert sum(not FILE.match(block) for block in blocks) >= 3


def write_files(folder: pathlib.Path) -> None:
    """The guide's `# file:` blocks, written under ``folder``."""
    for block in python_blocks("plugins.md"):
        match = FILE.match(block)
        if match:
            path = folder / match.group(1)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block[match.end():], encoding="utf-8")


def test_the_guide_snippets_run(tmp_path, monkeypatch):
    write_files(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # the snippets import the guide's plugin (spawned ranks too)
    namespace: dict = {}
    for block in python_blocks("plugins.md"):
        if not FILE.match(block):
            exec(compile(block, "docs/plugins.md", "exec"), namespace)  # noqa: S102 - the doc's own code


def test_the_guide_plugin_trains_infers_and_mines_with_every_algorithm(tmp_path):
    write_files(tmp_path)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True,
                           timeout=600)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "6 passed" in tests.stdout


@pytest.mark.parametrize("name", ["plugins.md", "mining.md", "segmentation.md", "sdk-run.md"])
def test_relative_links_resolve(name):
    text = (DOCS / name).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s#:]+)(?:#[^)]*)?\)", text):
        assert (DOCS / target).exists(), f"docs/{name} links to a missing {target}"


SHARED = DOCS.parent.parent / "shared"


@pytest.mark.parametrize("name", ["protocol.md", "segmentation.md"])
def test_the_contract_copies_users_read_follow_the_contract(name):
    """docs/<name> is ../shared/<name> (users of the package never see ../shared) below its intro."""
    if not (SHARED / name).exists():
        pytest.skip(f"no ../shared/{name} beside this checkout")
    ours = (DOCS / name).read_text(encoding="utf-8").split("\n## 1. ", 1)[1]
    assert ours == (SHARED / name).read_text(encoding="utf-8").split("\n## 1. ", 1)[1]


# --- README ---------------------------------------------------------------------------------------------------

README = DOCS.parent / "README.md"


def readme_block(after: str, language: str = "bash") -> str:
    """The first ``language`` block of README.md after the line ``after``."""
    text = README.read_text(encoding="utf-8")
    return re.search(rf"^```{language}\n(.*?)^```", text[text.index(after):], re.M | re.S).group(1)


def write_voc_folder(folder: pathlib.Path, count: int) -> None:
    """A user's Pascal-VOC folder: PNG photos with person and car boxes in .xml files beside them."""
    from ymir_runner.testing import voc_text, write_png

    folder.mkdir(parents=True)
    for index in range(count):
        boxes = [(index % 2, 4 + index, 6, 30 + index, 40)]
        write_png(str(folder / f"photo{index}.png"), 64, 48, boxes=[(x1, y1, x2 + 1, y2 + 1, (200, 40, 40))
                                                                 for _, x1, y1, x2, y2 in boxes])
        (folder / f"photo{index}.xml").write_text(voc_text(f"photo{index}.png", (64, 48), boxes, ["person", "car"]))


def test_the_readme_sandbox_workflow_runs_as_written(tmp_path, ymir_fake_entry_point):
    """README's sandbox -> run -> verify commands, run as written (an executor installed from a wheel: the toy
    plugin through a real entry point) on a VOC folder and a folder of new images."""
    toy = (pathlib.Path(__file__).parent / "toy_plugin.py").read_text(encoding="utf-8")
    ymir_fake_entry_point("ymir-readme-toy", "ymir_readme_toy", toy, entry_point="toy")
    write_voc_folder(tmp_path / "my-data", 6)
    write_voc_folder(tmp_path / "new-images", 3)
    for xml_file in (tmp_path / "new-images").glob("*.xml"):
        xml_file.unlink()
    paths = [ymir_fake_entry_point.site_dir, os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    block = readme_block("### Trying an executor on your own data")
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("ymir-runner ")]
    assert len(commands) == 5
    for command in commands:
        done = subprocess.run([sys.executable, "-m", "ymir_runner", *shlex.split(command)[1:]], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr[-2000:]}"
    assert (tmp_path / "work" / "out" / "models" / "result.yaml").is_file()
    assert len((tmp_path / "work-mine" / "out" / "result.tsv").read_text().splitlines()) == 3
    assert (tmp_path / "work-mine" / "out" / "infer-result.json").is_file()


def test_the_readme_plugin_example_is_the_entry_point_it_declares():
    """README's setup.cfg block names the module README's plugin example says it is."""
    entry_points = readme_block("## Writing a plugin", "ini")
    (name, module) = re.findall(r"^\s+(\S+) = (\S+)$", entry_points, re.M)[0]
    example = readme_block("## Writing a plugin", "python")
    assert example.startswith(f"# {module.replace('.', '/')}.py")
    assert f'name="{name}"' in example
