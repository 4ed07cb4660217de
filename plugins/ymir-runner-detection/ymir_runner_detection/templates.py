"""Hyper-parameter templates of the detection executor, per task (no torch here: the CLI lists them).

Keys shared by the mining and infer templates mean the same in both: YMIR merges them into one config
when a task runs mining and inference together.
"""

from __future__ import annotations

import types
from typing import Any, Mapping, Sequence

from ymir_runner import Param, TaskKind

MODEL_SIZES = ("nano", "small", "medium", "resnet18", "resnet34")

# What ``auto`` chooses for the keys that take it (a number written instead is exactly what runs; the log says what
# auto chose and why). The help texts below quote these numbers.
#: ``epochs: auto`` trains this many epochs, or more on a small set so that the run has ``min_steps`` steps.
AUTO_EPOCHS = 30
#: ``warmup_epochs: auto`` warms up for this many epochs, kept between ``AUTO_WARMUP_SHARE`` of the run.
AUTO_WARMUP_EPOCHS = 1.0
AUTO_WARMUP_SHARE = (0.05, 0.2)
#: ``num_workers_per_gpu: auto`` asks for this many DataLoader workers per process, capped so that workers and
#: compute threads never share a CPU (``ymir_runner.cpus.share_cpus``).
AUTO_WORKERS = 2

# The legal values of every number below are declared on its Param and checked by the core before the task starts
# (300001 naming the key, the value and the legal values). Upper bounds of the numbers that size memory or time
# refuse a value instead of running out of memory with a message naming neither.
#: The network's output stride: an input size is a multiple of it.
STRIDE = 32
#: A batch's memory grows with the square of the input size: 2048 px is 41 times the pixels of the default 320.
MAX_IMG_SIZE = 2048
#: Every image of a batch, and its activations, is in memory at once.
MAX_BATCH = 512
#: Each DataLoader worker is a process of its own, decoding images at once with the others.
MAX_WORKERS = 64
#: A run must end: 10,000 epochs is over 300 times auto's 30.
MAX_EPOCHS = 10_000
#: The decoder holds this many boxes per image.
MAX_DETECTIONS = 10_000
#: numpy's and torch's random generators take seeds of 32 bits.
MAX_SEED = 2**32 - 1

_SHARED_RUNTIME = (
    Param("batch_size_per_gpu", 16,
          "images per step on each GPU (or on the CPU); bounded because every image of a batch and its "
          "activations are in memory at once", minimum=1, maximum=MAX_BATCH),
    Param("num_workers_per_gpu", Param.AUTO,
          f"training: DataLoader worker processes per GPU (0: load in the main process). auto: {AUTO_WORKERS}, fewer "
          "when workers and compute threads would share the CPUs the task may use (cgroup quota and affinity): none "
          "on a 2-CPU machine without a GPU (logged); a number is exactly what runs (a warning when it "
          "oversubscribes the CPUs). Mining and inference: the threads that decode and letterbox the next batches "
          "while the model works (0: none ahead; auto: one fewer than the task's CPUs, at most 8); bounded",
          auto=int, minimum=0, maximum=MAX_WORKERS),
)

TRAINING = (
    Param("model", "nano",
          "model size: nano (CPU-friendly), small, medium (GPU); resnet18, resnet34: torchvision's ResNet as the "
          "backbone, for starts from ImageNet weights (pretrained_backbone)", choices=MODEL_SIZES),
    Param("pretrained_backbone", "",
          "ImageNet weights for model resnet18/resnet34 in torchvision's state_dict layout: a .pth file (e.g. "
          "resnet18-f37072fd.pth) or a folder holding <model>-*.pth, such as one baked into the image; nothing is "
          "downloaded. Not used when pretrained_model_params names a model of this plugin"),
    Param("img_size", 320,
          f"input size: images are letterboxed to img_size x img_size, a multiple of the network's stride "
          f"{STRIDE}; bounded: a batch's memory grows with its square", minimum=STRIDE, maximum=MAX_IMG_SIZE,
          multiple_of=STRIDE),
    Param("epochs", Param.AUTO,
          f"passes over the training set; every image is seen once per epoch. A number is exactly the epochs "
          f"trained. auto: {AUTO_EPOCHS}, or more on a small set so that the run has at least min_steps optimizer "
          f"steps (the log says what auto chose and why); bounded: a run must end", auto=int, minimum=1,
          maximum=MAX_EPOCHS),
    Param("min_steps", 600,
          f"with epochs: auto, the fewest optimizer steps of a run: a small training set trains more than "
          f"{AUTO_EPOCHS} epochs to reach it. Not used when epochs is a number", minimum=0, maximum=1_000_000),
    *_SHARED_RUNTIME,
    Param("learning_rate", 0.006,
          "peak learning rate after warm-up (cosine decay to 2% of it); at most 1: beyond, the loss diverges",
          exclusive_minimum=0.0, maximum=1.0),
    Param("optimizer", "adamw", "adamw or sgd (momentum 0.9, nesterov)", choices=("adamw", "sgd")),
    Param("weight_decay", 0.05, "weight decay (decoupled for adamw), not applied to biases and norms",
          minimum=0.0, maximum=1.0),
    Param("warmup_epochs", Param.AUTO,
          f"linear learning-rate warm-up in epochs; a number is exactly what runs. auto: {AUTO_WARMUP_EPOCHS:g} "
          f"epoch, kept between {AUTO_WARMUP_SHARE[0]:.0%} and {AUTO_WARMUP_SHARE[1]:.0%} of the run (logged)",
          auto=float, minimum=0.0, maximum=MAX_EPOCHS),
    Param("seed", 0, "random seed of initialisation, sampling and augmentation (32 bits)", minimum=0,
          maximum=MAX_SEED),
    Param("flip", True, "random horizontal flips"),
    Param("mosaic", 0.0,
          "probability of a 4-image mosaic per sample, each image at its own scale (0: off; on dense small-object "
          "photos and on generated shapes it measured worse than off)", minimum=0.0, maximum=1.0),
    Param("export_onnx", True, "also write an ONNX export of every stage"),
)

_INFERENCE = (
    Param("img_size", 0,
          f"input size, a multiple of the network's stride {STRIDE}; 0 uses the size the model was trained with",
          minimum=0, maximum=MAX_IMG_SIZE, multiple_of=STRIDE),
    *_SHARED_RUNTIME,
)

INFER = (
    *_INFERENCE,
    Param("conf_threshold", 0.0,
          "minimum score of a reported box; 0 uses the model's F1-optimal threshold on its validation set "
          "(0.25 for a model that has none); a small value such as 0.001 reports nearly every box", minimum=0.0,
          maximum=1.0),
    Param("iou_threshold", 0.6, "class-aware NMS IoU threshold applied after peak extraction",
          exclusive_minimum=0.0, maximum=1.0),
    Param("max_detections", 100, "most boxes reported per image", minimum=1,
          maximum=MAX_DETECTIONS),
)

#: The core adds mining_algorithm, class_distribution_scores and seed (ymir_runner.mining) to this template.
MINING = _INFERENCE
#: The ymir_runner.mining algorithms this executor supports, its default first.
MINING_ALGORITHMS = ("aldd", "entropy", "cald", "random")

TEMPLATES = {TaskKind.TRAINING: TRAINING, TaskKind.INFER: INFER, TaskKind.MINING: MINING}


# --- semantic segmentation (object type 3): the executor beside the detector, on the same backbone and neck ------

#: The semantic segmentation executor's recipe where it differs from the detector's: the prototype of issue 28
#: (Semantic FPN on nano, 240 generated 160 px scenes, 2 CPUs) trained with AdamW at 3e-3 and batch 8.
SEMANTIC_LEARNING_RATE = 0.003
SEMANTIC_BATCH = 8
#: ``epochs: auto`` of the semantic executor trains at least this many optimizer steps: on the issue's 240 scenes
#: (30 steps an epoch at batch 8) that is 40 epochs instead of 30. Measured on the plain generated scene (240 / 60
#: at 160 px, 1 CPU): 600 steps of cross-entropy reached mIoU 0.47 and 1200 steps 0.94 (engine alone); the whole task
#: with this recipe reached val mIoU 0.945 / 0.808 / 0.945 (seeds 0-2) in 265-281 CPU s on one core of a busy 2-core
#: VM (experiments/README.md, 2026-12-07).
SEMANTIC_MIN_STEPS = 1200
#: The semantic model trains without the detector's weight average (``engine.train.EMA_DECAY``, a 500-step memory):
#: on the plain scene at 1200 steps the engine reached mIoU 0.940 without it and 0.903 with it, and with it the
#: run's first stages lag the weights by hundreds of steps. Not a template key.
SEMANTIC_EMA_DECAY = None
#: Weight of the soft Dice loss beside the cross-entropy (``engine.semantic.SemanticLoss``): it scores each class's
#: overlap as mIoU does, whatever the class's pixel count; measured through the whole task on the plain scene,
#: seed 0, val mIoU 0.700 against 0.332 with cross-entropy alone after 360 of 1200 steps (experiments/README.md,
#: 2026-12-07). Not a template key.
SEMANTIC_DICE_WEIGHT = 1.0
UNLABELLED_PIXELS = ("background", "ignore")

_DETECTION_KEYS = {param.name: param for param in (*TRAINING, *_SHARED_RUNTIME)}

SEMANTIC_TRAINING = (
    *(_DETECTION_KEYS[name] for name in ("model", "pretrained_backbone", "img_size", "epochs")),
    Param("min_steps", SEMANTIC_MIN_STEPS,
          f"with epochs: auto, the fewest optimizer steps of a run: a small training set trains more than "
          f"{AUTO_EPOCHS} epochs to reach it (the semantic model learns slowly at first: on generated scenes 600 steps "
          f"reached half the mIoU of 1200). Not used when epochs is a number", minimum=0, maximum=1_000_000),
    Param("batch_size_per_gpu", SEMANTIC_BATCH, _DETECTION_KEYS["batch_size_per_gpu"].help, minimum=1,
          maximum=MAX_BATCH),
    _DETECTION_KEYS["num_workers_per_gpu"],
    Param("learning_rate", SEMANTIC_LEARNING_RATE,
          "peak learning rate after warm-up (cosine decay to 2% of it); at most 1: beyond, the loss diverges",
          exclusive_minimum=0.0, maximum=1.0),
    *(_DETECTION_KEYS[name] for name in ("optimizer", "weight_decay", "warmup_epochs", "seed", "flip")),
    Param("unlabelled_pixels", "background",
          "pixels no object covers: background trains them as an implicit background class (the model predicts "
          "'no class' there, left out of the label maps it writes); ignore leaves them out of the loss (every pixel "
          "is then predicted as some class: for datasets whose labels cover only part of each image)",
          choices=UNLABELLED_PIXELS),
    _DETECTION_KEYS["export_onnx"],
)

#: Inference of the semantic executor: the detector's input keys alone (every pixel gets a label: no score
#: threshold, no box count).
SEMANTIC_INFER = _INFERENCE
#: The core adds mining_algorithm, class_distribution_scores and seed (ymir_runner.mining) to this template.
SEMANTIC_MINING = _INFERENCE
#: The ymir_runner.mining algorithms of the semantic executor, its default first: pixel entropy (one forward pass
#: per image), ALDD (the image's and its mirror's maps), random. cald needs boxes (not defined for object type 3).
SEMANTIC_MINING_ALGORITHMS = ("entropy", "aldd", "random")

SEMANTIC_TEMPLATES = {TaskKind.TRAINING: SEMANTIC_TRAINING, TaskKind.INFER: SEMANTIC_INFER,
                      TaskKind.MINING: SEMANTIC_MINING}


def _defaults(params: Sequence[Param]) -> Mapping[str, Any]:
    return types.MappingProxyType({param.name: param.default for param in params})


#: ``key -> default`` of the training template: the one home of the training recipe (learning rate, optimizer,
#: weight decay, model size, batch size, mosaic, ...). The engine's functions take these values as arguments
#: without defaults; the demo, the experiments and the benchmarks read them here.
TRAINING_DEFAULTS = _defaults(TRAINING)
#: ``key -> default`` of the infer template (mining's ``predict`` keeps boxes by the same NMS and top-k).
INFER_DEFAULTS = _defaults(INFER)
#: ``key -> default`` of the semantic segmentation executor's training template.
SEMANTIC_TRAINING_DEFAULTS = _defaults(SEMANTIC_TRAINING)
