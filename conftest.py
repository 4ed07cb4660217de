"""The test suite's one switch: ``--slow`` opts in to the long runs (as ultralytics' tests/conftest.py does).

``python -m pytest`` is the everyday path; tests marked ``@pytest.mark.slow`` (random SIGKILLs of real runs, the
detector's box-scale fit) are skipped with the reason. ``python -m pytest --slow`` runs everything: what .ci/run
does.
"""

import pytest


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="also run the tests marked slow (what .ci/run does)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
