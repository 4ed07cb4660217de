"""Make the plugin package importable when it is not pip-installed, and share small fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

PLUGIN_ROOT = Path(__file__).resolve().parents[2]
if str(PLUGIN_ROOT) not in sys.path:
    sys.path.insert(0, str(PLUGIN_ROOT))


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A small synthetic dataset (small images) shared by the engine tests."""
    from ymir_runner_detection.engine import synthetic

    return synthetic.generate(
        tmp_path_factory.mktemp("synthetic"), n_train=12, n_val=6, n_candidates=3,
        img_size_range=(96, 160), seed=7, objects_range=(1, 3), n_corrupt_train=1,
    )
