"""The legacy command's process tree: started in a process group of its own, found whole, stopped whole.

A yolov5-style ``start.py`` runs ``train.py`` as a subprocess, DDP launchers start one process per rank, and a
child may outlive its parent (then the kernel reparents it). To find every one of them the supervisor makes itself
a child sub-reaper (``prctl(PR_SET_CHILD_SUBREAPER)``, Linux >= 3.4): an orphan below it is reparented to it, not
to PID 1, so walking ``/proc`` from the supervisor's pid finds the whole tree, whatever process group or session
a descendant moved to. The legacy command's own group is signalled too (it reaches a process between fork and
``/proc`` showing it). The legacy process dies with the supervisor (``PR_SET_PDEATHSIG``): a SIGKILL of
``ymir-runner`` leaves no executor writing under /out.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from typing import Any, Iterable

#: prctl(2) options.
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36
#: Seconds the tree gets to exit after SIGTERM before it is killed (the core's grace for its own children).
GRACE_SECONDS = 3.0


def resolve_prctl() -> Any:
    """libc's prctl, resolved once in the parent: a child between fork and exec must not load libraries (another
    thread of the parent may have held the loader's lock at the fork)."""
    global _PRCTL
    if _PRCTL is None:
        try:
            _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            _PRCTL = False
    return _PRCTL


_PRCTL: Any = None


def _prctl(option: int, value: int) -> bool:
    """Call prctl(2); False where it is not available (not Linux) or refused."""
    prctl = resolve_prctl()
    return bool(prctl) and prctl(option, value, 0, 0, 0) == 0


def become_subreaper() -> bool:
    """Make this process the reaper of orphans below it (Linux); whether that worked. Also resolves prctl for
    :func:`child_setup`."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def child_setup() -> None:
    """Run in the legacy process between fork and exec: a process group of its own (its pgid is its pid), and
    death by SIGKILL when the supervisor dies. Call :func:`become_subreaper` (or ``resolve_prctl``) first."""
    os.setpgid(0, 0)
    if _PRCTL:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _parents() -> dict[int, int]:
    """pid -> parent pid of every live process (zombies left out), from /proc."""
    parents = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return {}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stream:
                fields = stream.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields and fields[0] != b"Z":
            parents[int(entry)] = int(fields[1])
    return parents


def descendants(root: int | None = None) -> list[int]:
    """Every live process below ``root`` (default: this process), children first."""
    root = os.getpid() if root is None else root
    parents = _parents()
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    found, queue = [], list(children.get(root, []))
    while queue:
        pid = queue.pop(0)
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


def _signal(pids: Iterable[int], group: int | None, signum: int) -> None:
    if group:
        with contextlib.suppress(OSError):
            os.killpg(group, signum)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signum)


def reap(pids: Iterable[int]) -> None:
    """Collect the exit status of those of ``pids`` that are children of this process and have exited (orphans
    reparented here are children too). Only the given pids: ``subprocess.Popen`` waits for its own."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def stop_tree(group: int | None, *, spare: Iterable[int] = (), keep_status: int | None = None,
              grace: float = GRACE_SECONDS) -> list[int]:
    """SIGTERM the process group ``group`` and every process below this one but ``spare``; SIGKILL what is left
    after ``grace`` seconds; reap them, except ``keep_status`` (the pid whose ``Popen`` waits for it). Returns the
    pids that were signalled (empty: nothing was left)."""
    spared = set(spare)
    targets = [pid for pid in descendants() if pid not in spared]
    group_alive = group is not None and _group_alive(group)
    if not targets and not group_alive:
        return []
    _signal(targets, group if group_alive else None, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        reap(pid for pid in targets if pid != keep_status)
        left = [pid for pid in descendants() if pid not in spared]
        if not left and not (group is not None and _group_alive(group)):
            return targets
        targets = list(dict.fromkeys(targets + left))
        _signal(left, None, signal.SIGTERM)  # a process started since the first round
        time.sleep(0.05)
    left = [pid for pid in descendants() if pid not in spared]
    _signal(left, group, signal.SIGKILL)
    for _ in range(100):
        reap(pid for pid in left if pid != keep_status)
        if not [pid for pid in descendants() if pid not in spared]:
            break
        time.sleep(0.02)
    return list(dict.fromkeys(targets + left))


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except OSError:
        return False
    # a group of zombies still answers: alive only if a live process has that group
    for pid in _parents():
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == group:
                return True
    return False
