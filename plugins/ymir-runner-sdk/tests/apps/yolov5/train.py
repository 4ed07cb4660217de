"""yolov5-like training: best.pt and last.pt at the models root, overwritten every epoch, each stage listed with
files=[] (the SDK helper takes every file of the folder). config.yaml: ``fail_with`` (raise a RuntimeError with
this message at epoch 2, as CUDA does), ``sleep`` (seconds per epoch), ``pid_file`` (this grandchild's pid),
``epochs``."""

import os
import sys
import time

from ymir_exc import env, monitor, util

cfg = env.get_merged_config()
param, ymir = cfg["param"], cfg["ymir"]
if param.get("pid_file"):
    with open(param["pid_file"], "w") as stream:
        stream.write(str(os.getpid()))
epochs = int(param.get("epochs", 3))
for epoch in range(1, epochs + 1):
    if param.get("fail_with") and epoch == 2:
        print("train: epoch 2/3", file=sys.stderr)
        raise RuntimeError(param["fail_with"])
    for name in ("best.pt", "last.pt"):
        with open(os.path.join(ymir.output.models_dir, name), "w") as stream:
            stream.write(f"{name} of epoch {epoch}\n")
    util.write_ymir_training_result(cfg, map50=0.2 * epoch, files=[], id=f"epoch_{epoch}")
    monitor.write_monitor_logger(percent=epoch / epochs)
    time.sleep(float(param.get("sleep", 0) or 0))
