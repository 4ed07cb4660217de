"""``--model`` / ``--pretrained``: a previous training's ``/out/models``, read through its result.yaml and
installed as the platform installs a model (``in/models/<stage>/<files>`` + ``in/models/ymir-info.yaml``).

Only regular files below the model folder are copied: a result.yaml listing ``/etc/shadow`` or
``../../../../etc/passwd`` is refused, naming each such file, before anything is written."""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any, Mapping, Sequence

import yaml

from ..errors import ConfigError, ModelError
from ..protocol.atomic import atomic_write_text
from ..protocol.env import MODEL_INFO_FILE, model_object_type
from ..protocol.files import irregular
from ..protocol.yaml_file import YamlLimitError, excerpt, read_yaml
from .worktree import WorkTree

#: result.yaml of protocol < 1.0.0 has no stages; YMIR files its model under this stage name.
LEGACY_STAGE = "default_best_stage"


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A training's /out/models folder, read through its result.yaml."""

    folder: str
    best_stage: str
    stages: Mapping[str, Mapping[str, Any]]

    def file(self, stage: str, name: str) -> str:
        """Where a listed file is: the stage folder first, then the models folder (protocol.md section 3).

        Raises :class:`~ymir_runner.errors.ModelError` when it is in neither, or is not a regular file."""
        for path in (os.path.join(self.folder, stage, name), os.path.join(self.folder, name)):
            problem = irregular(path)
            if problem:
                raise ModelError(f"{self.folder}/result.yaml lists {name!r} in stage {stage!r}: {path} is {problem}")
            if os.path.isfile(path):
                return path
        raise ModelError(f"{self.folder}/result.yaml lists {name!r} in stage {stage!r}, but the file is missing")

    def outside(self, stage: str, name: str) -> bool:
        """Whether a file name listed in ``stage`` reaches outside the model folder (an absolute path, ``..``)."""
        inside = os.path.join(self.folder, "")
        return any(not os.path.normpath(os.path.join(base, name)).startswith(inside)
                   for base in (os.path.join(self.folder, stage), self.folder))


def read_model_source(folder: str, flag: str) -> ModelSource:
    """The model in ``folder`` (``flag`` names the option in messages). Raises
    :class:`~ymir_runner.errors.ConfigError` without a result.yaml or for one past the bounds every YAML file is
    read within (size, nesting, aliases), :class:`~ymir_runner.errors.ModelError` for one that cannot be read, is
    not valid YAML, names no usable best stage, or has a stage without files."""
    folder = os.path.abspath(folder)
    path = os.path.join(folder, "result.yaml")
    if not os.path.lexists(path):
        raise ConfigError(f"{flag} {folder}: no result.yaml there (expected a training's /out/models folder)")
    try:
        result = read_yaml(path, "model result file")
    except YamlLimitError:
        raise
    except ConfigError as error:
        raise ModelError(str(error)) from error
    if not isinstance(result, Mapping):
        raise ModelError(f"{path} must hold a mapping")
    if "model" in result:  # legacy {model: [files], map: x}: the platform files it as one stage
        stages = {LEGACY_STAGE: {"stage_name": LEGACY_STAGE, "files": list(result.get("model") or [])}}
        best = LEGACY_STAGE
    else:
        stages = dict(result.get("model_stages") or {})
        best = str(result.get("best_stage_name") or "")
    if best not in stages:
        raise ModelError(f"{path}: best_stage_name {excerpt(best)} is not one of model_stages "
                         f"{excerpt(sorted(stages, key=str))}")
    for name, stage in stages.items():
        if not str(name).isidentifier() or not isinstance(stage, Mapping) or not stage.get("files"):
            raise ModelError(f"{path}: stage {excerpt(name)} must be an identifier with a non-empty 'files' list")
    return ModelSource(folder, best, stages)


def model_files(model: ModelSource, all_stages: bool) -> list[tuple[str, str, str]]:
    """``(stage, file name, source path)`` of the stages to copy: the best one, or all; checked up front so a
    missing file, or one outside the model folder (:class:`~ymir_runner.errors.ModelError` naming each), fails
    before the work folder is touched."""
    chosen = list(model.stages) if all_stages else [model.best_stage]
    outside = [f"{str(name)[:120]!r} (stage {stage})" for stage in chosen for name in model.stages[stage]["files"]
               if model.outside(stage, str(name))]
    if outside:
        raise ModelError(f"{model.folder}/result.yaml lists {len(outside)} file(s) outside {model.folder}, which "
                         f"the sandbox never copies: {', '.join(outside[:10])}"
                         + (f", and {len(outside) - 10} more" if len(outside) > 10 else ""))
    return [(stage, os.path.basename(str(name)), model.file(stage, str(name)))
            for stage in chosen for name in model.stages[stage]["files"]]


def install_model(model: ModelSource, files: Sequence[tuple[str, str, str]], work: WorkTree) -> list[str]:
    """Copy ``files`` to in/models/<stage>/ and write ymir-info.yaml (the best stage, the stages, and the object
    type the training recorded); returns the paths for config.yaml."""
    paths = []
    for stage, name, source in files:
        container = f"/in/models/{stage}/{name}"
        os.makedirs(os.path.dirname(work.local(container)), exist_ok=True)
        shutil.copyfile(source, work.local(container))
        paths.append(work.shown(container))
    stages = list(dict.fromkeys(stage for stage, _, _ in files))
    info: dict[str, Any] = {"best_stage_name": model.best_stage,
                            "model_stages": {stage: dict(model.stages[stage]) for stage in stages}}
    object_type = model_object_type(model.folder)  # recorded by a segmentation training; none: detection
    if object_type is not None:
        info["object_type"] = object_type
    atomic_write_text(work.local(f"/in/models/{MODEL_INFO_FILE}"), yaml.safe_dump(info, sort_keys=False))
    return paths
