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

#: Short real runs on generated 64-96 px scenes of the plain scene (large shapes), a stage every half run. What they
#: learn is not the point: their stages differ and are not 0. With unlabelled_pixels ignore every pixel is some
#: class, so 12 scenes and 8 epochs of 3 steps score above 0 (about 20 s on 2 CPUs); with background (the default,
#: whose unlabelled pixels are written as 255) a model predicts only background for a while: 24 scenes, 16 epochs
#: of 6 steps (slow).
RUNS = {
    "ignore": (12, {"epochs": 8, "save_period": 4}),
    "background": (24, {"epochs": 16, "save_period": 8}),
}
TINY = {"img_size": 64, "batch_size_per_gpu": 4, "learning_rate": 0.01, "min_steps": 0, "num_workers_per_gpu": 0,
        "export_onnx": False}


@pytest.fixture(scope="module", params=["ignore", pytest.param("background", marks=pytest.mark.slow)])
def trained(request, tmp_path_factory):
    import ymir_runner

    unlabelled = request.param
    images, schedule = RUNS[unlabelled]
    root = tmp_path_factory.mktemp(f"semantic-consistency-{unlabelled}")
    data = synthetic.generate_segmentation(root, n_train=images, n_val=4, n_candidates=0, img_size_range=(64, 96),
                                           seed=2, scene=synthetic.PLAIN_SCENE)
    config = {"class_names": data.class_names, "plugin": SEMANTIC_EXECUTOR_NAME, "unlabelled_pixels": unlabelled,
              **TINY, **schedule}
    env_file = write_task_files(str(root), ("training",), config, object_type=3)
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
    assert len(stages) == 2
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
    first, last = (stages[name]["mIoU"] for name in sorted(stages, key=lambda name: int(name.split("_")[1])))
    assert last > 0 and first != last
