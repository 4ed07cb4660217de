"""Small helpers the checkers share: values as YAML and JSON type them, where a value sits in a document,
numbers parsed from text, a checked file read as UTF-8, YAML loaded within bounds, and container paths mapped to
local ones."""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Iterable

import yaml

from .findings import Collector

#: The bounds a YAML file is read within (the runner's own, kept here so that verify imports nothing of it): its
#: size, its nesting (aliases expanded) and the nodes aliases repeat (a few hundred bytes of aliases can stand for
#: billions of nodes: the "billion laughs" alias bomb).
MAX_YAML_BYTES = 4 * 1024 * 1024
MAX_YAML_DEPTH = 100
MAX_ALIAS_NODES = 100_000
#: libyaml's loader (C) when PyYAML was built with libyaml >= 0.2.5, which bounds nesting in its parser.
YAML_LOADER: Any = (yaml.CSafeLoader if getattr(yaml, "CSafeLoader", None) is not None and tuple(
    getattr(getattr(yaml, "_yaml", None), "get_version", lambda: (0, 0, 0))()) >= (0, 2, 5) else yaml.SafeLoader)


class YamlBoundsError(ValueError):
    """A YAML text past :data:`MAX_YAML_BYTES`, :data:`MAX_YAML_DEPTH` or :data:`MAX_ALIAS_NODES`; ``line``: where
    (1-based), when known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


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


def read_text(collector: Collector, path: str, prefix: str, *, required: bool = True,
              limit: int | None = None) -> str | None:
    """The file's text, or None after reporting ``<prefix>.missing`` / ``<prefix>.encoding``, or
    ``<prefix>.bounds`` for a file of more than ``limit`` bytes."""
    if not os.path.isfile(path):
        if required:
            what = "is not a file" if os.path.exists(path) else "is missing"
            collector.error(f"{prefix}.missing", path, f"{what}: the platform expects it")
        return None
    with open(path, "rb") as stream:
        data = stream.read(-1 if limit is None else limit + 1)
    if limit is not None and len(data) > limit:
        collector.error(f"{prefix}.bounds", path, f"larger than {limit // 2 ** 20} MiB, the most verify reads of a "
                        f"YAML file: not checked")
        return None
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


def load_yaml(text: str, loader: Any = YAML_LOADER) -> Any:
    """``yaml.load`` of ``text`` with ``loader`` (safe_load's by default), after a scan of the parser's events that
    raises :class:`YamlBoundsError` past a bound: no alias is expanded there, each adds the size of what it names."""
    if len(text) > MAX_YAML_BYTES:
        raise YamlBoundsError(f"larger than {MAX_YAML_BYTES // 2 ** 20} MiB")
    sizes: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, levels) of its node
    stack: list[list[Any]] = []  # open collections: [nodes, levels below, anchor]
    repeated = 0
    events: Iterable[Any] = yaml.parse(text, Loader=YAML_LOADER)
    try:
        for event in events:
            line = event.start_mark.line + 1
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                stack.append([1, 0, event.anchor])
                if len(stack) > MAX_YAML_DEPTH:
                    raise YamlBoundsError(f"nested more than {MAX_YAML_DEPTH} levels deep", line)
                continue
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                size, below, anchor = stack.pop()
                node = (size, below + 1)
            elif isinstance(event, yaml.AliasEvent):
                if any(open_node[2] == event.anchor for open_node in stack):
                    raise YamlBoundsError(f"alias *{event.anchor} is inside what it names (a recursive structure)",
                                          line)
                node, anchor = sizes.get(event.anchor or "", (1, 0)), None  # undefined: the loader says so
                repeated += node[0]
                if repeated > MAX_ALIAS_NODES:
                    raise YamlBoundsError(f"more than {MAX_ALIAS_NODES} alias expansions: a YAML alias bomb?", line)
            elif isinstance(event, yaml.ScalarEvent):
                node, anchor = (1, 0), event.anchor
            else:
                continue
            if anchor:
                sizes[anchor] = node
            if stack:
                stack[-1][0] += node[0]
                stack[-1][1] = max(stack[-1][1], node[1])
                if len(stack) + node[1] > MAX_YAML_DEPTH:
                    raise YamlBoundsError(f"nested more than {MAX_YAML_DEPTH} levels deep, aliases expanded", line)
    except yaml.MarkedYAMLError as error:
        if "maximum nesting depth" in str(error.problem):  # libyaml's own bound, 1,000 levels
            line = error.problem_mark.line + 1 if error.problem_mark else None
            raise YamlBoundsError(f"nested more than {MAX_YAML_DEPTH} levels deep", line) from None
        raise
    return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader: YAML_LOADER or _LenientLoader
