"""``ymir-runner new-plugin NAME``: write a complete, installable plugin distribution to start from.

The distribution (``ymir-runner-NAME``, package ``ymir_runner_NAME``) declares the executor NAME through the
``ymir_runner`` entry point, implements the chosen tasks on a small numpy model that really learns (a
colour-prior detector: replace ``model.py`` and ``predict.py``) through the core's task loops (stage evaluation,
``infer_candidates``, ``mine_candidates``), typed against ``TaskContext``, and ships tests written with
``ymir_runner.testing`` that pass as generated. The layout is every plugin's: ``plugin.py`` (hooks only),
``templates.py``, ``training.py``, ``inference.py``, ``mining.py``, ``predict.py``, ``model.py``. The files come from
``ymir_runner/templates/new-plugin`` (``$name``-style placeholders, :class:`string.Template`).
"""

from __future__ import annotations

import argparse
import os
import re
import string
from typing import Sequence

from .errors import ConfigError
from .protocol.env import TaskKind
from .records import MINING_ALGORITHMS
from .version import __version__

TEMPLATE_DIR = os.path.join(os.path.dirname(__file__), "templates", "new-plugin")
#: Executor names the scaffold accepts: they also become a distribution and a package name.
NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
TASKS = (TaskKind.TRAINING, TaskKind.MINING, TaskKind.INFER)

#: Per task: the hook, the task module and its function.
_HOOKS = {
    TaskKind.TRAINING: ("ymir_runner_train", "training", "train"),
    TaskKind.MINING: ("ymir_runner_mine", "mining", "mine"),
    TaskKind.INFER: ("ymir_runner_infer", "inference", "infer"),
}
#: One key in the mining and the infer template, meaning one thing: YMIR merges both into one config.yaml when a task
#: runs mining and inference.
_BATCH = ('Param("batch_size", 8, "images predicted or scored together; bounded: a batch is in memory at once",',
          'minimum=1, maximum=256)')
#: Per task: its template keys (templates.py), each number bounded, as the lines of its call. The core adds the stage
#: evaluation keys to training (``stage_evaluation=True``) and the mining keys to mining (``mining_algorithms``).
_TEMPLATE_KEYS = {
    TaskKind.TRAINING: (('Param("epochs", 3, "passes over the training set; each refines the class colours",',
                         'minimum=1, maximum=1000)'),
                        ('Param("tolerance", 3.0, "a pixel is of a class within this many colour spreads of its '
                         'colour",', 'exclusive_minimum=0.0, maximum=100.0)')),
    TaskKind.MINING: (_BATCH,),
    TaskKind.INFER: (('Param("conf_threshold", 0.0, "minimum score of a reported box; 0: the model\'s F1-optimal '
                      'score",', 'minimum=0.0, maximum=1.0)'), _BATCH),
}
#: What each task's module is, for the generated README.
_WORDS = {TaskKind.TRAINING: "training", TaskKind.MINING: "mining", TaskKind.INFER: "inference"}


def package_name(name: str) -> str:
    return "ymir_runner_" + name.replace("-", "_")


def _hook(kind: TaskKind) -> str:
    hook, module, function = _HOOKS[kind]
    return (f"\n\n@ymir_runner.hookimpl\ndef {hook}(context: TaskContext) -> None:\n"
            f"    from .{module} import {function}\n\n    {function}(context)\n")


def _values(name: str, tasks: Sequence[TaskKind]) -> dict[str, str]:
    package = package_name(name)
    templates = "".join(f"    TaskKind.{kind.name}: (\n"
                        + "".join(f"        {chr(10).join(' ' * 14 + line for line in key).strip()},\n"
                                  for key in _TEMPLATE_KEYS[kind])
                        + "    ),\n" for kind in tasks)
    options = ""
    if TaskKind.TRAINING in tasks:
        options += ("\n        # ymir_runner.stages adds save_period, conf_threshold, map_iou_threshold and "
                    "max_detections\n        stage_evaluation=True,")
    if TaskKind.MINING in tasks:
        names = ", ".join(f'"{name}"' for name in MINING_ALGORITHMS)
        options += ("\n        # ymir_runner.mining adds mining_algorithm, class_distribution_scores and seed\n"
                    f"        mining_algorithms=({names}),")
    rows = "".join(f"| `{package}/{_HOOKS[kind][1]}.py` | the {_WORDS[kind]} task |\n" for kind in tasks)
    return {
        # the core that wrote the files: the generated tests run against its API
        "name": name, "package": package, "dist": f"ymir-runner-{name}", "core_version": __version__,
        "tasks": ", ".join(f"TaskKind.{kind.name}" for kind in tasks), "templates": templates,
        "options": options, "hooks": "".join(_hook(kind) for kind in tasks),
        "task_words": ", ".join(_WORDS[kind] for kind in tasks), "file_rows": rows,
    }


def _files(tasks: Sequence[TaskKind]) -> list[str]:
    """Template files (relative to :data:`TEMPLATE_DIR`, without ``.tmpl``) for ``tasks``: the layout of every
    plugin (plugin.py hooks only, templates.py, one module per task, predict.py shared by them, model.py)."""
    files = ["setup.cfg", "pyproject.toml", "README.md", "package/__init__.py", "package/plugin.py",
             "package/templates.py", "package/model.py", "package/predict.py", "tests/conftest.py"]
    for kind in tasks:
        module = _HOOKS[kind][1]
        files += [f"package/{module}.py", f"tests/test_{module}.py"]
    return files


def parse_tasks(text: str) -> list[TaskKind]:
    """``training,mining,infer`` (any subset, any order) → task kinds in protocol order.

    Raises :class:`ConfigError` for an unknown or empty list."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [part for part in names if part not in {kind.value for kind in TASKS}]
    if unknown or not names:
        raise ConfigError(f"--tasks {text!r}: give some of {', '.join(kind.value for kind in TASKS)}, "
                          "comma-separated")
    return [kind for kind in TASKS if kind.value in names]


def new_plugin(name: str, tasks: Sequence[TaskKind] = TASKS, out: str = ".") -> str:
    """Write the distribution of executor ``name`` handling ``tasks`` into ``out/ymir-runner-NAME``.

    Returns the folder written. Raises :class:`ConfigError` for a name that cannot be a package name or a
    folder that already exists (nothing is overwritten).
    """
    if not NAME.match(name):
        raise ConfigError(f"plugin name {name!r} must start with a lowercase letter and use only [a-z0-9_-]")
    values = _values(name, tasks)
    folder = os.path.join(out, values["dist"])
    if os.path.exists(folder):
        raise ConfigError(f"{folder} already exists: choose another --out or remove it")
    for relative in _files(tasks):
        with open(os.path.join(TEMPLATE_DIR, relative + ".tmpl"), encoding="utf-8") as stream:
            text = string.Template(stream.read()).substitute(values)
        target = os.path.join(folder, relative.replace("package/", values["package"] + "/", 1))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w", encoding="utf-8") as stream:
            stream.write(text)
    return folder


def _cmd_new_plugin(args: argparse.Namespace) -> int:
    folder = new_plugin(args.name, parse_tasks(args.tasks), args.out)
    print(f"wrote {folder}: `pip install -e '{folder}[test]'` in this environment (it needs ymir-runner>="
          f"{__version__}, installed here; ymir-runner is not on PyPI: {folder}/README.md says how to install it "
          f"elsewhere), then `python -m pytest {folder}`")
    return 0


def add_command(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("new-plugin", help="write a new plugin distribution (executor NAME) to start from")
    parser.add_argument("name", metavar="NAME", help="the executor's name, e.g. my-detector")
    parser.add_argument("--tasks", default="training,mining,infer",
                        help="the tasks it handles, comma-separated (default: training,mining,infer)")
    parser.add_argument("--out", default=".", help="the folder to write ymir-runner-NAME into (default: here)")
    parser.set_defaults(handler=_cmd_new_plugin)
