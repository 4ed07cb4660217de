"""The ultralytics plugin's tests run in their own venv (.venv-ultralytics: ultralytics brings the CUDA build of torch
and torchvision), never in the project's main one:

    .venv-ultralytics/bin/python -m pytest plugins/ymir-runner-ultralytics/tests

Without ultralytics or this plugin installed, every module skips with the reason (each starts with
``pytest.importorskip``). The repository's setup.cfg ``testpaths`` does not list this folder.
"""

import importlib.metadata
import os
import sys

import pytest

from ymir_runner import cpus

# What `ymir-runner run` does first (the runs in this process need it too): OpenMP threads sleep when idle instead of
# spinning (on a busy 2-core machine a spinning pair made each training step 50 times slower), one per task CPU.
cpus.configure_openmp()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

pytest_plugins = ["ymir_runner.testing"]

# Other plugin distributions installed beside this one are blocked in the runs the tests start: their executors
# must not change which executor a task selects.
OTHERS = sorted({entry_point.dist.name for entry_point in importlib.metadata.entry_points(group="ymir_runner")
                 if entry_point.dist is not None and entry_point.dist.name != "ymir-runner-ultralytics"})


@pytest.fixture(autouse=True)
def _only_this_plugin(monkeypatch):
    if OTHERS:
        monkeypatch.setenv("YMIR_RUNNER_DISABLE_PLUGINS", ",".join(OTHERS))


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory):
    """A temp folder uid 65534 can enter (pytest's tmp_path is private to the user running the tests)."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="ymir-runner-ultralytics-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def trained(shared_root):
    """One real training run through `ymir-runner run` in a process of its own (as uid 65534 with a read-only /in
    and an empty HOME where this machine allows it, offline-guarded), shared by the training, inference and mining
    tests."""
    from helpers import train_in_subprocess

    return train_in_subprocess(os.path.join(shared_root, "train"))
