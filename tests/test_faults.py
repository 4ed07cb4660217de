"""Fault injection: the platform's worst day, as an operator would live it (issue 10).

Every fault ends the same way for the platform: monitor.txt at state 4 with a specific code, a last stderr
line a user can act on, no temp file left in /out, and no child process outliving the run. Runs that need
signals or a full disk are real processes (``python -m ymir_runner run``) with a fault plugin installed as a
fake distribution; a full disk is a tiny tmpfs mounted on /out (skipped, with the reason, where the
machine cannot mount one).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import toy_plugin
import yaml

from ymir_runner import ExecutorSpec, OutputError, ReturnCode, TaskKind, hookimpl
from ymir_runner.dispatcher import run
from ymir_runner.errors import TaskTerminated
from ymir_runner.protocol import env as env_module
from ymir_runner.protocol.results import PREVIOUS_RUNS_DIR, TrainingResult
from ymir_runner.shutdown import StopSignals, is_running, stop_children
from ymir_runner.testing import TaskTree, cannot_run_as, make_fake_distribution, temp_files, torn_protocol_files

FAULT_PLUGIN = textwrap.dedent("""
    import multiprocessing, os, time
    import ymir_runner
    from ymir_runner import ExecutorSpec, TaskKind, atomic_path

    @ymir_runner.hookimpl
    def ymir_runner_register_executors():
        return [ExecutorSpec(name="endless", tasks={TaskKind.TRAINING}),
                ExecutorSpec(name="slow-fsync", tasks={TaskKind.TRAINING}),
                ExecutorSpec(name="big-stages", tasks={TaskKind.TRAINING}),
                ExecutorSpec(name="fill-then-publish", tasks={TaskKind.MINING, TaskKind.INFER})]

    def worker():  # stands in for a DataLoader worker: lives until it is stopped
        while True:
            time.sleep(1)

    def fill_disk(folder):
        with open(os.path.join(folder, "filler.bin"), "wb", buffering=0) as stream:
            try:
                while True:
                    stream.write(b"x" * 4096)
            except OSError:
                pass

    def endless(context):
        child = multiprocessing.get_context("fork").Process(target=worker, daemon=True)
        child.start()
        results = context.training_result
        for epoch in range(1, 60000):
            with open(os.path.join(results.stage_dir(f"epoch_{epoch}"), "weights.bin"), "wb") as stream:
                stream.write(os.urandom(4096))
            results.add_stage(f"epoch_{epoch}", ["weights.bin"], {"mAP": 0.5})
            context.progress.update(epoch / 60000, f"epoch {epoch}")
            if epoch == 3:
                print("READY", child.pid, flush=True)
            time.sleep(0.001)

    def big_stages(context):  # 1 MiB per stage until the disk is full
        results = context.training_result
        for epoch in range(1, 1000):
            with atomic_path(os.path.join(results.stage_dir(f"epoch_{epoch}"), "model.pt")) as tmp:
                with open(tmp, "wb") as stream:
                    stream.write(os.urandom(1 << 20))
            results.add_stage(f"epoch_{epoch}", ["model.pt"], {"mAP": 0.5})

    def slow_fsync(context):  # the events file on a loaded disk: every flush (an fsync) takes a minute
        from tensorboardX import record_writer
        flush = record_writer.RecordWriter.flush
        record_writer.RecordWriter.flush = lambda self: (time.sleep(60), flush(self))[1]
        context.tensorboard.add_scalar("loss", 1.0, 0)
        endless(context)

    @ymir_runner.hookimpl
    def ymir_runner_train(context):
        {"endless": endless, "slow-fsync": slow_fsync, "big-stages": big_stages}[context.executor.name](context)

    @ymir_runner.hookimpl
    def ymir_runner_mine(context):
        fill_disk(context.env.output.root_dir)
        for item in context.candidates:
            context.mining_result.add(item.image, 1.0)

    @ymir_runner.hookimpl
    def ymir_runner_infer(context):
        fill_disk(context.env.output.root_dir)
        for item in context.candidates:
            context.infer_result.add_empty(item.image)
""")


@pytest.fixture
def fault_run(tmp_path):
    """``fault_run(executor, kinds)`` → (tree, start): ``start()`` launches ``ymir-runner run`` on the tree."""
    site = str(tmp_path / "site")
    make_fake_distribution(site, dist_name="ymir-faults", module="ymir_faults_mod", source=FAULT_PLUGIN,
                           entry_point="faults")
    env = dict(os.environ, PYTHONPATH=site)

    def make(executor: str, kinds=("training",)):
        tree = TaskTree(str(tmp_path / "task"), kinds=kinds, config={"plugin": executor})

        def start() -> subprocess.Popen:
            return subprocess.Popen(
                tree.command(),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

        return tree, start

    return make


@pytest.fixture
def tiny_out():
    """``tiny_out(tree, size)`` mounts a tmpfs of ``size`` on the tree's /out (a disk that fills up)."""
    mounted = []

    def mount(tree: TaskTree, size: str) -> str:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", tree.out_dir],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs to fill up: {done.stderr.strip() or done.returncode}")
        mounted.append(tree.out_dir)
        return tree.out_dir

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", folder], check=False)


def test_torn_protocol_files_are_reported(tmp_path):
    out = tmp_path / "out"
    (out / "models" / "epoch_1").mkdir(parents=True)
    (out / "monitor.txt").write_text("t1\t1700000000.000\t0.5", encoding="utf-8")  # cut before the state
    (out / "models" / "result.yaml").write_text(yaml.safe_dump({
        "best_stage_name": "epoch_1", "model_stages": {"epoch_1": {"files": ["model.pt"]}}}), encoding="utf-8")
    (out / "result.tsv").write_text("/in/a.png\t0.5\n/in/b.png\t0.", encoding="utf-8")
    (out / "infer-result.json").write_text('{"detection": {"a.png": ', encoding="utf-8")
    problems = torn_protocol_files(str(out))
    assert [problem.split(":")[0] for problem in problems] == [
        "monitor.txt", "models/result.yaml", "infer-result.json"]  # "0." still parses as a float
    (out / "monitor.txt").write_text("t1\t1700000000.000\t0.5000\t4\t160004\n", encoding="utf-8")
    (out / "models" / "epoch_1" / "model.pt").write_bytes(b"weights")
    (out / "infer-result.json").write_text('{"detection": {}}', encoding="utf-8")
    assert torn_protocol_files(str(out)) == []


# --- stop signals ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("signals, exit_code, line", [
    ([signal.SIGTERM], 143, "the task was stopped (SIGTERM)"),
    ([signal.SIGTERM, signal.SIGTERM], 143, "the task was stopped (SIGTERM)"),  # the platform's, then docker's
    ([signal.SIGTERM] * 6, 143, "the task was stopped (SIGTERM)"),              # an impatient operator
    ([signal.SIGINT], 130, "the task was interrupted (SIGINT)"),
    ([signal.SIGINT, signal.SIGTERM, signal.SIGINT], 130, "the task was interrupted (SIGINT)"),
])
def test_stop_signals_50_ms_apart_end_in_state_4_with_children_stopped(fault_run, signals, exit_code, line):
    tree, start = fault_run("endless")
    process = start()
    ready = process.stdout.readline().split()
    assert ready[:1] == ["READY"], process.stderr.read()
    child = int(ready[1])
    for signum in signals:
        process.send_signal(signum)
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == exit_code, stderr[-2000:]
    outcome = tree.outcome(process.returncode, stderr)
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.GENERIC)
    assert stderr.strip().splitlines()[-1] == f"ymir-runner: error {int(ReturnCode.GENERIC)}: {line}"
    assert "Traceback" not in stderr
    assert not is_running(child), "the run's child process outlived it"
    assert temp_files(tree.out_dir) == []
    with open(os.path.join(tree.out_dir, "models", "result.yaml"), encoding="utf-8") as stream:
        assert len(yaml.safe_load(stream)["model_stages"]) >= 3  # what was committed before stays valid


def test_a_stop_ends_the_process_within_docker_stops_10_s_when_tensorboard_cannot_close(fault_run):
    """``docker stop`` sends SIGKILL 10 s after SIGTERM (exit 137, no error line). A slow events file close
    (tensorboardX fsyncs it, and again in its exit handler) must not take the run past that."""
    tree, start = fault_run("slow-fsync")
    process = start()
    assert process.stdout.readline().split()[:1] == ["READY"], process.stderr.read()
    process.send_signal(signal.SIGTERM)
    stopped = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    took = time.monotonic() - stopped

    assert process.returncode == 143, stderr[-2000:]
    assert took < 10, f"the stopped run took {took:.1f} s to exit"
    outcome = tree.outcome(process.returncode, stderr)
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.GENERIC)
    lines = stderr.strip().splitlines()
    assert lines[-1] == f"ymir-runner: error {int(ReturnCode.GENERIC)}: the task was stopped (SIGTERM)"
    assert "closing the events file took more than 2 s" in lines[-2], lines[-3:]


@pytest.mark.parametrize("code, exit_code, printed", [(143, 143, ""), (0, 5, "exit handler ran")])
def test_the_executable_ends_at_a_failed_runs_last_line_without_exit_handlers(code, exit_code, printed):
    """What `ymir-runner run` and `sdk-run` do last: a library's exit handler may not run after a failed run."""
    script = textwrap.dedent(f"""
        import atexit, sys
        from ymir_runner.shutdown import exit_after_failed_run, run_ends_process
        atexit.register(lambda: print("exit handler ran", flush=True))
        run_ends_process({code})
        exit_after_failed_run()
        sys.exit(5)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (exit_code, printed), done.stderr


def test_a_stop_while_plugins_load_is_reported_by_the_run(fault_run, tmp_path):
    """The platform may stop a task in its first second: plugins are still being imported."""
    site = str(tmp_path / "site")
    make_fake_distribution(site, dist_name="ymir-slow-import", module="ymir_slow_mod", entry_point="slow",
                           source="import time\nprint('LOADING', flush=True)\ntime.sleep(5)\n")
    tree, start = fault_run("endless")
    process = start()
    assert process.stdout.readline().strip() == "LOADING", process.stderr.read()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 143, stderr[-2000:]
    outcome = tree.outcome(process.returncode, stderr)
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.GENERIC)
    assert stderr.strip().splitlines()[-1] == (f"ymir-runner: error {int(ReturnCode.GENERIC)}: "
                                               f"the task was stopped (SIGTERM)")
    assert "stage" not in stderr  # stopped before the executor ran


def test_stop_signals_after_the_first_are_ignored_until_the_block_ends():
    previous = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        with pytest.raises(TaskTerminated, match=r"stopped \(SIGTERM\)") as stopped:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs on the next bytecode; this sleep is interrupted
        assert stopped.value.signum == signal.SIGTERM and stop.held
        os.kill(os.getpid(), signal.SIGTERM)  # the error path: further stops are no-ops
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is previous


class Swallower:
    """A training plugin whose code, like many libraries, catches every Exception around its work."""

    @hookimpl
    def ymir_runner_register_executors(self):
        return [ExecutorSpec(name="swallower", tasks={TaskKind.TRAINING})]

    @hookimpl
    def ymir_runner_train(self, context):
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # the platform stops the task while an image decodes
            time.sleep(2)
        except Exception:  # "a bad image is skipped"
            pass
        folder = context.training_result.stage_dir("epoch_1")
        with open(os.path.join(folder, "model.bin"), "wb") as stream:
            stream.write(b"weights")
        context.training_result.add_stage("epoch_1", ["model.bin"], {"mAP": 0.5})


def test_an_except_exception_cannot_swallow_a_stop(ymir_registry, ymir_task):
    ymir_registry.register(Swallower(), "swallower")
    outcome = ymir_task(kinds=["training"]).run(ymir_registry)
    assert outcome.exit_code == 143
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.GENERIC)
    assert outcome.last_stderr_line.endswith("the task was stopped (SIGTERM)")
    assert not os.path.exists(os.path.join(outcome.out_dir, "models", "result.yaml"))


def test_a_stop_is_reported_over_the_error_it_caused():
    """SIGTERM to the process group: torch may report its killed DataLoader worker first."""
    with StopSignals() as stop:
        stop.hold()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        worker_killed = RuntimeError("DataLoader worker (pid 7) is killed by signal: Terminated.")
        reported = stop.cause(worker_killed)
    assert isinstance(reported, TaskTerminated) and reported.__context__ is worker_killed
    with StopSignals() as stop:
        other = ValueError("a bug")
        assert stop.cause(other) is other  # no stop signal: the error is the reason


def test_stopping_children_spares_those_from_before_the_run():
    before = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    during = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert stop_children(spare={before.pid}) == 1
        assert during.wait(timeout=10) == -signal.SIGTERM
        assert before.poll() is None
    finally:
        before.kill()
        during.kill()
        before.wait()


# --- a full disk ----------------------------------------------------------------------------------------------

def test_disk_full_while_saving_a_stage_names_the_file(fault_run, tiny_out):
    tree, start = fault_run("big-stages")
    tiny_out(tree, "3m")
    process = start()
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 1
    outcome = tree.outcome(process.returncode, stderr)
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.GENERIC)
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"ymir-runner: error {int(ReturnCode.GENERIC)}: cannot write "), last
    assert "/models/epoch_" in last and last.endswith("model.pt: no space left on device")
    assert temp_files(tree.out_dir) == []
    with open(os.path.join(tree.out_dir, "models", "result.yaml"), encoding="utf-8") as stream:
        stages = yaml.safe_load(stream)["model_stages"]
    assert stages and all(os.path.getsize(os.path.join(tree.out_dir, "models", name, "model.pt")) == 1 << 20
                          for name in stages)


@pytest.mark.parametrize("kind, name", [("mining", "result.tsv"), ("infer", "infer-result.json")])
def test_disk_full_while_publishing_results_names_the_file(fault_run, tiny_out, kind, name):
    tree, start = fault_run("fill-then-publish", kinds=(kind,))
    tiny_out(tree, "1m")
    process = start()
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 1, stderr[-2000:]
    outcome = tree.outcome(process.returncode, stderr)  # monitor.txt written in place: no room for a temp file
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.GENERIC)
    assert stderr.strip().splitlines()[-1] == (f"ymir-runner: error {int(ReturnCode.GENERIC)}: cannot write "
                                               f"{tree.out_dir}/{name}: no space left on device")
    assert not os.path.exists(os.path.join(tree.out_dir, name))
    assert temp_files(tree.out_dir) == []


# --- leftovers of an earlier run --------------------------------------------------------------------------------

@pytest.fixture
def toy_registry(ymir_registry):
    ymir_registry.register(toy_plugin, "toy")
    return ymir_registry


def test_results_of_an_earlier_run_are_moved_aside_before_a_failing_run(toy_registry, ymir_task):
    tree = ymir_task(kinds=["training"])
    earlier = tree.run(toy_registry).result_yaml()
    for name, text in (("result.tsv", "/in/assets/a.png\t1.0\n"), ("infer-result.json", '{"detection": {}}')):
        with open(os.path.join(tree.out_dir, name), "w", encoding="utf-8") as stream:
            stream.write(text)
    tree.config["gpu_id"] = "zero"  # now a 300001 before any plugin runs
    tree.write_config()
    killed_writes = [os.path.join(tree.out_dir, ".tmp-k2j4-monitor.txt"),
                     os.path.join(tree.out_dir, "models", "epoch_2", ".tmp-x8a1-model.json")]
    for path in killed_writes:
        with open(path, "w", encoding="utf-8") as stream:
            stream.write("half a fi")

    outcome = tree.run(toy_registry)
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.CONFIG)
    for published in ("models/result.yaml", "result.tsv", "infer-result.json"):
        assert not os.path.exists(os.path.join(tree.out_dir, published)), published
    assert os.listdir(os.path.join(tree.out_dir, "models")) == []
    (moved,) = [line for line in outcome.stderr.splitlines() if "results of an earlier run" in line]
    folder = moved.rsplit("moved to ", 1)[1].split(" (")[0]
    assert os.path.dirname(folder) == os.path.join(tree.out_dir, PREVIOUS_RUNS_DIR)
    with open(os.path.join(folder, "models", "result.yaml"), encoding="utf-8") as stream:
        assert yaml.safe_load(stream) == earlier
    assert sorted(os.listdir(folder)) == ["infer-result.json", "models", "result.tsv"]
    assert temp_files(tree.out_dir) == []  # the writes a SIGKILL cut short are gone too


@pytest.mark.parametrize("folder, warning", [
    ("models", "results of an earlier run were in"),  # moved aside with the earlier run's results
    ("tensorboard", "tensorboard is switched off for this run"),  # one warning, the run goes on
])
def test_a_file_where_an_out_folder_belongs(toy_registry, ymir_task, folder, warning):
    tree = ymir_task(kinds=["training"])
    with open(os.path.join(tree.out_dir, folder), "w", encoding="utf-8") as stream:
        stream.write("not a folder")
    outcome = tree.run(toy_registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stderr.count(warning) == 1
    assert outcome.result_yaml()["model_stages"]


def test_a_stage_folder_that_cannot_be_created_is_named(tmp_path):
    (tmp_path / "models").write_text("not a folder", encoding="utf-8")
    results = TrainingResult(str(tmp_path / "models"), str(tmp_path / "models" / "result.yaml"))
    with pytest.raises(OutputError, match=f"cannot create {tmp_path}/models/epoch_1: not a directory"):
        results.stage_dir("epoch_1")


# --- tensorboard never fails a task ------------------------------------------------------------------------------

def test_a_dangling_tensorboard_link_gets_its_target(toy_registry, ymir_task, tmp_path):
    tree = ymir_task(kinds=["training"])
    target = tmp_path / "mounted" / "tensorboard"  # the platform's per-task folder, not created yet
    os.symlink(target, os.path.join(tree.out_dir, "tensorboard"))
    outcome = tree.run(toy_registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert os.path.islink(os.path.join(tree.out_dir, "tensorboard"))
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(target))


def test_tensorboard_on_a_nearly_full_device_is_switched_off_before_it_hangs(toy_registry, ymir_task, tmp_path):
    """The platform mounts /out/tensorboard separately; tensorboardX's writer thread dies on a full disk and
    its next call would wait forever."""
    mounted = tmp_path / "tensorboard-mount"
    mounted.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mounted)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs to fill up: {done.stderr.strip() or done.returncode}")
    try:
        tree = ymir_task(kinds=["training"])
        os.symlink(mounted, os.path.join(tree.out_dir, "tensorboard"))
        outcome = tree.run(toy_registry)
        assert outcome.exit_code == 0, outcome.stderr
        assert outcome.stderr.count("tensorboard is switched off for this run") == 1
        assert "less than 16 MiB left on its device" in outcome.stderr
    finally:
        subprocess.run(["umount", "-l", str(mounted)], check=False)


CANNOT_RUN_AS_NOBODY = cannot_run_as(65534)


def run_as_nobody(shared: str, tree: TaskTree) -> subprocess.CompletedProcess:
    """``ymir-runner run`` with the toy plugin as uid 65534 (``docker run --user``) on a tree under ``shared``."""
    site = os.path.join(shared, "site")
    make_fake_distribution(site, dist_name="ymir-toy", module="toy_plugin_copy",
                           source=open(toy_plugin.__file__, encoding="utf-8").read(), entry_point="toy")
    os.chmod(tree.out_dir, 0o777)
    for path, folders, files in os.walk(shared):
        for name in folders + files:
            os.chmod(os.path.join(path, name), os.stat(os.path.join(path, name)).st_mode | 0o005)
    return subprocess.run(tree.command(),
                          capture_output=True, text=True, user=65534, group=65534, timeout=120,
                          env=dict(os.environ, PYTHONPATH=site, HOME="/nonexistent"))


@pytest.mark.skipif(bool(CANNOT_RUN_AS_NOBODY), reason=str(CANNOT_RUN_AS_NOBODY))
def test_a_root_owned_tensorboard_folder_and_another_uid(ymir_shared_tmp):
    """``docker run --user 1000:1000`` with /out writable and /out/tensorboard created by a root platform."""
    tree = TaskTree(os.path.join(ymir_shared_tmp, "task"), kinds=["training"])
    os.makedirs(os.path.join(tree.out_dir, "tensorboard"), mode=0o755)
    done = run_as_nobody(ymir_shared_tmp, tree)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "tensorboard is switched off for this run" in done.stderr
    assert "Permission denied" in done.stderr


@pytest.mark.skipif(bool(CANNOT_RUN_AS_NOBODY), reason=str(CANNOT_RUN_AS_NOBODY))
def test_an_earlier_result_that_cannot_be_moved_stops_the_task(ymir_shared_tmp):
    tree = TaskTree(os.path.join(ymir_shared_tmp, "task"), kinds=["training"])
    models = os.path.join(tree.out_dir, "models")
    os.makedirs(models, mode=0o755)  # root's, as a root platform or an earlier root run left it
    with open(os.path.join(models, "result.yaml"), "w", encoding="utf-8") as stream:
        stream.write("best_stage_name: old\nmodel_stages: {old: {stage_name: old, files: [m], timestamp: 1}}\n")
    done = run_as_nobody(ymir_shared_tmp, tree)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (  # never deleted (tests/test_out_safety.py)
        f"ymir-runner: error {int(ReturnCode.GENERIC)}: cannot move {models}/result.yaml of an earlier run aside "
        f"to {tree.out_dir}/{PREVIOUS_RUNS_DIR} (Permission denied): it is left as it was and this task stops "
        f"before it would publish it as its own or write over it; move it out of {tree.out_dir} or run on a new "
        f"tree")
    assert os.path.isfile(os.path.join(models, "result.yaml"))
    outcome = tree.outcome(done.returncode, done.stderr)
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.GENERIC)
    assert not os.path.exists(os.path.join(tree.out_dir, PREVIOUS_RUNS_DIR))  # no empty folder left behind


# --- env.yaml -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, value", [
    ("run_training", [1, 2]), ("protocol_version", "abc"), ("input", "x")])
def test_a_bad_env_yaml_still_writes_state_4(toy_registry, ymir_task, key, value):
    tree = ymir_task(kinds=["training"])
    with open(tree.env_file, encoding="utf-8") as stream:
        env = yaml.safe_load(stream)
    env[key] = value
    with open(tree.env_file, "w", encoding="utf-8") as stream:
        yaml.safe_dump(env, stream)
    outcome = tree.run(toy_registry)
    assert outcome.exit_code == 1
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.CONFIG)
    assert outcome.monitor_fields[0] == "t-test"
    assert key in outcome.last_stderr_line


def test_env_yaml_without_output_on_a_host_is_a_config_error(toy_registry, monkeypatch, tmp_path, capsys):
    out = tmp_path / "out"  # stands for the container's /out, absent on this host
    monkeypatch.setattr(env_module, "CONTAINER_OUT_DIR", str(out))
    env_file = tmp_path / "env.yaml"
    env_file.write_text("task_id: t-host\nrun_training: true\n", encoding="utf-8")

    assert run(str(env_file), registry=toy_registry) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"ymir-runner: error {int(ReturnCode.CONFIG)}: env.yaml has no output section and {out} does not exist "
        f"(this is not the platform's container): give the output paths, or run with --root DIR")
    assert not out.exists()


def test_env_yaml_values_read_with_a_guess_are_warned(toy_registry, ymir_task):
    tree = ymir_task(kinds=["training"])
    with open(tree.env_file, encoding="utf-8") as stream:
        env = yaml.safe_load(stream)
    env.update(run_training="yes", protocol_version="9.9.9")
    del env["task_id"]
    del env["output"]["models_dir"]
    with open(tree.env_file, "w", encoding="utf-8") as stream:
        yaml.safe_dump(env, stream)
    outcome = tree.run(toy_registry)
    assert outcome.exit_code == 0, outcome.stderr
    warnings = [line.split(": ", 1)[1] for line in outcome.stderr.splitlines() if " WARNING " in line]
    assert "env.yaml: run_training is 'yes', not a boolean; read as true" in warnings
    assert ("env.yaml: protocol_version 9.9.9 is newer than this ymir-runner knows: outputs follow protocol "
            "1.1.0") in warnings
    assert "env.yaml has no task_id: monitor.txt names the task 'default-task'" in warnings
    assert f"env.yaml has output without models_dir: using models_dir {tree.out_dir}/models" in warnings


def test_a_task_id_with_a_tab_still_gives_a_parseable_monitor_line(toy_registry, ymir_task):
    tree = ymir_task(kinds=["training"])
    with open(tree.env_file, encoding="utf-8") as stream:
        env = yaml.safe_load(stream)
    env["task_id"] = "t\t1"
    with open(tree.env_file, "w", encoding="utf-8") as stream:
        yaml.safe_dump(env, stream)
    outcome = tree.run(toy_registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.monitor_fields[0] == "t 1" and len(outcome.monitor_fields) == 5
    assert "task_id 't\\t1' holds a TAB or line break" in outcome.stderr


# --- the command line's own output -------------------------------------------------------------------------------

def test_a_run_with_stdout_closed_succeeds(tmp_path):
    tree = TaskTree(str(tmp_path / "task"), kinds=["training"])
    site = str(tmp_path / "site")
    make_fake_distribution(site, dist_name="ymir-toy", module="toy_plugin_copy",
                           source=open(toy_plugin.__file__, encoding="utf-8").read(), entry_point="toy")
    done = subprocess.run(f"exec {sys.executable} -m ymir_runner run --env {tree.env_file} --root {tree.root} >&-",
                          shell=True, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=site))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_plugins_into_a_full_device_is_one_line():
    done = subprocess.run(f"exec {sys.executable} -m ymir_runner plugins > /dev/full", shell=True,
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr == "ymir-runner: cannot write the output: No space left on device\n"


def test_a_monitor_path_that_cannot_be_written_is_named(toy_registry, ymir_task):
    tree = ymir_task(kinds=["training"])
    os.makedirs(os.path.join(tree.out_dir, "monitor.txt"))
    outcome = tree.run(toy_registry)
    assert outcome.exit_code == 1
    assert outcome.last_stderr_line == (f"ymir-runner: error {int(ReturnCode.GENERIC)}: cannot write "
                                        f"{tree.out_dir}/monitor.txt: is a directory")
    assert "Traceback" not in outcome.stderr
