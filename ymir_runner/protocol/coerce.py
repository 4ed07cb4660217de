"""Turning web-UI values back into the types of the template defaults.

YMIR's web UI sends every non-numeric template value back as a string ("true", "False", "0.5") and drops
keys whose value is ''. These helpers raise ValueError with a reason; the config reader turns that into a
300001 error naming the key.

A key declared ``Param(..., auto=int)`` (or ``float``) takes the word :data:`AUTO` (the executor chooses the
number, and logs what and why) or a number of that type: :func:`to_auto`.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError
from .yaml_file import YamlLimitError, parse_yaml

#: The value of a key declared with ``Param(..., auto=...)`` that lets the executor choose the number itself.
AUTO = "auto"

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected a boolean (true/false/True/False/1/0)")


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer, got a boolean")
    if isinstance(value, int):
        return value
    number = to_float(value)
    if not number.is_integer():
        raise ValueError("expected an integer")
    return int(number)


def to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise ValueError("expected a number") from None
    if not math.isfinite(number):
        raise ValueError("expected a finite number")
    return number


def to_str(value: Any) -> str:
    if isinstance(value, (list, dict)):
        raise ValueError("expected a string")
    return str(value)


def to_list(value: Any) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = parse_yaml(text, "the value")
            except YamlLimitError as error:
                raise ValueError(f"expected a list; {error}") from None
            except ConfigError:
                raise ValueError("expected a list") from None
            if isinstance(parsed, list):
                return parsed
            raise ValueError("expected a list")
        return [part.strip() for part in text.split(",") if part.strip()]
    raise ValueError("expected a list")


def to_dict(value: Any) -> dict:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            parsed = parse_yaml(value, "the value")
        except YamlLimitError as error:
            raise ValueError(f"expected a mapping; {error}") from None
        except ConfigError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    raise ValueError("expected a mapping")


_BY_TYPE = {bool: to_bool, int: to_int, float: to_float, str: to_str, list: to_list, tuple: to_list, dict: to_dict}
_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", tuple: "list",
               dict: "mapping"}


def type_name(default: Any) -> str:
    return _TYPE_NAMES.get(type(default), type(default).__name__)


def auto_type_name(kind: type) -> str:
    """What a key declared ``Param(..., auto=kind)`` takes, for messages: ``integer or 'auto'``."""
    return f"{_TYPE_NAMES.get(kind, kind.__name__)} or {AUTO!r}"


def to_auto(value: Any, kind: type) -> Any:
    """:data:`AUTO` for the word ``auto`` in any case (the web UI sends strings: "AUTO", " auto "), else ``value``
    coerced to ``kind`` (int or float: "5" -> 5, 5.0 -> 5 for int)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    return _BY_TYPE[kind](value)


def coerce_like(value: Any, default: Any) -> Any:
    """Coerce ``value`` to the type of the template's ``default`` (None default: keep the value as is)."""
    if default is None or value is None:
        return value
    convert = _BY_TYPE.get(type(default))
    return value if convert is None else convert(value)
