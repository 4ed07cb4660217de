"""/in/config.yaml: the reserved keys the platform writes, typed, and the plugin's hyper-parameters."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Iterable, Mapping

from easydict import EasyDict

from ..errors import ConfigError
from .annotations import ANNOTATION_FORMATS, canonical_format
from .coerce import AUTO, auto_type_name, coerce_like, to_auto, to_int, to_list, type_name
from .paths import reroot
from .yaml_file import excerpt, read_yaml_mapping


@dataclasses.dataclass(frozen=True)
class ReservedKey:
    """A config.yaml key that is not a hyper-parameter of a plugin (protocol.md section 2)."""

    name: str
    #: The platform writes the value itself, with its real type (a list, an int, a bool), over any template value;
    #: the web UI's string conversion never touches it.
    platform_typed: bool
    #: An image's template declares the key (its default is edited in the web UI like a hyper-parameter, and
    #: turned into a string like one).
    in_template: bool
    #: The value follows the task's dataset or chosen model (class list, model files), not a user's choice.
    from_task_data: bool = False


#: The one table of config.yaml's reserved keys. Each is a typed field of :class:`TaskConfig` (or, for the run
#: flags, only in ``raw``), never a hyper-parameter, and a plugin's template must not declare it: ``ymir-runner
#: img-man`` writes ``gpu_count``, ``shm_size`` and ``export_format`` itself. ``plugin`` is ymir-runner's own.
CONFIG_KEYS: Mapping[str, ReservedKey] = {key.name: key for key in (
    ReservedKey("task_id", platform_typed=True, in_template=False),
    ReservedKey("class_names", platform_typed=True, in_template=False, from_task_data=True),
    ReservedKey("gpu_id", platform_typed=True, in_template=False),
    ReservedKey("gpu_count", platform_typed=True, in_template=True),
    ReservedKey("object_type", platform_typed=True, in_template=False),
    ReservedKey("pretrained_model_params", platform_typed=True, in_template=False, from_task_data=True),
    ReservedKey("model_params_path", platform_typed=True, in_template=False, from_task_data=True),
    ReservedKey("run_infer", platform_typed=True, in_template=False),
    ReservedKey("run_mining", platform_typed=True, in_template=False),
    ReservedKey("shm_size", platform_typed=False, in_template=True),
    ReservedKey("export_format", platform_typed=False, in_template=True),
    ReservedKey("openpai_enable", platform_typed=False, in_template=False),
    ReservedKey("plugin", platform_typed=False, in_template=False),
)}
RESERVED_KEYS = frozenset(CONFIG_KEYS)
#: ``object_type`` values (protocol.md section 2).
OBJECT_TYPES = {2: "detection", 3: "semantic segmentation", 4: "instance segmentation"}
DETECTION = 2
SEMANTIC_SEGMENTATION = 3
INSTANCE_SEGMENTATION = 4
#: The object types whose objects are masks (segmentation.md): they read seg-coco and write COCO masks.
SEGMENTATION = frozenset({SEMANTIC_SEGMENTATION, INSTANCE_SEGMENTATION})
#: The ``shm_size`` ymir-runner writes into an image's templates (DataLoader workers pass batches through it).
DEFAULT_SHM_SIZE = "16G"
#: Keys the platform fills into every config.yaml and no template declares (img-man lists them in a comment).
PLATFORM_FILLED_KEYS = tuple(key.name for key in CONFIG_KEYS.values() if key.platform_typed and not key.in_template)
#: Keys written with their real types: the web UI's string conversion only touches the others.
PLATFORM_TYPED_KEYS = frozenset(key.name for key in CONFIG_KEYS.values() if key.platform_typed)
#: Keys whose value follows the task's dataset or model (``ymir-runner sandbox`` computes them; --set may not).
TASK_DATA_KEYS = frozenset(key.name for key in CONFIG_KEYS.values() if key.from_task_data)


@dataclasses.dataclass(frozen=True)
class ExportFormat:
    """``export_format: <annotation>:<asset>`` (e.g. ``ark:raw``). An empty value means VOC."""

    annotation: str
    asset: str
    raw: str

    @classmethod
    def parse(cls, text: Any) -> ExportFormat:
        raw = "" if text is None else str(text).strip()
        if not raw:
            return cls("det-voc", "raw", raw)
        if raw.count(":") != 1:
            raise ConfigError(f"config key 'export_format': {excerpt(raw)} must be '<annotation>:<asset>', e.g. "
                              f"'ark:raw'")
        annotation, asset = (part.strip().lower() for part in raw.split(":"))
        return cls(canonical_format(annotation), asset or "raw", raw)

    @property
    def known(self) -> bool:
        return self.annotation in ANNOTATION_FORMATS


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """config.yaml, validated once: reserved keys typed, everything else in ``hyper`` (an EasyDict)."""

    task_id: str
    class_names: tuple[str, ...]
    gpu_ids: tuple[int, ...]
    gpu_count: int
    object_type: int
    shm_size: str | None
    #: Training only; empty when the key is absent (no pretrained model chosen).
    pretrained_model_params: tuple[str, ...]
    #: Mining / inference: the model files of the chosen stage.
    model_params_path: tuple[str, ...]
    #: Training only (None when the key is absent).
    export_format: ExportFormat | None
    #: The executor the task asks for by name (``plugin`` key), when several could run it.
    plugin: str | None
    hyper: EasyDict
    raw: Mapping[str, Any]

    @property
    def annotation_format(self) -> str:
        """The annotation format of the training and validation sets (an absent export_format means VOC)."""
        return self.export_format.annotation if self.export_format else "det-voc"


def read_config_file(path: str) -> dict[str, Any]:
    """config.yaml's mapping (an empty file is an empty mapping); ConfigError naming the file otherwise."""
    return read_yaml_mapping(path, "config file", empty_ok=True)


def _reserved(raw: Mapping[str, Any], key: str, convert, expected: str, default: Any) -> Any:
    value = raw.get(key)
    if value is None or value == "":
        return default
    try:
        return convert(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config key {key!r}: {excerpt(value)} is not {expected} ({error})") from None


def _gpu_ids(value: Any) -> tuple[int, ...]:
    items = [value] if isinstance(value, int) else to_list(value)
    return tuple(to_int(item) for item in items)


def _paths(value: Any, root: str | None = None) -> tuple[str, ...]:
    return tuple(reroot(str(item), root) for item in to_list(value))


def parse_config(raw: Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
                 choices: Mapping[str, Iterable[Any]] | None = None, *, root: str | None = None,
                 auto: Mapping[str, type] | None = None,
                 bounds: Mapping[str, tuple[float | None, float | None]] | None = None,
                 values: Mapping[str, LegalValues] | None = None) -> TaskConfig:
    """Validate ``raw`` config.yaml content against the plugin's template ``defaults``.

    Values are coerced to the type of the default ('16' → 16, 'False' → False); a value that cannot be is a
    ConfigError naming the key, the value and the expected type. Unknown keys are kept unchanged. Keys the
    web UI dropped (because their value was '') take the template default. A key of ``auto`` (``Param(...,
    auto=int)``: name -> type) is the word 'auto' in any case ('AUTO' → 'auto') or coerced to its type ('5' → 5).

    Then every key with declared ``values`` (name -> :class:`LegalValues`, what ``Param.values`` gives) is checked
    against them, in one message form whatever the rule: ``config key 'img_size': 100 is not a multiple of 32 from
    32 to 2048`` (:func:`value_error`). ``choices`` (name -> the allowed values) and ``bounds`` (name -> (minimum,
    maximum), inclusive, None: unbounded) are shorthands for ``values`` holding only those rules.
    """
    defaults = dict(defaults or {})
    auto = dict(auto or {})
    hyper = EasyDict()
    for key, default in defaults.items():
        if key not in RESERVED_KEYS:
            hyper[key] = default
    for key, value in raw.items():
        if not isinstance(key, str) or key in RESERVED_KEYS:
            continue
        if value is None and key in defaults:  # `key:` with no value, like a key the web UI dropped
            continue
        default, kind = defaults.get(key), auto.get(key)
        try:
            hyper[key] = coerce_like(value, default) if kind is None else to_auto(value, kind)
        except (TypeError, ValueError) as error:
            expected = type_name(default) if kind is None else auto_type_name(kind)
            raise ConfigError(f"config key {excerpt(key)}: {excerpt(value)} is not a valid {expected} ({error})"
                              ) from None
    declared = _shorthand_values(defaults, auto, choices, bounds)
    declared.update(values or {})
    for key, legal in declared.items():
        if key in hyper and not legal.admits(hyper[key]):
            raise value_error(key, hyper[key], legal)

    export = raw.get("export_format")
    return TaskConfig(
        task_id=str(raw.get("task_id") or ""),
        class_names=_reserved(raw, "class_names", _class_names, "a list of class names", ()),
        gpu_ids=_reserved(raw, "gpu_id", _gpu_ids, "a comma-separated list of GPU ids", ()),
        gpu_count=_reserved(raw, "gpu_count", to_int, "an integer", 0),
        object_type=_reserved(raw, "object_type", to_int, "an integer", DETECTION),
        shm_size=_reserved(raw, "shm_size", str, "a size", None),
        pretrained_model_params=_reserved(raw, "pretrained_model_params", lambda v: _paths(v, root),
                                          "a list of paths", ()),
        model_params_path=_reserved(raw, "model_params_path", lambda v: _paths(v, root), "a list of paths", ()),
        export_format=None if "export_format" not in raw else ExportFormat.parse(export),
        plugin=_reserved(raw, "plugin", str, "an executor name", None),
        hyper=hyper,
        raw=dict(raw),
    )


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def shown(value: Any) -> str:
    """A config value as messages show it: a number as written (``1e-05``, ``32``), anything else its excerpt."""
    return _number(value) if _is_number(value) else excerpt(value)


@dataclasses.dataclass(frozen=True)
class LegalValues:
    """The values a template key takes (``Param.values``): choices, or a range of integers or numbers, possibly a
    multiple of a step, possibly the word ``auto`` besides. The bounds have JSON Schema's names and meanings
    (``minimum`` / ``maximum`` inclusive, ``exclusive_minimum`` / ``exclusive_maximum`` strict, ``multiple_of``);
    None is no such rule. :meth:`describe` is the one text of them, used in the error of a value outside them
    (:func:`value_error`), in img-man's template comments and in ``ymir-runner inspect``. Kinds as ultralytics
    ``cfg/__init__.py`` declares them (``CFG_FRACTION_KEYS``, ``CFG_INT_KEYS``), checked once (``check_cfg``)."""

    choices: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    exclusive_maximum: float | None = None
    multiple_of: int | None = None
    #: The key takes integers (its default is an int, or it is ``auto=int``); numbers otherwise.
    integer: bool = False
    #: The key also takes the word ``auto`` (``Param(..., auto=...)``).
    auto: bool = False

    @property
    def declared(self) -> bool:
        """Whether any rule is declared (else every value of the key's type is legal)."""
        return bool(self.choices) or self.multiple_of is not None or any(
            bound is not None for bound in (self.minimum, self.maximum, self.exclusive_minimum,
                                             self.exclusive_maximum))

    def admits(self, value: Any) -> bool:
        """Whether ``value`` (already coerced to the key's type) is legal. Only numbers are held to the numeric
        rules: a value of another type is the coercion's to refuse."""
        if self.auto and value == AUTO:
            return True
        if self.choices:
            return value in self.choices
        if not _is_number(value):
            return True
        return ((self.minimum is None or value >= self.minimum)
                and (self.maximum is None or value <= self.maximum)
                and (self.exclusive_minimum is None or value > self.exclusive_minimum)
                and (self.exclusive_maximum is None or value < self.exclusive_maximum)
                and (self.multiple_of is None or value % self.multiple_of == 0))

    def describe(self) -> str:
        """``a multiple of 32 from 32 to 2048``, ``a number above 0 and below 1``, ``an integer at least 0 or
        auto``, ``one of 'adamw', 'sgd'``: what the key takes, completing "<value> is not ..."."""
        if self.choices:
            return "one of " + ", ".join(shown(choice) for choice in self.choices)
        if self.multiple_of is not None:
            noun = f"a multiple of {self.multiple_of}"
        else:
            noun = "an integer" if self.integer else "a number"
        text = " ".join(part for part in (noun, self._range()) if part)
        return f"{text} or {AUTO}" if self.auto else text

    def _range(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"from {_number(self.minimum)} to {_number(self.maximum)}"
        lower = (f"at least {_number(self.minimum)}" if self.minimum is not None else
                 f"above {_number(self.exclusive_minimum)}" if self.exclusive_minimum is not None else "")
        upper = (f"at most {_number(self.maximum)}" if self.maximum is not None else
                 f"below {_number(self.exclusive_maximum)}" if self.exclusive_maximum is not None else "")
        return " and ".join(part for part in (lower, upper) if part)


def value_error(key: str, value: Any, legal: LegalValues) -> ConfigError:
    """The one error of a value outside its key's declared values (300001): ``config key 'img_size': 100 is not a
    multiple of 32 from 32 to 2048`` (ultralytics ``check_cfg``: "'mosaic=2.0' is an invalid value. Valid 'mosaic'
    values are between 0.0 and 1.0.")."""
    return ConfigError(f"config key {key!r}: {shown(value)} is not {legal.describe()}")


def _shorthand_values(defaults: Mapping[str, Any], auto: Mapping[str, type],
                      choices: Mapping[str, Iterable[Any]] | None,
                      bounds: Mapping[str, tuple[float | None, float | None]] | None) -> dict[str, LegalValues]:
    """parse_config's ``choices`` and ``bounds`` as :class:`LegalValues`."""
    values = {key: LegalValues(choices=tuple(allowed)) for key, allowed in (choices or {}).items() if allowed}
    for key, (minimum, maximum) in (bounds or {}).items():
        integer = auto.get(key) is int or (key not in auto and type(defaults.get(key)) is int)
        values[key] = LegalValues(minimum=minimum, maximum=maximum, integer=integer, auto=key in auto)
    return values


def _class_names(value: Any) -> tuple[str, ...]:
    names = tuple(str(name).strip() for name in to_list(value))
    if any(not name for name in names):
        raise ValueError("empty class name")
    if len(set(names)) != len(names):
        raise ValueError("duplicate class names")
    folded: dict[str, str] = {}
    for name in names:  # the platform lower-cases every label: 'Cat' and 'cat' are one class there
        if folded.setdefault(name.lower(), name) != name:
            raise ValueError(f"class names {excerpt(folded[name.lower()])} and {excerpt(name)} differ only by case "
                             f"(the platform's labels are lower case: one class)")
    return names



def unknown_key_warnings(raw: Mapping[str, Any], known: Iterable[str], executor: str) -> list[str]:
    """One warning per key of config.yaml ``raw`` that is neither a template key of the chosen executor
    (``known``: the keys of every template the run uses) nor one the platform writes (:data:`RESERVED_KEYS`):
    such a key is ignored, and a misspelt one (``epoch``) would silently leave the real key at its default. Each
    names the closest known key when there is one (difflib, ratio >= 0.6). Never an error: the platform may add
    keys of its own."""
    template = set(known)
    candidates = sorted(template | RESERVED_KEYS)
    warnings = []
    for key in raw:
        if not isinstance(key, str) or key in template or key in RESERVED_KEYS:
            continue
        close = difflib.get_close_matches(key, candidates, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        warnings.append(f"config key {excerpt(key)} is not a template key of executor {executor!r} nor one the "
                        f"platform writes: the executor does not read it{hint}")
    return warnings
