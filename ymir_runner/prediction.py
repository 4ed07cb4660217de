"""One record for what a detector found on one image, shared by inference, mining and evaluation.

numpy only. An engine's ``predict`` returns one :class:`Prediction` per image; the core's loops scale it into
stored pixels (:meth:`Prediction.scaled`), turn it into infer-result.json boxes (:meth:`Prediction.detections`),
score it for mining (:mod:`ymir_runner.mining`) or evaluate it (:func:`ymir_runner.evaluation.evaluate_detections`
takes a list of them).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from .protocol.results import Detection

__all__ = ["Prediction"]


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The boxes a model found on one image.

    ``boxes [N,4]`` float64: ``x1, y1, x2, y2`` pixel-edge coordinates (``x2`` exclusive) of the image given to
    ``predict``; ``scores [N]`` float64: confidences in [0, 1]; ``classes [N]`` int64: indexes into
    ``class_names``; ``class_probabilities [N,C]`` float64 (optional): each box's distribution over the classes,
    used by CALD's Jensen-Shannon term instead of ``[score, 1 - score]``. Anything array-like is accepted and
    converted (``boxes`` of any shape holding ``4N`` numbers are reshaped to ``[N,4]``).

    For mining, return every box scoring at least ``ymir_runner.mining.MIN_SCORE`` (0.05) after NMS: the scores
    need the uncertain boxes an inference threshold would drop.

    Raises ``ValueError`` when the shapes disagree.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    class_probabilities: np.ndarray | None = None

    if TYPE_CHECKING:  # what the generated __init__ really accepts: anything array-like (lists too), converted
        def __init__(self, boxes: npt.ArrayLike, scores: npt.ArrayLike, classes: npt.ArrayLike,
                     class_probabilities: npt.ArrayLike | None = None) -> None: ...

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(self.scores, np.float64).reshape(-1)
        classes = np.asarray(self.classes, np.int64).reshape(-1)
        if not len(boxes) == len(scores) == len(classes):
            raise ValueError(f"Prediction: {len(boxes)} boxes, {len(scores)} scores and {len(classes)} classes")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "classes", classes)
        if self.class_probabilities is not None:
            probabilities = np.asarray(self.class_probabilities, np.float64)
            if probabilities.ndim != 2 or len(probabilities) != len(scores):
                raise ValueError(f"Prediction: class_probabilities {probabilities.shape} is not [{len(scores)}, C]")
            object.__setattr__(self, "class_probabilities", probabilities)

    def __len__(self) -> int:
        return len(self.scores)

    def _take(self, keep: np.ndarray) -> Prediction:
        probabilities = None if self.class_probabilities is None else self.class_probabilities[keep]
        return Prediction(self.boxes[keep], self.scores[keep], self.classes[keep], probabilities)

    def above(self, min_score: float) -> Prediction:
        """The boxes scoring at least ``min_score``, in their order."""
        return self._take(self.scores >= min_score)

    def best(self, k: int) -> Prediction:
        """The ``k`` highest-scoring boxes, highest first; equal scores keep their order (a stable sort).
        All of them when there are fewer. Raises ``ValueError`` for a negative ``k``."""
        if k < 0:
            raise ValueError(f"Prediction.best: k must be >= 0, got {k}")
        return self._take(np.argsort(-self.scores, kind="stable")[:k])

    def scaled(self, factor: float) -> Prediction:
        """The boxes times ``factor`` (e.g. a reduce factor of decoding: decoded pixels -> stored pixels);
        scores, classes and probabilities unchanged."""
        return Prediction(self.boxes * factor, self.scores, self.classes, self.class_probabilities)

    def detections(self) -> list[Detection]:
        """The boxes as infer-result.json takes them (``InferResult.add``): one :class:`Detection` each, in the
        coordinates of ``boxes`` (scale into stored pixels first)."""
        return [Detection(float(x1), float(y1), float(x2), float(y2), float(score), int(class_id))
                for (x1, y1, x2, y2), score, class_id in zip(self.boxes.tolist(), self.scores.tolist(),
                                                             self.classes.tolist())]
