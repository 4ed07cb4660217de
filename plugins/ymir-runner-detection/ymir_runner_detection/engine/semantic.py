"""Semantic segmentation on the detector's own backbone and FPN neck: Semantic FPN (Kirillov, Girshick, He and
Dollar, "Panoptic Feature Pyramid Networks", CVPR 2019, arXiv:1901.02446) in its smallest form.

Architecture: the backbone of :mod:`.model` (``csp`` or ``resnet``, any size of :data:`~.model.MODEL_SPECS`), its
top-down FPN neck fused down to ONE map at output stride 4 (the paper's merged 1/4-scale map; here the neck's
4-level fusion gives it), a 1x1 convolution to ``K`` logits per cell, and bilinear x4 upsampling back to the input
size. ``K`` is the number of classes plus one when unlabelled pixels are an implicit background class
(``unlabelled_pixels="background"``, mmseg's ``with_blank_area``): channel ``num_classes`` (the last) is the
background. With ``"ignore"`` unlabelled pixels take no part in the loss and ``K`` is the number of classes: every
pixel is predicted as some class (the platform's scoring ignores the pixels its ground truth leaves unlabelled).

Measured (issue 28's prototype, 2 CPUs, 1 thread per process): on 240 / 60 generated 160 px scenes of 3 shape
classes, AdamW one-cycle lr 3e-3, batch 8, horizontal flips, this model reached platform mIoU 0.670 at 91 CPU s
and 0.677 at 138 CPU s, where a UNet-tiny of the same size reached 0.560 at 157 CPU s (forward 4.2 vs 14.2 ms per
160 x 160 image). The executor's recipe (:class:`SemanticLoss` with the Dice term, no weight average, at least 1200
steps) reaches val mIoU 0.81-0.95 over 3 seeds on the plain scene of the same size in the whole training task, in at
most 281 CPU s on one core (``bench/bench_semantic_training.py``; experiments/README.md).

Label maps: ``uint8`` or integer ``[B, H, W]`` class ids, :data:`UNLABELLED` (255, as the platform's canvas)
where no class is; the letterbox's padding is :data:`UNLABELLED` too.

Input: float32 RGB in ``[0, 1]``, NCHW, height and width multiples of 32.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .model import MODEL_SPECS, Backbone, FPNNeck, ModelSpec, ResNetBackbone, _bias, available_model_sizes

#: The label of unlabelled pixels in a label map (the platform's semantic canvas starts at 255).
UNLABELLED = 255
#: What unlabelled pixels are in training: an implicit background class, or left out of the loss.
UNLABELLED_PIXELS = ("background", "ignore")
#: The output stride of the fused map the 1x1 head reads (Semantic FPN's 1/4 scale).
SEMANTIC_STRIDE = 4


class SemanticFPN(nn.Module):
    """Semantic FPN: backbone -> FPN neck at stride 4 -> 1x1 conv -> bilinear x4 (module docstring)."""

    def __init__(self, spec: ModelSpec, num_classes: int, size_name: str = "custom",
                 unlabelled_pixels: str = "background"):
        super().__init__()
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        if unlabelled_pixels not in UNLABELLED_PIXELS:
            raise ValueError(f"unlabelled_pixels must be one of {UNLABELLED_PIXELS}, not {unlabelled_pixels!r}")
        if num_classes >= UNLABELLED:
            raise ValueError(f"at most {UNLABELLED - 1} classes fit a uint8 label map beside {UNLABELLED}")
        self.spec = spec
        self.size_name = size_name
        self.num_classes = num_classes
        self.unlabelled_pixels = unlabelled_pixels
        self.stride = spec.output_stride
        self.backbone: nn.Module = ResNetBackbone(spec.depths) if spec.backbone == "resnet" else Backbone(spec)
        self.neck = FPNNeck(spec.widths[1:], spec.neck_width, spec.output_stride, spec.depthwise)
        self.classifier = nn.Conv2d(spec.neck_width, self.num_outputs, 1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(_bias(self.classifier))

    @property
    def background(self) -> bool:
        """True when the last output channel is the implicit background class."""
        return self.unlabelled_pixels == "background"

    @property
    def num_outputs(self) -> int:
        """Logit channels: the classes, and the background last when unlabelled pixels are one."""
        return self.num_classes + (1 if self.background else 0)

    def cell_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits at the output stride: ``[B, K, H / stride, W / stride]``."""
        return self.classifier(self.neck(self.backbone(images)))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``logits`` ``[B, K, H, W]``: :meth:`cell_logits` upsampled bilinearly to the input size."""
        logits = self.cell_logits(images)
        return {"logits": F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)}

    def predict_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Per-pixel probabilities ``[B, K, H, W]`` (softmax over the ``K`` channels, background last when there
        is one) at the input size."""
        return torch.softmax(self.forward(images)["logits"], dim=1)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description sufficient to rebuild the architecture."""
        return {"task": "semantic", "size": self.size_name, "num_classes": self.num_classes,
                "unlabelled_pixels": self.unlabelled_pixels, "spec": self.spec.__dict__.copy()}


def build_semantic_model(size: str, num_classes: int, unlabelled_pixels: str = "background",
                         **spec_overrides: Any) -> SemanticFPN:
    """A :class:`SemanticFPN` of a registry size (:data:`~.model.MODEL_SPECS`: the detector's backbone and neck
    widths) at output stride :data:`SEMANTIC_STRIDE`; ``spec_overrides`` replace fields of the spec."""
    if size not in MODEL_SPECS:
        raise ValueError(f"unknown model size {size!r}, available: {available_model_sizes()}")
    spec = replace(MODEL_SPECS[size], **{"output_stride": SEMANTIC_STRIDE, **spec_overrides})
    return SemanticFPN(spec, num_classes, size_name=size, unlabelled_pixels=unlabelled_pixels)


def build_semantic_model_from_config(config: Mapping[str, Any]) -> SemanticFPN:
    """Inverse of :meth:`SemanticFPN.config`."""
    spec_fields = dict(config["spec"])
    for key in ("widths", "depths"):
        spec_fields[key] = tuple(spec_fields[key])
    return SemanticFPN(ModelSpec(**spec_fields), config["num_classes"], size_name=config.get("size", "custom"),
                       unlabelled_pixels=config.get("unlabelled_pixels", "background"))


def reuse_weights(model: SemanticFPN, state_dict: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """Start ``model`` from another model of this plugin: a detector's (:class:`~.model.CenterNetDetector`) or
    a segmentation model's ``state_dict``. Every backbone and neck tensor of the same name and shape is loaded;
    the rest (the head, and the neck's stride-4 level a stride-8 detector lacks) keeps its initialisation.
    Returns ``(loaded, kept)`` tensor counts.

    Raises ValueError when the backbone does not load whole (another size or backbone: its weights would be
    meaningless), naming the first keys that differ."""
    own = model.state_dict()
    backbone = {key for key in own if key.startswith("backbone.")}
    fits = {key: value for key, value in state_dict.items()
            if key in own and key.startswith(("backbone.", "neck.")) and tuple(value.shape) == tuple(own[key].shape)}
    missing = sorted(backbone - set(fits))
    if missing:
        raise ValueError(f"the model's backbone is not {model.size_name}'s ({len(missing)} of {len(backbone)} "
                         f"tensors missing or of another shape: {', '.join(missing[:3])}"
                         f"{' ...' if len(missing) > 3 else ''})")
    model.load_state_dict(fits, strict=False)
    return len(fits), len(own) - len(fits)


class SemanticLoss(nn.Module):
    """Per-pixel cross-entropy over the model's ``K`` channels, averaged over the pixels that count, plus
    ``dice_weight`` times the soft Dice loss (Milletari et al., V-Net, arXiv:1606.04797; mmseg's ``DiceLoss``):
    ``1 - mean_k (2 sum p_k y_k + 1) / (sum p_k + sum y_k + 1)`` over the batch's counted pixels, ``p_k`` the
    softmax probability of channel ``k`` and ``y_k`` its one-hot label, every channel (background included).

    ``unlabelled_pixels="background"``: a pixel labelled :data:`UNLABELLED` is the background class (channel
    ``num_classes``); ``"ignore"``: it takes no part. A batch with no pixel that counts has loss 0 (with a
    gradient graph), never NaN."""

    #: The loss parts the training loop sums per epoch.
    PARTS = ("ce", "dice")

    def __init__(self, num_classes: int, unlabelled_pixels: str, dice_weight: float = 0.0):
        super().__init__()
        if unlabelled_pixels not in UNLABELLED_PIXELS:
            raise ValueError(f"unlabelled_pixels must be one of {UNLABELLED_PIXELS}, not {unlabelled_pixels!r}")
        if dice_weight < 0:
            raise ValueError(f"dice_weight must be >= 0, not {dice_weight}")
        self.num_classes = num_classes
        self.background = unlabelled_pixels == "background"
        self.dice_weight = dice_weight

    @classmethod
    def for_model(cls, model: SemanticFPN, dice_weight: float = 0.0) -> "SemanticLoss":
        return cls(model.num_classes, model.unlabelled_pixels, dice_weight)

    def forward(self, outputs: Mapping[str, torch.Tensor],
                targets: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        logits = outputs["logits"]
        labels = targets["labels"].long()
        if self.background:
            labels = torch.where(labels == UNLABELLED, torch.full_like(labels, self.num_classes), labels)
        per_pixel = F.cross_entropy(logits, labels, ignore_index=UNLABELLED, reduction="none")
        counted_mask = labels != UNLABELLED
        counted = counted_mask.sum()
        ce = per_pixel.sum() / counted.clamp(min=1)
        parts = {"ce": ce.detach().item(), "dice": 0.0}
        if not self.dice_weight:
            return ce, parts
        channels = logits.shape[1]
        weight = counted_mask.unsqueeze(1).to(logits.dtype)  # [B, 1, H, W]
        probability = torch.softmax(logits, dim=1) * weight
        one_hot = F.one_hot(torch.where(counted_mask, labels, 0), channels).permute(0, 3, 1, 2).to(logits.dtype)
        one_hot = one_hot * weight
        overlap = (probability * one_hot).sum(dim=(0, 2, 3))
        total = probability.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
        dice = 1.0 - ((2.0 * overlap + 1.0) / (total + 1.0)).mean()
        parts["dice"] = dice.detach().item()
        return ce + self.dice_weight * dice, parts


#: Elements of one strip's ``K x rows x W`` logits when mapping to stored pixels (16 MB of float32).
STRIP_ELEMENTS = 4_000_000


def _grid_axis(start: int, count: int, scale: float, pad: float, stride: int, cells: int) -> torch.Tensor:
    """``F.grid_sample``'s normalised coordinates (align_corners=False: -1 and 1 are the outer edges of the
    ``cells`` cells) of the centres of output pixels ``start .. start + count - 1``, which lie at input pixel
    ``(i + 0.5) * scale + pad``; computed in float64, then float32 (a 6000-pixel side keeps 1e-6 cell)."""
    centre = (torch.arange(start, start + count, dtype=torch.float64) + 0.5) * scale + pad
    return (centre * (2.0 / (stride * cells)) - 1.0).float()


def stored_label_map(cell_logits: torch.Tensor, *, stride: int, scale_x: float, scale_y: float, pad_x: float,
                     pad_y: float, width: int, height: int, background: bool) -> tuple[np.ndarray, np.ndarray]:
    """One image's prediction in its STORED pixels: ``(label map, probability)``, ``uint8`` and ``float32``
    ``[height, width]``.

    ``cell_logits`` ``[K, h, w]`` are :meth:`SemanticFPN.cell_logits` of the letterboxed input; the letterbox put
    stored pixel ``x`` at input pixel ``x * scale_x + pad_x`` (``LetterboxInfo``, the decode's reduce factor
    included). Each stored pixel takes the bilinear mix of the cell logits at its centre (``F.grid_sample``,
    align_corners=False, edges clamped: the upsampling of :meth:`SemanticFPN.forward`, evaluated where the pixel
    lies, so letterbox and reduce-on-decode are undone in one step); its label is the most probable class (the
    first of equal logits), :data:`UNLABELLED` where the background channel wins (``background``), its
    probability that class's softmax probability, ``1 / sum_k exp(l_k - l_max)``. Computed in strips of rows:
    memory is ``K x rows x width`` floats (:data:`STRIP_ELEMENTS`), never ``K x height x width``."""
    logits = cell_logits.detach().float().cpu().unsqueeze(0)  # [1, K, h, w]
    _, channels, cells_y, cells_x = logits.shape
    labels = np.empty((height, width), dtype=np.uint8)
    probability = np.empty((height, width), dtype=np.float32)
    grid_x = _grid_axis(0, width, scale_x, pad_x, stride, cells_x)
    # The first maximal channel k as rank K - k: the largest of (logit == max) * rank. numpy's comparisons and
    # reductions over the outer axis of a [K, rows, W] strip measured 4x faster than torch's (1 thread).
    rank = np.arange(channels, 0, -1, dtype=np.uint8).reshape(-1, 1, 1)
    label_of_rank = np.array([UNLABELLED, *range(channels - 1, -1, -1)], dtype=np.uint8)  # rank r -> K - r
    if background:
        label_of_rank[1] = UNLABELLED  # rank 1: the last channel, the background
    rows = max(1, STRIP_ELEMENTS // max(channels * width, 1))
    for start in range(0, height, rows):
        count = min(rows, height - start)
        grid_y = _grid_axis(start, count, scale_y, pad_y, stride, cells_y)
        grid = torch.stack(torch.broadcast_tensors(grid_x.view(1, -1), grid_y.view(-1, 1)), dim=-1)
        strip = F.grid_sample(logits, grid.unsqueeze(0), mode="bilinear", padding_mode="border",
                              align_corners=False)[0]  # [K, rows, W]
        values = strip.numpy()
        best = values.max(axis=0)
        ranked = (values == best).view(np.uint8)
        np.multiply(ranked, rank, out=ranked)
        labels[start:start + count] = np.take(label_of_rank, ranked.max(axis=0))
        probability[start:start + count] = strip.sub_(torch.from_numpy(best)).exp_().sum(dim=0).reciprocal_().numpy()
    return labels, probability


class _ProbabilitiesWrapper(nn.Module):
    def __init__(self, model: SemanticFPN):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.predict_maps(images)


def export_semantic_onnx(model: SemanticFPN, path: str | Path, img_size: int, opset: int = 17) -> Path:
    """Export :meth:`SemanticFPN.predict_maps` to ONNX with a dynamic batch axis.

    Input ``images``: float32 ``[N, 3, img_size, img_size]`` RGB in [0, 1] (the letterboxed image, padding grey
    114). Output ``probabilities``: float32 ``[N, K, img_size, img_size]``, the softmax over ``K`` channels, one per
    class of the model's class names in order and, when the model was trained with ``unlabelled_pixels:
    background``, the background last (a pixel whose most probable channel is it is unlabelled)."""
    if img_size % 32:
        raise ValueError(f"img_size must be a multiple of 32, got {img_size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: no onnxscript needed
            dummy = torch.zeros(1, 3, img_size, img_size, device=device)
            torch.onnx.export(_ProbabilitiesWrapper(model).eval(), (dummy,), str(path), dynamo=False,
                              opset_version=opset, input_names=["images"], output_names=["probabilities"],
                              dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}})
    finally:
        model.train(was_training)
    return path
