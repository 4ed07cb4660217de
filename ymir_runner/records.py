"""Typed records that plugins return from the registration hook; the core validates them."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import AbstractSet, Any, ClassVar, Mapping

from .protocol.coerce import AUTO, auto_type_name
from .protocol.config import RESERVED_KEYS, LegalValues, shown
from .protocol.env import TaskKind
from .protocol.yaml_file import excerpt

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")

#: The scores of :mod:`ymir_runner.mining` (docs/mining.md), in the order the core lists them.
MINING_ALGORITHMS = ("aldd", "cald", "entropy", "random")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Param:
    """One hyper-parameter of a task template: its default (whose type the web-UI value is coerced to) and the
    values it takes.

    ``auto=int`` (or ``float``) declares a number the executor can choose itself: the value is the word
    :attr:`AUTO` (``"auto"``; the web UI's ``"AUTO"`` too) or a number of that type (``"5"`` -> 5), anything else
    stops the task naming the key. The executor chooses an ``auto`` value and logs what it chose and why; a number
    is exactly what runs. The default may be either (``Param("epochs", Param.AUTO, "...", auto=int)``).

    The legal values of a number, with JSON Schema's names: ``minimum`` / ``maximum`` (inclusive),
    ``exclusive_minimum`` / ``exclusive_maximum`` (strict: a learning rate above 0, an IoU below 1), ``multiple_of``
    (an integer key's step: an input size of a stride-32 network). The key is an integer or a number by its
    default's type (or ``auto``'s), as its coercion; ``choices`` lists the values of any other key. The core refuses
    a value outside them before the task starts, in one message form for every rule (300001: ``config key
    'img_size': 100 is not a multiple of 32 from 32 to 2048``), and img-man's template comments show the same text
    (:attr:`values`). Declare an upper bound for every number that sizes memory or time (a batch, an input size, a
    count), with its reason in ``help``: ``batch_size_per_gpu: 100000`` must stop naming the key, not exhaust
    memory. A declaration the default breaks, or that no value could meet, is refused here (ValueError naming the
    key): ``multiple_of`` on a float key, strict bounds on an integer key (say ``minimum=1``), two lower bounds,
    bounds beside ``choices``.
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
    #: Strict bounds of a float key: the value lies above / below them.
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    #: An integer key's values are multiples of this positive integer.
    multiple_of: int | None = None

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
        if self._numeric_rules():
            self._check_numeric_rules()

    @property
    def bounds(self) -> tuple[int | float | None, int | float | None]:
        """``(minimum, maximum)``: the inclusive bounds (see :attr:`values` for every rule)."""
        return self.minimum, self.maximum

    @property
    def integer(self) -> bool:
        """Whether the key takes integers: an int default (not a bool), or ``auto=int``."""
        if self.auto is not None:
            return self.auto is int
        return type(self.default) is int

    @property
    def values(self) -> LegalValues:
        """The legal values as the core checks and shows them (``values.describe()``: ``from 1 to 512``...)."""
        return LegalValues(choices=tuple(self.choices), minimum=self.minimum, maximum=self.maximum,
                           exclusive_minimum=self.exclusive_minimum, exclusive_maximum=self.exclusive_maximum,
                           multiple_of=self.multiple_of, integer=self.integer, auto=self.auto is not None)

    def _numeric_rules(self) -> dict[str, Any]:
        rules = {"minimum": self.minimum, "maximum": self.maximum, "exclusive_minimum": self.exclusive_minimum,
                 "exclusive_maximum": self.exclusive_maximum, "multiple_of": self.multiple_of}
        return {rule: bound for rule, bound in rules.items() if bound is not None}

    def _refuse(self, why: str) -> ValueError:
        return ValueError(f"template key {self.name!r}: {why}")

    def _check_numeric_rules(self) -> None:
        rules = self._numeric_rules()
        if self.choices:
            raise self._refuse(f"{', '.join(rules)} beside choices (the choices are the legal values)")
        numeric = self.auto is not None or (_is_number(self.default) and math.isfinite(self.default))
        if not numeric:
            raise self._refuse(f"{', '.join(rules)} apply to numbers, not to {excerpt(self.default)}")
        if self.multiple_of is not None and (type(self.multiple_of) is not int or self.multiple_of < 1):
            raise self._refuse(f"multiple_of must be a positive integer, not {excerpt(self.multiple_of)}")
        for rule, bound in rules.items():
            if not _is_number(bound) or not math.isfinite(bound):
                raise self._refuse(f"{rule} must be a finite number, not {excerpt(bound)}")
            if self.integer and rule != "multiple_of" and not float(bound).is_integer():
                raise self._refuse(f"{rule} {bound} of an integer key must be an integer")
        if self.minimum is not None and self.exclusive_minimum is not None:
            raise self._refuse("declare one lower bound: minimum or exclusive_minimum")
        if self.maximum is not None and self.exclusive_maximum is not None:
            raise self._refuse("declare one upper bound: maximum or exclusive_maximum")
        if self.integer and (self.exclusive_minimum is not None or self.exclusive_maximum is not None):
            raise self._refuse("an integer key's bounds are inclusive: declare minimum / maximum (e.g. minimum=1 "
                               "for above 0)")
        if self.multiple_of is not None and not self.integer:
            raise self._refuse(f"multiple_of applies to integer keys, not to {excerpt(self.default)}")
        lower = self.minimum if self.minimum is not None else self.exclusive_minimum
        upper = self.maximum if self.maximum is not None else self.exclusive_maximum
        strict = self.exclusive_minimum is not None or self.exclusive_maximum is not None
        if lower is not None and upper is not None and (lower > upper or (strict and lower == upper)):
            raise self._refuse(f"no value is {self.values.describe()}")
        if not (self.default == AUTO and self.auto is not None) and not self.values.admits(self.default):
            raise self._refuse(f"default {shown(self.default)} is not {self.values.describe()}")


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
    #: The training task evaluates its stages with :class:`ymir_runner.stages.StageEvaluator`: the core adds
    #: ``save_period``, ``conf_threshold``, ``map_iou_threshold`` and ``max_detections`` to the training template
    #: (:func:`evaluation_params`: those its object types' stages read, only ``save_period`` for semantic
    #: segmentation; each one the plugin's template does not declare itself).
    stage_evaluation: bool = False
    #: The executor reads config.yaml itself, keys of its own the core does not know (the ``sdk`` executor: an
    #: image's own ymir-exc code and /img-man templates): the core does not warn about keys outside its templates.
    reads_own_config: bool = False
    #: Chosen only when named (config key ``plugin``, or a command made for it such as the ``sdk`` plugin's
    #: ``sdk-run``): never picked as the only executor of a task, never merged into img-man's templates, so that
    #: installing it beside another executor changes nothing for that one.
    named_only: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "tasks", frozenset(TaskKind(kind) for kind in self.tasks))
        object.__setattr__(self, "object_types", frozenset(int(kind) for kind in self.object_types))
        object.__setattr__(self, "mining_algorithms", tuple(self.mining_algorithms))
        templates = {TaskKind(kind): tuple(params) for kind, params in self.templates.items()}
        if self.mining_algorithms and TaskKind.MINING in self.tasks:
            declared = {param.name for param in templates.get(TaskKind.MINING, ())}
            added = tuple(param for param in mining_params(self.mining_algorithms) if param.name not in declared)
            templates[TaskKind.MINING] = templates.get(TaskKind.MINING, ()) + added
        if self.stage_evaluation and TaskKind.TRAINING in self.tasks:
            declared = {param.name for param in templates.get(TaskKind.TRAINING, ())}
            added = tuple(param for param in evaluation_params(self.object_types) if param.name not in declared)
            templates[TaskKind.TRAINING] = templates.get(TaskKind.TRAINING, ()) + added
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
        if self.stage_evaluation and TaskKind.TRAINING not in self.tasks:
            raise ValueError(f"executor {self.name!r} declares stage_evaluation but does not handle training")
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


#: ``max_detections: auto`` keeps at least this many boxes per validation image (COCO's maxDets).
AUTO_MAX_DETECTIONS = 100
#: The most boxes kept per validation image: the evaluation holds them all.
MAX_DETECTIONS = 10_000
#: The largest ``save_period``: the engines' most epochs.
MAX_SAVE_PERIOD = 10_000


#: The stage evaluation keys each object type's stages read: a semantic stage (3) has no score threshold, match IoU
#: or box count; an instance stage (4) keeps the platform's 100 predictions per image and class.
EVALUATION_KEYS: Mapping[int, tuple[str, ...]] = {
    2: ("save_period", "conf_threshold", "map_iou_threshold", "max_detections"),
    3: ("save_period",),
    4: ("save_period", "conf_threshold", "map_iou_threshold"),
}


def evaluation_params(object_types: AbstractSet[int] | None = None) -> tuple[Param, ...]:
    """The training template keys of :class:`ymir_runner.stages.StageEvaluator` (public as
    ``ymir_runner.stages.evaluation_params``): ``save_period``, ``conf_threshold``, ``map_iou_threshold`` and
    ``max_detections``, one help text and one range each; with ``object_types``, those the stages of these object
    types read (:data:`EVALUATION_KEYS`: semantic segmentation only ``save_period``). ``ExecutorSpec(
    stage_evaluation=True)`` adds those of its object types."""
    params = (
        Param("save_period", 0,
              "evaluate on the validation set and write a model stage every N epochs; 0: 10 stages evenly spaced "
              "over the run. The last epoch is always a stage", minimum=0, maximum=MAX_SAVE_PERIOD),
        Param("conf_threshold", 0.0,
              "score above which a prediction counts for a stage's tp/fp/fn; 0: each stage's F1-optimal threshold on "
              "the validation set (stored in the model: inference uses it by default)", minimum=0.0, maximum=1.0),
        Param("map_iou_threshold", 0.5,
              "IoU at which a prediction matches an object for a stage's mAP, mAR and tp/fp/fn (result.yaml "
              "evaluate_config.iou_thr: the platform labels mAP with it); COCO mAP50-95 is kept beside it as "
              "mAP50_95; above 0 and below 1", exclusive_minimum=0.0, exclusive_maximum=1.0),
        Param("max_detections", Param.AUTO,
              f"most boxes kept per validation image (COCO maxDets); a number is exactly what is kept. auto: "
              f"{AUTO_MAX_DETECTIONS}, or the object count of the densest validation image when it has more (logged), "
              f"so dense scenes are measured whole; bounded: the evaluation holds them all", auto=int, minimum=1,
              maximum=MAX_DETECTIONS),
    )
    if object_types is None:
        return params
    read = {key for object_type in object_types
            for key in EVALUATION_KEYS.get(object_type, EVALUATION_KEYS[2])}
    return tuple(param for param in params if param.name in read)
