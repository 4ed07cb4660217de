import os
import time

from . import LINE, settings
from .env import get_current_env

_WINDOW = float(os.environ.get("FAKE_YMIR_EXC_TRUNCATE_SECONDS", "0"))


def _write(percent, state, return_code):
    env = get_current_env()
    with open(env.output.monitor_file, "w", encoding="utf-8") as stream:  # truncated now...
        stream.flush()
        time.sleep(_WINDOW)
        fields = [env.task_id, f"{time.time():.6f}", f"{percent:.2f}", str(state)]  # ...written later
        if LINE == "2.x":
            fields.append(str(return_code))
        stream.write("\t".join(fields) + "\n")


if LINE == "2.x":
    def write_monitor_logger(percent, state=settings.ES_RUNNING, return_code=0):
        _write(percent, state, return_code)
else:
    def write_monitor_logger(percent):
        _write(percent, settings.ES_RUNNING, 0)


def write_monitor_logger_for_multiple_tasks(cfg, task, percent, order="tmi"):
    write_monitor_logger(percent)
