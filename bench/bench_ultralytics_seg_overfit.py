"""The CPU quality check of the ultralytics instance-segmentation executor (issue 27): can a nano seg model learn at
all from scratch at test sizes? An overfit run: 16 generated images (``ymir_runner.testing.TaskTree``, one square
object each, two classes) at 160 px, training set = validation set, through ``ymir-runner run`` in a process of its
own; prints the CPU seconds and every stage's ``maskAP`` / ``boxAP`` / ``maskAP50_95`` (the core's evaluator).

    .venv-ultralytics/bin/python bench/bench_ultralytics_seg_overfit.py [--seeds 0 1 2] [--epochs 190]
        [--model yolo26n-seg] [--out DIR]

190 epochs are about 280 CPU s on 2 cores (the issue's budget: <= 300 CPU s per seed). Run it from the repository
root with the checkout on PYTHONPATH (``PYTHONPATH=.:plugins/ymir-runner-ultralytics``) to measure that checkout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time

import yaml

from ymir_runner.testing import TaskTree


def overfit(root: str, seed: int, epochs: int, model: str) -> dict:
    shutil.rmtree(root, ignore_errors=True)
    tree = TaskTree(root, images=16, size=(160, 160), object_type=4,
                    config={"epochs": epochs, "img_size": 160, "batch_size_per_gpu": 8,
                            "save_period": max(epochs // 6, 1), "seed": seed, "export_onnx": False, "model": model})
    pairs = "".join(f"{image}\t{annotation}\n" for image, annotation in zip(tree.images, tree.annotations))
    for index in ("/in/train-index.tsv", "/in/val-index.tsv"):  # training set = validation set
        with open(tree.local(index), "w", encoding="utf-8") as stream:
            stream.write(pairs)
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
            "stages": {name: {key: round(stage[key], 3) for key in ("maskAP", "boxAP", "maskAP50_95")}
                       for name, stage in result["model_stages"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=190)
    parser.add_argument("--model", default="yolo26n-seg")
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="seg-overfit-")
    for seed in args.seeds:
        print(yaml.safe_dump(overfit(os.path.join(out, f"seed{seed}"), seed, args.epochs, args.model),
                             sort_keys=False), flush=True)


if __name__ == "__main__":
    main()
