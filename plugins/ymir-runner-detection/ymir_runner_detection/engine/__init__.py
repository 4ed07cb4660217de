"""Pure-PyTorch CenterNet-family detection engine. It knows nothing of YMIR's /in + /out layout or protocol: it
uses only ymir-runner's image decoding (``ymir_runner.decode_image``).

Box convention everywhere: float ``[x1, y1, x2, y2]`` in pixel-edge
coordinates (x2 exclusive, width = x2 - x1); class ids are 0-based.

Modules:
    model      -- detector architecture, size registry, class-head reset, ONNX export
    semantic   -- Semantic FPN segmentation model on the same backbone and neck, its cross-entropy loss, label
                  maps in stored pixels
    semantic_data -- Dataset of (image, label map) samples, collate
    targets    -- boxes -> heatmap / box-regression targets
    loss       -- focal heatmap loss + GIoU / L1 box loss
    decode     -- peaks -> top-k detections, NMS, letterbox inverse mapping
    augment    -- letterbox, flip, scale/translate jitter, colour jitter, mosaic
    data       -- Dataset (content-sniffed decoding, corrupt-image tolerance), collate, DataLoader
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
from .decode import batched_nms, boxes_to_original, decode_maps, nms
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
from .semantic import (
    UNLABELLED,
    UNLABELLED_PIXELS,
    SemanticFPN,
    SemanticLoss,
    build_semantic_model,
    build_semantic_model_from_config,
    export_semantic_onnx,
    reuse_weights,
    stored_label_map,
)
from .semantic_data import SemanticDataset, collate_semantic, letterbox_label_map
from .targets import TargetConfig, encode_targets
from .train import NonFiniteLossError, TrainResult, train

__all__ = [
    "AugmentConfig",
    "CenterNetDetector",
    "DetectionDataset",
    "LetterboxInfo",
    "MODEL_SPECS",
    "ModelSpec",
    "NoReadableImageError",
    "NonFiniteLossError",
    "SemanticDataset",
    "SemanticFPN",
    "SemanticLoss",
    "TargetConfig",
    "TrainResult",
    "UNLABELLED",
    "UNLABELLED_PIXELS",
    "available_model_sizes",
    "batched_nms",
    "boxes_to_original",
    "build_dataloader",
    "build_model",
    "build_model_from_config",
    "build_semantic_model",
    "build_semantic_model_from_config",
    "collate_detection",
    "collate_semantic",
    "decode_maps",
    "encode_targets",
    "export_onnx",
    "export_semantic_onnx",
    "letterbox",
    "letterbox_label_map",
    "letterbox_scale",
    "load_backbone_weights",
    "load_image",
    "nms",
    "no_readable_image_message",
    "reset_class_head",
    "reuse_weights",
    "set_box_size_prior",
    "stored_label_map",
    "train",
]
