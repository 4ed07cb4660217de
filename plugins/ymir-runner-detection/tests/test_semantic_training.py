"""The semantic segmentation training task (object type 3, executor ``semantic-fpn``): a real, tiny run through
``ymir_runner.run`` on generated seg-coco scenes, its stages scored by the core's StageEvaluator."""

from __future__ import annotations

import pytest
import torch
import yaml

import ymir_runner
from ymir_runner.testing import plugin_registry, write_task_files
from ymir_runner_detection import SEMANTIC_EXECUTOR_NAME, plugin, synthetic
from ymir_runner_detection.checkpoint import load_checkpoint
from ymir_runner_detection.engine import SemanticFPN
from ymir_runner_detection.templates import SEMANTIC_TRAINING_DEFAULTS


@pytest.fixture(scope="module")
def semantic_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("semantic")
    data = synthetic.generate_segmentation(root, n_train=16, n_val=6, n_candidates=0, img_size_range=(64, 64),
                                           seed=2)
    config = {"class_names": data.class_names, "plugin": SEMANTIC_EXECUTOR_NAME, "img_size": 64, "epochs": 4,
              "save_period": 2, "num_workers_per_gpu": 0}
    env_file = write_task_files(str(root), ("training",), config, object_type=3)
    code = ymir_runner.run(env_file, registry=plugin_registry({"detection": plugin}))
    return root, code


def test_the_template_shares_the_detectors_keys_and_adds_unlabelled_pixels():
    spec = plugin.semantic_executor_spec()
    keys = [param.name for param in spec.templates[ymir_runner.TaskKind.TRAINING]]
    assert {"unlabelled_pixels", "save_period", "export_onnx", "flip", "pretrained_backbone"} <= set(keys)
    assert not {"conf_threshold", "map_iou_threshold", "max_detections", "mosaic"} & set(keys)  # no boxes here
    assert SEMANTIC_TRAINING_DEFAULTS["learning_rate"] == 0.003
    assert SEMANTIC_TRAINING_DEFAULTS["batch_size_per_gpu"] == 8
    assert SEMANTIC_TRAINING_DEFAULTS["min_steps"] == 1200  # epochs auto: 40 epochs of the 240 scenes


def test_a_semantic_training_writes_stages_scored_as_the_platform_scores(semantic_run):
    root, code = semantic_run
    monitor = (root / "out" / "monitor.txt").read_text()
    assert code == 0, monitor
    result = yaml.safe_load((root / "out" / "models" / "result.yaml").read_text())
    stages = result["model_stages"]
    assert sorted(stages) == ["epoch_2", "epoch_4"] and result["best_stage_name"] in stages
    for name, stage in stages.items():
        assert stage["files"] == ["model.pt", "model.onnx"]
        assert 0.0 <= stage["mIoU"] <= 1.0 and 0.0 <= stage["mAcc"] <= 1.0
        checkpoint = load_checkpoint(str(root / "out" / "models" / name / "model.pt"))
        assert checkpoint.task == "semantic" and checkpoint.class_names == list(synthetic.CLASS_NAMES)
        model = checkpoint.build_model()
        assert isinstance(model, SemanticFPN) and model.background
        assert model.predict_maps(torch.zeros(1, 3, 64, 64)).shape == (1, 4, 64, 64)
    info = root / "out" / "models" / "ymir-info.yaml"
    assert yaml.safe_load(info.read_text())["object_type"] == 3
