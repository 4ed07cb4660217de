"""A FAKE ymir_exc for ymir-runner-sdk's tests: it reproduces only what the real SDK does to FILES (no code of
modelai's SDK is copied). ``$FAKE_YMIR_EXC_LINE`` picks the SDK line whose file forms it writes: ``1.1`` (monitor
with 4 fields, the legacy ``{model, map}`` result.yaml, ``annotations``), ``1.1-pypi`` (the same, and env.yaml
always read from /in/env.yaml: PyPI's 1.1.0 reads no variable), ``1.3`` (stages with a top-level ``map``,
``boxes``) or ``2.x`` (the default: monitor with 5 fields, stages with a top-level ``mAP``, ``boxes``). Every writer
is as unsafe as the SDK's: truncate, then write (``$FAKE_YMIR_EXC_TRUNCATE_SECONDS`` between the two widens the
window the real SDK leaves, so that a reader meets it), result.yaml read-modify-written in place."""

import os

LINE = os.environ.get("FAKE_YMIR_EXC_LINE", "2.x")
__version__ = {"1.1": "1.1.0.0815", "1.1-pypi": "1.1.0.523", "1.3": "2.0.0.1221", "2.x": "2.1.1.0215"}[LINE]
