"""One run per work tree: an advisory lock on the output root (/out), held for the whole run.

The platform never starts two tasks on one /out, but a user with two terminals does: the second run would move
the first one's stages into ``previous-runs`` while it trains, and the first would then publish a result.yaml
whose stage folders are gone. So a run locks ``<root_dir>/.ymir-runner.lock`` before it touches anything, and a
second run on the same tree is refused (:class:`ConfigError` naming the tree and the PID that holds it).

The lock is a POSIX record lock (``fcntl`` ``F_SETLK``): the kernel releases it when the process that took it
ends, however it ends, so a lock file left by a SIGKILLed run never blocks; and unlike ``flock`` it is not
inherited by forked children (DataLoader workers, a plugin's ``multiprocessing`` helpers), so an orphaned worker
of a killed run cannot keep the tree locked. The file is opened with ``O_NOFOLLOW`` (never through a link) and
``O_CLOEXEC``, stays empty, and is left in place: deleting a lock file lets two runs lock two different files.

Where the lock cannot be taken (a file system without POSIX locks, a lock file of another uid the task may not
open, a link or a folder in the way, a read-only /out) one warning says so and the run goes on unguarded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import struct
import threading
from typing import Iterator

from ..errors import ConfigError

log = logging.getLogger("ymir_runner.outlock")

#: The lock file's name in the output root.
LOCK_NAME = ".ymir-runner.lock"
#: ``struct flock`` on Linux (64-bit off_t): l_type, l_whence, l_start, l_len, l_pid, padding.
_FLOCK = "hhqqi4x"
_HELD_ELSEWHERE = {errno.EACCES, errno.EAGAIN}

# POSIX locks belong to the process: a second run inside this process would get the lock again, and closing its
# own descriptor of the file would silently release the first run's. Runs of this process are kept apart here.
_held: dict[tuple[int, int], str] = {}
_held_guard = threading.Lock()


def lock_path(root_dir: str) -> str:
    return os.path.join(os.path.abspath(root_dir), LOCK_NAME)


@contextlib.contextmanager
def hold_output_lock(root_dir: str, *, create: bool = True) -> Iterator[str | None]:
    """``with hold_output_lock(env.output.root_dir):`` the run owns the tree; yields the lock file's path, or None
    when no lock could be taken (warned once). ``create=False`` (``ymir-runner sandbox``, which writes ``in/``
    beside the outputs): a tree without a lock file has never had a run and is not locked (yields None, no
    warning), so the sandbox leaves no file of its own uid in ``out/`` for a task running as another.

    Raises:
        ConfigError: another run (this process or another) holds the lock; the message names the tree and the
            holder's PID. Nothing was written by then but the (empty) lock file.
    """
    root = os.path.abspath(root_dir)
    path = lock_path(root)
    _refuse_if_held_here(root, path)  # before opening: closing a second descriptor would release the lock
    if not create and not os.path.lexists(path):
        yield None
        return
    fd = _open(root, path)
    if fd is None:
        yield None
        return
    info = os.fstat(fd)
    key = (info.st_dev, info.st_ino)
    with _held_guard:
        _held[key] = path
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in _HELD_ELSEWHERE:
                raise _in_use(root, _holder(fd)) from None
            _warn(path, error.strerror or str(error))  # ENOLCK, EOPNOTSUPP...: a file system without locks
        yield path
    finally:
        with _held_guard:
            _held.pop(key, None)
        os.close(fd)  # releases the lock (the kernel would at exit anyway)


def _refuse_if_held_here(root: str, path: str) -> None:
    try:
        info = os.lstat(path)
    except OSError:
        return
    with _held_guard:
        if (info.st_dev, info.st_ino) in _held:
            raise _in_use(root, os.getpid())


def _open(root: str, path: str) -> int | None:
    """A read-write descriptor of the lock file (created, mode 0666 so that a run as another uid can lock it too),
    or None after a warning."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # O_NONBLOCK: a FIFO in the way never blocks
    try:
        os.makedirs(root, exist_ok=True)
        # an existing file first: O_CREAT on another uid's file in a sticky folder fails even where it may be opened
        for _ in range(2):
            try:
                fd = os.open(path, flags)
            except FileNotFoundError:
                try:
                    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o666)
                except FileExistsError:  # another run created it in between: open that one
                    continue
                # any uid may lock it later (a root run, then `docker run --user`); it never holds data
                os.fchmod(fd, 0o666)
            break
        else:
            raise FileExistsError(errno.EEXIST, "created and removed while opening")
    except OSError as error:
        reason = "a symbolic link is in the way" if error.errno == errno.ELOOP else (error.strerror or str(error))
        _warn(path, reason)
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        _warn(path, "not a regular file")
        return None
    return fd


def _holder(fd: int) -> int:
    """The PID holding the lock (0 when the kernel cannot tell: another PID namespace, another NFS client)."""
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
        kind, _, _, _, pid = struct.unpack(_FLOCK, answer)
    except (OSError, struct.error):
        return 0
    return pid if kind != fcntl.F_UNLCK and pid > 0 else 0


def _in_use(root: str, pid: int) -> ConfigError:
    holder = f"PID {pid}" if pid else "a process this machine cannot name"
    return ConfigError(f"{root} is in use by another ymir-runner run ({holder}): two runs on one work tree would "
                       f"move each other's results aside; wait for it to end, or use another work tree (ymir-runner "
                       f"sandbox --out OTHER). Nothing was written")


def _warn(path: str, reason: str) -> None:
    log.warning("cannot lock %s (%s): a second run started on this tree would not be refused", path,
                reason[0].lower() + reason[1:] if reason else "unknown reason")
