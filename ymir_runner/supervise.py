"""``ymir-runner run`` watches itself: a small parent process waits for the run and reports a death no handler saw.

A crash inside a native library (a SIGSEGV in faster-coco-eval's C++ when 10,000 ``class_names`` exhaust memory)
and a SIGKILL (the kernel's out-of-memory killer) end a process at once: no ``except``, ``finally`` or ``atexit``
of it runs (faulthandler, when enabled, only prints where it was before the signal's default action kills it), so
the run can never write state 4 itself and monitor.txt stays "running". Only another process can. So the command
forks first thing, before any plugin is imported: the child is the run, unchanged; the parent imports nothing
more, forwards SIGTERM and SIGINT to it (``docker stop`` signals PID 1: the parent), reaps orphans (as PID 1 must)
and exits with the child's code. When the child dies of a signal without having reported an outcome, the parent
stops what the run left running, writes state 4 with 300103 for SIGKILL (what the OOM killer sends) or 160004,
and prints the reason as the last line of stderr, with the Python function the crash happened under (the child's
faulthandler writes its traceback to a file the parent reads). Its exit code is then 128 + the signal, as a
shell reports it. The child dies with the parent (``PR_SET_PDEATHSIG``): a SIGKILL of the command kills the run.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import os
import re
import signal
import stat
import sys
import tempfile
import time
from typing import TYPE_CHECKING, BinaryIO, Callable, Sequence

from .errors import ReturnCode
from .protocol.monitor import STATE_FAILED, STATE_RUNNING, Monitor

if TYPE_CHECKING:
    import argparse

#: The command line's parser (``cli.build_parser``), given by the command: it finds the run's env.yaml in argv.
ParserFactory = Callable[[], "argparse.ArgumentParser"]

_STOPS = (signal.SIGTERM, signal.SIGINT)
#: prctl(2) options: the calling process's children die with it; orphans below it are reparented to it.
_PR_SET_PDEATHSIG, _PR_SET_CHILD_SUBREAPER = 1, 36


def supervise(parser: ParserFactory, argv: Sequence[str] | None = None) -> None:
    """Fork: return in the child, which runs the task; the parent waits for it, reports a death by a signal and
    exits with the child's code (it never returns). Unsupervised when the process cannot fork. ``parser`` makes
    the command line's parser, which reads the run's ``--env`` and ``--root`` out of ``argv`` after a death."""
    from .shutdown import defer_stop_signals

    argv = list(sys.argv[1:] if argv is None else argv)
    faults = _fault_file()
    oom_kills_before = oom_kills()
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)  # a stop before the handlers are set stays pending
    parent, started = os.getpid(), time.time()
    try:
        child = os.fork()
    except OSError:
        child = 0
    if child == 0:
        if os.getpid() != parent:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before that: no one would report this run
                os.kill(os.getpid(), signal.SIGKILL)
            faulthandler.enable(faults, all_threads=True)
        defer_stop_signals()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)
        return
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    for signum in _STOPS:
        signal.signal(signum, lambda signum, frame: _forward(child, signum))
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOPS)
    status, peak_kb = _wait(child)
    if os.WIFSIGNALED(status):
        code = report_death(argv, os.WTERMSIG(status), peak_kb * 1024, _read(faults), started,
                            oom_killed=_oom_killed(oom_kills_before), parser=parser)
    else:
        code = os.waitstatus_to_exitcode(status)
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(code)


def _fault_file() -> BinaryIO:
    """An anonymous file for the child's faulthandler (in memory where Linux offers it)."""
    with contextlib.suppress(AttributeError, OSError):
        return open(os.memfd_create("ymir-runner-faults"), "w+b")  # noqa: SIM115 - held until the process ends
    return tempfile.TemporaryFile()  # noqa: SIM115


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(Exception):  # not Linux: no such guarantee, the rest still works
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def _forward(child: int, signum: int) -> None:
    with contextlib.suppress(OSError):  # already gone
        os.kill(child, signum)


def _wait(child: int) -> tuple[int, int]:
    """Wait for ``child``, reaping any orphan reparented here meanwhile; its wait status and peak memory (KiB)."""
    while True:
        pid, status, usage = os.wait4(-1, 0)
        if pid == child:
            return status, usage.ru_maxrss


def _read(faults: BinaryIO) -> str:
    with contextlib.suppress(OSError):
        faults.seek(0)
        return faults.read(1 << 20).decode("utf-8", "replace")
    return ""


def oom_kills() -> int | None:
    """How many processes the kernel's out-of-memory killer has killed in this process's memory cgroup
    (cgroup v2 ``memory.events`` / v1 ``memory.oom_control``: ``oom_kill N``); None where it cannot be read."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # cgroup v2
            candidates.append(os.path.join("/sys/fs/cgroup", path.lstrip("/"), "memory.events"))
        elif "memory" in controllers.split(","):
            candidates.append(os.path.join("/sys/fs/cgroup/memory", path.lstrip("/"), "memory.oom_control"))
    for candidate in candidates:
        with contextlib.suppress(OSError, ValueError):
            with open(candidate, encoding="utf-8") as stream:
                for line in stream:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
    return None


def _oom_killed(before: int | None) -> bool | None:
    """Whether the out-of-memory killer killed something in this cgroup since ``before`` (None: cannot tell)."""
    after = oom_kills()
    return None if before is None or after is None else after > before


def death_message(signum: int, peak_bytes: int, faults: str, oom_killed: bool | None = None) -> tuple[ReturnCode, str]:
    """The return code and one-line reason of a run that died of ``signum`` (its traceback in ``faults``).

    A SIGKILL is what the kernel's out-of-memory killer sends, and what ``kill -9`` sends: with ``oom_killed``
    known from the cgroup's counter (:func:`oom_kills`) it is out of memory (300103) or an outside kill (160004);
    unknown, it is reported as out of memory, the likely cause inside a container, and said to be a guess."""
    name = signal.Signals(signum).name
    peak = f"{peak_bytes / (1 << 30):.1f} GB" if peak_bytes >= 1 << 30 else f"{peak_bytes >> 20} MB"
    if signum == signal.SIGKILL and oom_killed is False:
        return ReturnCode.GENERIC, (f"the run was killed (SIGKILL) at a peak of {peak} of memory, not by the "
                                    f"out-of-memory killer of its cgroup (its oom_kill count did not change): "
                                    f"something outside the run sent it")
    if signum == signal.SIGKILL:
        known = ("the kernel's out-of-memory killer killed it (its cgroup's oom_kill count rose)" if oom_killed
                 else "most likely the kernel's out-of-memory killer, which stops a process this way when the "
                      "memory limit is reached (this machine's cgroup does not say)")
        return ReturnCode.OUT_OF_MEMORY, f"the run was killed (SIGKILL) at a peak of {peak} of memory: {known}"
    where = _crash_site(faults)
    return ReturnCode.GENERIC, (f"the run died of {name} ({signal.strsignal(signum) or name}), a crash in native "
                                f"code{where}; its peak memory was {peak}")


def _crash_site(faults: str) -> str:
    """`` called from FUNCTION (FILE, line N)``: the innermost Python frame of the crashed thread in faulthandler's
    text ('' without one)."""
    current = faults.find("Current thread")
    frame = re.search(r'File "([^"]+)", line (\d+) in (\S+)', faults[current:] if current >= 0 else faults)
    return f" called from {frame[3]} ({frame[1]}, line {frame[2]})" if frame else ""


def report_death(argv: Sequence[str], signum: int, peak_bytes: int, faults: str, started: float,
                 oom_killed: bool | None = None, *, parser: ParserFactory) -> int:
    """A run that died of ``signum``: stop what it left running, write state 4 unless it reported an outcome, print
    its traceback and the reason as the last line; the exit code (0 when it had reported success)."""
    from .shutdown import stop_children

    with contextlib.suppress(Exception):
        stop_children()  # DataLoader workers, ranks: orphans are reparented here (a subreaper, or PID 1)
    code, reason = death_message(signum, peak_bytes, faults, oom_killed)
    monitor = _monitor_of(argv, parser)
    line = _monitor_line(monitor[0], started) if monitor else None
    if faults.strip():
        sys.stderr.write(faults if faults.endswith("\n") else faults + "\n")
    if line is not None and line[1] == STATE_RUNNING and line[0] >= 1.0:
        sys.stderr.write(f"ymir-runner: warning: {reason}, after the run had finished and reported success\n")
        return 0
    if monitor and (line is None or line[1] != STATE_FAILED):  # the run's own report of a failure stands
        with contextlib.suppress(Exception):
            writer = Monitor(*monitor)
            writer.percent = line[0] if line else 0.0  # percent never goes down
            writer.fail(code)
    sys.stderr.write(f"ymir-runner: error {int(code)}: {reason}\n")
    return 128 + signum


def _monitor_of(argv: Sequence[str], parser: ParserFactory) -> tuple[str, str] | None:
    """monitor.txt's path and the task id of the run ``ymir-runner <argv>`` (None when env.yaml does not say)."""
    from .protocol.env import EnvError, load_env

    try:
        args, _ = parser().parse_known_args(list(argv))
        env = load_env(args.env, root=args.root)
        return env.output.monitor_file, env.task_id
    except EnvError as error:
        return (error.monitor_file, error.task_id or "") if error.monitor_file else None
    except BaseException:  # noqa: BLE001 - whatever stopped the run from reading it stops this too
        return None


def _monitor_line(path: str, started: float) -> tuple[float, int] | None:
    """Percent and state of monitor.txt when the run wrote it (a line written since ``started``), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO put there must not block this
        try:
            head = os.read(fd, 4096) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
        finally:
            os.close(fd)
        fields = head.decode("utf-8", "replace").split("\n")[0].split("\t")
        timestamp, percent, state = float(fields[1]), float(fields[2]), int(fields[3])
    except (OSError, ValueError, IndexError):
        return None
    return (percent, state) if timestamp >= started - 1 else None  # else a line of an earlier run on this tree
