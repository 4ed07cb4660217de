"""Turning head maps into detections: peak extraction, top-k, NMS, mapping back to images (the plugin's
:mod:`..predict` turns them into ``ymir_runner.Prediction`` records)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .augment import LetterboxInfo


def extract_peaks(scores: torch.Tensor, pool_size: int = 3) -> torch.Tensor:
    """Zero every score that is not the maximum of its ``pool_size`` neighbourhood (CenterNet's NMS)."""
    pooled = F.max_pool2d(scores, pool_size, stride=1, padding=pool_size // 2)
    return scores * (pooled == scores).to(scores.dtype)


def decode_maps(
    scores: torch.Tensor,
    boxes: torch.Tensor,
    top_k: int = 100,
    score_threshold: float = 0.01,
    pool_size: int = 3,
    nms_iou: float | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Decode ``scores [B,C,H,W]`` and per-cell ``boxes [B,4,H,W]`` into per-image detections.

    Returns, per image, ``(boxes [N,4], scores [N], classes [N])`` in the
    network-input pixel space, sorted by decreasing score. ``nms_iou`` adds a
    class-aware NMS pass (peaks rarely need it, but large objects can produce
    two neighbouring peaks).
    """
    batch, num_classes, height, width = scores.shape
    peaks = extract_peaks(scores, pool_size).reshape(batch, -1)
    k = min(top_k, peaks.shape[1])
    top_scores, top_index = peaks.topk(k, dim=1)
    classes = top_index // (height * width)
    cells = top_index % (height * width)
    flat_boxes = boxes.reshape(batch, 4, height * width)
    results = []
    for b in range(batch):
        keep = top_scores[b] >= score_threshold
        image_boxes = flat_boxes[b][:, cells[b][keep]].T
        image_scores, image_classes = top_scores[b][keep], classes[b][keep]
        if nms_iou is not None and len(image_scores):
            kept = batched_nms(image_boxes, image_scores, image_classes, nms_iou)
            image_boxes, image_scores, image_classes = image_boxes[kept], image_scores[kept], image_classes[kept]
        results.append((image_boxes, image_scores, image_classes))
    return results


def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU matrix [N, M] of x1, y1, x2, y2 boxes."""
    area_a = (boxes_a[:, 2] - boxes_a[:, 0]).clamp(min=0) * (boxes_a[:, 3] - boxes_a[:, 1]).clamp(min=0)
    area_b = (boxes_b[:, 2] - boxes_b[:, 0]).clamp(min=0) * (boxes_b[:, 3] - boxes_b[:, 1]).clamp(min=0)
    top_left = torch.max(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = torch.min(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=2)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-9)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS: in decreasing score order, keep a box and suppress every later one overlapping it by more than
    ``iou_threshold``. Returns the indices of the kept boxes in decreasing score order.

    The IoU matrix is computed on the device in one go; the greedy pass walks it on the host (a box at a time over
    a numpy row: a few microseconds each, where a torch op per box cost tens)."""
    order = scores.argsort(descending=True)
    if len(order) == 0:
        return order
    overlaps = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()
    suppressed = np.zeros(len(order), dtype=bool)
    keep = []
    for i in range(len(order)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlaps[i]
    return order[torch.tensor(keep, dtype=torch.long, device=boxes.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Class-aware NMS: boxes of different classes never suppress each other."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # Shifting each class to its own region of the plane makes cross-class IoU zero.
    shift = (boxes.max() - boxes.min() + 1.0) * classes.to(boxes.dtype)
    return nms(boxes + shift[:, None], scores, iou_threshold)


def boxes_to_original(boxes: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Map boxes from letterboxed-input pixels back to the original image, clipped to it."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] - info.pad_x) / info.scale_x
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] - info.pad_y) / info.scale_y
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, info.orig_width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, info.orig_height)
    return boxes
