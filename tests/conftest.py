import importlib.metadata

import pytest

from ymir_runner.plugins import DISABLE_ENV_VAR, ENTRY_POINT_GROUP

pytest_plugins = ["ymir_runner.testing"]

# Plugins pip-installed beside the core (the first-party detection plugin in CI) are blocked in the core's
# tests: they test discovery, selection and blocking with plugins they create themselves.
# They are blocked by DISTRIBUTION name: an installed plugin whose entry point shares a name with one a test
# creates must not block the test's own.
INSTALLED = sorted({entry_point.dist.name for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
                    if entry_point.dist is not None})


@pytest.fixture
def installed_plugin_distributions() -> list[str]:
    """The plugin distributions pip-installed beside the core (blocked in every other test)."""
    return INSTALLED


@pytest.fixture(autouse=True)
def _only_test_plugins(monkeypatch):
    if INSTALLED:
        monkeypatch.setenv(DISABLE_ENV_VAR, ",".join(INSTALLED))
