"""A demo-like legacy executor on the (fake) ymir_exc SDK, as the public demo image's app/start.py calls it:
progress that goes back within training, 0 to 1 twice in a mining + inference run, boxes outside the image.
config.yaml switches: ``crash`` (``training`` / ``mining``: raise there), ``sleep`` (seconds per step),
``linger`` (seconds before it exits), ``pid_file`` (write this process's pid there first), ``report_error`` (a
return code written with state 4 through the SDK (2.x), then exit 1)."""

import os
import sys
import time

from ymir_exc import LINE, env, monitor
from ymir_exc import result_writer as rw

print(f"demo: Python {sys.version.split()[0]}", file=sys.stderr)
cfg = env.get_merged_config()
param, ymir = cfg["param"], cfg["ymir"]
sleep = float(param.get("sleep", 0) or 0)
if param.get("pid_file"):
    with open(param["pid_file"], "w") as stream:
        stream.write(str(os.getpid()))


def step(percent):
    monitor.write_monitor_logger(percent)
    time.sleep(sleep)


def training():
    models = ymir.output.models_dir
    for percent in (0.0, 0.1, 0.2):
        step(percent)
    if param.get("report_error"):
        monitor.write_monitor_logger(percent=0.2, state=4, return_code=int(param["report_error"]))
        print("demo: the dataset is unusable", file=sys.stderr)
        sys.exit(1)
    for epoch in (1, 2):
        step(0.0 if epoch == 2 else 0.3)  # the second epoch restarts its own progress: 0.3, then 0.0
        name = f"epoch_{epoch}"
        if LINE.startswith("1.1"):
            path = os.path.join(models, f"model_{epoch}.bin")
            with open(path, "w") as stream:
                stream.write(f"weights of epoch {epoch}\n")
            rw.write_training_result(model_names=[f"model_{epoch}.bin"], mAP=0.3 + 0.1 * epoch, classAPs={})
        else:
            os.makedirs(os.path.join(models, name), exist_ok=True)
            with open(os.path.join(models, name, "model.bin"), "w") as stream:
                stream.write(f"weights of epoch {epoch}\n")
            rw.write_model_stage(stage_name=name, files=["model.bin"], mAP=0.3 + 0.1 * epoch)
        if param.get("crash") == "training":
            raise RuntimeError(f"demo crash after epoch {epoch}")
        step(0.5 * epoch)


def candidates():
    with open(ymir.input.candidate_index_file) as stream:
        return [line.split("\t")[0].strip() for line in stream if line.strip()]


def mining():
    images = candidates()
    scores = []
    for index, image in enumerate(images):
        step(index / len(images))
        scores.append((image, 0.1 * (index + 1)))
    if param.get("crash") == "mining":
        raise RuntimeError("demo crash in mining")
    rw.write_mining_result(mining_result=scores)
    step(1.0)


def infer():
    images = candidates()
    names = param["class_names"]
    results = {}
    for index, image in enumerate(images):
        step(index / len(images))
        results[image] = [
            rw.Annotation(class_name=names[0], score=0.9, box=rw.Box(x=2, y=3, w=10, h=12)),
            rw.Annotation(class_name=names[-1], score=0.5, box=rw.Box(x=-5, y=40, w=500, h=30)),  # leaves it
            rw.Annotation(class_name="not-a-class", score=0.7, box=rw.Box(x=1, y=1, w=5, h=5)),
        ]
    rw.write_infer_result(infer_result=results)
    step(1.0)


if ymir.run_training:
    training()
if ymir.run_mining:
    mining()
if ymir.run_infer:
    infer()
time.sleep(float(param.get("linger", 0) or 0))
sys.exit(0)
