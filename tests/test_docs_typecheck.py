"""The plugin examples of README.md and docs/plugins.md type-check as pasted, against the core's annotations.

A reader copies them into a plugin that runs mypy: README's ``my_detector/plugin.py`` once failed it (a set where
``ExecutorSpec`` declared a frozenset). Every Python block of both files is written out as the reader would have
it: README's plugin as ``my_detector/plugin.py`` (its task modules are the reader's own: their imports are not
checked), the guide's ``# file: PATH`` blocks at their paths (the ``meanbox`` plugin and its tests), each other
guide block as a module of its own; then one mypy run checks them all, with the project's options (setup.cfg).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
FILE = re.compile(r"^# file: (\S+)\n")
README_PLUGIN = re.compile(r"^# (my_detector/plugin\.py)")
#: mypy's cache between runs (a cold run checks the core's imports too: numpy, PIL).
CACHE = os.path.join(tempfile.gettempdir(), f"ymir-runner-mypy-docs-{os.getuid()}")

CONFIG = """\
[mypy]
warn_unused_ignores = True
warn_redundant_casts = True
no_implicit_optional = True
check_untyped_defs = True
cache_dir = {cache}

# the core is checked by its own run (.ci/run): here only its annotations are used
[mypy-ymir_runner.*]
follow_imports = silent

[mypy-easydict.*,tensorboardX.*,ymir_exc.*,faster_coco_eval.*]
ignore_missing_imports = True

# README's plugin imports its task modules, which the reader writes
[mypy-my_detector.*]
ignore_missing_imports = True
"""


def python_blocks(path: pathlib.Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


def write_examples(folder: pathlib.Path) -> list[str]:
    """Every plugin example of README.md and docs/plugins.md, written under ``folder``; returns the paths."""
    written = []

    def write(relative: str, text: str) -> None:
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(relative)

    (readme_plugin,) = [block for block in python_blocks(ROOT / "README.md") if README_PLUGIN.match(block)]
    write("my_detector/__init__.py", "")
    write("my_detector/plugin.py", readme_plugin)
    for index, block in enumerate(python_blocks(ROOT / "docs" / "plugins.md")):
        match = FILE.match(block)
        if match:
            write(match.group(1), block[match.end():])
        else:
            write(f"guide_snippets/block_{index:02d}.py", block)
    return written


def test_the_readme_and_guide_examples_type_check_as_pasted(tmp_path):
    written = write_examples(tmp_path)
    assert {"my_detector/plugin.py", "meanbox/plugin.py", "meanbox/tasks.py"} <= set(written)
    (tmp_path / "mypy.ini").write_text(CONFIG.format(cache=CACHE), encoding="utf-8")
    # the core as an installed wheel shows it (an editable install's import hook is invisible to mypy)
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    checked = subprocess.run([sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--explicit-package-bases",
                              "--no-error-summary", *written], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
    assert checked.returncode == 0, "the examples fail mypy as pasted:\n" + checked.stdout + checked.stderr
