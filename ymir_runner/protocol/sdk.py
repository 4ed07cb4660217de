"""Interoperability with the ymir-exc SDK (the old 1.1.0 protocol).

During a run, code written against ``ymir_exc.env`` / ``ymir_exc.dataset_reader`` sees the same task as
ymir-runner: the SDK's env path points at the run's env.yaml (in a local run with a root, a copy whose
paths, index files included, point into the local tree). The SDK's writers would write protocol files the
old way (two-decimal monitor, no return code, legacy result.yaml, ``annotations`` key, no atomicity), so they
are routed to ymir-runner's writers instead.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Any, Callable, Iterator

import yaml

from .env import TaskEnv, reroot


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
def sdk_writers(*, monitor: Callable[[float], None], mining: Callable[[Any], None],
                infer: Callable[[Any], None], training: Callable[..., None]) -> Iterator[None]:
    """Replace the SDK's writer functions with ymir-runner's for the duration of a task."""
    try:
        from ymir_exc import monitor as sdk_monitor
        from ymir_exc import result_writer
    except ImportError:
        yield
        return
    replaced = [
        (sdk_monitor, "write_monitor_logger", monitor),
        (result_writer, "write_mining_result", mining),
        (result_writer, "write_infer_result", infer),
        (result_writer, "write_training_result", training),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in replaced]
    try:
        for module, name, function in replaced:
            setattr(module, name, function)
        yield
    finally:
        for module, name, function in saved:
            setattr(module, name, function)
