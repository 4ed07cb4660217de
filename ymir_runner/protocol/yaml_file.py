"""Reading the YAML files the platform writes under /in (env.yaml, config.yaml): one reader, one set of messages."""

from __future__ import annotations

from typing import Any, Mapping

import yaml

from ..errors import ConfigError


def read_yaml_mapping(path: str, what: str, *, empty_ok: bool = False) -> dict[str, Any]:
    """The YAML mapping in ``path``, read with PyYAML's safe loader.

    ``what`` names the file in messages (``"env file"``, ``"config file"``). An empty file gives ``{}`` when
    ``empty_ok``. Raises :class:`~ymir_runner.errors.ConfigError` naming the file when it cannot be read, is not
    UTF-8 text, is not valid YAML or does not hold a mapping (the message names the type it holds).
    """
    try:
        with open(path, encoding="utf-8") as stream:
            raw = yaml.safe_load(stream)
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path}: {error.strerror}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{what} {path} is not valid YAML: {' '.join(str(error).split())}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{what} {path} is not UTF-8 text: {error}") from error
    if raw is None and empty_ok:
        return {}
    if not isinstance(raw, Mapping):
        held = "nothing" if raw is None else type(raw).__name__
        raise ConfigError(f"{what} {path} must hold a YAML mapping, got {held}")
    return dict(raw)
