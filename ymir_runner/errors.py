"""Protocol return codes and the exception that carries one.

The platform shows a failed task's return code in its UI; the one-line message of the error is printed as
the last line of stderr, which is what users see of /out/ymir-executor-out.log (its last 5 lines).
"""

from __future__ import annotations

import enum
import re
import signal


class ReturnCode(enum.IntEnum):
    """Return codes of docs/protocol.md section 3 (monitor.txt, 5th field)."""

    CONFIG = 300001
    DATASET = 300002
    IMAGE_FORMAT = 300003
    MODEL = 300004
    OBJECT_TYPE = 300005
    GPU_MISMATCH = 300101
    NO_GPU = 300102
    OUT_OF_MEMORY = 300103
    NAN = 300201
    NETWORK = 300301
    #: What the platform assigns to a non-zero exit that gave no code; we write it ourselves for errors that
    #: are none of the above (a plugin bug, a killed process), so the monitor line always has 5 fields.
    GENERIC = 160004


class YmirError(Exception):
    """An error the platform should see with a specific return code and a one-line message."""

    code: ReturnCode = ReturnCode.GENERIC

    def __init__(self, message: str, *, code: ReturnCode | int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = ReturnCode(code)

    @property
    def message(self) -> str:
        return " ".join(str(self).split())  # one line, whatever the caller formatted


class ConfigError(YmirError):
    code = ReturnCode.CONFIG


class DatasetError(YmirError):
    code = ReturnCode.DATASET


class ImageFormatError(YmirError):
    code = ReturnCode.IMAGE_FORMAT


class ModelError(YmirError):
    code = ReturnCode.MODEL


class ObjectTypeError(YmirError):
    code = ReturnCode.OBJECT_TYPE


class GpuMismatchError(YmirError):
    code = ReturnCode.GPU_MISMATCH


class NoGpuError(YmirError):
    code = ReturnCode.NO_GPU


class OutOfMemoryError(YmirError):
    code = ReturnCode.OUT_OF_MEMORY


class NonFiniteError(YmirError):
    code = ReturnCode.NAN


class NetworkError(YmirError):
    code = ReturnCode.NETWORK


class TaskTerminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (the platform stopping the task) or SIGINT
    (Ctrl-C); the run exits with ``128 + signum`` and code 160004.

    Like ``KeyboardInterrupt`` it is not an ``Exception``: the many ``except Exception`` of libraries and
    plugins (an image that fails to decode is skipped, tensorboard switches itself off) must not swallow a
    stop and let the task run on."""

    code = ReturnCode.GENERIC
    signum: int = signal.SIGTERM

    @classmethod
    def for_signal(cls, signum: int) -> TaskTerminated:
        name = signal.Signals(signum).name
        what = "interrupted" if signum == signal.SIGINT else "stopped"
        error = cls(f"the task was {what} ({name})")
        error.signum = signum
        return error

    @property
    def message(self) -> str:
        return str(self)


class OutputError(YmirError):
    """A file under /out could not be written (disk full, quota, permissions); the message names the file."""

    #: The device is full (or the quota reached): what a write that needs no new block may still get past.
    disk_full: bool = False


# Exceptions from libraries we must not import (torch) are recognised by name and message.
_OOM_NAMES = {"OutOfMemoryError", "MemoryError"}
_MESSAGE_CODES = (
    ("out of memory", ReturnCode.OUT_OF_MEMORY),
    # torch's CPU allocator: "DefaultCPUAllocator: can't allocate memory: you tried to allocate 274877906944
    # bytes. Error code 12 (Cannot allocate memory)" (older builds: "not enough memory"), a RuntimeError.
    ("can't allocate memory", ReturnCode.OUT_OF_MEMORY),
    ("cannot allocate memory", ReturnCode.OUT_OF_MEMORY),
    ("not enough memory", ReturnCode.OUT_OF_MEMORY),
    ("invalid device ordinal", ReturnCode.GPU_MISMATCH),
    ("no cuda gpus are available", ReturnCode.NO_GPU),
    ("found no nvidia driver", ReturnCode.NO_GPU),
    ("torch not compiled with cuda enabled", ReturnCode.NO_GPU),
)


#: Exception names (as a traceback's last line prints them) of a network failure.
_NETWORK_NAMES = {"ConnectionError", "ConnectionRefusedError", "ConnectionResetError", "ConnectionAbortedError",
                  "URLError", "gaierror", "Timeout", "ConnectTimeout", "ReadTimeout", "MaxRetryError",
                  "NewConnectionError"}
#: What a log line of a network failure says (requests, urllib3, socket, pip, torch.hub downloads).
_NETWORK_MESSAGES = ("name or service not known", "temporary failure in name resolution", "connection refused",
                     "network is unreachable", "failed to establish a new connection", "max retries exceeded",
                     "nodename nor servname provided")


def classify(error: BaseException) -> ReturnCode:
    """The return code for any exception: its own for a YmirError, a best guess for well-known failures."""
    if isinstance(error, (YmirError, TaskTerminated)):
        return error.code
    if type(error).__name__ in _OOM_NAMES:
        return ReturnCode.OUT_OF_MEMORY
    if isinstance(error, ConnectionError) or type(error).__name__ in {"URLError", "gaierror", "Timeout"}:
        return ReturnCode.NETWORK
    return _message_code(str(error).lower()) or ReturnCode.GENERIC


def _message_code(lowered: str) -> ReturnCode | None:
    """The code of the first well-known message in ``lowered`` (lower-case text); None without one."""
    for needle, code in _MESSAGE_CODES:
        if needle in lowered:
            return code
    return None


def classify_text(text: str) -> ReturnCode | None:
    """The return code a failure's log text names (lines of another process's stderr, an exception message): the
    well-known messages :func:`classify` reads in exceptions (out of memory, CUDA's ``CUDA out of memory`` included
    -> 300103; ``invalid device ordinal`` -> 300101; no GPU or no CUDA build -> 300102), then an out-of-memory
    exception's name (``MemoryError``, ``OutOfMemoryError`` -> 300103), then a network failure (``ConnectionError``,
    ``URLError``, a name that does not resolve, a refused connection -> 300301); None when the text names none.
    Messages are matched case-insensitively; the first rule that matches wins, in that order."""
    lowered = text.lower()
    known = _message_code(lowered)
    if known is not None:
        return known
    names = set(re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)\b", text))
    if names & _OOM_NAMES:
        return ReturnCode.OUT_OF_MEMORY
    if names & _NETWORK_NAMES or any(message in lowered for message in _NETWORK_MESSAGES):
        return ReturnCode.NETWORK
    return None


def one_line(error: BaseException) -> str:
    """A single human-readable line describing the error, for the last line of stderr."""
    if isinstance(error, (YmirError, TaskTerminated)):
        text = error.message
    elif isinstance(error, KeyboardInterrupt):  # Ctrl-C where no handler could be set (not the main thread)
        text = "the task was interrupted (SIGINT)"
    else:
        detail = " ".join(str(error).split())
        text = f"{type(error).__name__}: {detail}" if detail else type(error).__name__
        allocation = _ALLOCATION.search(detail)
        if allocation and classify(error) is ReturnCode.OUT_OF_MEMORY:
            size = int(allocation[1])
            allocator = "DefaultCPUAllocator" if "DefaultCPUAllocator" in detail else "allocator"
            text = (f"out of memory: torch's {allocator} could not get {size / (1 << 30):.1f} GiB ({size} bytes) "
                    f"for one tensor ({type(error).__name__})")
    return text


#: What torch's allocators say they could not get: "you tried to allocate 274877906944 bytes".
_ALLOCATION = re.compile(r"tried to allocate (\d+) bytes")
