import importlib.metadata
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import train_once  # noqa: E402

pytest_plugins = ["ymir_runner.testing"]

# Other plugin distributions installed on the machine are blocked in the runs these tests start (`ymir-runner
# run` loads every distribution of the `ymir_runner` entry-point group but those YMIR_RUNNER_DISABLE_PLUGINS
# names, see the README): their executors must not change which executor a task here selects. Runs in this
# process use a registry of this plugin alone (helpers.registry).
OTHERS = sorted({entry_point.dist.name for entry_point in importlib.metadata.entry_points(group="ymir_runner")
                 if entry_point.dist is not None and entry_point.dist.name != "ymir-runner-detection"})


@pytest.fixture(autouse=True)
def _only_this_plugin(monkeypatch):
    if OTHERS:
        monkeypatch.setenv("YMIR_RUNNER_DISABLE_PLUGINS", ",".join(OTHERS))


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One real training run (root, exit code, monitor writes), shared by training, inference and mining tests."""
    return train_once(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small synthetic dataset (small images) shared by the engine and generator tests."""
    from ymir_runner_detection import synthetic

    return synthetic.generate(
        tmp_path_factory.mktemp("synthetic"), n_train=12, n_val=6, n_candidates=3,
        img_size_range=(96, 160), seed=7, objects_range=(1, 3), n_corrupt_train=1,
    )
