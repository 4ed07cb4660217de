"""Every hook of ymir-runner, grouped by phase. Implement them with ``@ymir_runner.hookimpl``.

Hook implementations may take any subset of a hook's arguments (pluggy passes them by name) and must not
give their parameters defaults. The core calls every hook with keyword arguments; new arguments are
only ever added, so an implementation written today keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import pluggy

PROJECT_NAME = "ymir_runner"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

if TYPE_CHECKING:
    import argparse

    from .context import TaskContext
    from .protocol.results import Stage
    from .records import ExecutorSpec


# --- registration -----------------------------------------------------------------------------------------

@hookspec
def ymir_runner_register_executors() -> Sequence[ExecutorSpec]:
    """Describe what this plugin can run: a list of :class:`~ymir_runner.records.ExecutorSpec`.

    Called on every plugin whenever executors are listed (``ymir-runner plugins``, ``img-man``, each run).
    Keep it cheap and free of heavy imports (no torch): it runs when the CLI only lists plugins. Every
    result is kept; executor names must be unique across installed plugins.
    """


@hookspec
def ymir_runner_add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add subcommands to the ``ymir-runner`` command line (e.g. a plugin's ``demo``).

    Called on every plugin each time the command line is built, before the arguments are parsed. Use
    ``parser = subparsers.add_parser(name, help=...)`` and ``parser.set_defaults(handler=function)``, where
    ``function(args) -> int`` returns the exit code. Import heavy libraries inside ``function`` only.
    """


# --- tasks: called only on the plugin whose executor was chosen for the task ----------------------------

@hookspec
def ymir_runner_train(context: TaskContext) -> None:
    """Run a training task: read ``context.training_set`` / ``context.validation_set``, report through
    ``context.progress``, and record each model stage with ``context.training_result.add_stage``.

    Called once, only on the plugin that returned the executor chosen for the task (``context.executor``).
    Raise a :class:`~ymir_runner.errors.YmirError` to fail with a specific return code.
    """


@hookspec
def ymir_runner_mine(context: TaskContext) -> None:
    """Run a mining task: score every image of ``context.candidates`` with ``context.mining_result.add(image,
    score)`` (higher = more worth labelling); the core writes result.tsv, highest first, when the task ends.

    Called only on the chosen executor's plugin. When a run does mining and inference, mining comes first
    and ``context.run_cache`` is shared by both tasks (load the model once).
    """


@hookspec
def ymir_runner_infer(context: TaskContext) -> None:
    """Run an inference task: add each candidate's detections to ``context.infer_result`` (masks to
    ``context.seg_infer_result`` in a segmentation task, object_type 3 or 4); the core writes infer-result.json
    afterwards with an empty entry for every candidate the plugin did not add.

    Called only on the chosen executor's plugin, after mining when both run.
    """


# --- lifecycle: called on every plugin, to observe or prepare a task ------------------------------------

@hookspec
def ymir_runner_before_task(context: TaskContext) -> None:
    """Called on every plugin before a task's hook, once the context is built. Raising fails the task."""


@hookspec
def ymir_runner_after_task(context: TaskContext) -> None:
    """Called on every plugin after a task's hook returned and its outputs were written."""


@hookspec
def ymir_runner_on_task_error(context: TaskContext, error: BaseException) -> None:
    """Called on every plugin when a task fails (including SIGTERM), before the core reports the error.

    The core re-raises ``error`` afterwards; an exception raised here is logged and does not replace it.
    """


@hookspec
def ymir_runner_stage_saved(context: TaskContext, stage: Stage) -> None:
    """Called on every plugin by the core right after a model stage was committed to result.yaml during
    training (the stage's files are in place and result.yaml lists it)."""
