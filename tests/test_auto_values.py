"""Template keys that take the word ``auto`` or a number (``Param(..., auto=int)``): what the web UI sends is read
back as ``auto`` or exactly the number written, and anything else stops the task naming the key."""

import os

import pytest

import ymir_runner
from ymir_runner import ConfigError, ExecutorSpec, Param, ReturnCode, TaskKind
from ymir_runner.protocol.config import parse_config

PARAMS = (Param("epochs", Param.AUTO, "passes; auto: the executor's choice", auto=int),
          Param("warmup_epochs", Param.AUTO, "warm-up; auto: the executor's choice", auto=float),
          Param("workers", 2, "a number by default, auto allowed", auto=int))


def read(**values):
    return parse_config({"task_id": "t", **values}, {p.name: p.default for p in PARAMS},
                        {p.name: p.choices for p in PARAMS}, auto={p.name: p.auto for p in PARAMS if p.auto}).hyper


@pytest.mark.parametrize("sent", ["auto", "AUTO", " Auto ", "auto\n"])
def test_the_word_auto_in_any_case_is_auto(sent):
    assert read(epochs=sent, warmup_epochs=sent, workers=sent) == {"epochs": "auto", "warmup_epochs": "auto",
                                                                   "workers": "auto"}


@pytest.mark.parametrize("sent, expected", [("5", 5), (5, 5), (5.0, 5), (" 5 ", 5), ("-1", -1), (0, 0)])
def test_a_number_is_exactly_the_number_written(sent, expected):
    hyper = read(epochs=sent)
    assert hyper.epochs == expected and type(hyper.epochs) is int


@pytest.mark.parametrize("sent, expected", [("0.5", 0.5), (2, 2.0), ("1e-1", 0.1)])
def test_a_float_key_reads_a_float(sent, expected):
    hyper = read(warmup_epochs=sent)
    assert hyper.warmup_epochs == expected and type(hyper.warmup_epochs) is float


def test_absent_and_empty_keys_take_the_default_auto_or_number():
    assert read() == {"epochs": "auto", "warmup_epochs": "auto", "workers": 2}
    assert read(epochs=None, workers=None) == {"epochs": "auto", "warmup_epochs": "auto", "workers": 2}


@pytest.mark.parametrize("key, sent, message", [
    ("epochs", "fast", "config key 'epochs': 'fast' is not a valid integer or 'auto'"),
    ("epochs", 5.5, "config key 'epochs': 5.5 is not a valid integer or 'auto'"),
    ("epochs", True, "config key 'epochs': True is not a valid integer or 'auto'"),
    ("epochs", "autom", "config key 'epochs': 'autom' is not a valid integer or 'auto'"),
    ("epochs", [3], "config key 'epochs': [3] is not a valid integer or 'auto'"),
    ("warmup_epochs", "nan", "config key 'warmup_epochs': 'nan' is not a valid number or 'auto'"),
])
def test_anything_else_is_a_config_error_naming_the_key(key, sent, message):
    with pytest.raises(ConfigError) as caught:
        read(**{key: sent})
    assert str(caught.value).startswith(message) and caught.value.code == ReturnCode.CONFIG


@pytest.mark.parametrize("arguments", [
    dict(default="fast", auto=int), dict(default=1.5, auto=int), dict(default=True, auto=int),
    dict(default="auto", auto=str), dict(default="auto", auto=int, choices=("auto", 1)),
])
def test_a_template_declaring_an_impossible_auto_key_is_refused(arguments):
    with pytest.raises(ValueError, match="template key 'epochs'"):
        Param("epochs", **arguments)


class AutoPlugin:
    """An executor whose epochs may be auto: training records what the hook got."""

    seen: dict = {}

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ExecutorSpec(name="auto-test", tasks={TaskKind.TRAINING}, templates={TaskKind.TRAINING: PARAMS})]

    @ymir_runner.hookimpl
    def ymir_runner_train(self, context):
        AutoPlugin.seen = dict(context.hyper)
        with open(os.path.join(context.training_result.stage_dir("epoch_1"), "model.txt"), "w") as stream:
            stream.write("a model")
        context.training_result.add_stage("epoch_1", ["model.txt"], {"mAP": 0.5})


@pytest.mark.parametrize("sent, expected", [("AUTO", "auto"), ("5", 5), (5, 5)])
def test_a_task_gets_auto_or_the_number_the_web_ui_sent(ymir_registry, ymir_task, sent, expected):
    ymir_registry.register(AutoPlugin(), "auto-test")
    outcome = ymir_task(config={"epochs": sent}).run(ymir_registry)
    assert outcome.exit_code == 0, outcome.stderr[-2000:]
    assert AutoPlugin.seen["epochs"] == expected and AutoPlugin.seen["warmup_epochs"] == "auto"


def test_a_task_with_a_bad_auto_value_stops_with_300001_naming_the_key(ymir_registry, ymir_task):
    ymir_registry.register(AutoPlugin(), "auto-test")
    outcome = ymir_task(config={"epochs": "fast"}).run(ymir_registry)
    assert outcome.return_code == ReturnCode.CONFIG
    assert "config key 'epochs': 'fast' is not a valid integer or 'auto'" in outcome.last_stderr_line
