"""Seconds to score segmentation as the platform does (``ymir_runner.seg_evaluation``), issue 26's targets:
500 images x 10 objects at 640 x 480, instance <= 5 s, semantic <= 10 s (2 CPUs).

    python bench/bench_seg_evaluation.py [--images 500] [--objects 10] [--classes 5]

Ground truth: random ellipses (10 to 80 px radii) of random classes, as seg-coco json documents; instance
predictions: each object moved by (3, 2) px with a random confidence; semantic predictions: the ground truth's
label map moved alike, one annotation per class present (the infer-result.json form of type 3). The time covers
reading both documents (every RLE checked) and scoring (:func:`score_coco`); instance scoring is at IoU 0.5 and
at 0.5:0.95:0.05.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from faster_coco_eval.core import mask as coco_mask  # noqa: E402

from ymir_runner.seg_evaluation import score_coco  # noqa: E402

HEIGHT, WIDTH = 480, 640


def _annotation(number: int, image_id: int, class_id: int, mask: np.ndarray, score: float | None) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    entry = {"id": number, "image_id": image_id, "category_id": class_id, "iscrowd": 0,
             "bbox": [int(v) for v in coco_mask.toBbox(rle)], "area": int(coco_mask.area(rle)),
             "segmentation": {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode("ascii")}}
    if score is not None:
        entry["confidence"] = score
    return entry


def _ellipse(rng: np.random.Generator) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), bool)
    cy, cx = rng.uniform(0, HEIGHT), rng.uniform(0, WIDTH)
    ry, rx = rng.uniform(10, 80), rng.uniform(10, 80)
    y0, y1 = max(int(cy - ry), 0), min(int(cy + ry) + 1, HEIGHT)
    x0, x1 = max(int(cx - rx), 0), min(int(cx + rx) + 1, WIDTH)
    y, x = np.ogrid[y0:y1, x0:x1]
    mask[y0:y1, x0:x1] = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
    if not mask.any():
        mask[min(int(cy), HEIGHT - 1), min(int(cx), WIDTH - 1)] = True
    return mask


def build(num_images: int, num_objects: int, num_classes: int, seed: int = 0) -> tuple[dict, dict, dict]:
    rng = np.random.default_rng(seed)
    images, truth, instances, semantic = [], [], [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "file_name": f"{image_id:040d}.jpg", "width": WIDTH, "height": HEIGHT})
        labels = np.full((HEIGHT, WIDTH), 255, np.uint8)
        for _ in range(num_objects):
            mask, class_id = _ellipse(rng), int(rng.integers(num_classes))
            truth.append(_annotation(len(truth) + 1, image_id, class_id, mask, None))
            instances.append(_annotation(len(instances) + 1, image_id, class_id, np.roll(mask, (3, 2), (0, 1)),
                                         float(rng.random())))
            labels[mask] = class_id
        moved = np.roll(labels, (3, 2), (0, 1))
        for class_id in np.unique(moved[moved != 255]).tolist():
            semantic.append(_annotation(len(semantic) + 1, image_id, class_id, moved == class_id, 0.9))
    categories = [{"id": c, "name": f"class{c}"} for c in range(num_classes)]
    return ({"images": images, "categories": categories, "annotations": truth},
            {"images": images, "categories": categories, "annotations": instances},
            {"images": images, "categories": categories, "annotations": semantic})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--objects", type=int, default=10)
    parser.add_argument("--classes", type=int, default=5)
    args = parser.parse_args()
    truth, instances, semantic = build(args.images, args.objects, args.classes)
    names = [c["name"] for c in truth["categories"]]
    figures = {}
    for label, object_type, predictions, iou_thrs in (("instance@0.5", 4, instances, "0.5"),
                                                      ("instance@0.5:0.95", 4, instances, "0.5:0.95:0.05"),
                                                      ("semantic", 3, semantic, "0.5")):
        start = time.perf_counter()
        scores = score_coco(object_type, truth, predictions, names, iou_thrs=iou_thrs)
        figures[label] = {"seconds": round(time.perf_counter() - start, 2), **scores.stage_metrics()}
    print(json.dumps({"images": args.images, "objects_per_image": args.objects, "size": [HEIGHT, WIDTH],
                      "cpus": len(os.sched_getaffinity(0)), **figures}, indent=2))


if __name__ == "__main__":
    main()
