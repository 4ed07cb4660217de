"""ymir-runner's built-in detection plugin (entry point ``detection`` → :mod:`ymir_runner_detection.plugin`)."""

__version__ = "0.1.0"

#: The executor's name: config key ``plugin`` selects it (the plugin registers it, the demo writes it).
EXECUTOR_NAME = "detection"
#: The semantic segmentation executor (object type 3): a Semantic FPN on the detector's backbone and neck.
SEMANTIC_EXECUTOR_NAME = "semantic-fpn"
