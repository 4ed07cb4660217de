"""Hyper-parameter templates of the detection executor, per task (no torch here: the CLI lists them).

Keys shared by the mining and infer templates mean the same in both: YMIR merges them into one config
when a task runs mining and inference together.
"""

from __future__ import annotations

import types
from typing import Any, Mapping, Sequence

from ymir_runner import Param, TaskKind

MODEL_SIZES = ("nano", "small", "medium", "resnet18", "resnet34")

_SHARED_RUNTIME = (
    Param("batch_size_per_gpu", 16, "images per step on each GPU (or on the CPU)"),
    Param("num_workers_per_gpu", 2,
          "DataLoader worker processes per GPU (0: load in the main process); capped so that workers and compute "
          "threads do not share the CPUs available to the task (cgroup quota and affinity)"),
)

TRAINING = (
    Param("model", "nano",
          "model size: nano (CPU-friendly), small, medium (GPU); resnet18, resnet34: torchvision's ResNet as the "
          "backbone, for starts from ImageNet weights (pretrained_backbone)", choices=MODEL_SIZES),
    Param("pretrained_backbone", "",
          "ImageNet weights for model resnet18/resnet34 in torchvision's state_dict layout: a .pth file (e.g. "
          "resnet18-f37072fd.pth) or a folder holding <model>-*.pth, such as one baked into the image; nothing is "
          "downloaded. Not used when pretrained_model_params names a model of this plugin"),
    Param("img_size", 320, "input size: images are letterboxed to img_size x img_size (a multiple of 32)"),
    Param("epochs", 30, "passes over the training set; every image is seen once per epoch"),
    Param("min_steps", 600,
          "fewest optimizer steps of a run: on a small training set, epochs are raised to reach it (the log says "
          "so); 0 trains exactly 'epochs'"),
    *_SHARED_RUNTIME,
    Param("learning_rate", 0.006, "peak learning rate after warm-up (cosine decay to 2% of it)"),
    Param("optimizer", "adamw", "adamw or sgd (momentum 0.9, nesterov)", choices=("adamw", "sgd")),
    Param("weight_decay", 0.05, "weight decay (decoupled for adamw), not applied to biases and norms"),
    Param("warmup_epochs", 1.0, "linear learning-rate warm-up in epochs, kept between 5% and 20% of the run"),
    Param("save_period", 0,
          "evaluate on the validation set and write a model stage every N epochs; 0: 10 stages evenly spaced "
          "over the run. The last epoch is always a stage"),
    Param("seed", 0, "random seed of initialisation, sampling and augmentation"),
    Param("flip", True, "random horizontal flips"),
    Param("mosaic", 0.0,
          "probability of a 4-image mosaic per sample, each image at its own scale (0: off; on dense small-object "
          "photos and on generated shapes it measured worse than off)"),
    Param("conf_threshold", 0.0,
          "score above which a prediction counts for a stage's tp/fp/fn; 0: each stage's F1-optimal threshold on "
          "the validation set (stored in the model: inference uses it by default)"),
    Param("map_iou_threshold", 0.5,
          "IoU at which a prediction matches an object for a stage's mAP, mAR and tp/fp/fn (result.yaml "
          "evaluate_config.iou_thr: the platform labels mAP with it); COCO mAP50-95 is kept beside it as "
          "mAP50_95"),
    Param("max_detections", 100,
          "most boxes kept per validation image (COCO maxDets); raised automatically to the object count of "
          "the densest validation image"),
    Param("export_onnx", True, "also write an ONNX export of every stage"),
)

_INFERENCE = (
    Param("img_size", 0, "input size; 0 uses the size the model was trained with"),
    *_SHARED_RUNTIME,
)

INFER = (
    *_INFERENCE,
    Param("conf_threshold", 0.0,
          "minimum score of a reported box; 0 uses the model's F1-optimal threshold on its validation set "
          "(0.25 for a model that has none); a small value such as 0.001 reports nearly every box"),
    Param("iou_threshold", 0.6, "class-aware NMS IoU threshold applied after peak extraction"),
    Param("max_detections", 100, "most boxes reported per image"),
)

#: The core adds mining_algorithm, class_distribution_scores and seed (ymir_runner.mining) to this template.
MINING = _INFERENCE
#: The ymir_runner.mining algorithms this executor supports, its default first.
MINING_ALGORITHMS = ("aldd", "entropy", "cald", "random")

TEMPLATES = {TaskKind.TRAINING: TRAINING, TaskKind.INFER: INFER, TaskKind.MINING: MINING}


def _defaults(params: Sequence[Param]) -> Mapping[str, Any]:
    return types.MappingProxyType({param.name: param.default for param in params})


#: ``key -> default`` of the training template: the one home of the training recipe (learning rate, optimizer,
#: weight decay, model size, batch size, mosaic, ...). The engine's functions take these values as arguments
#: without defaults; the demo, the experiments and the benchmarks read them here.
TRAINING_DEFAULTS = _defaults(TRAINING)
#: ``key -> default`` of the infer template (mining's ``predict`` keeps boxes by the same NMS and top-k).
INFER_DEFAULTS = _defaults(INFER)
