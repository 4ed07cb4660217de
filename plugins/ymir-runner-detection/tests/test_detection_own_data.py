"""The README's own-data walk-through, as a new user runs it from a shell, on VOC and YOLO folders made here:
sandbox -> inspect -> run -> verify, then mining + inference on new images with the trained model, and the
readable view of the results. Every number the user asked for is what ran; every result names the user's files."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import yaml
from PIL import Image, ImageDraw

CLASSES = ("circle", "square")
#: What the user asks for on the command line: the run must do exactly this.
EPOCHS = 3
SETTINGS = ["--set", f"epochs={EPOCHS}", "--set", "img_size=64", "--set", "batch_size_per_gpu=4",
            "--set", "num_workers_per_gpu=0", "--set", "export_onnx=false"]


def draw_scene(path: str, seed: int) -> list[tuple[str, int, int, int, int]]:
    """An 80 x 64 photo-like image with one or two shapes; returns (class, xmin, ymin, xmax, ymax) INCLUSIVE."""
    rng = random.Random(seed)
    image = Image.new("RGB", (80, 64), tuple(rng.randrange(60, 120) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    boxes = []
    for _ in range(rng.randint(1, 2)):
        name = rng.choice(CLASSES)
        size = rng.randint(16, 28)
        x, y = rng.randint(0, 80 - size - 1), rng.randint(0, 64 - size - 1)
        shape = draw.ellipse if name == "circle" else draw.rectangle
        shape([x, y, x + size - 1, y + size - 1], fill=(230, 40, 40) if name == "circle" else (40, 40, 230))
        boxes.append((name, x, y, x + size - 1, y + size - 1))
    image.save(path, quality=95)
    return boxes


def voc_folder(root: str, count: int) -> str:
    """A Pascal VOC dataset root: JPEGImages/, Annotations/ (one .xml per image)."""
    os.makedirs(os.path.join(root, "JPEGImages"))
    os.makedirs(os.path.join(root, "Annotations"))
    for index in range(count):
        name = f"img_{index:04d}"
        boxes = draw_scene(os.path.join(root, "JPEGImages", name + ".jpg"), index)
        objects = "".join(f"<object><name>{c}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                          f"<ymax>{y2}</ymax></bndbox></object>" for c, x1, y1, x2, y2 in boxes)
        with open(os.path.join(root, "Annotations", name + ".xml"), "w") as stream:
            stream.write(f"<annotation><filename>{name}.jpg</filename><size><width>80</width><height>64</height>"
                         f"<depth>3</depth></size>{objects}</annotation>")
    return root


def yolo_folder(root: str, count: int) -> str:
    """A YOLO dataset: images/ and labels/ (relative centre x, y, width, height), classes.txt."""
    os.makedirs(os.path.join(root, "images"))
    os.makedirs(os.path.join(root, "labels"))
    for index in range(count):
        name = f"img_{index:04d}"
        boxes = draw_scene(os.path.join(root, "images", name + ".jpg"), 100 + index)
        with open(os.path.join(root, "labels", name + ".txt"), "w") as stream:
            for c, x1, y1, x2, y2 in boxes:
                w, h = x2 - x1 + 1, y2 - y1 + 1
                stream.write(f"{CLASSES.index(c)} {(x1 + w / 2) / 80:.6f} {(y1 + h / 2) / 64:.6f} "
                             f"{w / 80:.6f} {h / 64:.6f}\n")
    with open(os.path.join(root, "classes.txt"), "w") as stream:
        stream.write("\n".join(CLASSES) + "\n")
    return root


def ymir_runner(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
    """``ymir-runner ARGS`` as a user types it (the console script's module, this interpreter)."""
    done = subprocess.run([sys.executable, "-m", "ymir_runner", *args], capture_output=True, text=True,
                          timeout=600)
    if ok:
        assert done.returncode == 0, f"ymir-runner {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.parametrize("make_source", [voc_folder, yolo_folder], ids=["voc", "yolo"])
def test_the_readme_own_data_walkthrough(tmp_path, make_source):
    data = make_source(str(tmp_path / "my-data"), 16)
    work, work_mine = str(tmp_path / "work"), str(tmp_path / "work-mine")

    built = ymir_runner("sandbox", data, "--out", work, "--val-ratio", "0.25", *SETTINGS)
    assert "images: 16 (train 12, val 4)" in built.stdout
    assert f"classes: {', '.join(CLASSES)}" in built.stdout
    with open(os.path.join(work, "in", "config.yaml")) as stream:
        config = yaml.safe_load(stream)
    assert config["epochs"] == EPOCHS and config["img_size"] == 64

    inspected = ymir_runner("inspect", "--env", f"{work}/in/env.yaml")
    assert "training: 12 usable images of 12 index lines" in inspected.stdout
    assert "warning: config key" not in inspected.stdout

    trained = ymir_runner("run", "--env", f"{work}/in/env.yaml")
    assert f"{EPOCHS} epochs = " in trained.stderr  # the schedule the log states is the one asked for
    with open(os.path.join(work, "out", "models", "result.yaml")) as stream:
        result = yaml.safe_load(stream)
    stages = sorted(result["model_stages"], key=lambda name: int(name.split("_")[1]))
    assert stages[-1] == f"epoch_{EPOCHS}" and len(stages) == EPOCHS  # exactly the epochs asked for
    ymir_runner("verify", f"{work}/out", "--task", "training")
    ymir_runner("verify", f"{work}/out", "--env", f"{work}/in/env.yaml")

    new_images = tmp_path / "new-images"
    new_images.mkdir()
    for index in range(5):
        draw_scene(str(new_images / f"new_{index}.jpg"), 1000 + index)
    ymir_runner("sandbox", str(new_images), "--out", work_mine, "--task", "mining,infer", "--model",
                f"{work}/out/models", "--classes", ",".join(CLASSES), "--set", "num_workers_per_gpu=0")
    ymir_runner("run", "--env", f"{work_mine}/in/env.yaml")
    ymir_runner("verify", f"{work_mine}/out", "--env", f"{work_mine}/in/env.yaml")
    with open(os.path.join(work_mine, "out", "result.tsv")) as stream:
        assert len([line for line in stream if line.strip()]) == 5  # every candidate scored once
    with open(os.path.join(work_mine, "out", "infer-result.json")) as stream:
        assert len(json.load(stream)["detection"]) == 5

    view = ymir_runner("results", f"{work_mine}/out", "--env", f"{work_mine}/in/env.yaml")
    for index in range(5):  # the readable view names the user's own files
        assert f"new_{index}.jpg" in view.stdout
