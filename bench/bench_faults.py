"""Kills survived: real detection runs stopped at random moments, and what the platform finds afterwards.

    python bench/bench_faults.py [--kills 25] [--stops 10] [--seed 0]

Trains a tiny model once, then
- SIGKILLs ``--kills`` training runs and ``--kills`` mining + inference runs at random moments (start-up,
  data loading, epochs, evaluation, ONNX export, result writing) and counts the runs after which every
  protocol file the platform parses (monitor.txt, result.yaml and the files it lists, result.tsv,
  infer-result.json) still parses;
- sends ``--stops`` training runs two SIGTERMs 50 ms apart at random moments and counts the runs that end as
  the platform needs: exit 143, monitor.txt at state 4 / 160004, `ymir-runner: error ...` as the last line,
  no temp file in /out, no DataLoader worker left running. (A SIGKILL can leave a temp file: the next run
  deletes it.)
Prints the counts and the wall time; every failure is printed with its reason.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import yaml

from ymir_runner.testing import RunOutcome, child_pids, install_models, is_running, temp_files, torn_protocol_files
from ymir_runner_detection.demo import write_task

TINY = {"epochs": 4, "save_period": 1, "img_size": 64, "batch_size_per_gpu": 4, "num_workers_per_gpu": 1,
        "mosaic": 0.0}


def start(env_file: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ymir_runner", "run", "--env", env_file],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def timed_run(env_file: str) -> float:
    began = time.perf_counter()
    process = start(env_file)
    _, stderr = process.communicate()
    if process.returncode:
        raise SystemExit(f"the reference run failed:\n{stderr[-3000:]}")
    return time.perf_counter() - began


def mining_tree(work: str, trained_root: str) -> str:
    """A mining + inference task on 40 candidates with the best stage of the trained model."""
    root = os.path.join(work, "mine")
    env_file = write_task(root, kinds=("mining", "infer"), config={"batch_size_per_gpu": 8, "num_workers_per_gpu": 1},
                          n_train=0, n_val=0, n_candidates=40)
    models = os.path.join(root, "in", "models")
    files = install_models(os.path.join(trained_root, "out", "models"), models)
    config_file = os.path.join(root, "in", "config.yaml")
    with open(config_file, encoding="utf-8") as stream:
        config = yaml.safe_load(stream)
    config["model_params_path"] = [os.path.join(models, file) for file in files]
    with open(config_file, "w", encoding="utf-8") as stream:
        yaml.safe_dump(config, stream)
    return env_file


def kill_round(env_file: str, kills: int, duration: float, rng: random.Random) -> tuple[int, list[str]]:
    out_dir = os.path.join(os.path.dirname(os.path.dirname(env_file)), "out")
    survived, failures = 0, []
    for attempt in range(kills):
        process = start(env_file)
        time.sleep(rng.uniform(0.0, duration))
        process.kill()
        process.communicate()
        problems = torn_protocol_files(out_dir)
        if problems:
            failures.append(f"kill {attempt}: {problems}")
        else:
            survived += 1
    return survived, failures


def stop_round(env_file: str, stops: int, duration: float, rng: random.Random) -> tuple[int, list[str]]:
    out_dir = os.path.join(os.path.dirname(os.path.dirname(env_file)), "out")
    clean, failures = 0, []
    for attempt in range(stops):
        shutil.rmtree(out_dir)  # each stop is judged on its own /out
        os.makedirs(out_dir)
        process = start(env_file)
        time.sleep(rng.uniform(0.0, duration * 0.7))  # from plugin loading to the last epochs
        workers = child_pids(process.pid)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate()
        outcome = RunOutcome(process.returncode, stderr, out_dir, env_file)
        problems = []
        if outcome.exit_code != 128 + signal.SIGTERM:
            problems.append(f"exit {outcome.exit_code}")
        if outcome.monitor_fields[3:] != ["4", "160004"]:
            problems.append(f"monitor {outcome.monitor_fields}")
        if outcome.last_stderr_line != "ymir-runner: error 160004: the task was stopped (SIGTERM)":
            problems.append(f"last line {outcome.last_stderr_line!r}")
        problems += [f"temp file {path}" for path in temp_files(out_dir)]
        problems += [f"worker {pid} still running" for pid in workers if is_running(pid)]
        if problems:
            failures.append(f"stop {attempt}: {problems}")
        else:
            clean += 1
    return clean, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=25, help="SIGKILLs per task kind")
    parser.add_argument("--stops", type=int, default=10, help="double SIGTERMs during training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as work:
        train_env = write_task(os.path.join(work, "train"), config=TINY, n_train=16, n_val=4)
        train_seconds = timed_run(train_env)
        mine_env = mining_tree(work, os.path.join(work, "train"))
        mine_seconds = timed_run(mine_env)
        print(f"reference runs: training {train_seconds:.1f} s, mining + inference {mine_seconds:.1f} s")

        failures: list[str] = []
        survived, failed = kill_round(train_env, args.kills, train_seconds, rng)
        failures += failed
        print(f"SIGKILL during training: {survived}/{args.kills} runs left every protocol file parseable")
        survived, failed = kill_round(mine_env, args.kills, mine_seconds, rng)
        failures += failed
        print(f"SIGKILL during mining + inference: {survived}/{args.kills} runs left every protocol file parseable")
        clean, failed = stop_round(train_env, args.stops, train_seconds, rng)
        failures += failed
        print(f"two SIGTERMs 50 ms apart during training: {clean}/{args.stops} runs ended at state 4 / 160004 with "
              f"the error line last, no temp file and no worker left")
    for failure in failures:
        print("FAILED", failure)
    print(f"wall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
