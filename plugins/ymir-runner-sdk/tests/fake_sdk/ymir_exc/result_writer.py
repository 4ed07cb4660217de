import json
import os
import time
from dataclasses import dataclass

import yaml

from . import LINE
from .env import get_current_env


@dataclass
class Box:
    x: float
    y: float
    w: float
    h: float


@dataclass
class Annotation:
    class_name: str
    score: float
    box: Box


def _result_file():
    return get_current_env().output.training_result_file


def _read():
    path = _result_file()
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as stream:
        return yaml.safe_load(stream) or {}


def _write(document):
    with open(_result_file(), "w", encoding="utf-8") as stream:  # in place, as the SDK writes it
        yaml.safe_dump(document, stream)


def _stage(stage_name, files, metrics, evaluate_config=None):
    document = _read()
    stages = document.setdefault("model_stages", {})
    stages[stage_name] = {"stage_name": stage_name, "files": list(files), "timestamp": int(time.time()), **metrics}
    best = max(stages.values(), key=lambda stage: stage["mAP"])
    document["best_stage_name"] = best["stage_name"]
    document["map" if LINE == "1.3" else "mAP"] = best["mAP"]
    if evaluate_config:
        document["evaluate_config"] = evaluate_config
    _write(document)


if LINE.startswith("1.1"):
    def write_training_result(model_names, mAP, classAPs, **kwargs):
        _write({"model": list(model_names), "map": mAP, "class_aps": classAPs, **kwargs})
elif LINE == "1.3":
    def write_model_stage(stage_name, files, mAP, timestamp=None, attachments=None):
        _stage(stage_name, files, {"mAP": mAP})

    def write_training_result(model_names, mAP, **kwargs):
        _stage("default", model_names, {"mAP": mAP})
else:
    def write_model_stage(stage_name, files, evaluation_result=None, mAP=None, timestamp=None, attachments=None,
                          evaluate_config=None):
        _stage(stage_name, files, dict(evaluation_result or {}) or {"mAP": mAP}, evaluate_config)

    def write_training_result(stage_name, files, evaluation_result=None, timestamp=None, attachments=None,
                              evaluate_config=None):
        _stage(stage_name, files, dict(evaluation_result or {}), evaluate_config)


def write_mining_result(mining_result):
    rows = sorted(mining_result, key=lambda row: row[1], reverse=True)
    with open(get_current_env().output.mining_result_file, "w", encoding="utf-8") as stream:
        for image, score in rows:
            stream.write(f"{image}\t{score}\n")


def write_infer_result(infer_result, algorithm="detection"):
    key = "annotations" if LINE.startswith("1.1") else "boxes"
    detection = {os.path.basename(image): {key: [
        {"box": vars(annotation.box), "class_name": annotation.class_name, "score": annotation.score}
        for annotation in annotations]} for image, annotations in infer_result.items()}
    with open(get_current_env().output.infer_result_file, "w", encoding="utf-8") as stream:
        json.dump({"detection": detection}, stream)
