"""The CPU quality check of the ultralytics semantic-segmentation executor (issue 27): can a nano sem model learn at
all from scratch at test sizes? An overfit run: 16 generated images (``TwoSquareTree`` of the plugin's
tests/test_ultralytics_semantic.py: a red and a green square each, side by side, filled as their masks, two classes;
the rest unlabelled: an extra background class, the executor's default) at 160 px, training set = validation set,
through ``ymir-runner run`` in a process of its own; prints the CPU seconds and every stage's ``mIoU`` / ``mAcc`` /
``aAcc`` (the core's evaluator: the platform's scores, on the labelled pixels).

    .venv-ultralytics/bin/python bench/bench_ultralytics_sem_overfit.py [--seeds 0 1 2] [--epochs EPOCHS]
        [--model yolo26n-sem] [--out DIR]

The default epochs are about 280 CPU s on 2 cores (the issue's budget: <= 300 CPU s per seed). Run it from the
repository root with the checkout on PYTHONPATH (``PYTHONPATH=.:plugins/ymir-runner-ultralytics``) to measure that
checkout.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import yaml

# the run is the slow test's (TwoSquareTree, overfit_tree): one definition of what is measured
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "plugins", "ymir-runner-ultralytics",
                                "tests"))
from test_ultralytics_semantic import overfit_tree  # noqa: E402


def overfit(root: str, seed: int, epochs: int, model: str) -> dict:
    tree = overfit_tree(root, seed, epochs, model)
    started, before = time.monotonic(), os.times()
    done = subprocess.run(tree.command(), capture_output=True, text=True)
    after = os.times()
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    if done.returncode:
        raise SystemExit(f"seed {seed}: exit {done.returncode}\n{done.stderr[-3000:]}")
    with open(os.path.join(root, "out", "models", "result.yaml"), encoding="utf-8") as stream:
        result = yaml.safe_load(stream)
    return {"seed": seed, "wall_s": round(time.monotonic() - started), "cpu_s": round(cpu),
            "best": result["best_stage_name"],
            "stages": {name: {key: round(stage[key], 3) for key in ("mIoU", "mAcc", "aAcc")}
                       for name, stage in result["model_stages"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--model", default="yolo26n-sem")
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="sem-overfit-")
    for seed in args.seeds:
        print(yaml.safe_dump(overfit(os.path.join(out, f"seed{seed}"), seed, args.epochs, args.model),
                             sort_keys=False), flush=True)


if __name__ == "__main__":
    main()
