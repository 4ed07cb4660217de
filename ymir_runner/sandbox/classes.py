"""``class_names``: from ``--classes`` or the source, and how a source box's class name finds its index."""

from __future__ import annotations

from typing import Callable, Sequence

from ..errors import ConfigError
from .options import SandboxOptions
from .sources import SourceData


def resolve_class_names(data: SourceData, options: SandboxOptions, training: bool) -> tuple[str, ...]:
    """``class_names`` for config.yaml: --classes, else the source's own list.

    Raises :class:`~ymir_runner.errors.ConfigError` for an empty or repeated name in --classes, a training
    source class missing from --classes (without --ignore-other-classes), or no names at all.
    """
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
