"""The deployed stage is the core's rule, not this plugin's: the same stage metrics deploy the same stage whatever
engine trained it (issue 25). The detection plugin's tests feed it the same metrics."""

import os

import pytest

pytest.importorskip("ultralytics", reason="the ultralytics plugin's tests run in .venv-ultralytics (see conftest.py)")
pytest.importorskip("ymir_runner_ultralytics", reason="ymir-runner-ultralytics is not installed")

from helpers import FAST, SIZE, registry  # noqa: E402

from ymir_runner import stages  # noqa: E402
from ymir_runner.evaluation import EvaluationResult  # noqa: E402
from ymir_runner.testing import TaskTree  # noqa: E402

#: (mAP, mAP50_95) of epochs 1..4: the best mAP (epoch 4) and the best mAP50_95 (epoch 3) are different stages.
STAGE_METRICS = [(0.30, 0.20), (0.50, 0.31), (0.45, 0.35), (0.52, 0.30)]


def result_of(map_, map50_95):
    return EvaluationResult(map=map_, mar=0.6, map50_95=map50_95, map50=map_, mar50_95=0.4, per_class_ap={},
                            per_class_ap50={}, true_positives=5, false_positives=1, false_negatives=7,
                            precision=5 / 6, recall=5 / 12, score_threshold=0.3, num_images=6)


def test_the_stage_the_cores_fitness_ranks_best_is_deployed(tmp_path, monkeypatch):
    evaluated = []

    def evaluate(self, epoch, predictions):  # the core's measurement, stubbed: these metrics at these epochs
        assert len(predictions) == len(self.ground_truths)  # the plugin predicted every validation image
        evaluated.append(epoch)
        return result_of(*STAGE_METRICS[epoch - 1])

    monkeypatch.setattr(stages.StageEvaluator, "evaluate", evaluate)
    tree = TaskTree(str(tmp_path / "stages"), images=12, size=SIZE,
                    config={**FAST, "epochs": len(STAGE_METRICS), "save_period": 1, "export_onnx": False})
    outcome = tree.run(registry())
    assert outcome.exit_code == 0, outcome.stderr[-3000:]
    assert evaluated == [1, 2, 3, 4]

    result = outcome.result_yaml()
    recorded = [(result["model_stages"][f"epoch_{epoch}"]["mAP"], result["model_stages"][f"epoch_{epoch}"]["mAP50_95"])
                for epoch in range(1, 5)]
    assert recorded == STAGE_METRICS
    ranked = max(range(len(STAGE_METRICS)), key=lambda index: (
        stages.fitness({"mAP": STAGE_METRICS[index][0], "mAP50_95": STAGE_METRICS[index][1]}), index))
    assert ranked == 2  # 0.1 * 0.45 + 0.9 * 0.35: neither the best mAP (epoch 4) nor the last stage
    assert result["best_stage_name"] == f"epoch_{ranked + 1}"
    assert os.path.isfile(os.path.join(tree.out_dir, "models", "epoch_3", "last.pt"))
    assert "stage epoch_3: mAP@0.50 0.450 mAP50-95 0.350 tp/fp/fn 5/1/7 at score 0.300" in outcome.stderr
