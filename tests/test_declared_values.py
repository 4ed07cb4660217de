"""Declared config values (issue 25): a ``Param`` carries its legal values (bounds, strict bounds, a multiple, choices,
``auto``), the core refuses a value outside them before the task starts, in one message form naming the key, the
value and the legal values, and img-man's template comments and ``ymir-runner inspect`` show the same text.

The engines' rules (what their own check functions refused before 0.3) are checked here through each engine's real
executor spec: the task is refused by the core before the engine's hook runs."""

from __future__ import annotations

import importlib
import os

import pytest

import ymir_runner
from ymir_runner import ExecutorSpec, Param, ReturnCode, TaskKind, plugins
from ymir_runner.cli import main
from ymir_runner.imgman import write_img_man
from ymir_runner.protocol.config import parse_config
from ymir_runner.testing import TaskTree

TRAINING = (
    Param("img_size", 320, "input size of a stride-32 network", minimum=32, maximum=4096, multiple_of=32),
    Param("learning_rate", 0.01, "above 0", exclusive_minimum=0.0, maximum=1.0),
    Param("map_iou_threshold", 0.5, "an IoU strictly inside", exclusive_minimum=0.0, exclusive_maximum=1.0),
    Param("conf_threshold", 0.0, "a score", minimum=0.0, maximum=1.0),
    Param("max_detections", Param.AUTO, "auto or at least 1", auto=int, minimum=1, maximum=10_000),
    Param("optimizer", "sgd", "a choice", choices=("sgd", "adamw")),
    Param("close_mosaic", 10, "epochs", minimum=0),
)
INFER = (
    Param("img_size", 0, "0: the model's own", minimum=0, maximum=2048, multiple_of=32),
    Param("iou_threshold", 0.7, "NMS IoU", exclusive_minimum=0.0, maximum=1.0),
)


class Declared:
    """An executor declaring every kind of rule; its hooks record what they got (so a refused task shows none)."""

    seen: list = []

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ExecutorSpec(name="declared", tasks={TaskKind.TRAINING, TaskKind.INFER},
                             templates={TaskKind.TRAINING: TRAINING, TaskKind.INFER: INFER})]

    @ymir_runner.hookimpl
    def ymir_runner_train(self, context):
        Declared.seen.append(dict(context.hyper))
        with open(os.path.join(context.training_result.stage_dir("epoch_1"), "model.txt"), "w") as stream:
            stream.write("a model")
        context.training_result.add_stage("epoch_1", ["model.txt"], {"mAP": 0.5})

    @ymir_runner.hookimpl
    def ymir_runner_infer(self, context):
        Declared.seen.append(dict(context.hyper))


@pytest.fixture
def declared(ymir_registry):
    Declared.seen = []
    ymir_registry.register(Declared(), "declared")
    return ymir_registry


REFUSED = [  # one per rule: (kind, key, value written in config.yaml, the last stderr line after "error 300001: ")
    ("training", "img_size", 100, "config key 'img_size': 100 is not a multiple of 32 from 32 to 4096"),
    ("training", "img_size", 0, "config key 'img_size': 0 is not a multiple of 32 from 32 to 4096"),
    ("training", "img_size", 4128, "config key 'img_size': 4128 is not a multiple of 32 from 32 to 4096"),
    ("training", "learning_rate", 0, "config key 'learning_rate': 0 is not a number above 0 and at most 1"),
    ("training", "learning_rate", "1.5", "config key 'learning_rate': 1.5 is not a number above 0 and at most 1"),
    ("training", "map_iou_threshold", 1, "config key 'map_iou_threshold': 1 is not a number above 0 and below 1"),
    ("training", "map_iou_threshold", 0.0, "config key 'map_iou_threshold': 0 is not a number above 0 and below 1"),
    ("training", "conf_threshold", -0.1, "config key 'conf_threshold': -0.1 is not a number from 0 to 1"),
    ("training", "max_detections", 0, "config key 'max_detections': 0 is not an integer from 1 to 10000 or auto"),
    ("training", "optimizer", "lion", "config key 'optimizer': 'lion' is not one of 'sgd', 'adamw'"),
    ("training", "close_mosaic", -1, "config key 'close_mosaic': -1 is not an integer at least 0"),
    ("infer", "img_size", 48, "config key 'img_size': 48 is not a multiple of 32 from 0 to 2048"),
    ("infer", "iou_threshold", 0, "config key 'iou_threshold': 0 is not a number above 0 and at most 1"),
]


@pytest.mark.parametrize("kind, key, value, message", REFUSED)
def test_a_value_outside_its_declared_values_stops_the_task_before_it_starts(declared, ymir_task, kind, key, value,
                                                                             message):
    outcome = ymir_task(kinds=(kind,), config={key: value}).run(declared)
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.CONFIG)
    assert outcome.last_stderr_line == f"ymir-runner: error 300001: {message}"
    assert Declared.seen == []  # refused before the executor's hook


def test_the_edge_values_of_every_rule_run(declared, ymir_task):
    edges = {"img_size": "4096", "learning_rate": 1, "map_iou_threshold": 0.999, "conf_threshold": 1,
             "max_detections": "AUTO", "optimizer": "adamw", "close_mosaic": 0}
    outcome = ymir_task(config=edges).run(declared)
    assert outcome.exit_code == 0, outcome.stderr[-2000:]
    assert {key: Declared.seen[0][key] for key in edges} == {
        "img_size": 4096, "learning_rate": 1.0, "map_iou_threshold": 0.999, "conf_threshold": 1.0,
        "max_detections": "auto", "optimizer": "adamw", "close_mosaic": 0}


@pytest.mark.parametrize("sent, read", [
    ({"img_size": 32, "learning_rate": 1e-9, "map_iou_threshold": 1e-9, "conf_threshold": 0, "max_detections": 1},
     {"img_size": 32, "learning_rate": 1e-9, "map_iou_threshold": 1e-9, "conf_threshold": 0.0, "max_detections": 1}),
    ({"img_size": "64", "learning_rate": "0.5", "map_iou_threshold": "0.5", "conf_threshold": "1",
      "max_detections": "10000"},
     {"img_size": 64, "learning_rate": 0.5, "map_iou_threshold": 0.5, "conf_threshold": 1.0, "max_detections": 10000}),
])
def test_values_inside_the_rules_are_read_as_written(sent, read):
    hyper = parse_config(sent, {p.name: p.default for p in TRAINING}, auto={"max_detections": int},
                         values={p.name: p.values for p in TRAINING}).hyper
    assert {key: hyper[key] for key in sent} == read


def test_infer_img_size_zero_means_the_models_own_and_is_legal(declared, ymir_task):
    ymir_task(kinds=("infer",), config={"img_size": 0, "iou_threshold": 1}).run(declared)
    assert [(seen["img_size"], seen["iou_threshold"]) for seen in Declared.seen] == [(0, 1.0)]


@pytest.mark.parametrize("arguments, reason", [
    (dict(default=100, minimum=32, multiple_of=32), "default 100 is not a multiple of 32 at least 32"),
    (dict(default=0.5, exclusive_minimum=0.5), "default 0.5 is not a number above 0.5"),
    (dict(default=2.0, maximum=1.0), "default 2 is not a number at most 1"),
    (dict(default=0.5, multiple_of=2), "multiple_of applies to integer keys, not to 0.5"),
    (dict(default=64, multiple_of=0), "multiple_of must be a positive integer, not 0"),
    (dict(default=64, multiple_of=True), "multiple_of must be a positive integer, not True"),
    (dict(default=1, exclusive_minimum=0), "an integer key's bounds are inclusive: declare minimum / maximum"),
    (dict(default=5, minimum=1.5), "minimum 1.5 of an integer key must be an integer"),
    (dict(default=0.5, minimum=0.0, exclusive_minimum=0.0), "declare one lower bound"),
    (dict(default=0.5, maximum=1.0, exclusive_maximum=1.0), "declare one upper bound"),
    (dict(default=0.5, exclusive_minimum=1.0, exclusive_maximum=1.0), "no value is a number above 1 and below 1"),
    (dict(default=64, minimum=96, maximum=32), "no value is an integer from 96 to 32"),
    (dict(default=0.5, maximum=float("nan")), "maximum must be a finite number, not nan"),
    (dict(default=1, maximum="2"), "maximum must be a finite number, not '2'"),
    (dict(default="x", maximum=1), "maximum apply to numbers, not to 'x'"),
    (dict(default=True, minimum=0), "minimum apply to numbers, not to True"),
    (dict(default="sgd", choices=("sgd",), minimum=1), "minimum beside choices"),
    (dict(default=Param.AUTO, auto=int, multiple_of=0), "multiple_of must be a positive integer"),
    (dict(default=Param.AUTO, auto=float, multiple_of=2), "multiple_of applies to integer keys"),
])
def test_a_declaration_no_value_or_not_its_default_could_meet_is_refused(arguments, reason):
    with pytest.raises(ValueError, match="^template key 'key': " + reason.replace("(", r"\(")):
        Param("key", help="", **arguments)


def test_img_man_comments_show_the_legal_values_in_the_words_of_the_error(declared, tmp_path):
    write_img_man(str(tmp_path), declared)
    lines = (tmp_path / "training-template.yaml").read_text().splitlines()
    shown = {line: lines[index - 1] for index, line in enumerate(lines)}
    assert shown["img_size: 320"] == "# legal values: a multiple of 32 from 32 to 4096"
    assert shown["map_iou_threshold: 0.5"] == "# legal values: a number above 0 and below 1"
    assert shown["max_detections: auto"] == "# legal values: an integer from 1 to 10000 or auto"
    assert shown["optimizer: sgd"] == "# legal values: one of 'sgd', 'adamw'"
    defaults = {param.name: param.default for param in TRAINING}
    for kind, key, _, message in REFUSED:  # the comment is the end of the error
        if kind == "training":
            assert message.endswith(" is not " + shown[f"{key}: {defaults[key]}"].removeprefix("# legal values: "))
    infer = (tmp_path / "infer-template.yaml").read_text().splitlines()
    assert infer[infer.index("img_size: 0") - 1] == "# legal values: a multiple of 32 from 0 to 2048"


def test_inspect_reports_a_value_outside_its_rules_with_the_run_message(declared, tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(plugins, "build_plugin_manager", lambda **_: declared)
    tree = TaskTree(str(tmp_path / "t"), config={"img_size": 100})
    assert main(["inspect", "--env", tree.env_file, "--root", tree.root]) == 1
    assert ("ymir-runner inspect: error 300001: config key 'img_size': 100 is not a multiple of 32 from 32 to 4096"
            in capfd.readouterr().err.splitlines())


# --- the engines' rules, declared on their templates ------------------------------------------------------------

# What the engines' own checks refused before 0.3: _check_hyper and make_job (detection); check_hyper, _check_runtime,
# _check_infer and _img_size (ultralytics).
ENGINE_RULES = [
    ("training", "img_size", 100, "a multiple of 32 from 32 to 2048"),
    ("training", "img_size", 0, "a multiple of 32 from 32 to 2048"),
    ("training", "learning_rate", 0, "a number above 0 and at most 1"),
    ("training", "map_iou_threshold", 1, "a number above 0 and below 1"),
    ("training", "map_iou_threshold", 0, "a number above 0 and below 1"),
    ("training", "conf_threshold", 1.5, "a number from 0 to 1"),
    ("training", "max_detections", 0, "an integer from 1 to 10000 or auto"),
    ("training", "epochs", 0, "an integer from 1 to 10000 or auto"),
    ("training", "batch_size_per_gpu", 0, "an integer from 1 to 512"),
    ("training", "save_period", -1, "an integer from 0 to 10000"),
    ("training", "num_workers_per_gpu", -1, "an integer from 0 to 64 or auto"),
    ("training", "mosaic", 1.5, "a number from 0 to 1"),
    ("infer", "img_size", 48, "a multiple of 32 from 0 to 2048"),
    ("mining", "img_size", 48, "a multiple of 32 from 0 to 2048"),
    ("infer", "conf_threshold", -0.5, "a number from 0 to 1"),
    ("infer", "iou_threshold", 0, "a number above 0 and at most 1"),
    ("infer", "max_detections", 0, "an integer from 1 to 10000"),
    ("infer", "batch_size_per_gpu", 0, "an integer from 1 to 512"),
]
ULTRALYTICS_ONLY = [("training", "close_mosaic", -1, "an integer from 0 to 10000")]


def engine_spec(package: str) -> ExecutorSpec:
    """The detection executor spec the engine's plugin registers (its templates as the core reads them; no
    torch). A plugin may register executors of other object types beside it (the built-in Semantic FPN)."""
    pytest.importorskip(f"{package}.templates")
    specs = importlib.import_module(f"{package}.plugin").ymir_runner_register_executors()
    (spec,) = [spec for spec in specs if 2 in spec.object_types]
    return spec


class EngineTemplates:
    """An engine's real spec, whose task hooks only record that they ran: the core's checks are what is tested."""

    def __init__(self, spec: ExecutorSpec):
        self.spec, self.ran = spec, []

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [self.spec]

    @ymir_runner.hookimpl
    def ymir_runner_train(self, context):
        self.ran.append("training")

    @ymir_runner.hookimpl
    def ymir_runner_infer(self, context):
        self.ran.append("infer")

    @ymir_runner.hookimpl
    def ymir_runner_mine(self, context):
        self.ran.append("mining")


@pytest.mark.parametrize("package, kind, key, value, legal", [
    *[("ymir_runner_detection", *rule) for rule in ENGINE_RULES],
    *[("ymir_runner_ultralytics", *rule) for rule in ENGINE_RULES + ULTRALYTICS_ONLY],
])
def test_the_engines_rules_are_declared_and_refused_by_the_core(ymir_registry, ymir_task, package, kind, key, value,
                                                                legal):
    engine = EngineTemplates(engine_spec(package))
    ymir_registry.register(engine, "engine")
    outcome = ymir_task(kinds=(kind,), config={key: value}).run(ymir_registry)
    assert outcome.return_code == ReturnCode.CONFIG
    assert outcome.last_stderr_line == f"ymir-runner: error 300001: config key {key!r}: {value} is not {legal}"
    assert engine.ran == []
