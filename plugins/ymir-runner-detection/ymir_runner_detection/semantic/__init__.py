"""Semantic segmentation (object type 3), the task family beside detection: executor ``semantic-fpn``
(:data:`ymir_runner_detection.SEMANTIC_EXECUTOR_NAME`), a Semantic FPN on the detector's backbone and neck
(:mod:`ymir_runner_detection.engine.semantic`). One file per task, as for detection: ``training.py``."""
