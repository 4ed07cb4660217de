"""The ``sdk`` executor's entry point: thin, so that listing plugins imports nothing heavy.

Executor ``sdk`` runs training, mining and inference of object type 2 (det-ark and det-voc) by supervising an
image's own ymir_exc-based command (:mod:`.supervisor`); it has no templates of its own (the image keeps its
/img-man) and reads config.yaml through that command. Command ``ymir-runner sdk-run [--env] [--root] -- CMD...``
runs the tasks of env.yaml with it (:mod:`.command`).
"""

from __future__ import annotations

import argparse
from typing import Sequence

from ymir_runner import ExecutorSpec, TaskContext, TaskKind, hookimpl

EXECUTOR = "sdk"


@hookimpl
def ymir_runner_register_executors() -> Sequence[ExecutorSpec]:
    return [ExecutorSpec(
        name=EXECUTOR,
        tasks={TaskKind.TRAINING, TaskKind.MINING, TaskKind.INFER},
        object_types={2},
        annotation_formats=("det-ark", "det-voc"),
        reads_own_config=True,
        named_only=True,  # chosen by `sdk-run` only: installed beside another executor, it changes nothing for it
        description="an image's own ymir_exc-based executor, supervised: `ymir-runner sdk-run -- CMD...`",
    )]


@hookimpl
def ymir_runner_add_commands(subparsers: argparse._SubParsersAction) -> None:
    from .command import add_command

    add_command(subparsers)


@hookimpl
def ymir_runner_train(context: TaskContext) -> None:
    from .supervisor import run_task

    run_task(context)


@hookimpl
def ymir_runner_mine(context: TaskContext) -> None:
    from .supervisor import run_task

    run_task(context)


@hookimpl
def ymir_runner_infer(context: TaskContext) -> None:
    from .supervisor import run_task

    run_task(context)
