"""``ymir-runner sdk-run [--env ENV] [--root ROOT] -- CMD...``: run the tasks of env.yaml with executor ``sdk``,
which supervises CMD (an image's unchanged ymir_exc-based executor, e.g. ``python3 /app/start.py``)."""

from __future__ import annotations

import argparse
import sys

from .plugin import EXECUTOR

#: What env.yaml ``sdk-run`` reads by default (the platform's mount).
DEFAULT_ENV = "/in/env.yaml"


def add_command(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sdk-run`` to the ``ymir-runner`` command line."""
    parser = subparsers.add_parser(
        "sdk-run", help="run an image's own ymir_exc executor under ymir-runner (start.sh: exec ymir-runner sdk-run "
                        "-- python3 /app/start.py)",
        description="Run the tasks of env.yaml by supervising CMD, an unchanged ymir_exc-based executor: it reads "
                    "an env.yaml whose outputs are staged (through $DEFAULT_ENV_FILE_PATH), and ymir-runner "
                    "republishes them through its protocol writers (docs/sdk-run.md).")
    parser.add_argument("--env", default=DEFAULT_ENV, help=f"env.yaml to run (default {DEFAULT_ENV})")
    parser.add_argument("--root", default=None,
                        help="a local folder standing in for '/': /in/... and /out/... paths are read under it")
    parser.add_argument("legacy_command", nargs=argparse.REMAINDER, metavar="-- CMD",
                        help="the executor's own command line, after --")
    parser.set_defaults(handler=run_command)


def run_command(args: argparse.Namespace) -> int:
    """The command's handler: the exit code of the run (0, 1 on a failure, 128 + signal when stopped)."""
    from ymir_runner import run

    from .processes import become_subreaper
    from .supervisor import set_command

    command = list(args.legacy_command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        print("ymir-runner sdk-run: error: give the executor's command after --, e.g. "
              "`ymir-runner sdk-run -- python3 /app/start.py`", file=sys.stderr)
        return 2
    set_command(command)
    become_subreaper()  # orphans of the command's tree are reparented here, where a stop finds them
    return run(args.env, root=args.root, registry=args.registry, exiting=True, executor=EXECUTOR)
