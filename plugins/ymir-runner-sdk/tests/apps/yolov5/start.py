"""A yolov5-like legacy executor: start.py runs train.py as a subprocess (which outlives a killed parent); with
config.yaml ``detach: true`` it starts train.py and exits at once, leaving it running (an orphan)."""

import os
import subprocess
import sys
import time

from ymir_exc import env, monitor

cfg = env.get_merged_config()
ymir = cfg["ymir"]
monitor.write_monitor_logger(percent=0.01)
train = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")]
if ymir.run_training and cfg["param"].get("detach"):
    subprocess.Popen(train, start_new_session=True)  # its own session: not even in the command's process group
    for _ in range(200):  # exit once train.py runs (it writes its pid file first)
        if os.path.exists(cfg["param"].get("pid_file", "")):
            break
        time.sleep(0.05)
elif ymir.run_training:
    subprocess.run(train, check=True)
