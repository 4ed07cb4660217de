"""The detection plugin as the executor image runs it: docker/start.sh, no $HOME, a foreign uid (65534), a
read-only /in. Torch, the DataLoader worker, tensorboard and the ONNX export must all cope, and the /out tree
must pass `ymir-runner verify`."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from ymir_runner.testing import RunOutcome, cannot_run_as, make_read_only
from ymir_runner_detection.demo import write_task

START_SH = pathlib.Path(__file__).resolve().parents[3] / "docker" / "start.sh"
NOBODY = 65534
CANNOT_RUN_AS_NOBODY = cannot_run_as(NOBODY)  # .ci/run makes the interpreter reachable for other uids
TINY = {"epochs": 2, "min_steps": 0,
        "save_period": 1, "img_size": 64, "batch_size_per_gpu": 8, "num_workers_per_gpu": 1,
        "mosaic": 0.0}


@pytest.mark.skipif(not START_SH.exists(), reason="docker/start.sh is not beside this plugin (installed from a wheel)")
@pytest.mark.skipif(bool(CANNOT_RUN_AS_NOBODY), reason=str(CANNOT_RUN_AS_NOBODY))
def test_training_through_start_sh_as_uid_65534_with_read_only_in(ymir_shared_tmp):
    root = pathlib.Path(ymir_shared_tmp) / "work"
    env_file = write_task(str(root), config=TINY, n_train=16, n_val=8, n_corrupt_train=1)
    make_read_only(str(root / "in"))
    os.chmod(root / "out", 0o777)
    env = dict(os.environ, HOME="/root", PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))
    done = subprocess.run(["bash", str(START_SH), "--env", env_file], capture_output=True, text=True, env=env,
                          user=NOBODY, group=NOBODY, cwd=ymir_shared_tmp, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    # ymir-runner verify: training outputs, config.yaml's classes ("circle", "rectangle", "triangle") only
    report = RunOutcome(done.returncode, done.stderr, str(root / "out"), env_file).verify()
    assert report.ok, report.findings
    assert sorted(os.listdir(root / "out" / "models" / "epoch_2")) == ["model.onnx", "model.pt"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(root / "out" / "tensorboard"))
    assert "training: skipped 1 unreadable image" in done.stderr  # the corrupt image, counted, not fatal
