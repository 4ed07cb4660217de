"""The mining task: the core's loop (``ymir_runner.mining.mine_candidates``) scores the candidates with this
plugin's ``predict`` and ``probability_maps``; the core decodes, letterboxes (on threads ahead of the model),
ranks and writes result.tsv."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ymir_runner import Prediction, TaskContext, mining

from .checkpoint import task_checkpoint
from .predict import Predictor, decode_side, letterboxed, prefetch_workers, task_predictor
from .templates import INFER_DEFAULTS


def mine(context: TaskContext) -> None:
    """Score every candidate by config key ``mining_algorithm``. ``predict`` keeps every peak scoring at least
    ``mining.MIN_SCORE`` after NMS, by the infer keys ``iou_threshold`` and ``max_detections`` when the run has them
    (mining and inference together), else their defaults; boxes in the letterboxed image's pixels."""
    checkpoint = task_checkpoint(context)
    hyper = context.hyper
    img_size = hyper.img_size or checkpoint.img_size
    top_k = int(hyper.get("max_detections", INFER_DEFAULTS["max_detections"]))
    nms_iou = float(hyper.get("iou_threshold", INFER_DEFAULTS["iou_threshold"]))

    def predictor() -> Predictor:  # built on first use: the random algorithm needs no network
        return task_predictor(context, checkpoint)

    def predict(images: Sequence[np.ndarray]) -> list[Prediction]:
        with torch.inference_mode():
            return predictor().input_pixels(images, score_threshold=mining.MIN_SCORE, top_k=top_k, nms_iou=nms_iou)

    def probability_maps(images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        with torch.inference_mode():
            return predictor().probability_maps(images)

    mining.mine_candidates(context, predict=predict, probability_maps=probability_maps,
                           preprocess=lambda decoded: letterboxed(decoded, img_size).image,
                           batch_size=hyper.batch_size_per_gpu, min_side=decode_side(img_size),
                           workers=prefetch_workers(context))
