"""The ``ymir-runner`` command."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from typing import Any, Sequence

from .errors import YmirError
from .protocol.env import DEFAULT_ENV_FILE, ROOT_ENV_VAR
from .version import __version__


def _cmd_run(args: argparse.Namespace) -> int:
    from .dispatcher import run

    return run(args.env, root=args.root, registry=args.registry, exiting=True)


def plugin_table(registry: Any) -> list[dict[str, Any]]:
    """One row per plugin: name, distribution, version, status, error, hooks and executors with tasks."""
    executors = {executor.spec.name: executor.spec for executor in registry.executors()}
    rows = []
    for info in registry.infos.values():
        rows.append({
            "name": info.name,
            "distribution": info.distribution,
            "version": info.version,
            "status": info.status,
            "error": info.error,
            "hooks": registry.hooks_of(info.name) if info.status == "loaded" else [],
            "executors": [
                {"name": name, "tasks": sorted(str(kind) for kind in executors[name].tasks),
                 "object_types": sorted(executors[name].object_types),
                 "description": executors[name].description}
                for name in info.executors if name in executors],
        })
    return rows


def _cmd_plugins(args: argparse.Namespace) -> int:
    rows = plugin_table(args.registry)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no plugins installed (entry-point group 'ymir_runner')")
    for row in rows:
        version = f" {row['version']}" if row["version"] else ""
        print(f"{row['name']} ({row['distribution'] or 'unknown distribution'}{version}): {row['status']}")
        if row["error"]:
            print(f"  error: {row['error']}")
        for executor in row["executors"]:
            print(f"  executor {executor['name']}: {', '.join(executor['tasks'])} "
                  f"(object_type {', '.join(map(str, executor['object_types']))})")
        if row["hooks"]:
            print(f"  hooks: {', '.join(row['hooks'])}")
    return 0


def build_parser(registry: Any = None) -> argparse.ArgumentParser:
    """The command line: the core's commands plus those plugins add through ``ymir_runner_add_commands``."""
    parser = argparse.ArgumentParser(prog="ymir-runner", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ymir-runner {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = commands.add_parser("run", help="run the task described by env.yaml (what the image's start.sh calls)")
    run.add_argument("--env", default=DEFAULT_ENV_FILE, help=f"env.yaml to run (default {DEFAULT_ENV_FILE})")
    run.add_argument("--root", default=None,
                     help=f"a local folder standing in for '/': /in/... and /out/... paths are read under it "
                          f"(also ${ROOT_ENV_VAR})")
    run.set_defaults(handler=_cmd_run)

    plugins = commands.add_parser("plugins", help="list installed plugins, their hooks and executors")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(handler=_cmd_plugins)

    # light modules: their heavy imports are in the handlers
    from . import evaluate_command, imgman, inspection, results_view, sandbox, scaffold, verify

    for module in (evaluate_command, imgman, inspection, results_view, sandbox, scaffold, verify):
        module.add_command(commands)
    if registry is not None:
        registry.add_commands(commands)
    parser.set_defaults(registry=registry)
    return parser


def parse_command_line(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, but an unknown option is reported by the subcommand it was given to, with its usage
    and the closest option it has (``sandbox --val_ratio``: "did you mean --val-ratio?"), not by the top level.
    Exits 2 (argparse's usage error) for an unknown argument."""
    import difflib

    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    command = commands.choices.get(getattr(args, "command", None) or "", parser)
    options = [option for action in command._actions for option in action.option_strings]
    hints = []
    for unknown in extra:
        close = difflib.get_close_matches(unknown.split("=", 1)[0], options, n=1)
        if close:
            hints.append(f"{unknown}: did you mean {close[0]}?")
    command.error(f"unrecognized arguments: {' '.join(extra)}" + (f" ({'; '.join(hints)})" if hints else ""))
    raise AssertionError("argparse's error() exits")  # pragma: no cover


def main(argv: Sequence[str] | None = None) -> int:
    from .cpus import configure_openmp
    from .plugins import build_plugin_manager

    with contextlib.suppress(YmirError):  # a bad $YMIR_RUNNER_CPUS: `run` reports it through the protocol
        configure_openmp()  # before any plugin can import torch or numpy: their OpenMP runtime reads it once
    registry = build_plugin_manager()
    args = parse_command_line(build_parser(registry), argv)
    if args.handler is _cmd_run:  # the dispatcher reports its errors through the protocol itself
        return args.handler(args)
    try:
        return args.handler(args)
    except YmirError as error:
        print(f"ymir-runner {args.command}: error: {error}", file=sys.stderr)
        return 2


def console_main() -> None:
    """The ``ymir-runner`` executable: ``main()``, quiet when its reader goes away (``ymir-runner plugins |
    head -3``), exiting 128 + SIGPIPE as other Unix tools do."""
    if sys.argv[1:2] == ["run"]:
        from .supervise import supervise

        # A parent waits for the run and reports its death by a signal (a native crash, the OOM killer); the run
        # goes on here, remembering a stop while plugins load (it is reported by the run, not a silent death).
        supervise(build_parser)
    try:
        code = main()
        if sys.stdout is not None:  # None when started with stdout closed (`>&-`)
            sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()  # Python's recipe: no second error when stdout is flushed at exit
        code = 128 + signal.SIGPIPE
    except OSError as error:  # stdout on a full disk, /dev/full
        _quiet_stdout()
        print(f"ymir-runner: cannot write the output: {error.strerror or error}", file=sys.stderr)
        code = 1
    from .shutdown import exit_after_failed_run

    exit_after_failed_run()  # a failed run's process ends at its last line, whatever exit handlers would do
    sys.exit(code)


def _quiet_stdout() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    console_main()
