"""The mining task: the core's loop and scores (:func:`ymir_runner.mining.mine_candidates`) around this plugin's
model (:mod:`.predict`): boxes for entropy and cald, the head's class-score maps for aldd; instance segmentation
(object type 4) the same on its instances."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ymir_runner import Prediction, TaskContext, mining
from ymir_runner.mining import MiningSettings

from . import devices, environment, weights
from .templates import INFER_DEFAULTS

#: YMIR's instance-segmentation object type: entropy and cald score the instances' boxes (from their masks), aldd
#: the head's class scores, as for detection.
INSTANCE = 4


def mine(context: TaskContext) -> None:
    hyper = context.hyper
    settings = MiningSettings.from_context(context)  # ConfigError for an algorithm this executor does not declare
    if not settings.uses_model:  # random: no model, no image decoded
        mining.mine_candidates(context)
        return
    device = devices.select_device(context.config.gpu_ids)
    environment.prepare(context.work_dir)
    with environment.task_log(), devices.out_of_memory_as_error():
        predictor = weights.load_model(context, device).predictor
        # A task that runs mining and inference together has the infer keys; mining alone uses their defaults.
        iou = float(hyper.get("iou_threshold", INFER_DEFAULTS["iou_threshold"]))
        max_det = int(hyper.get("max_detections", INFER_DEFAULTS["max_detections"]))

        instances = context.config.object_type == INSTANCE

        def predict(images: Sequence[np.ndarray]) -> list[Prediction]:
            if instances:  # boxes of the instances' masks (the core's instance_prediction), in the images' pixels
                fitted = [predictor.fit(image) for image in images]
                found = predictor.predict_instances(fitted, conf=mining.MIN_SCORE, iou=iou, max_det=max_det)
                return [one.prediction(image.shape[1], image.shape[0]) for one, image in zip(found, images)]
            return predictor(list(images), conf=mining.MIN_SCORE, iou=iou, max_det=max_det)

        # aldd and entropy see the network's input only, so it is letterboxed on the loop's threads; cald augments
        # the image itself (flips, crops) and compares boxes on it, so it gets the decoded image.
        preprocess = None if settings.algorithm == "cald" else predictor.canvas
        mining.mine_candidates(context, predict=predict, probability_maps=predictor.class_maps,
                               preprocess=preprocess, batch_size=int(hyper.batch_size_per_gpu),
                               min_side=predictor.img_size)
