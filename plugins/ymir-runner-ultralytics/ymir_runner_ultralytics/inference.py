"""The inference task: the core's loop (:func:`ymir_runner.inference.infer_candidates`: candidates decoded by the
project's rules and letterboxed on threads ahead of the network, boxes scaled to stored pixels and written) around
this plugin's model (:mod:`.predict`).

Instance segmentation (object type 4) runs through the core's seg twin of that loop
(:func:`ymir_runner.inference.infer_seg_candidates`): :func:`infer_instances` answers per image the callable that
makes each instance's box-sized mask in STORED pixels (the letterbox and the reduce-on-decode factor undone; never
an ``N x H x W`` array), which the core hands to ``context.seg_infer_result``."""

from __future__ import annotations

from ymir_runner import TaskContext, inference

from . import devices, environment, weights
from .predict import Fitted, Predictor

#: YMIR's instance-segmentation object type.
INSTANCE = 4


def infer(context: TaskContext) -> None:
    hyper = context.hyper
    device = devices.select_device(context.config.gpu_ids)
    environment.prepare(context.work_dir)
    with environment.task_log(), devices.out_of_memory_as_error():
        model = weights.load_model(context, device)
        threshold = inference.inference_threshold(context, model.score_threshold)
        predictor = model.predictor
        iou, max_det = float(hyper.iou_threshold), int(hyper.max_detections)
        if context.config.object_type == INSTANCE:
            infer_instances(context, predictor, conf=threshold, iou=iou, max_det=max_det)
            return
        inference.infer_candidates(
            context, lambda batch: predictor.predict(batch, conf=threshold, iou=iou, max_det=max_det),
            preprocess=predictor.preprocess, batch_size=int(hyper.batch_size_per_gpu), min_side=predictor.img_size)


def infer_instances(context: TaskContext, predictor: Predictor, *, conf: float, iou: float, max_det: int) -> int:
    """Every candidate's instances written to ``context.seg_infer_result`` by the core's seg loop
    (:func:`ymir_runner.inference.infer_seg_candidates`: decoded by ``context.decode`` and letterboxed on threads
    ahead of the network, an unusable candidate listed without objects: skipped, counted and named); returns the
    number of instances written. Each image's answer is :meth:`.predict.Instances.instance_masks`, which the core
    calls with the STORED size and the decode factor: box-sized masks in stored pixels, made one at a time."""
    def predict(batch: list[Fitted]) -> list[inference.SegPrediction]:
        return [found.instance_masks for found in predictor.predict_instances(batch, conf=conf, iou=iou,
                                                                              max_det=max_det)]

    return inference.infer_seg_candidates(context, predict, preprocess=predictor.preprocess,
                                          batch_size=int(context.hyper.batch_size_per_gpu),
                                          min_side=predictor.img_size)
