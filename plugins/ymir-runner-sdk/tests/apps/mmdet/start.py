"""An mmdetection-like legacy executor: writes models/result.yaml directly (not through the SDK), finding its
checkpoints by globbing the models folder."""

import glob
import os
import time

import yaml
from ymir_exc import env, monitor

ymir = env.get_current_env()
models = ymir.output.models_dir
for epoch in (1, 2):
    with open(os.path.join(models, f"epoch_{epoch}.pth"), "w") as stream:
        stream.write(f"checkpoint {epoch}\n")
    monitor.write_monitor_logger(percent=0.4 * epoch)
    latest = sorted(glob.glob(os.path.join(models, "*.pth")))[-1]
    stages = {f"epoch_{n}": {"stage_name": f"epoch_{n}", "files": [f"epoch_{n}.pth"], "mAP": 0.25 * n,
                             "timestamp": int(time.time())} for n in range(1, epoch + 1)}
    with open(os.path.join(models, "result.yaml"), "w") as stream:  # the published path, in place
        yaml.safe_dump({"best_stage_name": os.path.basename(latest)[:-4], "model_stages": stages}, stream)
    time.sleep(0.3)
