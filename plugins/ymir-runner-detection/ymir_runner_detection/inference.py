"""The inference task: the core's loop (``ymir_runner.inference.infer_candidates``) around this plugin's predictor.

The core reads the candidates, decodes and letterboxes them on threads ahead of the model, counts the images it
cannot use, scales the boxes into stored pixels, writes infer-result.json and reports progress; this module only
says how an image becomes a network input and which boxes are kept.
"""

from __future__ import annotations

import functools

import torch

from ymir_runner import Prediction, TaskContext
from ymir_runner.inference import infer_candidates, inference_threshold

from .checkpoint import task_checkpoint
from .predict import Letterboxed, decode_side, letterboxed, prefetch_workers, task_predictor


def infer(context: TaskContext) -> None:
    """Boxes of every candidate scoring at least the inference threshold (config key ``conf_threshold``, else the
    model's F1-optimal one), after class-aware NMS at ``iou_threshold``, at most ``max_detections`` per image."""
    checkpoint = task_checkpoint(context)
    hyper = context.hyper
    img_size = hyper.img_size or checkpoint.img_size
    threshold = inference_threshold(context, checkpoint.score_threshold)
    predictor = task_predictor(context, checkpoint)

    def predict(batch: list[Letterboxed]) -> list[Prediction]:
        with torch.inference_mode():
            return predictor.decoded_pixels(batch, score_threshold=threshold, top_k=int(hyper.max_detections),
                                            nms_iou=float(hyper.iou_threshold))

    infer_candidates(context, predict, preprocess=functools.partial(letterboxed, img_size=img_size),
                     batch_size=hyper.batch_size_per_gpu, min_side=decode_side(img_size),
                     workers=prefetch_workers(context))
