"""Reading YAML: every YAML document the project reads goes through here (env.yaml, config.yaml, a result.yaml or
ymir-info.yaml, a YOLO data.yaml, a config value the web UI sent as a string), within bounds, and
:func:`excerpt`, what a message shows of a value.

A YAML file is small text, but a few hundred bytes of aliases (``b: &b [*a, *a, ...]``, "billion laughs") stand for
billions of nodes once something walks them (EasyDict, ``repr``, a checker), and thousands of ``[`` nest deeper
than any recursive walk can go. So, before anything is composed, the parser's events are scanned (no alias is ever
expanded there) and a document is refused, as a :class:`YamlLimitError` (300001) naming the file and the bound,
when it nests deeper than :data:`MAX_YAML_DEPTH` levels or repeats more than :data:`MAX_ALIAS_NODES` nodes through
aliases (an alias inside the collection it names, a recursive structure, too). Only a regular file of at most
:data:`MAX_YAML_BYTES` is read (:mod:`.files`: a FIFO or a device would block or never end).

libyaml's loader (``CSafeLoader``, about 5x faster than PyYAML's own) is used when PyYAML was built with libyaml
0.2.5 or newer, whose parser bounds nesting itself; otherwise PyYAML's ``SafeLoader``. Either way the rules are
safe_load's, as the platform's (PyYAML's ``yaml.safe_load``). A key written twice in one mapping keeps its LAST
value, as PyYAML (and so the platform) reads it, silently: here each such key is logged as a warning with both
lines.
"""

from __future__ import annotations

import io
import logging
from typing import Any, Iterable, Mapping

import yaml

from ..errors import ConfigError
from .files import UnreadableFile, read_bytes, size_text

log = logging.getLogger("ymir_runner.yaml")

#: The largest YAML file read (env.yaml, config.yaml, result.yaml, ymir-info.yaml...): the platform's own are a few
#: KB, a config.yaml with 10,000 class names about 200 KB. The slowest 4 MiB (260,000 short keys) takes 3-5 s and
#: 230 MB to load with libyaml, 15 s with PyYAML's own loader (16 MiB: 10-25 s and 800 MB with libyaml).
MAX_YAML_BYTES = 4 * 1024 * 1024
#: Nesting levels (mappings and sequences inside each other, aliases expanded) of a YAML document; the
#: protocol's files nest 4 at most.
MAX_YAML_DEPTH = 100
#: Nodes that aliases may repeat in one YAML document (each ``*name`` counts the nodes of what it names, aliases
#: inside included): shared settings repeat a few hundred, an alias bomb billions.
MAX_ALIAS_NODES = 100_000
#: What a message shows of a value at most (:func:`excerpt`).
EXCERPT_CHARS = 80
#: Duplicate keys named one by one in the warnings of one document; the rest are counted.
_DUPLICATES_NAMED = 5

_MERGE_TAG = "tag:yaml.org,2002:merge"


class YamlLimitError(ConfigError):
    """A YAML document over one of the bounds (300001): too large, too deep, too many alias repetitions, a
    recursive alias, or a file that is not a regular file."""


def _base_loader() -> type:
    """libyaml's safe loader when PyYAML has it, built with libyaml >= 0.2.5 (its parser refuses nesting beyond
    1,000 levels, so nothing recursive in C ever runs deep), else PyYAML's pure-Python one."""
    loader = getattr(yaml, "CSafeLoader", None)
    version = getattr(getattr(yaml, "_yaml", None), "get_version", lambda: (0, 0, 0))()
    return loader if loader is not None and tuple(version) >= (0, 2, 5) else yaml.SafeLoader


_BASE_LOADER: Any = _base_loader()


class _Loader(_BASE_LOADER):
    """safe_load's loader that notes each key written twice in one mapping (the last value wins, as in PyYAML)."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[Any, int, int]] = []
        self.duplicate_count = 0

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            keys = [(key.tag, key.value) for key, _ in node.value
                    if type(key) is yaml.ScalarNode and key.tag != _MERGE_TAG]  # not keys merged in with <<
            if len(set(keys)) != len(keys):
                self._note_duplicates(node)
        return super().construct_mapping(node, deep=deep)

    def _note_duplicates(self, node: Any) -> None:
        lines: dict[tuple[str, str], int] = {}
        for key, _ in node.value:
            if type(key) is not yaml.ScalarNode or key.tag == _MERGE_TAG:
                continue
            line = key.start_mark.line + 1
            if (key.tag, key.value) in lines:
                self.duplicate_count += 1
                if len(self.duplicates) < _DUPLICATES_NAMED:
                    self.duplicates.append((key.value, lines[key.tag, key.value], line))
            lines[key.tag, key.value] = line


class _NamedStream(io.BytesIO):
    """The bytes of a file, named as the file in the parser's error marks."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name


def _check_bounds(data: bytes, name: str, where: str) -> None:
    """Scan the parser's events of ``data`` and raise :class:`YamlLimitError` (naming ``where``) at the first
    bound exceeded; ``name`` names the file in the parser's marks. Each node's size (its nodes, aliases expanded)
    and height are counted as it closes; an alias adds the size of the node it names without expanding it."""
    anchors: dict[str, tuple[int, int]] = {}  # anchor -> (nodes, levels) of the node it names
    open_nodes: list[list[Any]] = []  # the collections being read: [nodes, levels of the deepest child, anchor]
    repeated = 0
    events: Iterable[Any] = yaml.parse(_NamedStream(data, name), Loader=_BASE_LOADER)
    for event in events:
        kind = type(event)
        line = event.start_mark.line + 1
        if kind is yaml.ScalarEvent:
            nodes, levels, anchor = 1, 0, event.anchor
        elif kind is yaml.AliasEvent:
            if event.anchor not in anchors:
                if any(frame[2] == event.anchor for frame in open_nodes):
                    raise YamlLimitError(f"{where}: alias *{event.anchor} on line {line} is inside the collection it "
                                         f"names (a recursive structure, which nothing can walk)")
                continue  # an undefined alias: the composer names it
            (nodes, levels), anchor = anchors[event.anchor], None
            repeated += nodes
            if repeated > MAX_ALIAS_NODES:
                raise YamlLimitError(f"{where}: more than {MAX_ALIAS_NODES} alias expansions (nodes repeated through "
                                     f"aliases, at line {line}): a YAML alias bomb?")
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            open_nodes.append([1, 0, event.anchor])
            if len(open_nodes) > MAX_YAML_DEPTH:
                raise YamlLimitError(f"{where}: nested more than {MAX_YAML_DEPTH} levels deep (line {line})")
            continue
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            nodes, levels, anchor = open_nodes.pop()
            levels += 1
        else:
            continue
        if anchor:
            anchors[anchor] = (nodes, levels)
        if open_nodes:
            parent = open_nodes[-1]
            parent[0] += nodes
            parent[1] = max(parent[1], levels)
            if len(open_nodes) + levels > MAX_YAML_DEPTH:  # an alias of a deep collection, deep inside
                raise YamlLimitError(f"{where}: nested more than {MAX_YAML_DEPTH} levels deep once its aliases are "
                                     f"expanded (line {line})")


def _load(data: bytes, name: str, where: str) -> Any:
    """The one document in ``data`` (UTF-8, already checked; ``name`` for the parser's marks, ``where`` for
    messages), bounds checked first. YAMLError, or ValueError for a value PyYAML parses but Python refuses (a
    5,000-digit integer, the 13th month)."""
    try:
        _check_bounds(data, name, where)
    except yaml.MarkedYAMLError as error:
        if "maximum nesting depth" not in str(error.problem):  # libyaml's own bound, 1,000 levels
            raise
        line = error.problem_mark.line + 1 if error.problem_mark else 1
        raise YamlLimitError(f"{where}: nested more than {MAX_YAML_DEPTH} levels deep (line {line})") from None
    loader = _Loader(_NamedStream(data, name))
    try:
        document = loader.get_single_data()
    finally:
        loader.dispose()
    for key, first, line in loader.duplicates:
        log.warning("%s: key %s on line %d is also on line %d: the value of line %d is used (the last, as the "
                    "platform's YAML loader reads it)", where, excerpt(key), line, first, line)
    if loader.duplicate_count > len(loader.duplicates):
        log.warning("%s: %d more keys written twice in one mapping (the last value is used)", where,
                    loader.duplicate_count - len(loader.duplicates))
    return document


def _read_bytes(path: str, what: str) -> bytes:
    """At most :data:`MAX_YAML_BYTES` of the regular file ``path`` (a link to one is fine; :mod:`.files`).
    ConfigError naming the file when it cannot be opened; YamlLimitError when it is not a regular file or is
    larger."""
    try:
        return read_bytes(path, limit=MAX_YAML_BYTES)
    except UnreadableFile as error:
        raise YamlLimitError(f"cannot read {what} {path}: {error}; YAML is read from a regular file of at most "
                             f"{size_text(MAX_YAML_BYTES)}") from None
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path}: {error.strerror or error}") from error


def read_yaml(path: str, what: str) -> Any:
    """The YAML document in the file ``path``, as ``yaml.safe_load`` reads it, within the bounds of this module.

    ``what`` names the file in messages (``"config file"``, ``"model result file"``). Raises
    :class:`~ymir_runner.errors.ConfigError` naming the file when it cannot be read, is not UTF-8 text or is not
    valid YAML, and its subclass :class:`YamlLimitError` for a bound exceeded (the message names the bound).
    """
    data = _read_bytes(path, what)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{what} {path} is not UTF-8 text: {error}") from error
    try:
        return _load(data, path, f"{what} {path}")
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {' '.join(str(error).split())}") from error
    except (ValueError, OverflowError) as error:  # a value Python refuses, e.g. a 5,000-digit integer
        raise ConfigError(f"{what} {path} is not valid YAML: {error}") from error


def read_yaml_mapping(path: str, what: str, *, empty_ok: bool = False) -> dict[str, Any]:
    """The YAML mapping in ``path``, read by :func:`read_yaml`.

    An empty file gives ``{}`` when ``empty_ok``. Raises :class:`~ymir_runner.errors.ConfigError` naming the file
    as :func:`read_yaml` does, and when the file does not hold a mapping (the message names the type it holds).
    """
    raw = read_yaml(path, what)
    if raw is None and empty_ok:
        return {}
    if not isinstance(raw, Mapping):
        held = "nothing" if raw is None else type(raw).__name__
        raise ConfigError(f"{what} {path} must hold a YAML mapping, got {held}")
    return dict(raw)


def parse_yaml(text: str, what: str) -> Any:
    """``text`` read as one YAML document, within the bounds of :func:`read_yaml` (a config value the web UI sent
    as a string, a ``--set`` value). ``what`` names it in messages. Raises :class:`YamlLimitError` for a bound
    exceeded and :class:`~ymir_runner.errors.ConfigError` for text that is not valid YAML."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > MAX_YAML_BYTES:
        raise YamlLimitError(f"{what}: larger than {size_text(MAX_YAML_BYTES)}, the most a YAML text may hold")
    try:
        return _load(data, "<text>", what)
    except (yaml.YAMLError, ValueError, OverflowError) as error:
        raise ConfigError(f"{what} is not valid YAML: {' '.join(str(error).split())}") from error


def salvage_scalars(path: str, wanted: Iterable[tuple[str, ...]]) -> dict[tuple[str, ...], str]:
    """The scalars at the ``wanted`` key paths (``("output", "monitor_file")``) of a YAML file that could not be
    loaded, as text: what can still be read of it, from the parser's events up to its first error, expanding
    nothing (where the monitor.txt of a broken env.yaml goes). Never raises."""
    wanted = set(wanted)
    found: dict[tuple[str, ...], str] = {}
    open_nodes: list[list[Any]] = []  # per open collection: [is a mapping, its key path or None, key, key next]

    def node_done() -> None:  # a key or a value ended in the innermost collection
        if open_nodes and open_nodes[-1][0]:
            frame = open_nodes[-1]
            if frame[3]:  # a collection or an alias as a key: nothing wanted lies under it
                frame[2] = None
            frame[3] = not frame[3]

    try:
        data = _read_bytes(path, "YAML file")
        for event in yaml.parse(_NamedStream(data, path), Loader=_BASE_LOADER):
            top = open_nodes[-1] if open_nodes else None
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                keys = () if top is None else top[1] + (top[2],) if (
                    top[0] and not top[3] and top[1] is not None and isinstance(top[2], str)) else None
                open_nodes.append([isinstance(event, yaml.MappingStartEvent), keys, None, True])
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                open_nodes.pop()
                node_done()
            elif isinstance(event, yaml.ScalarEvent) and top is not None and top[0] and top[3]:
                top[2], top[3] = event.value, False
            elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
                if isinstance(event, yaml.ScalarEvent) and top is not None and top[0] and top[1] is not None:
                    keys = top[1] + (top[2],)
                    if keys in wanted:
                        found.setdefault(keys, event.value)
                node_done()
    except (ConfigError, yaml.YAMLError, ValueError):
        pass
    return found


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` for a message, at most about ``limit`` characters, never computing the whole repr: a long
    string or collection ends ``... (N characters)``, ``... (N items)`` or ``... (N keys)``."""
    pieces: list[str] = []
    _bounded_repr(value, pieces, limit + 1)
    text = "".join(pieces)
    if len(text) <= limit:
        return text
    unit = ("character" if isinstance(value, (str, bytes)) else "key" if isinstance(value, Mapping) else
            "item" if isinstance(value, (list, tuple, set, frozenset)) else "")
    size = f" ({len(value)} {unit}{'' if len(value) == 1 else 's'})" if unit else ""
    return f"{text[:limit]}...{size}"


def _bounded_repr(value: Any, pieces: list[str], room: int) -> int:
    """Append the repr of ``value`` to ``pieces`` until ``room`` characters are used; returns the room left."""
    if room <= 0:
        return room
    entries: Iterable[tuple[Any, ...]]
    if isinstance(value, Mapping):
        entries, opening, closing = value.items(), "{", "}"
    elif isinstance(value, (list, tuple, set, frozenset)):
        entries = ((item,) for item in value)
        opening, closing = "[]" if isinstance(value, list) else "()" if isinstance(value, tuple) else "{}"
    else:
        try:
            text = repr(value[:room] if isinstance(value, (str, bytes)) else value)
        except ValueError:  # an integer of more than 4,300 digits has no repr
            text = f"<an integer of {value.bit_length()} bits>" if isinstance(value, int) else type(value).__name__
        pieces.append(text[:room])
        return room - len(text)
    pieces.append(opening)
    room -= 1
    for index, entry in enumerate(entries):
        if room <= 0:
            return room
        for position, part in enumerate(entry):
            if index or position:
                pieces.append(": " if position else ", ")
                room -= 2
            room = _bounded_repr(part, pieces, room)
    pieces.append("," + closing if isinstance(value, tuple) and len(value) == 1 else closing)
    return room - 1
