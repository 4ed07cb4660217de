"""ultralytics, offline by construction, and its log in the task's log (the task's devices: :mod:`.devices`).

ultralytics reaches the network in many places: its import probes DNS unless ``YOLO_OFFLINE`` is set, the dataset
check downloads a font for plots, the GPU AMP check downloads ``yolo26n.pt``, a missing requirement is
pip-installed, a model name without a file is downloaded, settings enable hub sync and analytics. Everything here
runs inside the task hooks, before ultralytics is first imported (the entry-point module imports neither
ultralytics nor torch): the variables ultralytics reads at import time are set first, then the functions that
download are replaced for the task.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
from typing import Any, Iterator

from ymir_runner import cpus

#: Set before ultralytics is imported: no online probe and no telemetry; never pip-install a requirement.
OFFLINE_VARIABLES = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false"}
#: Settings of ultralytics (its settings.json, kept in the task's work dir) that would sync or log elsewhere.
OFFLINE_SETTINGS = {"sync": False, "api_key": "", "tensorboard": False, "clearml": False, "comet": False,
                    "dvc": False, "mlflow": False, "raytune": False, "wandb": False}
#: The folder of the image's official weights (``<model>.pt``), baked in at build time.
WEIGHTS_ENV_VAR = "YMIR_RUNNER_ULTRALYTICS_WEIGHTS"
DEFAULT_WEIGHTS_DIR = "/app/ultralytics-weights"
#: ultralytics' AMP check on a GPU compares fp32 and fp16 predictions of this model (it would download it).
AMP_CHECK_MODEL = "yolo26n.pt"

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
log = logging.getLogger("ymir_runner.ultralytics")


def weights_dir() -> str:
    return os.environ.get(WEIGHTS_ENV_VAR) or DEFAULT_WEIGHTS_DIR


def prepare(work_dir: str) -> None:
    """Make ultralytics offline for this process (idempotent). Must run before ``import ultralytics``: its
    settings folder (``YOLO_CONFIG_DIR``) is fixed at import, in ``work_dir``, with sync and every integration
    off; matplotlib's cache goes to ``work_dir`` too unless ``MPLCONFIGDIR`` is set (the platform's $HOME may be
    missing or read-only)."""
    os.environ.update(OFFLINE_VARIABLES)
    os.environ.pop("ULTRALYTICS_API_KEY", None)  # the platform callbacks would upload with it
    os.environ["YOLO_CONFIG_DIR"] = os.path.join(work_dir, "ultralytics-settings")
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(work_dir, "matplotlib"))
    os.makedirs(os.environ["YOLO_CONFIG_DIR"], exist_ok=True)
    os.makedirs(os.environ["MPLCONFIGDIR"], exist_ok=True)
    import_quietly()

    import ultralytics.data.utils
    import ultralytics.engine.trainer
    import ultralytics.utils
    import ultralytics.utils.torch_utils

    ultralytics.utils.SETTINGS.update({**OFFLINE_SETTINGS, "runs_dir": os.path.join(work_dir, "runs"),
                                       "datasets_dir": work_dir, "weights_dir": os.path.join(work_dir, "weights")})
    # The progress bars (ultralytics/utils/tqdm.py) are off when VERBOSE is False; it is read when a bar is made.
    # The log level stays INFO: the trainer's own lines still reach the task log.
    ultralytics.utils.VERBOSE = False
    # check_det_dataset fetches Arial.ttf for the plots (off here); is_url(check=True) alone opens a connection.
    ultralytics.data.utils.check_font = _no_font
    ultralytics.engine.trainer.check_amp = offline_check_amp
    # On the CPU ultralytics sets torch to min(8, os.cpu_count() - 1) threads: 1 on 2 cores, 8 in a container
    # limited to 2 CPUs on a big host. The task's CPUs (affinity and cgroup quota) decide instead.
    ultralytics.utils.torch_utils.NUM_THREADS = cpus.available_cpus()


def import_quietly() -> None:
    """Import ultralytics with its import-time messages (a new settings file, "Update Settings with 'yolo
    settings'...") kept out of stdout, which the platform appends to the task log; its logger's handler is given
    the real stdout back afterwards (the task hooks replace it by :func:`task_log` anyway)."""
    if "ultralytics.utils" in sys.modules:
        return
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured):
        import ultralytics.utils
    for handler in ultralytics.utils.LOGGER.handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is captured:
            handler.setStream(sys.stdout)
    for line in captured.getvalue().splitlines():
        if line.strip():
            log.debug("ultralytics import: %s", _ANSI.sub("", line))


def _no_font(*args: Any, **kwargs: Any) -> None:
    return None


def offline_check_amp(model: Any) -> bool:
    """ultralytics' AMP check without its download: run on the image's ``yolo26n.pt`` when the weights folder has
    it, else skipped (AMP on, as ultralytics does when it cannot check); ``amp: false`` turns AMP off."""
    import ultralytics.utils
    from ultralytics.utils.checks import check_amp

    folder = weights_dir()
    if not os.path.isfile(os.path.join(folder, AMP_CHECK_MODEL)):
        log.info("AMP check skipped: no %s in %s (%s); AMP stays on, config key 'amp: false' turns it off",
                 AMP_CHECK_MODEL, folder, WEIGHTS_ENV_VAR)
        return True
    previous = ultralytics.utils.WEIGHTS_DIR
    ultralytics.utils.WEIGHTS_DIR = type(previous)(folder)  # check_amp reads WEIGHTS_DIR when it runs
    try:
        return bool(check_amp(model))
    finally:
        ultralytics.utils.WEIGHTS_DIR = previous


class _ToTaskLog(logging.Handler):
    """Hands ultralytics' records to the core's log handlers, one line per record line, colours stripped and
    blank lines dropped, under the logger name ``ultralytics``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = _ANSI.sub("", record.getMessage())
        except Exception:  # noqa: BLE001 - a malformed record must not stop the training
            return
        target = logging.getLogger("ymir_runner")
        for line in text.splitlines():
            if line.strip():
                target.handle(logging.makeLogRecord({**record.__dict__, "msg": line.rstrip(), "args": None,
                                                     "name": "ultralytics"}))


@contextlib.contextmanager
def task_log() -> Iterator[None]:
    """ultralytics' logger (``ultralytics``, which prints to stdout by itself) writes to the task's log for the
    block; its own handlers are back afterwards."""
    import ultralytics.utils

    logger = ultralytics.utils.LOGGER
    saved = list(logger.handlers)
    handler = _ToTaskLog()
    for old in saved:
        logger.removeHandler(old)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        for old in saved:
            logger.addHandler(old)
