"""ymir-runner: a plugin-based executor framework for the YMIR computer-vision platform.

This module is the plugin API: everything a plugin needs is importable from here (and, for its tests, from
``ymir_runner.testing``); the rest of the package is the core's own and may change. The names:

- declaring a plugin: ``hookimpl``, ``ExecutorSpec``, ``Param``, ``TaskKind``;
- a task: ``TaskContext`` (what each task hook receives), ``Item`` and ``Box`` (dataset entries), ``Progress``;
- outputs: ``Detection`` (an inference result box), ``Stage`` (a model stage of result.yaml), ``atomic_path``
  (for files a plugin writes itself, such as weights); ``OptionalOutputs``, what ``context.optional_output``
  guards with (pictures, exports, reports that never stop a task), for a plugin's own commands;
  ``annotation_text`` and ``annotation_suffix``: one image's annotation file as the platform exports it (det-ark,
  det-voc), for a plugin's generated or converted datasets; for segmentation (object types 3 and 4)
  ``InstanceMask`` and ``EncodedMask`` (what ``context.seg_infer_result`` takes) and ``Segment`` (one object of
  ``Item.segments``: its undecoded mask, crowd flag and annotation id); ``write_seg_coco``, ``SegCocoImage`` and
  ``seg_object``: a segmentation dataset's one ``seg-coco`` file as the platform exports it, and ``IGNORE_LABEL``
  (255), the label of unlabelled pixels in a semantic label map;
- images, read by the project's rules (content, bit depth, damage, size limit): ``decode_image``,
  ``DecodedImage``, ``probe_image``, ``ImageInfo``, ``ImageProblem``;
- errors that carry a protocol return code: ``YmirError`` and its subclasses, ``ReturnCode``; ``TaskTerminated``
  (a stop signal, a ``BaseException``); ``excerpt``, what a message shows of a value (80 characters at most);
  ``classify_text``, the return code a log line of another process names (out of memory, GPU, network);
- YAML within the project's bounds (size, nesting, aliases; 300001 naming the file past one): ``read_yaml`` for a
  file, ``parse_yaml`` for text such as a config value holding YAML;
- ``evaluation``: a stage's metrics (COCO mAP via faster-coco-eval, tp/fp/fn) from ground truth and
  predictions, in the keys result.yaml takes;
- ``pictures``: a stage's precision-recall curves, confusion matrix and validation images (ground truth beside
  predictions), for tensorboard and result.yaml ``attachments`` (numpy and Pillow);
- ``stages``: stage evaluation for every engine (``StageEvaluator``, ``stage_epochs``) and the one rule that picks
  the deployed stage (``fitness``);
- ``mining``: the active-learning scores (``random``, ``entropy``, ``aldd``, ``cald``) for any detector, and
  ``mining.mine_candidates``, the whole mining task around a plugin's predict function;
- ``inference``: ``inference.infer_candidates``, the whole inference task around a plugin's predict function
  (decoding on threads ahead of the model), and ``inference.inference_threshold``; ``Prediction``, what a
  detector found on one image, the record both loops and ``evaluation`` take;
- ``launch``: run a function on several ranks (CPU processes or GPUs) with rank 0 in this process, the
  environment ``torch.distributed`` reads set for each (``RankError`` when a rank fails);
- ``cpus``: the CPUs the task may really use (affinity mask and cgroup quota, not ``os.cpu_count()``) and
  ``cpus.share_cpus``, how a rank splits them between compute threads and DataLoader workers;
- ``run``: run the tasks of an env.yaml in this process, as ``ymir-runner run`` does (for a plugin's own
  commands, such as a demo); ``write_sdk_env``: the env.yaml (and, under a root, index files) a ymir-exc executor
  run as a subprocess reads, its output paths replaced (the ``sdk`` plugin's supervisor).

The task records and image helpers are imported on first use, so ``import ymir_runner`` stays cheap for the
entry-point module of every installed plugin.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import (  # noqa: E402
    ConfigError,
    DatasetError,
    GpuMismatchError,
    ImageFormatError,
    ModelError,
    NetworkError,
    NoGpuError,
    NonFiniteError,
    ObjectTypeError,
    OutOfMemoryError,
    OutputError,
    ReturnCode,
    TaskTerminated,
    YmirError,
    classify_text,
)
from .hookspecs import hookimpl  # noqa: E402
from .protocol.atomic import atomic_path  # noqa: E402
from .protocol.env import MODEL_INFO_FILE, TaskKind, best_stage_name  # noqa: E402
from .protocol.yaml_file import excerpt, parse_yaml, read_yaml  # noqa: E402
from .records import ExecutorSpec, Param  # noqa: E402
from .version import __version__  # noqa: E402

if TYPE_CHECKING:
    from . import cpus, evaluation, inference, mining, pictures, stages
    from .context import TaskContext
    from .dispatcher import run
    from .distributed import RankError, launch
    from .optional import OptionalOutputs
    from .prediction import Prediction
    from .protocol.annotations import Box, Segment, annotation_suffix, annotation_text
    from .protocol.dataset import Item
    from .protocol.images import DecodedImage, ImageInfo, ImageProblem, decode_image, probe_image
    from .protocol.masks import IGNORE_LABEL
    from .protocol.monitor import Progress
    from .protocol.results import Detection, EncodedMask, InstanceMask, Stage
    from .protocol.segcoco import SegCocoImage, seg_object, write_seg_coco
    from .sdk import write_sdk_env

#: Public names defined in modules that import more than a plugin's registration needs: loaded on first use.
_LAZY = {
    "TaskContext": ".context",
    "Box": ".protocol.annotations",
    "annotation_text": ".protocol.annotations",
    "annotation_suffix": ".protocol.annotations",
    "Item": ".protocol.dataset",
    "DecodedImage": ".protocol.images",
    "ImageInfo": ".protocol.images",
    "ImageProblem": ".protocol.images",
    "decode_image": ".protocol.images",
    "probe_image": ".protocol.images",
    "Progress": ".protocol.monitor",
    "Detection": ".protocol.results",
    "Stage": ".protocol.results",
    "InstanceMask": ".protocol.results",
    "EncodedMask": ".protocol.results",
    "Segment": ".protocol.annotations",
    "SegCocoImage": ".protocol.segcoco",
    "seg_object": ".protocol.segcoco",
    "write_seg_coco": ".protocol.segcoco",
    "IGNORE_LABEL": ".protocol.masks",
    "OptionalOutputs": ".optional",
    "Prediction": ".prediction",
    "run": ".dispatcher",
    "launch": ".distributed",
    "RankError": ".distributed",
    "write_sdk_env": ".sdk",
}
#: Public modules, imported on first use: ``from ymir_runner import mining``. mining, inference: numpy;
#: evaluation: and faster-coco-eval; pictures: and Pillow; cpus: the standard library.
_MODULES = {"mining", "inference", "evaluation", "pictures", "stages", "cpus"}  # stages: as evaluation

__all__ = [
    "__version__",
    # declaring a plugin
    "hookimpl", "ExecutorSpec", "Param", "TaskKind",
    # a task and its outputs
    "TaskContext", "Item", "Box", "Progress", "Detection", "Stage", "atomic_path", "best_stage_name",
    "MODEL_INFO_FILE", "OptionalOutputs", "annotation_text", "annotation_suffix", "InstanceMask", "EncodedMask",
    "Segment", "SegCocoImage", "seg_object", "write_seg_coco", "IGNORE_LABEL",
    # images
    "decode_image", "DecodedImage", "probe_image", "ImageInfo", "ImageProblem",
    # errors
    "ReturnCode", "YmirError", "ConfigError", "DatasetError", "ImageFormatError", "ModelError", "ObjectTypeError",
    "GpuMismatchError", "NoGpuError", "OutOfMemoryError", "NonFiniteError", "NetworkError", "OutputError",
    "TaskTerminated", "excerpt", "classify_text",
    # YAML within bounds
    "read_yaml", "parse_yaml",
    # stage metrics, mining scores and the inference loop for any detector (modules); what a detector found
    "evaluation", "mining", "inference", "Prediction", "pictures", "stages",
    # ranks in several processes (CPU or GPU), rank 0 here; the CPUs a task may use and how to share them
    "launch", "RankError", "cpus",
    # running a task in this process; the env.yaml a supervised ymir-exc executor reads
    "run", "write_sdk_env",
]


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        value: Any = importlib.import_module(f".{name}", __name__)
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    else:
        raise AttributeError(f"module 'ymir_runner' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
