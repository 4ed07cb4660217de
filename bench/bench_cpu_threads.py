"""CPU seconds per training epoch of the detection plugin's engine: the old thread settings against the
product's, on a quiet machine and on one where other programs keep every CPU busy.

    python bench/bench_cpu_threads.py [--epochs 3] [--n-train 160] [--img-size 256]

Each configuration trains the same job (``plugins/ymir-runner-detection/experiments/train_synthetic.py``,
fixed epochs) in a child process; its CPU seconds (user + system of the process and its DataLoader workers)
and wall seconds are measured around it. "loaded" runs it while one busy-looping process per CPU runs beside
it (another job on a shared host). Only the training loop is measured (the script's own figures). Configurations:

* ``old``: what ymir-runner did before 0.3: OpenMP's default wait policy (idle threads spin), as many torch
  threads as CPUs, 2 DataLoader workers;
* ``product``: what ``ymir-runner`` sets now (``ymir_runner.cpus``): ``OMP_WAIT_POLICY=PASSIVE`` and the CPUs
  shared between compute threads and workers (``share_cpus(2)``: 2 threads and no worker on 2 CPUs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), "plugins", "ymir-runner-detection", "experiments", "train_synthetic.py")
sys.path.insert(0, os.path.dirname(HERE))

from ymir_runner.cpus import available_cpus, share_cpus  # noqa: E402


def configurations(cpus: int) -> dict[str, tuple[dict[str, str], list[str]]]:
    share = share_cpus(2, cpus=cpus)  # the product on CPUs
    return {
        "old": ({}, ["--threads", str(cpus), "--workers", "2", "--worker-nice", "0"]),
        "product": ({"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(cpus)},
                    ["--threads", str(share.threads), "--workers", str(share.workers), "--worker-nice", "0"]),
    }


def measure(environment: dict[str, str], arguments: list[str], common: list[str]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of the training loop of one run in a child process (data generation and
    start-up excluded; the script measures its process and DataLoader workers around ``train``)."""
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    env.update(environment)
    with tempfile.TemporaryDirectory() as folder:
        summary = os.path.join(folder, "summary.json")
        subprocess.run([sys.executable, SCRIPT, *common, *arguments, "--json", summary], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        with open(summary, encoding="utf-8") as stream:
            result = json.load(stream)
    return result["train_cpu_seconds"], result["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=160)
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--data", default="/tmp/bench-cpu-threads-data", help="generated dataset folder (reused)")
    args = parser.parse_args()
    cpus = available_cpus()
    common = ["--epochs", str(args.epochs), "--n-train", str(args.n_train), "--n-val", "16",
              "--img-size", str(args.img_size), "--out-dir", args.data]
    measure({}, ["--threads", "1", "--workers", "0"], [*common[:1], "1", *common[2:]])  # data + warm caches
    print(f"{cpus} CPUs available; {args.epochs} epochs of {args.n_train} images at {args.img_size} px")
    print(f"{'machine':8} {'config':8} {'CPU s/epoch':>12} {'wall s/epoch':>13}")
    for machine in ("quiet", "loaded"):
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cpus)
                ] if machine == "loaded" else []
        try:
            for name, (environment, arguments) in configurations(cpus).items():
                cpu, wall = measure(environment, arguments, common)
                print(f"{machine:8} {name:8} {cpu / args.epochs:12.1f} {wall / args.epochs:13.1f}", flush=True)
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()


if __name__ == "__main__":
    main()
