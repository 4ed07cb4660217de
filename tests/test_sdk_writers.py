"""The ymir-exc SDK's writers during a task (ymir_runner/sdk.py): every writer of the installed SDK, and of fake SDKs
that carry the real signatures of the other lines (1.1 git, 1.3.0, the 2.1.0 tag, the 2.x branch), called by
keyword and positionally from a plugin's hook in a real run; what the platform would read afterwards is checked.
"""

import importlib
import inspect
import os
import sys
import textwrap

import pytest

import ymir_runner
from ymir_runner import TaskKind

ALL_KINDS = (TaskKind.TRAINING, TaskKind.MINING, TaskKind.INFER)


def sdk_executor(body, kinds=ALL_KINDS):
    """A plugin with executor "sdk" whose task hooks all run ``body(context)``."""

    class SdkExecutor:
        @ymir_runner.hookimpl
        def ymir_runner_register_executors(self):
            return [ymir_runner.ExecutorSpec(name="sdk", tasks=set(kinds))]

        @ymir_runner.hookimpl
        def ymir_runner_train(self, context):
            body(context)

        @ymir_runner.hookimpl
        def ymir_runner_mine(self, context):
            body(context)

        @ymir_runner.hookimpl
        def ymir_runner_infer(self, context):
            body(context)

    return SdkExecutor()


def run_with(ymir_registry, tree, body):
    ymir_registry.register(sdk_executor(body), "sdk")
    return tree.run(ymir_registry)


def models_dir():
    from ymir_exc import env

    return env.get_current_env().output.models_dir


def write_file(folder, name, text="weights"):
    path = os.path.join(folder, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as stream:
        stream.write(text)
    return path


def save_model(name, text):
    """A model file where the installed SDK's env says /out/models is."""
    return write_file(models_dir(), name, text)


def candidates():
    from ymir_exc import dataset_reader

    return [path for path, _ in dataset_reader.item_paths(dataset_reader.DatasetType.CANDIDATE)]


def stage_file(outcome, stage, name):
    with open(os.path.join(outcome.out_dir, "models", stage, name)) as stream:
        return stream.read()


# --- the installed SDK (1.1.0.523 from PyPI) ----------------------------------------------------------------

@pytest.fixture
def sdk():
    from ymir_exc import monitor, result_writer

    return monitor, result_writer


def test_installed_monitor_by_keyword_and_positionally(ymir_registry, ymir_task, sdk):
    monitor, _ = sdk
    seen = []

    def body(context):
        monitor.write_monitor_logger(percent=0.25)
        seen.append(context.progress.monitor.percent)
        monitor.write_monitor_logger(0.5)
        context.progress.monitor.flush()
        with open(context.env.output.monitor_file) as stream:
            seen.append(stream.readline().rstrip("\n").split("\t"))
        monitor.write_monitor_logger(0.4)  # percent never goes down
        seen.append(context.progress.monitor.percent)
        context.mining_result.add(candidates()[0], 1)

    outcome = run_with(ymir_registry, ymir_task(kinds=["mining"], images=1), body)
    assert outcome.exit_code == 0, outcome.stderr
    assert seen[0] == 0.25
    assert seen[1][2:] == ["0.5000", "2", "0"]  # four decimals and a return code: the protocol's line
    assert seen[2] == 0.5
    assert outcome.monitor_fields[2:] == ["1.0000", "2", "0"]


def test_installed_mining_by_keyword_and_positionally(ymir_registry, ymir_task, sdk):
    _, result_writer = sdk

    def body(context):
        paths = candidates()
        result_writer.write_mining_result(mining_result=[(path, 0.1 * index) for index, path in enumerate(paths[:2])])
        result_writer.write_mining_result([(path, 0.9 - 0.1 * index) for index, path in enumerate(paths[2:])])

    tree = ymir_task(kinds=["mining"])
    outcome = run_with(ymir_registry, tree, body)
    assert outcome.exit_code == 0, outcome.stderr
    rows = outcome.result_tsv()
    assert [score for _, score in rows] == [0.9, 0.8, 0.1, 0.0]  # both calls, highest first
    with open(os.path.join(tree.root, "in", "candidate-index.tsv")) as stream:
        assert sorted(path for path, _ in rows) == sorted(line.strip() for line in stream)  # the index's paths
    assert outcome.verify().ok, outcome.verify().to_text()


@pytest.mark.parametrize("protocol_version, key", [("1.1.0", "boxes"), (None, "annotations")])
def test_installed_inference_by_keyword_and_positionally(ymir_registry, ymir_task, sdk, protocol_version, key):
    _, result_writer = sdk

    def box(class_name, score, x, y, w, h):
        return result_writer.Annotation(class_name=class_name, score=score,
                                        box=result_writer.Box(x=x, y=y, w=w, h=h))

    def body(context):
        paths = candidates()
        result_writer.write_infer_result(infer_result={paths[0]: [box("dog", 0.75, 2, 3, 10, 20)], paths[1]: []})
        result_writer.write_infer_result({path: [box("cat", 0.5, 0, 0, 5, 5)] for path in paths[2:]})

    outcome = run_with(ymir_registry, ymir_task(kinds=["infer"], protocol_version=protocol_version), body)
    assert outcome.exit_code == 0, outcome.stderr
    detection = outcome.infer_result()["detection"]
    assert len(detection) == 4
    entries = sorted(detection.values(), key=lambda entry: [b["score"] for b in entry[key]])
    assert entries[0] == {key: []}
    assert entries[-1] == {key: [{"box": {"x": 2, "y": 3, "w": 10, "h": 20}, "class_name": "dog", "score": 0.75}]}
    assert outcome.verify().ok, outcome.verify().to_text()


def test_installed_inference_with_an_unknown_class_fails_naming_it(ymir_registry, ymir_task, sdk):
    _, result_writer = sdk

    def body(context):
        box = result_writer.Box(x=0, y=0, w=4, h=4)
        result_writer.write_infer_result({candidates()[0]: [result_writer.Annotation(class_name="cow", score=0.5,
                                                                                     box=box)]})

    outcome = run_with(ymir_registry, ymir_task(kinds=["infer"]), body)
    assert outcome.exit_code != 0 and outcome.state == 4 and outcome.return_code == 160004
    assert "class_name 'cow' is not one of class_names ['cat', 'dog']" in outcome.last_stderr_line


@pytest.mark.parametrize("protocol_version", ["1.1.0", None])
def test_installed_training_by_keyword_and_positionally(ymir_registry, ymir_task, sdk, protocol_version):
    _, result_writer = sdk

    def body(context):
        save_model("best.pt", "first")
        result_writer.write_training_result(model_names=["best.pt"], mAP=0.4, classAPs={"cat": 0.4})
        save_model("best.pt", "second")  # the first stage keeps what was saved when it was written
        save_model("weights/extra.txt", "config")
        result_writer.write_training_result(["best.pt", "weights/extra.txt"], 0.6, {}, mAR=0.7, tp=3, note="x")

    outcome = run_with(ymir_registry, ymir_task(protocol_version=protocol_version), body)
    assert outcome.exit_code == 0, outcome.stderr
    result = outcome.result_yaml()
    if protocol_version is None:  # protocol < 1.0.0: the legacy form, the best stage's files
        assert result == {"model": ["stage_1/best.pt", "stage_1/extra.txt"], "map": 0.6}
    else:
        assert result["best_stage_name"] == "stage_1"
        stages = result["model_stages"]
        assert {name: (stage["files"], stage["mAP"]) for name, stage in stages.items()} == {
            "stage_0": (["best.pt"], 0.4), "stage_1": (["best.pt", "extra.txt"], 0.6)}
        assert stages["stage_1"]["mAR"] == 0.7 and stages["stage_1"]["tp"] == 3
        assert "note" not in stages["stage_1"] and "classAPs" not in stages["stage_0"]
        assert isinstance(stages["stage_0"]["timestamp"], int)
    assert stage_file(outcome, "stage_0", "best.pt") == "first"
    assert stage_file(outcome, "stage_1", "best.pt") == "second"
    assert "note have no place in a result.yaml stage" in outcome.stderr
    assert outcome.verify().ok, outcome.verify().to_text()


def test_installed_training_past_the_stage_limit_names_each_call_a_new_stage(ymir_registry, ymir_task, sdk):
    _, result_writer = sdk

    def body(context):
        for call in range(13):
            save_model("model.pt", f"call {call}")
            result_writer.write_training_result(["model.pt"], 0.9 if call == 1 else 0.1, {})

    outcome = run_with(ymir_registry, ymir_task(), body)
    assert outcome.exit_code == 0, outcome.stderr
    result = outcome.result_yaml()
    assert result["best_stage_name"] == "stage_1"
    assert list(result["model_stages"]) == ["stage_1"] + [f"stage_{n}" for n in range(3, 13)]  # best + 10 latest
    assert stage_file(outcome, "stage_12", "model.pt") == "call 12"
    assert stage_file(outcome, "stage_1", "model.pt") == "call 1"


def test_installed_training_of_a_missing_model_file_fails_naming_it(ymir_registry, ymir_task, sdk):
    _, result_writer = sdk
    outcome = run_with(ymir_registry, ymir_task(),
                       lambda context: result_writer.write_training_result(["nope.pt"], 0.5, {}))
    assert outcome.exit_code != 0 and outcome.state == 4
    assert "model file 'nope.pt' not found in" in outcome.last_stderr_line


def test_installed_writers_keep_their_signatures_during_the_task_and_come_back_after(ymir_registry, ymir_task, sdk):
    monitor, result_writer = sdk
    names = ["write_training_result", "write_mining_result", "write_infer_result"]
    before = {name: getattr(result_writer, name) for name in names}
    before["write_monitor_logger"] = monitor.write_monitor_logger
    seen = {}

    def body(context):
        for name in names:
            seen[name] = (getattr(result_writer, name), inspect.signature(getattr(result_writer, name)))
        seen["write_monitor_logger"] = (monitor.write_monitor_logger, inspect.signature(monitor.write_monitor_logger))
        try:
            result_writer.write_mining_result(result=[])  # the old adapter's name: refused, as by the SDK
        except TypeError as error:
            seen["error"] = str(error)
        context.mining_result.add(candidates()[0], 1)

    outcome = run_with(ymir_registry, ymir_task(kinds=["mining"], images=1), body)
    assert outcome.exit_code == 0, outcome.stderr
    for name, function in before.items():
        replaced, signature = seen[name]
        assert replaced is not function
        assert signature == inspect.signature(function)
    assert seen["error"].startswith("ymir_exc.result_writer.write_mining_result(): ")
    assert "missing a required argument: 'mining_result'" in seen["error"]
    assert {name: getattr(result_writer, name) for name in names} == {n: before[n] for n in names}
    assert monitor.write_monitor_logger is before["write_monitor_logger"]


def test_a_keyword_the_sdk_does_not_have_fails_the_task_naming_the_writer(ymir_registry, ymir_task, sdk):
    _, result_writer = sdk
    outcome = run_with(ymir_registry, ymir_task(kinds=["mining"]),
                       lambda context: result_writer.write_mining_result(result=[]))
    assert outcome.exit_code != 0 and (outcome.state, outcome.return_code) == (4, 160004)
    assert "ymir_exc.result_writer.write_mining_result()" in outcome.last_stderr_line


# --- other SDK lines: fake ymir_exc packages with their real signatures -------------------------------------

#: The signatures of each line's writers (ymir_runner/sdk.py's table), read from modelai/ymir-executor-sdk.
LINES = {
    "1.1-git": ("1.1.1.0902", [
        "monitor.write_monitor_logger(percent)",
        "result_writer.write_model_stage(stage_name, files, mAP, timestamp=None)",
        "result_writer.write_training_result(model_names, mAP, **kwargs)",
        "result_writer.write_mining_result(mining_result)",
        "result_writer.write_infer_result(infer_result)",
    ]),
    "1.3": ("2.0.0.1221", [
        "monitor.write_monitor_logger(percent)",
        "monitor.write_monitor_logger_for_multiple_tasks(cfg, task, percent, order='tmi')",
        "result_writer.write_model_stage(stage_name, files, mAP, timestamp=None, attachments=None)",
        "result_writer.write_training_result(model_names, mAP, **kwargs)",
        "result_writer.write_mining_result(mining_result)",
        "result_writer.write_infer_result(infer_result, algorithm='detection')",
    ]),
    "2.1-tag": ("2.1.1.0215", [
        "monitor.write_monitor_logger(percent)",
        "monitor.write_monitor_logger_for_multiple_tasks(cfg, task, percent, order='tmi')",
        "result_writer.write_model_stage(stage_name, files, evaluation_result={}, mAP=None, timestamp=None, "
        "attachments=None, evaluate_config=None)",
        "result_writer.write_training_result(model_names, mAP, **kwargs)",
        "result_writer.write_mining_result(mining_result)",
        "result_writer.write_infer_result(infer_result, algorithm='detection')",
    ]),
    "2.x": ("2.1.1.0215", [
        "monitor.write_monitor_logger(percent, state=ExecutorState.ES_RUNNING, "
        "return_code=ExecutorReturnCode.RC_EXEC_NO_ERROR)",
        "monitor.write_monitor_logger_for_multiple_tasks(cfg, task, percent, order='tmi')",
        "result_writer.write_model_stage(stage_name, files, evaluation_result={}, mAP=None, timestamp=None, "
        "attachments=None, evaluate_config=None)",
        "result_writer.write_training_result(stage_name, files, evaluation_result={}, timestamp=None, "
        "attachments=None, evaluate_config=None)",
        "result_writer.write_mining_result(mining_result)",
        "result_writer.write_infer_result(infer_result, algorithm='detection')",
    ]),
}

FAKE_INIT = '''
__version__ = {version!r}
#: Every call of a writer's own body (the fake SDK "writing a protocol file").
CALLS = []
'''

FAKE_CODE = '''
from enum import IntEnum


class ExecutorState(IntEnum):
    ES_RUNNING = 2
    ES_ERROR = 4


class ExecutorReturnCode(IntEnum):
    RC_EXEC_NO_ERROR = 0
    RC_EXEC_DATASET_ERROR = 300002
    RC_EXEC_OOM = 300103
'''

FAKE_MONITOR_HEAD = '''
import ymir_exc
from ymir_exc.code import ExecutorReturnCode, ExecutorState


def write_tensorboard_text(text, tag=None):
    ymir_exc.CALLS.append("write_tensorboard_text")
'''

FAKE_RESULT_WRITER_HEAD = '''
import functools

import ymir_exc


def _deprecated(function):  # the SDK decorates write_training_result (deprecated.sphinx: a wrapper)
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        return function(*args, **kwargs)
    return wrapper


class Box:
    def __init__(self, x, y, w, h):
        self.x, self.y, self.w, self.h = x, y, w, h


class Annotation:
    def __init__(self, class_name, score, box):
        self.class_name, self.score, self.box = class_name, score, box


def multiple_model_stages_supportable():
    return False
'''

#: The call pattern of the SDK's util helpers (2.x ``write_ymir_training_result``, ``write_ymir_monitor_process``):
#: a name bound by ``from ... import`` and a stage written by the helper itself when stages are "unsupported".
FAKE_UTIL = '''
import ymir_exc
from ymir_exc import result_writer as rw
from ymir_exc.monitor import write_monitor_logger_for_multiple_tasks


def write_ymir_training_result(cfg, files, id, map50=None, evaluation_result={}, evaluate_config=None,
                               attachments=None):
    if rw.multiple_model_stages_supportable():
        rw.write_model_stage(stage_name=id, files=files, evaluation_result=evaluation_result,
                             evaluate_config=evaluate_config, mAP=map50, attachments=attachments)
    else:
        ymir_exc.CALLS.append("util wrote result.yaml itself")


def write_ymir_monitor_process(cfg, task, naive_stage_percent, stage, stage_weights=None, task_order="tmi"):
    write_monitor_logger_for_multiple_tasks(cfg, task, naive_stage_percent, task_order)
'''


def write_fake_sdk(folder, version, signatures):
    """A ``ymir_exc`` package in ``folder`` whose writers carry ``signatures`` and only record that they ran."""
    package = os.path.join(folder, "ymir_exc")
    os.makedirs(package)
    sources = {"__init__": FAKE_INIT.format(version=version), "code": FAKE_CODE,
               "monitor": FAKE_MONITOR_HEAD, "result_writer": FAKE_RESULT_WRITER_HEAD}
    for line in signatures:
        module, signature = line.split(".", 1)
        name = signature.split("(", 1)[0]
        decorator = "@_deprecated\n" if name == "write_training_result" else ""
        sources[module] += f"\n\n{decorator}def {signature}:\n    ymir_exc.CALLS.append({name!r})\n"
    if any("for_multiple_tasks" in line for line in signatures):
        sources["util"] = FAKE_UTIL
    for module, source in sources.items():
        with open(os.path.join(package, f"{module}.py"), "w") as stream:
            stream.write(textwrap.dedent(source))


@pytest.fixture
def fake_sdk(tmp_path, monkeypatch):
    """``fake_sdk(line)`` (or ``fake_sdk(version=..., signatures=[...])``) imports a fake ymir_exc in place of the
    installed one for this test; returns the package module (its ``CALLS``, ``monitor``, ``result_writer``)."""
    installed = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "ymir_exc"}

    def install(line=None, *, version=None, signatures=None):
        if line is not None:
            version, signatures = LINES[line]
        folder = str(tmp_path / "fake-sdk")
        write_fake_sdk(folder, version, signatures)
        for name in list(sys.modules):
            if name.split(".")[0] == "ymir_exc":
                del sys.modules[name]
        monkeypatch.syspath_prepend(folder)
        package = importlib.import_module("ymir_exc")
        for module in ("code", "monitor", "result_writer", "util"):
            if os.path.exists(os.path.join(folder, "ymir_exc", f"{module}.py")):
                importlib.import_module(f"ymir_exc.{module}")
        return package

    yield install
    for name in list(sys.modules):
        if name.split(".")[0] == "ymir_exc":
            del sys.modules[name]
    sys.modules.update(installed)


@pytest.mark.parametrize("line", sorted(LINES))
def test_monitor_of_every_line_by_keyword_and_positionally(ymir_registry, ymir_task, fake_sdk, line):
    sdk = fake_sdk(line)
    seen = []

    def body(context):
        sdk.monitor.write_monitor_logger(percent=0.2)
        seen.append(context.progress.monitor.percent)
        sdk.monitor.write_monitor_logger(0.3)
        seen.append(context.progress.monitor.percent)
        if line == "2.x":
            sdk.monitor.write_monitor_logger(0.4, sdk.code.ExecutorState.ES_RUNNING, 0)
            sdk.monitor.write_monitor_logger(percent=0.45, state=2, return_code=300002)  # a code needs state 4
            seen.append(context.progress.monitor.percent)
        if hasattr(sdk.monitor, "write_monitor_logger_for_multiple_tasks"):
            # the task's own percent: the core maps it into the task's share of the run
            sdk.monitor.write_monitor_logger_for_multiple_tasks(cfg=None, task="mining", percent=0.6, order="tmi")
            seen.append(context.progress.monitor.percent)
            sdk.monitor.write_monitor_logger_for_multiple_tasks(None, "mining", 0.7)
            seen.append(context.progress.monitor.percent)
            sdk.util.write_ymir_monitor_process(None, "mining", 0.8, "task")  # util's own binding
            seen.append(context.progress.monitor.percent)
        sdk.monitor.write_tensorboard_text("hello")  # not a protocol file: the SDK's own
        context.mining_result.add(context.candidates.paths()[0], 1)

    outcome = run_with(ymir_registry, ymir_task(kinds=["mining"], images=1), body)
    assert outcome.exit_code == 0, outcome.stderr
    expected = [0.2, 0.3] + ([0.45] if line == "2.x" else [])
    if line != "1.1-git":
        expected += [0.6, 0.7, 0.8]
    assert seen == expected
    assert sdk.CALLS == ["write_tensorboard_text"]  # no writer of the SDK ran its own body
    assert outcome.monitor_fields[2:] == ["1.0000", "2", "0"]


def test_multiple_task_progress_lands_in_each_tasks_share_of_the_run(ymir_registry, ymir_task, fake_sdk):
    sdk = fake_sdk("2.x")
    seen = []

    def body(context):
        sdk.util.write_ymir_monitor_process(None, context.kind.value, 0.5, "task")
        seen.append(context.progress.monitor.percent)
        if context.kind is TaskKind.MINING:
            context.mining_result.add(context.candidates.paths()[0], 1)

    outcome = run_with(ymir_registry, ymir_task(kinds=["mining", "infer"], images=1), body)
    assert outcome.exit_code == 0, outcome.stderr
    assert seen == [0.25, 0.75]
    assert sdk.CALLS == []


@pytest.mark.parametrize("call", ["keyword", "positional"])
def test_state_4_of_the_2x_monitor_fails_the_task_with_its_return_code(ymir_registry, ymir_task, fake_sdk, call):
    sdk = fake_sdk("2.x")
    state, code = sdk.code.ExecutorState, sdk.code.ExecutorReturnCode
    after = []

    def body(context):
        try:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        except RuntimeError:
            if call == "keyword":
                sdk.monitor.write_monitor_logger(percent=0.5, state=state.ES_ERROR, return_code=code.RC_EXEC_OOM)
            else:
                sdk.monitor.write_monitor_logger(0.5, 4, 300002)
            after.append("went on")

    outcome = run_with(ymir_registry, ymir_task(kinds=["mining"], images=1), body)
    expected = 300103 if call == "keyword" else 300002
    assert outcome.exit_code != 0 and (outcome.state, outcome.return_code) == (4, expected)
    assert after == [] and sdk.CALLS == []
    assert f"write_monitor_logger (state 4, return code {expected})" in outcome.last_stderr_line
    assert "while handling RuntimeError: CUDA out of memory" in outcome.last_stderr_line


def test_state_4_with_a_code_the_protocol_does_not_list_is_the_generic_code(ymir_registry, ymir_task, fake_sdk):
    sdk = fake_sdk("2.x")
    outcome = run_with(ymir_registry, ymir_task(kinds=["mining"], images=1),
                       lambda context: sdk.monitor.write_monitor_logger(0.1, 4, 123))
    assert (outcome.state, outcome.return_code) == (4, 160004)
    assert "return code 123" in outcome.last_stderr_line


@pytest.mark.parametrize("line", sorted(LINES))
def test_mining_and_inference_of_every_line_by_keyword_and_positionally(ymir_registry, ymir_task, fake_sdk, line):
    sdk = fake_sdk(line)
    rw = sdk.result_writer

    def body(context):
        paths = context.candidates.paths()
        if context.kind is TaskKind.MINING:
            rw.write_mining_result(mining_result=[(paths[0], 0.2)])
            rw.write_mining_result([(path, 0.5) for path in paths[1:]])
            return
        annotation = rw.Annotation(class_name="cat", score=0.5, box=rw.Box(1, 2, 3, 4))
        rw.write_infer_result(infer_result={paths[0]: [annotation]})
        if line in ("1.1-git",):
            rw.write_infer_result({path: [] for path in paths[1:]})
        else:
            rw.write_infer_result({path: [] for path in paths[1:]}, "detection")

    outcome = run_with(ymir_registry, ymir_task(kinds=["mining", "infer"], images=2), body)
    assert outcome.exit_code == 0, outcome.stderr
    assert [score for _, score in outcome.result_tsv()] == [0.5, 0.2]
    boxes = [entry["boxes"] for entry in outcome.infer_result()["detection"].values()]
    assert sorted(boxes, key=len) == [[], [{"box": {"x": 1, "y": 2, "w": 3, "h": 4}, "class_name": "cat",
                                            "score": 0.5}]]
    assert sdk.CALLS == []
    assert outcome.verify().ok, outcome.verify().to_text()


@pytest.mark.parametrize("algorithm", ["segmentation", "classification"])
def test_a_non_detection_infer_result_fails_the_task(ymir_registry, ymir_task, fake_sdk, algorithm):
    sdk = fake_sdk("2.x")
    outcome = run_with(ymir_registry, ymir_task(kinds=["infer"], images=1),
                       lambda context: sdk.result_writer.write_infer_result({}, algorithm=algorithm))
    assert (outcome.state, outcome.return_code) == (4, 160004)
    assert f"write_infer_result(algorithm={algorithm!r}): ymir-runner writes detection results only" in (
        outcome.last_stderr_line)
    assert sdk.CALLS == []


@pytest.mark.parametrize("line", ["1.1-git", "1.3"])
def test_model_stages_of_the_1x_lines_by_keyword_and_positionally(ymir_registry, ymir_task, fake_sdk, line):
    sdk = fake_sdk(line)
    rw = sdk.result_writer

    def body(context):
        models = context.env.output.models_dir  # the fake SDK has no env module
        write_file(models, "epoch_1/model.pt", "one")
        rw.write_model_stage(stage_name="epoch-1", files=["model.pt"], mAP=0.3, timestamp=1700000000123)
        write_file(models, "config.py", "config")
        path = write_file(models, "epoch_2/model.pt", "two")
        rw.write_model_stage("epoch_2", [path, "config.py"], 0.5, None)
        write_file(models, "last.pt", "last")
        rw.write_training_result(model_names=["last.pt"], mAP=0.4, mAR=0.6)
        rw.write_training_result(["last.pt"], 0.45)
        if line == "1.3":
            write_file(models, "pr.png", "png")
            rw.write_model_stage("epoch_3", ["config.py"], 0.1, None, {"images": ["pr.png"]})

    outcome = run_with(ymir_registry, ymir_task(), body)
    assert outcome.exit_code == 0, outcome.stderr
    result = outcome.result_yaml()
    stages = result["model_stages"]
    assert result["best_stage_name"] == "epoch_2"
    assert {name: (stage["files"], stage["mAP"]) for name, stage in stages.items()} == {
        "epoch_1": (["model.pt"], 0.3), "epoch_2": (["model.pt", "config.py"], 0.5), "stage_2": (["last.pt"], 0.4),
        "stage_3": (["last.pt"], 0.45), **({"epoch_3": (["config.py"], 0.1)} if line == "1.3" else {})}
    assert stages["epoch_1"]["timestamp"] < 1e10  # seconds: a millisecond stamp is not written
    assert stages["stage_2"]["mAR"] == 0.6
    assert stage_file(outcome, "epoch_1", "model.pt") == "one"
    if line == "1.3":
        assert result["attachments"] == {"images": ["pr.png"]}
        assert os.path.isfile(os.path.join(outcome.out_dir, "models", "attachments", "images", "pr.png"))
    assert sdk.CALLS == []
    assert outcome.verify().ok, outcome.verify().to_text()


@pytest.mark.parametrize("line", ["2.1-tag", "2.x"])
def test_model_stages_of_the_2x_lines_by_keyword_and_positionally(ymir_registry, ymir_task, fake_sdk, line):
    sdk = fake_sdk(line)
    rw = sdk.result_writer

    def body(context):
        models = context.env.output.models_dir  # the fake SDK has no env module
        write_file(models, "epoch10.pt")
        write_file(models, "config.py")
        # det-demo-tmi's call
        rw.write_model_stage(stage_name="epoch10", files=["epoch10.pt", "config.py"],
                             evaluation_result=dict(mAP=0.3, mAR=0.5, tp=3, fp=1, fn=2))
        write_file(models, "epoch20/epoch20.pt")
        rw.write_model_stage("epoch20", ["epoch20.pt"], {"mAP": 0.6}, None, None, None,
                             {"iou_thr": 0.5, "conf_thr": 0.25})
        # det-mmdetection-tmi's call: mAP, no evaluation_result
        rw.write_model_stage(files=["config.py"], mAP=0.2, stage_name="last")
        write_file(models, "attachments/images/pr.png")
        sdk.util.write_ymir_training_result(None, files=["epoch10.pt"], id="epoch_30",
                                            evaluation_result={"mAP": 0.1}, attachments={"images": ["pr.png"]})
        if line == "2.x":
            write_file(models, "best.pt")
            rw.write_training_result(stage_name="best", files=[os.path.join(models, "best.pt")],
                                     evaluation_result={"mAP": 0.7, "mAR": 0.8}, timestamp=1,
                                     attachments=None, evaluate_config={"iou_thr": 0.5})
            rw.write_training_result("best_copy", ["best.pt"], {"mAP": 0.65})
        else:
            write_file(models, "best.pt")
            rw.write_training_result(model_names=["best.pt"], mAP=0.7)
            rw.write_training_result(["best.pt"], 0.65)

    outcome = run_with(ymir_registry, ymir_task(), body)
    assert outcome.exit_code == 0, outcome.stderr
    result = outcome.result_yaml()
    stages = result["model_stages"]
    named = {"best": "best", "copy": "best_copy"} if line == "2.x" else {"best": "stage_4", "copy": "stage_5"}
    assert result["best_stage_name"] == named["best"]
    assert {name: (stage["files"], stage["mAP"]) for name, stage in stages.items()} == {
        "epoch10": (["epoch10.pt", "config.py"], 0.3), "epoch20": (["epoch20.pt"], 0.6), "last": (["config.py"], 0.2),
        "epoch_30": (["epoch10.pt"], 0.1), named["best"]: (["best.pt"], 0.7), named["copy"]: (["best.pt"], 0.65)}
    assert {key: stages["epoch10"][key] for key in ("mAR", "tp", "fp", "fn")} == {"mAR": 0.5, "tp": 3, "fp": 1, "fn": 2}
    assert result["evaluate_config"] == {"iou_thr": 0.5, "conf_thr": 0.25}
    assert result["attachments"] == {"images": ["pr.png"]}
    if line == "2.x":
        assert stages["best"]["mAR"] == 0.8 and stages["best"]["timestamp"] > 1
    assert sdk.CALLS == []  # neither a writer nor util wrote result.yaml itself
    assert outcome.verify().ok, outcome.verify().to_text()


def test_a_2x_stage_without_metrics_fails_the_task(ymir_registry, ymir_task, fake_sdk):
    sdk = fake_sdk("2.x")

    def body(context):
        write_file(context.env.output.models_dir, "a.pt")
        sdk.result_writer.write_training_result("a", ["a.pt"])

    outcome = run_with(ymir_registry, ymir_task(), body)
    assert outcome.exit_code != 0 and outcome.state == 4
    assert "stage 'a' has no evaluation_result (and no mAP)" in outcome.last_stderr_line


def test_a_writer_of_an_unknown_signature_is_refused_with_one_warning(ymir_registry, ymir_task, fake_sdk):
    sdk = fake_sdk(version="9.9.9", signatures=[
        "monitor.write_monitor_logger(percent)",
        "result_writer.write_mining_result(scores, top_k=10)",
        "result_writer.write_infer_result(infer_result)",
        "result_writer.write_classification_result(result)",
    ])
    seen = []

    def body(context):
        sdk.monitor.write_monitor_logger(0.5)  # routed: its signature is known
        seen.append(context.progress.monitor.percent)
        if context.kind is TaskKind.MINING:  # runs first
            context.mining_result.add(context.candidates.paths()[0], 1)
            return
        sdk.result_writer.write_infer_result({})  # routed
        sdk.result_writer.write_mining_result(scores=[(context.candidates.paths()[0], 1.0)])

    outcome = run_with(ymir_registry, ymir_task(kinds=["infer", "mining"], images=1), body)
    warnings = [line for line in outcome.stderr.splitlines() if "WARNING" in line and "ymir-exc 9.9.9" in line]
    assert len(warnings) == 1  # once, though two tasks ran
    assert "write_classification_result(result), write_mining_result(scores, top_k)" in warnings[0]
    assert outcome.exit_code != 0 and (outcome.state, outcome.return_code) == (4, 160004)
    assert outcome.last_stderr_line.endswith(
        "ymir_exc.result_writer.write_mining_result(scores, top_k) of ymir-exc 9.9.9 is not routed by ymir-runner "
        "(signatures it routes: (mining_result)); write through the task context or install a ymir-exc it knows "
        "(1.1, 1.3.0, 2.x)")
    assert seen == [0.25, 0.75]  # the monitor: half of mining, then half of inference
    assert sdk.CALLS == []  # the SDK wrote nothing
    assert not os.path.exists(os.path.join(outcome.out_dir, "infer-result.json"))


def test_outside_a_task_the_sdk_functions_are_its_own_again(ymir_registry, ymir_task, fake_sdk):
    sdk = fake_sdk("2.x")
    before = (sdk.monitor.write_monitor_logger, sdk.util.write_monitor_logger_for_multiple_tasks,
              sdk.result_writer.write_model_stage, sdk.result_writer.multiple_model_stages_supportable)
    during = []

    def body(context):
        during.append((sdk.monitor.write_monitor_logger, sdk.util.write_monitor_logger_for_multiple_tasks,
                       sdk.result_writer.multiple_model_stages_supportable()))
        context.mining_result.add(context.candidates.paths()[0], 1)

    outcome = run_with(ymir_registry, ymir_task(kinds=["mining"], images=1), body)
    assert outcome.exit_code == 0, outcome.stderr
    assert during[0][0] is not before[0] and during[0][1] is not before[1] and during[0][2] is True
    assert (sdk.monitor.write_monitor_logger, sdk.util.write_monitor_logger_for_multiple_tasks,
            sdk.result_writer.write_model_stage, sdk.result_writer.multiple_model_stages_supportable) == before


def test_a_missing_attachment_is_an_optional_output_the_stage_and_task_go_on(ymir_registry, ymir_task, fake_sdk):
    """An attachment (a PR curve) that is not there is warned about once and counted; the stage is committed."""
    sdk = fake_sdk("2.x")

    def body(context):
        models = context.env.output.models_dir
        write_file(models, "epoch10.pt")
        sdk.result_writer.write_model_stage(stage_name="epoch10", files=["epoch10.pt"],
                                            evaluation_result={"mAP": 0.3}, attachments={"images": ["pr.png"]})

    outcome = run_with(ymir_registry, ymir_task(), body)
    assert outcome.exit_code == 0, outcome.stderr
    assert list(outcome.result_yaml()["model_stages"]) == ["epoch10"]
    assert "attachment failed, the task goes on without it" in outcome.stderr
    assert "optional outputs failed: 1 attachment" in outcome.stderr
    assert outcome.verify().ok, outcome.verify().to_text()
