from types import SimpleNamespace

import yaml

from . import settings


def _namespace(value):
    if isinstance(value, dict):
        return SimpleNamespace(**{key: _namespace(item) for key, item in value.items()})
    return value


def get_current_env():
    with open(settings.DEFAULT_ENV_FILE_PATH, encoding="utf-8") as stream:
        return _namespace(yaml.safe_load(stream))


def get_executor_config():
    with open(get_current_env().input.config_file, encoding="utf-8") as stream:
        return yaml.safe_load(stream)


def get_merged_config():
    return {"param": get_executor_config(), "ymir": get_current_env()}
