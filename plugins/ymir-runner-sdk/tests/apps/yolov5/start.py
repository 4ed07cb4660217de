"""A yolov5-like legacy executor: start.py runs train.py as a subprocess (which outlives a killed parent)."""

import os
import subprocess
import sys

from ymir_exc import env, monitor

ymir = env.get_current_env()
monitor.write_monitor_logger(percent=0.01)
if ymir.run_training:
    subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")],
                   check=True)
