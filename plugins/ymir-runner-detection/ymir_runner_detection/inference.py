"""Inference and mining: one candidate runner for both (the checkpoint loaded once per run, the candidates
sharded over one process per device, rank 0 merging), and what each task does with a batch: boxes for
inference; for mining, the ``predict`` and ``probability_maps`` functions :mod:`ymir_runner.mining` scores with.
Results are written through the core's writers."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ymir_runner import (
    MODEL_INFO_FILE,
    ConfigError,
    DatasetError,
    Detection,
    ModelError,
    best_stage_name,
    mining,
)
from ymir_runner.evaluation import DEFAULT_SCORE_THRESHOLD
from ymir_runner.mining import MiningSettings

from .checkpoint import find_checkpoint, load_checkpoint
from .engine import DetectionDataset, NoReadableImageError, build_dataloader, decode_maps, no_readable_image_message
from .engine.decode import boxes_to_original
from .launch import cpu_share, run_on_devices, select_devices
from .templates import INFER_DEFAULTS
from .training import report_image_problems

MODEL_CACHE_KEY = "ymir_runner_detection.checkpoint"
NETWORK_CACHE_KEY = "ymir_runner_detection.network"
UNREADABLE = "unreadable image"


@dataclasses.dataclass
class Job:
    """What each process needs (picklable): the checkpoint, the candidates and the task's settings."""

    kind: str
    checkpoint_path: str
    images: list[str]
    img_size: int
    batch_size: int
    num_workers: int
    #: torch intra-op threads per rank (``num_workers`` + ``threads`` stay within the rank's CPUs).
    threads: int
    hyper: dict[str, Any]
    devices: list[str]
    #: The mining keys of the config (mining jobs only).
    mining: MiningSettings | None = None
    #: Images the core's reader already counted as damaged (used as far as they decode).
    counted_damage: set[str] = dataclasses.field(default_factory=set)


# --- model selection ----------------------------------------------------------------------------------------

def choose_checkpoint(paths: Sequence[str], models_dir: str) -> str:
    """This plugin's checkpoint among ``model_params_path``; several → the best stage's."""
    checkpoints = [path for path in paths if path.endswith(".pt")]
    if len(checkpoints) > 1:
        stage = best_stage_name(models_dir)
        of_best = [path for path in checkpoints if os.path.basename(os.path.dirname(path)) == stage]
        if len(of_best) == 1:
            return of_best[0]
        raise ModelError(f"config key 'model_params_path' lists several checkpoints {checkpoints} and "
                         f"{os.path.join(models_dir, MODEL_INFO_FILE)} names no best stage among them")
    return find_checkpoint(paths, "model_params_path")


def model_for(context: Any) -> Any:
    """The run's checkpoint, loaded once for mining and inference together."""
    cached = context.run_cache.get(MODEL_CACHE_KEY)
    if cached is not None:
        return cached
    path = choose_checkpoint(context.model_files, context.env.input.models_dir)
    checkpoint = load_checkpoint(path)
    if list(checkpoint.class_names) != list(context.class_names):
        raise ModelError(f"the model {path} was trained on classes {checkpoint.class_names} but config key "
                         f"'class_names' is {list(context.class_names)}")
    context.logger.info("model %s: %s, %d classes, img_size %d, epoch %d", path,
                        checkpoint.model_config.get("size"), len(checkpoint.class_names), checkpoint.img_size,
                        checkpoint.epoch)
    context.run_cache[MODEL_CACHE_KEY] = checkpoint
    return checkpoint


def make_job(context: Any, kind: str) -> Job:
    checkpoint = model_for(context)
    hyper = context.hyper
    img_size = hyper.img_size or checkpoint.img_size  # the ranges are the template's bounds, checked by the core
    if img_size % 32:
        raise ConfigError(f"config key 'img_size': {img_size} must be a multiple of 32 (or 0)")
    if kind == "infer" and not hyper.iou_threshold > 0.0:
        raise ConfigError(f"config key 'iou_threshold': {hyper.iou_threshold} must be in (0, 1]")
    # The core's reader reads each candidate's header: missing, unreadable and too large images are skipped,
    # counted and named there; the answer for them is an empty entry (inference) or the last rank (mining).
    job_hyper = dict(hyper)
    if kind == "infer" and not hyper.conf_threshold:
        job_hyper["conf_threshold"] = (DEFAULT_SCORE_THRESHOLD if checkpoint.score_threshold is None
                                       else checkpoint.score_threshold)
        context.logger.info("infer: boxes scoring at least %.3f (%s; config key 'conf_threshold' is 0)",
                            job_hyper["conf_threshold"], "no threshold stored in the model, the default"
                            if checkpoint.score_threshold is None else "the model's F1-optimal threshold on its "
                            "validation set")
    readable = list(context.candidates)
    devices = select_devices(context.config.gpu_ids)
    share = cpu_share(devices, hyper.num_workers_per_gpu, context.logger)
    context.logger.info("%s: %s per rank", kind, share.describe())
    return Job(kind=kind, checkpoint_path=checkpoint.path, images=[item.image for item in readable],
               img_size=img_size, batch_size=hyper.batch_size_per_gpu, num_workers=share.workers,
               threads=share.threads, hyper=job_hyper, devices=devices,
               mining=MiningSettings.from_context(context) if kind == "mining" else None,
               counted_damage={item.image for item in readable if item.damage})


# --- per-batch work -----------------------------------------------------------------------------------------

def _to_input(images: torch.Tensor, device: str) -> torch.Tensor:
    return images.to(device).float().div_(255.0).contiguous(memory_format=torch.channels_last)


def _decode(scores: torch.Tensor, boxes: torch.Tensor, hyper: dict[str, Any], threshold: float) -> list:
    """Peaks -> NMS -> top-k by the task's infer keys; a mining task without them uses the infer defaults."""
    limits = {key: hyper.get(key, INFER_DEFAULTS[key]) for key in ("max_detections", "iou_threshold")}
    return decode_maps(scores.float(), boxes.float(), int(limits["max_detections"]), threshold,
                       nms_iou=limits["iou_threshold"])


def infer_batch(model: Any, batch: dict, job: Job, device: str) -> list[Any]:
    """Per image: ``(boxes in original pixels, scores, classes)`` above ``conf_threshold``."""
    scores, boxes = model.predict_maps(_to_input(batch["images"], device))
    results = []
    for (b, s, c), info in zip(_decode(scores, boxes, job.hyper, job.hyper["conf_threshold"]), batch["letterbox"]):
        original = boxes_to_original(b.cpu().numpy(), info)
        results.append((original, s.cpu().numpy(), c.cpu().numpy(), info.orig_width, info.orig_height))
    return results


def _predict(model: Any, job: Job, device: str, images: Sequence[np.ndarray]) -> list[mining.Prediction]:
    """The mining library's ``predict``: every peak scoring at least ``mining.MIN_SCORE``, after NMS, in the
    pixels of the (letterboxed) images given."""
    scores, boxes = model.predict_maps(_to_input(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), device))
    return [mining.Prediction(b.cpu().numpy(), s.cpu().numpy(), c.cpu().numpy())
            for b, s, c in _decode(scores, boxes, job.hyper, mining.MIN_SCORE)]


def _probability_maps(model: Any, device: str, images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """ALDD's K = 2 maps per class: the image's heatmap and its mirror's, mirrored back onto the same grid."""
    inputs = _to_input(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), device)
    scores, _ = model.predict_maps(inputs)
    mirrored, _ = model.predict_maps(inputs.flip(3))
    return [[s.float().cpu().numpy(), m.flip(2).float().cpu().numpy()] for s, m in zip(scores, mirrored)]


def mine_batch(model: Any, batch: dict, job: Job, device: str) -> list[float]:
    assert job.mining is not None
    images = list(batch["images"].permute(0, 2, 3, 1).numpy())
    return job.mining.score(images, predict=functools.partial(_predict, model, job, device),
                            probability_maps=functools.partial(_probability_maps, model, device))


# --- the candidate runner: one model load per process, candidates sharded over the devices ----------------

def network(checkpoint: Any, device: str) -> torch.nn.Module:
    """The checkpoint's network on ``device`` in eval mode: the one way a network for candidates is built."""
    return checkpoint.build_model().to(device).eval()


def run_shard(rank: int, world_size: int, device: str, job: Job, report: Callable[[int, int], None] | None = None,
              model: Any = None) -> tuple[dict[int, Any], dict[int, str]]:
    """Results of rank ``rank``'s share of the candidates (every ``world_size``-th, from index ``rank``), keyed by
    candidate index; and the problems decoding found, candidate index -> ``unreadable image`` (no result) or the
    damage of an image used as far as it decodes. ``model`` is the network already on ``device`` (loaded from
    the job's checkpoint when None); ``report(done, total)`` is called after each batch."""
    indices = list(range(rank, len(job.images), world_size))
    results: dict[int, Any] = {}
    problems: dict[int, str] = {}
    if job.mining is not None and not job.mining.uses_model:
        scores = mining.random_scores([job.images[index] for index in indices], job.mining.seed)
        return dict(zip(indices, scores)), problems
    if not indices:
        return results, problems
    if model is None:
        model = network(load_checkpoint(job.checkpoint_path), device)
    items = [(job.images[i], np.zeros((0, 4), np.float32), np.zeros(0, np.int64)) for i in indices]
    loader = build_dataloader(DetectionDataset(items, job.img_size, role="candidate"), job.batch_size, shuffle=False,
                              num_workers=job.num_workers, distributed=False)
    work = infer_batch if job.kind == "infer" else mine_batch
    done = 0
    with torch.inference_mode():
        for batch in loader:
            problems.update({indices[i]: reason for i, reason in batch["damaged"].items()})
            problems.update({indices[i]: f"{UNREADABLE}: {reason}" for i, reason in batch["corrupt"].items()})
            for position, value in zip(batch["indices"], work(model, batch, job, device)):
                results[indices[position]] = value
            done += len(batch["indices"])
            if report is not None:
                report(done, len(indices))
    for index, problem in problems.items():  # a replacement image's result must not stand in for it
        if problem.startswith(UNREADABLE):
            results.pop(index, None)
    return results, problems


def run_job(job: Job, report: Callable[[int, int], None] | None = None,
            model: Any = None) -> tuple[dict[int, Any], dict[int, str]]:
    """Every candidate's result and the decoding problems (as :func:`run_shard` gives them), the candidates
    sharded over ``job.devices``: rank 0 runs here with ``report`` and ``model`` (the network already on
    ``job.devices[0]``, or None), the other ranks load the checkpoint themselves; rank 0 merges the shards."""
    shards = run_on_devices(run_shard, job.devices, job, threads=job.threads,
                            local_kwargs={"report": report, "model": model})
    results: dict[int, Any] = {}
    problems: dict[int, str] = {}
    for shard_results, shard_problems in shards:
        results.update(shard_results)
        problems.update(shard_problems)
    return results, problems


# --- the task hooks -------------------------------------------------------------------------------------------

def _run(context: Any, kind: str) -> tuple[Job, dict[int, Any], set[int]]:
    """The job, its results by candidate index, and the candidates found unreadable when decoding."""
    job = make_job(context, kind)
    progress = context.progress
    model = context.run_cache.get(NETWORK_CACHE_KEY)
    if model is None:  # mining and inference of one run share one network (rank 0's)
        model = network(model_for(context), job.devices[0])
        context.run_cache[NETWORK_CACHE_KEY] = model
    try:
        results, problems = run_job(job, lambda done, total: progress.steps(done, total, f"{done}/{total} images"),
                                    model)
    except NoReadableImageError as error:  # from a DataLoader worker: its traceback is no use to a user
        raise DatasetError(no_readable_image_message(error)) from None
    unreadable = {index for index, problem in problems.items() if problem.startswith(UNREADABLE)}
    report_image_problems(context.skips,
                          {job.images[index]: problems[index][len(UNREADABLE) + 2:] for index in unreadable},
                          {job.images[index]: problem for index, problem in problems.items()
                           if index not in unreadable}, job.counted_damage)
    return job, results, unreadable


def infer(context: Any) -> None:
    job, results, unreadable = _run(context, "infer")
    writer = context.infer_result
    boxes_found = 0
    for index, image in enumerate(job.images):
        if index not in results:
            writer.add_empty(image)
            continue
        boxes, scores, classes, width, height = results[index]
        detections = [Detection(float(b[0]), float(b[1]), float(b[2]), float(b[3]), float(s), int(c))
                      for b, s, c in zip(boxes, scores, classes)]
        writer.add(image, detections, width, height)
        boxes_found += len(detections)
    candidates = len(context.candidates)
    context.logger.info("inference: %d boxes on %d images (%d unreadable)", boxes_found, candidates,
                        candidates - len(job.images) + len(unreadable))


def mine(context: Any) -> None:
    job, results, unreadable = _run(context, "mining")
    # An unreadable image cannot be scored by a model; it goes last rather than being dropped.
    floor = min(results.values(), default=0.0) - 1.0
    scores = {image: results[index] for index, image in enumerate(job.images) if index in results}
    candidates = context.candidates.paths()
    for image in candidates:
        context.mining_result.add(image, scores.get(image, floor))
    context.logger.info("mining (%s): scored %d images (%d unreadable, ranked last)",
                        job.mining.algorithm if job.mining else "", len(scores), len(candidates) - len(scores))

