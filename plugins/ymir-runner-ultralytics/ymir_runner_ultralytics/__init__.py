"""ymir-runner's ultralytics plugin (entry point ``ultralytics`` → :mod:`ymir_runner_ultralytics.plugin`): YOLO26,
YOLO11 and YOLOv8 detectors trained, evaluated, exported, run and mined by the ultralytics package.

AGPL-3.0, like ultralytics itself (see LICENSE): an image that contains this distribution is an AGPL
distribution. The ymir-runner core and its built-in detection plugin are Apache-2.0 and never import it.
"""

__version__ = "0.1.0"

#: The executor's name: config key ``plugin`` selects it when several executors are installed.
EXECUTOR_NAME = "ultralytics"
#: The instance-segmentation executor (object type 4): ultralytics' ``-seg`` models.
INSTANCE_EXECUTOR_NAME = "ultralytics-seg"
#: The semantic-segmentation executor (object type 3): ultralytics' ``-sem`` models.
SEMANTIC_EXECUTOR_NAME = "ultralytics-sem"
