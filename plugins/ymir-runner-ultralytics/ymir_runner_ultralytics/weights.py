"""Where a training starts from, the model files of this plugin, and the trained model mining and inference load.

The order (:func:`resolve_start`):

1. ``pretrained_model_params``: a model of this plugin the platform hands over (a stage's ``.pt``); ultralytics
   builds its architecture with the task's class count and transfers every tensor whose shape still fits, so a
   changed class list keeps the backbone and neck;
2. config key ``model``: the path of the user's own ultralytics ``.pt``; or a name (``yolo26n``...) whose official
   weights ``<name>.pt`` are in the image's weights folder (``$YMIR_RUNNER_ULTRALYTICS_WEIGHTS``, default
   ``/app/ultralytics-weights``, filled when the image is built: :func:`download_weights`);
3. from scratch: the name's architecture (``<name>.yaml``, part of the ultralytics package), with a warning.

Nothing is downloaded at run time.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Sequence

from ymir_runner import ConfigError, ModelError

from .devices import torch_device
from .predict import Predictor
from .templates import INSTANCE_MODEL_NAMES, MODEL_NAMES, SEMANTIC_MODEL_NAMES, SIZE_WORDS

if TYPE_CHECKING:
    from ymir_runner import TaskContext

#: The key of this plugin's metadata in a stage checkpoint (an ultralytics checkpoint dict).
METADATA_KEY = "ymir_runner"

PRETRAINED = "pretrained_model_params"
USER_FILE = "model"
IMAGE_WEIGHTS = "weights folder"
SCRATCH = "scratch"

#: ultralytics' task of each YMIR object type this plugin handles, and what a model of it does (for messages).
TASKS = {2: "detect", 3: "semantic", 4: "segment"}
DOES = {"detect": "detects boxes", "segment": "segments instances", "semantic": "segments pixels by class (semantic)"}
#: The architectures config key ``model`` names per object type.
NAMES = {2: MODEL_NAMES, 3: SEMANTIC_MODEL_NAMES, 4: INSTANCE_MODEL_NAMES}


@dataclasses.dataclass(frozen=True)
class Start:
    """What a training starts from: ``source`` (one of the four above) and ``path`` (a ``.pt`` file, or for
    ``scratch`` the architecture's ``<name>.yaml``)."""

    source: str
    path: str

    def describe(self) -> str:
        return {PRETRAINED: f"the pretrained model {self.path} (config key 'pretrained_model_params')",
                USER_FILE: f"the weights {self.path} (config key 'model')",
                IMAGE_WEIGHTS: f"the official weights {self.path} baked into the image",
                SCRATCH: f"scratch: {self.path}, randomly initialised"}[self.source]


def resolve_start(model: str, weights_folder: str, pretrained: str | None = None, object_type: int = 2) -> Start:
    """The start of a training (see the module's docstring): ``pretrained`` is the ``.pt`` of
    ``pretrained_model_params`` (``context.model_file(".pt")``) when it lists any. Raises ConfigError naming
    ``model`` for a name that is neither an architecture of the task's ``object_type`` nor a ``.pt`` file."""
    model = str(model).strip()
    if object_type == 2:
        model = SIZE_WORDS.get(model, model)
    if pretrained:
        return Start(PRETRAINED, pretrained)
    if model.endswith(".pt"):
        if not os.path.isfile(model):
            raise ConfigError(f"config key 'model': {model} is not a file")
        return Start(USER_FILE, model)
    names = NAMES[object_type]
    if model not in names:
        words = f" (or {', '.join(SIZE_WORDS)})" if object_type == 2 else ""
        other = next((f": {model!r} is a {TASKS[kind]} model, this is a {TASKS[object_type]} task"
                      for kind, known in NAMES.items() if kind != object_type and model in known), "")
        raise ConfigError(f"config key 'model': {model!r} is neither one of {', '.join(names)}{words} nor the path of "
                          f"an ultralytics .pt file{other}")
    baked = os.path.join(weights_folder, f"{model}.pt")
    if os.path.isfile(baked):
        return Start(IMAGE_WEIGHTS, baked)
    return Start(SCRATCH, f"{model}.yaml")


def load_checkpoint(path: str, key: str, task: str = "detect") -> tuple[Any, dict]:
    """``(network, checkpoint dict)`` of an ultralytics ``.pt`` of ``task`` (``detect``, ``segment``, ``semantic``;
    float32, CPU, eval mode). Raises ModelError naming ``key`` for a file that is not one, or a model of another
    task."""
    from ultralytics.nn.tasks import load_checkpoint as ultralytics_load

    try:
        network, checkpoint = ultralytics_load(path, device="cpu", fuse=False)
    except Exception as error:  # noqa: BLE001 - not a checkpoint, another library's pickle, a truncated file
        raise ModelError(f"config key {key!r}: {path} is not an ultralytics checkpoint ({error})") from error
    found = getattr(network, "task", None) or (checkpoint.get("train_args") or {}).get("task", "detect")
    if found != task:
        raise ModelError(f"config key {key!r}: {path} is an ultralytics {found} model; this executor "
                         f"{DOES.get(task, task)}")
    return network.float().eval(), checkpoint


def class_names_of(network: Any, checkpoint: dict) -> list[str]:
    """The class names a checkpoint was trained with (this plugin's metadata, else ultralytics' ``names``)."""
    metadata = checkpoint.get(METADATA_KEY) or {}
    if metadata.get("class_names"):
        return [str(name) for name in metadata["class_names"]]
    names = getattr(network, "names", None) or {}
    return [str(names[index]) for index in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]


@dataclasses.dataclass
class LoadedModel:
    """A trained model of this plugin on the task's device: its ``predictor`` at ``img_size`` (the task's, else the
    size it was trained at), the ``score_threshold`` its training chose (None for a model without one) and where it
    came from."""

    path: str
    predictor: Predictor
    score_threshold: float | None


#: The run's model in ``context.run_cache``: mining and inference of one run share it.
MODEL_CACHE_KEY = "ymir_runner_ultralytics.model"


def load_model(context: TaskContext, device: str) -> LoadedModel:
    """The model of ``model_params_path`` (``context.model_file(".pt")``), loaded once for the mining and inference
    of a run. ModelError naming ``model_params_path`` for a missing file, a file that is no ultralytics detection
    model, or a model of other classes."""
    cached = context.run_cache.get(MODEL_CACHE_KEY)
    if cached is not None:
        return cached
    key = context.model_key
    path = context.model_file(".pt")
    network, checkpoint = load_checkpoint(path, key, TASKS[context.config.object_type])
    names = class_names_of(network, checkpoint)
    if names != list(context.class_names):
        raise ModelError(f"the model {path} was trained on classes {names} but config key 'class_names' is "
                         f"{list(context.class_names)}")
    metadata = checkpoint.get(METADATA_KEY) or {}
    trained_size = int(metadata.get("img_size") or (checkpoint.get("train_args") or {}).get("imgsz") or 640)
    img_size = int(context.hyper.img_size or trained_size)  # declared: 0 or a multiple of 32
    threshold = metadata.get("conf_thr")
    on = torch_device(device)
    network = network.fuse(verbose=False) if hasattr(network, "fuse") else network
    model = LoadedModel(path, Predictor(network.to(on).eval(), on, img_size),
                        None if threshold is None else float(threshold))
    context.logger.info("model %s: %d classes, img_size %d, on %s", path, len(names), img_size, on)
    context.run_cache[MODEL_CACHE_KEY] = model
    return model


def download_weights(names: Sequence[str], folder: str) -> list[str]:
    """Download the official weights ``<name>.pt`` of ``names`` into ``folder`` (at image build time; skipped when
    present) with ultralytics' own downloader; returns the files. Raises ConfigError for an unknown name."""
    known = {name: TASKS[kind] for kind, listed in NAMES.items() for name in listed}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ConfigError(f"unknown model names {unknown}: choose from {', '.join(known)}")
    os.makedirs(folder, exist_ok=True)
    from ultralytics.utils.downloads import attempt_download_asset

    files = []
    for name in names:
        target = os.path.join(os.path.abspath(folder), f"{name}.pt")
        if not os.path.isfile(target):
            attempt_download_asset(target)
        if not os.path.isfile(target):
            raise RuntimeError(f"{name}.pt could not be downloaded to {folder}")
        load_checkpoint(target, "model", known[name])  # a download that is not a model fails the build, not a task
        files.append(target)
    return files
