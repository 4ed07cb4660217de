"""Where a training starts from, and the model files of this plugin.

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
from typing import Any, Sequence

from ymir_runner import MODEL_INFO_FILE, ConfigError, ModelError, best_stage_name

from .templates import MODEL_NAMES, SIZE_WORDS

#: The key of this plugin's metadata in a stage checkpoint (an ultralytics checkpoint dict).
METADATA_KEY = "ymir_runner"

PRETRAINED = "pretrained_model_params"
USER_FILE = "model"
IMAGE_WEIGHTS = "weights folder"
SCRATCH = "scratch"


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


def resolve_start(model: str, model_files: Sequence[str], weights_folder: str, models_dir: str = "") -> Start:
    """The start of a training (see the module's docstring). Raises ConfigError naming ``model`` for a name that
    is neither an architecture nor a ``.pt`` file, ModelError naming ``pretrained_model_params`` when it lists no
    usable ``.pt``."""
    model = SIZE_WORDS.get(str(model).strip(), str(model).strip())
    if model_files:
        return Start(PRETRAINED, choose_checkpoint(model_files, models_dir, PRETRAINED))
    if model.endswith(".pt"):
        if not os.path.isfile(model):
            raise ConfigError(f"config key 'model': {model} is not a file")
        return Start(USER_FILE, model)
    if model not in MODEL_NAMES:
        raise ConfigError(f"config key 'model': {model!r} is neither one of {', '.join(MODEL_NAMES)} (or "
                          f"{', '.join(SIZE_WORDS)}) nor the path of an ultralytics .pt file")
    baked = os.path.join(weights_folder, f"{model}.pt")
    if os.path.isfile(baked):
        return Start(IMAGE_WEIGHTS, baked)
    return Start(SCRATCH, f"{model}.yaml")


def choose_checkpoint(paths: Sequence[str], models_dir: str, key: str) -> str:
    """The ``.pt`` among the files of config key ``key``; several → the best stage's (ymir-info.yaml)."""
    checkpoints = [path for path in paths if path.endswith(".pt")]
    if len(checkpoints) > 1:
        stage = best_stage_name(models_dir) if models_dir else None
        checkpoints = [path for path in checkpoints if os.path.basename(os.path.dirname(path)) == stage]
        if len(checkpoints) != 1:
            raise ModelError(f"config key {key!r} lists several .pt files {list(paths)} and "
                             f"{os.path.join(models_dir, MODEL_INFO_FILE)} names no best stage among them")
    if not checkpoints:
        raise ModelError(f"config key {key!r} lists no .pt file of the ultralytics executor: {list(paths)}")
    if not os.path.isfile(checkpoints[0]):
        raise ModelError(f"config key {key!r}: {checkpoints[0]} does not exist")
    return checkpoints[0]


def load_checkpoint(path: str, key: str) -> tuple[Any, dict]:
    """``(network, checkpoint dict)`` of an ultralytics detection ``.pt`` (float32, CPU, eval mode). Raises
    ModelError naming ``key`` for a file that is not one."""
    from ultralytics.nn.tasks import load_checkpoint as ultralytics_load

    try:
        network, checkpoint = ultralytics_load(path, device="cpu", fuse=False)
    except Exception as error:  # noqa: BLE001 - not a checkpoint, another library's pickle, a truncated file
        raise ModelError(f"config key {key!r}: {path} is not an ultralytics checkpoint ({error})") from error
    task = getattr(network, "task", None) or (checkpoint.get("train_args") or {}).get("task", "detect")
    if task != "detect":
        raise ModelError(f"config key {key!r}: {path} is an ultralytics {task} model; this executor detects boxes")
    return network.float().eval(), checkpoint


def class_names_of(network: Any, checkpoint: dict) -> list[str]:
    """The class names a checkpoint was trained with (this plugin's metadata, else ultralytics' ``names``)."""
    metadata = checkpoint.get(METADATA_KEY) or {}
    if metadata.get("class_names"):
        return [str(name) for name in metadata["class_names"]]
    names = getattr(network, "names", None) or {}
    return [str(names[index]) for index in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]


def download_weights(names: Sequence[str], folder: str) -> list[str]:
    """Download the official weights ``<name>.pt`` of ``names`` into ``folder`` (at image build time; skipped when
    present) with ultralytics' own downloader; returns the files. Raises ConfigError for an unknown name."""
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown:
        raise ConfigError(f"unknown model names {unknown}: choose from {', '.join(MODEL_NAMES)}")
    os.makedirs(folder, exist_ok=True)
    from ultralytics.utils.downloads import attempt_download_asset

    files = []
    for name in names:
        target = os.path.join(os.path.abspath(folder), f"{name}.pt")
        if not os.path.isfile(target):
            attempt_download_asset(target)
        if not os.path.isfile(target):
            raise RuntimeError(f"{name}.pt could not be downloaded to {folder}")
        load_checkpoint(target, "model")  # a download that is not a model fails the build, not a task
        files.append(target)
    return files
