"""Pins that tell the truth: each plugin's ``ymir-runner>=X`` is at least the first core version that has every name
of the plugin API it uses (ymir_runner/api_versions.py), and it uses nothing outside that API.

A plugin that pinned ``>=0.1`` while importing ``best_stage_name`` (new after 0.2.0) installed fine next to core
0.2.0 and failed at its first mining task. The check reads the plugin's installed code (its package, not its tests)
with ``ast``: ``import ymir_runner.mod``, ``from ymir_runner[.mod] import X``, attributes of an imported public module
(``mining.mine_candidates``) and of a parameter annotated ``TaskContext`` / ``DecodedImage`` (``context.model_file``).
"""

from __future__ import annotations

import ast
import configparser
import dataclasses
import importlib
import pathlib
import re

import pytest
from packaging.requirements import Requirement

import ymir_runner
from ymir_runner import api_versions
from ymir_runner.api_versions import MEMBERS, MODULES, NAMES, added_in, version_key
from ymir_runner.scaffold import new_plugin

ROOT = pathlib.Path(__file__).resolve().parent.parent
PLUGINS = sorted(path for path in (ROOT / "plugins").iterdir() if (path / "pyproject.toml").exists())
#: Classes whose members a plugin reaches through an annotated parameter.
MEMBER_CLASSES = sorted({key.split(".")[0] for key in MEMBERS} | {"TaskContext", "DecodedImage"})


@dataclasses.dataclass(frozen=True)
class Use:
    """One use of the plugin API: ``where`` (file:line), the dotted name, and the version it needs (None: the
    name is not part of the API)."""

    where: str
    name: str
    version: str | None


def core_pin(distribution: pathlib.Path) -> str:
    """The version in the ``ymir-runner>=X`` requirement of a distribution's setup.cfg or pyproject.toml."""
    setup_cfg = distribution / "setup.cfg"
    if setup_cfg.exists():
        config = configparser.ConfigParser()
        config.read(setup_cfg, encoding="utf-8")
        lines = [line.split("#")[0].strip() for line in config["options"]["install_requires"].splitlines()]
    else:
        # [project] dependencies = ["...", ...] (read without tomllib: Python 3.9 and 3.10 have none)
        text = (distribution / "pyproject.toml").read_text(encoding="utf-8")
        (listed,) = re.findall(r"^dependencies\s*=\s*\[(.*?)\]", text, re.M | re.S)
        lines = re.findall(r'"([^"]+)"', re.sub(r"#.*", "", listed))
    (core,) = [Requirement(line) for line in lines if line and Requirement(line).name == "ymir-runner"]
    (minimum,) = [spec.version for spec in core.specifier if spec.operator == ">="]
    return minimum


def packages(distribution: pathlib.Path) -> list[pathlib.Path]:
    return sorted(path for path in distribution.iterdir() if (path / "__init__.py").exists())


def _annotated_class(annotation: ast.expr | None) -> str | None:
    """``TaskContext`` for ``context: TaskContext``, ``ymir_runner.TaskContext`` or ``"TaskContext"``."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        annotation = ast.parse(annotation.value, mode="eval").body
    name = annotation.attr if isinstance(annotation, ast.Attribute) else getattr(annotation, "id", None)
    return name if name in MEMBER_CLASSES else None


def api_uses(path: pathlib.Path, shown: str) -> list[Use]:
    """Every use of the plugin API in one source file (``shown`` names the file in messages)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    uses: list[Use] = []
    bound: dict[str, str] = {}  # a local name bound to a public module -> that module

    def use(node: ast.AST, module: str, name: str = "") -> None:
        uses.append(Use(f"{shown}:{getattr(node, 'lineno', 0)}", f"{module}.{name}" if name else module,
                        added_in(module, name)))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ymir_runner":
                    use(node, alias.name)
                    # import ymir_runner.mining binds ymir_runner; ... as m binds the module itself
                    bound[alias.asname or "ymir_runner"] = alias.name if alias.asname else "ymir_runner"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] == "ymir_runner":
            for alias in node.names:
                use(node, node.module, alias.name)
                if f"{node.module}.{alias.name}" in MODULES:
                    bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            use(node, bound[node.value.id], node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            arguments = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
            typed = {argument.arg: cls for argument in arguments if (cls := _annotated_class(argument.annotation))}
            for inner in ast.walk(node):
                if isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name) and inner.value.id in typed:
                    member = f"{typed[inner.value.id]}.{inner.attr}"
                    version = MEMBERS.get(member, added_in("ymir_runner", typed[inner.value.id]))
                    uses.append(Use(f"{shown}:{inner.lineno}", f"ymir_runner.{member}", version))
    return uses


def pin_problems(distribution: pathlib.Path, shown: str) -> list[str]:
    """What is wrong with a distribution's pin, one line per use: the file, the name and both versions."""
    pin = core_pin(distribution)
    problems = []
    for package in packages(distribution):
        for path in sorted(package.rglob("*.py")):
            for found in api_uses(path, f"{shown}/{path.relative_to(distribution)}"):
                if found.version is None:
                    problems.append(f"{found.where}: {found.name} is not part of the plugin API "
                                    f"(ymir_runner/api_versions.py)")
                elif version_key(found.version) > version_key(pin):
                    problems.append(f"{found.where}: {found.name} is in the core since {found.version}, but the "
                                    f"plugin requires ymir-runner>={pin}")
    return problems


def required_version(distribution: pathlib.Path) -> tuple[int, ...]:
    return max(version_key(found.version) for package in packages(distribution) for path in package.rglob("*.py")
               for found in api_uses(path, str(path)) if found.version)


def test_there_are_plugins_to_check():
    assert {path.name for path in PLUGINS} >= {"ymir-runner-detection", "ymir-runner-ultralytics"}


@pytest.mark.parametrize("distribution", PLUGINS, ids=lambda path: path.name)
def test_each_plugin_pins_the_first_core_that_has_what_it_uses(distribution):
    assert pin_problems(distribution, f"plugins/{distribution.name}") == []
    # the first such core, not an older or a needlessly newer one
    assert version_key(core_pin(distribution)) == required_version(distribution)


def test_the_scaffold_pins_a_core_that_has_what_it_uses(tmp_path):
    folder = pathlib.Path(new_plugin("pinned", out=str(tmp_path)))
    assert pin_problems(folder, "new-plugin") == []
    assert version_key(core_pin(folder)) >= required_version(folder)


def test_a_name_newer_than_the_pin_is_named_with_both_versions(tmp_path):
    distribution = tmp_path / "ymir-runner-old"
    (distribution / "old").mkdir(parents=True)
    (distribution / "pyproject.toml").write_text('[project]\nname = "ymir-runner-old"\n'
                                                 'dependencies = ["numpy", "ymir-runner>=0.2"]\n')
    (distribution / "old" / "__init__.py").write_text("")
    (distribution / "old" / "tasks.py").write_text(
        "import ymir_runner.mining\n"
        "from ymir_runner import MODEL_INFO_FILE, TaskContext, mining\n"
        "from ymir_runner.sandbox import build_sandbox\n\n\n"
        "def infer(context: TaskContext) -> None:\n"
        "    context.model_file('.pt')\n"
        "    mining.mine_candidates(context)\n"
        "    context.progress.update(1.0)\n")
    assert pin_problems(distribution, "old") == [
        "old/old/tasks.py:2: ymir_runner.MODEL_INFO_FILE is in the core since 0.3, but the plugin requires "
        "ymir-runner>=0.2",
        "old/old/tasks.py:3: ymir_runner.sandbox.build_sandbox is not part of the plugin API "
        "(ymir_runner/api_versions.py)",
        "old/old/tasks.py:7: ymir_runner.TaskContext.model_file is in the core since 0.3, but the plugin requires "
        "ymir-runner>=0.2",
    ]
    assert required_version(distribution) == (0, 3)


# --- the record itself ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module", sorted(MODULES))
def test_the_record_lists_exactly_each_public_modules_names(module):
    """A name added to (or removed from) a public module's ``__all__`` must be recorded here with its version."""
    listed = set(importlib.import_module(module).__all__)
    recorded = set(NAMES[module])
    assert (sorted(listed - recorded), sorted(recorded - listed)) == ([], []), \
        "(in __all__ without a version in ymir_runner/api_versions.py, recorded but not in __all__)"


def test_recorded_members_exist_and_no_version_is_newer_than_the_core():
    for key in MEMBERS:
        cls, member = key.split(".")
        owner = getattr(ymir_runner, cls)
        assert hasattr(owner, member) or member in getattr(owner, "__dataclass_fields__", {}), key
    versions = {*MODULES.values(), *MEMBERS.values(), *(v for names in NAMES.values() for v in names.values())}
    assert max(map(version_key, versions)) == version_key(ymir_runner.__version__), api_versions.__file__
