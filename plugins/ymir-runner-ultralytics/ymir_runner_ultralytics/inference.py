"""Inference and mining: the model of ``model_params_path`` loaded once per run (mining and inference of one run
share it), candidates decoded by the core's rules (stored pixels) and predicted in batches by :mod:`.predict`;
results through the core's writers, mining through :func:`ymir_runner.mining.mine_candidates` (``predict`` for
entropy and cald, the head's class-score maps for aldd)."""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from ymir_runner import ConfigError, Detection, ImageProblem, ModelError, mining
from ymir_runner.evaluation import DEFAULT_SCORE_THRESHOLD
from ymir_runner.mining import MiningSettings

from . import environment, weights
from .predict import Predictor, decode
from .templates import INFER_DEFAULTS

MODEL_CACHE_KEY = "ymir_runner_ultralytics.model"
MODEL_KEY = "model_params_path"


@dataclasses.dataclass
class LoadedModel:
    """A model of ``model_params_path`` on the task's device: its ``predictor`` (at the model's ``img_size``), the
    ``score_threshold`` its training chose (None for a model without one) and where it came from."""

    path: str
    network: Any
    device: str
    img_size: int
    score_threshold: float | None

    def predictor(self, img_size: int) -> Predictor:
        return Predictor(self.network, self.device, img_size)


def model_for(context: Any, device: str) -> LoadedModel:
    """The run's model, loaded once for mining and inference together. ModelError naming ``model_params_path`` for
    a missing file, a file that is no ultralytics detection model, or a model of other classes."""
    cached = context.run_cache.get(MODEL_CACHE_KEY)
    if cached is not None:
        return cached
    path = weights.choose_checkpoint(context.model_files, context.env.input.models_dir, MODEL_KEY)
    network, checkpoint = weights.load_checkpoint(path, MODEL_KEY)
    names = weights.class_names_of(network, checkpoint)
    if names != list(context.class_names):
        raise ModelError(f"the model {path} was trained on classes {names} but config key 'class_names' is "
                         f"{list(context.class_names)}")
    metadata = checkpoint.get(weights.METADATA_KEY) or {}
    img_size = int(metadata.get("img_size") or (checkpoint.get("train_args") or {}).get("imgsz") or 640)
    threshold = metadata.get("conf_thr")
    torch_device = environment.torch_device(device)
    network = network.fuse(verbose=False) if hasattr(network, "fuse") else network
    model = LoadedModel(path, network.to(torch_device).eval(), torch_device, img_size,
                        None if threshold is None else float(threshold))
    context.logger.info("model %s: %d classes, img_size %d, on %s", path, len(names), img_size, torch_device)
    context.run_cache[MODEL_CACHE_KEY] = model
    return model


def _img_size(context: Any, model: LoadedModel) -> int:
    img_size = int(context.hyper.img_size or model.img_size)
    if img_size < 32 or img_size % 32:
        raise ConfigError(f"config key 'img_size': {img_size} must be a positive multiple of 32 (or 0)")
    return img_size


def _check_runtime(hyper: Any) -> None:
    if hyper.batch_size_per_gpu < 1:
        raise ConfigError(f"config key 'batch_size_per_gpu': {hyper.batch_size_per_gpu} must be at least 1")


def _check_infer(hyper: Any) -> None:
    if not 0.0 <= hyper.conf_threshold <= 1.0:
        raise ConfigError(f"config key 'conf_threshold': {hyper.conf_threshold} must be a score in [0, 1]")
    if not 0.0 < hyper.iou_threshold <= 1.0:
        raise ConfigError(f"config key 'iou_threshold': {hyper.iou_threshold} must be in (0, 1]")
    if hyper.max_detections < 1:
        raise ConfigError(f"config key 'max_detections': {hyper.max_detections} must be at least 1")


def infer(context: Any) -> None:
    hyper = context.hyper
    _check_runtime(hyper)
    _check_infer(hyper)
    device = environment.select_device(context.config.gpu_ids)
    environment.prepare(context.work_dir)
    with environment.task_log(), environment.out_of_memory_as_error():
        model = model_for(context, device)
        img_size = _img_size(context, model)
        threshold = float(hyper.conf_threshold) or (DEFAULT_SCORE_THRESHOLD if model.score_threshold is None
                                                    else model.score_threshold)
        if not hyper.conf_threshold:
            context.logger.info("infer: boxes scoring at least %.3f (%s; config key 'conf_threshold' is 0)", threshold,
                                "no threshold stored in the model, the default" if model.score_threshold is None
                                else "the model's F1-optimal threshold on its validation set")
        _infer(context, model.predictor(img_size), threshold)


def _infer(context: Any, predictor: Predictor, threshold: float) -> None:
    hyper, writer = context.hyper, context.infer_result
    items = list(context.candidates)
    batch = int(hyper.batch_size_per_gpu)
    boxes_found = unusable = 0
    for start in range(0, len(items), batch):
        chunk, decoded = [], []
        for item in items[start:start + batch]:
            try:
                image = decode(item.image, predictor.img_size)
            except ImageProblem as problem:
                context.skips.skip(problem.reason, item.image, str(problem))
                writer.add_empty(item.image)
                unusable += 1
                continue
            if image.damage and not item.damage:
                context.skips.repair(image.damage, item.image, "decoded as far as its data goes")
            chunk.append(item)
            decoded.append(image)
        found = predictor([image.pixels for image in decoded], conf=threshold, iou=float(hyper.iou_threshold),
                          max_det=int(hyper.max_detections))
        for item, image, boxes in zip(chunk, decoded, found):
            stored = boxes.scaled(image.factor)
            detections = [Detection(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(s), int(c))
                          for b, s, c in zip(stored.boxes, stored.scores, stored.classes)]
            writer.add(item.image, detections, image.width, image.height)
            boxes_found += len(detections)
        done = min(start + batch, len(items))
        context.progress.steps(done, len(items), f"{done}/{len(items)} images")
    context.logger.info("inference: %d boxes on %d images (%d unusable)", boxes_found, len(items), unusable)


def mine(context: Any) -> None:
    hyper = context.hyper
    _check_runtime(hyper)
    settings = MiningSettings.from_context(context)  # ConfigError for an algorithm this executor does not declare
    if not settings.uses_model:  # random: no model, no image decoded
        mining.mine_candidates(context)
        return
    device = environment.select_device(context.config.gpu_ids)
    environment.prepare(context.work_dir)
    with environment.task_log(), environment.out_of_memory_as_error():
        model = model_for(context, device)
        img_size = _img_size(context, model)
        predictor = model.predictor(img_size)
        # A task that runs mining and inference together has the infer keys; mining alone uses their defaults.
        iou = float(hyper.get("iou_threshold", INFER_DEFAULTS["iou_threshold"]))
        max_det = int(hyper.get("max_detections", INFER_DEFAULTS["max_detections"]))

        def predict(images: Sequence[np.ndarray]) -> list[mining.Prediction]:
            return [mining.Prediction(found.boxes, found.scores, found.classes)
                    for found in predictor(list(images), conf=mining.MIN_SCORE, iou=iou, max_det=max_det)]

        mining.mine_candidates(context, predict=predict, probability_maps=predictor.class_maps,
                               batch_size=int(hyper.batch_size_per_gpu), min_side=img_size)
