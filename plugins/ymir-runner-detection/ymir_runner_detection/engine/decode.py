"""Turning head maps into detections: peak extraction, top-k, NMS, mapping back to images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .augment import LetterboxInfo


@dataclass
class Detections:
    """Detections of one image: ``boxes [N,4]`` (x1, y1, x2, y2 pixels), ``scores [N]``, ``classes [N]`` (0-based)."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


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
    """Greedy NMS; returns indices of kept boxes in decreasing score order."""
    order = scores.argsort(descending=True)
    if len(order) == 0:
        return order
    iou = box_iou(boxes[order], boxes[order])
    suppressed = torch.zeros(len(order), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(len(order)):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold
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


@torch.no_grad()
def predict_batch(
    model: torch.nn.Module,
    images: torch.Tensor,
    infos: list[LetterboxInfo] | None = None,
    top_k: int = 100,
    score_threshold: float = 0.01,
    nms_iou: float | None = None,
) -> list[Detections]:
    """Run ``model.predict_maps`` (in eval mode) on a uint8 or [0,1] float batch and decode.

    With ``infos`` (one per image), boxes are mapped back to original image
    coordinates; boxes that collapse to zero size after clipping are dropped.
    """
    device = next(model.parameters()).device
    images = images.to(device)
    if images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    images = images.contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    try:
        scores, boxes = model.predict_maps(images)
    finally:
        model.train(was_training)
    detections = []
    for i, (b, s, c) in enumerate(decode_maps(scores.float(), boxes.float(), top_k, score_threshold, nms_iou=nms_iou)):
        det = Detections(b.cpu().numpy(), s.cpu().numpy(), c.cpu().numpy().astype(np.int64))
        if infos is not None:
            det.boxes = boxes_to_original(det.boxes, infos[i])
            valid = (det.boxes[:, 2] > det.boxes[:, 0]) & (det.boxes[:, 3] > det.boxes[:, 1])
            det = Detections(det.boxes[valid], det.scores[valid], det.classes[valid])
        detections.append(det)
    return detections
