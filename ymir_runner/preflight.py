"""What a run checks before any plugin code runs: which executor runs each task, its config read against that
executor's templates, the inputs a task cannot do without. One home for these checks, used by the dispatcher (which
stops on the first problem) and by ``ymir-runner inspect`` (which reports every problem, with the same messages).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from .errors import ConfigError, DatasetError, ObjectTypeError, YmirError
from .plugins import Executor, PluginRegistry
from .protocol.config import OBJECT_TYPES, SEGMENTATION, TaskConfig, parse_config, unknown_key_warnings
from .protocol.dataset import DatasetReader, Item, SkipLog, check_mask_format
from .protocol.env import MODEL_INFO_FILE, TaskEnv, TaskKind, model_object_type
from .protocol.yaml_file import excerpt
from .records import ExecutorSpec


def no_task_error() -> ConfigError:
    """The error of an env.yaml that asks for no task."""
    return ConfigError("env.yaml sets none of run_training, run_mining, run_infer: nothing to do")


def task_config(raw_config: Mapping[str, Any], spec: ExecutorSpec, kind: TaskKind, env: TaskEnv) -> TaskConfig:
    """config.yaml read against ``spec``'s template for ``kind``: values coerced to the template's types (or the
    word ``auto`` for a ``Param(..., auto=...)``) and checked against its declared values (``Param.values``:
    choices, bounds, multiple_of; ConfigError naming the key, the value and the legal values)."""
    params = spec.template(kind)
    return parse_config(raw_config, {p.name: p.default for p in params}, root=env.root,
                        auto={p.name: p.auto for p in params if p.auto},
                        values={p.name: p.values for p in params if p.values.declared})


def config_key_warnings(raw_config: Mapping[str, Any], chosen: Mapping[TaskKind, Executor]) -> list[str]:
    """Warnings for the config keys no template of the chosen executors declares and the platform does not write
    (mining + inference share one config.yaml: a key of either template is known); none for an executor that reads
    config.yaml itself (``ExecutorSpec.reads_own_config``)."""
    chosen = {kind: executor for kind, executor in chosen.items() if not executor.spec.reads_own_config}
    if not chosen:  # none, or executors that read config.yaml themselves: every key may be one of theirs
        return []
    known = {param.name for kind, executor in chosen.items() for param in executor.spec.template(kind)}
    names = sorted({executor.spec.name for executor in chosen.values()})
    return unknown_key_warnings(raw_config, known, " + ".join(names))


def check_inputs(kind: TaskKind, env: TaskEnv, config: TaskConfig, spec: ExecutorSpec, skips: SkipLog) -> None:
    """Fail early on configuration errors the platform only shows as an empty dataset (ConfigError)."""
    if kind is TaskKind.TRAINING:
        if not config.class_names:
            raise ConfigError("config key 'class_names' is empty: a training task needs classes")
        export = config.export_format
        check_mask_format(config.annotation_format, config.object_type, export.raw if export else "(absent)")
        index = DatasetReader(env.input.training_index_file, annotations=None, skips=skips, name="training")
        if index.is_empty():
            raw = export.raw if export else "(absent)"
            raise ConfigError(
                f"training index {env.input.training_index_file or '(not set)'} is empty: the platform "
                f"exported no annotations; check config key 'export_format' (got {excerpt(raw)}, e.g. 'ark:raw')")
        if export is not None and export.annotation not in spec.annotation_formats:
            raise ConfigError(
                f"config key 'export_format': executor {spec.name!r} reads "
                f"{', '.join(spec.annotation_formats)}, not {excerpt(export.raw)}")
    elif not env.input.candidate_index_file:
        raise ConfigError(f"env.yaml: input.candidate_index_file is not set for a {kind} task")
    else:
        check_model_object_type(kind, env, config)


def check_model_object_type(kind: TaskKind, env: TaskEnv, config: TaskConfig) -> None:
    """Mining and inference with a model trained for another object type are refused, as the platform refuses
    them ("object types mismatch"): ObjectTypeError (300005) before any image is read. The model's object type
    is ``object_type`` of ``/in/models/ymir-info.yaml`` (:func:`~ymir_runner.protocol.env.model_object_type`: a
    file without it is a detection model, as the platform reads one); no such file: nothing to check."""
    models_dir = env.input.models_dir
    trained_for = model_object_type(models_dir) if models_dir else None
    if trained_for is None or trained_for == config.object_type:
        return
    raise ObjectTypeError(
        f"object types mismatch: the model in {models_dir} was trained for object_type {trained_for} "
        f"({OBJECT_TYPES.get(trained_for, 'unknown')}; {MODEL_INFO_FILE}), this {kind} task is object_type "
        f"{config.object_type} ({OBJECT_TYPES.get(config.object_type, 'unknown')}): give it a model of its object "
        f"type")


def check_training_boxes(items: Sequence[Item], config: TaskConfig) -> None:
    """A training set whose usable images hold not one box teaches nothing: DatasetError (300002) naming the
    count and config key ``export_format``, instead of stages of mAP 0 that look like a trained model. Images
    without boxes beside images with boxes are negatives, and fine. A segmentation task (object_type 3 or 4)
    needs an object with a mask (box-only objects and bad masks were skipped: the skip summary names them)."""
    raw = config.export_format.raw if config.export_format else "(absent)"
    if config.object_type in SEGMENTATION:
        if items and not any(item.segments for item in items):
            raise DatasetError(f"none of the {len(items)} usable training images has an object with a mask: "
                               f"there is nothing to learn; check the annotations (the skip summary names the "
                               f"objects left out) and config key 'export_format' (got {excerpt(raw)})")
        return
    if items and not any(item.boxes for item in items):
        raise DatasetError(f"none of the {len(items)} usable training images has a box: there is nothing to "
                           f"learn; check the annotations and config key 'export_format' (got {excerpt(raw)})")


@dataclasses.dataclass
class Preflight:
    """Every check of :mod:`ymir_runner.preflight` on one run, none stopping the others: what ``inspect``
    reports. ``errors`` are what ``run`` would stop on (it stops on the first), in the order it meets them."""

    tasks: Sequence[TaskKind]
    #: config.yaml's reserved keys, typed (None when they do not read: the error is in ``errors``).
    base: TaskConfig | None
    executors: dict[TaskKind, Executor]
    configs: dict[TaskKind, TaskConfig]
    warnings: list[str]
    errors: list[YmirError]


def preflight(env: TaskEnv, registry: PluginRegistry, raw_config: Mapping[str, Any]) -> Preflight:
    """Run every pre-plugin check of a run on ``env`` (its config.yaml already read as ``raw_config``), collecting
    the problems instead of stopping at the first."""
    result = Preflight(env.tasks, None, {}, {}, [], [])
    try:
        base = result.base = parse_config(raw_config, root=env.root)
    except YmirError as error:
        result.errors.append(error)
        return result
    if not env.tasks:
        result.errors.append(no_task_error())
    for kind in env.tasks:
        try:
            result.executors[kind] = registry.select(kind, base.object_type, base.plugin)
        except YmirError as error:
            _note(result, error)
    result.warnings += config_key_warnings(raw_config, result.executors)
    for kind, executor in result.executors.items():
        config = base  # its reserved keys, when the template's values do not read
        try:
            config = result.configs[kind] = task_config(raw_config, executor.spec, kind, env)
        except YmirError as error:
            _note(result, error)
        try:
            check_inputs(kind, env, config, executor.spec, SkipLog())
        except YmirError as error:
            _note(result, error)
    return result


def _note(result: Preflight, error: YmirError) -> None:
    """Record ``error`` once (mining and inference may both meet the same problem)."""
    if str(error) not in {str(seen) for seen in result.errors}:
        result.errors.append(error)
