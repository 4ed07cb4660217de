"""``ymir-runner demo --object-type 3``: a real (here one-epoch) semantic segmentation training on generated scenes,
what it prints and its picture of ground truth beside prediction."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import yaml
from PIL import Image

from ymir_runner_detection.demo import GAP, OVERLAY_ALPHA, SEMANTIC_PICTURE_FILE, colored_label_map


def test_the_semantic_demo_trains_and_draws_ground_truth_beside_prediction(tmp_path):
    folder = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "ymir_runner", "demo", str(folder), "--object-type", "3",
                           "--epochs", "1", "--images", "8"], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = yaml.safe_load((folder / "out" / "models" / "result.yaml").read_text())
    best = result["model_stages"][result["best_stage_name"]]
    assert (f"best stage      : {best['stage_name']}: mIoU {best['mIoU']:.3f}, mAcc {best['mAcc']:.3f} (the "
            "platform's scores of the validation images' label maps; 1 epochs on 8 images)") in done.stdout
    assert yaml.safe_load((folder / "in" / "config.yaml").read_text())["plugin"] == "semantic-fpn"
    picture = folder / SEMANTIC_PICTURE_FILE
    assert f"picture         : {picture}" in done.stdout
    out = folder / "out"
    assert f"weights         : {out / 'models' / best['stage_name']}/ ({', '.join(best['files'])})" in done.stdout
    assert f"result.yaml     : {out / 'models' / 'result.yaml'}" in done.stdout
    assert f"run it yourself : ymir-runner run --env {folder / 'in' / 'env.yaml'}" in done.stdout
    validation = [line.split("\t")[0] for line in open(folder / "in" / "val-index.tsv") if line.strip()][:4]
    with Image.open(validation[0]) as first:
        width, height = first.size
    with Image.open(picture) as image:  # a row per validation image (4), each ground truth | prediction
        assert image.width >= 2 * width + GAP and image.height >= 4 * height + 3 * GAP


def test_a_label_map_colours_its_classes_on_the_grey_image_and_leaves_unlabelled_pixels_grey():
    image = np.full((4, 6, 3), 100, np.uint8)
    image[..., 0] = 200  # reddish: shown grey (ITU-R 601 luma, as Pillow's "L")
    labels = np.full((4, 6), 255, np.uint8)
    labels[:, :3] = 1
    drawn = np.asarray(colored_label_map(image, labels))
    luma = round(200 * 0.299 + 100 * 0.587 + 100 * 0.114)
    assert (drawn[:, 3:] == luma).all()  # unlabelled: the image in grey
    from ymir_runner.pictures import PALETTE

    expected = np.round((1 - OVERLAY_ALPHA) * luma + OVERLAY_ALPHA * np.array(PALETTE[1], np.float32))
    assert (drawn[:, :3] == expected.astype(np.uint8)).all()
