"""YOLOv8n from scratch with ultralytics on the CPU: validation mAP against training CPU seconds, epoch by epoch.

    .venv-ultralytics/bin/python bench/yolo_baseline.py --data DIR/data.yaml --epochs 65 --imgsz 416 --out OUTDIR \
        [--cpu-budget 330]

The baseline that the built-in detector is compared to at equal CPU seconds, on the real set of
``bench/real_dataset.py``. Runs in its own virtual environment (``.venv-ultralytics``: ultralytics, torchvision and
faster-coco-eval), never in the project's.

Training: ``YOLO("yolov8n.yaml")`` (random init, nothing pretrained), ultralytics' default recipe (batch 16, nominal
batch ``nbs`` 64, i.e. one optimizer step per 4 batches, optimizer ``auto`` = AdamW lr 0.002 here, 3 warmup epochs,
mosaic off for the last 10 epochs, EMA, seed 0) with ``device="cpu"``, ``amp=False``, ``plots=False``,
``pretrained=False``, ``cache="ram"``, ``val=False`` (its own per-epoch validation is not needed here; it still
validates the final epoch, and that CPU is subtracted) and ``save=False``. ``--set KEY=VALUE`` passes more training
arguments (e.g. ``--set nbs=16``: a step per batch). On the CPU ultralytics loads data in the training process
(``workers=0``: no worker processes) and sets torch to ``min(8, cores - 1)`` threads: one thread on a 2-core machine.

Nothing is downloaded: ``YOLO_OFFLINE=1`` (no online probe, no telemetry), settings in ``OUTDIR/ultralytics`` with
``sync=False``, the font check that would fetch Arial.ttf for plots is skipped, and a socket guard makes any
connection or name look-up fail and counts it (the summary prints the count; 0 expected).

After every epoch (``on_fit_epoch_end``) it records:

- ``cpu_s``: training CPU seconds, user + system, of this process and its child processes (reaped ones through
  ``os.times``, live ones through psutil), counted from ``on_train_start`` (after dataset and model setup); the CPU
  spent by the evaluation below and by any ultralytics validation is measured and subtracted.
- ``map50``, ``map50_95``: COCO box mAP at IoU 0.5 and 0.5:0.95 (faster-coco-eval, COCO's parameters except that
  up to 300 detections per image are scored, as ``ymir_runner.evaluation`` scores the built-in's, instead of COCO's
  100), computed here and not by ultralytics' validator. The current EMA model
  predicts every val image: resized to ``imgsz`` on its long side (cv2 bilinear, RGB, 0-1), zero-padded right/bottom
  to a multiple of 32, confidence >= 0.001, NMS IoU 0.6, at most 300 boxes; boxes are mapped back to the original
  pixels. Ground truth: ``boxes_px.json`` next to data.yaml (x1, y1, x2, y2 in pixels) when there is one, else the
  YOLO label files; COCO gets x, y, w, h.

Writes ``OUTDIR/yolo_curve.json`` (a list of {epoch, cpu_s, map50, map50_95}, rewritten after each epoch) and prints
the table. ``--cpu-budget`` stops training after the first epoch whose ``cpu_s`` exceeds it.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

os.environ["YOLO_OFFLINE"] = "1"  # before ultralytics is imported: its import probes DNS unless offline

NET_ATTEMPTS: list[str] = []
MAX_DETECTIONS = 300  # boxes kept per image by NMS and scored by COCO


def _guard_network() -> None:
    """Make every internet (IPv4/IPv6) connection and name look-up raise OSError and record it in NET_ATTEMPTS."""
    original_connect = socket.socket.connect

    def connect(self, address):  # type: ignore[no-untyped-def]
        if self.family in (socket.AF_INET, socket.AF_INET6):
            NET_ATTEMPTS.append(f"connect {address}")
            raise OSError(f"network disabled by yolo_baseline.py: connect {address}")
        return original_connect(self, address)

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        NET_ATTEMPTS.append(f"getaddrinfo {host}")
        raise socket.gaierror(f"network disabled by yolo_baseline.py: {host}")

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and all its children (reaped and live)."""
    import psutil

    t = os.times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in psutil.Process().children(recursive=True):
        try:
            c = child.cpu_times()
        except psutil.Error:
            continue
        total += c.user + c.system
    return total


def load_ground_truth(data_yaml: Path) -> dict[Path, list[list[float]]]:
    """Val image path -> boxes [x1, y1, x2, y2] in pixels, from boxes_px.json or else from the YOLO label files."""
    import yaml
    from PIL import Image

    data = yaml.safe_load(data_yaml.read_text())
    root = Path(data.get("path") or data_yaml.parent)
    val_dir = root / data["val"]
    images = sorted(p for p in val_dir.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".tif"})
    boxes_json = root / "boxes_px.json"
    if boxes_json.exists():
        val = json.loads(boxes_json.read_text())["val"]
        return {p: val.get(p.name, []) for p in images}
    gt = {}
    for p in images:
        label = root / "labels" / Path(data["val"]).name / f"{p.stem}.txt"
        w, h = Image.open(p).size
        boxes = []
        for line in label.read_text().splitlines() if label.exists() else []:
            _, cx, cy, bw, bh = (float(v) for v in line.split()[:5])
            boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
        gt[p] = boxes
    return gt


def predict(model, image_path: Path, imgsz: int, conf: float = 0.001, iou: float = 0.6,
            max_det: int = MAX_DETECTIONS):
    """Boxes (x1, y1, x2, y2, px of the original image) and scores of one image, single class, as numpy arrays."""
    import cv2
    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    image = np.asarray(Image.open(image_path).convert("RGB"))
    h, w = image.shape[:2]
    r = imgsz / max(h, w)
    nw, nh = round(w * r), round(h * r)
    padded = np.zeros((nh + (-nh) % 32, nw + (-nw) % 32, 3), dtype=np.uint8)
    padded[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    x = torch.from_numpy(padded).permute(2, 0, 1)[None].float() / 255
    out = model(x)
    y = (out[0] if isinstance(out, (tuple, list)) else out)[0]  # (4 + nc, anchors): cx, cy, w, h (input px), scores
    scores, _ = y[4:].max(0)
    keep = scores >= conf
    xywh, scores = y[:4, keep].T, scores[keep]
    boxes = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    order = torch.argsort(scores, descending=True)[:30000]  # ultralytics' pre-NMS cap
    boxes, scores = boxes[order], scores[order]
    kept = torchvision.ops.nms(boxes, scores, iou)[:max_det]
    return (boxes[kept] / r).numpy(), scores[kept].numpy()


def coco_map(gt: dict[Path, list[list[float]]], detections: dict[Path, tuple]) -> tuple[float, float]:
    """(mAP50, mAP50-95) of the detections against the ground truth with faster-coco-eval, up to ``MAX_DETECTIONS``
    per image; one class."""
    import contextlib
    import io

    from faster_coco_eval import COCO, COCOeval_faster

    images, annotations, results = [], [], []
    for image_id, (path, boxes) in enumerate(gt.items(), 1):
        images.append({"id": image_id, "file_name": path.name})
        for x1, y1, x2, y2 in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        for (x1, y1, x2, y2), score in zip(*detections[path]):
            results.append({"image_id": image_id, "category_id": 1, "score": float(score),
                            "bbox": [float(x1), float(y1), float(x2 - x1), float(y2 - y1)]})
    if not results:
        return 0.0, 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "obj"}]}
        coco_gt.createIndex()
        evaluator = COCOeval_faster(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.params.maxDets = [1, 10, MAX_DETECTIONS]  # stats[0] and stats[1] are read at the last one
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return float(evaluator.stats[1]), float(evaluator.stats[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="ultralytics data.yaml (bench/real_dataset.py writes one)")
    parser.add_argument("--epochs", type=int, default=65)
    parser.add_argument("--imgsz", type=int, default=416, help="training and evaluation input size, px")
    parser.add_argument("--out", required=True, help="output folder: yolo_curve.json and ultralytics' run files")
    parser.add_argument("--cpu-budget", type=float, default=None,
                        help="stop after the first epoch whose training CPU seconds exceed this")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="extra ultralytics training argument, e.g. nbs=16 (repeatable; values parsed as YAML)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ["YOLO_CONFIG_DIR"] = str(out / "ultralytics")
    _guard_network()

    import torch
    import ultralytics.data.utils
    import yaml
    from ultralytics import YOLO
    from ultralytics.utils import SETTINGS

    SETTINGS.update({"sync": False, "tensorboard": False})
    ultralytics.data.utils.check_font = lambda *a, **k: None  # it would fetch Arial.ttf, used only by plots
    gt = load_ground_truth(Path(args.data).resolve())
    curve: list[dict] = []
    state = {"start": 0.0, "excluded": 0.0, "val_start": 0.0, "epoch_done": False, "wall": 0.0}

    def training_cpu() -> float:
        return cpu_seconds() - state["start"] - state["excluded"]

    def on_train_start(trainer) -> None:
        state["start"], state["wall"] = cpu_seconds(), time.time()

    def on_val_start(validator) -> None:
        state["val_start"] = cpu_seconds()

    def on_val_end(validator) -> None:
        state["excluded"] += cpu_seconds() - state["val_start"]

    def on_train_epoch_end(trainer) -> None:
        state["epoch_done"] = True  # tells the epoch's on_fit_epoch_end from the one after final_eval

    def on_fit_epoch_end(trainer) -> None:
        if not state["epoch_done"]:
            return
        state["epoch_done"] = False
        train_cpu = training_cpu()
        eval_start = cpu_seconds()
        model = trainer.ema.ema
        model.eval()
        with torch.no_grad():
            detections = {p: predict(model, p, args.imgsz) for p in gt}
        map50, map50_95 = coco_map(gt, detections)
        state["excluded"] += cpu_seconds() - eval_start
        curve.append({"epoch": trainer.epoch + 1, "cpu_s": round(train_cpu, 2), "map50": round(map50, 4),
                      "map50_95": round(map50_95, 4)})
        (out / "yolo_curve.json").write_text(json.dumps(curve, indent=1))
        print(f"[yolo_baseline] epoch {trainer.epoch + 1}: train CPU {train_cpu:.1f} s, wall "
              f"{time.time() - state['wall']:.0f} s, mAP50 {map50:.4f}, mAP50-95 {map50_95:.4f}", flush=True)
        if args.cpu_budget is not None and train_cpu > args.cpu_budget:
            trainer.save_model()  # with save=False only the final epoch saves, and ultralytics wants a checkpoint
            trainer.stop = True

    model = YOLO("yolov8n.yaml")
    for event, fn in [("on_train_start", on_train_start), ("on_val_start", on_val_start),
                      ("on_val_end", on_val_end), ("on_train_epoch_end", on_train_epoch_end),
                      ("on_fit_epoch_end", on_fit_epoch_end)]:
        model.add_callback(event, fn)
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    train_args = dict(data=str(Path(args.data).resolve()), epochs=args.epochs, imgsz=args.imgsz, device="cpu",
                      pretrained=False, amp=False, plots=False, val=False, save=False, cache="ram", workers=0,
                      project=str(out), name="train", exist_ok=True, verbose=True)
    cpu_at_start = cpu_seconds()
    model.train(**{**train_args, **extra})
    print(f"\nYOLOv8n from scratch, imgsz {args.imgsz}, extra args {extra}, {torch.get_num_threads()} torch threads; "
          f"setup before training {state['start'] - cpu_at_start:.1f} CPU s; evaluation excluded "
          f"{state['excluded']:.1f} CPU s; network attempts blocked: {len(NET_ATTEMPTS)} {NET_ATTEMPTS[:5]}")
    print(f"{'epoch':>5} {'cpu_s':>8} {'mAP50':>7} {'mAP50-95':>8}")
    for row in curve:
        print(f"{row['epoch']:>5} {row['cpu_s']:>8.1f} {row['map50']:>7.4f} {row['map50_95']:>8.4f}")
    print(f"curve: {out / 'yolo_curve.json'}")


if __name__ == "__main__":
    sys.exit(main())
