"""The synthetic segmentation data (object types 3 and 4): scenes written as the platform exports seg-coco:raw,
whose label maps are exactly what the pictures show (the last shape pasted wins)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ymir_runner import IGNORE_LABEL
from ymir_runner.protocol.dataset import AnnotationReader, DatasetReader, SkipLog
from ymir_runner_detection import synthetic

#: No pixel noise, no clutter, occlusion allowed: every shape's visible pixels keep its one colour in a PNG.
CLEAN_OVERLAPPING = synthetic.SceneConfig(objects_range=(4, 8), min_object_size=16.0, max_occlusion=0.6,
                                          max_clutter_lines=0, noise_std_range=(0.0, 0.0))


@pytest.fixture(scope="module")
def seg_data(tmp_path_factory):
    return synthetic.generate_segmentation(tmp_path_factory.mktemp("seg"), n_train=10, n_val=4, n_candidates=3,
                                           img_size_range=(64, 96), seed=3, scene=CLEAN_OVERLAPPING)


def read_set(index: Path, skips: SkipLog):
    reader = AnnotationReader(list(synthetic.CLASS_NAMES), "seg-coco", skips, object_type=3)
    return list(DatasetReader(str(index), annotations=reader, skips=skips, name="training"))


def test_segmentation_data_is_seg_coco_as_the_platform_exports_it(seg_data):
    lines = [line.split("\t") for line in seg_data.train_index.read_text().splitlines()]
    lines += [line.split("\t") for line in seg_data.val_index.read_text().splitlines()]
    assert len(lines) == 14 and {annotation for _, annotation in lines} == {str(seg_data.annotation_file)}
    assert seg_data.annotation_file == seg_data.root / "annotations" / "coco-annotations.json"
    document = json.loads(seg_data.annotation_file.read_text())
    assert [image["id"] for image in document["images"]] == list(range(1, 15))
    assert [image["file_name"] for image in document["images"]] == [Path(path).name for path, _ in lines]
    for image in document["images"]:
        with Image.open(seg_data.root / "assets" / image["file_name"][-6:-4] / image["file_name"]) as picture:
            assert picture.size == (image["width"], image["height"])
    assert {category["id"]: category["name"] for category in document["categories"]} == dict(
        enumerate(synthetic.CLASS_NAMES))
    for annotation in document["annotations"]:
        assert annotation["iscrowd"] == 0 and annotation["confidence"] == -1
        assert isinstance(annotation["segmentation"]["counts"], str) and annotation["area"] > 0
        assert annotation["bbox"][2] >= 1 and annotation["bbox"][3] >= 1
    assert [str(path) for path in seg_data.candidate_paths] == seg_data.candidate_index.read_text().split()


def test_label_maps_are_what_the_core_reads_and_what_the_pictures_show(seg_data):
    skips = SkipLog()
    items = read_set(seg_data.train_index, skips) + read_set(seg_data.val_index, skips)
    assert skips.total == 0, skips.summary()
    expected = seg_data.train_items + seg_data.val_items
    assert len(items) == len(expected)
    checked = 0
    for item, (path, label_map) in zip(items, expected):
        assert item.image == str(path)
        # the platform paints the objects in file order: exactly the generator's label map
        np.testing.assert_array_equal(item.label_map(), label_map)
        assert label_map.dtype == np.uint8 and set(np.unique(label_map)) <= {0, 1, 2, IGNORE_LABEL}
        with Image.open(path) as picture:
            if picture.format != "PNG":
                continue  # JPEG blurs the edges; a PNG of a noise-free scene keeps each shape's one colour
            pixels = np.asarray(picture.convert("RGB"))
        for _segment, mask in item.masks():
            colours = np.unique(pixels[mask], axis=0)
            assert len(colours) == 1, f"{path.name}: a listed mask covers pixels of another shape"
        checked += 1
    assert checked >= 3


def test_the_last_shape_pasted_wins():
    rng = np.random.default_rng(0)
    scenes = [synthetic.render_scene(rng, (64, 64), CLEAN_OVERLAPPING) for _ in range(20)]
    occluded = 0
    for scene in scenes:
        labels = scene.label_map()
        painted = np.full_like(labels, IGNORE_LABEL)
        for cls, mask in scene.visible_masks():
            assert not (painted[mask] != IGNORE_LABEL).any(), "visible masks overlap"
            painted[mask] = cls
        np.testing.assert_array_equal(painted, labels)
        last_cls, x, y, last = scene.shapes[-1]
        np.testing.assert_array_equal(labels[y:y + last.shape[0], x:x + last.shape[1]][last], last_cls)
        full_area = sum(int(mask.sum()) for _, _, _, mask in scene.shapes)
        occluded += full_area > int((labels != IGNORE_LABEL).sum())
    assert occluded >= 5  # the scenes do overlap, so the rule is exercised


def test_detection_scenes_are_unchanged_by_the_segmentation_record():
    """render_image is render_scene without the masks: the same random draws, so every seeded detection dataset
    (the demo's, the benchmarks', the reference inference's) keeps its bytes."""
    first, second = np.random.default_rng(11), np.random.default_rng(11)
    for _ in range(3):
        pixels, boxes, classes = synthetic.render_image(first, (64, 96))
        scene = synthetic.render_scene(second, (64, 96))
        np.testing.assert_array_equal(pixels, scene.pixels)
        np.testing.assert_array_equal(boxes, scene.boxes)
        np.testing.assert_array_equal(classes, scene.classes)
        for box, (_cls, x, y, mask) in zip(boxes, scene.shapes):
            assert list(box) == [x, y, x + mask.shape[1], y + mask.shape[0]]


def test_segmentation_data_is_deterministic(tmp_path):
    first = synthetic.generate_segmentation(tmp_path / "a", 2, 1, 1, img_size_range=(48, 64), seed=5)
    second = synthetic.generate_segmentation(tmp_path / "b", 2, 1, 1, img_size_range=(48, 64), seed=5)
    assert [path.name for path, _ in first.train_items] == [path.name for path, _ in second.train_items]
    assert first.annotation_file.read_bytes() == second.annotation_file.read_bytes()
