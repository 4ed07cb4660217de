"""What ``ymir-runner demo`` reaches with its defaults, over 3 seeds (the figure the demo prints as expected).

    python bench/bench_demo.py [--seeds 0,1,2] [--out /tmp/bench-demo]

Each seed is one ``ymir-runner demo FOLDER --seed N`` in a child process (data and training both seeded), with
the demo's defaults otherwise. Prints per seed the wall seconds, the CPU seconds of the process and its
children, and the best stage's mAP@0.5 and mAP50-95 from result.yaml (what the demo prints), then the lowest
mAP@0.5: the demo's ``EXPECTED_MAP50`` must not exceed it.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

import yaml

from ymir_runner_detection.demo import DEMO_IMAGES, DEMO_STEPS, EXPECTED_MAP50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="/tmp/bench-demo")
    args = parser.parse_args()
    print(f"ymir-runner demo defaults: {DEMO_STEPS} optimizer steps, {DEMO_IMAGES} training images; "
          f"expected mAP@0.5 >= {EXPECTED_MAP50}")
    print(f"{'seed':>4} {'wall s':>7} {'CPU s':>6} {'mAP@0.5':>8} {'mAP50-95':>9}  best stage")
    reached = []
    for seed in (int(value) for value in args.seeds.split(",")):
        folder = os.path.join(args.out, f"seed{seed}")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ymir_runner", "demo", folder, "--seed", str(seed)], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        with open(os.path.join(folder, "out", "models", "result.yaml"), encoding="utf-8") as stream:
            result = yaml.safe_load(stream)
        best = result["model_stages"][result["best_stage_name"]]
        reached.append(best["mAP"])
        print(f"{seed:>4} {wall:7.0f} {cpu:6.0f} {best['mAP']:8.3f} {best['mAP50_95']:9.3f}  {best['stage_name']}",
              flush=True)
    print(f"lowest mAP@0.5 over {len(reached)} seeds: {min(reached):.3f} (expected >= {EXPECTED_MAP50})")


if __name__ == "__main__":
    main()
