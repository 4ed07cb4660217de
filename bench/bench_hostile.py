"""Hostile and oversized inputs, replayed: every example of the hostile-inputs issue, each run as a user or an
attacker would start it, under a memory cap and a timeout.

    python bench/bench_hostile.py [--cap-gb 4] [--timeout 60] [--only SUBSTRING ...] [--keep]

Builds two small real trees once (a detection training, then a mining + inference task on its model), measures
their baselines (peak RSS, wall s), then runs each case on a fresh copy and prints one line per case:

    kind | outcome | exit | monitor state/code | peak RSS MB | wall s | last stderr line (shortened)

A case passes when its run did what the issue asks (the per-case check says what: nothing of an earlier run lost,
nothing outside the tree read into the log, written or copied, a specific return code and a last stderr line naming
the file or key) AND stayed within ``--timeout`` seconds and 1 GB above its baseline. Peak RSS is the run's own
process (``os.wait4``; the cases run without DataLoader workers). The last line prints how many cases passed; the
exit code is 1 when one did not.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from typing import Callable

import yaml

TINY = {"epochs": 2, "save_period": 1, "img_size": 64, "batch_size_per_gpu": 4, "num_workers_per_gpu": 0,
        "mosaic": 0.0, "export_onnx": False}
#: Lines of the "secret" file an index line points at: none of them may reach the log.
SECRET = "".join(f"SECRET-LINE-{index}: root:$6$hash\n" for index in range(20))
MB = 1 << 20


@dataclasses.dataclass
class Outcome:
    """What one command did."""

    exit_code: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    wall_s: float
    timed_out: bool

    @property
    def last_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


@dataclasses.dataclass
class Case:
    kind: str
    group: str
    #: Runs the case in a fresh folder and returns (the outcome of the command that matters, problems found).
    play: Callable[[Bench, str], tuple[Outcome, list[str]]]
    #: Which baseline bounds its memory: "training" or "mining".
    baseline: str = "training"


class Bench:
    """The prepared trees, the limits and the command runner."""

    def __init__(self, base: str, cap_bytes: int, timeout: float) -> None:
        self.base = base
        self.cap_bytes = cap_bytes
        self.timeout = timeout
        self.baselines: dict[str, Outcome] = {}

    # --- commands ---------------------------------------------------------------------------------------------
    def command(self, *args: str, wait: bool = True) -> Outcome | subprocess.Popen:
        """``ymir-runner ARGS`` under the memory cap; with ``wait``, its outcome (killed at the timeout)."""
        argv = ["prlimit", f"--as={self.cap_bytes}", "--", sys.executable, "-m", "ymir_runner", *args]
        started = time.monotonic()
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   errors="replace", start_new_session=True)
        if not wait:
            process.started = started  # type: ignore[attr-defined]
            return process
        return self.finish(process, started)

    def finish(self, process: subprocess.Popen, started: float | None = None) -> Outcome:
        started = getattr(process, "started", started) or time.monotonic()
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(self.timeout, kill)
        timer.start()
        out: list[str] = []
        err: list[str] = []
        readers = [threading.Thread(target=lambda s=stream, b=buffer: b.append(s.read()))
                   for stream, buffer in ((process.stdout, out), (process.stderr, err))]
        for reader in readers:
            reader.start()
        _, status, usage = os.wait4(process.pid, 0)
        for reader in readers:
            reader.join()
        timer.cancel()
        process.returncode = os.waitstatus_to_exitcode(status)
        return Outcome(process.returncode, "".join(out), "".join(err), usage.ru_maxrss / 1024,
                       time.monotonic() - started, timed_out.is_set())

    # --- trees --------------------------------------------------------------------------------------------------
    def fresh(self, name: str, tree: str) -> str:
        """A copy of a prepared tree (``training``, ``trained``, ``mining`` or ``container``) whose env.yaml,
        config.yaml and index files name the copy."""
        target = os.path.join(self.base, "cases", name)
        shutil.copytree(os.path.join(self.base, tree), target, symlinks=True)
        repoint(target, os.path.join(self.base, tree))
        return target

    def outside(self, name: str) -> str:
        """A folder beside the trees that no run may touch: its files are compared before and after."""
        folder = os.path.join(self.base, "outside", name)
        os.makedirs(folder, exist_ok=True)
        return folder


# --- helpers -------------------------------------------------------------------------------------------------------

def repoint(tree: str, old_root: str) -> None:
    """Make the env.yaml, config.yaml and index files of ``tree`` (a copy of ``old_root``) name ``tree``."""
    for folder, _, names in os.walk(os.path.join(tree, "in")):
        for file_name in names:
            path = os.path.join(folder, file_name)
            if file_name.endswith((".yaml", ".tsv")) and os.path.isfile(path) and not os.path.islink(path):
                with open(path, encoding="utf-8", errors="surrogateescape") as stream:
                    text = stream.read()
                with open(path, "w", encoding="utf-8", errors="surrogateescape") as stream:
                    stream.write(text.replace(old_root + "/", tree + "/"))


def files_of(folder: str) -> dict[str, str]:
    """relative path -> sha1 of every regular file below ``folder`` (links not followed)."""
    found = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as stream:
                    found[os.path.relpath(path, folder)] = hashlib.sha1(stream.read()).hexdigest()
    return found


def monitor(tree: str) -> tuple[str, str]:
    """(state, return code) of ``tree/out/monitor.txt``, or ("-", "-")."""
    try:
        with open(os.path.join(tree, "out", "monitor.txt"), encoding="utf-8") as stream:
            fields = stream.readline().rstrip("\n").split("\t")
    except OSError:
        return "-", "-"
    return (fields[3] if len(fields) > 3 else "?"), (fields[4] if len(fields) > 4 else "?")


def expect_failure(tree: str, outcome: Outcome, code: str, *names: str) -> list[str]:
    """Exit 1, monitor.txt at state 4 with ``code``, and a last stderr line with ``code`` and each of ``names``."""
    problems = []
    if outcome.exit_code != 1:
        problems.append(f"exit {outcome.exit_code}, expected 1")
    state, written = monitor(tree)
    if (state, written) != ("4", code):
        problems.append(f"monitor state/code {state}/{written}, expected 4/{code}")
    if f"error {code}" not in outcome.last_line:
        problems.append(f"last line does not give {code}")
    problems += [f"last line does not name {name!r}" for name in names if name not in outcome.last_line]
    return problems


def expect_refusal(outcome: Outcome, *names: str, code: int = 2) -> list[str]:
    """A command refused (exit ``code``), its stderr naming each of ``names``."""
    problems = [] if outcome.exit_code == code else [f"exit {outcome.exit_code}, expected {code}"]
    return problems + [f"stderr does not name {name!r}" for name in names if name not in outcome.stderr]


def expect_success(outcome: Outcome, *mentions: str) -> list[str]:
    problems = [] if outcome.exit_code == 0 else [f"exit {outcome.exit_code}, expected 0: {outcome.last_line}"]
    return problems + [f"stderr does not mention {text!r}" for text in mentions if text not in outcome.stderr]


def verify_clean(bench: Bench, tree: str, task: str = "training") -> list[str]:
    check = bench.command("verify", os.path.join(tree, "out"), "--task", task)
    assert isinstance(check, Outcome)
    return [] if check.exit_code == 0 else [f"verify: {check.stdout.strip().splitlines()[-1]}"]


def edit_yaml(path: str, change: Callable[[dict], None]) -> None:
    with open(path, encoding="utf-8") as stream:
        data = yaml.safe_load(stream)
    change(data)
    with open(path, "w", encoding="utf-8") as stream:
        yaml.safe_dump(data, stream, sort_keys=False)


def append_text(path: str, text: str) -> None:
    with open(path, "a", encoding="utf-8") as stream:
        stream.write(text)


def first_index_line(tree: str, index: str = "train-index.tsv") -> tuple[str, str]:
    with open(os.path.join(tree, "in", index), encoding="utf-8") as stream:
        image, _, annotation = stream.readline().rstrip("\n").partition("\t")
    return image, annotation


def replace_index_line(tree: str, line: str, index: str = "train-index.tsv", mode: str = "w",
                       encoding: str = "utf-8") -> None:
    path = os.path.join(tree, "in", index)
    with open(path, encoding="utf-8") as stream:
        rest = stream.readlines()[1:]
    with open(path, mode, encoding=encoding, errors="surrogateescape") as stream:
        stream.write(line + "\n" + "".join(rest))


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Billion laughs: ``width ** levels`` strings from about a kilobyte of YAML."""
    lines = ['l0: &l0 ["' + "lol" + '"' + ', "lol"' * (width - 1) + "]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def write_huge_png(path: str, side: int = 32767) -> None:
    """A ``side`` x ``side`` 8-bit grey PNG written row by row (a few MB on disk, ``side**2`` bytes decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes(side)
    with open(path, "wb") as stream:
        stream.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)))
        data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
        stream.write(chunk(b"IDAT", data) + chunk(b"IEND", b""))


# --- the cases -----------------------------------------------------------------------------------------------------

def two_runs_on_one_tree(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "training")
    edit_yaml(os.path.join(tree, "in", "config.yaml"), lambda config: config.update(epochs=40, save_period=10))
    env = os.path.join(tree, "in", "env.yaml")
    first = bench.command("run", "--env", env, wait=False)
    assert isinstance(first, subprocess.Popen)
    time.sleep(2.5)
    second = bench.command("run", "--env", env)
    assert isinstance(second, Outcome)
    first_outcome = bench.finish(first)
    problems = [] if second.exit_code != 0 else ["the second run was not refused"]
    problems += [] if first_outcome.exit_code == 0 else [f"the first run failed: {first_outcome.last_line}"]
    problems += verify_clean(bench, tree)
    return second, problems


def earlier_result_kept(setup: Callable[[str, str], None]) -> Callable[[Bench, str], tuple[Outcome, list[str]]]:
    """A second run on a tree with a finished run, ``setup(tree, outside)`` applied before it: the earlier result
    (marked) must survive somewhere under out/ (moved aside) and nothing may be written outside."""
    def play(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
        tree = bench.fresh(name, "trained")
        outside = bench.outside(name)
        append_text(os.path.join(tree, "out", "models", "result.yaml"), "# EARLIER-RUN-MARKER\n")
        with open(os.path.join(tree, "out", "models", "epoch_1", "model.pt"), "wb") as stream:
            stream.write(b"EARLIER-MODEL-MARKER")
        setup(tree, outside)
        before_outside = files_of(outside)
        outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
        assert isinstance(outcome, Outcome)
        kept = files_of(os.path.join(tree, "out"))
        texts = []
        for relative in kept:
            with open(os.path.join(tree, "out", relative), "rb") as stream:
                texts.append(stream.read())
        problems = []
        if not any(b"EARLIER-RUN-MARKER" in text for text in texts):
            problems.append("the earlier result.yaml is gone")
        if not any(text == b"EARLIER-MODEL-MARKER" for text in texts):
            problems.append("the earlier epoch_1/model.pt is gone or overwritten")
        if files_of(outside) != before_outside:
            problems.append("files were written outside the tree")
        if outcome.exit_code != 0 and "previous-runs" not in outcome.last_line:
            problems.append("failed without naming previous-runs")
        return outcome, problems
    return play


def previous_runs_file(tree: str, outside: str) -> None:
    with open(os.path.join(tree, "out", "previous-runs"), "w") as stream:
        stream.write("in the way\n")


def previous_runs_dangling(tree: str, outside: str) -> None:
    os.symlink(os.path.join(outside, "missing"), os.path.join(tree, "out", "previous-runs"))


def previous_runs_outside(tree: str, outside: str) -> None:
    os.symlink(outside, os.path.join(tree, "out", "previous-runs"))


def monitor_link_outside(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "training")
    outside = bench.outside(name)
    target = os.path.join(outside, "precious.txt")
    with open(target, "w") as stream:
        stream.write("precious\n")
    os.symlink(target, os.path.join(tree, "out", "monitor.txt"))
    outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
    assert isinstance(outcome, Outcome)
    with open(target) as stream:
        untouched = stream.read() == "precious\n"
    return outcome, [] if untouched else ["the file monitor.txt links to was written"]


def secret_as_annotation(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "training")
    secret = os.path.join(bench.outside(name), "shadow")
    with open(secret, "w") as stream:
        stream.write(SECRET)
    image, _ = first_index_line(tree)
    replace_index_line(tree, f"{image}\t{secret}")
    outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
    assert isinstance(outcome, Outcome)
    problems = expect_success(outcome, secret)
    return outcome, problems + (["the secret's lines reached the log"] if "SECRET-LINE" in outcome.stderr else [])


def coco_source(bench: Bench, name: str, file_names: list[str]) -> str:
    from PIL import Image

    source = os.path.join(bench.base, "cases", name, "coco")
    os.makedirs(os.path.join(source, "images"))
    images, annotations = [], []
    for index, file_name in enumerate(["a.png", "b.png", *file_names]):
        if "/" not in file_name:
            Image.new("RGB", (64, 48), (20 * index, 80, 120)).save(os.path.join(source, "images", file_name))
        images.append({"id": index + 1, "file_name": file_name, "width": 64, "height": 48})
        annotations.append({"id": index + 1, "image_id": index + 1, "category_id": 1, "bbox": [4, 4, 20, 20]})
    with open(os.path.join(source, "images", "instances.json"), "w") as stream:
        json.dump({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "cat"}]}, stream)
    return source


def sandbox_coco_outside(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    outside = bench.outside(name)
    secret = os.path.join(outside, "shadow.png")
    shutil.copyfile(os.path.join(bench.base, "sample.png"), secret)
    climbing = "../../../../../../../../.." + secret
    source = coco_source(bench, name, [secret, climbing])
    work = os.path.join(bench.base, "cases", name, "work")
    outcome = bench.command("sandbox", source, "--out", work)
    assert isinstance(outcome, Outcome)
    copied = [path for path in files_of(work) if path.startswith("in/assets/")] if os.path.isdir(work) else []
    problems = expect_refusal(outcome, secret)
    return outcome, problems + ([f"{len(copied)} assets copied"] if copied else [])


def sandbox_model_outside(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    outside = bench.outside(name)
    with open(os.path.join(outside, "passwd"), "w") as stream:
        stream.write(SECRET)
    models = os.path.join(bench.base, "cases", name, "models")
    shutil.copytree(os.path.join(bench.base, "trained", "out", "models"), models)
    edit_yaml(os.path.join(models, "result.yaml"),
              lambda result: result["model_stages"][result["best_stage_name"]]["files"].append(
                  "../../../../../../../../.." + os.path.join(outside, "passwd")))
    work = os.path.join(bench.base, "cases", name, "work")
    with open(os.path.join(bench.base, "trained", "in", "config.yaml")) as stream:
        classes = ",".join(yaml.safe_load(stream)["class_names"])
    outcome = bench.command("sandbox", os.path.join(bench.base, "sources", "plain"), "--out", work, "--task",
                            "mining,infer", "--model", models, "--classes", classes)
    assert isinstance(outcome, Outcome)
    leaked = os.path.isdir(work) and any("SECRET" in open(os.path.join(work, path), errors="replace").read()
                                         for path in files_of(work))
    return outcome, expect_refusal(outcome, "passwd") + (["the outside file was copied"] if leaked else [])


def config_bomb(where: str) -> Callable[[Bench, str], tuple[Outcome, list[str]]]:
    def play(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
        tree = bench.fresh(name, "training")
        config = os.path.join(tree, "in", "config.yaml")
        with open(config, encoding="utf-8") as stream:
            text = stream.read()
        if where == "key":
            text = text.replace("\nepochs: 2\n", "\n") + alias_bomb() + "epochs: *l8\n"
        else:
            text += alias_bomb() + "lol: *l8\n"
        with open(config, "w", encoding="utf-8") as stream:
            stream.write(text)
        outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
        assert isinstance(outcome, Outcome)
        return outcome, expect_failure(tree, outcome, "300001", "config.yaml")
    return play


def env_bomb(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "training")
    append_text(os.path.join(tree, "in", "env.yaml"), alias_bomb() + "lol: *l8\n")
    outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
    assert isinstance(outcome, Outcome)
    return outcome, expect_failure(tree, outcome, "300001", "env.yaml")


def verify_bomb(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "trained")
    append_text(os.path.join(tree, "out", "models", "result.yaml"), alias_bomb() + "lol: *l8\n")
    outcome = bench.command("verify", os.path.join(tree, "out"), "--task", "training")
    assert isinstance(outcome, Outcome)
    return outcome, [] if outcome.exit_code in (1, 2) else [f"verify exit {outcome.exit_code}"]


def deep_config(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "training")
    append_text(os.path.join(tree, "in", "config.yaml"), "deep: " + "[" * 20000 + "]" * 20000 + "\n")
    outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
    assert isinstance(outcome, Outcome)
    problems = expect_failure(tree, outcome, "300001", "config.yaml")
    lines = len(outcome.stderr.splitlines())
    return outcome, problems + ([f"{lines} stderr lines (a traceback?)"] if lines > 60 else [])


def big_config(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "training")
    filler = "".join(f"filler_{index}: [{index}, {index + 1}, 'text {index}']\n" for index in range(1_400_000))
    append_text(os.path.join(tree, "in", "config.yaml"), filler)  # about 50 MB
    outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
    assert isinstance(outcome, Outcome)
    if outcome.exit_code == 0:
        return outcome, []  # read within the bounds of time and memory: fine as well
    return outcome, expect_failure(tree, outcome, "300001", "config.yaml")


def special_item(role: str, kind: str) -> Callable[[Bench, str], tuple[Outcome, list[str]]]:
    """/dev/zero or a FIFO as an image, an annotation or the training index."""
    def play(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
        tree = bench.fresh(name, "training")
        path = "/dev/zero"
        if kind == "fifo":
            path = os.path.join(tree, "in", "special.fifo")
            os.mkfifo(path)
        if role == "index":
            edit_yaml(os.path.join(tree, "in", "env.yaml"), lambda env: env["input"].update(training_index_file=path))
            outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
            assert isinstance(outcome, Outcome)
            return outcome, expect_failure(tree, outcome, "300002", path)
        image, annotation = first_index_line(tree)
        replace_index_line(tree, f"{path}\t{annotation}" if role == "image" else f"{image}\t{path}")
        outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
        assert isinstance(outcome, Outcome)
        return outcome, expect_success(outcome, path)
    return play


def sandbox_special(kind: str) -> Callable[[Bench, str], tuple[Outcome, list[str]]]:
    def play(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
        source = os.path.join(bench.base, "cases", name, "source")
        shutil.copytree(os.path.join(bench.base, "sources", "yolo"), source)
        special = os.path.join(source, "special.jpg")
        if kind == "fifo":
            os.mkfifo(special)
        else:
            os.symlink("/dev/zero", special)
        outcome = bench.command("sandbox", source, "--out", os.path.join(bench.base, "cases", name, "work"))
        assert isinstance(outcome, Outcome)
        return outcome, expect_success(outcome, "special.jpg")
    return play


def huge_png(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "training")
    image, annotation = first_index_line(tree)
    os.remove(image)
    os.symlink(os.path.join(bench.base, "huge.png"), image)
    outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
    assert isinstance(outcome, Outcome)
    return outcome, expect_success(outcome)


def many_classes(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "training")
    edit_yaml(os.path.join(tree, "in", "config.yaml"),
              lambda config: config.update(class_names=config["class_names"] + [f"extra{i}" for i in range(10000)]))
    outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
    assert isinstance(outcome, Outcome)
    return outcome, expect_success(outcome)


def unbounded_value(key: str, value: object) -> Callable[[Bench, str], tuple[Outcome, list[str]]]:
    def play(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
        tree = bench.fresh(name, "training")
        edit_yaml(os.path.join(tree, "in", "config.yaml"), lambda config: config.update({key: value}))
        outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
        assert isinstance(outcome, Outcome)
        return outcome, expect_failure(tree, outcome, "300001", key)
    return play


def implausible_checkpoint(field: str) -> Callable[[Bench, str], tuple[Outcome, list[str]]]:
    def play(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
        import torch

        tree = bench.fresh(name, "mining")
        models = os.path.join(tree, "in", "models")
        (path,) = [os.path.join(base, file) for base, _, files in os.walk(models) for file in files
                   if file == "model.pt"]
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if field == "img_size":
            checkpoint["img_size"] = 320000
        else:
            spec = checkpoint["model_config"]["spec"]
            for key, value in list(spec.items()):
                if "width" in key or "channels" in key:
                    spec[key] = [200000] * len(value) if isinstance(value, (list, tuple)) else 200000
        torch.save(checkpoint, path)
        outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
        assert isinstance(outcome, Outcome)
        return outcome, expect_failure(tree, outcome, "300004", "model.pt")
    return play


def index_under_root(encoding: str) -> Callable[[Bench, str], tuple[Outcome, list[str]]]:
    def play(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
        tree = bench.fresh(name, "container")
        index = os.path.join(tree, "in", "train-index.tsv")
        with open(index, encoding="utf-8") as stream:
            text = stream.read()
        if encoding == "utf-16":
            with open(index, "w", encoding="utf-16") as stream:
                stream.write(text)
        else:
            with open(index, "ab") as stream:
                stream.write(b"/in/assets/\xff\xfe-not-utf8.png\t/in/annotations/x.txt\n")
        outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"), "--root", tree)
        assert isinstance(outcome, Outcome)
        return outcome, expect_success(outcome)
    return play


def nul_annotation_path(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "training")
    image, annotation = first_index_line(tree)
    replace_index_line(tree, f"{image}\t{annotation}\x00.txt")
    outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
    assert isinstance(outcome, Outcome)
    return outcome, expect_success(outcome)


def sandbox_bad_box(fmt: str) -> Callable[[Bench, str], tuple[Outcome, list[str]]]:
    def play(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
        if fmt == "coco":
            source = coco_source(bench, name, [])
            path = os.path.join(source, "images", "instances.json")
            with open(path) as stream:
                data = json.load(stream)
            data["annotations"][0]["bbox"] = [float("nan"), 4, 20, 20]
            data["annotations"].append({"id": 9, "image_id": 2, "category_id": 1, "bbox": [4, 4, 1e308, 20]})
            with open(path, "w") as stream:
                json.dump(data, stream)
            named = "instances.json"
        else:
            source = os.path.join(bench.base, "cases", name, "source")
            shutil.copytree(os.path.join(bench.base, "sources", "yolo"), source)
            append_text(os.path.join(source, "img_0.txt"), "0 1e308 0.5 0.2 0.2\n0 nan 0.5 0.2 0.2\n")
            named = "img_0.txt"
        outcome = bench.command("sandbox", source, "--out", os.path.join(bench.base, "cases", name, "work"))
        assert isinstance(outcome, Outcome)
        problems = expect_success(outcome, named)
        return outcome, problems + (["a traceback"] if "Traceback" in outcome.stderr else [])
    return play


def bad_model_info(content: bytes) -> Callable[[Bench, str], tuple[Outcome, list[str]]]:
    def play(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
        tree = bench.fresh(name, "mining")
        with open(os.path.join(tree, "in", "models", "ymir-info.yaml"), "wb") as stream:
            stream.write(content)
        outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
        assert isinstance(outcome, Outcome)
        return outcome, expect_success(outcome)
    return play


def duplicate_keys(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "training")
    append_text(os.path.join(tree, "in", "config.yaml"), "epochs: 2\n")
    outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
    assert isinstance(outcome, Outcome)
    warned = any("key 'epochs'" in line and "is also on line" in line for line in outcome.stderr.splitlines())
    return outcome, expect_success(outcome) + ([] if warned else ["no warning names the duplicate key 'epochs'"])


def case_duplicate_classes(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "training")
    edit_yaml(os.path.join(tree, "in", "config.yaml"),
              lambda config: config.update(class_names=[*config["class_names"], config["class_names"][0].upper()]))
    outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
    assert isinstance(outcome, Outcome)
    return outcome, expect_failure(tree, outcome, "300001", "class_names")


def nan_quality(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "training")
    _, annotation = first_index_line(tree)
    append_text(annotation, "0, 2, 2, 20, 20, nan, inf\n")
    outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
    assert isinstance(outcome, Outcome)
    return outcome, expect_success(outcome, os.path.basename(annotation))


def temp_copies_after_kill(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "container")
    edit_yaml(os.path.join(tree, "in", "config.yaml"), lambda config: config.update(epochs=40))
    temp = tempfile.gettempdir()
    before = {entry for entry in os.listdir(temp) if entry.startswith("ymir-runner")}
    run = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"), "--root", tree, wait=False)
    assert isinstance(run, subprocess.Popen)
    time.sleep(4)
    os.killpg(run.pid, signal.SIGKILL)
    bench.finish(run)
    again = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"), "--root", tree)
    assert isinstance(again, Outcome)
    left = {entry for entry in os.listdir(temp) if entry.startswith("ymir-runner")} - before
    return again, ([f"left in {temp}: {', '.join(sorted(left))}"] if left else []) + expect_success(again)


def no_container(bench: Bench, name: str) -> tuple[Outcome, list[str]]:
    tree = bench.fresh(name, "container")
    outcome = bench.command("run", "--env", os.path.join(tree, "in", "env.yaml"))
    assert isinstance(outcome, Outcome)
    written = [path for path in ("/in", "/out") if os.path.exists(path)]
    return outcome, ([f"{', '.join(written)} exist"] if written else []) + expect_refusal(outcome, "--root", code=1)


CASES = [
    Case("two runs on one tree", "nothing lost", two_runs_on_one_tree),
    Case("previous-runs is a plain file", "nothing lost", earlier_result_kept(previous_runs_file)),
    Case("previous-runs is a dangling link", "nothing lost", earlier_result_kept(previous_runs_dangling)),
    Case("previous-runs links outside /out", "nothing outside", earlier_result_kept(previous_runs_outside)),
    Case("monitor.txt links to an outside file", "nothing outside", monitor_link_outside),
    Case("an index line names a secret file as annotation", "nothing outside", secret_as_annotation),
    Case("sandbox: COCO file_name outside SOURCE", "nothing outside", sandbox_coco_outside),
    Case("sandbox: --model result.yaml lists an outside file", "nothing outside", sandbox_model_outside),
    Case("container paths without /in, /out, no --root", "nothing outside", no_container),
    Case("config.yaml alias bomb", "bounded", config_bomb("extra")),
    Case("config.yaml alias bomb as a typed key", "bounded", config_bomb("key")),
    Case("env.yaml alias bomb", "bounded", env_bomb),
    Case("verify on a bombed result.yaml", "bounded", verify_bomb),
    Case("config.yaml nested 20,000 levels", "bounded", deep_config),
    Case("config.yaml of 50 MB", "bounded", big_config),
    Case("/dev/zero as an annotation", "bounded", special_item("annotation", "zero")),
    Case("/dev/zero as the training index", "bounded", special_item("index", "zero")),
    Case("a FIFO as an image", "bounded", special_item("image", "fifo")),
    Case("a FIFO as an annotation", "bounded", special_item("annotation", "fifo")),
    Case("a FIFO as the training index", "bounded", special_item("index", "fifo")),
    Case("sandbox: a link to /dev/zero in SOURCE", "bounded", sandbox_special("zero")),
    Case("sandbox: a FIFO in SOURCE", "bounded", sandbox_special("fifo")),
    Case("a 32767 x 32767 PNG", "bounded", huge_png),
    Case("10,000 class_names", "bounded", many_classes),
    Case("batch_size_per_gpu: 100000", "bounded", unbounded_value("batch_size_per_gpu", 100000)),
    Case("img_size: 32000", "bounded", unbounded_value("img_size", 32000)),
    Case("a checkpoint claiming width 200000", "bounded", implausible_checkpoint("width"), "mining"),
    Case("a checkpoint claiming img_size 320000", "bounded", implausible_checkpoint("img_size"), "mining"),
    Case("a UTF-16 index under --root", "names its cause", index_under_root("utf-16")),
    Case("a non-UTF-8 index line under --root", "names its cause", index_under_root("bytes")),
    Case("a NUL byte in an annotation path", "names its cause", nul_annotation_path),
    Case("sandbox: NaN and 1e308 COCO boxes", "names its cause", sandbox_bad_box("coco")),
    Case("sandbox: NaN and 1e308 YOLO boxes", "names its cause", sandbox_bad_box("yolo")),
    Case("a non-UTF-8 ymir-info.yaml", "names its cause", bad_model_info(b"best_stage_name: \xff\xfe\n"), "mining"),
    Case("a malformed ymir-info.yaml", "names its cause", bad_model_info(b"best_stage_name: [unclosed\n"), "mining"),
    Case("duplicate config keys", "names its cause", duplicate_keys),
    Case("class_names differing only by case", "names its cause", case_duplicate_classes),
    Case("NaN quality and inf angle in det-ark", "names its cause", nan_quality),
    Case("temp copies after a SIGKILLed run", "names its cause", temp_copies_after_kill),
]


# --- preparation -----------------------------------------------------------------------------------------------

def prepare(bench: Bench) -> None:
    """The trees every case copies, and the baselines of a training and a mining + inference run."""
    from PIL import Image

    from ymir_runner.testing import TaskTree, install_models
    from ymir_runner_detection.demo import write_task

    base = bench.base
    write_task(os.path.join(base, "training"), config=TINY, n_train=12, n_val=4, n_candidates=4)
    baseline = bench.command("run", "--env", os.path.join(base, "training", "in", "env.yaml"))
    assert isinstance(baseline, Outcome) and baseline.exit_code == 0, baseline.stderr[-2000:]
    bench.baselines["training"] = baseline
    shutil.copytree(os.path.join(base, "training"), os.path.join(base, "trained"), symlinks=True)
    repoint(os.path.join(base, "trained"), os.path.join(base, "training"))  # a finished run, for re-runs
    shutil.rmtree(os.path.join(base, "training", "out"))
    os.makedirs(os.path.join(base, "training", "out", "tensorboard"))

    write_task(os.path.join(base, "mining"), kinds=("mining", "infer"), config={**TINY}, n_train=1, n_val=1,
               n_candidates=6)
    models = os.path.join(base, "mining", "in", "models")
    files = install_models(os.path.join(base, "trained", "out", "models"), models)
    edit_yaml(os.path.join(base, "mining", "in", "config.yaml"), lambda config: config.update(
        model_params_path=[os.path.join(models, path) for path in files]))
    baseline = bench.command("run", "--env", os.path.join(base, "mining", "in", "env.yaml"))
    assert isinstance(baseline, Outcome) and baseline.exit_code == 0, baseline.stderr[-2000:]
    bench.baselines["mining"] = baseline
    shutil.rmtree(os.path.join(base, "mining", "out"))
    os.makedirs(os.path.join(base, "mining", "out", "tensorboard"))

    container = TaskTree(os.path.join(base, "container"), config={**TINY, "class_names": ["cat", "dog"]}, images=8)
    edit_yaml(container.local("/in/config.yaml"), lambda config: config.update(plugin="detection"))

    Image.new("RGB", (64, 48), (90, 30, 200)).save(os.path.join(base, "sample.png"))
    yolo = os.path.join(base, "sources", "yolo")
    os.makedirs(yolo)
    for index in range(6):
        Image.new("RGB", (64, 48), (30 * index, 60, 90)).save(os.path.join(yolo, f"img_{index}.jpg"))
        with open(os.path.join(yolo, f"img_{index}.txt"), "w") as stream:
            stream.write("0 0.5 0.5 0.4 0.4\n")
    with open(os.path.join(yolo, "classes.txt"), "w") as stream:
        stream.write("cat\n")
    plain = os.path.join(base, "sources", "plain")
    os.makedirs(plain)
    for index in range(3):
        Image.new("RGB", (64, 48), (10, 30 * index, 90)).save(os.path.join(plain, f"new_{index}.jpg"))
    write_huge_png(os.path.join(base, "huge.png"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cap-gb", type=float, default=4.0, help="address-space cap of every run (prlimit --as)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds before a run is killed")
    parser.add_argument("--only", nargs="*", default=(), help="run the cases whose kind contains one of these")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (printed)")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="bench-hostile-")
    bench = Bench(base, int(args.cap_gb * (1 << 30)), args.timeout)
    started = time.monotonic()
    prepare(bench)
    for kind, baseline in bench.baselines.items():
        print(f"baseline {kind}: exit {baseline.exit_code}, peak RSS {baseline.peak_rss_mb:.0f} MB, "
              f"{baseline.wall_s:.1f} s")
    print(f"{'kind':<52} {'outcome':<7} {'exit':>4} {'monitor':>9} {'RSS MB':>7} {'wall s':>6}  last stderr line")
    passed = 0
    cases = [case for case in CASES if not args.only or any(text in case.kind for text in args.only)]
    for number, case in enumerate(cases):
        try:
            outcome, problems = case.play(bench, f"case{number:02d}")
        except Exception as error:  # the harness itself: report, go on
            print(f"{case.kind:<52} HARNESS {type(error).__name__}: {error}")
            continue
        limit = bench.baselines[case.baseline]
        if outcome.timed_out:
            problems.append(f"killed after {args.timeout:.0f} s")
        if outcome.peak_rss_mb > limit.peak_rss_mb + 1024:
            problems.append(f"peak RSS {outcome.peak_rss_mb:.0f} MB > baseline + 1 GB")
        tree = os.path.join(base, "cases", f"case{number:02d}")
        state, code = monitor(tree)
        ok = not problems
        passed += ok
        line = outcome.last_line.replace(base, "…")
        print(f"{case.kind:<52} {'ok' if ok else 'FAIL':<7} {outcome.exit_code:>4} {state + '/' + code:>9} "
              f"{outcome.peak_rss_mb:>7.0f} {outcome.wall_s:>6.1f}  {line[:150]}")
        for problem in problems:
            print(f"{'':<52} - {problem}")
        sys.stdout.flush()
    print(f"{passed} of {len(cases)} cases passed in {time.monotonic() - started:.0f} s "
          f"(cap {args.cap_gb:g} GB, timeout {args.timeout:.0f} s)")
    if args.keep:
        print(f"work folder: {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 0 if passed == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
