"""``ymir-runner sandbox --object-type 3|4`` and the testing kit's segmentation trees: COCO masks (RLE with string
or list counts, polygons) and label-map PNG folders become seg-coco work trees as the platform exports them
(segmentation.md section 2), read back by the core's own seg-coco reader."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import yaml
from faster_coco_eval.core import mask as coco_mask
from PIL import Image

from ymir_runner.cli import main
from ymir_runner.errors import ConfigError
from ymir_runner.protocol import masks
from ymir_runner.protocol.dataset import AnnotationReader, DatasetReader, SkipLog
from ymir_runner.protocol.env import record_model_object_type
from ymir_runner.protocol.segcoco import SEG_COCO_FILE, export_segmentation
from ymir_runner.sandbox import build_sandbox
from ymir_runner.testing import TaskTree, write_png, write_task_files

WIDTH, HEIGHT = 40, 30
CLASSES = ["cat", "dog"]


def block(x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y:y + h, x:x + w] = True
    return mask


def column_runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts (column-major runs, starting with zeros)."""
    flat = mask.flatten(order="F").astype(np.uint8)
    runs, current, length = [], 0, 0
    for value in flat:
        if value == current:
            length += 1
        else:
            runs.append(length)
            current, length = value, 1
    runs.append(length)
    return runs


def coco_annotation(ann_id: int, image_id: int, category: int, segmentation, *, iscrowd: int = 0,
                    bbox=(1, 1, 5, 5), area=25) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category, "iscrowd": iscrowd, "bbox": list(bbox),
            "area": area, "segmentation": segmentation}


@pytest.fixture
def coco_source(tmp_path):
    """Three images with every mask form a COCO file holds, and the bad ones; categories with ids 1 and 2."""
    source = tmp_path / "src"
    for number, color in enumerate([(200, 0, 0), (0, 200, 0), (0, 0, 200)], start=1):
        write_png(str(source / "images" / f"im{number}.png"), WIDTH, HEIGHT, color=color)
    list_counts = {"size": [HEIGHT, WIDTH], "counts": column_runs(block(5, 5, 6, 4))}
    polygons = [[20.7, 20.2, 25.9, 20.0, 25.0, 25.5], [30, 3, 36, 3, 36, 8, 30, 8]]
    annotations = [
        coco_annotation(11, 1, 1, masks.encode_mask(block(0, 0, 20, 20)), area=400),  # RLE string counts
        coco_annotation(12, 1, 2, [[2.9, 2.2, 12.5, 2, 12, 9, 2, 9]], iscrowd=1),  # one float polygon, crowd
        coco_annotation(13, 1, 1, polygons),  # two polygons: one merged RLE
        coco_annotation(14, 2, 2, list_counts),  # list counts: a string
        coco_annotation(21, 2, 1, {}),  # box-only: object without mask
        coco_annotation(22, 2, 1, masks.encode_mask(np.zeros((HEIGHT + 1, WIDTH), dtype=bool))),  # wrong size
        coco_annotation(23, 3, 2, [[1, 2, 3]]),  # odd polygon
        coco_annotation(24, 3, 2, masks.encode_mask(block(3, 3, 4, 4)), bbox=(3, 3, 4, 4), area=16),
        coco_annotation(25, 3, 2, masks.encode_mask(block(3, 3, 4, 4)), iscrowd=2),  # malformed mask
    ]
    document = {"images": [{"id": number, "file_name": f"im{number}.png", "width": WIDTH, "height": HEIGHT}
                           for number in (1, 2, 3)],
                "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
                "annotations": annotations}
    (source / "annotations.json").write_text(json.dumps(document))
    return source, document


def read_back(work, object_type: int, index: str = "train"):
    """The items of an index file as ``ymir-runner run`` reads them."""
    config = yaml.safe_load(open(os.path.join(work, "in", "config.yaml")))
    skips = SkipLog()
    reader = DatasetReader(os.path.join(work, "in", f"{index}-index.tsv"),
                           annotations=AnnotationReader(tuple(config["class_names"]), "seg-coco", skips,
                                                        object_type=object_type),
                           skips=skips, name=index)
    return list(reader), skips


def all_items(work, object_type: int):
    return {os.path.basename(item.image): item
            for name in ("train", "val") for item in read_back(work, object_type, name)[0]}


def test_a_coco_source_with_masks_becomes_a_seg_coco_tree(ymir_registry, coco_source, tmp_path):
    source, original = coco_source
    work = tmp_path / "work"
    summary = build_sandbox(str(source), str(work), registry=ymir_registry, object_type=4, split="random",
                            val_ratio=0.34)
    config = yaml.safe_load((work / "in" / "config.yaml").read_text())
    assert config["object_type"] == 4 and config["export_format"] == "seg-coco:raw"
    assert config["class_names"] == CLASSES
    coco_file = str(work) + SEG_COCO_FILE
    lines = [line.split("\t") for name in ("train", "val")
             for line in (work / "in" / f"{name}-index.tsv").read_text().splitlines()]
    assert len(lines) == 3 and {annotation for _image, annotation in lines} == {coco_file}
    assert not [name for name in os.listdir(work / "in" / "annotations") if name != "coco-annotations.json"]

    document = json.loads(open(coco_file).read())
    by_file = {image["file_name"]: image for image in document["images"]}
    assert sorted(by_file) == sorted(os.path.basename(image) for image, _ in lines)  # the asset basenames
    assert [image["id"] for image in document["images"]] == [1, 2, 3]
    assert all((image["width"], image["height"]) == (WIDTH, HEIGHT) for image in document["images"])
    assert document["categories"] == [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}]  # 0-based
    objects = document["annotations"]
    assert [obj["id"] for obj in objects] == [1, 2, 3, 4, 5]
    assert all(obj["confidence"] == -1 and type(obj["area"]) is int and all(type(v) is int for v in obj["bbox"])
               for obj in objects)
    first, crowd, merged, listed, kept = objects
    assert first["category_id"] == 0 and first["area"] == 400  # the source's area, never recomputed
    assert first["segmentation"] == original["annotations"][0]["segmentation"]
    assert crowd["iscrowd"] == 1 and crowd["segmentation"] == [[2, 2, 12, 2, 12, 9, 2, 9]]  # ints, as imported
    assert isinstance(merged["segmentation"]["counts"], str)
    assert isinstance(listed["segmentation"]["counts"], str) and listed["category_id"] == 1
    assert kept["bbox"] == [3, 3, 4, 4] and kept["area"] == 16
    assert summary.skipped == {"object without mask": 1, "mask size differs from image": 1, "bad polygon": 1,
                               "malformed mask": 1}
    assert summary.boxes_per_class == {"cat": 2, "dog": 3} and "masks: 5 as seg-coco" in summary.render()

    items = all_items(str(work), 4)
    decoded = {name: [mask for _segment, mask in item.masks()] for name, item in items.items()}
    image1 = next(name for name, image in by_file.items() if image["id"] == 1)
    image2 = next(name for name, image in by_file.items() if image["id"] == 2)
    assert [segment.iscrowd for segment in items[image1].segments] == [0, 1, 0]
    assert np.array_equal(decoded[image1][0], block(0, 0, 20, 20))
    two = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(original["annotations"][2]["segmentation"],
                                                                 HEIGHT, WIDTH))).astype(bool)
    assert np.array_equal(decoded[image1][2], two)  # COCO's rasteriser
    assert np.array_equal(decoded[image2][0], block(5, 5, 6, 4))


def test_semantic_trees_keep_the_file_order_that_paints_the_label_map(ymir_registry, coco_source, tmp_path):
    source, _ = coco_source
    build_sandbox(str(source), str(tmp_path / "work"), registry=ymir_registry, object_type=3)
    config = yaml.safe_load((tmp_path / "work" / "in" / "config.yaml").read_text())
    assert config["object_type"] == 3
    (item,) = [item for item in all_items(str(tmp_path / "work"), 3).values() if len(item.segments) == 3]
    label_map = item.label_map()  # image 1: the polygon (dog) painted over the cat block, as the file orders them
    assert label_map[5, 5] == 1 and label_map[15, 15] == 0 and label_map[29, 39] == masks.IGNORE_LABEL


def test_a_detection_tree_of_the_same_source_is_unchanged(ymir_registry, coco_source, tmp_path):
    source, _ = coco_source
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=ymir_registry)
    config = yaml.safe_load((tmp_path / "work" / "in" / "config.yaml").read_text())
    assert config["object_type"] == 2 and config["export_format"] == "ark:raw"
    assert not summary.skipped and summary.boxes == 9  # masks neither read nor judged: every box kept
    assert summary.annotation_format == "det-ark" and not (tmp_path / "work" / "in" / "annotations" /
                                                           "coco-annotations.json").exists()


def test_a_source_without_masks_cannot_make_a_seg_tree(ymir_registry, tmp_path):
    source = tmp_path / "voc"
    write_png(str(source / "a.png"), WIDTH, HEIGHT)
    (source / "a.xml").write_text("<annotation><filename>a.png</filename><object><name>cat</name><bndbox>"
                                  "<xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
                                  "</annotation>")
    with pytest.raises(ConfigError, match="holds no mask"):
        build_sandbox(str(source), str(tmp_path / "work"), registry=ymir_registry, object_type=3)


@pytest.mark.parametrize("options, message", [
    ({"object_type": 3, "annotation_format": "det-ark"}, "reads seg-coco"),
    ({"object_type": 2, "annotation_format": "seg-coco"}, "--object-type 3 or 4"),
    ({"object_type": 5}, "--object-type 5"),
    ({"object_type": 4, "exif_transpose": True}, "not the masks"),
])
def test_requests_a_seg_tree_cannot_honour_are_refused(ymir_registry, coco_source, tmp_path, options, message):
    source, _ = coco_source
    with pytest.raises(ConfigError, match=message):
        build_sandbox(str(source), str(tmp_path / "work"), registry=ymir_registry, **options)


# --- label maps ----------------------------------------------------------------------------------------------


def write_label_map(path, values: np.ndarray, mode: str = "P") -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = Image.fromarray(values.astype(np.uint8), mode="L")
    if mode == "P":
        image = image.convert("P")
        image.putpalette([index % 256 for index in range(768)])
    elif mode == "RGB":
        image = image.convert("RGB")
    image.save(path)


@pytest.fixture
def label_map_source(tmp_path):
    """VOC-like: JPEGImages/ (PNG here) + SegmentationClass/ + class_names.txt with a background line."""
    source = tmp_path / "voc-seg"
    first = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    first[2:10, 3:12] = 1  # cat
    first[15:25, 20:35] = 2  # dog
    first[14, :] = 255  # void
    second = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
    second[0:5, 0:5] = 2
    second[5:6, 0:5] = 7  # no class name for 7
    for name, values, color in (("a", first, (10, 10, 10)), ("b", second, (20, 20, 20))):
        write_png(str(source / "JPEGImages" / f"{name}.png"), WIDTH, HEIGHT, color=color)
        write_label_map(str(source / "SegmentationClass" / f"{name}.png"), values)
    write_png(str(source / "JPEGImages" / "c.png"), WIDTH + 2, HEIGHT, color=(30, 30, 30))
    write_label_map(str(source / "SegmentationClass" / "c.png"), first)  # 40x30 for a 42x30 image
    write_label_map(str(source / "SegmentationClass" / "orphan.png"), first)
    (source / "class_names.txt").write_text("_background_\ncat\ndog\n")
    return source, first, second


@pytest.mark.parametrize("object_type", [3, 4])
def test_label_map_folders_become_seg_coco_trees(ymir_registry, label_map_source, tmp_path, object_type):
    source, first, second = label_map_source
    work = tmp_path / "work"
    summary = build_sandbox(str(source), str(work), registry=ymir_registry, object_type=object_type)
    assert summary.source_format == "label-maps" and summary.class_names == ("cat", "dog")
    assert summary.skipped == {"label map without image": 1, "label map size differs from image": 1,
                               "label value without class name": 1}
    items = all_items(str(work), object_type)
    assert len(items) == 3  # c is kept, without objects
    by_objects = sorted(items.values(), key=lambda item: len(item.segments))
    unlabelled, small, big = by_objects
    assert not unlabelled.segments
    assert [segment.class_id for segment in big.segments] == [0, 1]
    (cat, cat_mask), (dog, dog_mask) = list(big.masks())
    assert np.array_equal(cat_mask, first == 1) and np.array_equal(dog_mask, first == 2)
    assert np.array_equal(next(iter(small.masks()))[1], second == 2)
    label_map = big.label_map()
    assert label_map[14, 0] == masks.IGNORE_LABEL and label_map[0, 0] == masks.IGNORE_LABEL  # void, background
    document = json.loads(open(str(work) + SEG_COCO_FILE).read())
    assert all(isinstance(obj["segmentation"]["counts"], str) for obj in document["annotations"])
    assert {obj["area"] for obj in document["annotations"]} == {int((first == 1).sum()), int((first == 2).sum()),
                                                               25}


def test_label_maps_without_a_names_file_take_classes_by_value(ymir_registry, label_map_source, tmp_path):
    source, first, _ = label_map_source
    (source / "class_names.txt").unlink()
    with pytest.raises(ConfigError, match="--classes"):
        build_sandbox(str(source), str(tmp_path / "w1"), registry=ymir_registry, object_type=3)
    with pytest.raises(ConfigError, match="class index 7"):
        build_sandbox(str(source), str(tmp_path / "w2"), registry=ymir_registry, object_type=3,
                      classes=["bg", "cat", "dog"])
    summary = build_sandbox(str(source), str(tmp_path / "w3"), registry=ymir_registry, object_type=3,
                            classes=[f"c{value}" for value in range(8)])
    assert summary.boxes_per_class["c0"] == 2  # value 0 a class (no names file): a and b (c differs in size)


def test_a_colour_coded_map_is_skipped_and_counted(ymir_registry, label_map_source, tmp_path):
    source, first, _ = label_map_source
    write_label_map(str(source / "SegmentationClass" / "a.png"), first, mode="RGB")
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=ymir_registry, object_type=3,
                            format="label-maps")
    assert summary.skipped["label map not class indexes"] == 1


def test_the_cli_builds_a_seg_tree(ymir_registry, label_map_source, tmp_path, capsys, monkeypatch):
    source, _, _ = label_map_source
    monkeypatch.setattr("ymir_runner.plugins._entry_points", lambda: [])
    assert main(["sandbox", str(source), "--out", str(tmp_path / "work"), "--object-type", "4"]) == 0
    out = capsys.readouterr().out
    assert "from label-maps data" in out and "masks: 3 as seg-coco" in out
    assert yaml.safe_load((tmp_path / "work" / "in" / "config.yaml").read_text())["object_type"] == 4


# --- the testing kit -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("object_type", [3, 4])
def test_the_testing_kit_builds_seg_trees(tmp_path, object_type):
    tree = TaskTree(str(tmp_path / "t"), object_type=object_type, images=4)
    assert tree.config["object_type"] == object_type and tree.config["export_format"] == "seg-coco:raw"
    assert set(tree.annotations) == {SEG_COCO_FILE}
    skips = SkipLog()
    reader = DatasetReader(tree.local("/in/train-index.tsv"), skips=skips, name="training", root=tree.root,
                           annotations=AnnotationReader(tuple(tree.class_names), "seg-coco", skips,
                                                        object_type=object_type))
    items = list(reader)
    assert len(items) == 2 and skips.total == 0
    for index, item in enumerate(items):
        class_id, x1, y1, x2, y2 = tree.boxes_of(index)[0]
        (segment, mask), = list(item.masks())
        expected = np.zeros((tree.size[1], tree.size[0]), dtype=bool)
        expected[y1:y2 + 1, x1:x2 + 1] = True
        assert segment.class_id == class_id and np.array_equal(mask, expected)
    assert isinstance(tree.segmentation_of(0), dict) and isinstance(tree.segmentation_of(1), list)


def test_export_segmentation_gives_only_the_platforms_forms():
    assert export_segmentation([[1.9, 1, 9, 1, 9, 9]], HEIGHT, WIDTH) == [[1, 1, 9, 1, 9, 9]]
    merged = export_segmentation([[1, 1, 9, 1, 9, 9], [20, 20, 25, 20, 25, 25]], HEIGHT, WIDTH)
    assert set(merged) == {"size", "counts"} and isinstance(merged["counts"], str)
    with pytest.raises(masks.MaskProblem) as problem:
        export_segmentation({}, HEIGHT, WIDTH)
    assert problem.value.reason == masks.NO_MASK


# --- the model's object type -----------------------------------------------------------------------------------


def seg_models(tmp_path, object_type: int | None):
    """A previous training's /out/models (one stage), with the object type a seg training records."""
    models = tmp_path / "models"
    (models / "epoch_1").mkdir(parents=True)
    (models / "epoch_1" / "model.json").write_text("{}")
    (models / "result.yaml").write_text(yaml.safe_dump({
        "best_stage_name": "epoch_1",
        "model_stages": {"epoch_1": {"stage_name": "epoch_1", "files": ["model.json"], "timestamp": 1700000000,
                                     "maskAP": 0.5}}}))
    if object_type is not None:
        record_model_object_type(str(models), object_type)
    return models


def test_inference_trees_take_the_models_object_type(ymir_registry, label_map_source, tmp_path):
    source, _, _ = label_map_source
    models = seg_models(tmp_path, 4)
    work = tmp_path / "work"
    build_sandbox(str(source), str(work), registry=ymir_registry, tasks=["infer"], model=str(models),
                  classes=["cat", "dog"])
    config = yaml.safe_load((work / "in" / "config.yaml").read_text())
    assert config["object_type"] == 4 and "export_format" not in config
    assert (work / "in" / "candidate-index.tsv").read_text().count("\n") == 3
    with pytest.raises(ConfigError, match="300005"):
        build_sandbox(str(source), str(tmp_path / "w2"), registry=ymir_registry, tasks=["infer"],
                      model=str(models), classes=["cat", "dog"], object_type=3)


def test_a_detection_model_stays_detection(ymir_registry, label_map_source, tmp_path):
    source, _, _ = label_map_source
    build_sandbox(str(source), str(tmp_path / "work"), registry=ymir_registry, tasks=["mining"],
                  model=str(seg_models(tmp_path, None)), classes=["cat", "dog"])
    assert yaml.safe_load((tmp_path / "work" / "in" / "config.yaml").read_text())["object_type"] == 2


def test_write_task_files_writes_a_seg_tasks_config(tmp_path):
    env_file = write_task_files(str(tmp_path), ["training"], {"epochs": 1}, object_type=3)
    config = yaml.safe_load(open(os.path.join(os.path.dirname(env_file), "config.yaml")))
    assert (config["object_type"], config["export_format"], config["epochs"]) == (3, "seg-coco:raw", 1)
