"""``class_names``: from ``--classes`` or the source, and how a source box's class name finds its index."""

from __future__ import annotations

import logging
import os
from typing import Callable, Sequence

from ..errors import ConfigError
from ..protocol.yaml_file import read_yaml
from .options import SandboxOptions
from .sources import SourceData

log = logging.getLogger("ymir_runner.sandbox")


def trained_class_names(models_folder: str) -> tuple[tuple[str, ...], str] | None:
    """The class list a model was trained with, when ``models_folder`` is the ``out/models`` of a work tree whose
    ``in/config.yaml`` says it (a sandbox or platform tree): ``(names, that config file)``; None otherwise (the
    platform fills a mining task's class_names from its own record of the model, which a folder alone lacks)."""
    config_file = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(models_folder))), "in",
                               "config.yaml")
    if not os.path.isfile(config_file):
        return None
    try:
        names = read_yaml(config_file, "config file").get("class_names")
    except (ConfigError, AttributeError):
        return None
    if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
        return None
    return tuple(names), config_file


def resolve_class_names(data: SourceData, options: SandboxOptions, training: bool,
                        trained: tuple[tuple[str, ...], str] | None = None) -> tuple[str, ...]:
    """``class_names`` for config.yaml: --classes, else the source's own list; for mining and inference the
    classes the model was trained with (``trained``: :func:`trained_class_names`), which --classes must match.

    Raises :class:`~ymir_runner.errors.ConfigError` for an empty or repeated name in --classes, a training
    source class missing from --classes (without --ignore-other-classes), --classes other than the model's (a
    run would stop with 300004), or no names at all.
    """
    if trained is not None and not training:
        names, origin = trained
        if options.classes is None:
            log.info("class_names %s: the classes the model was trained with (%s)", ", ".join(names), origin)
            return names
        given = tuple(str(name).strip() for name in options.classes)
        if given != names:
            raise ConfigError(f"--classes {','.join(given)} is not the class list the model was trained with "
                              f"({','.join(names)}, in {origin}): a run would stop on the mismatch; pass --classes "
                              f"{','.join(names)} or leave --classes out")
    if options.classes is not None:
        names = tuple(str(name).strip() for name in options.classes)
        if not names or not all(names):
            raise ConfigError(f"--classes {','.join(names)!r} has an empty class name")
        lowered = [name.lower() for name in names]
        if len(set(lowered)) != len(lowered):
            raise ConfigError(f"--classes {','.join(names)!r} names a class twice")
        if training and not data.numeric_classes and not options.ignore_other_classes:
            missing = [name for name in data.class_names if name.lower() not in lowered]
            if missing:
                raise ConfigError(
                    f"classes {missing} of SOURCE are not in --classes {list(names)}: add them, or pass "
                    f"--ignore-other-classes to drop their boxes (the platform does not export them)")
        return names
    if data.numeric_classes:
        raise ConfigError("YOLO labels without classes.txt, obj.names or data.yaml: pass --classes "
                          "with the names in class-index order")
    if not data.class_names:
        if training:
            raise ConfigError("SOURCE has no labelled boxes, so no class names: pass --classes")
        raise ConfigError("pass --classes with the classes the model was trained on "
                          "(the platform fills class_names from the model)")
    return tuple(data.class_names)


def class_lookup(data: SourceData, class_names: Sequence[str]) -> Callable[[str], int | None]:
    """Class name of a source box → index into ``class_names`` (None: a class the task does not use).

    For YOLO labels without a names file the lookup raises :class:`~ymir_runner.errors.ConfigError` for an
    index --classes does not name."""
    if data.numeric_classes:  # YOLO without a names file: --classes names the label indexes
        def by_index(name: str) -> int | None:
            if int(name) >= len(class_names):
                raise ConfigError(f"YOLO labels use class index {name}, but --classes names only "
                                  f"{len(class_names)} classes: {', '.join(class_names)}")
            return int(name)
        return by_index
    indexes = {name.lower(): index for index, name in enumerate(class_names)}
    return lambda name: indexes.get(name.lower())
