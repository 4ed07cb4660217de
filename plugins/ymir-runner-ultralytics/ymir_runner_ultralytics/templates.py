"""Hyper-parameter templates of the ultralytics executor, per task (no ultralytics, no torch here: the CLI lists
them).

Keys shared by the mining and infer templates mean the same in both: YMIR merges them into one config when a
task runs mining and inference together.
"""

from __future__ import annotations

import types
from typing import Any, Mapping, Sequence

from ymir_runner import Param, TaskKind

#: The architectures config key ``model`` names (ultralytics' own names; ``<name>.yaml`` is the architecture,
#: ``<name>.pt`` its official COCO weights). YOLO26 is the family of ultralytics 8.4.
FAMILIES = ("yolo26", "yolo11", "yolov8")
SCALES = ("n", "s", "m", "l", "x")
MODEL_NAMES = tuple(family + scale for family in FAMILIES for scale in SCALES)
#: Instance segmentation (object type 4): ultralytics' ``-seg`` models of the same families (``<name>.yaml`` is built
#: from the family's ``-seg`` yaml, ``<name>.pt`` its official COCO weights).
INSTANCE_SUFFIX = "-seg"
INSTANCE_MODEL_NAMES = tuple(name + INSTANCE_SUFFIX for name in MODEL_NAMES)
#: Semantic segmentation (object type 3): ultralytics' ``-sem`` models, YOLO26 only (``yolo26-sem.yaml``; ``<name>.pt``
#: its official Cityscapes weights, 19 classes).
SEMANTIC_SUFFIX = "-sem"
SEMANTIC_MODEL_NAMES = tuple(f"yolo26{scale}{SEMANTIC_SUFFIX}" for scale in SCALES)
#: Config key ``unlabelled_pixels`` of a semantic training: what the pixels of no class (255 in the core's label map)
#: teach the model.
UNLABELLED_CHOICES = ("background", "ignore")
#: Size words, the built-in detector's values of ``model``: a template both executors share (an image with both, its
#: ``plugin`` key switched) works with either's defaults. They name the current family's scales.
SIZE_WORDS = {"nano": "yolo26n", "small": "yolo26s", "medium": "yolo26m", "large": "yolo26l", "xlarge": "yolo26x"}
#: Config key ``optimizer`` (lower case, as the built-in detector's ``adamw`` / ``sgd``) -> ultralytics' name.
OPTIMIZERS = {"auto": "auto", "sgd": "SGD", "adamw": "AdamW", "adam": "Adam", "musgd": "MuSGD"}
#: What ``auto`` means for this template's keys that take it: the word is accepted so that a template shared with the
#: built-in detector (whose default is ``auto``) runs here; this executor's own defaults are numbers. The stage
#: evaluation's keys (``save_period``, ``conf_threshold``, ``map_iou_threshold``, ``max_detections``) are the core's:
#: ``ExecutorSpec(stage_evaluation=True)`` adds them to the training template.
AUTO_VALUES = {"epochs": 100, "num_workers_per_gpu": 4}
# The legal values of every number below are declared on its Param and checked by the core before the task starts
# (300001 naming the key, the value and the legal values). Upper bounds of the numbers that size memory or time (the
# built-in detector's) refuse a value instead of running out of memory.
#: The largest stride of YOLO's detection heads (P5): an input size is a multiple of it.
STRIDE = 32
#: A batch's memory grows with the square of the input size: 2048 px is 10 times the pixels of the default 640.
MAX_IMG_SIZE = 2048
MAX_BATCH = 512
MAX_WORKERS = 64
MAX_EPOCHS = 10_000
MAX_DETECTIONS = 10_000
#: numpy's and torch's random generators take seeds of 32 bits.
MAX_SEED = 2**32 - 1

_SHARED_RUNTIME = (
    Param("batch_size_per_gpu", 16,
          "images per batch on the GPU (or on the CPU); bounded because every image of a batch and its "
          "activations are in memory at once", minimum=1, maximum=MAX_BATCH),
)

TRAINING = (
    Param("model", "yolo26n",
          "the architecture: yolo26n/s/m/l/x (ultralytics 8.4's YOLO26; also nano/small/medium/large/xlarge), "
          "yolo11n..x, yolov8n..x, started from the official weights baked into the image when it has them, else from "
          "scratch; or the path of your own ultralytics .pt. Not used when pretrained_model_params names a model of "
          "this plugin"),
    Param("img_size", 640,
          f"input size: images are letterboxed to img_size x img_size, a multiple of the largest stride {STRIDE}; "
          f"bounded: a batch's memory grows with its square", minimum=STRIDE, maximum=MAX_IMG_SIZE,
          multiple_of=STRIDE),
    Param("epochs", AUTO_VALUES["epochs"],
          f"passes over the training set, exactly as set (auto: {AUTO_VALUES['epochs']}); bounded: a run must end",
          auto=int, minimum=1, maximum=MAX_EPOCHS),
    *_SHARED_RUNTIME,
    Param("num_workers_per_gpu", AUTO_VALUES["num_workers_per_gpu"],
          f"DataLoader worker processes on a GPU (auto: {AUTO_VALUES['num_workers_per_gpu']}); on the CPU ultralytics "
          f"loads in the training process whatever the value (logged); bounded: each is a process of its "
          f"own", auto=int, minimum=0, maximum=MAX_WORKERS),
    Param("optimizer", "auto",
          "ultralytics' optimizer: auto (AdamW or MuSGD, with its own learning rate by run length), sgd, adamw, adam, "
          "musgd", choices=tuple(OPTIMIZERS)),
    Param("learning_rate", 0.01,
          "initial learning rate (lr0); not used by optimizer auto, which picks its own",
          exclusive_minimum=0.0, maximum=1.0),
    Param("seed", 0, "random seed of initialisation, sampling and augmentation (32 bits)", minimum=0,
          maximum=MAX_SEED),
    Param("mosaic", 1.0, "probability of a 4-image mosaic per sample (ultralytics' default 1.0)", minimum=0.0,
          maximum=1.0),
    Param("close_mosaic", 10, "turn mosaic off for the last N epochs", minimum=0, maximum=MAX_EPOCHS),
    Param("flip", True, "random horizontal flips"),
    Param("cache", False, "keep the decoded training images in memory (faster epochs, more RAM)"),
    Param("amp", True,
          "mixed precision on a GPU (never on the CPU); ultralytics' AMP check runs offline on the image's yolo26n.pt "
          "or is skipped (logged)"),
    Param("export_onnx", True, "also write an ONNX export of the best stage when training ends"),
    Param("ultralytics_args", "",
          "further ultralytics training arguments as a YAML mapping, e.g. '{degrees: 5, mixup: 0.1, cos_lr: true}'; "
          "keys this template sets or the runner owns (data, device, project...) are refused"),
)

_INFERENCE = (
    Param("img_size", 0,
          f"input size, a multiple of the largest stride {STRIDE}; 0 uses the size the model was trained with",
          minimum=0, maximum=MAX_IMG_SIZE, multiple_of=STRIDE),
    *_SHARED_RUNTIME,
)

INFER = (
    *_INFERENCE,
    Param("conf_threshold", 0.0,
          "minimum score of a reported box; 0 uses the model's F1-optimal threshold on its validation set "
          "(0.25 for a model that has none); a small value such as 0.001 reports nearly every box", minimum=0.0,
          maximum=1.0),
    Param("iou_threshold", 0.7,
          "NMS IoU threshold (YOLO26 is NMS-free: its boxes are not suppressed again)", exclusive_minimum=0.0,
          maximum=1.0),
    Param("max_detections", 300, "most boxes reported per image", minimum=1,
          maximum=MAX_DETECTIONS),
)

#: The core adds mining_algorithm, class_distribution_scores and seed (ymir_runner.mining) to this template.
MINING = _INFERENCE
#: The ymir_runner.mining algorithms this executor supports, its default first (the built-in detector's too): ``aldd``
#: reads the head's class scores on its finest grid (:meth:`.predict.Predictor.class_maps`).
MINING_ALGORITHMS = ("aldd", "entropy", "cald", "random")

TEMPLATES = {TaskKind.TRAINING: TRAINING, TaskKind.INFER: INFER, TaskKind.MINING: MINING}


def _with_model(params: Sequence[Param], model: Param) -> tuple[Param, ...]:
    return tuple(model if param.name == "model" else param for param in params)


#: Instance segmentation (object type 4): the detection template with a ``-seg`` model; the detection thresholds
#: (``conf_threshold``, ``iou_threshold``, ``max_detections``) mean the same for the instances.
INSTANCE_TRAINING = _with_model(TRAINING, Param(
    "model", "yolo26n-seg",
    "the architecture: yolo26n-seg ... yolo26x-seg (ultralytics 8.4's YOLO26), yolo11n-seg..x-seg, yolov8n-seg..x-seg, "
    "started from the official weights baked into the image when it has them, else from scratch; or the path of your "
    "own ultralytics segmentation .pt. Not used when pretrained_model_params names a model of this plugin"))
INSTANCE_TEMPLATES = {TaskKind.TRAINING: INSTANCE_TRAINING, TaskKind.INFER: INFER, TaskKind.MINING: MINING}

#: Semantic segmentation (object type 3): the detection training template with a ``-sem`` model and what the pixels of
#: no class mean; inference and mining keep the input size and batch (there are no boxes to threshold).
SEMANTIC_TRAINING = (*_with_model(TRAINING, Param(
    "model", "yolo26n-sem",
    "the architecture: yolo26n-sem ... yolo26x-sem (ultralytics 8.4's YOLO26 semantic segmentation), started from the "
    "official weights baked into the image when it has them, else from scratch; or the path of your own ultralytics "
    "semantic .pt. Not used when pretrained_model_params names a model of this plugin")),
    Param("unlabelled_pixels", "background",
          "what pixels of no class teach the model: background (an extra class the model learns and predicts; "
          "such pixels are left without a class in infer-result.json) or ignore (left out of the loss: the model "
          "always predicts one of class_names; needs at least 2 classes)", choices=UNLABELLED_CHOICES))
SEMANTIC_INFER = _INFERENCE
SEMANTIC_MINING = _INFERENCE
#: The ymir_runner.mining algorithms on softmax maps (cald scores boxes), default first: pixel entropy, the one shown
#: to rank candidates of a class absent from training above familiar ones (README: aldd scores where neighbouring
#: predictions disagree, and a model that calls an unseen object background everywhere gives it nothing to score).
SEMANTIC_MINING_ALGORITHMS = ("entropy", "aldd", "random")
SEMANTIC_TEMPLATES = {TaskKind.TRAINING: SEMANTIC_TRAINING, TaskKind.INFER: SEMANTIC_INFER,
                      TaskKind.MINING: SEMANTIC_MINING}


def _defaults(params: Sequence[Param]) -> Mapping[str, Any]:
    return types.MappingProxyType({param.name: param.default for param in params})


TRAINING_DEFAULTS = _defaults(TRAINING)
INFER_DEFAULTS = _defaults(INFER)
