"""A tensorboardX writer bound to the task's /out/tensorboard, created on first use.

/out/tensorboard may be a symlink the platform mounted: write into it, never delete or recreate it.
"""

from __future__ import annotations

import os
from typing import Any


class LazySummaryWriter:
    """Behaves like ``tensorboardX.SummaryWriter``; importing tensorboardX is deferred to the first call."""

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir
        self._writer: Any = None

    @property
    def writer(self) -> Any:
        if self._writer is None:
            from tensorboardX import SummaryWriter

            os.makedirs(self.logdir, exist_ok=True)
            self._writer = SummaryWriter(logdir=self.logdir)
        return self._writer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.writer, name)

    @property
    def used(self) -> bool:
        return self._writer is not None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
