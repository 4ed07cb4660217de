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
    Nothing is written through a link: the temp file is created with ``O_EXCL`` (which never follows one) and a
    link at ``path`` is replaced by the new file, its target left as it was.

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
        failed = isinstance(error, Exception) and not isinstance(error, OutputError) and (
            isinstance(error, OSError) or free_bytes(directory) < FULL_DISK_BYTES)
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_path)
        if failed:
            raise output_error(path, error) from error
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` so that a reader sees either the old file or the whole new one;
    see :func:`atomic_path` for the failure modes."""
    with atomic_path(path) as tmp_path:
        with open(tmp_path, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())


def output_error(path: str, error: BaseException, verb: str = "write") -> OutputError:
    """``OutputError("cannot <verb> <path>: <reason>")`` for a failed write of ``path``: "no space left on
    device" for a full disk or quota (also when a library lost the errno but the device has under 1 MiB
    left), else the OS's reason."""
    directory = path if verb == "create" else os.path.dirname(os.path.abspath(path))
    full = isinstance(error, OSError) and error.errno in _FULL_DISK_ERRNOS
    full = full or free_bytes(_existing(directory)) < FULL_DISK_BYTES
    if full:
        reason = "no space left on device"
    elif isinstance(error, OSError) and error.strerror:
        reason = error.strerror[0].lower() + error.strerror[1:]
    else:
        reason = f"{type(error).__name__}: {error}"
    failure = OutputError(f"cannot {verb} {path}: {reason}")
    failure.disk_full = full
    return failure


def _existing(path: str) -> str:
    """``path`` or its nearest existing parent (what statvfs can be asked about)."""
    while path and not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def free_bytes(directory: str) -> float:
    """Bytes an unprivileged writer may still use on ``directory``'s device (inf when it cannot be told)."""
    try:
        stats = os.statvfs(directory)
    except OSError:
        return float("inf")
    return stats.f_bavail * stats.f_frsize


def remove_temp_files(folder: str, *, recursive: bool = True) -> list[str]:
    """Delete the temp files that killed writes left under ``folder`` (in it only, unless ``recursive``);
    returns their paths."""
    removed = []
    for path, _, names in os.walk(folder):
        if not recursive and path != folder:
            break
        for name in names:
            if name.startswith(TEMP_PREFIX):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(path, name))
                    removed.append(os.path.join(path, name))
    return removed
