"""config.yaml and env.yaml as the platform writes them (protocol.md section 2)."""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import yaml

from ..errors import ConfigError, YmirError
from ..imgman import template_defaults
from ..preflight import config_key_warnings
from ..protocol.annotations import WRITABLE_FORMATS, export_format_of
from ..protocol.config import DETECTION, PLATFORM_TYPED_KEYS, SEGMENTATION, ExportFormat
from ..protocol.env import TaskKind, config_document, env_document
from .options import SandboxOptions
from .worktree import WorkTree

log = logging.getLogger("ymir_runner.sandbox")


def choose_executors(registry: Any, kinds: Sequence[TaskKind], plugin: str | None,
                     object_type: int = DETECTION) -> dict[TaskKind, Any]:
    """The executor of each task, chosen as ``ymir-runner run`` chooses it (:meth:`PluginRegistry.select`): the one
    ``plugin`` names, else the only one installed for the task's kind and ``object_type``. Raises
    :class:`~ymir_runner.errors.ConfigError` for a ``plugin`` that is not installed (or cannot run the task) and
    for several candidates (listing them: choose one with ``--plugin``). A task no installed executor handles gets
    no entry and a warning: the tree is still what the platform would export."""
    names = sorted(executor.spec.name for executor in registry.executors())
    if plugin and plugin not in names:
        raise ConfigError(f"--plugin {plugin!r}: no such executor; installed: {', '.join(names) or 'none'}")
    chosen = {}
    for kind in kinds:
        candidates = sorted(executor.spec.name for executor in registry.executors()
                            if kind in executor.spec.tasks and object_type in executor.spec.object_types
                            and not executor.spec.named_only)
        if not plugin and not candidates:
            log.warning("no installed executor handles %s: config.yaml holds only the platform's keys", kind)
            continue
        if not plugin and len(candidates) > 1:
            raise ConfigError(f"several installed executors can run {kind} for object_type {object_type}: "
                              f"{', '.join(candidates)}; choose one with --plugin NAME")
        try:
            chosen[kind] = registry.select(kind, object_type, plugin)
        except YmirError as error:
            raise ConfigError(f"--plugin {plugin!r}: {error}") from None
    return chosen


def template_config(registry: Any, chosen: Mapping[TaskKind, Any], object_type: int = DETECTION) -> dict[str, Any]:
    """The template of each chosen task's executor, as ``ymir-runner img-man`` writes it for that executor (mining
    + inference: merged, mining's value first): another executor's keys never reach config.yaml."""
    merged: dict[str, Any] = {}
    for kind, executor in chosen.items():
        template = template_defaults(registry, kind, object_type=object_type, executor_name=executor.spec.name)
        for key, value in template.items():
            merged.setdefault(key, value)
    return merged


def read_templates(paths: Sequence[str]) -> dict[str, Any]:
    """The keys of template files (an image's own ``/img-man/training-template.yaml``...), merged, the first file's
    value first: what ``sandbox --template`` writes into config.yaml instead of the installed executors' templates.
    The keys the platform writes itself (``gpu_id``, ``class_names``...) are the platform's, as for an executor's
    template. Raises :class:`~ymir_runner.errors.ConfigError` for a file that is not YAML within the project's
    bounds, or not a mapping (naming it)."""
    from ..protocol.yaml_file import read_yaml_mapping

    merged: dict[str, Any] = {}
    for path in paths:
        for key, value in read_yaml_mapping(path, "--template file", empty_ok=True).items():
            merged.setdefault(str(key), value)
    return merged


def check_overrides(overrides: Mapping[str, Any], chosen: Mapping[TaskKind, Any], force: bool) -> None:
    """``--set`` keys that no chosen executor's template declares and the platform does not write: refused
    (ConfigError naming the key and the closest known one) unless ``force``, then warned about. Unchecked, with a
    warning, when no installed executor handles the tasks. ``gpu_count`` without ``gpu_id``: warned about (the
    task runs on the CPU)."""
    if not overrides:
        return
    gpus = overrides.get("gpu_count")
    if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > 0 and not overrides.get("gpu_id"):
        log.warning("--set gpu_count=%d without gpu_id: the platform writes gpu_id with the GPUs it allocated; "
                    "with gpu_id '' the task runs on the CPU; pass --set gpu_id=%s to use this machine's GPUs",
                    gpus, ",".join(str(index) for index in range(gpus)))
    if not chosen:
        log.warning("--set %s: not checked, no installed executor handles the task", ", ".join(overrides))
        return
    for warning in config_key_warnings(overrides, chosen):
        if not force:
            raise ConfigError(f"--set: {warning}; pass --force to write it anyway")
        log.warning("--set: %s", warning)


def web_ui_value(value: Any) -> Any:
    """A template value as the web UI sends it back: numbers stay numbers, everything else a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return value
    if value is None:
        return ""
    if isinstance(value, (list, tuple, dict)):  # the reader parses YAML flow text back into a list/mapping
        return yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip()
    return str(value)


def build_config(template: Mapping[str, Any], kinds: Sequence[TaskKind], task_id: str,
                 class_names: Sequence[str], options: SandboxOptions,
                 model_files: Sequence[str] = ()) -> dict[str, Any]:
    """config.yaml as the platform writes it (:func:`~ymir_runner.protocol.env.config_document`) over the
    template, as the web UI sends it back, and the ``--set`` overrides; ``model_files``: the installed model's."""
    training = TaskKind.TRAINING in kinds
    hyper = {**template, **options.overrides}
    if options.plugin:
        hyper["plugin"] = options.plugin
    if training:
        if options.annotation_format:
            hyper["export_format"] = export_format_of(options.annotation_format)
        elif options.object_type in SEGMENTATION:  # the only export with masks (segmentation.md section 1)
            hyper["export_format"] = export_format_of("seg-coco")
        elif not hyper.get("export_format"):
            hyper["export_format"] = export_format_of("det-ark")
    else:
        hyper.pop("export_format", None)  # the platform writes it for training only
    params: dict[str, Any] = {}
    for key, value in hyper.items():
        if key in PLATFORM_TYPED_KEYS and key not in options.overrides:
            continue  # the platform's value wins over a template default (gpu_count 1 in a CUDA image)
        if options.web_ui_strings and key not in PLATFORM_TYPED_KEYS:
            value = web_ui_value(value)
            if value == "":
                continue  # the web UI drops keys whose value is ''
        params[key] = value
    params.setdefault("object_type", options.object_type or DETECTION)  # platform-typed: as the platform writes it
    return config_document(task_id, kinds, params, class_names=class_names, model_files=model_files)


def annotation_format_of(config: Mapping[str, Any]) -> str:
    """The annotation format config.yaml's ``export_format`` asks for: det-ark or det-voc, or seg-coco for a
    segmentation task (``object_type`` 3 or 4); ConfigError for another."""
    export = ExportFormat.parse(config.get("export_format"))
    if config.get("object_type") in SEGMENTATION:
        if export.annotation != "seg-coco":
            raise ConfigError(f"export_format {export.raw!r}: a segmentation task (object_type "
                              f"{config.get('object_type')}) reads seg-coco:raw, the only export with masks")
        return export.annotation
    if export.annotation not in WRITABLE_FORMATS:
        raise ConfigError(f"export_format {export.raw!r}: the sandbox writes det-ark (ark:raw) or det-voc "
                          f"(voc:raw) annotations; choose one with --annotation-format")
    return export.annotation


def env_yaml(work: WorkTree, task_id: str, kinds: Sequence[TaskKind]) -> dict[str, Any]:
    """env.yaml in protocol.md's shape, naming this tree's paths; unused index paths are ''."""
    return env_document(task_id, kinds, path=work.shown)
