import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import train_once  # noqa: E402

pytest_plugins = ["ymir_runner.testing"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One real training run (root, exit code, monitor writes), shared by training, inference and mining tests."""
    return train_once(tmp_path_factory)
