"""The ``detection`` entry point: thin on purpose. torch is only imported inside the task hooks and commands,
so listing plugins (``ymir-runner plugins``) stays fast and torch-free."""

from __future__ import annotations

import ymir_runner
from ymir_runner import ExecutorSpec, TaskKind

from . import EXECUTOR_NAME, templates


@ymir_runner.hookimpl
def ymir_runner_register_executors():
    return [ExecutorSpec(
        name=EXECUTOR_NAME,
        tasks={TaskKind.TRAINING, TaskKind.MINING, TaskKind.INFER},
        object_types={2},
        templates=templates.TEMPLATES,
        mining_algorithms=templates.MINING_ALGORITHMS,
        description="anchor-free CenterNet-style detector in pure PyTorch (COCO mAP, ONNX export)",
    )]


@ymir_runner.hookimpl
def ymir_runner_train(context):
    from .training import train

    train(context)


@ymir_runner.hookimpl
def ymir_runner_mine(context):
    from .inference import mine

    mine(context)


@ymir_runner.hookimpl
def ymir_runner_infer(context):
    from .inference import infer

    infer(context)


@ymir_runner.hookimpl
def ymir_runner_add_commands(subparsers):
    from .demo import add_demo_command

    add_demo_command(subparsers)
