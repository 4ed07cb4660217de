"""Active-learning mining scores (../shared/mining.md). Every score: higher = more worth labelling.

These are pure functions on model outputs, so each can be checked against a hand-computed value.
"""

from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ymir_runner import ConfigError

EPS = 1e-6
#: Peaks below this probability are not object hypotheses (entropy) / not reference boxes (CALD).
PEAK_FLOOR = 0.05
#: CALD: the largest consistency a reference box can have (IoU 1 + mean score 1 x (1 - JS 0)).
CALD_MAX_CONSISTENCY = 2.0


def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """H(p) = -p ln p - (1-p) ln(1-p), elementwise, in [0, ln 2]."""
    p = p.clamp(EPS, 1.0 - EPS)
    return -(p * p.log() + (1.0 - p) * (1.0 - p).log())


def class_weights(text: str, num_classes: int) -> torch.Tensor:
    """``class_distribution_scores``: comma-separated per-class weights, padded with 1.0."""
    parts = [part.strip() for part in str(text or "").split(",") if part.strip()]
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise ConfigError(f"config key 'class_distribution_scores': {text!r} is not a comma-separated list of "
                          "numbers") from None
    if len(values) > num_classes or any(not math.isfinite(v) or v < 0 for v in values):
        raise ConfigError(f"config key 'class_distribution_scores': {text!r} must hold at most {num_classes} "
                          "finite non-negative weights")
    return torch.tensor(values + [1.0] * (num_classes - len(values)), dtype=torch.float32)


def random_scores(images: Sequence[str], seed: int) -> list[float]:
    """A uniform number per image from a seeded generator (no model forward)."""
    rng = random.Random(seed)
    return [rng.random() for _ in images]


def peaks(scores: torch.Tensor, top_k: int = 100) -> torch.Tensor:
    """The probabilities of the top-k local maxima (3x3) of ``scores [C,H,W]``, all classes together."""
    pooled = F.max_pool2d(scores[None], 3, stride=1, padding=1)[0]
    values = scores[scores == pooled]
    return values.topk(min(top_k, values.numel())).values


def entropy_score(scores: torch.Tensor, weights: torch.Tensor | None = None, top_k: int = 100,
                  floor: float = PEAK_FLOOR) -> float:
    """Mean binary entropy of the model's object hypotheses: the heatmap peaks with p >= ``floor``.

    Peaks are what the detector turns into boxes, so their entropy is the uncertainty of its answer;
    a pixel-wise mean would be dominated by confident background. The mean (not the sum) keeps the
    score independent of how many objects an image holds. An image without a hypothesis scores 0.
    With ``weights``, each peak's entropy is weighted by its class weight.
    """
    pooled = F.max_pool2d(scores[None], 3, stride=1, padding=1)[0]
    mask = (scores == pooled) & (scores >= floor)
    if not bool(mask.any()):
        return 0.0
    values = scores[mask]
    class_ids = mask.nonzero()[:, 0]
    order = values.topk(min(top_k, values.numel())).indices
    entropy = binary_entropy(values[order])
    if weights is not None:
        entropy = entropy * weights[class_ids[order]]
    return float(entropy.mean())


def aldd_score(maps: Sequence[torch.Tensor], weights: torch.Tensor, window: int = 9, cell: int = 32) -> float:
    """ALDD (Aghdam et al., ICCV 2019) on K probability maps ``[C,H,W]`` of the same image.

    U = sum_k H(A[p_k]) - sum_k A[H(p_k)] with A a ``window`` x ``window`` mean (stride 1, padding not
    counted); U' = max of U over ``cell`` x ``cell`` cells (partial cells at the border included);
    s_c = mean(U'); score = sum_c w_c s_c. U >= 0 (entropy is concave), large where neighbouring
    predictions disagree.
    """
    pad = window // 2
    disagreement = None
    for probability in maps:
        p = probability[None].clamp(EPS, 1.0 - EPS)
        mean_p = F.avg_pool2d(p, window, stride=1, padding=pad, count_include_pad=False)
        mean_h = F.avg_pool2d(binary_entropy(p), window, stride=1, padding=pad, count_include_pad=False)
        term = binary_entropy(mean_p) - mean_h
        disagreement = term if disagreement is None else disagreement + term
    assert disagreement is not None, "aldd_score needs at least one map"
    cells = F.max_pool2d(disagreement.clamp(min=0.0), cell, stride=cell, ceil_mode=True)[0]
    per_class = cells.flatten(1).mean(1)
    return float((per_class * weights).sum())


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of pixel-edge boxes ``a [N,4]`` and ``b [M,4]``."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def js_divergence(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (natural log, in [0, ln 2]) between Bernoulli(p) and Bernoulli(q)."""
    p, q = np.clip(p, EPS, 1 - EPS), np.clip(q, EPS, 1 - EPS)
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return a * np.log(a / b) + (1 - a) * np.log((1 - a) / (1 - b))

    return (kl(p, m) + kl(q, m)) / 2


def cald_consistency(reference_boxes: Sequence[np.ndarray], reference_scores: np.ndarray,
                     augmented: Sequence[tuple[np.ndarray, np.ndarray]]) -> float:
    """Image consistency under augmentations (Yu et al., "Consistency-based Active Learning for Object
    Detection"), in [0, 2].

    ``reference_boxes[a]`` are the boxes predicted on the image, transformed like augmentation ``a``, with
    scores ``reference_scores``; ``augmented[a] = (boxes [M,4], scores [M])`` the predictions on augmented
    image ``a``. For each reference box: m_j = best IoU with a prediction d_i*,
    c_j = m_j + (s_j + t_i*)/2 * (1 - JS(s_j, t_i*)) with JS in bits (so in [0, 1]); the image's
    consistency under ``a`` is min_j c_j (0 when nothing is predicted on the augmented image); the result
    is the mean over augmentations.
    """
    per_augmentation = []
    for boxes_a, (predicted, predicted_scores) in zip(reference_boxes, augmented):
        if len(predicted) == 0:
            per_augmentation.append(0.0)
            continue
        iou = box_iou(boxes_a, predicted)
        best = iou.argmax(1)
        matched_iou = iou[np.arange(len(best)), best]
        matched_scores = np.asarray(predicted_scores, np.float64)[best]
        s = np.asarray(reference_scores, np.float64)
        consistency = matched_iou + (s + matched_scores) / 2 * (1 - js_divergence(s, matched_scores) / math.log(2))
        per_augmentation.append(float(consistency.min()))
    return float(np.mean(per_augmentation))


def cald_score(consistency: float | None) -> float:
    """Less consistent ranks first: score = 2 - consistency. ``None`` (no reference box on the image) scores
    the maximum, as in the paper's code: a model that finds nothing is the least reliable answer."""
    return CALD_MAX_CONSISTENCY if consistency is None else CALD_MAX_CONSISTENCY - consistency
