"""``ymir-runner inspect``: what the readers make of a task's dataset, before anything trains.

``ymir-runner inspect --env ENV`` prints the dataset report (:mod:`.dataset_report`, the one the dispatcher logs
at the start of every training task) for any task without running one, and every problem the pre-plugin checks
(:mod:`.preflight`) would stop ``ymir-runner run`` on.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from .dataset_report import DatasetReport, report_readers
from .errors import YmirError, one_line
from .logs import configure_logging
from .origins import load_origins
from .preflight import check_training_boxes, preflight
from .protocol.config import read_config_file
from .protocol.dataset import AnnotationReader, DatasetReader, SkipLog
from .protocol.env import TaskKind, check_paths_exist_here, load_env


@dataclasses.dataclass
class Inspection:
    """What ``ymir-runner inspect`` found: the dataset report (None when the index files could not be read) and
    the pre-plugin checks of a run (:mod:`.preflight`): warnings, and the errors ``run`` would stop on."""

    report: DatasetReport | None
    warnings: list[str]
    errors: list[YmirError]


def inspect_env(env_file: str, root: str | None = None, registry: Any = None) -> Inspection:
    """The dataset report of the task an env.yaml describes (training and validation, or candidates), and every
    problem that would stop ``ymir-runner run`` before the plugin runs, with its message. ``registry``: the
    installed plugins by default.

    Raises :class:`~ymir_runner.errors.ConfigError` when env.yaml itself cannot be used, as ``run`` would."""
    from .plugins import build_plugin_manager  # lists entry points; imports no plugin's heavy modules

    env = load_env(env_file, root=root)
    check_paths_exist_here(env)
    raw = read_config_file(env.input.config_file)
    checks = preflight(env, registry or build_plugin_manager(), raw)
    config = checks.base
    if config is None:  # its reserved keys do not read: the error is among checks.errors
        return Inspection(None, checks.warnings, checks.errors)
    skips = SkipLog(names=load_origins(env))
    readers = []
    if TaskKind.TRAINING in env.tasks:
        annotations = AnnotationReader(config.class_names, config.annotation_format, skips,
                                       object_type=config.object_type)
        for name, index in (("training", env.input.training_index_file), ("validation", env.input.val_index_file)):
            readers.append(DatasetReader(index, annotations=annotations, skips=skips, name=name, root=env.root))
    elif env.tasks:
        readers.append(DatasetReader(env.input.candidate_index_file, annotations=None, skips=skips,
                                     name="candidate", root=env.root))
    try:
        report: DatasetReport | None = report_readers(readers, config.class_names)
    except YmirError as error:  # an index file that cannot be read: run stops on it as well
        checks.errors.append(error)
        report = None
    training = report.split("training") if report else None
    if training is not None and config.class_names:  # without classes every box is skipped: reported above
        try:
            check_training_boxes(training.items, checks.configs.get(TaskKind.TRAINING, config))
        except YmirError as error:
            checks.errors.append(error)
    return Inspection(report, checks.warnings, checks.errors)


def _cmd_inspect(args: argparse.Namespace) -> int:
    configure_logging()  # each skipped or repaired item is warned about with its file, as in a run
    found = inspect_env(args.env, args.root, args.registry)
    if found.report is not None:
        print(found.report.text())
    for warning in found.warnings:
        print(f"warning: {warning}")
    for error in found.errors:  # what `run` prints as its last line, for each problem it would stop on
        print(f"ymir-runner inspect: error {int(error.code)}: {one_line(error)}", file=sys.stderr)
    if found.errors:
        print(f"ymir-runner inspect: `ymir-runner run` would stop on {len(found.errors)} problem(s) above",
              file=sys.stderr)
        return 1
    return 0


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add the `inspect` subcommand to the `ymir-runner` parser."""
    parser = commands.add_parser(
        "inspect", help="report what a task's dataset holds and what is wrong with it, without running the task",
        description="Read a task's index files with the readers training uses and print images per split, what "
                    "was skipped or repaired and why, image sizes, boxes per class and per image, tiny and huge "
                    "boxes, train/val overlap and classes without examples. Warnings say what to do.")
    parser.add_argument("--env", required=True, metavar="ENV_YAML", help="the task's env.yaml")
    parser.add_argument("--root", default=None, metavar="DIR",
                        help="a local folder standing in for '/' (as for `ymir-runner run --root`)")
    parser.set_defaults(handler=_cmd_inspect)
