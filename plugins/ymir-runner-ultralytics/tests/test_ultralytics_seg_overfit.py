"""The CPU quality bar of ultralytics-seg (issue 27): the overfit setting of ``bench/bench_ultralytics_seg_overfit.py``
as a test, one seed. yolo26n-seg from scratch at 160 px on 16 generated 160 x 160 images (one square object each,
two classes), training set = validation set, 190 epochs, through ``ymir-runner run`` in a process of its own; the
deployed stage's maskAP / maskAP50_95 are the core's evaluator's.

The bar is the bench's lowest seed minus 0.05 (the issue's rule): measured 2026-12-07 on 2 CPUs, seeds 0, 1, 2 all
deploy maskAP 1.000 with maskAP50_95 0.814, 0.860, 0.791 (275-297 CPU s each), so maskAP >= 0.95 and maskAP50_95
>= 0.741. This test, 2026-12-07, 2 busy CPUs: deployed epoch_190 at maskAP 1.000, maskAP50_95 0.814 (the bench's
seed 0 to the third decimal), 349 CPU s, 891 s wall. Marked slow (``python -m pytest --slow``)."""

import os
import time

import pytest

pytest.importorskip("ultralytics", reason="the ultralytics plugin's tests run in .venv-ultralytics (see conftest.py)")
pytest.importorskip("ymir_runner_ultralytics", reason="ymir-runner-ultralytics is not installed")

from ymir_runner.testing import TaskTree  # noqa: E402

EPOCHS = 190
#: The bench's lowest seed (maskAP 1.000, maskAP50_95 0.791) minus 0.05.
MASK_AP_BAR, MASK_AP50_95_BAR = 0.95, 0.741


@pytest.mark.slow
def test_a_nano_seg_model_overfits_16_images_from_scratch(tmp_path):
    import subprocess

    tree = TaskTree(str(tmp_path / "overfit"), images=16, size=(160, 160), object_type=4,
                    config={"epochs": EPOCHS, "img_size": 160, "batch_size_per_gpu": 8, "save_period": EPOCHS // 6,
                            "seed": 0, "export_onnx": False, "model": "yolo26n-seg"})
    pairs = "".join(f"{image}\t{annotation}\n" for image, annotation in zip(tree.images, tree.annotations))
    for index in ("/in/train-index.tsv", "/in/val-index.tsv"):  # training set = validation set
        with open(tree.local(index), "w", encoding="utf-8") as stream:
            stream.write(pairs)
    started, before = time.monotonic(), os.times()
    done = subprocess.run(tree.command(), capture_output=True, text=True, timeout=1800)
    after = os.times()
    outcome = tree.outcome(done.returncode, done.stderr + done.stdout)
    assert outcome.exit_code == 0, outcome.stderr[-4000:]
    result = outcome.result_yaml()
    best = result["model_stages"][result["best_stage_name"]]
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    print(f"\nseed 0, {EPOCHS} epochs: {cpu:.0f} CPU s, {time.monotonic() - started:.0f} s; deployed "
          f"{result['best_stage_name']}: maskAP {best['maskAP']:.3f}, maskAP50_95 {best['maskAP50_95']:.3f}")
    assert best["maskAP"] >= MASK_AP_BAR
    assert best["maskAP50_95"] >= MASK_AP50_95_BAR
