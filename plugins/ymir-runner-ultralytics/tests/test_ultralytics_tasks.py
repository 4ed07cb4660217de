"""The ultralytics executor's tasks end to end: `ymir-runner run` as the platform runs the image (own process, uid
65534 where possible, read-only /in, empty HOME, no network), and in this process for what needs a look inside
(progress as the platform polls it, pretrained starts)."""

import glob
import os
import shutil
import stat

import pytest

pytest.importorskip("ultralytics", reason="the ultralytics plugin's tests run in .venv-ultralytics (see conftest.py)")
pytest.importorskip("ymir_runner_ultralytics", reason="ymir-runner-ultralytics is not installed")

from helpers import FAST, IMAGES, NOBODY, SIZE, WHY_NOT_NOBODY, infer_tree, registry, run_in_subprocess  # noqa: E402
from ymir_runner_ultralytics.environment import WEIGHTS_ENV_VAR  # noqa: E402

from ymir_runner import ReturnCode  # noqa: E402
from ymir_runner.testing import TaskTree, monitor_writes  # noqa: E402

VALIDATION_BOXES = IMAGES // 2  # TaskTree: the second half of the images, one box each


def models_of(run):
    return os.path.join(run.tree.out_dir, "models")


# --- training ---------------------------------------------------------------------------------------------------

def test_training_writes_stages_that_verify_accepts(trained):
    outcome = trained.outcome
    assert outcome.exit_code == 0, outcome.stderr[-4000:]
    report = outcome.verify()
    assert report.ok, report.to_text()
    result = outcome.result_yaml()
    assert set(result["model_stages"]) == {"epoch_1", "epoch_2"}  # save_period 1, 2 epochs
    best = result["model_stages"][result["best_stage_name"]]
    assert best["files"] == ["last.pt", "last.onnx"]  # the best stage's ONNX export, added at the end
    for name, stage in result["model_stages"].items():
        assert stage["files"][0] == "last.pt"
        for file in stage["files"]:
            assert os.path.isfile(os.path.join(models_of(trained), name, file))
        for key in ("mAP", "mAR", "mAP50_95", "conf_thr"):
            assert type(stage[key]) is float and 0.0 <= stage[key] <= 1.0
        # the core's evaluator, every validation box counted once: found (tp) or missed (fn)
        assert stage["tp"] + stage["fn"] == VALIDATION_BOXES
    assert result["evaluate_config"] == {"iou_thr": 0.5, "conf_thr": best["conf_thr"]}
    assert outcome.percent == 1.0 and outcome.state == 2  # the protocol: state 2 up to and including 100 %


def test_training_ran_offline_as_another_uid_with_a_read_only_in_and_no_home(trained):
    assert trained.network_attempts == []  # not one connection or name look-up was even tried
    assert "ultralytics-settings" in os.listdir(os.path.join(trained.tree.out_dir, "tmp", "training"))
    if not trained.as_nobody:
        pytest.skip(f"ran as this user, not uid {NOBODY}: {WHY_NOT_NOBODY}")
    others = [os.path.join(folder, name) for folder, _dirs, files in os.walk(trained.tree.out_dir) for name in files
              if os.lstat(os.path.join(folder, name)).st_uid != NOBODY]  # links: not their targets
    assert others == []
    assert not stat.S_IMODE(os.stat(trained.tree.local("/in")).st_mode) & 0o222


def test_the_log_has_the_trainers_lines_without_progress_bars(trained):
    log = trained.outcome.stderr
    assert " INFO ultralytics: Starting training for 2 epochs..." in log
    assert "optimizer: AdamW" in log  # ultralytics' own choice, logged by its trainer
    assert "training yolo26n.yaml from SCRATCH" in log  # no weights folder in the test: the warning says so
    assert "epoch 2/2:" in log and "stage epoch_2: mAP@0.50" in log
    for bar in ("\r", "━", "it/s", "\x1b["):
        assert bar not in log, f"progress-bar output {bar!r} in the log"
    assert "Update Settings with" not in log  # ultralytics' import-time chatter is kept out


def test_labels_are_the_tasks_boxes_exactly(trained):
    tree = trained.tree
    labels = os.path.join(tree.out_dir, "tmp", "training", "dataset", "labels", "train")
    width, height = SIZE
    for index, name in enumerate(sorted(os.listdir(labels))):
        assert name.endswith(".txt")
        ((class_id, x1, y1, x2, y2),) = tree.boxes_of(index)  # det-ark: inclusive corners
        written = [float(value) for value in open(os.path.join(labels, name)).read().split()]
        expected = [class_id, (x1 + x2 + 1) / 2 / width, (y1 + y2 + 1) / 2 / height, (x2 + 1 - x1) / width,
                    (y2 + 1 - y1) / height]
        assert written == pytest.approx(expected, abs=1e-10)


def test_the_onnx_export_runs(trained):
    import numpy as np
    import onnxruntime

    result = trained.outcome.result_yaml()
    path = os.path.join(models_of(trained), result["best_stage_name"], "last.onnx")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (name,) = [node.name for node in session.get_inputs()]
    (output,) = session.run(None, {name: np.zeros((1, 3, FAST["img_size"], FAST["img_size"]), np.float32)})
    side = FAST["img_size"]
    anchors = sum((side // stride) ** 2 for stride in (8, 16, 32))
    assert output.shape == (1, 4 + 2, anchors)  # cx, cy, w, h and the 2 class scores per anchor, NMS outside


def test_tensorboard_has_the_losses_and_metrics(trained):
    events = glob.glob(os.path.join(trained.tree.out_dir, "tensorboard", "events.out.tfevents.*"))
    assert events and sum(os.path.getsize(path) for path in events) > 500
    data = b"".join(open(path, "rb").read() for path in events)
    for tag in (b"train/box_loss", b"val/mAP50_95", b"val_AP50_95/"):
        assert tag in data, tag


# --- mining and inference ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("algorithm", ["aldd", "entropy", "cald", "random"])
def test_mining_and_inference_from_the_trained_model(trained, shared_root, algorithm):
    tree = infer_tree(os.path.join(shared_root, f"mine-{algorithm}"), models_of(trained),
                      {"mining_algorithm": algorithm, "conf_threshold": 0.001})
    run = run_in_subprocess(tree)
    outcome = run.outcome
    assert outcome.exit_code == 0, outcome.stderr[-4000:]
    assert outcome.verify().ok, outcome.verify().to_text()
    assert sorted(path for path, _ in outcome.result_tsv()) == sorted(tree.images)
    scores = [score for _, score in outcome.result_tsv()]
    assert scores == sorted(scores, reverse=True)
    boxes = outcome.infer_result()["detection"]
    assert sorted(boxes) == sorted(os.path.basename(image) for image in tree.images)
    width, height = SIZE
    for entry in boxes.values():
        for box in entry["boxes"]:
            assert 0 <= box["box"]["x"] and box["box"]["x"] + box["box"]["w"] <= width
            assert 0 <= box["box"]["y"] and box["box"]["y"] + box["box"]["h"] <= height
            assert box["score"] >= 0.001
    assert run.network_attempts == []
    assert f"mining ({algorithm}): scored {len(tree.images)} images" in outcome.stderr


def test_inference_without_a_model_file_names_the_key(ymir_task):
    outcome = ymir_task(kinds=("infer",), size=SIZE).run(registry())
    assert outcome.return_code == ReturnCode.MODEL
    assert "model_params_path" in outcome.last_stderr_line


def test_a_model_of_other_classes_is_refused(trained, tmp_path):
    tree = infer_tree(str(tmp_path / "other"), models_of(trained), kinds=("infer",))
    tree.config["class_names"] = ["cat", "dog", "bird"]
    tree.write_config()
    outcome = tree.run(registry())
    assert outcome.return_code == ReturnCode.MODEL
    assert "trained on classes ['cat', 'dog']" in outcome.last_stderr_line


# --- pretrained starts, progress --------------------------------------------------------------------------------

def test_fine_tuning_a_stage_with_another_class_list_reports_monotonic_progress(trained, tmp_path):
    tree = TaskTree(str(tmp_path / "finetune"), images=12, size=SIZE, class_names=("cat", "dog", "bird"),
                    models_from=models_of(trained), config={**FAST, "epochs": 1, "export_onnx": False})
    with monitor_writes() as writes:
        outcome = tree.run(registry())
    assert outcome.exit_code == 0, outcome.stderr[-4000:]
    assert "starting from the pretrained model" in outcome.stderr
    assert "differ from the task's ['cat', 'dog', 'bird']" in outcome.stderr
    assert outcome.result_yaml()["model_stages"]["epoch_1"]["files"] == ["last.pt"]
    percents = [float(text.splitlines()[0].split("\t")[2]) for text in writes]
    assert percents == sorted(percents) and percents[-1] == 1.0
    assert len({p for p in percents if 0.0 < p < 1.0}) >= 2


def test_a_weights_folder_in_the_image_is_used_for_a_model_name(trained, tmp_path, monkeypatch):
    folder = tmp_path / "weights"
    folder.mkdir()
    best = trained.outcome.result_yaml()["best_stage_name"]
    shutil.copyfile(os.path.join(models_of(trained), best, "last.pt"), folder / "yolo26n.pt")
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(folder))
    tree = TaskTree(str(tmp_path / "baked"), images=8, size=SIZE,
                    config={**FAST, "epochs": 1, "export_onnx": False})
    outcome = tree.run(registry())
    assert outcome.exit_code == 0, outcome.stderr[-4000:]
    assert f"starting from the official weights {folder / 'yolo26n.pt'} baked into the image" in outcome.stderr
    assert "SCRATCH" not in outcome.stderr


# --- bad configurations stop the task naming the key ------------------------------------------------------------

@pytest.mark.parametrize("config, code, key", [
    ({"gpu_id": "0,1"}, ReturnCode.CONFIG, "gpu_id"),
    ({"model": "yolo99n"}, ReturnCode.CONFIG, "model"),
    ({"img_size": 100}, ReturnCode.CONFIG, "img_size"),
    ({"ultralytics_args": "{device: 0}"}, ReturnCode.CONFIG, "ultralytics_args"),
    ({"optimizer": "Lion"}, ReturnCode.CONFIG, "optimizer"),
    ({"learning_rate": 5.0}, ReturnCode.CONFIG, "learning_rate"),  # ultralytics' own range check, named
    ({"ultralytics_args": "{hsv_h: 7}"}, ReturnCode.CONFIG, "ultralytics_args"),
])
def test_a_bad_config_stops_naming_the_key(ymir_task, config, code, key):
    outcome = ymir_task(images=4, size=SIZE, config={**FAST, **config}).run(registry())
    assert outcome.return_code == code, outcome.stderr[-2000:]
    assert f"'{key}'" in outcome.last_stderr_line


def test_the_built_in_detectors_template_values_work_when_plugin_names_this_executor(ymir_task):
    """An image with both executors has one template per task, with the first executor's (detection's) defaults
    for the keys both declare: `model: nano`, `optimizer: adamw`, `mining_algorithm: aldd`..."""
    shared = {"model": "nano", "optimizer": "adamw", "learning_rate": 0.006, "weight_decay": 0.05, "mosaic": 0.0,
              "min_steps": 600, "pretrained_backbone": "", "export_onnx": "true", "conf_threshold": 0.0,
              "warmup_epochs": "auto", "max_detections": "auto", "num_workers_per_gpu": "auto"}
    outcome = ymir_task(images=8, size=SIZE, config={**FAST, **shared, "epochs": 1, "plugin": "ultralytics"}).run(
        registry())
    assert outcome.exit_code == 0, outcome.stderr[-3000:]
    assert "training yolo26n.yaml from SCRATCH" in outcome.stderr  # nano is YOLO26's n
    assert "optimizer: AdamW(lr=0.006" in outcome.stderr
    assert "num_workers_per_gpu auto: 4" in outcome.stderr and "max_detections auto: " in outcome.stderr


def test_a_loss_that_is_not_finite_stops_the_training_with_the_nan_code():
    import types

    import torch
    from ymir_runner_ultralytics.training import StageWriter

    from ymir_runner import NonFiniteError

    stages = StageWriter.__new__(StageWriter)  # only the batch callback's state
    stages.hyper = types.SimpleNamespace(learning_rate=0.01)
    trainer = types.SimpleNamespace(loss=torch.tensor(float("nan")), epoch=2)
    with pytest.raises(NonFiniteError, match="epoch 3; lower config key 'learning_rate'") as raised:
        stages.on_train_batch_end(trainer)
    assert raised.value.code == ReturnCode.NAN
