"""The ``ultralytics`` entry point: hooks only, thin on purpose. Neither ultralytics nor torch is imported here: the
task hooks import them, after :func:`.environment.prepare` has made ultralytics offline, and listing plugins stays
fast."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

import ymir_runner
from ymir_runner import ExecutorSpec, TaskKind

from . import EXECUTOR_NAME, INSTANCE_EXECUTOR_NAME, SEMANTIC_EXECUTOR_NAME, templates

if TYPE_CHECKING:
    from ymir_runner import TaskContext

#: The weights `ymir-runner ultralytics-weights` downloads when no model is named (the image's defaults).
DEFAULT_DOWNLOADS = ("yolo26n", "yolo26s", "yolo26m", "yolo26n-seg", "yolo26s-seg", "yolo26n-sem", "yolo26s-sem")


@ymir_runner.hookimpl
def ymir_runner_register_executors() -> list[ExecutorSpec]:
    return [ExecutorSpec(
        name=EXECUTOR_NAME,
        tasks={TaskKind.TRAINING, TaskKind.MINING, TaskKind.INFER},
        object_types={2},
        templates=templates.TEMPLATES,
        mining_algorithms=templates.MINING_ALGORITHMS,
        stage_evaluation=True,
        description="ultralytics YOLO26 / YOLO11 / YOLOv8 detectors (AGPL-3.0; COCO mAP by the core, ONNX export)",
    ), ExecutorSpec(
        name=INSTANCE_EXECUTOR_NAME,
        tasks={TaskKind.TRAINING, TaskKind.MINING, TaskKind.INFER},
        object_types={4},
        templates=templates.INSTANCE_TEMPLATES,
        annotation_formats=("seg-coco",),
        mining_algorithms=templates.MINING_ALGORITHMS,
        stage_evaluation=True,
        description="ultralytics YOLO26 / YOLO11 / YOLOv8 instance segmentation (-seg; AGPL-3.0; maskAP by the core)",
    ), ExecutorSpec(
        name=SEMANTIC_EXECUTOR_NAME,
        tasks={TaskKind.TRAINING, TaskKind.MINING, TaskKind.INFER},
        object_types={3},
        templates=templates.SEMANTIC_TEMPLATES,
        annotation_formats=("seg-coco",),
        mining_algorithms=templates.SEMANTIC_MINING_ALGORITHMS,
        stage_evaluation=True,
        description="ultralytics YOLO26 semantic segmentation (-sem; AGPL-3.0; mIoU by the core)",
    )]


def _semantic(context: TaskContext) -> bool:
    """Whether the task runs the semantic executor (its own module: :mod:`.semantic`)."""
    return context.executor.name == SEMANTIC_EXECUTOR_NAME


@ymir_runner.hookimpl
def ymir_runner_train(context: TaskContext) -> None:
    if _semantic(context):
        from . import semantic

        semantic.train(context)
        return
    from .training import train

    train(context)


@ymir_runner.hookimpl
def ymir_runner_mine(context: TaskContext) -> None:
    if _semantic(context):
        from . import semantic

        semantic.mine(context)
        return
    from .mining import mine

    mine(context)


@ymir_runner.hookimpl
def ymir_runner_infer(context: TaskContext) -> None:
    if _semantic(context):
        from . import semantic

        semantic.infer(context)
        return
    from .inference import infer

    infer(context)


@ymir_runner.hookimpl
def ymir_runner_add_commands(subparsers: argparse._SubParsersAction) -> None:
    from .environment import WEIGHTS_ENV_VAR, weights_dir

    parser = subparsers.add_parser(
        "ultralytics-weights",
        help="download ultralytics' official weights into a folder (when an image is built; tasks never download)")
    parser.add_argument("models", nargs="*", default=list(DEFAULT_DOWNLOADS),
                        help=f"model names (default: {' '.join(DEFAULT_DOWNLOADS)})")
    parser.add_argument("--out", default=weights_dir(), help=f"the folder (default ${WEIGHTS_ENV_VAR} or %(default)s)")
    parser.set_defaults(handler=_download_weights)


def _download_weights(args: argparse.Namespace) -> int:
    import os
    import tempfile

    # ultralytics' settings of this command go to a temporary folder, not to $HOME; its import chatter not to stdout.
    with tempfile.TemporaryDirectory(prefix="ymir-runner-ultralytics-") as settings:
        os.environ["YOLO_CONFIG_DIR"] = settings
        from .environment import import_quietly
        from .weights import download_weights

        import_quietly()

        for path in download_weights(args.models, args.out):
            print(path)
    return 0
