"""Atomic file replacement: the platform polls our outputs while we write them, and a disk may fill up."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from typing import Iterator

from ..errors import OutputError

#: A failed write with less free space than this on the device is reported as a full disk: libraries that
#: write through C++ streams lose the errno (torch.save says "basic_ios::clear: iostream error").
FULL_DISK_BYTES = 1 << 20
_FULL_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
#: Names of temp files start with this; one left behind is a write a SIGKILL cut short.
TEMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """``with atomic_path(path) as tmp:`` write the file at ``tmp``; it then replaces ``path`` in one step.

    The temp file lives in ``path``'s folder (``os.replace`` is only atomic within one file system) and is
    made readable by other uids (mode 0644: the platform may read as another user). If anything fails,
    a signal-raised exception included, the temp file is removed and ``path`` keeps its previous content.

    Raises:
        OutputError: the write failed on a full disk or quota ("no space left on device"), or with another
            OS error; the message names ``path``. Other errors of the writer pass through unchanged.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp_path = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=TEMP_PREFIX, suffix="-" + os.path.basename(path))
        os.close(fd)
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
    except BaseException as error:
        reason = _write_failure(error, directory) if isinstance(error, Exception) else None
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_path)
        if reason:
            raise OutputError(f"cannot write {path}: {reason}") from error
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that a reader sees either the old file or the whole new one;
    see :func:`atomic_path` for the failure modes."""
    with atomic_path(path) as tmp_path:
        with open(tmp_path, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())


def _write_failure(error: Exception, directory: str) -> str | None:
    """"no space left on device" when the disk is full, the OS's reason for another OS error, else None."""
    if isinstance(error, OutputError):
        return None
    if isinstance(error, OSError) and error.errno in _FULL_DISK_ERRNOS or _free_bytes(directory) < FULL_DISK_BYTES:
        return "no space left on device"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror[0].lower() + error.strerror[1:]
    return None


def _free_bytes(directory: str) -> float:
    try:
        stats = os.statvfs(directory)
    except OSError:
        return float("inf")
    return stats.f_bavail * stats.f_frsize


def remove_temp_files(folder: str) -> list[str]:
    """Delete the temp files that killed writes left anywhere under ``folder``; returns their paths."""
    removed = []
    for path, _, names in os.walk(folder):
        for name in names:
            if name.startswith(TEMP_PREFIX):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(path, name))
                    removed.append(os.path.join(path, name))
    return removed
