"""Active-learning mining scores for any detector: ``random``, ``entropy``, ``aldd`` and ``cald``.

numpy (and Pillow for CALD's rescale) only: no deep-learning framework. The definitions are in
``docs/mining.md``; every score is oriented "higher = more worth labelling" (YMIR keeps the first top-k lines
of result.tsv). A plugin supplies what its model can give:

- ``predict(images) -> [Prediction]`` for ``entropy`` and ``cald``: ``images`` is a list of ``[H,W,3]`` uint8
  RGB arrays, each :class:`Prediction` holds the boxes found on one of them;
- ``probability_maps(images) -> [[p_1..p_K]]`` for ``aldd``: per image, K per-class probability maps
  ``[C,h,w]`` of the same grid (e.g. the image's and its mirror's, mirrored back);
- nothing for ``random``.

By the task's ``object_type``: detection (2) and instance segmentation (4) score boxes as above (an instance
model's ``predict`` returns :func:`instance_prediction` of its masks: boxes from the masks, scores, classes and
class probabilities); semantic segmentation (3) scores per-pixel softmax maps,
``softmax_maps(images) -> [[p_1..p_K]]`` (per image, K maps ``[C,h,w]``, one channel per class, then a
background channel if the model has one, summing to 1), with :func:`semantic_entropy_score` (``entropy``) and
:func:`semantic_aldd_score` (``aldd``), both scale-stable; ``cald`` is a box score and is refused there.

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
from .protocol.config import DETECTION, OBJECT_TYPES, SEMANTIC_SEGMENTATION
from .protocol.masks import mask_bbox
from .records import MINING_ALGORITHMS

if TYPE_CHECKING:
    from .context import TaskContext
    from .protocol.images import DecodedImage

__all__ = [
    "MINING_ALGORITHMS", "Prediction", "MiningSettings", "mine_candidates",
    "Augmentation", "horizontal_flip", "cutout", "rescale", "CALD_AUGMENTATIONS",
    "binary_entropy", "class_weights", "random_scores", "entropy_score", "aldd_score", "box_iou",
    "js_divergence", "cald_consistency", "cald_score", "cald_scores", "MIN_SCORE",
    "instance_prediction", "pixel_entropy", "semantic_entropy_score", "semantic_aldd_score",
    "SEMANTIC_ALGORITHMS",
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
#: ``images -> per image, K softmax maps [C,h,w]`` (or one ``[C,h,w]`` array: K = 1).
SoftmaxMaps = Callable[[Sequence[np.ndarray]], Sequence["np.ndarray | Sequence[np.ndarray]"]]
#: The algorithms defined on semantic segmentation's softmax maps (``cald`` needs boxes).
SEMANTIC_ALGORITHMS = ("random", "entropy", "aldd")
#: semantic ``aldd``: the long side of the grid the maps are area-averaged onto, the window of A and the
#: max-pool cell, in grid cells: fractions of the image, never pixels, so the score does not depend on the
#: resolution the image is scored at.
SEMANTIC_GRID, SEMANTIC_WINDOW, SEMANTIC_CELL = 128, 5, 16


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


def instance_prediction(masks: Iterable[np.ndarray], scores: Any, classes: Any,
                        class_probabilities: Any = None) -> Prediction:
    """The :class:`Prediction` of an instance-segmentation model (object type 4) for the box-based scores: one box
    per mask, its tight bounds (``x2``, ``y2`` exclusive) in the mask's pixels, with the instances' ``scores``,
    ``classes`` and optional ``class_probabilities [N,C]``.

    ``masks``: ``[N,H,W]`` or any iterable of ``[H,W]`` masks (nonzero = the instance; taken one at a time, so a
    generator keeps one mask alive). An empty mask keeps an empty box at ``(0, 0)``: its score still counts for
    ``entropy``; CALD matches nothing to it. Raises ``ValueError`` when the counts disagree.
    """
    boxes = []
    for mask in masks:
        x, y, width, height = mask_bbox(np.asarray(mask))
        boxes.append((x, y, x + width, y + height))
    return Prediction(np.array(boxes, np.float64).reshape(-1, 4), scores, classes, class_probabilities)


def pixel_entropy(p: np.ndarray) -> np.ndarray:
    """H(p)(x, y) = -sum_c p_c ln p_c of a softmax map ``p [C,h,w]``: ``[h,w]``, in [0, ln C] (p clipped to
    [1e-6, 1]); computed in the map's float type, at least float32 (float64 logs cost 5 to 8 times more)."""
    p = np.asarray(p)
    clipped = np.maximum(p.astype(np.result_type(p.dtype, np.float32), copy=False), EPS)
    terms = np.log(clipped)
    terms *= clipped
    return -terms.sum(0)


def _softmax_maps(maps: np.ndarray | Sequence[np.ndarray], classes: int | None) -> list[np.ndarray]:
    """The K maps of one image as ``[C,h,w]`` float arrays (their own float type, at least float32), each pixel's
    distribution renormalised to sum 1 when rounding moved it. ``C`` is ``classes`` or ``classes + 1``: a model
    that predicts "no class" as a channel of its own (the background, last) hands over its whole distribution.

    Raises ``ValueError`` for no map, maps of different shapes, a channel count other than ``classes`` or
    ``classes + 1`` (when given), values that are not finite and in [0, 1], or pixels whose channels do not sum to
    about 1 (logits, or per-class sigmoids: not a softmax)."""
    if isinstance(maps, np.ndarray) and maps.ndim == 3:
        maps = [maps]
    arrays = [np.asarray(p) for p in maps]
    arrays = [p.astype(np.result_type(p.dtype, np.float32), copy=False) for p in arrays]
    if not arrays:
        raise ValueError("semantic mining scores need at least one softmax map per image")
    if any(a.ndim != 3 or a.shape != arrays[0].shape for a in arrays) or not arrays[0].size:
        raise ValueError(f"softmax maps of one image must share one non-empty [C,h,w] shape, got "
                         f"{[a.shape for a in arrays]}")
    if classes is not None and arrays[0].shape[0] not in (classes, classes + 1):
        raise ValueError(f"softmax maps have {arrays[0].shape[0]} channels for {classes} classes: one channel per "
                         "class of class_names, then at most a background channel")
    normalised = []
    for p in arrays:
        if not (p.min() >= 0.0 and p.max() <= 1.0):  # a NaN fails both comparisons
            raise ValueError("softmax maps must hold probabilities in [0, 1] (apply softmax over the classes)")
        total = p.sum(0)
        error = np.abs(total - 1.0).max()
        if error > 0.01:
            raise ValueError(f"softmax maps must sum to 1 over the classes at every pixel (found sums from "
                             f"{total.min():.3g} to {total.max():.3g})")
        normalised.append(p / total if error > 1e-5 else p)
    return normalised


def _channel_weights(weights: np.ndarray | None, channels: int) -> np.ndarray | None:
    """The per-class ``weights [C]`` for maps of ``channels`` channels: a background channel (``C + 1``) weighs 1."""
    if weights is None or len(weights) == channels:
        return weights
    return np.append(np.asarray(weights, np.float64), 1.0)


def semantic_entropy_score(maps: np.ndarray | Sequence[np.ndarray], weights: np.ndarray | None = None) -> float:
    """Pixel entropy of a semantic-segmentation prediction (object type 3): the MEAN over pixels of
    w_c* H(p̄)(x, y), p̄ = the mean of the image's K softmax maps ``[C,h,w]`` (K = 1: the map itself), H the
    entropy over the channels (:func:`pixel_entropy`), c* the pixel's most probable class (``weights [C]``, all 1
    when None; a background channel, the ``C + 1``-th, weighs 1). In [0, max(w) ln K] for K channels.

    A mean, not a sum: the same image scored at another resolution scores the same (nearest-neighbour resizing:
    exactly), and a large image does not win by its pixel count. Raises ``ValueError`` as :func:`_softmax_maps`.
    """
    arrays = _softmax_maps(maps, None if weights is None else len(weights))
    weights = _channel_weights(weights, len(arrays[0]))
    mean = arrays[0]
    if len(arrays) > 1:
        mean = mean.copy()
        for p in arrays[1:]:
            mean += p
        mean /= len(arrays)
    entropy = pixel_entropy(mean)
    if weights is not None:
        entropy = entropy * np.asarray(weights, entropy.dtype)[mean.argmax(0)]
    return float(entropy.mean(dtype=np.float64))


def _area_weights(source: int, target: int) -> np.ndarray:
    """``[target, source]``: row i holds the share of target cell i covered by each source pixel (both spans
    laid over [0, 1]); each row sums to 1, so ``weights @ x`` is the exact area mean of x over every cell."""
    edges = np.arange(source + 1) * (target / source)
    cells = np.arange(target)[:, None]
    return np.clip(np.minimum(cells + 1, edges[None, 1:]) - np.maximum(cells, edges[None, :-1]), 0.0, None)


def semantic_aldd_score(maps: np.ndarray | Sequence[np.ndarray], weights: np.ndarray | None = None, *,
                        grid: int = SEMANTIC_GRID, window: int = SEMANTIC_WINDOW, cell: int = SEMANTIC_CELL) -> float:
    """ALDD (Aghdam et al., ICCV 2019) on semantic-segmentation softmax maps (object type 3), scale-stable.

    ``maps``: K softmax maps ``[C,h,w]`` of one image (e.g. the image's and its mirror's, mirrored back).
    1. Each p_k and its pixel entropy H(p_k) (:func:`pixel_entropy`) are area-averaged onto a grid whose long side
       is ``grid`` cells (the image's aspect ratio kept): the grid is a fixed fraction of the image, whatever its
       resolution.
    2. With A a ``window`` x ``window`` mean over grid cells (stride 1, padding not counted) and means over k:
       U = H(mean_k A[p_k]) - mean_k A[H(p_k)]: the entropy of the neighbourhood's mean prediction minus its mean
       entropy (a mutual information, >= 0, in [0, ln C]; large where neighbouring pixels or the K views disagree);
       U is weighted by w_c* of the neighbourhood's most probable class (``weights [C]``, all 1 when None; a
       background channel weighs 1).
    3. U' = the max of U over ``cell`` x ``cell`` blocks (partial blocks at the border included); score = mean(U').

    Raises ``ValueError`` as :func:`_softmax_maps`.
    """
    arrays = _softmax_maps(maps, None if weights is None else len(weights))
    weights = _channel_weights(weights, len(arrays[0]))
    _, height, width = arrays[0].shape
    scale = grid / max(height, width)
    row_weights = _area_weights(height, max(1, round(height * scale))).astype(arrays[0].dtype)
    col_weights = _area_weights(width, max(1, round(width * scale))).astype(arrays[0].dtype)

    def on_grid(values: np.ndarray) -> np.ndarray:  # [C,h,w] -> [C,rows,cols]; columns first: one 2-D product
        narrowed = (values.reshape(-1, width) @ col_weights.T).reshape(len(values), height, -1)
        return np.matmul(row_weights, narrowed)

    # on the grid (at most 128 x 128 cells) float64 throughout
    mean_p = np.stack([on_grid(p) for p in arrays]).mean(0, dtype=np.float64)
    mean_entropy = np.stack([on_grid(pixel_entropy(p)[None]) for p in arrays]).mean(0, dtype=np.float64)
    neighbourhood = _window_mean(mean_p, window)
    disagreement = np.clip(pixel_entropy(neighbourhood) - _window_mean(mean_entropy, window)[0], 0.0, None)
    if weights is not None:
        disagreement = disagreement * np.asarray(weights, np.float64)[neighbourhood.argmax(0)]
    rows, cols = disagreement.shape
    blocks = np.zeros((-(-rows // cell) * cell, -(-cols // cell) * cell))
    blocks[:rows, :cols] = disagreement  # U >= 0: zero padding never wins a block's max
    return float(blocks.reshape(len(blocks) // cell, cell, -1, cell).max(axis=(1, 3)).mean())


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
    """The mining keys of a task's config, checked: ``algorithm``, per-class ``weights [C]``, ``seed``; and the
    task's ``object_type`` (2 and 4 score boxes, 3 softmax maps)."""

    algorithm: str
    weights: np.ndarray
    seed: int = 0
    object_type: int = DETECTION

    @classmethod
    def from_context(cls, context: TaskContext) -> MiningSettings:
        """Read ``mining_algorithm``, ``class_distribution_scores`` and ``seed`` from ``context.hyper``.

        Raises :class:`ConfigError` naming the key for an algorithm the executor does not support (or one not
        defined for a semantic-segmentation task: ``cald``) or bad weights.
        """
        hyper = context.hyper
        object_type = context.config.object_type
        supported = context.executor.mining_algorithms or MINING_ALGORITHMS
        if object_type == SEMANTIC_SEGMENTATION:
            supported = tuple(name for name in supported if name in SEMANTIC_ALGORITHMS)
        algorithm = str(hyper.get("mining_algorithm", supported[0] if supported else ""))
        if algorithm not in supported:
            raise ConfigError(f"config key 'mining_algorithm': {algorithm!r} is not one of {', '.join(supported)}"
                              + (f" (a {OBJECT_TYPES[object_type]} task)" if object_type != DETECTION else ""))
        seed = hyper.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"config key 'seed': {seed!r} is not an integer")
        return cls(algorithm, class_weights(hyper.get("class_distribution_scores", ""), len(context.class_names)),
                   seed, object_type)

    @property
    def uses_model(self) -> bool:
        """False for ``random``: no model is needed, no image is decoded."""
        return self.algorithm != "random"

    def score(self, images: Sequence[np.ndarray], *, predict: Predict | None = None,
              probability_maps: ProbabilityMaps | None = None,
              softmax_maps: SoftmaxMaps | None = None) -> list[float]:
        """The score of each of ``images`` (``[H,W,3]`` uint8 RGB) by this algorithm (not ``random``: see
        :func:`random_scores`): semantic segmentation (object type 3) from ``softmax_maps``, the other types from
        ``predict`` or ``probability_maps``. Raises ``ValueError`` when the function the algorithm needs is
        missing or its maps are not what the score takes."""
        if self.algorithm == "random":
            raise ValueError("random scores images by path: call random_scores(paths, seed)")
        if self.object_type == SEMANTIC_SEGMENTATION:
            if softmax_maps is None:
                raise ValueError(f"mining algorithm {self.algorithm!r} of a semantic segmentation task (object_type "
                                 "3) needs softmax_maps")
            maps = list(softmax_maps(images))
            if len(maps) != len(images):
                raise RuntimeError(f"softmax_maps returned {len(maps)} results for {len(images)} images")
            if self.algorithm == "entropy":
                return [semantic_entropy_score(per_image, self.weights) for per_image in maps]
            if self.algorithm == "aldd":
                return [semantic_aldd_score(per_image, self.weights) for per_image in maps]
            raise ValueError(f"mining algorithm {self.algorithm!r} is not defined for semantic segmentation: use one "
                             f"of {', '.join(SEMANTIC_ALGORITHMS)}")
        if self.algorithm == "aldd":
            if probability_maps is None:
                raise ValueError("mining algorithm 'aldd' needs probability_maps")
            maps = list(probability_maps(images))
            if len(maps) != len(images):
                raise RuntimeError(f"probability_maps returned {len(maps)} results for {len(images)} images")
            return [aldd_score(list(per_image), self.weights) for per_image in maps]
        if predict is None:
            raise ValueError(f"mining algorithm {self.algorithm!r} needs predict")
        if self.algorithm == "entropy":
            return [entropy_score(prediction, self.weights) for prediction in _predict(predict, images)]
        return cald_scores(images, predict, seed=self.seed)


def mine_candidates(context: TaskContext, *, predict: Predict | None = None,
                    probability_maps: ProbabilityMaps | None = None, softmax_maps: SoftmaxMaps | None = None,
                    preprocess: Callable[[DecodedImage], np.ndarray] | None = None, batch_size: int = 8,
                    min_side: int | None = None, workers: int | None = None) -> dict[str, float]:
    """The whole mining task: score every candidate of ``context`` and add it to ``context.mining_result``.

    The same pipeline as :func:`ymir_runner.inference.infer_candidates`: candidates are decoded by
    ``context.decode`` (the project's rules, reduced on decode by a power of two while the long side stays at
    least ``min_side`` when given) and turned into the images the algorithm scores by ``preprocess(decoded)``
    (default ``decoded.pixels``; it must return an ``[H,W,3]`` uint8 RGB array, since CALD augments it) on
    ``workers`` threads that prepare the next two batches while the model scores this one (None: sized from the
    task's CPUs, 0: in this thread); ``batch_size`` at a time, progress per batch. ``random`` decodes nothing.
    The task's ``object_type`` picks the scores (:class:`MiningSettings`): a semantic-segmentation task (3) passes
    ``softmax_maps``, an instance-segmentation task (4) ``predict`` returning :func:`instance_prediction` records
    (or ``probability_maps`` for ``aldd``), as detection does.
    A candidate that cannot be used (missing, unreadable, too large: counted and named by the core) is ranked
    last, below every scored image, so it is never picked before a usable one but stays in result.tsv.
    Returns the scores of the scored images.

    Raises :class:`DatasetError` when no candidate can be read, ``ValueError`` when ``preprocess`` returns
    something other than an ``[H,W,3]`` uint8 array, and whatever ``preprocess``, ``predict``,
    ``probability_maps`` or ``softmax_maps`` raise (the threads stop without being waited for).
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
                                                     probability_maps=probability_maps,
                                                     softmax_maps=softmax_maps)))
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
