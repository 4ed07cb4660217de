"""A tensorboardX writer bound to the task's /out/tensorboard, created on first use, that never fails a task.

/out/tensorboard may be a symlink the platform mounted: write into it, never delete or recreate it (a
dangling link gets its target folder created). Tensorboard is a view of the run, not one of its results (an
optional output, :mod:`ymir_runner.optional`): if the folder or the events file cannot be written (a root-owned
folder and a task run as another uid, a full disk), one warning says why and every later call does nothing; a
call whose data tensorboardX refuses (an image of a shape it cannot take) fails alone, warned about once per
method. Either is counted in the summary of the task it happened in.

tensorboardX writes from a background thread: on a full disk that thread dies and the next call would wait
for it forever. So every call first checks the free space, and tensorboard is switched off while
``MIN_FREE_BYTES`` are still free. Closing the writer (tensorboardX flushes and fsyncs the events file, which on a
loaded disk can take seconds) is given ``CLOSE_TIMEOUT`` seconds; a run that failed or was stopped gives it less
(``docker stop`` allows 10 s in all), and a writer whose close timed out is abandoned as it is: what it wrote
so far stays readable.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Callable

from ..optional import OptionalOutputs
from .atomic import free_bytes

log = logging.getLogger("ymir_runner.tensorboard")

#: Below this much free space on its device, tensorboard is switched off (the models need the room more).
MIN_FREE_BYTES = 16 << 20
CLOSE_TIMEOUT = 5.0


class LazySummaryWriter:
    """Behaves like ``tensorboardX.SummaryWriter`` (``add_scalar``, ``add_text``, ``add_image``, ...);
    importing tensorboardX is deferred to the first call. Every method returns None and never raises (an
    ``Exception``: a stop signal passes)."""

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir
        self._writer: Any = None
        #: Why tensorboard was switched off for this run, or None while it works.
        self.disabled: str | None = None
        #: Where failures are counted: the current task's optional outputs (:meth:`report_to`), else the run's.
        self.outputs = OptionalOutputs()
        self._task_outputs = False
        #: The switch-off no task has counted yet (it happened before the first task).
        self._uncounted: Exception | None = None

    def report_to(self, outputs: OptionalOutputs) -> None:
        """Count this writer's failures in ``outputs`` from now on: the core gives each task's own, so a failure
        lands in the summary of the task it happened in (a switch-off before the first task, in the first)."""
        self.outputs, self._task_outputs = outputs, True
        if self._uncounted is not None:
            outputs.failed("tensorboard", self._uncounted, warned=True)
            self._uncounted = None

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> None:
            writer = self._open()
            if writer is None:
                return
            if free_bytes(self.logdir) < MIN_FREE_BYTES:
                self._disable(OSError(f"less than {MIN_FREE_BYTES >> 20} MiB left on its device"))
                return
            try:
                getattr(writer, name)(*args, **kwargs)
            except OSError as error:  # the events file: every later call would fail the same way
                self._disable(error)
            except Exception as error:  # this call's data (tensorboardX checks it before writing): this call only
                self.outputs.failed(f"tensorboard {name.removeprefix('add_')}", error)

        return call

    @property
    def used(self) -> bool:
        return self._writer is not None

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Flush and close the events file, waiting at most ``timeout`` seconds (then switched off, warned)."""
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                _close(writer, timeout)
            except Exception as error:
                self._disable(error)

    def _open(self) -> Any:
        if self._writer is None and self.disabled is None:
            try:
                from tensorboardX import SummaryWriter

                # a dangling link is the platform's mount whose folder does not exist yet: create the target
                target = os.path.realpath(self.logdir) if os.path.islink(self.logdir) else self.logdir
                os.makedirs(target, exist_ok=True)
                if free_bytes(target) < MIN_FREE_BYTES:
                    raise OSError(f"less than {MIN_FREE_BYTES >> 20} MiB left on its device")
                self._writer = SummaryWriter(logdir=self.logdir)
                self._writer.file_writer.flush()  # the events file is opened (and may fail) here, not later
            except Exception as error:
                self._disable(error)
        return self._writer

    def _disable(self, error: Exception) -> None:
        if self.disabled is None:
            self.disabled = f"{type(error).__name__}: {error}"
            log.warning("tensorboard is switched off for this run, %s cannot be written: %s", self.logdir,
                        self.disabled)
            if self._task_outputs:
                self.outputs.failed("tensorboard", error, warned=True)
            else:
                self._uncounted = error
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                _close(writer)
            except Exception:  # the writer is already broken; its error was reported above
                pass


def _close(writer: Any, timeout: float = CLOSE_TIMEOUT) -> None:
    """``writer.close()``, given ``timeout`` seconds: with its thread dead it would wait forever."""
    errors: list[Exception] = []

    def close() -> None:
        try:
            writer.close()
        except Exception as error:
            errors.append(error)

    closer = threading.Thread(target=close, name="tensorboard-close", daemon=True)
    closer.start()
    closer.join(timeout)
    if closer.is_alive():
        raise TimeoutError(f"closing the events file took more than {timeout:g} s")
    if errors:
        raise errors[0]

