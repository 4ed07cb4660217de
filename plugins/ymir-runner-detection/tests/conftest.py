import importlib.metadata
import os
import sys

import pytest

from ymir_runner.plugins import DISABLE_ENV_VAR, ENTRY_POINT_GROUP

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import train_once  # noqa: E402

pytest_plugins = ["ymir_runner.testing"]

# Other plugin distributions installed on the machine are blocked, in this process and in the runs it starts:
# their executors must not change which executor a task here selects.
OTHERS = sorted({entry_point.dist.name for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
                 if entry_point.dist is not None and entry_point.dist.name != "ymir-runner-detection"})


@pytest.fixture(autouse=True)
def _only_this_plugin(monkeypatch):
    if OTHERS:
        monkeypatch.setenv(DISABLE_ENV_VAR, ",".join(OTHERS))


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
