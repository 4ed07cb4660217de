"""ymir-runner's built-in detection plugin (entry point ``detection`` → :mod:`ymir_runner_detection.plugin`)."""

__version__ = "0.1.0"
