"""Meta-tests: every hook is documented, called by the core, exercised by a test and listed in the README."""

import ast
import collections
import inspect
import os
import pathlib
import re
import sys

import pytest

from ymir_runner import ExecutorSpec, Param, TaskKind, hookimpl, hookspecs

ROOT = pathlib.Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction)
               if name.startswith("ymir_runner_"))
TESTS = "\n".join(path.read_text() for path in (ROOT / "tests").glob("*.py"))


def test_there_are_hooks():
    assert len(HOOKS) >= 8


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_documented(name):
    doc = inspect.getdoc(getattr(hookspecs, name)) or ""
    assert len(doc) > 60, f"{name} needs a docstring saying when it is called and what it may return"
    assert "called" in doc.lower(), f"{name}'s docstring must say when it is called"


class HookRecorder:
    """A plugin implementing every hook: it records each call and does the least a real plugin must."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()

    def _record(self, name: str) -> None:
        self.calls[name] += 1

    def ymir_runner_register_executors(self):
        self._record("ymir_runner_register_executors")
        return [ExecutorSpec(name="recorder", tasks=set(TaskKind),
                             templates={TaskKind.TRAINING: (Param("fail", False, "raise inside training"),)})]

    def ymir_runner_add_commands(self, subparsers):
        self._record("ymir_runner_add_commands")

    def ymir_runner_train(self, context):
        self._record("ymir_runner_train")
        if context.hyper.fail:
            raise ValueError("asked to fail")
        with open(os.path.join(context.training_result.stage_dir("last"), "model.txt"), "w") as stream:
            stream.write("a model")
        context.training_result.add_stage("last", ["model.txt"], {"mAP": 0.5})

    def ymir_runner_mine(self, context):
        self._record("ymir_runner_mine")
        for item in context.candidates:
            context.mining_result.add(item.image, 0.5)

    def ymir_runner_infer(self, context):
        self._record("ymir_runner_infer")

    def ymir_runner_before_task(self, context):
        self._record("ymir_runner_before_task")

    def ymir_runner_after_task(self, context):
        self._record("ymir_runner_after_task")

    def ymir_runner_on_task_error(self, context, error):
        self._record("ymir_runner_on_task_error")

    def ymir_runner_stage_saved(self, context, stage):
        self._record("ymir_runner_stage_saved")


for _hook in HOOKS:
    setattr(HookRecorder, _hook, hookimpl(getattr(HookRecorder, _hook)))


@pytest.fixture(scope="module")
def hook_calls(tmp_path_factory):
    """Every hook the core calls while it lists its commands and runs training, a failing training, and mining
    with inference, through the real dispatcher and command line."""
    from ymir_runner.cli import build_parser
    from ymir_runner.testing import TaskTree, plugin_registry

    recorder = HookRecorder()
    registry = plugin_registry({"recorder": recorder})
    build_parser(registry)
    root = tmp_path_factory.mktemp("hooks")
    assert TaskTree(str(root / "train"), config={"plugin": "recorder"}).run(registry).exit_code == 0
    assert TaskTree(str(root / "fail"), config={"plugin": "recorder", "fail": True}).run(registry).exit_code != 0
    both = TaskTree(str(root / "mine"), kinds=["mining", "infer"], config={"plugin": "recorder"})
    assert both.run(registry).exit_code == 0
    return recorder.calls


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_called_by_the_core(name, hook_calls):
    assert hook_calls[name] > 0, f"the core never called {name} while it listed commands and ran every task"


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_exercised_by_a_test(name):
    assert re.search(rf"def {name}\(", TESTS), f"no test plugin implements {name}"


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_listed_in_the_plugin_guide(name):
    assert name in (ROOT / "docs" / "plugins.md").read_text(), f"docs/plugins.md does not document {name}"


def test_core_never_imports_torch():
    offenders = [str(path) for path in (ROOT / "ymir_runner").rglob("*.py")
                 if re.search(r"^\s*(import torch|from torch)", path.read_text(), re.M)]
    assert offenders == []


# --- the plugin API ---------------------------------------------------------------------------------------------

PUBLIC_MODULES = {"ymir_runner", "ymir_runner.testing", "ymir_runner.mining", "ymir_runner.evaluation",
                  "ymir_runner.cpus", "ymir_runner.pictures", "ymir_runner.stages", "ymir_runner.inference"}
FIRST_PARTY_PACKAGES = sorted(path for path in (ROOT / "plugins").glob("*/*") if (path / "__init__.py").exists())


def core_imports(package: pathlib.Path) -> list[tuple[str, str, str]]:
    """``(file:line, module, name)`` of every import of ymir_runner in ``package`` (name '' for ``import x``)."""
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("ymir_runner"):
                if node.module.split(".")[0] == "ymir_runner":
                    found += [(where, node.module, alias.name) for alias in node.names]
            elif isinstance(node, ast.Import):
                found += [(where, alias.name, "") for alias in node.names if alias.name.split(".")[0] == "ymir_runner"]
    return found


def test_there_are_first_party_plugins():
    assert FIRST_PARTY_PACKAGES


@pytest.mark.parametrize("package", FIRST_PARTY_PACKAGES, ids=lambda path: path.name)
def test_first_party_plugins_use_only_the_plugin_api(package):
    """The first-party plugins are the proof that the public face is enough: they import nothing else."""
    import ymir_runner
    import ymir_runner.cpus
    import ymir_runner.evaluation
    import ymir_runner.inference
    import ymir_runner.mining
    import ymir_runner.pictures
    import ymir_runner.stages
    import ymir_runner.testing

    below = [f"{where}: {module}" for where, module, _ in core_imports(package) if module not in PUBLIC_MODULES]
    assert below == [], "imports below the plugin API"
    unknown = [f"{where}: {module}.{name}" for where, module, name in core_imports(package)
               if name and name not in getattr(sys.modules[module], "__all__", ())]
    assert unknown == [], "names the plugin API does not list in __all__"
    assert ymir_runner.testing


def test_every_public_name_resolves():
    import ymir_runner

    missing = [name for name in ymir_runner.__all__ if getattr(ymir_runner, name, None) is None]
    assert missing == []


def test_the_readme_plugin_example_loads_as_pasted(ymir_fake_entry_point):
    from ymir_runner.plugins import build_plugin_manager

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (source,) = re.findall(r"```python\n(# my_detector/plugin\.py.*?)```", readme, re.S)
    ymir_fake_entry_point("my-detector", "my_detector_plugin", source, entry_point="my-detector")
    registry = build_plugin_manager()
    assert registry.infos["my-detector"].status == "loaded", registry.infos["my-detector"].error
    (executor,) = [executor for executor in registry.executors() if executor.spec.name == "my-detector"]
    assert executor.spec.tasks == {"training", "infer"}
