"""The semantic segmentation executor's quality bar: one seed of ``bench/bench_semantic_training.py``'s setting (the
whole training task on 240 / 60 generated 160 px scenes of the plain 3-class scene, the template's defaults and its
automatic schedule) through ``ymir_runner.run``, held to a bar derived from the bench's measured seeds.

Slow (a few CPU minutes): run with ``python -m pytest --slow``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from helpers import registry

import ymir_runner
from ymir_runner import decode_image
from ymir_runner.testing import write_task_files
from ymir_runner_detection import SEMANTIC_EXECUTOR_NAME, synthetic
from ymir_runner_detection.checkpoint import load_checkpoint
from ymir_runner_detection.engine.semantic import stored_label_map
from ymir_runner_detection.predict import decode_side, letterboxed, to_input

#: The bench's lowest seed less a margin: val mIoU 0.945 / 0.808 / 0.945 on seeds 0 / 1 / 2 (experiments/README.md,
#: 2026-12-07, final recipe), 0.808 - 0.05. The margin: this test runs seed 0, but a run of one seed follows another
#: trajectory on another machine or thread count (float sums), and the seeds spread over 0.14; 0.75 is also the
#: issue's target. It fails when the recipe falls below every measured seed by more than the margin.
MIOU_BAR = 0.75
#: The deployed stage's mIoU on held-out scenes may trail the best stage's by at most this (the issue's target; the
#: bench measured at most 0.001 on the plain scene, 0.004 on the default one).
DEPLOYED_GAP = 0.02


def platform_miou(truths, predictions, classes):
    """mIoU as the platform sums it (``sem_seg_eval_mm``): per class intersection and union over the dataset, on the
    pixels the ground truth labels."""
    inter, union = np.zeros(classes), np.zeros(classes)
    for truth, predicted in zip(truths, predictions):
        labelled = truth != 255
        for cls in range(classes):
            in_truth, in_prediction = (truth == cls) & labelled, (predicted == cls) & labelled
            inter[cls] += np.count_nonzero(in_truth & in_prediction)
            union[cls] += np.count_nonzero(in_truth | in_prediction)
    present = union > 0
    return float((inter[present] / union[present]).mean())


def label_maps(model_file, paths):
    checkpoint = load_checkpoint(str(model_file))
    model = checkpoint.build_model().eval()
    maps = []
    for path in paths:
        entry = letterboxed(decode_image(str(path), decode_side(checkpoint.img_size)), checkpoint.img_size)
        with torch.inference_mode():
            cells = model.cell_logits(to_input([entry.image], "cpu"))[0]
        info = entry.info
        maps.append(stored_label_map(cells, stride=model.stride, scale_x=info.scale_x, scale_y=info.scale_y,
                                     pad_x=info.pad_x, pad_y=info.pad_y, width=info.orig_width,
                                     height=info.orig_height, background=model.background)[0])
    return maps


@pytest.mark.slow
def test_the_semantic_task_reaches_the_benchmarks_quality_and_deploys_a_stage_near_the_best(tmp_path):
    data = synthetic.generate_segmentation(tmp_path / "task", n_train=240, n_val=60, n_candidates=0,
                                           img_size_range=(160, 160), seed=0, scene=synthetic.PLAIN_SCENE)
    held_out = synthetic.generate_segmentation(tmp_path / "held-out", n_train=60, n_val=0, n_candidates=0,
                                               img_size_range=(160, 160), seed=10_000, scene=synthetic.PLAIN_SCENE)
    config = {"class_names": data.class_names, "plugin": SEMANTIC_EXECUTOR_NAME, "img_size": 160, "seed": 0}
    env_file = write_task_files(str(tmp_path / "task"), ("training",), config, object_type=3)
    code = ymir_runner.run(env_file, registry=registry())
    models = tmp_path / "task" / "out" / "models"
    assert code == 0, (tmp_path / "task" / "out" / "monitor.txt").read_text()
    result = yaml.safe_load((models / "result.yaml").read_text())
    deployed = result["best_stage_name"]
    assert result["model_stages"][deployed]["mIoU"] >= MIOU_BAR, result["model_stages"]

    paths = [path for path, _ in held_out.train_items]
    truths = [labels for _, labels in held_out.train_items]
    scores = {name: platform_miou(truths, label_maps(models / name / "model.pt", paths), 3)
              for name in result["model_stages"]}
    print(f"deployed {deployed}: val mIoU {result['model_stages'][deployed]['mIoU']:.4f}; held-out mIoU per stage "
          f"{ {name: round(score, 4) for name, score in scores.items()} }")  # shown with pytest -s
    assert max(scores.values()) - scores[deployed] <= DEPLOYED_GAP, (deployed, scores)
