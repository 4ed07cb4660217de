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
    ), semantic_executor_spec()]


def semantic_executor_spec() -> ExecutorSpec:
    """The semantic segmentation executor (object type 3; issue 28): training, mining and inference."""
    return ExecutorSpec(
        name=SEMANTIC_EXECUTOR_NAME,
        tasks={TaskKind.TRAINING, TaskKind.MINING, TaskKind.INFER},
        object_types={3},
        templates=templates.SEMANTIC_TEMPLATES,
        mining_algorithms=templates.SEMANTIC_MINING_ALGORITHMS,
        annotation_formats=("seg-coco",),
        stage_evaluation=True,
        description="semantic segmentation in pure PyTorch: Semantic FPN on the detector's backbone and neck "
                    "(platform mIoU, ONNX export)",
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
    if context.executor.name == SEMANTIC_EXECUTOR_NAME:
        from .semantic.mining import mine as mine_semantic

        mine_semantic(context)
        return
    from .mining import mine

    mine(context)


@ymir_runner.hookimpl
def ymir_runner_infer(context: TaskContext) -> None:
    if context.executor.name == SEMANTIC_EXECUTOR_NAME:
        from .semantic.inference import infer as infer_semantic

        infer_semantic(context)
        return
    from .inference import infer

    infer(context)


@ymir_runner.hookimpl
def ymir_runner_add_commands(subparsers: Any) -> None:
    from .demo import add_demo_command

    add_demo_command(subparsers)
