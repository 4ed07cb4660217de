"""The core's log: one handler on the ``ymir_runner`` logger, writing to stderr, which the platform appends to
/out/ymir-executor-out.log and shows the last 5 lines of. ``ymir-runner run`` and ``ymir-runner inspect`` set it
up the same way, so a warning about a skipped image reads alike in both."""

from __future__ import annotations

import logging
import sys
from typing import Any

#: The logger every module of the core (and, below it, each plugin's ``ymir_runner.<executor>``) logs to.
LOGGER_NAME = "ymir_runner"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and tools swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging() -> None:
    """Log INFO and above of the ``ymir_runner`` logger to stderr, with time, level and logger name; calling it
    again adds no second handler."""
    root = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(handler, _StderrHandler) for handler in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                               "%Y-%m-%d %H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
