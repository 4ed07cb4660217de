"""config.yaml has one writer (protocol.env.config_document), so the trees the sandbox, the testing kit and the
detection demo write agree with the platform: a mining or inference config.yaml holds ``run_mining`` and
``run_infer`` as env.yaml does (YMIR's ``mir infer`` writes both into it), a training one holds neither."""

from __future__ import annotations

import json

import pytest
import toy_plugin
import yaml

from ymir_runner.sandbox import build_sandbox
from ymir_runner.testing import TaskTree, write_png, write_task_files

KINDS = [("training",), ("mining",), ("infer",), ("mining", "infer")]


def documents(env_file, config_file=None):
    """env.yaml and config.yaml (by default the one env.yaml names), as dicts."""
    with open(env_file, encoding="utf-8") as stream:
        env = yaml.safe_load(stream)
    with open(config_file or env["input"]["config_file"], encoding="utf-8") as stream:
        return env, yaml.safe_load(stream)


def assert_platform_keys(env, config):
    flags = {key: config[key] for key in ("run_mining", "run_infer") if key in config}
    if env["run_training"]:
        assert flags == {}
        assert "export_format" in config and "model_params_path" not in config
    else:
        assert flags == {"run_mining": env["run_mining"], "run_infer": env["run_infer"]}
        assert "export_format" not in config
    assert (config["task_id"], config["gpu_id"], config["gpu_count"], config["object_type"]) == (
        env["task_id"], "", 0, 2)
    assert config["shm_size"] == "16G"


@pytest.mark.parametrize("kinds", KINDS)
def test_the_testing_kit_writes_config_yaml_as_the_platform_does(tmp_path, kinds):
    env_file = write_task_files(str(tmp_path / "files"), kinds, {"class_names": ["cat"], "epochs": 3})
    env, config = documents(env_file)
    assert_platform_keys(env, config)
    assert (config["class_names"], config["epochs"]) == (["cat"], 3)
    tree = TaskTree(str(tmp_path / "tree"), kinds=kinds, images=1)
    env, config = documents(tree.env_file, tree.local("/in/config.yaml"))  # container paths
    assert_platform_keys(env, config)
    assert ("model_params_path" in config) == ("training" not in kinds)


@pytest.mark.parametrize("kinds", KINDS)
def test_the_sandbox_writes_config_yaml_as_the_platform_does(tmp_path, ymir_registry, kinds):
    ymir_registry.register(toy_plugin, "toy")
    source = tmp_path / "voc"
    for name in ("a", "b"):
        write_png(str(source / f"{name}.png"), 40, 30)
    (source / "a.xml").write_text("<annotation><filename>a.png</filename><object><name>cat</name><bndbox><xmin>1"
                                  "</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>")
    models = tmp_path / "models"
    (models / "epoch_1").mkdir(parents=True)
    (models / "epoch_1" / "model.json").write_text(json.dumps({}))
    (models / "result.yaml").write_text(yaml.safe_dump({"best_stage_name": "epoch_1", "model_stages": {"epoch_1": {
        "stage_name": "epoch_1", "files": ["model.json"], "timestamp": 1700000000, "mAP": 0.5}}}))
    model = {} if "training" in kinds else {"model": str(models), "classes": ["cat"]}
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=ymir_registry, tasks=list(kinds), **model)
    env, config = documents(summary.env_file)
    assert_platform_keys(env, config)
    assert ("model_params_path" in config) == ("training" not in kinds)


@pytest.mark.parametrize("kinds", KINDS)
def test_the_demo_writes_config_yaml_as_the_platform_does(tmp_path, kinds):
    demo = pytest.importorskip("ymir_runner_detection.demo")
    env_file = demo.write_task(str(tmp_path), kinds=kinds, n_train=2, n_val=1, n_candidates=2)
    env, config = documents(env_file)
    assert_platform_keys(env, config)
    assert config["plugin"] == "detection"
