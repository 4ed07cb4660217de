"""The ``detection`` entry point: hooks only. torch is imported inside the task hooks and commands, so listing
plugins (``ymir-runner plugins``) stays fast and torch-free."""

from __future__ import annotations

from typing import Any

import ymir_runner
from ymir_runner import ExecutorSpec, TaskContext, TaskKind

from . import EXECUTOR_NAME, SEMANTIC_EXECUTOR_NAME, templates


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


def semantic_executor_spec() -> ExecutorSpec:
    """The semantic segmentation executor (object type 3; issue 28). Not registered yet: it trains, but has no
    inference, mining or ONNX export, and registering it changes the image's img-man (``object_type: [2, 3]``,
    templates in ``det/`` and ``semantic-seg/``). Tests run it through ``ymir_runner.testing.plugin_registry``."""
    return ExecutorSpec(
        name=SEMANTIC_EXECUTOR_NAME,
        tasks={TaskKind.TRAINING},
        object_types={3},
        templates=templates.SEMANTIC_TEMPLATES,
        annotation_formats=("seg-coco",),
        stage_evaluation=True,
        description="semantic segmentation in pure PyTorch: Semantic FPN on the detector's backbone and neck "
                    "(platform mIoU)",
    )


@ymir_runner.hookimpl
def ymir_runner_train(context: TaskContext) -> None:
    if context.executor.name == SEMANTIC_EXECUTOR_NAME:
        from .semantic.training import train as train_semantic

        train_semantic(context)
        return
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
