"""The built-in detector against YOLOv8n, both from scratch, on real aerial photos at equal CPU seconds.

    python bench/bench_real_data.py [--steps 150,230,400] [--cache bench/.cache]

The data: NEON tree crowns from the ``deepforest`` wheel (``bench/real_dataset.py``: 34 training tiles of
400 px, 11 validation tiles from another Yellowstone tile and two other sites, 1 class, crowns 8-105 px).

For each optimizer-step count, the product trains as a platform task would run it: a YMIR work tree
(``/in`` index files, det-ark annotations, config.yaml with the training template's defaults except
``img_size: 416``, ``epochs`` the fewest with ``<steps>`` optimizer steps (``recipe.epochs_for_steps``: 50 of 3
steps for 150), ``export_onnx: false``) run by ``ymir-runner run``
in a child process. Its CPU seconds (user + system of the process and its DataLoader workers) include the 10
stage evaluations. Then the stage the platform would deploy (``best_stage_name``) and the last stage are
evaluated independently, with the same evaluator and settings as ``bench/yolo_baseline.py`` uses for YOLOv8n
(COCO mAP by faster-coco-eval on the exact float boxes, up to 300 boxes per image, NMS IoU 0.6).

YOLOv8n's figures come from ``bench/.cache/yolo_budget_<epochs>/yolo_curve.json``, full ultralytics schedules
of 27, 48, 65 and 100 epochs (about 180, 300, 380 and 610 training CPU s on 2 cores) made with::

    .venv-ultralytics/bin/python bench/yolo_baseline.py --data bench/.cache/neon_trees/data.yaml \\
        --epochs 48 --imgsz 416 --out bench/.cache/yolo_budget_48

The table pairs each run of ours with the YOLO run of the nearest CPU budget.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import real_dataset  # noqa: E402

from ymir_runner.testing import ark_text, write_task_files  # noqa: E402
from ymir_runner_detection import EXECUTOR_NAME  # noqa: E402
from ymir_runner_detection.recipe import epochs_for_steps  # noqa: E402
from ymir_runner_detection.synthetic import inclusive_corners  # noqa: E402
from ymir_runner_detection.templates import TRAINING_DEFAULTS  # noqa: E402

IMG_SIZE = 416
MAX_DETECTIONS = 300
NMS_IOU = 0.6


def ground_truth(dataset: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """``split -> [(image path, boxes [N,4] float x1 y1 x2 y2 pixels)]`` from boxes_px.json."""
    boxes = json.loads((dataset / "boxes_px.json").read_text())
    return {split: [(str(dataset / "images" / split / name), np.asarray(b, np.float32).reshape(-1, 4))
                    for name, b in sorted(boxes[split].items())] for split in ("train", "val")}


def write_tree(root: Path, truth: dict[str, list[tuple[str, np.ndarray]]], steps: int,
               overrides: dict | None = None) -> str:
    """A training task under ``root/in`` (det-ark annotations next to the index files); returns env.yaml."""
    annotations = root / "in" / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    for split, items in truth.items():
        lines = []
        for image, boxes in items:
            annotation = annotations / (Path(image).stem + ".txt")
            annotation.write_text(ark_text(inclusive_corners(boxes, np.zeros(len(boxes), np.int64))))
            lines.append(f"{image}\t{annotation}\n")
        (root / "in" / f"{split}-index.tsv").write_text("".join(lines))
    batch = (overrides or {}).get("batch_size_per_gpu", TRAINING_DEFAULTS["batch_size_per_gpu"])
    config = {"class_names": ["tree"], "gpu_id": "", "gpu_count": 0, "object_type": 2, "plugin": EXECUTOR_NAME,
              "img_size": IMG_SIZE, "epochs": epochs_for_steps(len(truth["train"]), batch, steps),
              "export_onnx": False, **(overrides or {})}
    return write_task_files(str(root), ["training"], config, task_id=f"neon-{steps}")


def train(env_file: str) -> float:
    """Run the task in a child process; its CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([sys.executable, "-m", "ymir_runner", "run", "--env", env_file], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def evaluate(checkpoint: str, val: list[tuple[str, np.ndarray]]) -> tuple[float, float]:
    """(mAP50, mAP50-95) of a stage's model.pt on the float ground truth, as yolo_baseline.py measures."""
    from ymir_runner.evaluation import evaluate_detections
    from ymir_runner_detection.checkpoint import load_checkpoint
    from ymir_runner_detection.predict import predict_images

    model = load_checkpoint(checkpoint).build_model()
    predictions = predict_images(model, [image for image, _ in val], IMG_SIZE, score_threshold=0.01,
                                 top_k=MAX_DETECTIONS, nms_iou=NMS_IOU)
    result = evaluate_detections([(boxes, np.zeros(len(boxes), np.int64)) for _, boxes in val], predictions, 1,
                                 max_detections=MAX_DETECTIONS)
    return result.map50 or 0.0, result.map50_95 or 0.0


def evaluate_stages(root: Path, val: list[tuple[str, np.ndarray]]) -> tuple[tuple[float, float], tuple[float, float]]:
    """(mAP50, mAP50-95) of the stage the platform would deploy (``best_stage_name``) and of the last stage."""
    models = root / "out" / "models"
    result = yaml.safe_load((models / "result.yaml").read_text())
    last = list(result["model_stages"])[-1]
    return (evaluate(str(models / result["best_stage_name"] / "model.pt"), val),
            evaluate(str(models / last / "model.pt"), val))


def yolo_runs(cache: Path) -> list[dict]:
    """Per YOLO budget run: CPU s, last epoch and best epoch (by 0.1 mAP50 + 0.9 mAP50-95)."""
    runs = []
    for curve_file in sorted(cache.glob("yolo_budget_*/yolo_curve.json")):
        curve = json.loads(curve_file.read_text())
        if not curve:
            continue
        best = max(curve, key=lambda row: 0.1 * row["map50"] + 0.9 * row["map50_95"])
        runs.append({"epochs": curve[-1]["epoch"], "cpu_s": curve[-1]["cpu_s"], "last": curve[-1], "best": best})
    return sorted(runs, key=lambda run: run["cpu_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="150,230,400", help="optimizer steps of each run (comma-separated)")
    parser.add_argument("--cache", default=str(HERE / ".cache"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training config key (YAML value), e.g. --set mosaic=0")
    args = parser.parse_args()
    overrides = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)}
    cache = Path(args.cache).resolve()
    dataset = real_dataset.prepare(cache)
    truth = ground_truth(dataset)
    yolo = yolo_runs(cache)
    print(f"{'system':24} {'CPU s':>6} {'deployed mAP50':>15} {'mAP50-95':>9} {'last mAP50':>11} {'mAP50-95':>9}")
    for steps in (int(value) for value in args.steps.split(",")):
        root = cache / f"ymir_neon_{steps}"
        shutil.rmtree(root, ignore_errors=True)
        env_file = write_tree(root, truth, steps, overrides)
        cpu = train(env_file)
        deployed, last = evaluate_stages(root, truth["val"])
        result = yaml.safe_load((root / "out" / "models" / "result.yaml").read_text())
        stages = list(result["model_stages"])
        label = f"built-in, {steps} steps"
        print(f"{label:24} {cpu:6.0f} {deployed[0]:15.3f} {deployed[1]:9.3f} {last[0]:11.3f} "
              f"{last[1]:9.3f}   (deployed: {result['best_stage_name']} of {len(stages)} stages)", flush=True)
        curve = " ".join(f"{stage['mAP50_95']:.3f}" for stage in result["model_stages"].values())
        print(f"{'':24} stage mAP50-95 (the task's own evaluation, in stage order): {curve}", flush=True)
        if yolo:
            peer = min(yolo, key=lambda run: abs(run["cpu_s"] - cpu))
            best, final = peer["best"], peer["last"]
            label = f"YOLOv8n, {peer['epochs']} epochs"
            print(f"{label:24} {peer['cpu_s']:6.0f} {best['map50']:15.3f} "
                  f"{best['map50_95']:9.3f} {final['map50']:11.3f} {final['map50_95']:9.3f}   (best: epoch "
                  f"{best['epoch']})", flush=True)
    if not yolo:
        print("no YOLOv8n runs under", cache, "(see the module docstring)")


if __name__ == "__main__":
    main()
