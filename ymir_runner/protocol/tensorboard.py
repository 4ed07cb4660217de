"""A tensorboardX writer bound to the task's /out/tensorboard, created on first use, that never fails a task.

/out/tensorboard may be a symlink the platform mounted: write into it, never delete or recreate it (a
dangling link gets its target folder created). Tensorboard is a view of the run, not one of its results:
if the folder or the events file cannot be written (a root-owned folder and a task run as another uid,
a full disk), one warning says why and every later call does nothing.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

log = logging.getLogger("ymir_runner.tensorboard")


class LazySummaryWriter:
    """Behaves like ``tensorboardX.SummaryWriter`` (``add_scalar``, ``add_text``, ``add_image``, ...);
    importing tensorboardX is deferred to the first call. Every method returns None and never raises."""

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir
        self._writer: Any = None
        #: Why tensorboard was switched off for this run, or None while it works.
        self.disabled: str | None = None

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(*args: Any, **kwargs: Any) -> None:
            writer = self._open()
            if writer is None:
                return
            try:
                getattr(writer, name)(*args, **kwargs)
            except Exception as error:
                self._disable(error)

        return call

    @property
    def used(self) -> bool:
        return self._writer is not None

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception as error:
                self._disable(error)

    def _open(self) -> Any:
        if self._writer is None and self.disabled is None:
            try:
                from tensorboardX import SummaryWriter

                # a dangling link is the platform's mount whose folder does not exist yet: create the target
                target = os.path.realpath(self.logdir) if os.path.islink(self.logdir) else self.logdir
                os.makedirs(target, exist_ok=True)
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
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except Exception:  # the writer is already broken; its error was reported above
                pass
