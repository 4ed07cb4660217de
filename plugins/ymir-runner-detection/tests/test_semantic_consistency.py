"""Each stage of a real (tiny) semantic segmentation training scores, in result.yaml, exactly what
``ymir-runner evaluate`` gives on the infer-result.json that the stage's own model writes for the validation images:
the stage metrics are the platform's scores of the model's inference output, not of a look-alike prediction."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from test_semantic_inference import run_task, seg_task

from ymir_runner.cli import main
from ymir_runner.testing import plugin_registry, write_task_files
from ymir_runner_detection import SEMANTIC_EXECUTOR_NAME, plugin, synthetic

#: A short real run: 12 generated 64-96 px scenes of the plain scene (large shapes), 8 epochs of 3 steps, a stage
#: every 4 epochs (about 20 s on 2 CPUs). What it learns is not the point: its stages differ and are not 0.
TINY = {"img_size": 64, "epochs": 8, "save_period": 4, "batch_size_per_gpu": 4, "learning_rate": 0.01,
        "min_steps": 0, "num_workers_per_gpu": 0, "export_onnx": False, "unlabelled_pixels": "ignore"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import ymir_runner

    root = tmp_path_factory.mktemp("semantic-consistency")
    data = synthetic.generate_segmentation(root, n_train=12, n_val=4, n_candidates=0, img_size_range=(64, 96),
                                           seed=2, scene=synthetic.PLAIN_SCENE)
    env_file = write_task_files(str(root), ("training",), {"class_names": data.class_names,
                                                            "plugin": SEMANTIC_EXECUTOR_NAME, **TINY}, object_type=3)
    code = ymir_runner.run(env_file, registry=plugin_registry({"detection": plugin}))
    assert code == 0, (root / "out" / "monitor.txt").read_text()
    return root, data


def evaluate(ground_truth: str, predictions: str, class_names, capsys) -> dict:
    capsys.readouterr()
    code = main(["evaluate", "--object-type", "3", "--ground-truth", ground_truth, "--predictions", predictions,
                 "--class-names", ",".join(class_names), "--json"])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_each_stage_scores_what_evaluate_gives_on_its_own_inference_output(trained, tmp_path, capsys):
    root, data = trained
    models = root / "out" / "models"
    stages = yaml.safe_load((models / "result.yaml").read_text())["model_stages"]
    assert sorted(stages) == ["epoch_4", "epoch_8"]
    validation = [line.split("\t")[0] for line in open(data.val_index) if line.strip()]
    for name, stage in stages.items():
        outcome = run_task(seg_task(tmp_path / name, ("infer",), validation, models, stages=[name]))
        assert outcome.exit_code == 0, outcome.stderr[-2000:]
        report = outcome.verify()
        assert report.ok, report.to_text()  # every object as the platform imports it: none lost
        result = os.path.join(outcome.out_dir, "infer-result.json")
        scores = evaluate(str(data.val_index), result, data.class_names, capsys)
        assert scores["mIoU"] == pytest.approx(stage["mIoU"], abs=1e-6), name
        assert scores["mAcc"] == pytest.approx(stage["mAcc"], abs=1e-6), name
    assert stages["epoch_8"]["mIoU"] > 0 and stages["epoch_4"]["mIoU"] != stages["epoch_8"]["mIoU"]
