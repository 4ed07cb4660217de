"""The inference task: the core's loop (:func:`ymir_runner.inference.infer_candidates`: candidates decoded by the
project's rules and letterboxed on threads ahead of the network, boxes scaled to stored pixels and written) around
this plugin's model (:mod:`.predict`)."""

from __future__ import annotations

from ymir_runner import TaskContext, inference

from . import devices, environment, weights


def infer(context: TaskContext) -> None:
    hyper = context.hyper
    device = devices.select_device(context.config.gpu_ids)
    environment.prepare(context.work_dir)
    with environment.task_log(), devices.out_of_memory_as_error():
        model = weights.load_model(context, device)
        threshold = inference.inference_threshold(context, model.score_threshold)
        predictor = model.predictor
        iou, max_det = float(hyper.iou_threshold), int(hyper.max_detections)
        inference.infer_candidates(
            context, lambda batch: predictor.predict(batch, conf=threshold, iou=iou, max_det=max_det),
            preprocess=predictor.preprocess, batch_size=int(hyper.batch_size_per_gpu), min_side=predictor.img_size)
