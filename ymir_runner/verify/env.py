"""What a task's env.yaml (and its config file) says to check: :func:`verify_out`'s arguments for
``ymir-runner verify --env``, and the candidate index."""

from __future__ import annotations

import os
from typing import Any

import yaml

from .api import TASKS
from .findings import UsageError
from .helpers import MAX_YAML_BYTES, YamlBoundsError, is_int, load_yaml, map_container_path

#: env.yaml's own keys besides ``task_id`` (config.yaml has that one too).
ENV_ONLY_KEYS = frozenset({"protocol_version", "run_training", "run_mining", "run_infer", "manifest_file", "input",
                           "output"})
#: env.yaml without ``protocol_version`` comes from a platform <= 1.1.0: protocol.md says treat it as 0.0.1.
UNVERSIONED_PROTOCOL = "0.0.1"


def read_candidates(path: str) -> list[str]:
    """A candidate index: one image path per line; a TAB-separated second column is ignored."""
    try:
        with open(path, encoding="utf-8-sig") as stream:  # a byte-order mark is not part of the first path
            return [line.rstrip("\r\n").split("\t")[0] for line in stream if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read candidate index {path}: {error}") from None


def _load_yaml_file(path: str, what: str) -> dict[str, Any]:
    try:
        if not os.path.isfile(path):
            raise OSError(f"{'not a regular file' if os.path.exists(path) else 'no such file'}")
        with open(path, "rb") as stream:
            text = stream.read(MAX_YAML_BYTES + 1).decode("utf-8")
        data = load_yaml(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, YamlBoundsError) as error:
        raise UsageError(f"cannot read {what} {path}: {' '.join(str(error).split())}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path} is not a YAML mapping")
    return data


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def settings_from_env(env_file: str, out_dir: str, root: str | None = None) -> dict[str, Any]:
    """verify_out keyword arguments (plus ``tasks``) read from an env.yaml and its config file."""
    env = _load_yaml_file(env_file, "env.yaml")
    if "class_names" in env and not {"input", "output"}.intersection(env):
        raise UsageError(f"--env {env_file} is a config.yaml (it holds class_names), not an env.yaml: --env takes "
                         f"the task's env.yaml")
    if not ENV_ONLY_KEYS.intersection(env):
        raise UsageError(f"--env {env_file} is not an env.yaml: it has none of run_training, run_mining, "
                         f"run_infer, input, output (--env takes the task's env.yaml)")
    inputs, outputs = env.get("input") or {}, env.get("output") or {}
    paths = [(f"{section}.{key}", str(value)) for section, values in (("input", inputs), ("output", outputs))
             if isinstance(values, dict) for key, value in values.items() if value]
    if not root:
        absent = [path for _, path in paths if path.startswith("/in/") and not os.path.exists(path)]
        if absent:
            work = os.path.dirname(os.path.dirname(os.path.abspath(env_file)))
            raise UsageError(f"env.yaml names container paths such as {absent[0]}, which do not exist here: for a "
                             f"tree written with container paths pass --root {work} (the folder holding in/ and "
                             f"out/)")
    if root:
        foreign = [(key, path) for key, path in paths
                   if path not in ("/in", "/out") and not path.startswith(("/in/", "/out/"))]
        if foreign:
            raise UsageError(f"--root {root} stands in for '/' of container paths (/in/..., /out/...), but "
                             f"env.yaml's {foreign[0][0]} is {foreign[0][1]!r}: --root cannot apply; leave it out")
    local = lambda container_path: map_container_path(str(container_path), out_dir, root)  # noqa: E731
    settings: dict[str, Any] = {
        "tasks": [kind for kind in TASKS if _truthy(env.get(f"run_{kind}"))],
        "protocol_version": str(env.get("protocol_version") or UNVERSIONED_PROTOCOL),
        "paths": {kind: local(outputs[key]) for kind, key in (
            ("monitor", "monitor_file"), ("training", "training_result_file"),
            ("mining", "mining_result_file"), ("infer", "infer_result_file")) if outputs.get(key)},
    }
    if root:
        settings["root"] = root
    if env.get("task_id"):
        settings["task_id"] = str(env["task_id"])
    if inputs.get("candidate_index_file"):
        settings["candidates"] = read_candidates(local(inputs["candidate_index_file"]))
    if inputs.get("config_file"):
        config = _load_yaml_file(local(inputs["config_file"]), "config file")
        if isinstance(config.get("class_names"), list):
            settings["class_names"] = [str(name) for name in config["class_names"]]
        if is_int(config.get("object_type")):
            settings["object_type"] = config["object_type"]
    return settings
