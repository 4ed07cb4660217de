"""What a task's env.yaml (and its config file) says to check: :func:`verify_out`'s arguments for
``ymir-runner verify --env``, and the candidate index."""

from __future__ import annotations

from typing import Any

import yaml

from .api import TASKS
from .findings import UsageError
from .helpers import is_int, map_container_path

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
        with open(path, encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UsageError(f"cannot read {what} {path}: {' '.join(str(error).split())}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path} is not a YAML mapping")
    return data


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def settings_from_env(env_file: str, out_dir: str, root: str | None = None) -> dict[str, Any]:
    """verify_out keyword arguments (plus ``tasks``) read from an env.yaml and its config file."""
    env = _load_yaml_file(env_file, "env.yaml")
    if not ENV_ONLY_KEYS.intersection(env):
        held = "a config.yaml" if "class_names" in env else "not an env.yaml"
        raise UsageError(f"--env {env_file} is {held}: it has none of run_training, run_mining, run_infer, input, "
                         f"output (--env takes the task's env.yaml)")
    inputs, outputs = env.get("input") or {}, env.get("output") or {}
    if root:
        paths = [(f"{section}.{key}", str(value)) for section, values in (("input", inputs), ("output", outputs))
                 if isinstance(values, dict) for key, value in values.items() if value]
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
