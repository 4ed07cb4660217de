"""Meta-tests: every hook is documented, called by the core, exercised by a test and listed in the README."""

import inspect
import pathlib
import re

import pytest

from ymir_runner import hookspecs

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
               if name.startswith("ymir_runner_"))
CORE = "\n".join(path.read_text() for path in (ROOT / "ymir_runner").rglob("*.py") if path.name != "hookspecs.py")
TESTS = "\n".join(path.read_text() for path in (ROOT / "tests").glob("*.py"))


def test_there_are_hooks():
    assert len(HOOKS) >= 8


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_documented(name):
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert len(doc) > 60, f"{name} needs a docstring saying when it is called and what it may return"
    assert "called" in doc.lower(), f"{name}'s docstring must say when it is called"


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_called_by_the_core(name):
    assert re.search(rf"\b{name}\b", CORE), f"no core module calls {name}"


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_exercised_by_a_test(name):
    assert re.search(rf"def {name}\(", TESTS), f"no test plugin implements {name}"


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_listed_in_the_readme(name):
    assert name in (ROOT / "README.md").read_text(), f"README.md does not document {name}"


def test_core_never_imports_torch():
    offenders = [str(path) for path in (ROOT / "ymir_runner").rglob("*.py")
                 if re.search(r"^\s*(import torch|from torch)", path.read_text(), re.M)]
    assert offenders == []
