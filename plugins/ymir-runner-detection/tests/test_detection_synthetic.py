"""The synthetic data generator (demo, tests, benchmarks): YMIR's /in layout, deterministic per seed."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image

from ymir_runner_detection import synthetic
from ymir_runner_detection.engine import load_image


def test_synthetic_generator_writes_ymir_layout(tiny_synthetic):
    data = tiny_synthetic
    assert data.class_names == ["circle", "rectangle", "triangle"]
    train_lines = data.train_index.read_text().splitlines()
    assert len(train_lines) == len(data.train_items) == 13
    assert len(data.val_index.read_text().splitlines()) == 6
    assert [Path(line) for line in data.candidate_index.read_text().splitlines()] == data.candidate_paths
    voc_by_sha1 = {p.stem: p for p in data.annotation_paths["det-voc"]}
    for line, (image_path, boxes, classes) in zip(train_lines, data.train_items):
        image_file, annotation_file = (Path(p) for p in line.split("\t"))
        assert image_file.is_absolute() and image_file == image_path
        sha1 = hashlib.sha1(image_file.read_bytes()).hexdigest()
        assert image_file.stem == sha1 and image_file.parent.name == sha1[-2:]
        assert annotation_file.name == f"{sha1}.txt"
        rows = [[float(v) for v in row.split(", ")] for row in annotation_file.read_text().splitlines()]
        if rows:
            rows = np.array(rows)
            np.testing.assert_array_equal(rows[:, 0], classes)
            np.testing.assert_array_equal(rows[:, 1:5], boxes - np.array([0, 0, 1, 1]))  # inclusive max
        voc_text = voc_by_sha1[sha1].read_text()  # empty for an image without boxes, as the platform writes it
        objects = list(ET.fromstring(voc_text).iter("object")) if voc_text else []
        names = [obj.findtext("name") for obj in objects]
        assert names == [data.class_names[c] for c in classes]
        for obj, box in zip(objects, boxes):
            xmax = int(obj.find("bndbox").findtext("xmax"))
            assert xmax == int(box[2]) - 1
    # Same seed, same bytes.
    assert data.train_items[0][0].name == data.train_items[0][0].name


def test_synthetic_generator_is_deterministic_and_extensions_can_mislead(tmp_path):
    first = synthetic.generate(tmp_path / "a", 3, 1, 1, img_size_range=(64, 96), seed=5, misleading_extension_rate=1.0)
    second = synthetic.generate(tmp_path / "b", 3, 1, 1, img_size_range=(64, 96), seed=5, misleading_extension_rate=1.0)
    assert [p.name for p, _, _ in first.train_items] == [p.name for p, _, _ in second.train_items]
    for path, _, _ in first.train_items:
        with Image.open(path) as image:
            actual = {"PNG": ".png", "JPEG": ".jpg"}[image.format]
        assert actual != path.suffix  # misleading on purpose
        assert load_image(path).ndim == 3
