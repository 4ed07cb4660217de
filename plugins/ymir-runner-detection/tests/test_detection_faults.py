"""The detection plugin on the platform's worst day: real training and mining+inference runs (real processes,
DataLoader workers) that are killed, stopped twice, run out of disk, or find no decodable image.

Whatever happens, the platform must find parseable protocol files, and a failed run ends at state 4 with a
specific code, a last stderr line a user can act on, no temp file, and no process left behind. The random
SIGKILL rounds are marked slow (`python -m pytest --slow` runs them, as .ci/run does).
"""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from helpers import make_task
from PIL import Image

from ymir_runner import ReturnCode
from ymir_runner.cpus import CPUS_ENV_VAR
from ymir_runner.testing import RunOutcome, child_pids, is_running, temp_files, torn_protocol_files
from ymir_runner_detection.demo import write_task

TINY = {"epochs": 2, "min_steps": 0,
        "save_period": 1, "img_size": 64, "batch_size_per_gpu": 4, "num_workers_per_gpu": 1,
        "mosaic": 0.0}
#: Long enough to be stopped or killed in the middle: many short epochs, a stage every epoch. No ONNX export:
#: torch's exporter prints its whole IR graph (a traceback-like dump) when a stop interrupts it, before the
#: run's own last line, which these tests would read as a traceback of ours.
LONG = dict(TINY, epochs=200, export_onnx=False)
KILLS = 10


def start(env_file: str) -> subprocess.Popen:
    """``ymir-runner run`` as the image's start.sh runs it, in a process group of its own (as in a container)."""
    # 4 CPUs: the task then loads with a DataLoader worker (on 2 it loads in the main process), whose clean-up
    # these tests check.
    return subprocess.Popen([sys.executable, "-m", "ymir_runner", "run", "--env", env_file],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, CPUS_ENV_VAR: "4"})


def out_of(env_file: str) -> str:
    return os.path.join(os.path.dirname(os.path.dirname(env_file)), "out")


def finish(process: subprocess.Popen, env_file: str, timeout: float) -> RunOutcome:
    """Wait for a run started by :func:`start`: what the platform observes then."""
    _, stderr = process.communicate(timeout=timeout)
    return RunOutcome(process.returncode, stderr, out_of(env_file), env_file)


def wait_for_stage(process: subprocess.Popen, out_dir: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(os.path.join(out_dir, "models", "result.yaml")):
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no stage saved in time"
        time.sleep(0.05)


def replace_with_undecodable(index_file: str) -> int:
    """Overwrite every image of an index with a JPEG whose header reads fine (so the dataset readers keep it)
    but whose scan data is gone: only decoding finds that nothing can be made of it."""
    count = 0
    with open(index_file, encoding="utf-8") as stream:
        for line in stream:
            path = line.split("\t")[0].strip()
            if path:
                with Image.open(path) as image:
                    data = undecodable_jpeg(*image.size)
                with open(path, "wb") as image_file:
                    image_file.write(data)
                count += 1
    return count


def undecodable_jpeg(width: int, height: int) -> bytes:
    encoded = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(encoded, "JPEG")
    data = encoded.getvalue()
    return data[:data.index(b"\xff\xda")] + bytes(512)  # everything from the start of scan is zeros


# --- no decodable image ---------------------------------------------------------------------------------------

def test_no_decodable_training_image_is_a_dataset_error_printed_last(tmp_path):
    env_file = write_task(str(tmp_path), config=TINY, n_train=6, n_val=4)
    count = replace_with_undecodable(str(tmp_path / "in" / "train-index.tsv"))
    outcome = finish(start(env_file), env_file, timeout=300)

    assert outcome.exit_code == 1
    assert torn_protocol_files(outcome.out_dir) == []  # every monitor.txt field parses, or the platform fails
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.DATASET)
    last = outcome.last_stderr_line
    assert last.startswith(f"ymir-runner: error {int(ReturnCode.DATASET)}: none of the {count} training images "
                           f"can be decoded (the first is {tmp_path}/"), last
    assert "Traceback" not in outcome.stderr


def test_no_decodable_candidate_is_a_dataset_error(trained, tmp_path):
    env_file = make_task(trained, tmp_path, ("mining", "infer"), {"num_workers_per_gpu": 1}, n_candidates=5)
    replace_with_undecodable(str(tmp_path / "in" / "candidate-index.tsv"))
    outcome = finish(start(env_file), env_file, timeout=300)

    assert outcome.exit_code == 1
    assert torn_protocol_files(outcome.out_dir) == []
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.DATASET)
    # the core's mining loop says it (mining runs first): every candidate was skipped, counted and named
    assert outcome.last_stderr_line == (f"ymir-runner: error {int(ReturnCode.DATASET)}: no candidate of "
                                        f"{tmp_path / 'in' / 'candidate-index.tsv'} could be read")


# --- stopped twice ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("signals, to_group, exit_code, line", [
    ((signal.SIGTERM, signal.SIGTERM), False, 143, "the task was stopped (SIGTERM)"),
    ((signal.SIGINT,), False, 130, "the task was interrupted (SIGINT)"),
    # to every process of the container, DataLoader workers included (docker stop with an init, Ctrl-C)
    ((signal.SIGTERM, signal.SIGTERM), True, 143, "the task was stopped (SIGTERM)"),
    ((signal.SIGINT,), True, 130, "the task was interrupted (SIGINT)"),
])
def test_stopped_during_training_with_dataloader_workers(tmp_path, signals, to_group, exit_code, line):
    env_file = write_task(str(tmp_path), config=LONG, n_train=16, n_val=4)
    process = start(env_file)
    wait_for_stage(process, out_of(env_file))
    workers = child_pids(process.pid)
    for signum in signals:
        if to_group:
            os.killpg(process.pid, signum)
        else:
            process.send_signal(signum)
        time.sleep(0.05)
    outcome = finish(process, env_file, timeout=120)

    assert outcome.exit_code == exit_code, outcome.stderr[-3000:]
    assert "Traceback" not in outcome.stderr, outcome.stderr[-3000:]
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.GENERIC)
    assert outcome.last_stderr_line == f"ymir-runner: error {int(ReturnCode.GENERIC)}: {line}"
    assert workers and not [pid for pid in workers if is_running(pid)], "DataLoader workers outlived the run"
    assert temp_files(out_of(env_file)) == []
    assert torn_protocol_files(out_of(env_file)) == []


# --- a full disk ------------------------------------------------------------------------------------------------

def test_disk_full_while_saving_a_checkpoint(tmp_path):
    env_file = write_task(str(tmp_path), config=dict(TINY, epochs=50), n_train=8, n_val=4)
    out_dir = out_of(env_file)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", out_dir], capture_output=True,
                             text=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs to fill up: {mounted.stderr.strip() or mounted.returncode}")
    try:
        outcome = finish(start(env_file), env_file, timeout=600)
        last = outcome.last_stderr_line
        assert outcome.exit_code == 1, outcome.stderr[-3000:]
        assert (outcome.state, outcome.return_code) == (4, ReturnCode.GENERIC)
        assert last.startswith(f"ymir-runner: error {int(ReturnCode.GENERIC)}: cannot write {out_dir}/models/epoch_")
        assert last.endswith(": no space left on device"), last
        assert temp_files(out_dir) == []
        assert torn_protocol_files(out_dir) == []  # the stages saved before the disk filled up are still valid
    finally:
        subprocess.run(["umount", "-l", out_dir], check=False)


# --- SIGKILL at random moments ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_sigkill_at_random_points_of_training(tmp_path):
    env_file = write_task(str(tmp_path), config=dict(TINY, epochs=6), n_train=16, n_val=4)
    rng = random.Random(10)
    for _ in range(KILLS):
        process = start(env_file)
        time.sleep(rng.uniform(1.0, 8.0))  # from start-up to the last stages (a run takes ~8 s)
        process.kill()
        process.communicate()
        assert torn_protocol_files(out_of(env_file)) == []


@pytest.mark.slow
def test_sigkill_at_random_points_of_mining_and_inference(trained, tmp_path):
    env_file = make_task(trained, tmp_path, ("mining", "infer"), {"num_workers_per_gpu": 1}, n_candidates=40)
    rng = random.Random(11)
    for _ in range(KILLS):
        process = start(env_file)
        time.sleep(rng.uniform(1.5, 8.0))
        process.kill()
        process.communicate()
        assert torn_protocol_files(out_of(env_file)) == []
