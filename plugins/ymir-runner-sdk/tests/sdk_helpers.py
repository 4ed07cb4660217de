"""Runs of ``ymir-runner sdk-run`` in a process of its own, as an image's start.sh runs it, with monitor.txt
polled while it runs (what the platform sees)."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

from ymir_runner.testing import RunOutcome, TaskTree

HERE = pathlib.Path(__file__).resolve().parent
PLUGIN = HERE.parent
CORE = PLUGIN.parent.parent
FAKE_SDK = HERE / "fake_sdk"
APPS = HERE / "apps"


def make_site(folder: pathlib.Path) -> str:
    """A site folder declaring this plugin's entry point where the distribution is not installed (the everyday
    venv); empty where it is (.ci/run installs it)."""
    import importlib.metadata

    if any(entry.name == "sdk" for entry in importlib.metadata.entry_points(group="ymir_runner")):
        return str(folder)
    info = folder / "ymir_runner_sdk-0.1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ymir-runner-sdk\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[ymir_runner]\nsdk = ymir_runner_sdk.plugin\n")
    return str(folder)


def legacy_command(app: str, script: str = "start.py", *, line: str = "2.x", window: float = 0.02) -> list[str]:
    """The legacy executor's command: the fake SDK first on its path (before what sdk-run puts there), as an image's
    Python 3.8 has its SDK installed."""
    return ["/bin/sh", "-c", f'PYTHONPATH="{FAKE_SDK}:$PYTHONPATH" exec "$@"', "legacy", "/usr/bin/env",
            f"FAKE_YMIR_EXC_LINE={line}", f"FAKE_YMIR_EXC_TRUNCATE_SECONDS={window}", sys.executable,
            str(APPS / app / script)]


@dataclasses.dataclass
class WorkTree:
    """A work folder ``root/in`` + ``root/out`` that ``ymir-runner sandbox`` built (env.yaml with local paths)."""

    root: str

    @property
    def env_file(self) -> str:
        return os.path.join(self.root, "in", "env.yaml")

    @property
    def out_dir(self) -> str:
        return os.path.join(self.root, "out")


@dataclasses.dataclass
class Observed:
    outcome: RunOutcome
    #: Every distinct monitor.txt content read while the command ran ('' for an empty read).
    snapshots: list[str]

    @property
    def percents(self) -> list[float]:
        return [float(text.split("\t")[2]) for text in self.snapshots if text]


def sdk_run(tree: TaskTree | WorkTree, command: list[str], site: str, *, root: bool = True, timeout: float = 90,
            while_running: Callable[[subprocess.Popen], None] | None = None) -> Observed:
    """``ymir-runner sdk-run --env <tree>/in/env.yaml [--root <tree>] -- command``, monitor.txt polled every 10 ms."""
    argv = [sys.executable, "-m", "ymir_runner", "sdk-run", "--env", tree.env_file]
    if root:
        argv += ["--root", tree.root]
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join([site, str(CORE), str(PLUGIN)]),
                   YMIR_RUNNER_DISABLE_PLUGINS="detection", OMP_NUM_THREADS="1")
    monitor = os.path.join(tree.out_dir, "monitor.txt")
    snapshots: list[str] = []
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            try:
                with open(monitor, encoding="utf-8") as stream:
                    text = stream.read()
            except FileNotFoundError:
                text = None
            if text is not None and (not snapshots or snapshots[-1] != text):
                snapshots.append(text)
            time.sleep(0.01)

    process = subprocess.Popen(argv + ["--"] + command, env=environ, stderr=subprocess.PIPE, text=True)
    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    if while_running:
        while_running(process)
    try:
        _, stderr = process.communicate(timeout=timeout)
    finally:
        done.set()
        poller.join()
        if process.poll() is None:
            process.kill()
    return Observed(RunOutcome(process.returncode, stderr, tree.out_dir, tree.env_file, tree.root if root else None),
                    snapshots)


def wait_for_file(path: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and open(path).read().strip():
            return open(path).read().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def terminate_when(path: str) -> Callable[[subprocess.Popen], None]:
    """SIGTERM ``ymir-runner`` once the legacy process wrote its pid file (it is then running its loop)."""
    def act(process: subprocess.Popen) -> None:
        wait_for_file(path)
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
    return act
