"""ymir-runner: a plugin-based executor framework for the YMIR computer-vision platform.

Plugin authors need only what this module exports: the ``hookimpl`` marker, the records a plugin returns
from ``ymir_runner_register_executors``, the task kinds, the errors that carry protocol return codes, and
``atomic_path`` for files a plugin writes itself (model weights).
"""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    ConfigError, DatasetError, ImageFormatError, ModelError, NonFiniteError, OutputError, ReturnCode, YmirError,
)
from .hookspecs import hookimpl  # noqa: E402
from .protocol.atomic import atomic_path  # noqa: E402
from .protocol.env import TaskKind  # noqa: E402
from .records import ExecutorSpec, Param  # noqa: E402

__all__ = [
    "__version__", "hookimpl", "ExecutorSpec", "Param", "TaskKind", "ReturnCode", "YmirError", "ConfigError",
    "DatasetError", "ImageFormatError", "ModelError", "NonFiniteError", "OutputError", "atomic_path",
]
