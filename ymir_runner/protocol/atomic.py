"""Atomic file replacement: the platform polls our outputs while we write them."""

from __future__ import annotations

import os
import tempfile


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees either the old file or the whole new one.

    The temp file lives in the same directory (``os.replace`` is only atomic within one file system) and is
    removed if anything goes wrong, including a signal-raised exception in the middle of the write.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600 files; the platform may read as another uid
        os.replace(tmp_path, path)
    except BaseException:
        try:
            os.unlink(tmp_path)
        except FileNotFoundError:
            pass
        raise
