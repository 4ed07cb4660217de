"""The inference task: the core's loop (:func:`ymir_runner.inference.infer_candidates`: candidates decoded by the
project's rules and letterboxed on threads ahead of the network, boxes scaled to stored pixels and written) around
this plugin's model (:mod:`.predict`).

Instance segmentation (object type 4) has no core loop yet (the core's seg twin of ``infer_candidates`` is the
proper home): :func:`infer_instances` decodes with ``context.decode`` and hands each instance's box-sized mask in
STORED pixels to ``context.seg_infer_result`` (the letterbox and the reduce-on-decode factor undone; never an
``N x H x W`` array)."""

from __future__ import annotations

from typing import Any

from ymir_runner import TaskContext, inference

from . import devices, environment, weights
from .predict import Predictor

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
    """Every candidate's instances written to ``context.seg_infer_result`` (an unusable candidate is listed without
    objects: skipped, counted and named by ``context.decode``); returns the number of instances written. Each batch
    is decoded and letterboxed on threads (``ymir_runner.cpus``), then predicted."""
    import concurrent.futures

    from ymir_runner import cpus

    items = list(context.candidates)
    writer = context.seg_infer_result
    batch_size = int(context.hyper.batch_size_per_gpu)
    workers = min(8, max(1, cpus.available_cpus() - 1))
    context.logger.info("inference: %d candidates in batches of %d, decoded on %d threads", len(items), batch_size,
                        workers)

    def prepare(item: Any) -> tuple[Any, Any] | None:
        decoded = context.decode(item, min_side=predictor.img_size)
        return None if decoded is None else (decoded, predictor.preprocess(decoded))

    written = predicted = 0
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            prepared = list(pool.map(prepare, chunk))
            usable = [entry for entry in prepared if entry is not None]
            found = iter(predictor.predict_instances([fitted for _, fitted in usable], conf=conf, iou=iou,
                                                     max_det=max_det))
            for item, entry in zip(chunk, prepared):  # in candidate order
                if entry is None:
                    writer.add_empty(item.image)
                    continue
                decoded = entry[0]
                masks = next(found).instance_masks(decoded.width, decoded.height, decoded.factor)
                written += writer.add(item.image, masks, decoded.width, decoded.height)
            predicted += len(usable)
            done = start + len(chunk)
            context.progress.steps(done, len(items), f"{done}/{len(items)} images")
    candidates = context.candidates.paths()
    if candidates and not predicted:
        context.logger.warning("inference: no candidate of %s could be used: every image of infer-result.json has no "
                               "object", context.env.input.candidate_index_file)
    context.logger.info("inference: %d instances on %d images (%d unusable)", written, len(candidates),
                        len(candidates) - predicted)
    return written
