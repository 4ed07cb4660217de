"""Where each asset of a sandbox came from: ``in/sandbox-origins.tsv``, ymir-runner's own file beside the protocol's.

The platform names an asset by its content (``/in/assets/<last 2 hex>/<sha1>.jpg``), so what a run reports (skipped
and repaired items, the dataset report, result.tsv, infer-result.json) names files a user never saw.
``ymir-runner sandbox`` writes this map into the work tree's ``in/`` folder (env.yaml's ``input.root_dir``) and
every local report reads it: warnings name ``/w/in/assets/e9/c257...d5e9.jpg (img_0003.jpg)``. The platform never
writes such a file, so a platform task reads none and reports exactly what it did before; the platform's own files
(index files, result.tsv, infer-result.json) never change.

The file (UTF-8, written atomically, one line per SOURCE file; files of identical content share one asset and are
listed each on its own line)::

    # ymir-runner sandbox origins: <asset as the index files name it> TAB <file below SOURCE>
    # source: /home/me/data/voc
    /home/me/work/in/assets/e9/c25737b518576a438c873a2fec476b2fb2e5d5e9.jpg	JPEGImages/img_0003.jpg

A TAB, a line break or a backslash inside a path is written ``\\t``, ``\\n``/``\\r``, ``\\\\``; bytes of a file name
that are not UTF-8 as ``\\xNN``. Assets are looked up by their id (the sha1 in the file name), so the map names
them whether the tree was written with host paths or container paths and wherever it was copied to.

Reading never fails a task: a map that is not a regular file, is over :data:`MAX_BYTES`, is not such a map or
holds unreadable lines is reported in ONE warning and ignored (or its readable lines used).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import stat
from typing import Iterable, Mapping, Sequence

from .protocol.atomic import atomic_write_text
from .protocol.env import TaskEnv

log = logging.getLogger("ymir_runner.origins")

#: The map's file name, in the work tree's ``in/`` folder (env.yaml's ``input.root_dir``).
ORIGINS_FILE = "sandbox-origins.tsv"
#: The map's first line starts with this.
HEADER = "# ymir-runner sandbox origins"
#: The task ids ``ymir-runner sandbox`` writes start with this: such a tree without its map is worth a warning.
SANDBOX_TASK_PREFIX = "t-sandbox-"
#: A larger map is not read (about a million images with long host paths).
MAX_BYTES = 256 << 20
#: Files named per asset in a message; the rest are counted.
SHOWN = 3

_ASSET_ID = re.compile(r"[0-9a-f]{40}")
#: An asset id in a message, with the extension and line reference that follow it (``<sha1>.txt:3``).
_MENTION = re.compile(r"(?<![0-9A-Za-z])([0-9a-f]{40})(?:\.[A-Za-z0-9]+)?(?::\d+|:object \d+)?(?![0-9A-Za-z])")
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPE = re.compile(r"\\([\\tnr])")


def asset_id(path: str) -> str | None:
    """The asset id of an asset path or file name (the sha1 the platform names it by), or None."""
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem if _ASSET_ID.fullmatch(stem) else None


@dataclasses.dataclass(frozen=True)
class Origins:
    """A sandbox's map: asset id -> the files below SOURCE it was stored from."""

    #: SOURCE's absolute path, as the sandbox was given it ('' when the map does not say).
    source: str
    files: Mapping[str, tuple[str, ...]]
    #: Where the map was read from.
    path: str = ""

    def __len__(self) -> int:
        return len(self.files)

    def of(self, asset: str) -> tuple[str, ...]:
        """The files below SOURCE an asset path or file name came from (empty: not in the map)."""
        key = asset_id(asset)
        return self.files.get(key, ()) if key else ()

    def originals(self, text: str) -> list[str]:
        """The files below SOURCE of every asset ``text`` mentions (a path, a warning), in order, each once."""
        found: dict[str, None] = {}
        for match in _MENTION.finditer(text):
            found.update(dict.fromkeys(self.files.get(match.group(1), ())))
        return list(found)

    def annotate(self, text: str) -> str:
        """``text`` with the user's files after the first mention of each asset:
        ``/w/in/assets/e9/c257...jpg (img_0003.jpg): decoded ...``."""
        seen: set[str] = set()

        def named(match: re.Match[str]) -> str:
            files = self.files.get(match.group(1))
            if not files or match.group(1) in seen:
                return match.group(0)
            seen.add(match.group(1))
            return f"{match.group(0)} ({shown_names(files)})"

        return _MENTION.sub(named, text)


def shown_names(files: Sequence[str], limit: int = SHOWN) -> str:
    """``a.jpg, b.jpg`` or ``a.jpg, b.jpg, c.jpg and 2 more``."""
    text = ", ".join(files[:limit])
    return text + (f" and {len(files) - limit} more" if len(files) > limit else "")


# --- writing ---------------------------------------------------------------------------------------------------

def _escape(text: str) -> str:
    """A path as one TSV field: TAB, line breaks and backslash escaped; non-UTF-8 bytes of a name as ``\\xNN``."""
    escaped = "".join(_ESCAPES.get(char, char) for char in text)
    return os.fsencode(escaped).decode("utf-8", "backslashreplace")


def _unescape(text: str) -> str:
    return _UNESCAPE.sub(lambda match: {"t": "\t", "n": "\n", "r": "\r"}.get(match.group(1), "\\"), text)


def write_origins(path: str, source: str, rows: Iterable[tuple[str, str]]) -> int:
    """Write the map of ``rows`` (asset as the index files name it, file below ``source``) atomically, sorted
    by the file below SOURCE; returns the row count."""
    lines = [f"{HEADER}: <asset as the index files name it> TAB <file below SOURCE>",
             f"# source: {_escape(source)}"]
    body = sorted((_escape(original), _escape(asset)) for asset, original in rows)
    lines += [f"{asset}\t{original}" for original, asset in body]
    atomic_write_text(path, "".join(f"{line}\n" for line in lines))
    return len(body)


# --- reading ---------------------------------------------------------------------------------------------------

def read_origins(path: str, *, expected: bool = False) -> Origins | None:
    """The map at ``path``; None, with one warning, when it cannot be used. A missing map is only warned about
    when ``expected`` (a tree the sandbox built); readable lines of a partly garbled map are used."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if expected:
            log.warning("%s is missing: reports name assets only (rebuild the tree with `ymir-runner sandbox` to "
                        "see your own file names)", path)
        return None
    except OSError as error:
        return _ignored(path, error.strerror or str(error))
    if not stat.S_ISREG(info.st_mode):
        return _ignored(path, "not a regular file")
    if info.st_size > MAX_BYTES:
        return _ignored(path, f"{info.st_size} bytes, more than {MAX_BYTES}")
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except OSError as error:
        return _ignored(path, error.strerror or str(error))
    return _parse(path, data.decode("utf-8", "replace"))


def _ignored(path: str, why: str) -> Origins | None:
    log.warning("ignored %s (%s): reports name assets only", path, why)
    return None


def _parse(path: str, text: str) -> Origins | None:
    lines = text.splitlines()
    if not lines or not lines[0].startswith(HEADER):
        return _ignored(path, f"it does not start with {HEADER!r}")
    source = ""
    files: dict[str, list[str]] = {}
    bad: list[int] = []
    for number, line in enumerate(lines[1:], 2):
        if line.startswith("# source: "):
            source = _unescape(line[len("# source: "):])
        if line.startswith("#") or not line.strip():
            continue
        fields = line.split("\t")
        key = asset_id(_unescape(fields[0])) if len(fields) == 2 and fields[1] else None
        if key is None:
            bad.append(number)
            continue
        files.setdefault(key, []).append(_unescape(fields[1]))
    if bad and not files:
        return _ignored(path, f"none of its {len(bad)} lines is '<asset>\\t<file>' (line {bad[0]})")
    if bad:
        log.warning("%s: %d line%s not '<asset>\\t<file>' (the first: line %d): those assets are named by id only",
                    path, len(bad), "s are" if len(bad) > 1 else " is", bad[0])
    return Origins(source, {key: tuple(names) for key, names in files.items()}, path)


def origins_path(input_root_dir: str) -> str:
    """Where a task's map lies: in env.yaml's ``input.root_dir`` (re-rooted in a local run)."""
    return os.path.join(input_root_dir, ORIGINS_FILE)


def load_origins(env: TaskEnv) -> Origins | None:
    """The map of the task ``env`` describes, or None. Never raises: a platform task has no map and reads none;
    a tree the sandbox built (its task id) without it gets one warning."""
    if not env.input.root_dir:
        return None
    return read_origins(origins_path(env.input.root_dir), expected=env.task_id.startswith(SANDBOX_TASK_PREFIX))
