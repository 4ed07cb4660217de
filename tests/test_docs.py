"""docs/plugins.md is executed, as datasette tests its documentation: the guide's plugin is written from its
`# file:` blocks and its own tests are run; every other Python block runs in order in one namespace."""

import os
import pathlib
import re
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


@pytest.mark.parametrize("name", ["plugins.md", "mining.md"])
def test_relative_links_resolve(name):
    text = (DOCS / name).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s#:]+)(?:#[^)]*)?\)", text):
        assert (DOCS / target).exists(), f"docs/{name} links to a missing {target}"


SHARED = DOCS.parent.parent / "shared" / "protocol.md"


@pytest.mark.skipif(not SHARED.exists(), reason="no ../shared/protocol.md beside this checkout")
def test_the_protocol_copy_users_read_follows_the_contract():
    """docs/protocol.md is ../shared/protocol.md (users of the package never see ../shared) below its intro."""
    ours = (DOCS / "protocol.md").read_text(encoding="utf-8").split("\n## 1. ", 1)[1]
    assert ours == SHARED.read_text(encoding="utf-8").split("\n## 1. ", 1)[1]
