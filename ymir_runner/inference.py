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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from .pipeline import candidate_batches
from .prediction import Prediction

if TYPE_CHECKING:
    from .context import TaskContext
    from .protocol.images import DecodedImage

__all__ = ["infer_candidates", "inference_threshold", "Prediction"]

_Input = TypeVar("_Input")


def _pixels(decoded: DecodedImage) -> Any:
    return decoded.pixels


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
    boxes = done = predicted = 0
    with candidate_batches(context, items, preprocess or _pixels, batch_size=batch_size, min_side=min_side,
                           workers=workers, task="inference") as batches:
        for chunk, prepared in batches:
            usable = [entry for entry in prepared if entry is not None]
            predictions = list(predict([entry.input for entry in usable])) if usable else []
            if len(predictions) != len(usable):
                raise RuntimeError(f"predict returned {len(predictions)} predictions for {len(usable)} images")
            found = iter(predictions)
            for item, entry in zip(chunk, prepared):  # in candidate order: the file lists them as the index does
                if entry is None:
                    writer.add_empty(item.image)
                    continue
                detections = next(found).scaled(entry.factor).detections()
                writer.add(entry.item.image, detections, entry.width, entry.height)
                boxes += len(detections)
            predicted += len(usable)
            done += len(chunk)
            context.progress.steps(done, len(items), f"{done}/{len(items)} images")
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
