"""Nothing lost, nothing written outside the tree (issue 24).

One run per work tree: a second `ymir-runner run` on a tree in use is refused before it touches anything, and the
lock of a run that died (SIGKILL, an orphaned worker still alive) never blocks. An earlier run's results are moved
aside or the task stops naming what is in the way: never deleted, never written over. No write follows a link out
of /out: a link where an output goes is replaced or moved as a link, its target left as it was, a full disk
included. Real `ymir-runner run` processes where two runs or a kill are the point, the toy plugin in this process
otherwise.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
from typing import Iterator

import pytest
import toy_plugin

from ymir_runner import ConfigError, OutputError, ReturnCode
from ymir_runner.protocol import atomic, monitor, outlock
from ymir_runner.protocol.monitor import Monitor
from ymir_runner.protocol.outlock import LOCK_NAME, hold_output_lock
from ymir_runner.protocol.results import PREVIOUS_RUNS_DIR, TrainingResult
from ymir_runner.shutdown import child_pids, is_running
from ymir_runner.testing import TaskTree, cannot_run_as, make_fake_distribution, temp_files

GATED_PLUGIN = textwrap.dedent("""
    import multiprocessing, os, time
    import ymir_runner
    from ymir_runner import ExecutorSpec, TaskKind

    @ymir_runner.hookimpl
    def ymir_runner_register_executors():
        return [ExecutorSpec(name="gated", tasks={TaskKind.TRAINING})]

    def worker():  # a DataLoader worker forked by the plugin: outlives a SIGKILLed parent
        while True:
            time.sleep(1)

    def save(context, epoch):
        results = context.training_result
        with open(os.path.join(results.stage_dir(f"epoch_{epoch}"), "model.bin"), "wb") as stream:
            stream.write(os.urandom(1024))
        results.add_stage(f"epoch_{epoch}", ["model.bin"], {"mAP": epoch / 4})

    @ymir_runner.hookimpl
    def ymir_runner_train(context):
        gate = os.path.join(os.path.dirname(context.env.output.root_dir), "gate")
        child = multiprocessing.get_context("fork").Process(target=worker, daemon=True)
        child.start()
        save(context, 1)
        print("READY", child.pid, flush=True)
        deadline = time.monotonic() + 90
        while not os.path.exists(gate) and time.monotonic() < deadline:  # training, until the test opens the gate
            time.sleep(0.02)
        save(context, 2)
        child.terminate()
""")


@pytest.fixture
def gated_run(tmp_path):
    """(tree, start, open_gate): ``start()`` launches ``ymir-runner run`` on the tree; the training saves
    epoch_1, prints ``READY <worker pid>`` and waits for ``open_gate()`` before it saves epoch_2."""
    site = str(tmp_path / "site")
    make_fake_distribution(site, dist_name="ymir-gated", module="ymir_gated_mod", source=GATED_PLUGIN,
                           entry_point="gated")
    env = dict(os.environ, PYTHONPATH=site)
    tree = TaskTree(str(tmp_path / "task"), kinds=["training"], config={"plugin": "gated"})
    processes: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        process = subprocess.Popen(tree.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=env)
        processes.append(process)
        return process

    def open_gate() -> None:
        open(os.path.join(tree.root, "gate"), "w").close()

    yield tree, start, open_gate
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()


def ready(process: subprocess.Popen) -> int:
    """Wait for the gated training's READY line; returns its forked worker's PID."""
    line = process.stdout.readline()
    assert line.startswith("READY"), line + process.communicate(timeout=60)[1][-3000:]
    return int(line.split()[1])


def read(path: str) -> bytes:
    with open(path, "rb") as stream:
        return stream.read()


def snapshot(folder: str) -> dict[str, bytes]:
    """Every file under ``folder`` (links not followed) with its bytes."""
    files = {}
    for path, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(path, name)
            files[os.path.relpath(full, folder)] = os.readlink(full).encode() if os.path.islink(full) else read(full)
    return files


# --- one run per work tree --------------------------------------------------------------------------------------

def test_a_second_run_on_a_tree_in_use_is_refused_and_the_first_publishes_intact(gated_run):
    tree, start, open_gate = gated_run
    first = start()
    ready(first)
    monitor_file = os.path.join(tree.out_dir, "monitor.txt")
    models_before, monitor_before = snapshot(os.path.join(tree.out_dir, "models")), read(monitor_file)

    second = start()  # a user in a second terminal, while the first trains
    _, stderr = second.communicate(timeout=120)

    assert second.returncode == 1, stderr[-3000:]
    # the lock is the run's, a child of the supervising `ymir-runner run` process (ymir_runner.supervise)
    holder = re.search(r"\(PID (\d+)\)", stderr.strip().splitlines()[-1])
    assert holder and int(holder.group(1)) in {first.pid, *child_pids(first.pid)}
    assert stderr.strip().splitlines()[-1] == (
        f"ymir-runner: error {int(ReturnCode.CONFIG)}: {tree.out_dir} is in use by another ymir-runner run "
        f"(PID {holder.group(1)}): two runs on one work tree would move each other's results aside; wait for it to "
        f"end, or use another work tree (ymir-runner sandbox --out OTHER). Nothing was written")
    assert "moved to" not in stderr
    assert read(monitor_file) == monitor_before  # monitor.txt belongs to the first run: not a byte changed
    assert snapshot(os.path.join(tree.out_dir, "models")) == models_before
    assert not os.path.lexists(os.path.join(tree.out_dir, PREVIOUS_RUNS_DIR))

    open_gate()
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr[-3000:]
    outcome = tree.outcome(first.returncode, stderr)
    report = outcome.verify()
    assert report.ok, report.to_text()
    assert list(outcome.result_yaml()["model_stages"]) == ["epoch_1", "epoch_2"]
    assert (outcome.state, outcome.percent) == (2, 1.0)


def test_the_lock_of_a_sigkilled_run_never_blocks_even_with_its_worker_alive(gated_run):
    tree, start, open_gate = gated_run
    first = start()
    worker = ready(first)
    try:
        first.send_signal(signal.SIGKILL)  # the runner only: its forked worker lives on, an orphan
        first.wait(timeout=60)  # (not communicate: the worker keeps the output pipes open)
        assert is_running(worker)
        assert os.path.isfile(os.path.join(tree.out_dir, LOCK_NAME))  # a lock file left behind

        open_gate()
        second = start()
        _, stderr = second.communicate(timeout=120)
    finally:
        os.kill(worker, signal.SIGKILL)

    assert second.returncode == 0, stderr[-3000:]
    assert "is in use by another" not in stderr
    (moved,) = [line for line in stderr.splitlines() if "results of an earlier run" in line]
    folder = moved.rsplit("moved to ", 1)[1].split(" (")[0]
    assert sorted(os.listdir(os.path.join(folder, "models"))) == ["epoch_1", "result.yaml"]
    report = tree.outcome(second.returncode, stderr).verify()
    assert report.ok, report.to_text()


LOCK_HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    print("LOCKED", flush=True)
    time.sleep(120)
""")


@pytest.fixture
def toy_registry(ymir_registry):
    ymir_registry.register(toy_plugin, "toy")
    return ymir_registry


@pytest.fixture
def lock_holder():
    """``lock_holder(out_dir)`` → a process holding the tree's lock, as a running ymir-runner does."""
    processes = []

    def hold(out_dir: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, os.path.join(out_dir, LOCK_NAME)],
                                   stdout=subprocess.PIPE, text=True)
        processes.append(process)
        assert process.stdout.readline() == "LOCKED\n"
        return process

    yield hold
    for process in processes:
        process.kill()
        process.communicate()


def test_a_refused_run_touches_nothing_of_the_tree(toy_registry, ymir_task, lock_holder):
    tree = ymir_task(kinds=["training"])
    assert tree.run(toy_registry).exit_code == 0
    before = snapshot(tree.out_dir)
    holder = lock_holder(tree.out_dir)

    outcome = tree.run(toy_registry)

    assert outcome.exit_code == 1
    assert outcome.last_stderr_line.startswith(
        f"ymir-runner: error {int(ReturnCode.CONFIG)}: {tree.out_dir} is in use by another ymir-runner run "
        f"(PID {holder.pid}): ")
    assert outcome.stderr.strip().count("\n") == 0  # the refusal is all it printed
    assert snapshot(tree.out_dir) == before  # monitor.txt, result.yaml, the stages: as the earlier run left them


def test_two_runs_in_one_process_are_kept_apart_too(tmp_path):
    """POSIX locks belong to a process: a second lock of this process would succeed, and closing its descriptor
    would silently release the first one. So a second lock in this process is refused before it opens the file."""
    with hold_output_lock(str(tmp_path)) as path:
        assert path == os.path.join(str(tmp_path), LOCK_NAME)
        with pytest.raises(ConfigError, match=f"is in use by another ymir-runner run \\(PID {os.getpid()}\\)"):
            with hold_output_lock(str(tmp_path)):
                pass
        probe = subprocess.run([sys.executable, "-c", textwrap.dedent("""
            import fcntl, os, sys
            fd = os.open(sys.argv[1], os.O_RDWR)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                print("held")
        """), path], capture_output=True, text=True, timeout=60)
        assert probe.stdout == "held\n", probe.stderr  # the refused attempt did not release the first lock
    with hold_output_lock(str(tmp_path)):  # released when the first run ended
        pass
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666  # another uid may lock it later


@pytest.mark.parametrize("error", [errno.ENOLCK, errno.EOPNOTSUPP])
def test_a_file_system_without_locks_runs_with_one_warning(toy_registry, ymir_task, monkeypatch, error):
    def no_locks(fd, operation):
        raise OSError(error, os.strerror(error))

    monkeypatch.setattr(outlock.fcntl, "lockf", no_locks)
    outcome = ymir_task(kinds=["training"]).run(toy_registry)
    assert outcome.exit_code == 0, outcome.stderr
    lock = os.path.join(outcome.out_dir, LOCK_NAME)
    assert outcome.stderr.count(f"cannot lock {lock} ({os.strerror(error).lower()}): a second run started on "
                                f"this tree would not be refused") == 1


@pytest.mark.parametrize("what", ["link to an outside file", "dangling link", "folder"])
def test_something_in_the_way_of_the_lock_file_is_one_warning_and_never_written(toy_registry, ymir_task, tmp_path,
                                                                                 what):
    tree = ymir_task(kinds=["training"])
    lock = os.path.join(tree.out_dir, LOCK_NAME)
    outside = tmp_path / "outside.txt"
    if what == "folder":
        os.mkdir(lock)
    else:
        if what == "link to an outside file":
            outside.write_text("precious\n", encoding="utf-8")
        os.symlink(outside, lock)
    outcome = tree.run(toy_registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stderr.count(f"cannot lock {lock} (") == 1
    if what == "link to an outside file":
        assert outside.read_text(encoding="utf-8") == "precious\n"
    elif what == "dangling link":
        assert not outside.exists()


def test_a_lock_file_a_root_run_left_can_be_taken_by_another_uid(ymir_shared_tmp):
    why_not = cannot_run_as(65534)
    if why_not:
        pytest.skip(why_not)
    out = os.path.join(ymir_shared_tmp, "out")
    os.mkdir(out)
    with hold_output_lock(out):  # the earlier run, as root
        pass
    os.chmod(out, 0o755)  # /out itself not writable by the uid: only the lock file is needed
    taken = subprocess.run(
        [sys.executable, "-c", "import sys; from ymir_runner.protocol.outlock import hold_output_lock\n"
                               "with hold_output_lock(sys.argv[1]) as path: print(path)", out],
        capture_output=True, text=True, user=65534, group=65534, timeout=60)
    assert taken.returncode == 0, taken.stderr
    assert taken.stdout == os.path.join(out, LOCK_NAME) + "\n"
    assert "cannot lock" not in taken.stderr


# --- an earlier run's results: moved aside or the task stops, never deleted or written over ----------------------

@pytest.mark.parametrize("in_the_way", ["file", "dangling link", "link to an outside folder"])
def test_previous_runs_in_the_way_stops_the_task_and_keeps_the_earlier_results(toy_registry, ymir_task, tmp_path,
                                                                              in_the_way):
    tree = ymir_task(kinds=["training"])
    assert tree.run(toy_registry).exit_code == 0
    models = os.path.join(tree.out_dir, "models")
    earlier = snapshot(models)
    holder = os.path.join(tree.out_dir, PREVIOUS_RUNS_DIR)
    outside = tmp_path / "outside"
    if in_the_way == "file":
        with open(holder, "w", encoding="utf-8") as stream:
            stream.write("a file where the folder goes")
    else:
        if in_the_way == "link to an outside folder":
            outside.mkdir()
        os.symlink(outside, holder)

    outcome = tree.run(toy_registry)

    assert outcome.exit_code == 1
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.GENERIC)
    what = "a file, not a folder" if in_the_way == "file" else f"a symbolic link (to {outside}), not a folder"
    assert outcome.last_stderr_line.startswith(f"ymir-runner: error {int(ReturnCode.GENERIC)}: {holder} is {what}")
    assert (f"the results of an earlier run in {tree.out_dir} (models/result.yaml, models/epoch_1, models/epoch_2) "
            f"are left as they were and this task stops before it would write over them") in outcome.last_stderr_line
    assert snapshot(models) == earlier  # not deleted, not written over
    if in_the_way == "file":
        assert read(holder) == b"a file where the folder goes"
    else:
        assert os.readlink(holder) == str(outside)
        if in_the_way == "dangling link":
            assert not os.path.lexists(outside)  # its target was not created
        else:
            assert os.listdir(outside) == []
    assert temp_files(tree.out_dir) == []


def test_an_earlier_result_that_cannot_be_moved_is_never_deleted(toy_registry, ymir_task, monkeypatch):
    """The old rule deleted a published file that could not be moved; now the task stops, naming it."""
    tree = ymir_task(kinds=["training"])
    assert tree.run(toy_registry).exit_code == 0
    earlier = snapshot(os.path.join(tree.out_dir, "models"))
    result_yaml = os.path.join(tree.out_dir, "models", "result.yaml")
    rename = os.rename

    def refuse(source, destination):
        if os.fspath(source) == result_yaml:
            raise PermissionError(errno.EACCES, "Permission denied")
        rename(source, destination)

    monkeypatch.setattr(os, "rename", refuse)
    outcome = tree.run(toy_registry)
    monkeypatch.undo()

    assert outcome.exit_code == 1
    assert outcome.last_stderr_line == (
        f"ymir-runner: error {int(ReturnCode.GENERIC)}: cannot move {result_yaml} of an earlier run aside to "
        f"{tree.out_dir}/{PREVIOUS_RUNS_DIR} (Permission denied): it is left as it was and this task stops before "
        f"it would publish it as its own or write over it; move it out of {tree.out_dir} or run on a new tree")
    assert snapshot(os.path.join(tree.out_dir, "models")) == earlier
    assert not os.path.lexists(os.path.join(tree.out_dir, PREVIOUS_RUNS_DIR))  # no empty folder left behind


def test_a_move_across_devices_that_fails_keeps_the_source(tmp_path, monkeypatch):
    from ymir_runner.protocol import results

    source = tmp_path / "models" / "epoch_1"
    source.mkdir(parents=True)
    (source / "model.pt").write_bytes(b"weights")
    rename = os.rename

    def cross_device(a, b):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    def copy_fails(*args, **kwargs):
        os.makedirs(tmp_path / "dest", exist_ok=True)
        (tmp_path / "dest" / "half").write_bytes(b"ha")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "rename", cross_device)
    monkeypatch.setattr(results.shutil, "copytree", copy_fails)
    with pytest.raises(OSError, match="No space left"):
        results._move(str(source), str(tmp_path / "dest"))
    monkeypatch.setattr(os, "rename", rename)
    assert read(str(source / "model.pt")) == b"weights"
    assert not (tmp_path / "dest").exists()  # the half copy, not the source, was removed


# --- no write follows a link out of /out -------------------------------------------------------------------------

LINKED_OUTPUTS = [
    ("training", "monitor.txt", "file"), ("training", "models/result.yaml", "file"),
    ("training", "models/epoch_1", "folder"), ("training", "models", "folder"),
    ("mining", "result.tsv", "file"), ("infer", "infer-result.json", "file"),
]


@pytest.mark.parametrize("kind, name, target", LINKED_OUTPUTS)
def test_an_output_that_is_a_link_out_of_the_tree_leaves_the_target_untouched(toy_registry, ymir_task, tmp_path,
                                                                             kind, name, target):
    tree = ymir_task(kinds=[kind])
    outside = tmp_path / "outside"
    outside.mkdir()
    if target == "file":
        (outside / "precious.txt").write_text("precious\n", encoding="utf-8")
        pointed = outside / "precious.txt"
    else:
        (outside / "epoch_1").mkdir()
        (outside / "epoch_1" / "model.json").write_text("precious\n", encoding="utf-8")
        (outside / "epoch_1" / "result.yaml").write_text("precious: true\n", encoding="utf-8")
        pointed = outside / "epoch_1"
    link = os.path.join(tree.out_dir, name)
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink(pointed, link)
    before = snapshot(str(outside))

    outcome = tree.run(toy_registry)

    assert outcome.exit_code == 0, outcome.stderr
    assert snapshot(str(outside)) == before  # nothing written, moved or deleted out there
    assert not os.path.islink(link)  # this run's own output is there now
    if name != "monitor.txt":  # monitor.txt is no result: its link is replaced; any other is moved aside, as a link
        (moved,) = [line for line in outcome.stderr.splitlines() if "results of an earlier run" in line]
        folder = moved.rsplit("moved to ", 1)[1].split(" (")[0]
        assert os.readlink(os.path.join(folder, name)) == str(pointed)
    report = outcome.verify()
    assert report.ok, report.to_text()


def test_a_stage_folder_that_is_a_link_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    models = tmp_path / "models"
    models.mkdir()
    os.symlink(outside, models / "epoch_1")
    results = TrainingResult(str(models), str(models / "result.yaml"))
    with pytest.raises(OutputError, match=f"cannot create {models}/epoch_1: a symbolic link \\(to {outside}\\) is "
                                          f"in the way"):
        results.stage_dir("epoch_1")
    assert os.listdir(outside) == []


def test_an_attachment_replaces_a_link_and_never_writes_through_it(tmp_path):
    models = tmp_path / "models"
    (models / "attachments" / "images").mkdir(parents=True)
    outside = tmp_path / "outside.png"
    outside.write_bytes(b"precious")
    os.symlink(outside, models / "attachments" / "images" / "pr.png")
    curve = tmp_path / "pr.png"
    curve.write_bytes(b"\x89PNG curve")
    TrainingResult(str(models), str(models / "result.yaml")).add_attachment("images", str(curve))
    attached = models / "attachments" / "images" / "pr.png"
    assert not attached.is_symlink() and attached.read_bytes() == b"\x89PNG curve"
    assert outside.read_bytes() == b"precious"
    assert temp_files(str(models)) == []


def disk_full(path: str, text: str) -> None:
    error = OutputError(f"cannot write {path}: no space left on device")
    error.disk_full = True
    raise error


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_the_in_place_fallback_of_a_full_disk_never_writes_through_a_link(tmp_path, monkeypatch, link):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (os.symlink if link == "symbolic" else os.link)(outside, out / "monitor.txt")
    monkeypatch.setattr(monitor, "atomic_write_text", disk_full)
    with pytest.raises(OutputError, match="monitor.txt: no space left on device"):
        Monitor(str(out / "monitor.txt"), "t1").fail(300001)
    assert outside.read_text(encoding="utf-8") == "precious\n"


def test_the_in_place_fallback_still_writes_a_file_of_its_own(tmp_path, monkeypatch):
    path = tmp_path / "monitor.txt"
    path.write_text("t1\t1700000000.000\t0.5000\t2\t0\na long progress message\n", encoding="utf-8")
    monkeypatch.setattr(monitor, "atomic_write_text", disk_full)
    Monitor(str(path), "t1").fail(300001)
    (line,) = path.read_text(encoding="utf-8").splitlines()
    assert line.split("\t")[3:] == ["4", "300001"]


@contextlib.contextmanager
def full_disk(folder: str) -> Iterator[None]:
    """A 1 MiB tmpfs on ``folder``, filled up to the last block (skips the test where none can be mounted)."""
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", folder], capture_output=True, text=True)
    if mount.returncode:
        pytest.skip(f"cannot mount a tmpfs to fill up: {mount.stderr.strip() or mount.returncode}")
    try:
        with open(os.path.join(folder, "filler.bin"), "wb", buffering=0) as stream:
            with contextlib.suppress(OSError):
                while True:
                    stream.write(b"x" * 4096)
        yield
    finally:
        subprocess.run(["umount", "-l", folder], check=False)


def test_a_monitor_link_on_a_full_disk_leaves_the_outside_file_untouched(toy_registry, ymir_task, tmp_path):
    tree = ymir_task(kinds=["training"])
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n", encoding="utf-8")
    with full_disk(tree.out_dir):
        os.symlink(outside, os.path.join(tree.out_dir, "monitor.txt"))  # a link needs no data block
        assert atomic.free_bytes(tree.out_dir) < atomic.FULL_DISK_BYTES
        outcome = tree.run(toy_registry)
        assert os.path.islink(os.path.join(tree.out_dir, "monitor.txt"))
        assert temp_files(tree.out_dir) == []

    assert outcome.exit_code == 1
    assert outcome.last_stderr_line == (f"ymir-runner: error {int(ReturnCode.GENERIC)}: cannot write "
                                        f"{tree.out_dir}/monitor.txt: no space left on device")
    assert outside.read_text(encoding="utf-8") == "precious\n"
