"""The core's own plugin: it observes every run through the lifecycle hooks, like any third-party observer.

It logs when each task starts and ends (with its duration) and one line per saved model stage, so every
executor's log has the same landmarks whatever its plugin prints.
"""

from __future__ import annotations

import logging
import time

from .hookspecs import hookimpl

log = logging.getLogger("ymir_runner")

_STARTED = "ymir_runner.builtin.started"


@hookimpl
def ymir_runner_before_task(context) -> None:
    context.run_cache[f"{_STARTED}.{context.kind.value}"] = time.monotonic()


@hookimpl
def ymir_runner_after_task(context) -> None:
    started = context.run_cache.get(f"{_STARTED}.{context.kind.value}")
    took = f" in {time.monotonic() - started:.1f} s" if started is not None else ""
    log.info("%s finished%s", context.kind.value, took)


@hookimpl
def ymir_runner_stage_saved(context, stage) -> None:
    metrics = ", ".join(f"{key} {value:.4f}" for key, value in stage.metrics.items())
    best = context.training_result.best
    log.info("stage %s saved (%s; files %s); best so far: %s", stage.name, metrics, ", ".join(stage.files),
             best.name if best else stage.name)
