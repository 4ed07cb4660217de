"""Losses: penalty-reduced focal loss on heatmaps, GIoU (ltrb) or L1 (wh_offset) on boxes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .model import EDGE_MODES, raw_to_boxes


def heatmap_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 2.0,
                       beta: float = 4.0) -> torch.Tensor:
    """CenterNet penalty-reduced pixel-wise focal loss, normalised by the number of peaks.

    Works on logits (log-sigmoid) for numerical stability; a batch without any
    object still gets the negative term (normalised by 1).
    """
    logits = logits.float()
    prob = torch.sigmoid(logits)
    positive = target.eq(1.0)
    num_positive = positive.sum().clamp(min=1).float()
    pos_loss = F.logsigmoid(logits) * (1.0 - prob).pow(alpha)
    neg_loss = F.logsigmoid(-logits) * prob.pow(alpha) * (1.0 - target).pow(beta)
    loss = -(torch.where(positive, pos_loss, neg_loss).sum())
    return loss / num_positive


def generalized_iou(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """GIoU of paired boxes [N,4] (x1, y1, x2, y2)."""
    inter_wh = (torch.min(pred[:, 2:], target[:, 2:]) - torch.max(pred[:, :2], target[:, :2])).clamp(min=0)
    inter = inter_wh[:, 0] * inter_wh[:, 1]
    area_pred = (pred[:, 2] - pred[:, 0]).clamp(min=0) * (pred[:, 3] - pred[:, 1]).clamp(min=0)
    area_target = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    union = area_pred + area_target - inter + eps
    iou = inter / union
    hull_wh = (torch.max(pred[:, 2:], target[:, 2:]) - torch.min(pred[:, :2], target[:, :2])).clamp(min=0)
    hull = hull_wh[:, 0] * hull_wh[:, 1] + eps
    return iou - (hull - union) / hull


class DetectionLoss(nn.Module):
    """Total training loss of a :class:`~.model.CenterNetDetector`.

    ``targets`` are batched outputs of :func:`~.targets.encode_targets`:
    ``heatmap [B,C,H,W]``, ``box_target [B,4,H,W]``, ``box_weight [B,H,W]``.
    Returns ``(total_loss, {"heatmap": float, "box": float})``.
    """

    #: The loss parts the training loop sums per epoch.
    PARTS = ("heatmap", "box")

    def __init__(self, stride: int, box_mode: str, heatmap_weight: float = 1.0, box_weight: float | None = None):
        super().__init__()
        self.stride = stride
        self.box_mode = box_mode
        self.heatmap_weight = heatmap_weight
        # GIoU is bounded in [0, 2] and sparse -> TTFNet's weight 5; L1 on
        # offsets/log-sizes is already on a comparable scale.
        self.box_weight = box_weight if box_weight is not None else (5.0 if box_mode in EDGE_MODES else 1.0)

    @classmethod
    def for_model(cls, model, **kwargs) -> "DetectionLoss":
        """Loss matching a model's stride and box mode."""
        return cls(model.stride, model.box_mode, **kwargs)

    def forward(self, outputs: dict[str, torch.Tensor], targets: dict[str, torch.Tensor]):
        heat_loss = heatmap_focal_loss(outputs["heatmap_logits"], targets["heatmap"])
        box_loss = self._box_loss(outputs["box_raw"].float(), targets["box_target"], targets["box_weight"])
        total = self.heatmap_weight * heat_loss + self.box_weight * box_loss
        return total, {"heatmap": heat_loss.detach().item(), "box": box_loss.detach().item()}

    def _box_loss(self, box_raw: torch.Tensor, box_target: torch.Tensor, box_weight: torch.Tensor) -> torch.Tensor:
        mask = box_weight > 0
        if not bool(mask.any()):
            # Keep the graph connected so that DDP sees a gradient for every parameter.
            return box_raw.sum() * 0.0
        weights = box_weight[mask]
        target = box_target.permute(0, 2, 3, 1)[mask]
        if self.box_mode in EDGE_MODES:
            pred = raw_to_boxes(box_raw, self.stride, self.box_mode).permute(0, 2, 3, 1)[mask]
            return ((1.0 - generalized_iou(pred, target)) * weights).sum() / weights.sum()
        return self._wh_offset_l1(box_raw, target, mask, weights)

    def _wh_offset_l1(self, box_raw, target, mask, weights):
        batch, _, height, width = box_raw.shape
        raw = box_raw.permute(0, 2, 3, 1)[mask]
        ys, xs = torch.meshgrid(
            torch.arange(height, device=raw.device), torch.arange(width, device=raw.device), indexing="ij"
        )
        cell_xy = torch.stack([xs, ys], dim=-1).expand(batch, height, width, 2)[mask].float()
        centers = (target[:, :2] + target[:, 2:]) / 2.0 / self.stride
        sizes = (target[:, 2:] - target[:, :2]).clamp(min=1e-3) / self.stride
        offset_l1 = (raw[:, :2] - (centers - cell_xy)).abs().sum(dim=1)
        size_l1 = (raw[:, 2:] - sizes.log()).abs().sum(dim=1)
        return ((offset_l1 + size_l1) * weights).sum() / weights.sum()
