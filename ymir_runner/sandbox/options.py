"""What ``ymir-runner sandbox`` can be asked (:class:`SandboxOptions`, one field a flag) and the checks made
before anything is read or written."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from ..errors import ConfigError
from ..protocol.annotations import WRITABLE_FORMATS
from ..protocol.config import OBJECT_TYPES, SEGMENTATION, TASK_DATA_KEYS
from ..protocol.env import TaskKind
from .sources import SOURCE_FORMATS

#: The annotation formats the sandbox writes, with the ``export_format`` that asks the platform for them.
#: ``--split``: keep the train/val split SOURCE comes with (the default), or re-split at random.
SPLIT_MODES = ("keep", "random")
DEFAULT_VAL_RATIO = 0.2


@dataclasses.dataclass(frozen=True)
class SandboxOptions:
    """Everything ``ymir-runner sandbox`` can be asked; the CLI flags map one to one."""

    tasks: Sequence[str] = ("training",)
    format: str = "auto"
    #: Class names in class-index order; None: from the data.
    classes: Sequence[str] | None = None
    #: Drop boxes of classes not in ``classes`` (as the platform does) instead of refusing.
    ignore_other_classes: bool = False
    #: ``keep`` or ``random``; None: ``keep``, and an explicit ``val_ratio`` is refused when SOURCE has a split.
    split: str | None = None
    #: Share of the images split at random that go to val; None: :data:`DEFAULT_VAL_RATIO`.
    val_ratio: float | None = None
    seed: int = 0
    #: det-ark or det-voc; None: the template's export_format (det-ark when it names neither).
    annotation_format: str | None = None
    #: A previous training's /out/models (mining, inference).
    model: str | None = None
    #: A previous training's /out/models used as the pretrained model (training).
    pretrained: str | None = None
    #: Copy every stage of the model instead of only the best one.
    all_stages: bool = False
    web_ui_strings: bool = False
    #: config.yaml values replacing the template's (already typed).
    overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    container_paths: bool = False
    #: The executor that runs the task: config.yaml gets its template only, and ``plugin: <name>``.
    plugin: str | None = None
    force: bool = False
    #: Store the EXIF-rotated pixels of images with an EXIF orientation (their boxes were drawn on those).
    exif_transpose: bool = False
    #: The task's ``object_type``: 2 detection (boxes), 3 semantic or 4 instance segmentation (masks, written as
    #: the platform exports ``seg-coco:raw``); None: the model's (``--model``, ``--pretrained``), else 2.
    object_type: int | None = None
    #: Template files (an image's own /img-man/*-template.yaml) whose keys config.yaml gets instead of the
    #: installed executors' templates (several: merged, the first file's value first); empty: the executors'.
    templates: Sequence[str] = ()

    @property
    def ratio(self) -> float:
        """``val_ratio``, or its default."""
        return DEFAULT_VAL_RATIO if self.val_ratio is None else self.val_ratio


def task_kinds(tasks: Sequence[str]) -> tuple[TaskKind, ...]:
    """Requested tasks in run order; training runs alone, mining and inference may be combined.

    Raises :class:`~ymir_runner.errors.ConfigError` for an unknown task or training combined with another."""
    try:
        wanted = {TaskKind(str(task)) for task in tasks}
    except ValueError:
        raise ConfigError(f"--task {list(tasks)}: each must be training, mining or infer") from None
    if not wanted:
        wanted = {TaskKind.TRAINING}
    if TaskKind.TRAINING in wanted and len(wanted) > 1:
        raise ConfigError("--task training runs alone; only mining and infer may be combined")
    return tuple(kind for kind in TaskKind if kind in wanted)


def check_options(options: SandboxOptions, kinds: Sequence[TaskKind]) -> None:
    """Refuse bad combinations before anything is read or written (ConfigError)."""
    if options.templates and options.plugin:
        raise ConfigError("--template and --plugin: config.yaml gets either the given template's keys or the "
                          "executor's template, not both")
    if options.format not in SOURCE_FORMATS:
        raise ConfigError(f"unknown --format {options.format!r}: one of {', '.join(SOURCE_FORMATS)}")
    if options.annotation_format not in (None, *WRITABLE_FORMATS, "seg-coco"):
        raise ConfigError(f"unknown --annotation-format {options.annotation_format!r}: "
                          f"one of {', '.join(WRITABLE_FORMATS)}, seg-coco")
    if options.split not in (None, *SPLIT_MODES):
        raise ConfigError(f"unknown --split {options.split!r}: one of {', '.join(SPLIT_MODES)}")
    if options.object_type is not None and options.object_type not in OBJECT_TYPES:
        raise ConfigError(f"--object-type {options.object_type!r}: one of "
                          + ", ".join(f"{value} ({name})" for value, name in OBJECT_TYPES.items()))
    if options.object_type in SEGMENTATION:
        if options.annotation_format not in (None, "seg-coco"):
            raise ConfigError(f"--annotation-format {options.annotation_format}: a segmentation task "
                              f"(--object-type {options.object_type}) reads seg-coco, the only export with masks")
        if options.exif_transpose:
            raise ConfigError("--exif-transpose turns the pixels but not the masks: a segmentation tree stores the "
                              "images as they are")
    elif options.annotation_format == "seg-coco":
        raise ConfigError("--annotation-format seg-coco is a segmentation export: pass --object-type 3 or 4")
    if not 0 <= options.ratio < 1:
        raise ConfigError(f"--val-ratio {options.ratio} must be in [0, 1)")
    computed = TASK_DATA_KEYS.intersection(options.overrides)
    if computed:
        raise ConfigError(f"--set {', '.join(sorted(computed))}: written by the sandbox; "
                          f"use --classes, --model or --pretrained")
    if TaskKind.TRAINING in kinds:
        if options.model:
            raise ConfigError("--model is for mining and infer; a training task takes --pretrained")
    else:
        if options.pretrained:
            raise ConfigError("--pretrained is for training; mining and infer take --model")
        if not options.model:
            raise ConfigError("mining and infer need --model DIR: a previous training's /out/models folder "
                              "(with result.yaml)")
