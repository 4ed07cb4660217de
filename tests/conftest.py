import importlib.metadata

import pytest

from ymir_runner.plugins import DISABLE_ENV_VAR, ENTRY_POINT_GROUP

pytest_plugins = ["ymir_runner.testing"]

# Plugins pip-installed beside the core (the first-party detection plugin in CI) are blocked in the core's
# tests: they test discovery, selection and blocking with plugins they create themselves.
INSTALLED = sorted({entry_point.name for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})


@pytest.fixture(autouse=True)
def _only_test_plugins(monkeypatch):
    if INSTALLED:
        monkeypatch.setenv(DISABLE_ENV_VAR, ",".join(INSTALLED))
