"""Killed and stopped runs: SIGTERM → state 4 + code; SIGKILL at any moment never leaves a torn file."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from ymir_runner import ReturnCode
from ymir_runner.testing import RunOutcome, TaskTree, make_fake_distribution, torn_protocol_files

# A plugin that keeps training (and writing stages and progress) until it is stopped, at most ~60 s.
ENDLESS_PLUGIN = textwrap.dedent("""
    import os, time
    import ymir_runner
    from ymir_runner import ExecutorSpec, TaskKind

    @ymir_runner.hookimpl
    def ymir_runner_register_executors():
        return [ExecutorSpec(name="endless", tasks={TaskKind.TRAINING})]

    @ymir_runner.hookimpl
    def ymir_runner_train(context):
        results = context.training_result
        deadline = time.time() + 60
        epoch = 0
        while time.time() < deadline:
            epoch += 1
            folder = results.stage_dir(f"epoch_{epoch}")
            with open(os.path.join(folder, "weights.bin"), "wb") as stream:
                stream.write(os.urandom(4096))
            results.add_stage(f"epoch_{epoch}", ["weights.bin"], {"mAP": (epoch % 7) / 7, "mAR": 0.5})
            context.progress.update(min(epoch / 100000, 0.99), f"epoch {epoch}")
            if epoch == 3:
                print("READY", flush=True)
            time.sleep(0.001)
""")

# Hammers the writers directly: monitor writes without throttling, a stage every iteration.
WRITER_LOOP = textwrap.dedent("""
    import os, sys
    from ymir_runner.protocol.monitor import Monitor
    from ymir_runner.protocol.results import TrainingResult
    out = sys.argv[1]
    monitor = Monitor(os.path.join(out, "monitor.txt"), "t-kill", min_interval=0)
    results = TrainingResult(os.path.join(out, "models"), os.path.join(out, "models", "result.yaml"))
    monitor.start()
    print("READY", flush=True)
    step = 0
    while True:
        step += 1
        name = f"epoch_{step}"
        with open(os.path.join(results.stage_dir(name), "model.bin"), "wb") as stream:
            stream.write(b"x" * 1024)
        results.add_stage(name, ["model.bin"], {"mAP": (step % 13) / 13})
        monitor.update(min(step / 1e6, 1.0), f"step {step}")
""")


def stages_of(out_dir):
    """The model stages result.yaml lists (0 without result.yaml), once nothing in ``out_dir`` is torn."""
    assert torn_protocol_files(out_dir) == []
    path = os.path.join(out_dir, "models", "result.yaml")
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as stream:
        stages = yaml.safe_load(stream)["model_stages"]
    assert 1 <= len(stages) <= 11
    return len(stages)


@pytest.fixture
def endless_task(tmp_path):
    site = str(tmp_path / "site")
    make_fake_distribution(site, dist_name="ymir-endless", module="ymir_endless_mod", source=ENDLESS_PLUGIN,
                           entry_point="endless")
    tree = TaskTree(str(tmp_path / "task"))
    env = dict(os.environ, PYTHONPATH=site)

    def start():
        return subprocess.Popen(
            tree.command(),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    return tree, start


def wait_ready(process):
    line = process.stdout.readline()
    assert line.strip() == "READY", process.stderr.read()


def test_sigterm_writes_state_4_and_exits_non_zero(endless_task):
    tree, start = endless_task
    process = start()
    wait_ready(process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    outcome = tree.outcome(process.returncode, stderr)
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.GENERIC)
    assert stderr.strip().splitlines()[-1] == f"ymir-runner: error {int(ReturnCode.GENERIC)}: " \
                                              "the task was stopped (SIGTERM)"
    assert stages_of(tree.out_dir) >= 3  # the stages written before the stop are still usable
    assert not [name for name in os.listdir(tree.out_dir) if name.startswith(".tmp-")]


def test_sigkill_during_a_run_never_leaves_torn_files(endless_task):
    tree, start = endless_task
    rng = random.Random(7)
    for _ in range(4):
        process = start()
        wait_ready(process)
        time.sleep(rng.uniform(0.0, 0.6))
        process.kill()
        process.communicate()
        assert stages_of(tree.out_dir) >= 1


def test_sigkill_while_hammering_the_writers(tmp_path):
    rng = random.Random(11)
    for attempt in range(12):
        out = tmp_path / f"out{attempt}"
        out.mkdir()
        process = subprocess.Popen([sys.executable, "-c", WRITER_LOOP, str(out)], stdout=subprocess.PIPE,
                                   text=True)
        assert process.stdout.readline().strip() == "READY"
        time.sleep(rng.uniform(0.0, 0.4))
        process.kill()
        process.communicate()
        stages_of(str(out))
        assert RunOutcome(-9, "", str(out), "").state == 2
