"""How a run ends when it fails or is stopped: stop signals, child processes, and the log's last line.

The platform stops a task with SIGTERM, and docker (or an impatient operator) may send another within
milliseconds; a terminal sends SIGINT. The first stop signal becomes a :class:`~ymir_runner.errors.TaskTerminated`
exception in the main thread, so the ordinary error path writes state 4 and the error line. From then on
stop signals are ignored until the run has reported its failure, terminated its children (DataLoader
workers, DDP ranks, subprocesses) and printed its last line.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from typing import Any, Iterable

from .errors import TaskTerminated

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Seconds children get to exit after SIGTERM before they are killed.
CHILD_GRACE_SECONDS = 3.0


#: Stop signals received before a run installed its handlers (see :func:`defer_stop_signals`).
_deferred: list[int] = []


def defer_stop_signals() -> None:
    """From now until a run begins, remember a stop signal instead of dying of it.

    ``ymir-runner run`` calls this first thing: a SIGTERM while plugins load would otherwise kill the process
    before it could write state 4 (and as PID 1 in a container it would be ignored outright). The run then
    stops at once, through the error path (:meth:`StopSignals.raise_deferred`)."""
    def remember(signum: int, frame: Any) -> None:
        _deferred.append(signum)

    for signum in STOP_SIGNALS:
        signal.signal(signum, remember)


class StopSignals:
    """``with StopSignals() as stop:`` turns the first SIGTERM/SIGINT into ``TaskTerminated``.

    ``hold()`` makes every later stop signal a no-op; call it first thing on the error path. Leaving the
    block restores the previous handlers, except with ``exiting=True``: the process is about to exit with the
    run's code, and a late SIGTERM must not turn that exit into a kill, so stop signals stay ignored.
    Outside the main thread (where Python cannot set handlers) the block does nothing.
    """

    def __init__(self, *, exiting: bool = False) -> None:
        self.held = False
        self.exiting = exiting
        self._pid = os.getpid()
        self._previous: dict[int, Any] = {}
        self._deferred: list[int] = []
        #: Every stop signal received in the block, held ones included.
        self.received: list[int] = []

    def __enter__(self) -> StopSignals:
        try:
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:  # not the main thread
            self._restore()
        self._deferred, _deferred[:] = list(_deferred), []
        return self

    def __exit__(self, *exc_info: Any) -> None:
        if self.exiting:
            for signum in self._previous:
                signal.signal(signum, signal.SIG_IGN)
            self._previous.clear()
        self._restore()

    def raise_deferred(self) -> None:
        """Raise ``TaskTerminated`` for a stop signal received before the block began, if any."""
        if self._deferred:
            self.held = True
            self.received.extend(self._deferred)
            raise TaskTerminated.for_signal(self._deferred[0])

    def cause(self, error: BaseException) -> BaseException:
        """What a run that failed with ``error`` reports: the stop, when a stop signal came first.

        A SIGTERM sent to the whole process group also kills the DataLoader workers, and torch may report
        that ("DataLoader worker ... is killed by signal") before the main thread sees its own signal."""
        if self.received and not isinstance(error, TaskTerminated):
            stop = TaskTerminated.for_signal(self.received[0])
            stop.__context__ = error
            return stop
        return error

    def hold(self) -> None:
        """Ignore stop signals from now until the block ends."""
        self.held = True

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() != self._pid:  # a forked child (a DataLoader worker) inherited the handler: default death
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.received.append(signum)
        if self.held:
            return
        self.held = True  # the second SIGTERM (docker's, 50 ms later) must not interrupt the error path
        _quiet_sigchld()  # torch's DataLoader SIGCHLD handler would raise "worker killed" over the stop
        raise TaskTerminated.for_signal(signum)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()


def _ignore(signum: int, frame: Any) -> None:
    pass


def _quiet_sigchld() -> None:
    """Replace torch's DataLoader SIGCHLD handler, which raises in the main thread when a worker dies.

    With a Python no-op, not SIG_DFL: a SIGCHLD already pending when the handler changes would otherwise be
    reported as "OSError: Signal 17 ignored due to race condition"."""
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGCHLD, _ignore)


def _stat_fields(pid: int | str) -> list[bytes]:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, ... ([] when gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stream:
            return stream.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return []


def is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has: it only waits to be reaped)."""
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] != b"Z"


def child_pids(parent: int | None = None) -> list[int]:
    """Running processes whose parent is ``parent`` (default: this process), multiprocessing's own helper
    processes left out (Linux ``/proc``; ``[]`` elsewhere)."""
    parent = os.getpid() if parent is None else parent
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    pids = []
    for entry in entries:
        fields = _stat_fields(entry) if entry.isdigit() else []
        if len(fields) > 1 and int(fields[1]) == parent and fields[0] != b"Z":
            pids.append(int(entry))
    return [pid for pid in pids if not _is_multiprocessing_helper(pid)]


def _is_multiprocessing_helper(pid: int) -> bool:
    """multiprocessing's resource tracker and fork server ignore SIGTERM and exit by themselves when this
    process does (their pipe closes); they hold no task work."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as stream:
            return b"from multiprocessing." in stream.read()
    except OSError:
        return False


def stop_children(grace: float = CHILD_GRACE_SECONDS, *, spare: Iterable[int] = ()) -> int:
    """Terminate every child process but those in ``spare`` (children from before the run, when it runs
    inside a longer-lived process): SIGTERM, up to ``grace`` seconds to exit, then SIGKILL.

    Returns how many children were stopped. Must run in the main thread before the last log line: a
    DataLoader worker left alive prints after it, and outlives the run if the runner is killed.
    """
    _quiet_sigchld()
    spared = set(spare)
    tracked = [child for child in multiprocessing.active_children() if child.pid not in spared]
    pids = (set(child_pids()) | {child.pid for child in tracked if child.pid}) - spared
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for child in tracked:
        child.join(max(deadline - time.monotonic(), 0.0))
    while any(is_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    for pid in [pid for pid in pids if is_running(pid)]:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for child in tracked:
        child.join(1.0)
    return len(pids)


#: The exit code of the last run that ends its process (``dispatcher.run(..., exiting=True)``), once reported.
_run_exit_code: list[int] = []


def run_ends_process(code: int) -> None:
    """Record the exit ``code`` of a run after which this process ends (see :func:`exit_after_failed_run`)."""
    _run_exit_code[:] = [code]


def exit_after_failed_run() -> None:
    """When a run that ends this process failed, exit now with its code, without running exit handlers.

    The ``ymir-runner`` executable calls this last (``run``, and a plugin command such as ``sdk-run``). The run
    has written monitor.txt and printed its last line; a library's exit handler may only delay the exit past the
    10 s ``docker stop`` allows (tensorboardX closes its writers again, fsyncing them; multiprocessing joins its
    queues' threads). Output is flushed first. Does nothing after a successful run, or inside another program
    that called the run (tests)."""
    if not _run_exit_code or not _run_exit_code[0]:
        return
    _flush_output()
    os._exit(_run_exit_code[0])


def _flush_output() -> None:
    """Flush Python's stdout and stderr (either may be closed or None): before the process exits, or before its
    descriptors are sent to /dev/null."""
    with contextlib.suppress(Exception):
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()


def silence_output() -> None:
    """Send everything this process (or a library's atexit or ``__del__``) would still print to /dev/null.

    Called after the last line of a failed run: the platform shows users the last 5 lines of the log, and
    a progress bar closed at exit must not push the error out of them.
    """
    _flush_output()
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
