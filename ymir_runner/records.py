"""Typed records that plugins return from the registration hook; the core validates them."""

from __future__ import annotations

import dataclasses
import re
from typing import AbstractSet, Any, ClassVar, Mapping

from .protocol.coerce import AUTO, auto_type_name
from .protocol.config import RESERVED_KEYS, bounds_text, within_bounds
from .protocol.env import TaskKind
from .protocol.yaml_file import excerpt

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")

#: The scores of :mod:`ymir_runner.mining` (docs/mining.md), in the order the core lists them.
MINING_ALGORITHMS = ("aldd", "cald", "entropy", "random")


@dataclasses.dataclass(frozen=True)
class Param:
    """One hyper-parameter of a task template: its default (whose type the web-UI value is coerced to).

    ``auto=int`` (or ``float``) declares a number the executor can choose itself: the value is the word
    :attr:`AUTO` (``"auto"``; the web UI's ``"AUTO"`` too) or a number of that type (``"5"`` -> 5), anything else
    stops the task naming the key. The executor chooses an ``auto`` value and logs what it chose and why; a number
    is exactly what runs. The default may be either (``Param("epochs", Param.AUTO, "...", auto=int)``).

    ``minimum`` / ``maximum`` bound a number (inclusive): the core refuses a value outside them before the task
    starts (300001 naming the key, the value and the bound). Declare an upper bound for every number that sizes
    memory or time (a batch, an input size, a count), with its reason in ``help``: ``batch_size_per_gpu: 100000``
    must stop naming the key, not exhaust memory.
    """

    #: The value of an ``auto`` key that leaves the number to the executor.
    AUTO: ClassVar[str] = AUTO

    name: str
    default: Any
    help: str = ""
    #: When non-empty, the (coerced) value must be one of these.
    choices: tuple = ()
    #: ``int`` or ``float``: the key takes ``auto`` or a number of this type (see above).
    auto: type | None = None
    #: The least and the largest number the key takes (inclusive; None: unbounded).
    minimum: int | float | None = None
    maximum: int | float | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier():
            raise ValueError(f"template key {self.name!r} is not an identifier")
        if self.choices and self.default not in self.choices:
            raise ValueError(f"template key {self.name!r}: default {excerpt(self.default)} not in "
                             f"{excerpt(self.choices)}")
        if self.auto is not None:
            if self.auto not in (int, float) or self.choices:
                raise ValueError(f"template key {self.name!r}: auto must be int or float, without choices")
            if self.default != AUTO and (isinstance(self.default, bool) or not isinstance(self.default, self.auto)):
                raise ValueError(f"template key {self.name!r}: default {excerpt(self.default)} is not a valid "
                                 f"{auto_type_name(self.auto)}")
        if self.bounds != (None, None):
            self._check_bounds()

    @property
    def bounds(self) -> tuple[int | float | None, int | float | None]:
        """``(minimum, maximum)``: what the core checks a value against."""
        return self.minimum, self.maximum

    def _check_bounds(self) -> None:
        def number(value: Any) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool)

        if not all(bound is None or number(bound) for bound in self.bounds):
            raise ValueError(f"template key {self.name!r}: minimum and maximum must be numbers")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"template key {self.name!r}: minimum {self.minimum} is above maximum {self.maximum}")
        if self.default == AUTO and self.auto is not None:
            return
        if not number(self.default):
            raise ValueError(f"template key {self.name!r}: minimum and maximum bound numbers, not "
                             f"{excerpt(self.default)}")
        if not within_bounds(self.default, *self.bounds):
            raise ValueError(f"template key {self.name!r}: default {self.default} is outside its bounds "
                             f"({bounds_text(*self.bounds)})")


@dataclasses.dataclass(frozen=True)
class ExecutorSpec:
    """What one executor of a plugin handles: returned (in a list) by ``ymir_runner_register_executors``.

    The plugin that returned the spec is the one whose task hooks run when the spec is chosen; a plugin may
    return several specs (the context tells the hook which one was chosen).
    """

    name: str
    #: The task kinds it runs: a set (``{TaskKind.TRAINING, TaskKind.INFER}``), kept as a frozenset.
    tasks: AbstractSet[TaskKind]
    #: Template defaults per task kind; a kind in ``tasks`` without a template gets an empty one.
    templates: Mapping[TaskKind, tuple[Param, ...]] = dataclasses.field(default_factory=dict)
    #: YMIR object types: 2 detection, 3 semantic segmentation, 4 instance segmentation; a set, kept as a
    #: frozenset.
    object_types: AbstractSet[int] = frozenset({2})
    description: str = ""
    #: Annotation formats (``export_format`` annotation part) the training task reads.
    annotation_formats: tuple[str, ...] = ("det-ark", "det-voc")
    #: The :mod:`ymir_runner.mining` algorithms the mining task supports, the default first. The core adds
    #: ``mining_algorithm``, ``class_distribution_scores`` and ``seed`` to the mining template (each one the
    #: plugin's template does not declare itself). Empty: the plugin mines its own way.
    mining_algorithms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", frozenset(TaskKind(kind) for kind in self.tasks))
        object.__setattr__(self, "object_types", frozenset(int(kind) for kind in self.object_types))
        object.__setattr__(self, "mining_algorithms", tuple(self.mining_algorithms))
        templates = {TaskKind(kind): tuple(params) for kind, params in self.templates.items()}
        if self.mining_algorithms and TaskKind.MINING in self.tasks:
            declared = {param.name for param in templates.get(TaskKind.MINING, ())}
            added = tuple(param for param in mining_params(self.mining_algorithms) if param.name not in declared)
            templates[TaskKind.MINING] = templates.get(TaskKind.MINING, ()) + added
        object.__setattr__(self, "templates", templates)
        self.validate()

    def validate(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"executor name {self.name!r} must start with a letter and use [A-Za-z0-9_.-]")
        if not self.tasks:
            raise ValueError(f"executor {self.name!r} handles no task")
        unknown = [name for name in self.mining_algorithms if name not in MINING_ALGORITHMS]
        if unknown or len(set(self.mining_algorithms)) != len(self.mining_algorithms):
            raise ValueError(f"executor {self.name!r}: mining_algorithms {list(self.mining_algorithms)} must be "
                             f"distinct names among {', '.join(MINING_ALGORITHMS)}")
        if self.mining_algorithms and TaskKind.MINING not in self.tasks:
            raise ValueError(f"executor {self.name!r} declares mining_algorithms but does not handle mining")
        extra = set(self.templates) - self.tasks
        if extra:
            raise ValueError(f"executor {self.name!r} has templates for tasks it does not handle: {sorted(extra)}")
        for kind, params in self.templates.items():
            names = [param.name for param in params]
            duplicated = {name for name in names if names.count(name) > 1}
            if duplicated:
                raise ValueError(f"executor {self.name!r}: {kind} template repeats {sorted(duplicated)}")
            reserved = RESERVED_KEYS.intersection(names)
            if reserved:
                raise ValueError(f"executor {self.name!r}: {kind} template declares reserved keys {sorted(reserved)}")

    def template(self, kind: TaskKind) -> tuple[Param, ...]:
        return self.templates.get(TaskKind(kind), ())

    def defaults(self, kind: TaskKind) -> dict[str, Any]:
        return {param.name: param.default for param in self.template(kind)}


def mining_params(algorithms: tuple[str, ...]) -> tuple[Param, ...]:
    """The mining template keys of :mod:`ymir_runner.mining`, for an executor supporting ``algorithms``."""
    return (
        Param("mining_algorithm", algorithms[0], f"active-learning score: {', '.join(algorithms)} (docs/mining.md)",
              choices=tuple(algorithms)),
        Param("class_distribution_scores", "",
              "comma-separated per-class weights w_c of entropy, aldd and cald, padded with 1.0"),
        Param("seed", 0, "seed of random and of CALD's cutouts (32 bits)", minimum=0, maximum=2**32 - 1),
    )
