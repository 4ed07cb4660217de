"""Opening the files a task reads as data: regular files only, of a bounded size.

A path in an index file or a dataset can name anything: ``/dev/zero`` as an annotation file grows a reader's
memory without end, a FIFO blocks it forever, a device may do anything when opened. Every text reader of the
project (index files, det-ark / det-voc / COCO annotations, the sandbox's sources, split lists and names files)
opens its file through :func:`open_regular`, which

- refuses anything but a regular file (a link to one is fine) before opening it, and opens with ``O_NONBLOCK``
  then checks the open file again (``fstat``), so a FIFO swapped in between never blocks;
- refuses a file larger than its bound (:data:`MAX_TEXT_BYTES` for a file read whole, :data:`MAX_INDEX_BYTES`
  for an index file, read line by line) and never reads more than the bound of one that grows;
- raises :class:`UnreadableFile` (an ``OSError``, so readers that already handle one handle it) whose text is the
  kind of problem only (``not a regular file (a FIFO)``, ``larger than 256 MiB``): the caller names the file.

Image files are handed on to :mod:`.images` by path: readers check them with :func:`irregular` first, so that no
FIFO or device reaches the decoder.
"""

from __future__ import annotations

import codecs
import errno
import os
import stat
from typing import BinaryIO

#: The largest text file read whole: an annotation file, a COCO json (a 200 MB one is real), a split list, a
#: names file, data.yaml. Larger files are refused, naming this bound.
MAX_TEXT_BYTES = 256 << 20
#: The largest index file (read line by line): about 7 million lines of two container paths.
MAX_INDEX_BYTES = 1 << 30

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class UnreadableFile(OSError):
    """A file that is not read: not a regular file, larger than its bound, not text, or a path with a NUL byte.

    ``str()`` (and ``strerror``) is the problem alone, e.g. ``not a regular file (a FIFO)``; the caller names the
    file. It never holds the file's content."""

    def __init__(self, path: str, problem: str, code: int = errno.EINVAL) -> None:
        super().__init__(code, problem, path)

    def __str__(self) -> str:
        return str(self.strerror)


def size_text(count: int) -> str:
    """``256 MiB``, ``1 GiB``, ``512 KiB``, ``12 bytes``: a byte count as messages show it."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if count >= 1 << shift:
            return f"{count / (1 << shift):g} {unit}"
    return f"{count} bytes"


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a file")


def _check(path: str, info: os.stat_result, limit: int | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableFile(path, f"not a regular file ({_kind(info.st_mode)})")
    if limit is not None and info.st_size > limit:
        raise UnreadableFile(path, f"larger than {size_text(limit)} ({info.st_size} bytes)", errno.EFBIG)


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except ValueError:  # os functions refuse a path with a NUL byte as a ValueError
        raise UnreadableFile(path, "the path holds a NUL byte") from None


def special_kind(path: str) -> str:
    """What ``path`` is when it is not a regular file: ``a FIFO``, ``a folder``, ``a character device``... ('' for a
    regular file, a link to one, and a path that cannot be looked at: the reader that opens it says why)."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return ""
    return "" if stat.S_ISREG(info.st_mode) else _kind(info.st_mode)


def irregular(path: str) -> str:
    """Why ``path`` is not read as data (``not a regular file (a FIFO)``, ``the path holds a NUL byte``), or ''.
    '' too for a path that cannot be looked at (missing, no permission): the reader that opens it says so. Looks
    at the file without opening it."""
    if "\0" in path:
        return "the path holds a NUL byte"
    kind = special_kind(path)
    return f"not a regular file ({kind})" if kind else ""


def open_regular(path: str, *, limit: int | None) -> BinaryIO:
    """``path`` opened for reading in binary, if it is a regular file (or a link to one) of at most ``limit``
    bytes (None: any size, for an image read block by block).

    Raises :class:`UnreadableFile` for anything else, ``OSError`` when it cannot be opened (missing, no
    permission). A FIFO or device is refused before it is opened; a FIFO swapped in between is opened without
    blocking and refused."""
    _check(path, _stat(path), limit)
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        _check(path, os.fstat(descriptor), limit)
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def read_bytes(path: str, *, limit: int | None = None) -> bytes:
    """The content of a regular file of at most ``limit`` bytes (default :data:`MAX_TEXT_BYTES`;
    :func:`open_regular`); a file that grew past ``limit`` while it was read is refused as well."""
    limit = MAX_TEXT_BYTES if limit is None else limit
    with open_regular(path, limit=limit) as stream:
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise UnreadableFile(path, f"larger than {size_text(limit)}", errno.EFBIG)
    return data


def decode_text(data: bytes, path: str) -> str:
    """UTF-8 text, a leading byte-order mark removed; :class:`UnreadableFile` (``not UTF-8 text (at byte N)``,
    no content shown) when it is not."""
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableFile(path, f"not UTF-8 text (at byte {error.start + skip})") from None


def read_text(path: str, *, limit: int | None = None) -> str:
    """A regular file's UTF-8 text (a byte-order mark allowed), at most ``limit`` bytes (default
    :data:`MAX_TEXT_BYTES`): :func:`read_bytes`, :func:`decode_text`."""
    return decode_text(read_bytes(path, limit=limit), path)
