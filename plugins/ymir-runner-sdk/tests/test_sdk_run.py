"""``ymir-runner sdk-run`` on legacy executors written against a fake ymir_exc (tests/fake_sdk: the SDK's file
behaviours only): demo-like, yolov5-like and mmdet-like apps, each run checked as the platform would see it."""

from __future__ import annotations

import json
import os

import pytest
from sdk_helpers import legacy_command, make_site, sdk_run, terminate_when

from ymir_runner.testing import TaskTree, is_running
from ymir_runner_sdk.supervisor import RUNNING_CEILING


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    return make_site(tmp_path_factory.mktemp("site"))


def assert_published_monitor(observed):
    """What the platform polled: never an empty file, never a lower percent."""
    assert observed.snapshots, "monitor.txt was never seen"
    assert "" not in observed.snapshots, "an empty monitor.txt was published"
    percents = observed.percents
    assert percents == sorted(percents), f"progress went down: {percents}"


#: Seconds per step of the apps: longer than the supervisor's poll interval, as an epoch is (a write replaced before
#: the next poll is never seen: docs/sdk-run.md).
STEP = {"sleep": 0.3}


def test_demo_training_publishes_every_stage_and_a_monotonic_monitor(tmp_path, site):
    tree = TaskTree(str(tmp_path / "t"), config={**STEP, "linger": 1.5})
    observed = sdk_run(tree, legacy_command("demo"), site)
    outcome = observed.outcome
    assert outcome.exit_code == 0, outcome.stderr
    report = outcome.verify()
    assert report.ok, report.to_text()
    assert_published_monitor(observed)
    assert outcome.percent == 1.0 and outcome.state == 2
    # the demo reports 1.0 before it exits: published as 0.9999 until the command exited 0
    assert RUNNING_CEILING in observed.percents
    result = outcome.result_yaml()
    assert set(result["model_stages"]) == {"epoch_1", "epoch_2"}
    assert result["best_stage_name"] == "epoch_2"
    assert "map" not in result and "mAP" not in result  # the SDK's top-level metric is not republished
    assert "progress went back from" in outcome.stderr
    # the staging files sit beside the published ones, dot-named
    assert os.path.exists(os.path.join(tree.out_dir, "models", ".result.yaml"))
    assert os.path.exists(os.path.join(tree.out_dir, ".monitor.txt"))


def test_demo_mining_and_inference_check_and_clip_the_results(tmp_path, site):
    tree = TaskTree(str(tmp_path / "t"), kinds=("mining", "infer"), config={**STEP, "linger": 1.5})
    observed = sdk_run(tree, legacy_command("demo"), site)
    outcome = observed.outcome
    assert outcome.exit_code == 0, outcome.stderr
    report = outcome.verify()
    assert report.ok, report.to_text()
    assert_published_monitor(observed)
    # the demo reports 0 to 1 in mining, then 0 to 1 again: 1.0 is published once the command exited 0
    assert RUNNING_CEILING in observed.percents
    scores = outcome.result_tsv()
    assert [path for path, _ in scores] == list(reversed(tree.images))  # highest first, container paths
    width, height = tree.size
    boxes = [box for entry in outcome.infer_result()["detection"].values() for box in entry["boxes"]]
    assert len(boxes) == 2 * len(tree.images)
    for box in boxes:
        x, y, w, h = (box["box"][key] for key in "xywh")
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height, box
    assert "reached outside their image: clipped" in outcome.stderr
    # a box of a class not in class_names: skipped, counted and named in the task's summary
    assert f"{len(tree.images)} inference box of a class not in class_names" in outcome.stderr


@pytest.mark.parametrize("line", ["1.1", "1.1-pypi", "1.3"])
def test_older_sdk_lines_are_converted_to_stages(tmp_path, site, line):
    """1.1-pypi reads /in/env.yaml whatever $DEFAULT_ENV_FILE_PATH says (there is no /in here: --root): sdk-run's
    import hook points it at the staged env.yaml."""
    tree = TaskTree(str(tmp_path / "t"), config=STEP)
    observed = sdk_run(tree, legacy_command("demo", line=line), site)
    outcome = observed.outcome
    assert outcome.exit_code == 0, outcome.stderr
    report = outcome.verify()
    assert report.ok, report.to_text()
    assert_published_monitor(observed)
    result = outcome.result_yaml()
    assert "model" not in result and "map" not in result
    stages = result["model_stages"]
    assert len(stages) == 2
    best = stages[result["best_stage_name"]]
    assert best["mAP"] == pytest.approx(0.5)
    folder = os.path.join(tree.out_dir, "models", result["best_stage_name"])
    assert all(os.path.isfile(os.path.join(folder, name)) or
               os.path.isfile(os.path.join(tree.out_dir, "models", name)) for name in best["files"])


def test_a_crash_fails_with_160004_and_the_apps_exception_last(tmp_path, site):
    tree = TaskTree(str(tmp_path / "t"), config={**STEP, "crash": "training"})
    observed = sdk_run(tree, legacy_command("demo"), site)
    outcome = observed.outcome
    assert outcome.exit_code == 1
    assert (outcome.state, outcome.return_code) == (4, 160004)
    assert "RuntimeError: demo crash after epoch 1" in outcome.last_stderr_line
    assert outcome.last_stderr_line.startswith("ymir-runner: error 160004: RuntimeError: demo crash")
    report = outcome.verify()
    assert report.ok, report.to_text()
    # the stage written before the crash is published: the platform keeps it
    assert list(outcome.result_yaml()["model_stages"]) == ["epoch_1"]
    assert "" not in observed.snapshots


def test_yolov5_like_stages_snapshot_the_files_it_overwrites(tmp_path, site):
    tree = TaskTree(str(tmp_path / "t"), config=STEP)
    observed = sdk_run(tree, legacy_command("yolov5"), site)
    outcome = observed.outcome
    assert outcome.exit_code == 0, outcome.stderr
    report = outcome.verify()
    assert report.ok, report.to_text()
    assert_published_monitor(observed)
    stages = outcome.result_yaml()["model_stages"]
    assert set(stages) == {"epoch_1", "epoch_2", "epoch_3"}
    for epoch in (1, 2, 3):
        assert sorted(stages[f"epoch_{epoch}"]["files"]) == ["best.pt", "last.pt"]  # files=[]: the SDK's glob
        with open(os.path.join(tree.out_dir, "models", f"epoch_{epoch}", "best.pt")) as stream:
            assert stream.read() == f"best.pt of epoch {epoch}\n"  # the file as it was when the stage was written


@pytest.mark.parametrize(("message", "code"), [
    ("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)", 300103),
    ("CUDA error: invalid device ordinal", 300101),
])
def test_a_known_failure_in_the_grandchild_gets_its_code(tmp_path, site, message, code):
    tree = TaskTree(str(tmp_path / "t"), config={"fail_with": message})
    outcome = sdk_run(tree, legacy_command("yolov5"), site).outcome
    assert outcome.exit_code == 1
    assert (outcome.state, outcome.return_code) == (4, code)
    # the grandchild's line, though start.py's CalledProcessError traceback came after it
    assert message in outcome.last_stderr_line
    report = outcome.verify()
    assert report.ok, report.to_text()


def test_the_executors_own_state_4_code_wins(tmp_path, site):
    tree = TaskTree(str(tmp_path / "t"), config={"report_error": 300002})
    outcome = sdk_run(tree, legacy_command("demo"), site).outcome
    assert outcome.exit_code == 1
    assert (outcome.state, outcome.return_code) == (4, 300002)
    assert "demo: the dataset is unusable" in outcome.last_stderr_line
    assert "reported error 300002" in outcome.last_stderr_line


def test_sigterm_stops_the_whole_tree(tmp_path, site):
    pid_file = str(tmp_path / "train.pid")
    tree = TaskTree(str(tmp_path / "t"), config={"sleep": 30, "pid_file": pid_file, "epochs": 2})
    observed = sdk_run(tree, legacy_command("yolov5"), site, while_running=terminate_when(pid_file))
    outcome = observed.outcome
    assert outcome.exit_code == 143, outcome.stderr
    assert (outcome.state, outcome.return_code) == (4, 160004)
    assert "SIGTERM" in outcome.last_stderr_line
    with open(pid_file) as stream:
        grandchild = int(stream.read())
    assert not is_running(grandchild), "train.py outlived the run"
    report = outcome.verify()
    assert report.ok, report.to_text()


def test_an_orphan_the_command_leaves_running_is_found_and_stopped(tmp_path, site):
    pid_file = str(tmp_path / "train.pid")
    tree = TaskTree(str(tmp_path / "t"), config={"detach": True, "sleep": 30, "pid_file": pid_file})
    outcome = sdk_run(tree, legacy_command("yolov5"), site).outcome
    with open(pid_file) as stream:
        orphan = int(stream.read())
    assert not is_running(orphan), "train.py, in a session of its own, outlived the run"
    assert "the command exited leaving 1 processes of its own running: stopped them" in outcome.stderr
    report = outcome.verify()  # exit 0 when train.py had written its first stage by then, else 160004
    assert report.ok, report.to_text()


def test_mmdet_like_result_yaml_written_directly_is_ingested(tmp_path, site):
    tree = TaskTree(str(tmp_path / "t"))
    observed = sdk_run(tree, legacy_command("mmdet"), site)
    outcome = observed.outcome
    assert outcome.exit_code == 0, outcome.stderr
    report = outcome.verify()
    assert report.ok, report.to_text()
    assert_published_monitor(observed)
    result = outcome.result_yaml()
    assert set(result["model_stages"]) == {"epoch_1", "epoch_2"}
    assert result["best_stage_name"] == "epoch_2"
    with open(os.path.join(tree.out_dir, "models", "epoch_1", "epoch_1.pth")) as stream:
        assert stream.read() == "checkpoint 1\n"
    assert "wrote" in outcome.stderr and "itself" in outcome.stderr


def test_a_reused_out_is_moved_aside_and_a_crashed_rerun_keeps_none_of_it(tmp_path, site):
    tree = TaskTree(str(tmp_path / "t"), config=STEP)
    first = sdk_run(tree, legacy_command("demo"), site).outcome
    assert first.exit_code == 0, first.stderr
    tree.config["crash"] = "training"
    tree.write_config()
    second = sdk_run(tree, legacy_command("demo"), site).outcome
    assert second.exit_code == 1
    assert "moved to" in second.stderr
    previous = os.listdir(os.path.join(tree.out_dir, "previous-runs"))
    assert len(previous) == 1
    result = second.result_yaml()
    assert list(result["model_stages"]) == ["epoch_1"]  # not the first run's epoch_2 (its best model)
    report = second.verify()
    assert report.ok, report.to_text()


def test_without_root_on_a_local_tree(tmp_path, site):
    from ymir_runner.testing import write_task_files

    tree = TaskTree(str(tmp_path / "t"), kinds=("mining", "infer"))
    # the same tree described with local paths: no --root
    env_file = write_task_files(tree.root, ("mining", "infer"), {"class_names": ["cat", "dog"]})
    for name in ("candidate-index.tsv",):
        path = os.path.join(tree.root, "in", name)
        with open(path) as stream:
            lines = [tree.local(line.strip()) + "\n" for line in stream if line.strip()]
        with open(path, "w") as stream:
            stream.writelines(lines)
    assert env_file == tree.env_file
    observed = sdk_run(tree, legacy_command("demo"), site, root=False)
    outcome = observed.outcome
    assert outcome.exit_code == 0, outcome.stderr
    report = outcome.verify()
    assert report.ok, report.to_text()
    assert len(json.loads(open(os.path.join(tree.out_dir, "infer-result.json")).read())["detection"]) == 4


def test_the_local_loop_of_the_docs_sandbox_template_sdk_run_verify(tmp_path, site):
    """docs/sdk-run.md's loop without docker: sandbox with the image's own template, sdk-run, verify."""
    import subprocess
    import sys

    import yaml
    from sdk_helpers import APPS, CORE, PLUGIN, WorkTree

    from ymir_runner.testing import voc_text, write_png

    source = tmp_path / "voc"
    for index in range(4):
        write_png(str(source / f"{index}.png"), 40, 30)
        (source / f"{index}.xml").write_text(voc_text(f"{index}.png", (40, 30), [(index % 2, 5, 5, 20, 20)],
                                                      ["cat", "dog"]))
    work = tmp_path / "work"
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join([site, str(CORE), str(PLUGIN)]),
                   YMIR_RUNNER_DISABLE_PLUGINS="detection")
    template = APPS / "demo" / "img-man" / "training-template.yaml"
    built = subprocess.run([sys.executable, "-m", "ymir_runner", "sandbox", str(source), "--out", str(work),
                            "--template", str(template)], env=environ, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    config = yaml.safe_load((work / "in" / "config.yaml").read_text())
    assert config["epochs"] == 2 and config["sleep"] == 0.3 and config["crash"] == ""
    assert config["gpu_id"] == ""  # the platform's key stays the platform's (the CPU)
    observed = sdk_run(WorkTree(str(work)), legacy_command("demo"), site, root=False)
    outcome = observed.outcome
    assert outcome.exit_code == 0, outcome.stderr
    assert "is not a template key" not in outcome.stderr
    report = outcome.verify()
    assert report.ok, report.to_text()


def test_the_import_hook_runs_the_images_own_sitecustomize_after_it(tmp_path):
    import subprocess
    import sys

    from ymir_runner_sdk.supervisor import legacy_environment

    image_site = tmp_path / "image-site"
    image_site.mkdir()
    (image_site / "sitecustomize.py").write_text("import sys\nsys.image_site_ran = True\n")
    environ = legacy_environment(str(tmp_path / "env.yaml"))
    environ["PYTHONPATH"] += os.pathsep + str(image_site)
    done = subprocess.run([sys.executable, "-c", "import sys; print(getattr(sys, 'image_site_ran', False))"],
                          env=environ, capture_output=True, text=True)
    assert done.stdout.strip() == "True", done.stderr
