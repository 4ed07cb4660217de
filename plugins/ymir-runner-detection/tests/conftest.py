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
