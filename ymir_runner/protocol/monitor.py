"""/out/monitor.txt: the progress line the platform polls, and the progress API plugins report through.

Line 1 is ``task_id<TAB>timestamp<TAB>percent<TAB>state<TAB>return_code``. Every write replaces the whole
file atomically; percent never goes down; writes are throttled to about one per second, except the first,
the last and any change of state.
"""

from __future__ import annotations

import errno
import math
import os
import stat
import threading
import time
from typing import Callable

from ..errors import OutputError, ReturnCode
from .atomic import atomic_write_text

STATE_RUNNING = 2
STATE_FAILED = 4
#: Seconds between two throttled writes.
MIN_INTERVAL = 1.0


def monitor_line(task_id: str, timestamp: float, percent: float, state: int, code: int) -> str:
    """Line 1 of monitor.txt; a TAB or line break in ``task_id`` would make it unparseable: each becomes a space."""
    task_id = " ".join(str(task_id).replace("\t", " ").splitlines())
    return f"{task_id}\t{timestamp:.3f}\t{percent:.4f}\t{state}\t{code}\n"


class Monitor:
    """Owns monitor.txt for one run. Thread-safe: DataLoader callbacks and the main thread may report."""

    def __init__(self, path: str, task_id: str, *, clock: Callable[[], float] = time.time,
                 min_interval: float = MIN_INTERVAL) -> None:
        self.path = path
        self.task_id = task_id
        self.percent = 0.0
        self.state = STATE_RUNNING
        self.code = 0
        self.message = ""
        self._clock = clock
        self._min_interval = min_interval
        self._last_write = -math.inf
        self._dirty = False
        self._lock = threading.Lock()

    def update(self, percent: float, message: str | None = None) -> None:
        """Report overall progress in [0, 1]; lower values than already reported are ignored."""
        if not math.isfinite(percent):
            raise ValueError(f"progress must be a finite number, got {percent!r}")
        with self._lock:
            if self.state != STATE_RUNNING:
                return
            new = min(max(percent, self.percent), 1.0)
            if new == self.percent and (message is None or message == self.message):
                return
            self.percent = new
            if message is not None:
                self.message = message
            self._dirty = True
            if self._clock() - self._last_write >= self._min_interval:
                self._write()

    def start(self) -> None:
        with self._lock:
            self._write()

    def flush(self) -> None:
        """Write the latest progress now if a throttled update is pending."""
        with self._lock:
            if self._dirty:
                self._write()

    def succeed(self) -> None:
        """Percent 1.0, state 2 (running: the platform itself marks the task done after a zero exit)."""
        with self._lock:
            if self.state != STATE_RUNNING:  # a failed run stays failed
                return
            self.percent = 1.0
            self._write()

    def fail(self, code: int) -> None:
        """State 4 with a return code: call only right before exiting non-zero."""
        with self._lock:
            self.state = STATE_FAILED
            self.code = int(code) or int(ReturnCode.GENERIC)
            self._write()

    def _write(self) -> None:
        """Replace the file atomically; on a full disk (the temp file needs a block the disk does not have)
        write the line over the existing file in place, which needs none: the platform must see progress
        and, above all, state 4. Only a regular file of its own is written in place, never a link's target or
        a file with another hard link (it would write outside /out): then the full disk's error is raised."""
        try:
            self._write_file(in_place=False)
        except OutputError as error:
            if not error.disk_full:  # a folder named monitor.txt, no permission: nothing to fall back on
                raise
            try:
                self._write_file(in_place=True)
            except OSError:
                raise error from None

    def _write_file(self, in_place: bool) -> None:
        # The platform ignores an update whose timestamp equals the last one IT read, which may be any
        # earlier write: keep the printed timestamps strictly increasing, even if the clock stalls.
        now = max(round(self._clock(), 3), round(self._last_write + 0.001, 3))
        text = monitor_line(self.task_id, now, self.percent, self.state, self.code)
        if self.message:
            text += self.message.replace("\n", " ") + "\n"
        if in_place:
            _overwrite_in_place(self.path, text.encode("utf-8"))
        else:
            atomic_write_text(self.path, text)
        self._last_write, self._dirty = now, False


def _overwrite_in_place(path: str, data: bytes) -> None:
    """Write ``data`` over the file at ``path`` (created when missing) without a temp file. Raises OSError for a
    symbolic link (``O_NOFOLLOW``), a file with other hard links or anything but a regular file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
            raise OSError(errno.EPERM, "not a regular file of its own (a hard link, a device or a FIFO)", path)
        written = 0
        while written < len(data):
            written += os.write(fd, data[written:])
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


class Progress:
    """A plugin's progress within its share of the run: ``update(0..1)`` maps into ``[start, end]``.

    ``span(a, b)`` gives a child for a phase of the task, e.g. data preparation 0-0.05, training 0.05-0.95.
    """

    def __init__(self, monitor: Monitor, start: float = 0.0, end: float = 1.0, label: str = "") -> None:
        if not 0.0 <= start <= end <= 1.0:
            raise ValueError(f"progress span [{start}, {end}] must lie within [0, 1]")
        self.monitor = monitor
        self.start = start
        self.end = end
        self.label = label
        self.fraction = 0.0

    def update(self, fraction: float, message: str | None = None) -> None:
        """Report that ``fraction`` (0..1, clamped) of this span is done."""
        fraction = float(fraction)
        if not math.isfinite(fraction):  # clamping would turn inf into "done" and NaN into nothing
            raise ValueError(f"progress must be a finite number, got {fraction!r}")
        fraction = min(max(fraction, 0.0), 1.0)
        self.fraction = max(self.fraction, fraction)
        text = None if message is None else (f"{self.label}: {message}" if self.label else message)
        self.monitor.update(self.start + (self.end - self.start) * self.fraction, text)

    def steps(self, done: int, total: int, message: str | None = None) -> None:
        """Report ``done`` of ``total`` units of work (optimisation steps, images)."""
        self.update(done / total if total > 0 else 1.0, message)

    def span(self, start: float, end: float, label: str | None = None) -> Progress:
        """A child covering [start, end] of this span."""
        width = self.end - self.start
        return Progress(self.monitor, self.start + width * start, self.start + width * end,
                        self.label if label is None else label)

    def done(self) -> None:
        self.update(1.0)
        self.monitor.flush()
