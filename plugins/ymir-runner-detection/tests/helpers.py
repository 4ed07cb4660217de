"""Shared by the plugin's end-to-end tests: running tasks through the core and one real training run."""

from __future__ import annotations

import os

import yaml

from ymir_runner_detection import EXECUTOR_NAME, plugin
from ymir_runner_detection.demo import write_task
from ymir_runner_detection.synthetic import SceneConfig

#: The end-to-end training test measures that the pipeline learns, on a moderate scene (no tiny objects):
#: the hard default scene is the benchmark's job.
TEST_SCENE = SceneConfig(objects_range=(1, 4), min_object_size=32.0)

# Small enough to train in about two minutes on 2 CPU cores (400 steps), enough for a working detector to be
# far above chance: synthetic shapes, letterboxed to 192 px; the template's learning rate and optimizer. The
# warm-up (auto: 1 epoch, at least 5 % of the run) is 20 steps of the 400; tests that train 1 or 2 epochs keep a
# warm-up shorter than their run.
FAST = {"epochs": 40, "min_steps": 0,
        "save_period": 20, "img_size": 192, "batch_size_per_gpu": 16, "num_workers_per_gpu": "auto",
        "warmup_epochs": "auto", "mosaic": 0.0}


def registry(**others):
    """This plugin alone (plus ``others``: name -> plugin, e.g. an observer of the context)."""
    from ymir_runner.testing import plugin_registry  # here: conftest imports this module before pytest loads the kit

    return plugin_registry({EXECUTOR_NAME: plugin, **others})


def run(env_file, **others):
    """Run the task of ``env_file`` in this process with :func:`registry`; returns the exit code."""
    from ymir_runner import run as dispatch

    return dispatch(env_file, registry=registry(**others))


def read_result(root):
    with open(os.path.join(root, "out", "models", "result.yaml")) as stream:
        return yaml.safe_load(stream)


def last_line(capsys):
    return capsys.readouterr().err.strip().splitlines()[-1]


def train_once(tmp_path_factory):
    """One real training run shared by the checks below; monitor writes are recorded as they happen."""
    from ymir_runner.testing import monitor_writes

    root = str(tmp_path_factory.mktemp("train"))
    env_file = write_task(root, config=FAST, n_train=160, n_val=24, n_corrupt_train=1,
                          scene=TEST_SCENE)
    with monitor_writes() as writes:
        code = run(env_file)
    return root, code, writes


SMALL = {"batch_size_per_gpu": 8, "num_workers_per_gpu": 0}


def make_task(trained, folder, kinds, config=None, *, stages=None, info=True, n_candidates=12, seed=5):
    """A mining/infer task whose /in/models holds stages of the shared trained model."""
    from ymir_runner.testing import install_models  # here: conftest imports this module before pytest loads the kit

    root, code, _ = trained
    assert code == 0
    env_file = write_task(str(folder), kinds=kinds, config=dict(SMALL, **(config or {})), n_train=0, n_val=0,
                          n_candidates=n_candidates, seed=seed, scene=TEST_SCENE)
    models = folder / "in" / "models"
    paths = [str(models / file) for file in install_models(os.path.join(root, "out", "models"), str(models), stages)]
    if not info:
        (models / "ymir-info.yaml").unlink()
    config_file = folder / "in" / "config.yaml"
    task_config = yaml.safe_load(config_file.read_text())
    task_config["model_params_path"] = paths
    config_file.write_text(yaml.safe_dump(task_config))
    return env_file


def candidates(folder):
    return [line.strip() for line in open(folder / "in" / "candidate-index.tsv") if line.strip()]
