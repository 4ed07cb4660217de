"""Anchor-free single-stage detector of the CenterNet ("Objects as Points") family.

Architecture: a CSP-style conv-BN-SiLU backbone (strides 2..32, SPPF at the top),
an FPN top-down neck fused down to one output map (stride 4 or 8), and two heads
on that map:

* heatmap head: ``num_classes`` channels, logits of per-class object centres
  (sigmoid, bias initialised to -2.19 so that the initial probability is 0.1);
* box head: 4 channels whose meaning depends on ``box_mode``:

  - ``"ltrb_log"`` (default): distances from the cell centre to the
    left/top/right/bottom box edges, ``exp(raw) * stride`` pixels (FCOS's
    parametrisation, Tian et al. 2019). The sub-pixel offset is implicit: the
    box is anchored at the cell centre and its edges are regressed directly.
    A step of the raw value changes a distance by a factor, so 15 px and
    120 px objects learn their size at the same pace.
  - ``"ltrb"`` (TTFNet style, models before 0.3): the same distances as
    ``softplus(raw) * stride``. Linear in the raw value, a large object's edges
    move a few pixels per step and short runs predict every box near the mean
    size: on objects of 15-120 px after 300 steps, 74 % / 85 % / 95 % of the
    small / medium / large objects were found at IoU > 0.5, against
    97 % / 100 % / 100 % with ``ltrb_log`` (``tests/engine/test_box_scales.py``).
  - ``"wh_offset"`` (classic CenterNet): ``(off_x, off_y, log_w, log_h)``, the
    sub-pixel centre offset in cells and the log box size in cells.

Input: float32 RGB in ``[0, 1]``, NCHW, height and width multiples of 32.

``forward`` returns the raw head maps (for the loss); ``predict_maps`` returns
decoded-friendly maps: per-class scores after sigmoid and, for every cell, the
box it predicts as ``x1, y1, x2, y2`` in input pixels. ``export_onnx`` exports
``predict_maps`` (outputs ``scores [B,C,H,W]`` and ``boxes [B,4,H,W]``); peak
extraction / top-k (see ``decode.py``) stays outside the graph.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

BOX_MODES = ("ltrb", "ltrb_log", "wh_offset")
#: Box modes that regress the four edge distances of every cell near an object's centre (GIoU loss).
EDGE_MODES = ("ltrb", "ltrb_log")
#: ``ltrb_log`` clamps the raw distance at this value: exp(8) * stride is far beyond any input.
LOG_DISTANCE_MAX = 8.0
HEATMAP_PRIOR_PROBABILITY = 0.1
HEATMAP_BIAS_INIT = -math.log((1.0 - HEATMAP_PRIOR_PROBABILITY) / HEATMAP_PRIOR_PROBABILITY)  # -2.197


@dataclass(frozen=True)
class ModelSpec:
    """Architecture hyper-parameters of one model size."""

    widths: tuple[int, int, int, int, int]  # channels at strides 2, 4, 8, 16, 32
    depths: tuple[int, int, int, int]  # residual blocks in the stride 4, 8, 16, 32 stages
    neck_width: int
    head_width: int
    output_stride: int = 4
    depthwise: bool = False  # depthwise-separable 3x3 convs in blocks, neck and heads
    box_mode: str = "ltrb_log"
    #: ``"csp"`` (this module's, from scratch) or ``"resnet"`` (torchvision's ResNet layout, ``depths`` blocks
    #: per stage: ImageNet weights load into it, see :func:`load_backbone_weights`).
    backbone: str = "csp"


MODEL_SPECS: dict[str, ModelSpec] = {
    # CPU-friendly (the training template's default); stride 8 measured far better than 4 in a fixed CPU
    # budget (0.94 vs 0.65 mAP50).
    "nano": ModelSpec(widths=(16, 32, 64, 96, 128), depths=(1, 1, 2, 1), neck_width=48, head_width=48,
                      output_stride=8),
    "small": ModelSpec(widths=(32, 64, 128, 192, 256), depths=(1, 2, 3, 1), neck_width=96, head_width=96),
    "medium": ModelSpec(widths=(48, 96, 192, 384, 512), depths=(2, 3, 4, 2), neck_width=128, head_width=128),
    # torchvision's resnet18 / resnet34 as the backbone (11.2 M / 21.3 M parameters without fc), for starts from
    # ImageNet weights (config key 'pretrained_backbone').
    "resnet18": ModelSpec(widths=(64, 64, 128, 256, 512), depths=(2, 2, 2, 2), neck_width=96, head_width=96,
                          output_stride=8, backbone="resnet"),
    "resnet34": ModelSpec(widths=(64, 64, 128, 256, 512), depths=(3, 4, 6, 3), neck_width=96, head_width=96,
                          output_stride=8, backbone="resnet"),
}
BACKBONES = ("csp", "resnet")
#: ImageNet statistics the torchvision weights were trained with (RGB in [0, 1]); the resnet backbone
#: normalises its input with them inside the network, so callers and the ONNX export keep [0, 1] inputs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm -> SiLU."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
            nn.SiLU(inplace=True) if act else nn.Identity(),
        )


def conv3x3(c_in: int, c_out: int, stride: int = 1, depthwise: bool = False) -> nn.Module:
    """A 3x3 conv block, optionally depthwise-separable (dw 3x3 + pointwise 1x1)."""
    if not depthwise:
        return ConvBNAct(c_in, c_out, 3, stride)
    return nn.Sequential(ConvBNAct(c_in, c_in, 3, stride, groups=c_in), ConvBNAct(c_in, c_out, 1))


class ResidualBlock(nn.Module):
    """1x1 -> 3x3 bottleneck with identity shortcut."""

    def __init__(self, channels: int, depthwise: bool):
        super().__init__()
        self.body = nn.Sequential(ConvBNAct(channels, channels, 1), conv3x3(channels, channels, depthwise=depthwise))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class CSPStage(nn.Module):
    """Stride-2 downsample followed by a cross-stage-partial block.

    Half of the channels go through ``depth`` residual blocks, the other half
    bypasses them; concatenation + 1x1 fuses both (cheap, good gradient flow).
    """

    def __init__(self, c_in: int, c_out: int, depth: int, depthwise: bool):
        super().__init__()
        hidden = c_out // 2
        self.down = conv3x3(c_in, c_out, stride=2, depthwise=depthwise)
        self.split_main = ConvBNAct(c_out, hidden, 1)
        self.split_bypass = ConvBNAct(c_out, hidden, 1)
        self.blocks = nn.Sequential(*(ResidualBlock(hidden, depthwise) for _ in range(depth)))
        self.fuse = ConvBNAct(2 * hidden, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return self.fuse(torch.cat([self.blocks(self.split_main(x)), self.split_bypass(x)], dim=1))


class SPPF(nn.Module):
    """Spatial pyramid pooling (fast): enlarges the receptive field at stride 32."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = channels // 2
        self.reduce = ConvBNAct(channels, hidden, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.fuse = ConvBNAct(4 * hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        p1 = self.pool(x)
        p2 = self.pool(p1)
        return self.fuse(torch.cat([x, p1, p2, self.pool(p2)], dim=1))


class Backbone(nn.Module):
    """Returns feature maps at strides 4, 8, 16, 32."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        w = spec.widths
        self.stem = ConvBNAct(3, w[0], 3, 2)
        self.stages = nn.ModuleList(
            CSPStage(w[i], w[i + 1], spec.depths[i], spec.depthwise) for i in range(4)
        )
        self.sppf = SPPF(w[4])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        features[-1] = self.sppf(features[-1])
        return features


class BasicBlock(nn.Module):
    """ResNet's basic block (He et al., "Deep Residual Learning for Image Recognition", 2016) with torchvision's
    attribute names: ``conv1``, ``bn1``, ``conv2``, ``bn2`` and ``downsample`` (1x1 conv + BN) when the shape
    changes."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNetBackbone(nn.Module):
    """ResNet-18/34 up to ``layer4`` (no pooling, no ``fc``), state_dict keys as torchvision's ``resnet18`` /
    ``resnet34`` (``conv1.weight``, ``bn1.*``, ``layer1.0.conv1.weight``, ..., ``layer4.1.downsample.0.weight``),
    so torchvision's published ImageNet weights load into it. Input: RGB in [0, 1], normalised here with the
    ImageNet mean and std. Returns feature maps at strides 4, 8, 16, 32 with 64, 128, 256, 512 channels."""

    def __init__(self, depths: tuple[int, int, int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = (64, 64, 128, 256, 512)
        for index, depth in enumerate(depths):
            blocks = [BasicBlock(widths[index], widths[index + 1], 1 if index == 0 else 2)]
            blocks += [BasicBlock(widths[index + 1], widths[index + 1], 1) for _ in range(depth - 1)]
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1((x - self.mean) / self.std))))
        features = []
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            features.append(x)
        return features


class FPNNeck(nn.Module):
    """Top-down FPN that fuses strides 32..output_stride into one map."""

    def __init__(self, in_channels: tuple[int, int, int, int], width: int, output_stride: int, depthwise: bool):
        super().__init__()
        if output_stride not in (4, 8):
            raise ValueError(f"output_stride must be 4 or 8, got {output_stride}")
        # Levels used, from coarsest (stride 32) down to the output stride.
        self.num_levels = 4 if output_stride == 4 else 3
        used = in_channels[4 - self.num_levels:][::-1]
        self.laterals = nn.ModuleList(ConvBNAct(c, width, 1) for c in used)
        self.smooths = nn.ModuleList(conv3x3(width, width, depthwise=depthwise) for _ in used[1:])

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        coarse_to_fine = features[4 - self.num_levels:][::-1]
        x = self.laterals[0](coarse_to_fine[0])
        for lateral, smooth, feature in zip(self.laterals[1:], self.smooths, coarse_to_fine[1:]):
            x = smooth(F.interpolate(x, scale_factor=2.0, mode="nearest") + lateral(feature))
        return x


class Head(nn.Module):
    """3x3 conv block followed by a 1x1 prediction conv."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, depthwise: bool):
        super().__init__()
        self.body = conv3x3(c_in, c_mid, depthwise=depthwise)
        self.predict = nn.Conv2d(c_mid, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict(self.body(x))


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    """The bias of a prediction conv (built with one)."""
    if conv.bias is None:
        raise ValueError("the prediction conv has no bias")
    return conv.bias


def cell_centers(height: int, width: int, stride: int, device: torch.device, dtype: torch.dtype):
    """Pixel coordinates of the cell centres of an output map, shapes [1, 1, W] and [1, H, 1]."""
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) * stride
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) * stride
    return xs.view(1, 1, width), ys.view(1, height, 1)


def raw_to_boxes(box_raw: torch.Tensor, stride: int, box_mode: str) -> torch.Tensor:
    """Convert the raw box head map [B,4,H,W] into per-cell boxes x1,y1,x2,y2 in input pixels."""
    _, _, height, width = box_raw.shape
    cx, cy = cell_centers(height, width, stride, box_raw.device, box_raw.dtype)
    if box_mode in EDGE_MODES:
        if box_mode == "ltrb":
            dist = F.softplus(box_raw) * stride
        else:
            dist = torch.exp(box_raw.clamp(max=LOG_DISTANCE_MAX)) * stride
        return torch.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], dim=1)
    if box_mode == "wh_offset":
        # Offsets are relative to the cell's top-left corner (cx - stride/2).
        center_x = cx + (box_raw[:, 0] - 0.5) * stride
        center_y = cy + (box_raw[:, 1] - 0.5) * stride
        half_w = torch.exp(box_raw[:, 2].clamp(-6.0, 8.0)) * (stride / 2)
        half_h = torch.exp(box_raw[:, 3].clamp(-6.0, 8.0)) * (stride / 2)
        return torch.stack([center_x - half_w, center_y - half_h, center_x + half_w, center_y + half_h], dim=1)
    raise ValueError(f"unknown box_mode {box_mode!r}, expected one of {BOX_MODES}")


class CenterNetDetector(nn.Module):
    """CenterNet-style detector; see the module docstring for inputs/outputs."""

    def __init__(self, spec: ModelSpec, num_classes: int, size_name: str = "custom"):
        super().__init__()
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        if spec.box_mode not in BOX_MODES:
            raise ValueError(f"unknown box_mode {spec.box_mode!r}, expected one of {BOX_MODES}")
        if spec.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {spec.backbone!r}, expected one of {BACKBONES}")
        self.spec = spec
        self.size_name = size_name
        self.num_classes = num_classes
        self.stride = spec.output_stride
        self.box_mode = spec.box_mode
        self.backbone: nn.Module = ResNetBackbone(spec.depths) if spec.backbone == "resnet" else Backbone(spec)
        self.neck = FPNNeck(spec.widths[1:], spec.neck_width, spec.output_stride, spec.depthwise)
        self.heatmap_head = Head(spec.neck_width, spec.head_width, num_classes, spec.depthwise)
        self.box_head = Head(spec.neck_width, spec.head_width, 4, spec.depthwise)
        self._init_prediction_layers()

    def _init_prediction_layers(self) -> None:
        nn.init.normal_(self.heatmap_head.predict.weight, std=0.01)
        nn.init.constant_(_bias(self.heatmap_head.predict), HEATMAP_BIAS_INIT)
        nn.init.normal_(self.box_head.predict.weight, std=0.01)
        nn.init.zeros_(_bias(self.box_head.predict))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw head maps: ``heatmap_logits [B,C,H,W]`` and ``box_raw [B,4,H,W]``."""
        fused = self.neck(self.backbone(images))
        return {"heatmap_logits": self.heatmap_head(fused), "box_raw": self.box_head(fused)}

    def predict_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded-friendly maps: ``scores [B,C,H,W]`` in [0,1] and ``boxes [B,4,H,W]`` (x1,y1,x2,y2 pixels)."""
        raw = self.forward(images)
        return torch.sigmoid(raw["heatmap_logits"]), raw_to_boxes(raw["box_raw"], self.stride, self.box_mode)

    def config(self) -> dict:
        """JSON-serialisable description sufficient to rebuild the architecture."""
        return {"size": self.size_name, "num_classes": self.num_classes, "spec": self.spec.__dict__.copy()}


def available_model_sizes() -> list[str]:
    """Names accepted by :func:`build_model`."""
    return list(MODEL_SPECS)


def build_model(size: str, num_classes: int = 1, **spec_overrides) -> CenterNetDetector:
    """Build a detector by registry name; ``spec_overrides`` replace fields of the :class:`ModelSpec`."""
    if size not in MODEL_SPECS:
        raise ValueError(f"unknown model size {size!r}, available: {available_model_sizes()}")
    spec = replace(MODEL_SPECS[size], **spec_overrides) if spec_overrides else MODEL_SPECS[size]
    return CenterNetDetector(spec, num_classes, size_name=size)


def build_model_from_config(config: dict) -> CenterNetDetector:
    """Inverse of :meth:`CenterNetDetector.config`."""
    spec_fields = dict(config["spec"])
    for key in ("widths", "depths"):
        spec_fields[key] = tuple(spec_fields[key])
    return CenterNetDetector(ModelSpec(**spec_fields), config["num_classes"], size_name=config.get("size", "custom"))


def set_box_size_prior(model: CenterNetDetector, box_sizes: Any) -> tuple[float, float] | None:
    """Start every cell of the box head at the training set's typical box size (a data prior); returns that
    size ``(width, height)`` in input pixels, or None (model unchanged) when there is no box.

    ``box_sizes``: ``[N, 2]`` box widths and heights in NETWORK-INPUT pixels (after the letterbox scale). The
    typical size is their geometric mean per axis; the box head's output bias is set so that, before training,
    the raw output decodes to it: ``ltrb_log`` edge distances ``log(size / 2 / stride)``, ``ltrb``
    ``softplus^-1(size / 2 / stride)``, ``wh_offset`` log size in cells. The prediction weights are left alone.

    Why: with the bias at 0 every cell starts at a 2-stride (16 px) box, the large objects pull the shared head a
    long way up, and short runs ended with the small objects' boxes too large and the large ones' too small. On 48
    images with 1-4 shapes of 15-120 px, 300 steps from scratch at the template's lr 0.006, 1 thread
    (``tests/engine/test_box_scales.py``), objects found at IoU > 0.5, small / medium / large, went from
    23-32 % / 84-89 % / 87-95 % (small boxes x1.44-1.48) to 97-100 % / 100 % / 100 % (x0.97-1.02) over seeds
    0-2, and the final training loss from 3.7-4.3 to 1.3-2.1. The same idea as YOLOv2's dimension clusters and
    YOLOv5's AutoAnchor, which fit the anchor sizes to the training boxes (Redmon & Farhadi 2017), for an
    anchor-free head.
    """
    sizes = np.asarray(box_sizes, dtype=np.float64).reshape(-1, 2)
    sizes = sizes[(sizes > 0).all(axis=1)]
    if not len(sizes):
        return None
    width, height = np.exp(np.log(np.maximum(sizes, 1.0)).mean(axis=0))
    cells = np.array([width, height, width, height]) / model.stride  # (w, h, w, h) in cells
    if model.box_mode == "ltrb_log":
        bias = np.log(cells / 2.0)
    elif model.box_mode == "ltrb":
        bias = np.log(np.expm1(np.maximum(cells / 2.0, 1e-3)))  # softplus^-1
    else:  # wh_offset: offsets 0 (as initialised), then log width and height in cells
        bias = np.array([0.0, 0.0, np.log(cells[0]), np.log(cells[1])])
    with torch.no_grad():
        target = _bias(model.box_head.predict)
        target.copy_(torch.as_tensor(bias, dtype=target.dtype))
    return float(width), float(height)


def reset_class_head(model: CenterNetDetector, num_classes: int) -> CenterNetDetector:
    """Replace the heatmap (class) head for a new class count, keeping every other weight.

    Used when fine-tuning a trained model on a dataset with a different class
    list: the backbone, neck and the class-agnostic box head are reused.
    """
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1")
    spec = model.spec
    device = next(model.parameters()).device
    model.heatmap_head = Head(spec.neck_width, spec.head_width, num_classes, spec.depthwise).to(device)
    nn.init.normal_(model.heatmap_head.predict.weight, std=0.01)
    nn.init.constant_(_bias(model.heatmap_head.predict), HEATMAP_BIAS_INIT)
    model.num_classes = num_classes
    return model


class _PredictMapsWrapper(nn.Module):
    def __init__(self, model: CenterNetDetector):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.predict_maps(images)


def export_onnx(model: CenterNetDetector, path: str | Path, img_size: int, opset: int = 17) -> Path:
    """Export ``predict_maps`` to ONNX with a dynamic batch axis.

    Input ``images``: float32 ``[N, 3, img_size, img_size]`` RGB in [0, 1].
    Outputs ``scores`` ``[N, C, img_size/stride, img_size/stride]`` (sigmoid
    probabilities) and ``boxes`` ``[N, 4, H, W]`` (x1, y1, x2, y2 in input pixels).
    """
    if img_size % 32:
        raise ValueError(f"img_size must be a multiple of 32, got {img_size}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _PredictMapsWrapper(model).eval()
    device = next(model.parameters()).device
    dummy = torch.zeros(1, 3, img_size, img_size, device=device)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript-based exporter is deprecated but needs no extra
            # dependency (the dynamo exporter requires onnxscript).
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapper,
                (dummy,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=["images"],
                output_names=["scores", "boxes"],
                dynamic_axes={"images": {0: "batch"}, "scores": {0: "batch"}, "boxes": {0: "batch"}},
            )
    finally:
        model.train(was_training)
    return path


def load_backbone_weights(model: CenterNetDetector, state_dict: dict[str, torch.Tensor]) -> int:
    """Load ImageNet weights of torchvision's layout (``torchvision.models.resnet18(weights=...).state_dict()``,
    as published, e.g. ``resnet18-f37072fd.pth``) into a ``resnet`` model's backbone; ``fc.*`` is dropped and a
    ``module.`` prefix (DataParallel) removed. Returns how many tensors were loaded.

    Raises ValueError naming the first missing, unexpected or mis-shaped keys: weights of another architecture
    (a resnet50, a model for another depth) never load partially.
    """
    if model.spec.backbone != "resnet":
        raise ValueError(f"model {model.size_name!r} has no ResNet backbone; ImageNet weights need resnet18 or "
                         "resnet34")
    weights = {key.removeprefix("module."): value for key, value in state_dict.items()}
    weights = {key: value for key, value in weights.items() if not key.startswith("fc.")}
    own = model.backbone.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = sorted(key for key in set(own) & set(weights) if tuple(own[key].shape) != tuple(weights[key].shape))
    if missing or unexpected or shapes:
        problems = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
                    for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", shapes))
                    if keys]
        raise ValueError(f"not {model.size_name} weights of torchvision's layout ({'; '.join(problems)})")
    model.backbone.load_state_dict(weights)
    return len(weights)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
