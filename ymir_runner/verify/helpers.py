"""Small helpers the checkers share: values as YAML and JSON type them, where a value sits in a document,
numbers parsed from text, a checked file read as UTF-8, and container paths mapped to local ones."""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

from .findings import Collector


def is_int(value: Any) -> bool:
    """YAML/JSON integers only: bool is an int subclass in Python but not a number in the protocol."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def type_name(value: Any) -> str:
    """What a YAML/JSON value is, for messages: ``a string``, ``a mapping``, ``null``..."""
    return {bool: "a boolean", str: "a string", float: "a float", int: "an integer", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)


def key_path(*keys: Any) -> str:
    """``model_stages.epoch_1.files[0]``: where a value sits in a YAML/JSON document."""
    text = ""
    for key in keys:
        if isinstance(key, int):
            text += f"[{key}]"
        elif isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_\-]+", key):
            text += f".{key}" if text else key
        else:
            text += f"[{json.dumps(key)}]"
    return text


def parse_float(text: str) -> float | None:
    """The finite float ``text`` spells, else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_int(text: str) -> int | None:
    """The integer ``text`` spells, else None."""
    try:
        return int(text)
    except ValueError:
        return None


def version_text(version: tuple[int, ...]) -> str:
    """(1, 1, 0) → ``"1.1.0"``."""
    return ".".join(map(str, version))


def read_text(collector: Collector, path: str, prefix: str, *, required: bool = True) -> str | None:
    """The file's text, or None after reporting ``<prefix>.missing`` / ``<prefix>.encoding``."""
    if not os.path.isfile(path):
        if required:
            what = "is not a file" if os.path.exists(path) else "is missing"
            collector.error(f"{prefix}.missing", path, f"{what}: the platform expects it")
        return None
    with open(path, "rb") as stream:
        data = stream.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        collector.error(f"{prefix}.encoding", path, f"not UTF-8 ({error.reason} at byte {error.start})")
        return None


def map_container_path(path: str, out_dir: str, root: str | None) -> str:
    """/out/... → under OUT_DIR; /in/... under ``root`` (standing in for '/', as ``ymir-runner run --root`` reads
    it) when given; other paths as they are."""
    if path == "/out" or path.startswith("/out/"):
        return os.path.join(out_dir, path[len("/out/"):])
    if root and (path == "/in" or path.startswith("/in/")):
        return os.path.join(root, path.lstrip("/"))
    return path
