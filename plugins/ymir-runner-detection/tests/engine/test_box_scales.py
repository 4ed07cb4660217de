"""Box regression that scales: objects of 15 to 120 px are all fit, none pulled towards the mean size.

A short from-scratch run (300 optimizer steps, 48 generated images of 256 px with 1-4 shapes of 15-120 px)
must find nearly every object of each size at IoU > 0.5, with boxes of the right size.

What it took (objects found small / medium / large, the template's lr 0.006):
- ``box_mode: ltrb`` (models before 0.3, distances linear in the raw output): 74 % / 85 % / 95 %, large boxes 11 %
  too small, small ones 8 % too large: every box drifted to the mean (2 torch threads).
- ``ltrb_log`` with the box head starting at 16 px boxes: 23-32 % / 84-89 % / 87-95 % over seeds 0-2 with 1 thread,
  small boxes x1.44-1.48 (it passed with 2 threads once: the run was on a knife edge, hence an xfail until 2026-12-01).
- ``ltrb_log`` starting at the training boxes' typical size (``set_box_size_prior``, what the plugin does):
  97-100 % / 100 % / 100 %, sizes x0.97-1.02, over seeds 0-2 with 1 thread.
"""

import numpy as np
import pytest
import torch

from ymir_runner.evaluation import box_iou
from ymir_runner_detection import synthetic
from ymir_runner_detection.engine import (
    AugmentConfig,
    DetectionDataset,
    TargetConfig,
    build_dataloader,
    build_model,
    set_box_size_prior,
    train,
)
from ymir_runner_detection.predict import predict_images
from ymir_runner_detection.templates import TRAINING_DEFAULTS

BUCKETS = ((0, 30), (30, 60), (60, 1000))  # px, the longer side of the box


@pytest.mark.slow
def test_objects_of_15_to_120_px_are_all_fit(tmp_path):
    scene = synthetic.SceneConfig(objects_range=(1, 4), min_object_size=15.0, max_object_fraction=0.47,
                                  max_occlusion=0.0, max_clutter_lines=0)
    data = synthetic.generate(tmp_path, n_train=48, n_val=0, n_candidates=0, img_size_range=(256, 256), seed=3,
                              scene=scene)
    _fit_and_check(data)


def _fit_and_check(data) -> None:
    torch.manual_seed(0)
    model = build_model("nano", len(data.class_names))
    boxes = np.concatenate([boxes for _, boxes, _ in data.train_items])
    set_box_size_prior(model, boxes[:, 2:] - boxes[:, :2])  # as the plugin does (images are img_size already)
    dataset = DetectionDataset(data.train_items, 256, train=True, augment=AugmentConfig(mosaic_prob=0.0),
                               target_config=TargetConfig.for_model(model))
    loader = build_dataloader(dataset, 16, shuffle=True, full_batches=True, seed=0)
    train(model, loader, epochs=100, lr=TRAINING_DEFAULTS["learning_rate"], optimizer=TRAINING_DEFAULTS["optimizer"],
          weight_decay=TRAINING_DEFAULTS["weight_decay"], warmup_steps=20)

    found: dict[tuple[int, int], list[float]] = {bucket: [] for bucket in BUCKETS}
    size_ratio: dict[tuple[int, int], list[float]] = {bucket: [] for bucket in BUCKETS}
    detections = predict_images(model, [path for path, _, _ in data.train_items], 256, score_threshold=0.05, top_k=100)
    for (_, truth, _), detection in zip(data.train_items, detections):
        iou = box_iou(truth, detection.boxes) if len(detection.boxes) else np.zeros((len(truth), 1))
        for box, row in zip(truth, iou):
            size = max(box[2] - box[0], box[3] - box[1])
            bucket = next(b for b in BUCKETS if b[0] <= size < b[1])
            best = int(row.argmax())
            found[bucket].append(float(row[best]))
            if len(detection.boxes):
                match = detection.boxes[best]
                size_ratio[bucket].append(max(match[2] - match[0], match[3] - match[1]) / size)
    for bucket in BUCKETS:
        assert len(found[bucket]) >= 25, (bucket, len(found[bucket]))  # every size is really in the set
        hit = np.mean(np.array(found[bucket]) > 0.5)
        ratio = float(np.median(size_ratio[bucket]))
        assert hit >= 0.9 and 0.9 <= ratio <= 1.1, f"objects of {bucket} px: {hit:.0%} found, size x{ratio:.2f}"
