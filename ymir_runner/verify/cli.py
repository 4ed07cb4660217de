"""``ymir-runner verify``: the subcommand's options and exit codes (0: no errors, 1: errors, 2: usage error)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .api import DEFAULT_PROTOCOL, TASKS, verify_out
from .env import read_candidates, settings_from_env
from .findings import UsageError


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add the `verify` subcommand to the `ymir-runner` parser."""
    parser = commands.add_parser(
        "verify", help="check an executor's /out tree against the YMIR protocol",
        description="Check monitor.txt, models/result.yaml, result.tsv and infer-result.json of a finished "
                    "task against the protocol. Exit 0: no errors; 1: errors; 2: usage error.")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the task's /out folder")
    parser.add_argument("--task", action="append", choices=TASKS, dest="tasks",
                        help="the task kind to check (repeat for mining + infer); default: from --env")
    parser.add_argument("--candidates", metavar="FILE", help="candidate index: each candidate exactly once")
    parser.add_argument("--class-names", nargs="+", metavar="NAME",
                        help="allowed infer class names: 'a,b,c' or 'a b c'")
    parser.add_argument("--env", metavar="ENV_YAML", help="read task kinds, task_id, protocol version, paths, "
                        "candidates and class names from the task's env.yaml (and its config file)")
    parser.add_argument("--root", metavar="DIR", help="a folder standing in for '/' for the /in/... paths of "
                        "--env (/out is always OUT_DIR)")
    parser.add_argument("--protocol-version", metavar="X.Y.Z", help=f"protocol to check against (default: "
                        f"env.yaml's, else {DEFAULT_PROTOCOL}); < 1.0.0 allows the legacy forms")
    parser.add_argument("--task-id", help="the expected task_id of monitor.txt (default: env.yaml's)")
    parser.add_argument("--object-type", type=int, choices=(2, 3, 4),
                        help="2 detection, 3 semantic or 4 instance segmentation: the infer-result.json form and "
                             "the stages' main metric (default: the config file's, else 2)")
    parser.add_argument("--failed", action="store_true",
                        help="the task is expected to have failed: monitor.txt must say state 4 with a code")
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.set_defaults(handler=_cmd_verify)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """verify_out keyword arguments: env.yaml's values, overridden by explicit options."""
    if not os.path.isdir(args.out_dir):
        raise UsageError(f"OUT_DIR {args.out_dir} is not a folder")
    options: dict[str, Any] = {"tasks": [], "protocol_version": DEFAULT_PROTOCOL}
    if args.env:
        options.update(settings_from_env(args.env, args.out_dir, args.root))
    if args.tasks:
        options["tasks"] = args.tasks
    if args.candidates:
        options["candidates"] = read_candidates(args.candidates)
    if args.class_names:
        options["class_names"] = [name.strip() for item in args.class_names for name in item.split(",")
                                  if name.strip()]
    if args.protocol_version:
        options["protocol_version"] = args.protocol_version
    if args.task_id:
        options["task_id"] = args.task_id
    if args.object_type is not None:
        options["object_type"] = args.object_type
    options["expect_failure"] = args.failed
    return options


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
        report = verify_out(args.out_dir, options.pop("tasks"), **options)
    except UsageError as error:
        print(f"ymir-runner verify: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0 if report.ok else 1
