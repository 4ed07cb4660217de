"""Plugin discovery, registration records, selection by name, blocking and broken plugins."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import toy_plugin

from ymir_runner import ConfigError, ExecutorSpec, Param, ReturnCode, TaskKind
from ymir_runner.cli import plugin_table
from ymir_runner.errors import ObjectTypeError
from ymir_runner.plugins import DISABLE_ENV_VAR, PluginLoadError, build_plugin_manager

TOY_SOURCE = """
import ymir_runner
from ymir_runner import ExecutorSpec, TaskKind

@ymir_runner.hookimpl
def ymir_runner_register_executors():
    return [ExecutorSpec(name={name!r}, tasks={{TaskKind.MINING}}, description="fake")]

@ymir_runner.hookimpl
def ymir_runner_mine(context):
    for item in context.candidates:
        context.mining_result.add(item.image, 1.0)
"""


def toy_source(name="fake"):
    return TOY_SOURCE.format(name=name)


def test_entry_point_plugin_is_discovered_and_runs(ymir_fake_entry_point, ymir_task):
    ymir_fake_entry_point("ymir-fake-plugin", "ymir_fake_mod", toy_source(), entry_point="fake", version="2.3")
    registry = build_plugin_manager()
    info = registry.infos["fake"]
    assert (info.distribution, info.version, info.status) == ("ymir-fake-plugin", "2.3", "loaded")
    assert [e.spec.name for e in registry.executors()] == ["fake"]

    outcome = ymir_task(kinds=["mining"]).run(registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert len(outcome.result_tsv()) == 4
    assert "ymir-fake-plugin==2.3" in outcome.stderr  # active plugins and versions are logged


def test_cli_lists_entry_point_plugins_in_a_fresh_process(ymir_fake_entry_point):
    ymir_fake_entry_point("ymir-fake-plugin", "ymir_fake_mod", toy_source(), entry_point="fake", version="2.3")
    ymir_fake_entry_point("ymir-broken-plugin", "ymir_broken_mod", "raise ImportError('no such thing')",
                          entry_point="broken")
    env = dict(os.environ, PYTHONPATH=ymir_fake_entry_point.site_dir)
    result = subprocess.run([sys.executable, "-m", "ymir_runner", "plugins", "--json"], env=env,
                            capture_output=True, text=True, check=True)
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["fake"]["status"] == "loaded"
    assert rows["fake"]["version"] == "2.3"
    assert rows["fake"]["executors"] == [
        {"name": "fake", "tasks": ["mining"], "object_types": [2], "description": "fake"}]
    assert rows["fake"]["hooks"] == ["ymir_runner_mine", "ymir_runner_register_executors"]
    assert rows["broken"]["status"] == "failed"
    assert "no such thing" in rows["broken"]["error"]

    text = subprocess.run([sys.executable, "-m", "ymir_runner", "plugins"], env=env, capture_output=True,
                          text=True, check=True).stdout
    assert "fake (ymir-fake-plugin 2.3): loaded" in text
    assert "broken (ymir-broken-plugin 1.0): failed" in text


def test_blocked_plugin_is_never_imported(ymir_fake_entry_point, monkeypatch):
    ymir_fake_entry_point("ymir-fake-plugin", "ymir_fake_mod", "raise SystemExit('imported!')",
                          entry_point="fake")
    monkeypatch.setenv(DISABLE_ENV_VAR, "other, fake")
    registry = build_plugin_manager()
    assert registry.infos["fake"].status == "blocked"
    assert "ymir_fake_mod" not in sys.modules


def test_blocking_by_distribution_name(ymir_fake_entry_point):
    ymir_fake_entry_point("ymir-fake-plugin", "ymir_fake_mod", toy_source(), entry_point="fake")
    registry = build_plugin_manager(blocked=["ymir-fake-plugin"])
    assert registry.infos["fake"].status == "blocked"
    assert registry.executors() == []


def test_broken_unrelated_plugin_is_a_warning(ymir_fake_entry_point, ymir_task, caplog):
    ymir_fake_entry_point("ymir-fake-plugin", "ymir_fake_mod", toy_source(), entry_point="fake")
    ymir_fake_entry_point("ymir-broken-plugin", "ymir_broken_mod", "1/0", entry_point="broken")
    registry = build_plugin_manager()
    assert "failed to load" in caplog.text and "ymir-broken-plugin" in caplog.text
    outcome = ymir_task(kinds=["mining"]).run(registry)
    assert outcome.exit_code == 0, outcome.stderr


def test_broken_chosen_plugin_is_a_config_error_naming_the_distribution(ymir_fake_entry_point, ymir_task):
    ymir_fake_entry_point("ymir-broken-plugin", "ymir_broken_mod", "1/0", entry_point="broken", version="0.9")
    outcome = ymir_task(kinds=["mining"], config={"plugin": "broken"}).run(build_plugin_manager())
    assert outcome.exit_code != 0
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.CONFIG)
    assert "ymir-broken-plugin 0.9" in outcome.last_stderr_line
    assert "ZeroDivisionError" in outcome.last_stderr_line


def test_only_broken_plugins_installed_names_them(ymir_fake_entry_point, ymir_task):
    ymir_fake_entry_point("ymir-broken-plugin", "ymir_broken_mod", "1/0", entry_point="broken")
    outcome = ymir_task(kinds=["mining"]).run(build_plugin_manager())
    assert outcome.return_code == ReturnCode.CONFIG
    assert "no installed plugin handles mining" in outcome.last_stderr_line
    assert "ymir-broken-plugin" in outcome.last_stderr_line


def test_strict_mode_raises_on_broken_plugin(ymir_fake_entry_point):
    ymir_fake_entry_point("ymir-broken-plugin", "ymir_broken_mod", "1/0", entry_point="broken")
    with pytest.raises(PluginLoadError, match="ymir-broken-plugin"):
        build_plugin_manager(strict=True)


def test_plugin_with_unknown_hook_fails_validation(ymir_fake_entry_point):
    source = "import ymir_runner\n@ymir_runner.hookimpl\ndef ymir_runner_no_such_hook():\n    pass\n"
    ymir_fake_entry_point("ymir-odd-plugin", "ymir_odd_mod", source, entry_point="odd")
    registry = build_plugin_manager()
    assert registry.infos["odd"].status == "failed"
    assert "ymir_runner_no_such_hook" in registry.infos["odd"].error
    assert registry.pm.get_plugin("odd") is None


class Named:
    """A plugin object with one executor of a given name for given tasks."""

    def __init__(self, name, tasks=(TaskKind.MINING,), object_types=(2,)):
        self.spec = ExecutorSpec(name=name, tasks=set(tasks), object_types=set(object_types))
        self.calls = 0

    def ymir_runner_register_executors(self):
        return [self.spec]

    def ymir_runner_mine(self, context):
        for item in context.candidates:
            context.mining_result.add(item.image, 0.5)
        self.calls += 1


for hook in ("ymir_runner_register_executors", "ymir_runner_mine"):
    setattr(Named, hook, toy_plugin.ymir_runner.hookimpl(getattr(Named, hook)))


def test_single_provider_is_used_without_naming_it(ymir_registry):
    ymir_registry.register(Named("alpha"), "alpha")
    assert ymir_registry.select(TaskKind.MINING, 2, None).spec.name == "alpha"


def test_several_providers_need_the_plugin_key(ymir_registry, ymir_task):
    ymir_registry.register(Named("alpha"), "alpha")
    ymir_registry.register(Named("beta"), "beta")
    with pytest.raises(ConfigError, match="several executors can run mining.*alpha.*beta.*'plugin'"):
        ymir_registry.select(TaskKind.MINING, 2, None)
    assert ymir_registry.select(TaskKind.MINING, 2, "beta").spec.name == "beta"

    outcome = ymir_task(kinds=["mining"], config={"plugin": "beta"}).run(ymir_registry)
    assert outcome.exit_code == 0, outcome.stderr
    outcome = ymir_task(kinds=["mining"]).run(ymir_registry)
    assert outcome.return_code == ReturnCode.CONFIG
    assert "alpha" in outcome.last_stderr_line and "beta" in outcome.last_stderr_line


def test_unknown_plugin_name_lists_installed(ymir_registry):
    ymir_registry.register(Named("alpha"), "alpha")
    with pytest.raises(ConfigError, match="no executor named 'gamma'; installed: alpha"):
        ymir_registry.select(TaskKind.MINING, 2, "gamma")


def test_chosen_plugin_must_handle_the_task_and_object_type(ymir_registry):
    ymir_registry.register(Named("alpha"), "alpha")
    with pytest.raises(ConfigError, match="does not handle training"):
        ymir_registry.select(TaskKind.TRAINING, 2, "alpha")
    with pytest.raises(ObjectTypeError, match="object_type 3"):
        ymir_registry.select(TaskKind.MINING, 3, "alpha")
    with pytest.raises(ObjectTypeError) as error:
        ymir_registry.select(TaskKind.MINING, 4, None)
    assert error.value.code == ReturnCode.OBJECT_TYPE


def test_selection_considers_object_type(ymir_registry):
    ymir_registry.register(Named("det"), "det")
    ymir_registry.register(Named("seg", object_types=(3,)), "seg")
    assert ymir_registry.select(TaskKind.MINING, 3, None).spec.name == "seg"
    assert ymir_registry.select(TaskKind.MINING, 2, None).spec.name == "det"


def test_duplicate_executor_names_are_refused_naming_both_distributions(ymir_fake_entry_point):
    ymir_fake_entry_point("ymir-first", "ymir_first_mod", toy_source("same"), entry_point="first")
    ymir_fake_entry_point("ymir-second", "ymir_second_mod", toy_source("same"), entry_point="second")
    registry = build_plugin_manager()
    with pytest.raises(PluginLoadError, match="'same' is registered by both.*ymir-first.*ymir-second"):
        registry.executors()


def also_blocking(name):
    """$YMIR_RUNNER_DISABLE_PLUGINS as the test session set it (plugins installed on the machine), plus ``name``."""
    return ",".join(filter(None, [os.environ.get(DISABLE_ENV_VAR, ""), name]))


def test_two_distributions_with_one_plugin_name_are_both_loaded(ymir_fake_entry_point, caplog):
    ymir_fake_entry_point("ymir-first", "ymir_first_mod", toy_source("first"), entry_point="same", version="1.0")
    ymir_fake_entry_point("ymir-second", "ymir_second_mod", toy_source("second"), entry_point="same", version="2.0")
    registry = build_plugin_manager()
    assert sorted(executor.spec.name for executor in registry.executors()) == ["first", "second"]
    names = {info.distribution: info.name for info in registry.infos.values()}
    plain, renamed = sorted([names["ymir-first"], names["ymir-second"]], key=len)  # sys.path order decides
    assert plain == "same" and renamed in {"ymir-first:same", "ymir-second:same"}
    (warning,) = [record.getMessage() for record in caplog.records if "declared by both" in record.getMessage()]
    assert "distribution ymir-first 1.0" in warning and "distribution ymir-second 2.0" in warning


def test_a_blocked_plugin_of_the_same_name_leaves_the_name_to_the_loaded_one(ymir_fake_entry_point, monkeypatch):
    ymir_fake_entry_point("ymir-first", "ymir_first_mod", toy_source("first"), entry_point="same")
    ymir_fake_entry_point("ymir-second", "ymir_second_mod", toy_source("second"), entry_point="same")
    monkeypatch.setenv(DISABLE_ENV_VAR, also_blocking("ymir-first"))
    registry = build_plugin_manager()
    assert registry.infos["same"].distribution == "ymir-second"
    assert registry.infos["ymir-first:same"].status == "blocked"
    assert [executor.spec.name for executor in registry.executors()] == ["second"]


def test_asking_for_a_blocked_plugin_says_it_is_blocked(ymir_fake_entry_point, ymir_task, monkeypatch):
    ymir_fake_entry_point("ymir-fake-plugin", "ymir_fake_mod", toy_source(), entry_point="fake")
    blocked = also_blocking("fake")
    monkeypatch.setenv(DISABLE_ENV_VAR, blocked)
    outcome = ymir_task(kinds=["mining"], config={"plugin": "fake"}).run(build_plugin_manager())
    assert outcome.return_code == ReturnCode.CONFIG
    assert outcome.last_stderr_line == (
        f"ymir-runner: error {int(ReturnCode.CONFIG)}: config key 'plugin': plugin 'fake' (distribution "
        f"ymir-fake-plugin 1.0) is blocked by {DISABLE_ENV_VAR}={blocked!r}; remove it from that list")
    outcome = ymir_task(kinds=["mining"], config={"plugin": "other"}).run(build_plugin_manager())
    assert f"no executor named 'other'; installed: none; blocked by {DISABLE_ENV_VAR}: " in outcome.last_stderr_line
    assert "'fake' (distribution ymir-fake-plugin 1.0)" in outcome.last_stderr_line


def test_plugins_listing_into_a_closed_pipe_is_quiet(ymir_fake_entry_point):
    """``ymir-runner plugins | head -3``: the reader goes away before the listing is written."""
    ymir_fake_entry_point("ymir-fake-plugin", "ymir_fake_mod", toy_source(), entry_point="fake")
    env = dict(os.environ, PYTHONPATH=ymir_fake_entry_point.site_dir)
    for command in (["plugins"], ["plugins", "--json"]):
        process = subprocess.Popen([sys.executable, "-m", "ymir_runner", *command], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        process.stdout.close()
        stderr = process.stderr.read().decode()
        assert process.wait() == 128 + signal.SIGPIPE
        assert stderr == ""


def test_executor_claiming_a_task_it_does_not_implement_is_left_out(ymir_registry):
    class Liar:
        @toy_plugin.ymir_runner.hookimpl
        def ymir_runner_register_executors(self):
            return [ExecutorSpec(name="liar", tasks={TaskKind.TRAINING})]

    ymir_registry.register(Liar(), "liar")
    assert ymir_registry.executors() == []
    assert ymir_registry.infos["liar"].status == "failed"
    assert "ymir_runner_train" in ymir_registry.infos["liar"].error


def test_registration_returning_garbage_marks_the_plugin_failed(ymir_registry):
    class Garbage:
        @toy_plugin.ymir_runner.hookimpl
        def ymir_runner_register_executors(self):
            return ["not a spec"]

    ymir_registry.register(Garbage(), "garbage")
    ymir_registry.register(Named("alpha"), "alpha")
    assert [e.spec.name for e in ymir_registry.executors()] == ["alpha"]
    assert "not ExecutorSpec" in ymir_registry.infos["garbage"].error


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "1bad", "tasks": {"mining"}}, "must start with a letter"),
    ({"name": "ok", "tasks": set()}, "handles no task"),
    ({"name": "ok", "tasks": {"mining"}, "templates": {"training": ()}}, "does not handle"),
    ({"name": "ok", "tasks": {"mining"}, "templates": {"mining": (Param("gpu_id", ""),)}}, "reserved"),
    ({"name": "ok", "tasks": {"mining"}, "templates": {"mining": (Param("a", 1), Param("a", 2))}}, "repeats"),
])
def test_executor_spec_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExecutorSpec(**kwargs)


def test_param_choices_must_contain_default():
    with pytest.raises(ValueError, match="not in"):
        Param("algorithm", "nope", choices=("random", "entropy"))


def test_observer_plugin_sees_stages_without_handling_the_task(ymir_registry, ymir_task):
    events = []

    class Observer:
        @toy_plugin.ymir_runner.hookimpl
        def ymir_runner_before_task(self, context):
            events.append(("before", context.kind.value, context.executor.name))

        @toy_plugin.ymir_runner.hookimpl
        def ymir_runner_stage_saved(self, context, stage):
            events.append(("stage", stage.name, stage.metrics["mAP"]))

        @toy_plugin.ymir_runner.hookimpl
        def ymir_runner_after_task(self, context):
            events.append(("after", context.kind.value))

    ymir_registry.register(toy_plugin, "toy")
    ymir_registry.register(Observer(), "observer")
    assert ymir_registry.select(TaskKind.TRAINING, 2, None).spec.name == "toy"  # observers are not candidates
    outcome = ymir_task(config={"epochs": 2}).run(ymir_registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert events == [("before", "training", "toy"), ("stage", "epoch_1", pytest.approx(1 / 3)),
                      ("stage", "epoch_2", pytest.approx(2 / 3)), ("after", "training")]


def test_task_hook_is_called_only_on_the_chosen_plugin(ymir_registry, ymir_task):
    alpha, beta = Named("alpha"), Named("beta")
    ymir_registry.register(alpha, "alpha")
    ymir_registry.register(beta, "beta")
    assert ymir_task(kinds=["mining"], config={"plugin": "alpha"}).run(ymir_registry).exit_code == 0
    assert (alpha.calls, beta.calls) == (1, 0)


def test_tracing_env_var_writes_hook_calls(ymir_fake_entry_point, tmp_path):
    ymir_fake_entry_point("ymir-fake-plugin", "ymir_fake_mod", toy_source(), entry_point="fake")
    env = dict(os.environ, PYTHONPATH=ymir_fake_entry_point.site_dir, YMIR_RUNNER_TRACE="1")
    result = subprocess.run([sys.executable, "-m", "ymir_runner", "plugins"], env=env, capture_output=True,
                            text=True, check=True)
    assert "[ymir-runner trace]" in result.stderr
    assert "ymir_runner_register_executors" in result.stderr


def test_plugin_table_lists_hooks_and_tasks(ymir_registry):
    ymir_registry.register(toy_plugin, "toy")
    rows = {row["name"]: row for row in plugin_table(ymir_registry)}
    assert rows["ymir_runner.builtin"]["distribution"] == "ymir-runner"
    assert rows["ymir_runner.builtin"]["executors"] == []
    row = rows["toy"]
    assert row["status"] == "loaded"
    assert row["executors"][0]["tasks"] == ["infer", "mining", "training"]
    assert "ymir_runner_train" in row["hooks"]


def test_listing_plugins_does_not_import_torch(installed_plugin_distributions):
    """With the installed plugins really loaded (the detection plugin in CI), not the blocked ones of the
    autouse fixture: listing them must not import torch, which only their task hooks may import."""
    if not installed_plugin_distributions:
        pytest.skip("no plugin distribution is installed beside the core")
    code = textwrap.dedent("""
        import sys
        from ymir_runner.cli import main
        main(["plugins", "--json"])
        assert "torch" not in sys.modules, "torch was imported"
    """)
    env = {key: value for key, value in os.environ.items() if key != DISABLE_ENV_VAR}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    listed = {row["distribution"]: row for row in json.loads(result.stdout)}
    for distribution in installed_plugin_distributions:
        assert listed[distribution]["status"] == "loaded", listed[distribution]["error"]
        assert listed[distribution]["executors"], f"{distribution} registered no executor"


def test_builtin_observer_logs_stages_and_can_be_blocked(ymir_task):
    registry = build_plugin_manager(autoload=False)
    registry.register(toy_plugin, "toy")
    outcome = ymir_task(config={"epochs": 2}).run(registry)
    assert "stage epoch_2 saved (mAP 0.6667, mAR 0.5000; files model.json); best so far: epoch_2" in outcome.stderr
    assert "training finished in" in outcome.stderr

    registry = build_plugin_manager(autoload=False, blocked=["ymir_runner.builtin"])
    registry.register(toy_plugin, "toy")
    assert registry.infos["ymir_runner.builtin"].status == "blocked"
    outcome = ymir_task(config={"epochs": 2}).run(registry)
    assert outcome.exit_code == 0 and "stage epoch_2 saved" not in outcome.stderr


COMMAND_PLUGIN = """
import ymir_runner

def hello(args):
    print(f"hello {args.who}")
    return 3

@ymir_runner.hookimpl
def ymir_runner_add_commands(subparsers):
    parser = subparsers.add_parser("hello", help="say hello")
    parser.add_argument("who")
    parser.set_defaults(handler=hello)
"""


def test_plugins_add_cli_commands(ymir_fake_entry_point):
    ymir_fake_entry_point("ymir-hello", "ymir_hello_mod", COMMAND_PLUGIN, entry_point="hello")
    ymir_fake_entry_point("ymir-bad-cmd", "ymir_bad_cmd_mod",
                          COMMAND_PLUGIN.replace('parser.add_argument("who")', 'raise RuntimeError("oops")')
                          .replace('"hello"', '"hello2"'), entry_point="badcmd")
    env = dict(os.environ, PYTHONPATH=ymir_fake_entry_point.site_dir)
    result = subprocess.run([sys.executable, "-m", "ymir_runner", "hello", "world"], env=env,
                            capture_output=True, text=True)
    assert (result.returncode, result.stdout) == (3, "hello world\n")
    assert "'badcmd' failed to add its commands" in result.stderr
    listing = subprocess.run([sys.executable, "-m", "ymir_runner", "--help"], env=env, capture_output=True,
                             text=True, check=True).stdout
    assert "say hello" in listing
