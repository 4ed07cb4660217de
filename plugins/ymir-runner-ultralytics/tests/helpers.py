"""Runs the ultralytics plugin's tasks as the platform does: `ymir-runner run` in a process of its own, as uid 65534
(when this machine allows it: root, and an interpreter other uids can reach, which .ci/run arranges) with a
read-only /in, an empty HOME, and a socket guard (a sitecustomize on PYTHONPATH) that refuses and records every
internet connection and name look-up."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import textwrap

from ymir_runner.testing import RunOutcome, TaskTree, cannot_run_as, make_read_only

NOBODY = 65534
WHY_NOT_NOBODY = cannot_run_as(NOBODY)
#: A small generated set: 24 images of 96 x 96 (12 training, 12 validation), one box each, two classes.
IMAGES = 24
SIZE = (96, 96)
#: Two epochs of yolo26n from scratch at 64 px: seconds on 2 CPU cores. The metrics of so short a run are near 0;
#: what is tested is the pipeline, not the learning.
FAST = {"epochs": 2, "img_size": 64, "batch_size_per_gpu": 8, "save_period": 1}

GUARD = textwrap.dedent('''
    """Test guard, imported at start-up: every internet connection and name look-up fails and is recorded."""
    import os
    import socket

    _log = os.environ.get("YMIR_TEST_NETWORK_LOG")

    def _record(what):
        with open(_log, "a") as stream:
            stream.write(what + "\\n")

    if _log:
        _connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex

        def connect(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6):
                _record(f"connect {address}")
                raise OSError(f"network disabled by the test: connect {address}")
            return _connect(self, address)

        def connect_ex(self, address):
            if self.family in (socket.AF_INET, socket.AF_INET6):
                _record(f"connect_ex {address}")
                return 111
            return _connect_ex(self, address)

        def getaddrinfo(host, *args, **kwargs):
            _record(f"getaddrinfo {host}")
            raise socket.gaierror(f"network disabled by the test: {host}")

        def gethostbyname(host):
            _record(f"gethostbyname {host}")
            raise socket.gaierror(f"network disabled by the test: {host}")

        socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
        socket.getaddrinfo, socket.gethostbyname = getaddrinfo, gethostbyname
''')


@dataclasses.dataclass
class Run:
    """A finished run: the tree, its outcome, the network attempts recorded, whether it ran as uid 65534."""

    tree: TaskTree
    outcome: RunOutcome
    network_attempts: list[str]
    as_nobody: bool
    seconds: float


def run_in_subprocess(tree: TaskTree, *, env: dict[str, str] | None = None, timeout: float = 300) -> Run:
    """``ymir-runner run`` on ``tree`` as the platform would run the image (see the module's docstring)."""
    import time

    guard_dir = os.path.join(tree.root, "guard")
    os.makedirs(guard_dir, exist_ok=True)
    with open(os.path.join(guard_dir, "sitecustomize.py"), "w", encoding="utf-8") as stream:
        stream.write(GUARD)
    network_log = os.path.join(tree.root, "network-attempts.txt")
    as_nobody = WHY_NOT_NOBODY is None
    make_read_only(tree.local("/in"))
    if as_nobody:
        for folder, _dirs, _files in os.walk(tree.out_dir):
            os.chmod(folder, 0o777)
        os.chmod(tree.root, 0o777)  # the guard's log file
    # the test process's PYTHONPATH after the guard: a checkout's own code (a git worktree) is what runs
    python_path = os.pathsep.join(part for part in (guard_dir, os.environ.get("PYTHONPATH", "")) if part)
    variables = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "", "LANG": "C.UTF-8",
                 "PYTHONPATH": python_path, "YMIR_TEST_NETWORK_LOG": network_log, "PYTHONDONTWRITEBYTECODE": "1"}
    for name in ("YMIR_RUNNER_DISABLE_PLUGINS", "YMIR_RUNNER_CPUS"):
        if os.environ.get(name):
            variables[name] = os.environ[name]
    variables.update(env or {})
    options = {"user": NOBODY, "group": NOBODY} if as_nobody else {}
    started = time.monotonic()
    done = subprocess.run(tree.command(), capture_output=True, text=True, env=variables, cwd=tree.root,
                          timeout=timeout, **options)
    seconds = time.monotonic() - started
    attempts = []
    if os.path.exists(network_log):
        with open(network_log, encoding="utf-8") as stream:
            attempts = [line.strip() for line in stream if line.strip()]
    return Run(tree, tree.outcome(done.returncode, done.stderr + done.stdout), attempts, as_nobody, seconds)


def train_in_subprocess(root: str) -> Run:
    tree = TaskTree(root, images=IMAGES, size=SIZE, config=FAST)
    return run_in_subprocess(tree)


def infer_tree(root: str, models: str, config: dict | None = None, kinds=("mining", "infer")) -> TaskTree:
    """A mining + inference task on new generated images whose model is the best stage of ``models``."""
    return TaskTree(root, kinds=kinds, images=8, size=SIZE, models_from=models, config=config or {})


def registry():
    """This plugin alone, for runs in the test process."""
    from ymir_runner_ultralytics import EXECUTOR_NAME, plugin

    from ymir_runner.testing import plugin_registry

    return plugin_registry({EXECUTOR_NAME: plugin})

