"""The ``detection`` entry point: hooks only. torch is imported inside the task hooks and commands, so listing
plugins (``ymir-runner plugins``) stays fast and torch-free."""

from __future__ import annotations

from typing import Any

import ymir_runner
from ymir_runner import ExecutorSpec, TaskContext, TaskKind

from . import EXECUTOR_NAME, templates


@ymir_runner.hookimpl
def ymir_runner_register_executors() -> list[ExecutorSpec]:
    return [ExecutorSpec(
        name=EXECUTOR_NAME,
        tasks={TaskKind.TRAINING, TaskKind.MINING, TaskKind.INFER},
        object_types={2},
        templates=templates.TEMPLATES,
        mining_algorithms=templates.MINING_ALGORITHMS,
        stage_evaluation=True,
        description="anchor-free CenterNet-style detector in pure PyTorch (COCO mAP, ONNX export)",
    )]


@ymir_runner.hookimpl
def ymir_runner_train(context: TaskContext) -> None:
    from .training import train

    train(context)


@ymir_runner.hookimpl
def ymir_runner_mine(context: TaskContext) -> None:
    from .mining import mine

    mine(context)


@ymir_runner.hookimpl
def ymir_runner_infer(context: TaskContext) -> None:
    from .inference import infer

    infer(context)


@ymir_runner.hookimpl
def ymir_runner_add_commands(subparsers: Any) -> None:
    from .demo import add_demo_command

    add_demo_command(subparsers)
