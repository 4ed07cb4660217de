"""Training benchmark of the detection plugin's engine on a larger generated set, on this machine's CPU.

    python bench/bench_detection_training.py [--time-budget 360] [--n-train 600] [...]

Prints (1) mAP50 and mAP50-95 on the validation split reached within a fixed training time budget (6 min of
CPU), from scratch, and (2) training throughput in images/s and the share of step time spent waiting for the
DataLoader (target <= 10 %). All options of plugins/ymir-runner-detection/experiments/train_synthetic.py
apply. The defaults are the plugin's training recipe (the script's defaults: the training template's model,
optimizer, learning rate, weight decay, batch size, mosaic and DataLoader workers) at img_size 256 on 600
training images of the plain 3-class shapes scene, the issue's reference (target 0.998 mAP50 / 0.815
mAP50-95); ``--scene hard`` adds tiny objects, occlusion and clutter.
"""

from __future__ import annotations

import os
import runpy
import sys

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plugins",
                      "ymir-runner-detection", "experiments", "train_synthetic.py")
DEFAULTS = ["--time-budget", "360", "--n-train", "600", "--n-val", "150", "--img-size", "256", "--scene", "plain"]

if __name__ == "__main__":
    sys.argv = [SCRIPT, *DEFAULTS, *sys.argv[1:]]  # later options win with argparse
    runpy.run_path(SCRIPT, run_name="__main__")
