"""Pure-PyTorch CenterNet-family detection engine. It knows nothing of YMIR's /in + /out layout or protocol: it
uses only ymir-runner's image decoding (``ymir_runner.decode_image``) and stage metrics (``ymir_runner.evaluation``).

Box convention everywhere: float ``[x1, y1, x2, y2]`` in pixel-edge
coordinates (x2 exclusive, width = x2 - x1); class ids are 0-based.

Modules:
    model      -- detector architecture, size registry, class-head reset, ONNX export
    targets    -- boxes -> heatmap / box-regression targets
    loss       -- focal heatmap loss + GIoU / L1 box loss
    decode     -- peaks -> top-k detections, NMS, letterbox inverse mapping
    augment    -- letterbox, flip, scale/translate jitter, colour jitter, mosaic
    data       -- Dataset (content-sniffed decoding, corrupt-image tolerance), collate, DataLoader
    evaluate   -- COCO metrics via faster-coco-eval, tp/fp/fn at a threshold
    train      -- training loop with callbacks, EMA, time budget, DDP
"""

from .augment import AugmentConfig, LetterboxInfo, letterbox, letterbox_scale
from .data import (
    DetectionDataset,
    NoReadableImageError,
    build_dataloader,
    collate_detection,
    load_image,
    no_readable_image_message,
)
from .decode import Detections, batched_nms, boxes_to_original, decode_maps, nms, predict_batch
from .evaluate import EvaluationResult, evaluate_detections, evaluate_model
from .model import (
    MODEL_SPECS,
    CenterNetDetector,
    ModelSpec,
    available_model_sizes,
    build_model,
    build_model_from_config,
    export_onnx,
    load_backbone_weights,
    reset_class_head,
    set_box_size_prior,
)
from .targets import TargetConfig, encode_targets
from .train import NonFiniteLossError, TrainResult, train

__all__ = [
    "AugmentConfig",
    "CenterNetDetector",
    "DetectionDataset",
    "Detections",
    "EvaluationResult",
    "LetterboxInfo",
    "MODEL_SPECS",
    "ModelSpec",
    "NoReadableImageError",
    "NonFiniteLossError",
    "TargetConfig",
    "TrainResult",
    "available_model_sizes",
    "batched_nms",
    "boxes_to_original",
    "build_dataloader",
    "build_model",
    "build_model_from_config",
    "collate_detection",
    "decode_maps",
    "encode_targets",
    "evaluate_detections",
    "evaluate_model",
    "export_onnx",
    "letterbox",
    "letterbox_scale",
    "load_backbone_weights",
    "load_image",
    "nms",
    "no_readable_image_message",
    "predict_batch",
    "reset_class_head",
    "set_box_size_prior",
    "train",
]
