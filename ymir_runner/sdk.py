"""The bridge to the ymir-exc SDK (the old 1.1.0 protocol): the one place that knows it.

During a run, code written against ``ymir_exc.env`` / ``ymir_exc.dataset_reader`` sees the same task as
ymir-runner: the SDK's env path points at the run's env.yaml (in a local run with a root, a copy whose
paths, index files included, point into the local tree; :func:`sdk_env`). The SDK's writers would write
protocol files the old way (two-decimal monitor, no return code, legacy result.yaml, ``annotations`` key, no
atomicity), so during a task they are routed to that task's writers instead (:func:`sdk_writers`).

One floor above the protocol: it reads the task's env and writes through a :class:`~.context.TaskContext`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from typing import Any, Iterator

import yaml

from .context import TaskContext
from .protocol.env import TaskEnv, reroot
from .protocol.results import Detection


def _rerooted_env(env: TaskEnv, folder: str) -> str:
    """env.yaml and index files whose container paths point into the local root, written to ``folder``."""
    document = env.to_yaml_dict()
    for key in ("training_index_file", "val_index_file", "candidate_index_file"):
        index = document["input"][key]
        if not index or not os.path.isfile(index):
            continue
        copy = os.path.join(folder, os.path.basename(index))
        with open(index, encoding="utf-8-sig") as source, open(copy, "w", encoding="utf-8") as target:
            for line in source:
                fields = line.rstrip("\r\n").split("\t")
                target.write("\t".join(reroot(field.strip(), env.root) for field in fields) + "\n")
        document["input"][key] = copy
    path = os.path.join(folder, "env.yaml")
    with open(path, "w", encoding="utf-8") as stream:
        yaml.safe_dump(document, stream, sort_keys=False)
    return path


@contextlib.contextmanager
def sdk_env(env: TaskEnv) -> Iterator[str]:
    """Point ``ymir_exc.settings.DEFAULT_ENV_FILE_PATH`` at the run's env file; restore it afterwards."""
    try:
        from ymir_exc import settings
    except ImportError:  # the SDK is a dependency, but a broken install must not stop a run
        yield env.env_file
        return
    previous = settings.DEFAULT_ENV_FILE_PATH
    with contextlib.ExitStack() as stack:
        path = env.env_file
        if env.root:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="ymir-runner-env-"))
            path = _rerooted_env(env, folder)
        settings.DEFAULT_ENV_FILE_PATH = path
        try:
            yield path
        finally:
            settings.DEFAULT_ENV_FILE_PATH = previous


@contextlib.contextmanager
def sdk_writers(context: TaskContext) -> Iterator[None]:
    """Replace the SDK's writer functions with the task's own writers (:func:`sdk_adapters`) while it runs."""
    try:
        from ymir_exc import monitor as sdk_monitor
        from ymir_exc import result_writer
    except ImportError:
        yield
        return
    adapters = sdk_adapters(context)
    replaced = [
        (sdk_monitor, "write_monitor_logger", adapters["monitor"]),
        (result_writer, "write_mining_result", adapters["mining"]),
        (result_writer, "write_infer_result", adapters["infer"]),
        (result_writer, "write_training_result", adapters["training"]),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in replaced]
    try:
        for module, name, function in replaced:
            setattr(module, name, function)
        yield
    finally:
        for module, name, function in saved:
            setattr(module, name, function)


def sdk_adapters(context: TaskContext) -> dict[str, Any]:
    """ymir-exc's writer functions (``monitor``, ``mining``, ``infer``, ``training``) re-implemented on the
    context's writers, with the SDK's signatures (boxes ``x, y, w, h``; ``model_names`` relative to /out/models)."""

    def monitor(percent: float) -> None:
        context.progress.update(percent)

    def mining(result: Any) -> None:
        for image, score in result:
            context.mining_result.add(image, score)

    def infer(result: Any) -> None:
        for image, sdk_annotations in result.items():
            detections = []
            for annotation in sdk_annotations:
                box, name = annotation.box, annotation.class_name
                detections.append(Detection(box.x, box.y, box.x + box.w, box.y + box.h, annotation.score,
                                            context.class_names.index(name)))
            context.infer_result.add(image, detections)

    def training(model_names: list, mAP: float, classAPs: Any = None, **kwargs: Any) -> None:
        results = context.training_result
        stage = f"stage_{len(results.stages)}"
        folder = results.stage_dir(stage)
        for name in model_names:
            shutil.copy2(os.path.join(context.env.output.models_dir, name), folder)
        results.add_stage(stage, [os.path.basename(name) for name in model_names], {"mAP": mAP})

    return {"monitor": monitor, "mining": mining, "infer": infer, "training": training}
