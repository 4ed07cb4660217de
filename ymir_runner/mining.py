"""Active-learning mining scores for any detector: ``random``, ``entropy``, ``aldd`` and ``cald``.

numpy (and Pillow for CALD's rescale) only: no deep-learning framework. The definitions are in
``docs/mining.md``; every score is oriented "higher = more worth labelling" (YMIR keeps the first top-k lines
of result.tsv). A plugin supplies what its model can give:

- ``predict(images) -> [Prediction]`` for ``entropy`` and ``cald``: ``images`` is a list of ``[H,W,3]`` uint8
  RGB arrays, each :class:`Prediction` holds the boxes found on one of them;
- ``probability_maps(images) -> [[p_1..p_K]]`` for ``aldd``: per image, K per-class probability maps
  ``[C,h,w]`` of the same grid (e.g. the image's and its mirror's, mirrored back);
- nothing for ``random``.

Three levels, use the highest that fits:

- :func:`mine_candidates` runs the whole mining task (read, decode and preprocess on threads ahead of the
  model, batch, score, progress, result.tsv), the loop of :func:`ymir_runner.inference.infer_candidates`;
- :class:`MiningSettings` (``from_context``) scores one batch of images a plugin decoded itself
  (the detection plugin feeds its letterboxed, sharded batches through it);
- the score functions (:func:`entropy_score`, :func:`aldd_score`, :func:`cald_consistency`, ...).

A plugin lists the algorithms it supports in ``ExecutorSpec(mining_algorithms=...)``; the core then adds
``mining_algorithm``, ``class_distribution_scores`` and ``seed`` to its mining template.
"""

from __future__ import annotations

import dataclasses
import math
import random
import zlib
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from .errors import ConfigError, DatasetError
from .evaluation import box_iou
from .pipeline import candidate_batches
from .prediction import Prediction
from .records import MINING_ALGORITHMS

if TYPE_CHECKING:
    from .context import TaskContext
    from .protocol.images import DecodedImage

__all__ = [
    "MINING_ALGORITHMS", "Prediction", "MiningSettings", "mine_candidates",
    "Augmentation", "horizontal_flip", "cutout", "rescale", "CALD_AUGMENTATIONS",
    "binary_entropy", "class_weights", "random_scores", "entropy_score", "aldd_score", "box_iou",
    "js_divergence", "cald_consistency", "cald_score", "cald_scores", "MIN_SCORE",
]

EPS = 1e-6
#: Predictions below this score are not object hypotheses (entropy) and not reference boxes (CALD).
MIN_SCORE = 0.05
#: entropy: at most this many hypotheses per image, the highest-scoring.
ENTROPY_TOP_K = 100
#: CALD: the largest consistency a reference box can have (IoU 1 + mean score 1 x (1 - JS 0)).
CALD_MAX_CONSISTENCY = 2.0
#: The grey CALD's cutout and rescale fill with (ultralytics' letterbox grey).
FILL = 114

#: ``images -> one Prediction per image``.
Predict = Callable[[Sequence[np.ndarray]], Sequence["Prediction"]]
#: ``images -> per image, K probability maps [C,h,w]``.
ProbabilityMaps = Callable[[Sequence[np.ndarray]], Sequence[Sequence[np.ndarray]]]


# --- the scores ------------------------------------------------------------------------------------------

def binary_entropy(p: np.ndarray | float) -> np.ndarray:
    """H(p) = -p ln p - (1-p) ln(1-p), elementwise, in [0, ln 2] (p clipped to [1e-6, 1 - 1e-6])."""
    p = np.clip(np.asarray(p, np.float64), EPS, 1.0 - EPS)
    return -(p * np.log(p) + (1.0 - p) * np.log(1.0 - p))


def class_weights(text: Any, num_classes: int) -> np.ndarray:
    """Config key ``class_distribution_scores``: comma-separated per-class weights w_c, padded with 1.0.

    Returns ``[num_classes]`` float64. Raises :class:`ConfigError` naming the key for a value that is not a
    list of at most ``num_classes`` finite non-negative numbers.
    """
    parts = [part.strip() for part in str(text if text is not None else "").split(",") if part.strip()]
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise ConfigError(f"config key 'class_distribution_scores': {text!r} is not a comma-separated list of "
                          "numbers") from None
    if len(values) > num_classes or any(not math.isfinite(v) or v < 0 for v in values):
        raise ConfigError(f"config key 'class_distribution_scores': {text!r} must hold at most {num_classes} "
                          "finite non-negative weights")
    return np.array(values + [1.0] * (num_classes - len(values)), np.float64)


def random_scores(keys: Iterable[str], seed: int) -> list[float]:
    """A uniform number in [0, 1) per key (an image path), from a generator seeded with ``seed`` and the key:
    the same image gets the same number whatever the order or sharding of the candidates."""
    return [random.Random(f"{seed}\0{key}").random() for key in keys]


def entropy_score(prediction: Prediction, weights: np.ndarray | None = None, *, min_score: float = MIN_SCORE,
                  top_k: int = ENTROPY_TOP_K) -> float:
    """Mean of w_c H(s) over the image's object hypotheses: its ``top_k`` boxes scoring at least ``min_score``.

    Boxes are the detector's answer, so their entropy is its uncertainty (highest at s = 0.5). The mean, not
    the sum, keeps an image with many objects from winning by its object count alone. An image without a
    hypothesis scores 0. ``weights [C]``: per-class w_c (:func:`class_weights`); all 1 when None.
    """
    hypotheses = prediction.above(min_score)
    if not len(hypotheses):
        return 0.0
    order = np.argsort(-hypotheses.scores, kind="stable")[:top_k]
    entropy = binary_entropy(hypotheses.scores[order])
    if weights is not None:
        entropy = entropy * np.asarray(weights, np.float64)[hypotheses.classes[order]]
    return float(entropy.mean())


def _window_mean(maps: np.ndarray, window: int) -> np.ndarray:
    """Mean over a ``window`` x ``window`` neighbourhood of every cell of ``maps [C,H,W]`` (stride 1, the
    padding at the border not counted), from an integral image."""
    half = window // 2
    height, width = maps.shape[1:]
    integral = np.pad(maps, ((0, 0), (1, 0), (1, 0))).cumsum(1).cumsum(2)
    rows, cols = np.arange(height), np.arange(width)
    y0, y1 = np.clip(rows - half, 0, height), np.clip(rows + half + 1, 0, height)
    x0, x1 = np.clip(cols - half, 0, width), np.clip(cols + half + 1, 0, width)
    total = (integral[:, y1][:, :, x1] - integral[:, y0][:, :, x1]
             - integral[:, y1][:, :, x0] + integral[:, y0][:, :, x0])
    return total / ((y1 - y0)[:, None] * (x1 - x0)[None, :])


def aldd_score(maps: Sequence[np.ndarray], weights: np.ndarray | None = None, *, window: int = 9,
               cell: int = 32) -> float:
    """ALDD (Aghdam et al., "Active Learning for Deep Detection Neural Networks", ICCV 2019).

    ``maps``: K per-class probability maps ``[C,h,w]`` of one image on one grid. With A a ``window`` x
    ``window`` mean (stride 1, padding not counted): U = sum_k H(A[p_k]) - sum_k A[H(p_k)] (>= 0, large where
    neighbouring predictions disagree); U' = max of U over ``cell`` x ``cell`` blocks (partial blocks at the
    border included); s_c = mean(U'); score = sum_c w_c s_c (``weights [C]``, all 1 when None).

    Raises ``ValueError`` for no map or maps of different shapes.
    """
    if not maps:
        raise ValueError("aldd_score needs at least one probability map")
    arrays = [np.clip(np.asarray(p, np.float64), EPS, 1.0 - EPS) for p in maps]
    if any(a.ndim != 3 or a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"aldd_score: maps must share one [C,h,w] shape, got {[a.shape for a in arrays]}")
    disagreement = sum(binary_entropy(_window_mean(p, window)) - _window_mean(binary_entropy(p), window)
                       for p in arrays)
    disagreement = np.clip(disagreement, 0.0, None)
    classes, height, width = disagreement.shape
    rows, cols = -(-height // cell), -(-width // cell)
    padded = np.zeros((classes, rows * cell, cols * cell))
    padded[:, :height, :width] = disagreement  # U >= 0: zero padding never wins a block's max
    per_class = padded.reshape(classes, rows, cell, cols, cell).max(axis=(2, 4)).reshape(classes, -1).mean(1)
    w = np.ones(classes) if weights is None else np.asarray(weights, np.float64)
    return float((per_class * w).sum())


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence in bits (so in [0, 1]) between the distributions in the last axis of ``p``
    and ``q`` (``[..., K]``, each summing to 1)."""
    p = np.clip(np.asarray(p, np.float64), EPS, 1.0)
    q = np.clip(np.asarray(q, np.float64), EPS, 1.0)
    m = (p + q) / 2
    kl_pm = (p * np.log(p / m)).sum(-1)
    kl_qm = (q * np.log(q / m)).sum(-1)
    return np.clip((kl_pm + kl_qm) / 2 / math.log(2), 0.0, 1.0)


def _distributions(prediction: Prediction, index: np.ndarray) -> np.ndarray:
    """Class distributions of the boxes ``index``: ``class_probabilities`` or ``[s, 1 - s]``."""
    if prediction.class_probabilities is not None:
        return prediction.class_probabilities[index]
    scores = prediction.scores[index]
    return np.stack([scores, 1.0 - scores], -1)


def cald_consistency(reference: Prediction, augmented: Sequence[tuple[np.ndarray, Prediction]]) -> float:
    """Image consistency under augmentations, in [0, 2] (Yu et al., "Consistency-based Active Learning for
    Object Detection", CVPR-W 2022).

    ``reference``: the boxes b_j (scores s_j) predicted on the image; ``augmented[a] = (b_j transformed like
    augmentation a [N,4], the prediction on augmented image a)``. For each b_j: d_i* is the prediction with the
    best IoU m_j, c_j = m_j + (s_j + t_i*)/2 * (1 - JS_j), JS_j the Jensen-Shannon divergence in bits between
    the class distributions of b_j and d_i* (:func:`js_divergence`). The image's consistency under a is
    min_j c_j (one minimum, never a sum: the score must not grow with the box count), 0 when nothing is
    predicted on augmented image a; the result is the mean over augmentations.

    Raises ``ValueError`` when ``reference`` holds no box (see :func:`cald_score`).
    """
    if not len(reference):
        raise ValueError("cald_consistency needs at least one reference box")
    per_augmentation = []
    references = np.arange(len(reference))
    for boxes, predicted in augmented:
        if not len(predicted):
            per_augmentation.append(0.0)
            continue
        iou = box_iou(boxes, predicted.boxes)
        best = iou.argmax(1)
        matched_iou = iou[references, best]
        s, t = reference.scores, predicted.scores[best]
        divergence = js_divergence(_distributions(reference, references), _distributions(predicted, best))
        per_augmentation.append(float((matched_iou + (s + t) / 2 * (1.0 - divergence)).min()))
    return float(np.mean(per_augmentation))


def cald_score(consistency: float | None) -> float:
    """Less consistent ranks first: score = 2 - consistency. ``None`` (no reference box on the image) scores
    the maximum, 2, as in the paper's code: a detector that finds nothing in an image of a dataset of objects
    is most likely wrong there (the public YMIR port ranks such images last)."""
    return CALD_MAX_CONSISTENCY if consistency is None else CALD_MAX_CONSISTENCY - consistency


# --- CALD's augmentations -------------------------------------------------------------------------------

#: ``(image [H,W,3] uint8, rng) -> (augmented image, function mapping boxes [N,4] of the image into it)``.
Augmentation = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]]


def horizontal_flip(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Callable]:
    """The mirror image; x1, x2 -> W - x2, W - x1."""
    width = image.shape[1]

    def boxes(b: np.ndarray) -> np.ndarray:
        mirrored = np.array(b, np.float64).reshape(-1, 4)
        mirrored[:, [0, 2]] = width - mirrored[:, [2, 0]]
        return mirrored

    return np.ascontiguousarray(image[:, ::-1]), boxes


def cutout(count: int = 4, fraction: float = 0.1) -> Augmentation:
    """``count`` grey squares with a side of ``fraction`` of the image's short side, at random places;
    boxes unchanged."""

    def apply(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Callable]:
        height, width = image.shape[:2]
        side = max(1, int(min(height, width) * fraction))
        result = image.copy()
        for _ in range(count):
            y, x = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
            result[y:y + side, x:x + side] = FILL
        return result, lambda b: np.asarray(b, np.float64).reshape(-1, 4)

    return apply


def rescale(factor: float = 0.8) -> Augmentation:
    """The image resized by ``factor`` (bilinear, Pillow) in the top-left corner of a grey canvas of the
    original size (the model sees the input size it expects); boxes scaled alike."""
    from PIL import Image

    def apply(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Callable]:
        height, width = image.shape[:2]
        new_width, new_height = max(1, round(width * factor)), max(1, round(height * factor))
        canvas = np.full_like(image, FILL)
        canvas[:new_height, :new_width] = np.asarray(
            Image.fromarray(image).resize((new_width, new_height), Image.Resampling.BILINEAR))
        scale = np.array([new_width / width, new_height / height] * 2)
        return canvas, lambda b: np.asarray(b, np.float64).reshape(-1, 4) * scale

    return apply


#: The paper's augmentations: horizontal flip, cutout of small patches, rescale.
CALD_AUGMENTATIONS: tuple[Augmentation, ...] = (horizontal_flip, cutout(), rescale())


def _image_rng(image: np.ndarray, seed: int) -> np.random.Generator:
    """A generator seeded by ``seed`` and the image's pixels: the same image gets the same cutouts whatever
    the batch or process it is scored in."""
    return np.random.default_rng([seed, zlib.crc32(np.ascontiguousarray(image).data)])


def cald_scores(images: Sequence[np.ndarray], predict: Predict, *, seed: int = 0,
                augmentations: Sequence[Augmentation] = CALD_AUGMENTATIONS,
                min_score: float = MIN_SCORE) -> list[float]:
    """CALD score (:func:`cald_score`) of each image: ``predict`` is called once on ``images`` and once per
    augmentation on the augmented batch. Reference boxes are the predictions scoring at least ``min_score``."""
    references = [prediction.above(min_score) for prediction in _predict(predict, images)]
    rngs = [_image_rng(image, seed) for image in images]
    augmented: list[list[tuple[np.ndarray, Prediction]]] = [[] for _ in images]
    for augmentation in augmentations:
        outputs = [augmentation(image, rng) for image, rng in zip(images, rngs)]
        predictions = _predict(predict, [image for image, _ in outputs])
        for index, ((_, transform), prediction) in enumerate(zip(outputs, predictions)):
            augmented[index].append((transform(references[index].boxes), prediction.above(min_score)))
    return [cald_score(cald_consistency(reference, pairs) if len(reference) else None)
            for reference, pairs in zip(references, augmented)]


def _predict(predict: Predict, images: Sequence[np.ndarray]) -> list[Prediction]:
    predictions = list(predict(images))
    if len(predictions) != len(images):
        raise RuntimeError(f"predict returned {len(predictions)} predictions for {len(images)} images")
    return predictions


# --- settings of a task, and the whole task --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class MiningSettings:
    """The mining keys of a task's config, checked: ``algorithm``, per-class ``weights [C]``, ``seed``."""

    algorithm: str
    weights: np.ndarray
    seed: int = 0

    @classmethod
    def from_context(cls, context: TaskContext) -> MiningSettings:
        """Read ``mining_algorithm``, ``class_distribution_scores`` and ``seed`` from ``context.hyper``.

        Raises :class:`ConfigError` naming the key for an algorithm the executor does not support or bad
        weights.
        """
        hyper = context.hyper
        supported = context.executor.mining_algorithms or MINING_ALGORITHMS
        algorithm = str(hyper.get("mining_algorithm", supported[0]))
        if algorithm not in supported:
            raise ConfigError(f"config key 'mining_algorithm': {algorithm!r} is not one of {', '.join(supported)}")
        seed = hyper.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"config key 'seed': {seed!r} is not an integer")
        return cls(algorithm, class_weights(hyper.get("class_distribution_scores", ""), len(context.class_names)),
                   seed)

    @property
    def uses_model(self) -> bool:
        """False for ``random``: no model is needed, no image is decoded."""
        return self.algorithm != "random"

    def score(self, images: Sequence[np.ndarray], *, predict: Predict | None = None,
              probability_maps: ProbabilityMaps | None = None) -> list[float]:
        """The score of each of ``images`` (``[H,W,3]`` uint8 RGB) by this algorithm (not ``random``: see
        :func:`random_scores`). Raises ``ValueError`` when the function the algorithm needs is missing."""
        if self.algorithm == "random":
            raise ValueError("random scores images by path: call random_scores(paths, seed)")
        if self.algorithm == "aldd":
            if probability_maps is None:
                raise ValueError("mining algorithm 'aldd' needs probability_maps")
            maps = list(probability_maps(images))
            if len(maps) != len(images):
                raise RuntimeError(f"probability_maps returned {len(maps)} results for {len(images)} images")
            return [aldd_score(per_image, self.weights) for per_image in maps]
        if predict is None:
            raise ValueError(f"mining algorithm {self.algorithm!r} needs predict")
        if self.algorithm == "entropy":
            return [entropy_score(prediction, self.weights) for prediction in _predict(predict, images)]
        return cald_scores(images, predict, seed=self.seed)


def mine_candidates(context: TaskContext, *, predict: Predict | None = None,
                    probability_maps: ProbabilityMaps | None = None,
                    preprocess: Callable[[DecodedImage], np.ndarray] | None = None, batch_size: int = 8,
                    min_side: int | None = None, workers: int | None = None) -> dict[str, float]:
    """The whole mining task: score every candidate of ``context`` and add it to ``context.mining_result``.

    The same pipeline as :func:`ymir_runner.inference.infer_candidates`: candidates are decoded by
    ``context.decode`` (the project's rules, reduced on decode by a power of two while the long side stays at
    least ``min_side`` when given) and turned into the images the algorithm scores by ``preprocess(decoded)``
    (default ``decoded.pixels``; it must return an ``[H,W,3]`` uint8 RGB array, since CALD augments it) on
    ``workers`` threads that prepare the next two batches while the model scores this one (None: sized from the
    task's CPUs, 0: in this thread); ``batch_size`` at a time, progress per batch. ``random`` decodes nothing.
    A candidate that cannot be used (missing, unreadable, too large: counted and named by the core) is ranked
    last, below every scored image, so it is never picked before a usable one but stays in result.tsv.
    Returns the scores of the scored images.

    Raises :class:`DatasetError` when no candidate can be read, ``ValueError`` when ``preprocess`` returns
    something other than an ``[H,W,3]`` uint8 array, and whatever ``preprocess``, ``predict`` or
    ``probability_maps`` raise (the threads stop without being waited for).
    """
    settings = MiningSettings.from_context(context)
    items = list(context.candidates)
    scores: dict[str, float] = {}
    if not settings.uses_model:
        scores = dict(zip((item.image for item in items), random_scores((item.image for item in items),
                                                                          settings.seed)))
    else:
        def image_of(decoded: DecodedImage) -> np.ndarray:
            return _checked_image(preprocess(decoded) if preprocess is not None else decoded.pixels, decoded)

        done = 0
        with candidate_batches(context, items, image_of, batch_size=batch_size, min_side=min_side,
                               workers=workers, task="mining") as batches:
            for chunk, prepared in batches:
                usable = [entry for entry in prepared if entry is not None]
                if usable:
                    scores.update(zip((entry.item.image for entry in usable),
                                      settings.score([entry.input for entry in usable], predict=predict,
                                                     probability_maps=probability_maps)))
                done += len(chunk)
                context.progress.steps(done, len(items), f"{done}/{len(items)} images")
    paths = context.candidates.paths()
    if not scores and paths:
        raise DatasetError(f"no candidate of {context.env.input.candidate_index_file} could be read")
    last = min(scores.values(), default=0.0) - 1.0
    for image in paths:
        context.mining_result.add(image, scores.get(image, last))
    context.logger.info("mining (%s): scored %d images, %d unusable ranked last", settings.algorithm, len(scores),
                        len(paths) - len(scores))
    return scores


def _checked_image(image: Any, decoded: DecodedImage) -> np.ndarray:
    """``image`` when it is an ``[H,W,3]`` uint8 array (what the mining scores take), else ValueError."""
    if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
        what = (f"a {image.dtype} array of shape {list(image.shape)}" if isinstance(image, np.ndarray)
                else f"a {type(image).__name__}")
        raise ValueError(f"mining: preprocess returned {what} for an image of {decoded.width}x{decoded.height} "
                         "stored pixels; the mining scores need an [H,W,3] uint8 RGB array")
    return image
