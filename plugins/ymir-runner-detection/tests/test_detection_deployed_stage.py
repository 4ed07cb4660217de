"""The deployed stage is the core's choice: given the same stage metrics, the plugin deploys the stage
``ymir_runner.stages.fitness`` ranks best, as every engine does (issue 25). The ultralytics plugin's test feeds the
same list (helper G: plugins/ymir-runner-ultralytics)."""

from __future__ import annotations

from helpers import FAST, registry

from ymir_runner import stages
from ymir_runner.evaluation import EvaluationResult

#: (mAP at map_iou_threshold, mAP50_95) of four stages, the same list in both engines' tests. The plugin's old rule
#: (the mean fitness of a stage and the two before it) deployed epoch_4; the core's rule is the stage's own fitness.
STAGE_METRICS = [(0.30, 0.20), (0.50, 0.31), (0.45, 0.35), (0.52, 0.30)]


def test_the_plugin_deploys_the_stage_the_cores_fitness_ranks_best(ymir_task, monkeypatch):
    given = iter(STAGE_METRICS)

    def stubbed(self, epoch, predictions):  # the evaluation, not what the plugin does with it, is stubbed
        assert len(predictions) == len(self.ground_truths)
        map_at_iou, map50_95 = next(given)
        return EvaluationResult(map=map_at_iou, mar=0.5, map50_95=map50_95, map50=map_at_iou, mar50_95=0.4,
                                per_class_ap={}, per_class_ap50={}, true_positives=1, false_positives=1,
                                false_negatives=1, precision=0.5, recall=0.5, score_threshold=0.3,
                                num_images=len(predictions))

    monkeypatch.setattr(stages.StageEvaluator, "evaluate", stubbed)
    config = dict(FAST, epochs=4, save_period=1, img_size=64, batch_size_per_gpu=2, num_workers_per_gpu=0,
                  export_onnx=False)
    outcome = ymir_task(config=config).run(registry())
    assert outcome.exit_code == 0, outcome.stderr
    result = outcome.result_yaml()
    fitness = {f"epoch_{epoch}": stages.fitness({"mAP": map_at_iou, "mAP50_95": map50_95})
               for epoch, (map_at_iou, map50_95) in enumerate(STAGE_METRICS, start=1)}
    assert {name: (stage["mAP"], stage["mAP50_95"]) for name, stage in result["model_stages"].items()} == {
        f"epoch_{epoch}": metrics for epoch, metrics in enumerate(STAGE_METRICS, start=1)}
    assert result["best_stage_name"] == max(fitness, key=fitness.__getitem__) == "epoch_3"
