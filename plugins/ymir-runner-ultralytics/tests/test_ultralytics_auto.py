"""`auto` in the ultralytics executor's keys: its own defaults are numbers, exactly what runs; `auto` (the built-in
detector's default, in a template both executors share) is accepted and logged. These tests need the plugin, not
ultralytics (``PYTHONPATH=plugins/ymir-runner-ultralytics`` in the main venv runs them too)."""

import logging

import pytest

pytest.importorskip("ymir_runner_ultralytics", reason="ymir-runner-ultralytics is not installed")

from ymir_runner_ultralytics import plugin  # noqa: E402
from ymir_runner_ultralytics.templates import AUTO_VALUES  # noqa: E402
from ymir_runner_ultralytics.training import choose_auto  # noqa: E402

from ymir_runner import ConfigError, Param, TaskKind  # noqa: E402
from ymir_runner.protocol.config import parse_config  # noqa: E402

#: The training template as the core reads it: the plugin's keys and the stage evaluation's the core adds.
TRAINING = plugin.ymir_runner_register_executors()[0].templates[TaskKind.TRAINING]


def hyper_of(raw):
    return parse_config({"task_id": "t", **raw}, {p.name: p.default for p in TRAINING},
                        auto={p.name: p.auto for p in TRAINING if p.auto},
                        values={p.name: p.values for p in TRAINING}).hyper


def test_numbers_are_what_runs_and_auto_from_a_shared_template_is_logged(caplog):
    logger = logging.getLogger("test.ultralytics")
    assert {key: hyper_of({})[key] for key in ("epochs", "num_workers_per_gpu", "max_detections")} == {
        "epochs": 100, "num_workers_per_gpu": 4, "max_detections": Param.AUTO}
    hyper = hyper_of({"epochs": "3", "num_workers_per_gpu": "0"})
    choose_auto(hyper, "cuda:0", logger)
    assert (hyper.epochs, hyper.num_workers_per_gpu) == (3, 0) and caplog.messages == []
    shared = hyper_of({"epochs": "AUTO", "num_workers_per_gpu": "auto", "max_detections": "auto", "min_steps": 600})
    with caplog.at_level(logging.INFO, logger="test.ultralytics"):
        choose_auto(shared, "cpu", logger)
    assert (shared.epochs, shared.num_workers_per_gpu) == (AUTO_VALUES["epochs"], AUTO_VALUES["num_workers_per_gpu"])
    assert "epochs auto: 100 (this executor's default)" in caplog.messages
    assert ("config key 'num_workers_per_gpu' 4: not used on the CPU, where ultralytics loads the data in the training "
            "process") in caplog.messages
    assert shared.max_detections == Param.AUTO  # the core's stage evaluator resolves it


@pytest.mark.parametrize("raw, key", [({"epochs": "fast"}, "epochs"), ({"max_detections": "many"}, "max_detections"),
                                      ({"num_workers_per_gpu": 1.5}, "num_workers_per_gpu")])
def test_a_value_that_is_neither_auto_nor_a_number_names_its_key(raw, key):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        hyper_of(raw)


@pytest.mark.parametrize("raw, key", [({"epochs": 0}, "epochs"), ({"max_detections": 0}, "max_detections"),
                                      ({"img_size": 100}, "img_size"), ({"learning_rate": 0.0}, "learning_rate"),
                                      ({"map_iou_threshold": 1.0}, "map_iou_threshold")])
def test_numbers_out_of_range_name_their_key(raw, key):
    with pytest.raises(ConfigError, match=f"config key '{key}': \\S+ is not "):
        hyper_of(raw)
