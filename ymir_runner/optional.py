"""Optional outputs: what a task writes beside its results, and that may fail without failing the task.

Tensorboard, pictures of predictions, an ONNX export beside a stage's checkpoint, attachments and reports are
views of a run, not its results (those are a stage's model file, result.yaml, result.tsv, infer-result.json).
A failure in one is caught (``Exception``, never ``BaseException``: a stop signal still stops the task), warned
about once per kind with its one-line reason (the traceback at debug level), counted, and summed up in the
task's final summary line; the task goes on.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
from typing import Iterator

from .errors import one_line

log = logging.getLogger("ymir_runner.outputs")


@dataclasses.dataclass
class OptionalOutput:
    """The outcome of one guarded block: ``ok`` unless it raised; ``error`` is what it raised."""

    kind: str
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def reason(self) -> str:
        """The failure's one-line reason ('' while ``ok``)."""
        return "" if self.error is None else one_line(self.error)


class OptionalOutputs:
    """The optional outputs of one task: ``guard(kind)`` runs one, and failures are counted by kind.

    ``kind`` names what failed the way a user would (``tensorboard picture``, ``ONNX export``): it is the key of
    the once-per-kind warning and of the count in :meth:`report`."""

    def __init__(self, logger: logging.Logger = log) -> None:
        #: Failures by kind.
        self.failures: collections.Counter[str] = collections.Counter()
        self._log = logger

    @contextlib.contextmanager
    def guard(self, kind: str) -> Iterator[OptionalOutput]:
        """``with outputs.guard("ONNX export") as onnx: ...``: an ``Exception`` in the block is recorded
        (:meth:`failed`) and not raised; ``onnx.ok`` says whether the block finished."""
        outcome = OptionalOutput(kind)
        try:
            yield outcome
        except Exception as error:  # noqa: BLE001 - the point: an optional output never stops the task
            outcome.error = error
            self.failed(kind, error)

    def failed(self, kind: str, error: BaseException, *, warned: bool = False) -> None:
        """Count a failure of ``kind``; the first of each kind is warned about (unless the caller ``warned``
        already in words of its own), every one is logged with its traceback at debug level."""
        self.failures[kind] += 1
        if self.failures[kind] == 1 and not warned:
            self._log.warning("%s failed, the task goes on without it: %s (further failures of it are only counted "
                              "in the task's summary)", kind, one_line(error))
        self._log.debug("%s failed", kind, exc_info=error)

    @property
    def total(self) -> int:
        return sum(self.failures.values())

    def report(self) -> str:
        """``optional outputs failed: 1 ONNX export, 3 tensorboard picture`` ('' when none failed)."""
        if not self.failures:
            return ""
        return "optional outputs failed: " + ", ".join(f"{count} {kind}"
                                                       for kind, count in sorted(self.failures.items()))
