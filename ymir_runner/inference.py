"""The whole inference task around a plugin's predict function, and the score threshold it keeps boxes at.

numpy only (no deep-learning framework). The host owns the loop, the engine owns the model (anchor: ultralytics
``engine/predictor.py``, whose ``BasePredictor`` runs batching, pre-processing, progress and writing while
``models/yolo/detect/predict.py`` only overrides ``postprocess``). A plugin writes::

    from ymir_runner import inference

    def infer(context: TaskContext) -> None:
        model = load(context.model_file(".pt"))
        threshold = inference.inference_threshold(context, model.score_threshold)
        inference.infer_candidates(context, lambda batch: model.predict(batch, conf=threshold),
                                   preprocess=model.letterbox, batch_size=context.hyper.batch_size_per_gpu,
                                   min_side=model.img_size)

and the core reads the candidates, decodes them by the project's rules on threads that run ahead of the model,
scales the boxes into stored pixels, writes infer-result.json and reports progress.

Segmentation (object types 3 and 4) has the same loop in :func:`infer_seg_candidates`: the engine's ``predict``
returns, per image, a :class:`SegPrediction` that the core asks for masks in the candidate's STORED pixels (the
engine knows how its own output upsamples; the core knows the stored size and the decode factor), and the core
writes them with ``context.seg_infer_result``.
"""

from __future__ import annotations

import collections
import dataclasses
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

from .pipeline import Prepared, candidate_batches
from .prediction import Prediction

if TYPE_CHECKING:
    from .context import TaskContext
    from .protocol.dataset import Item
    from .protocol.images import DecodedImage
    from .protocol.results import InstanceMask

__all__ = ["infer_candidates", "inference_threshold", "Prediction", "infer_seg_candidates", "SegPrediction",
           "LabelMap"]

_Input = TypeVar("_Input")


def _pixels(decoded: DecodedImage) -> Any:
    return decoded.pixels


_Result = TypeVar("_Result")


def _predicted(batches: Iterable[tuple[list[Item], list[Prepared[_Input] | None]]],
               predict: Callable[[list[_Input]], Sequence[_Result]]
               ) -> Iterator[tuple[list[Item], list[tuple[Item, tuple[Prepared[_Input], _Result] | None]]]]:
    """Each batch of :func:`~ymir_runner.pipeline.candidate_batches` with ``predict``'s answer for every usable
    candidate: ``(chunk, [(item, (prepared, result) or None)])`` in candidate order, None for a candidate that
    could not be used; a batch with no usable candidate is not predicted. Raises ``RuntimeError`` when
    ``predict`` answers another number of images."""
    for chunk, prepared in batches:
        usable = [entry for entry in prepared if entry is not None]
        results = list(predict([entry.input for entry in usable])) if usable else []
        if len(results) != len(usable):
            raise RuntimeError(f"predict returned {len(results)} predictions for {len(usable)} images")
        found = iter(results)
        yield chunk, [(item, None if entry is None else (entry, next(found))) for item, entry in zip(chunk, prepared)]


_Answered = list[tuple["Item", "tuple[Prepared[Any], Any] | None"]]


def _write_behind(context: TaskContext, total: int,
                  answered: Iterable[tuple[list[Item], _Answered]], write: Callable[[_Answered], None]) -> None:
    """``write(batch)`` for every batch of ``answered`` (:func:`_predicted`), in order, on one thread that runs one
    batch behind the model: batch ``i`` is mapped to stored pixels and written while batch ``i + 1`` is predicted
    (the model's threads leave part of the CPUs idle while they synchronise; a label map's resampling fills it).
    At most two batches' predictions exist at a time. Progress counts the batches written, of ``total`` images.
    ``write`` raising stops the loop with its error, in this thread."""
    done = 0
    pending: collections.deque[tuple[int, Future[None]]] = collections.deque()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ymir-runner-write")

    def finish_oldest() -> None:
        nonlocal done
        size, future = pending.popleft()
        future.result()
        done += size
        context.progress.steps(done, total, f"{done}/{total} images")

    try:
        for chunk, batch in answered:
            while pending:  # the one before: written while this batch was predicted
                finish_oldest()
            pending.append((len(chunk), pool.submit(write, batch)))
        while pending:
            finish_oldest()
    finally:  # on an error or a stop: the batch being written ends by itself, nothing else starts
        pool.shutdown(wait=False, cancel_futures=True)


def infer_candidates(context: TaskContext, predict: Callable[[list[_Input]], Sequence[Prediction]], *,
                     preprocess: Callable[[DecodedImage], _Input] | None = None, batch_size: int = 16,
                     min_side: int | None = None, workers: int | None = None) -> int:
    """The whole inference task: every candidate of ``context`` decoded, predicted and written to
    ``context.infer_result``. Returns the number of boxes predicted (the writer leaves out a box with nothing
    inside its image).

    - Each usable candidate is decoded by ``context.decode`` (the project's rules; reduced on decode by a power of
      two while its long side stays at least ``min_side``, None: stored size) and turned into a model input by
      ``preprocess(decoded) -> T`` (default: ``decoded.pixels``, ``[H,W,3]`` uint8 RGB), on ``workers`` threads
      that prepare the next two batches while ``predict`` runs on this one (None: one fewer than the task's CPUs,
      at most 8, see ``ymir_runner.cpus``; 0: in this thread, nothing ahead). ``preprocess`` must be thread-safe;
      ``predict`` is only ever called from this thread, one batch at a time, in candidate order.
    - ``predict(batch: list[T]) -> [Prediction]``, one per input, ``batch_size`` at a time (the last batch may be
      smaller; a batch whose images were all skipped is not predicted): boxes in the pixels of the decoded image
      given to ``preprocess`` (undo a letterbox in ``predict``), only those to publish (apply the score
      threshold, :func:`inference_threshold`, and NMS there).
    - The core scales the boxes by the decode factor into stored pixels and writes them with
      ``context.infer_result.add`` (rounded, clipped to the image); a candidate that cannot be used (missing,
      unreadable, too large: skipped, counted and named by the core) gets an empty entry. Progress is reported
      per batch; one summary line is logged.

    When no candidate can be used, every entry is empty and a warning says so (the task still succeeds).

    Raises ``RuntimeError`` when ``predict`` returns another number of predictions than inputs, and whatever
    ``preprocess`` or ``predict`` raise (the threads stop without being waited for).
    """
    items = list(context.candidates)
    writer = context.infer_result
    boxes = predicted = 0

    def write(answered: _Answered) -> None:
        nonlocal boxes, predicted
        for item, answer in answered:  # in candidate order: the file lists them as the index does
            if answer is None:
                writer.add_empty(item.image)
                continue
            entry, prediction = answer
            detections = prediction.scaled(entry.factor).detections()
            writer.add(entry.item.image, detections, entry.width, entry.height)
            boxes += len(detections)
            predicted += 1

    with candidate_batches(context, items, preprocess or _pixels, batch_size=batch_size, min_side=min_side,
                           workers=workers, task="inference") as batches:
        _write_behind(context, len(items), _predicted(batches, predict), write)
    candidates = context.candidates.paths()
    if candidates and not predicted:  # still a valid result (every entry empty), as the engines always wrote it
        context.logger.warning("inference: no candidate of %s could be used: every entry of infer-result.json is "
                               "empty", context.env.input.candidate_index_file)
    context.logger.info("inference: %d boxes on %d images (%d unusable)", boxes, len(candidates),
                        len(candidates) - predicted)
    return boxes


def inference_threshold(context: TaskContext, stored: float | None) -> float:
    """The score at or above which inference keeps a box: config key ``conf_threshold`` when it is above 0;
    when it is 0, ``stored``, the model's F1-optimal threshold on its validation set (what its training chose;
    None when it has none), else :data:`ymir_runner.evaluation.DEFAULT_SCORE_THRESHOLD` (0.25). Logs which and
    why. A task without the key (mining alone) reads it as 0.
    """
    from .evaluation import DEFAULT_SCORE_THRESHOLD

    configured = float(context.hyper.get("conf_threshold", 0.0) or 0.0)
    if configured:
        context.logger.info("infer: boxes scoring at least %.3f (config key 'conf_threshold')", configured)
        return configured
    threshold = DEFAULT_SCORE_THRESHOLD if stored is None else float(stored)
    context.logger.info("infer: boxes scoring at least %.3f (%s; config key 'conf_threshold' is 0)", threshold,
                        "no threshold stored in the model, the default" if stored is None
                        else "the model's F1-optimal threshold on its validation set")
    return threshold


@dataclasses.dataclass(frozen=True)
class LabelMap:
    """A semantic segmentation (object type 3) of one image in its STORED pixels: ``labels [H, W]`` integer class
    ids into ``class_names``, ``unlabelled`` (None: 255, the platform's canvas value) where no class is predicted;
    ``probability [H, W]`` (optional) each pixel's confidence in its label, e.g. the top-1 softmax probability:
    each class's annotation gets the mean over its pixels as ``confidence`` (segmentation.md), 1.0 without it."""

    labels: Any
    probability: Any = None
    unlabelled: int | None = None


class SegPrediction(Protocol):
    """What a segmentation engine's ``predict`` returns per image for :func:`infer_seg_candidates`: called once
    with the candidate's STORED ``width`` x ``height`` and the decode ``factor`` (the image given to ``preprocess``
    was ``factor`` times smaller, by ``context.decode``), it returns the prediction in stored pixels:

    - object type 4: the instances, an iterable of :class:`ymir_runner.InstanceMask` (a generator keeps one mask
      alive at a time; a box-sized mask with ``origin`` needs no full-size array);
    - object type 3: a :class:`LabelMap` of ``height`` x ``width``.

    The engine maps its own output there (letterbox and reduce-on-decode undone in one resampling, at the
    resolution its logits have), so the core never upsamples a mask it cannot see the logits of. The core calls
    it on its writing thread while ``predict`` runs on the next batch (:func:`_write_behind`): it must use only
    what it holds, not state of the thread that made it (e.g. ``torch.inference_mode``, which is per thread)."""

    def __call__(self, width: int, height: int, factor: int) -> Iterable[InstanceMask] | LabelMap: ...


def infer_seg_candidates(context: TaskContext, predict: Callable[[list[_Input]], Sequence[SegPrediction]], *,
                         preprocess: Callable[[DecodedImage], _Input] | None = None, batch_size: int = 16,
                         min_side: int | None = None, workers: int | None = None) -> int:
    """The whole inference task of a segmentation executor (object type 3 or 4): every candidate of ``context``
    decoded, predicted and written to ``context.seg_infer_result``. Returns the number of annotations written
    (instances for type 4, one per class present for type 3).

    The loop of :func:`infer_candidates` (decoding by ``context.decode`` on ``workers`` threads two batches ahead
    of the model, ``preprocess`` thread-safe, ``predict`` called from this thread one batch at a time in candidate
    order, progress per batch, an unusable candidate listed without objects, one summary line); ``predict(batch:
    list[T]) -> [SegPrediction]`` returns one :class:`SegPrediction` per input, which the core calls with the
    candidate's stored size and decode factor, one image at a time on its writing thread one batch behind the
    model, and hands to
    ``context.seg_infer_result.add`` (type 4) or ``.add_label_map`` (type 3). What the writer leaves out (empty
    masks, a second mask of one class and bbox) is counted there and logged here.

    Raises ``RuntimeError`` when ``predict`` returns another number of results than inputs, ``TypeError`` when a
    type-3 result is not a :class:`LabelMap`, ``ValueError`` from the writer for a mask or map that is not of the
    stored image, and whatever ``preprocess`` or ``predict`` raise.
    """
    from .protocol.config import SEMANTIC_SEGMENTATION

    semantic = context.config.object_type == SEMANTIC_SEGMENTATION
    writer = context.seg_infer_result  # raises for a task that is not segmentation
    items = list(context.candidates)
    written = predicted = 0

    def write(answered: _Answered) -> None:
        nonlocal written, predicted
        for item, answer in answered:  # in candidate order
            if answer is None:
                writer.add_empty(item.image)
                continue
            entry, prediction = answer
            predicted += 1
            result = prediction(entry.width, entry.height, entry.factor)
            if semantic:
                if not isinstance(result, LabelMap):
                    raise TypeError(f"a semantic segmentation result must be a LabelMap, not "
                                    f"{type(result).__name__}")
                written += writer.add_label_map(entry.item.image, result.labels, entry.width, entry.height,
                                                probability=result.probability, unlabelled=result.unlabelled)
            else:
                if isinstance(result, LabelMap):
                    raise TypeError("an instance segmentation result is an iterable of InstanceMask, not a "
                                    "LabelMap")
                written += writer.add(entry.item.image, result, entry.width, entry.height)

    with candidate_batches(context, items, preprocess or _pixels, batch_size=batch_size, min_side=min_side,
                           workers=workers, task="inference") as batches:
        _write_behind(context, len(items), _predicted(batches, predict), write)
    candidates = context.candidates.paths()
    if candidates and not predicted:
        context.logger.warning("inference: no candidate of %s could be used: every image of infer-result.json has "
                               "no object", context.env.input.candidate_index_file)
    what = "class regions" if semantic else "instances"
    dropped = "".join(f", {count} left out ({reason})" for reason, count in sorted(writer.dropped.items()))
    context.logger.info("inference: %d %s on %d images (%d unusable)%s", written, what, len(candidates),
                        len(candidates) - predicted, dropped)
    return written
