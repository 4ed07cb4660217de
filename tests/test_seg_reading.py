"""Reading seg-coco:raw for object types 3 and 4 (issue 26): masks kept lazily, in file order, with their crowd
flags; each bad input skipped, counted and named (file, annotation id); the errors that name export_format."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest
from faster_coco_eval.core import mask as coco_mask

import ymir_runner
from ymir_runner.errors import ConfigError, DatasetError, ReturnCode
from ymir_runner.preflight import check_training_boxes
from ymir_runner.protocol import masks
from ymir_runner.protocol.config import parse_config
from ymir_runner.protocol.dataset import AnnotationReader, DatasetReader, SkipLog, check_mask_format
from ymir_runner.protocol.env import TaskKind
from ymir_runner.testing import write_png

CLASSES = ("cat", "dog", "person")
WIDTH, HEIGHT = 40, 30


def rle_of(mask: np.ndarray) -> dict:
    return masks.encode_mask(mask)


def block(x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((HEIGHT, WIDTH), dtype=bool)
    mask[y:y + h, x:x + w] = True
    return mask


def annotation(ann_id: int, category: int, segmentation, *, image_id: int = 1, iscrowd: int = 0,
               bbox=(0, 0, 10, 10)) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": category, "iscrowd": iscrowd, "bbox": list(bbox),
            "confidence": -1.0, "area": 1, "segmentation": segmentation}


class SegTree:
    """A seg-coco export as the platform writes one: images under /in/assets, one shared
    /in/annotations/coco-annotations.json named on every index line."""

    def __init__(self, base) -> None:
        self.root = str(base)
        self.images: list[dict] = []

    def local(self, path: str) -> str:
        return f"{self.root}{path}"

    def image(self, name: str, width: int = WIDTH, height: int = HEIGHT) -> int:
        write_png(self.local(f"/in/assets/{name}"), width, height)
        self.images.append({"id": len(self.images) + 1, "file_name": name, "width": width, "height": height})
        return len(self.images)

    def reader(self, annotations: list[dict], *, object_type: int = 4, fmt: str = "seg-coco",
               classes: tuple[str, ...] = CLASSES) -> DatasetReader:
        coco = {"images": self.images, "annotations": annotations,
                "categories": [{"id": index, "name": name} for index, name in enumerate(classes)]}
        path = "/in/annotations/coco-annotations.json"
        os.makedirs(os.path.dirname(self.local(path)), exist_ok=True)
        with open(self.local(path), "w", encoding="utf-8") as stream:
            json.dump(coco, stream)
        index = self.local("/in/train-index.tsv")
        with open(index, "w", encoding="utf-8") as stream:
            stream.writelines(f"/in/assets/{image['file_name']}\t{path}\n" for image in self.images)
        skips = SkipLog()
        return DatasetReader(index, annotations=AnnotationReader(classes, fmt, skips, object_type=object_type),
                             skips=skips, name="training", root=self.root)


@pytest.fixture
def tree(tmp_path) -> SegTree:
    return SegTree(tmp_path)


def test_every_mask_form_is_read_in_file_order_with_crowd_flags(tree):
    tree.image("a.png")
    polygon = [[2, 2, 12, 2, 12, 9, 2, 9]]
    two_polygons = [[20, 20, 25, 20, 25, 25], [30, 3, 36, 3, 36, 8, 30, 8]]
    # block(5, 5, 6, 4) as column-major runs: 5 columns and 5 rows off, then 4 on / 26 off per column
    runs = [5 * HEIGHT + 5] + [4, HEIGHT - 4] * 5 + [4]
    list_counts = {"size": [HEIGHT, WIDTH], "counts": runs + [HEIGHT * WIDTH - sum(runs)]}
    reader = tree.reader([
        annotation(11, 1, rle_of(block(0, 0, 20, 20))),
        annotation(12, 0, polygon, iscrowd=1),
        annotation(13, 2, two_polygons),
        annotation(14, 1, list_counts),
    ])
    (item,) = list(reader)
    assert [s.annotation_id for s in item.segments] == [11, 12, 13, 14]
    assert [s.class_id for s in item.segments] == [1, 0, 2, 1]
    assert [s.iscrowd for s in item.segments] == [0, 1, 0, 0]
    assert len(item.boxes) == 4 and reader.skips.total == 0
    decoded = [mask for _, mask in item.masks()]
    assert all(mask.shape == (HEIGHT, WIDTH) and mask.dtype == np.bool_ for mask in decoded)
    assert np.array_equal(decoded[0], block(0, 0, 20, 20))
    coco_polygon = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygon, HEIGHT, WIDTH))).astype(bool)
    assert np.array_equal(decoded[1], coco_polygon)  # COCO's rasteriser, as the platform's
    assert decoded[2][5, 33] and decoded[2][21, 23]  # both parts of a multi-part object
    assert np.array_equal(decoded[3], block(5, 5, 6, 4))


def test_reading_decodes_no_mask(tree, monkeypatch):
    tree.image("a.png")
    tree.image("b.png")
    annotations = [annotation(1, 0, rle_of(block(1, 1, 5, 5))), annotation(2, 1, [[1, 1, 9, 1, 9, 9]]),
                   annotation(3, 2, rle_of(block(3, 3, 3, 3)), image_id=2)]

    def no_decoding(*args, **kwargs):
        raise AssertionError("a mask was decoded while reading")

    for name in ("decode", "frPyObjects", "merge"):
        monkeypatch.setattr(masks.coco_mask, name, no_decoding)
    items = list(tree.reader(annotations))
    assert [len(item.segments) for item in items] == [2, 1]
    assert items[0].segments[0].segmentation is not None  # the json value, kept as it was
    monkeypatch.undo()
    assert masks.mask_area(next(items[1].masks())[1]) == 9  # decoded when asked


def test_masks_reduce_with_the_image_and_label_map_paints_in_file_order(tree):
    tree.image("a.png")
    reader = tree.reader([annotation(1, 0, rle_of(block(0, 0, 20, 30))), annotation(2, 2, rle_of(block(10, 0, 20, 10))),
                          annotation(3, 1, rle_of(block(0, 20, 4, 4)), iscrowd=1)])
    (item,) = list(reader)
    label_map = item.label_map()
    assert label_map.shape == (HEIGHT, WIDTH) and label_map.dtype == np.uint8
    assert label_map[5, 15] == 2  # the later object painted over the earlier one
    assert label_map[15, 15] == 0 and label_map[21, 1] == 1 and label_map[29, 39] == 255
    reduced = [mask for _, mask in item.masks(factor=4)]
    assert all(mask.shape == (8, 10) for mask in reduced)  # ceil(30 / 4) x ceil(40 / 4), as the image is reduced
    assert np.array_equal(reduced[0], masks.reduce_mask(block(0, 0, 20, 30), 4))
    assert item.label_map(factor=4).shape == (8, 10)


BAD_INPUTS = [
    # (segmentation or category, skip reason, a word of the detail)
    ({}, "object without mask", "segmentation {}"),
    ({"size": [HEIGHT, WIDTH], "counts": masks.encode_mask(np.zeros((HEIGHT, WIDTH - 1), bool))["counts"]},
     "mask size differs from image", f"the image has {HEIGHT} x {WIDTH}"),
    ({"size": [WIDTH, HEIGHT], "counts": masks.encode_mask(np.zeros((WIDTH, HEIGHT), bool))["counts"]},
     "mask size differs from image", f"the image is {HEIGHT} x {WIDTH}"),
    ([[1, 1, 9, 1, 9]], "bad polygon", "5 coordinates"),
    ([[]], "bad polygon", "0 coordinates"),
    ([], "bad polygon", "no polygon"),
    ("category 7", "class name outside class_names", "7"),
]


@pytest.mark.parametrize(("bad", "reason", "detail"), BAD_INPUTS, ids=[case[1] + str(i) for i, case in
                                                                       enumerate(BAD_INPUTS)])
def test_bad_input_is_skipped_counted_and_named(tree, caplog, bad, reason, detail):
    tree.image("a.png")
    good = annotation(1, 0, rle_of(block(0, 0, 5, 5)))
    wrong = annotation(42, 7, rle_of(block(1, 1, 2, 2))) if bad == "category 7" else annotation(42, 1, bad)
    caplog.set_level(logging.WARNING)
    reader = tree.reader([good, wrong, annotation(3, 2, rle_of(block(9, 9, 5, 5)))])
    (item,) = list(reader)
    assert [s.annotation_id for s in item.segments] == [1, 3]  # the others of its image are kept
    assert reader.skips.counts == {reason: 1}
    assert f"1 {reason}" in reader.skips.report()
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert reason in warning and "coco-annotations.json" in warning and "annotation id 42" in warning
    assert detail in warning
    assert all(masks.mask_area(mask) == 25 for _, mask in item.masks())  # never decoded into garbage


def test_a_detection_task_reads_the_same_file_as_boxes(tree):
    tree.image("a.png")
    reader = tree.reader([annotation(1, 0, {}), annotation(2, 1, rle_of(block(0, 0, 5, 5)))], object_type=2)
    (item,) = list(reader)
    assert len(item.boxes) == 2 and item.segments == () and reader.skips.total == 0


def test_box_sticking_out_is_clipped_and_the_mask_kept(tree):
    tree.image("a.png")
    reader = tree.reader([annotation(5, 0, rle_of(block(30, 20, 10, 10)), bbox=(30, 20, 15, 15))])
    (item,) = list(reader)
    assert (item.boxes[0].x2, item.boxes[0].y2) == (WIDTH, HEIGHT) and len(item.segments) == 1
    assert reader.skips.repairs == {"box clipped to image": 1}


def _config(fmt: str, object_type: int):
    return parse_config({"class_names": list(CLASSES), "object_type": object_type, "export_format": fmt})


def test_no_object_with_a_mask_is_a_dataset_error_naming_export_format(tree):
    tree.image("a.png")
    tree.image("b.png")
    reader = tree.reader([annotation(1, 0, {}), annotation(2, 1, {}, image_id=2)], object_type=3)
    items = list(reader)
    assert len(items) == 2 and reader.skips.counts == {"object without mask": 2}
    with pytest.raises(DatasetError) as raised:
        check_training_boxes(items, _config("seg-coco:raw", 3))
    assert raised.value.code == ReturnCode.DATASET == 300002
    assert "has an object with a mask" in raised.value.message and "'export_format'" in raised.value.message
    assert "seg-coco:raw" in raised.value.message


@pytest.mark.parametrize("fmt", ["det-ark", "det-voc", "seg-mask"])
@pytest.mark.parametrize("object_type", [3, 4])
def test_a_format_without_masks_on_a_seg_task_is_a_config_error_naming_export_format(fmt, object_type):
    with pytest.raises(ConfigError) as raised:
        AnnotationReader(CLASSES, fmt, SkipLog(), object_type=object_type)
    assert raised.value.code == ReturnCode.CONFIG == 300001
    message = raised.value.message
    assert "'export_format'" in message and "carries no masks" in message and "'seg-coco:raw'" in message
    with pytest.raises(ConfigError, match="'ark:raw' carries no masks"):
        check_mask_format("det-ark", object_type, "ark:raw")
    check_mask_format(fmt, 2)  # detection: unchanged


@pytest.mark.parametrize("case_index", [0, 1, 2])
def test_the_platforms_own_exports_read_with_their_areas_and_crowd_flags(tmp_path, case_index):
    golden = os.path.join(os.path.dirname(__file__), "data", "seg_platform_cases.json")
    with open(golden, encoding="utf-8") as stream:
        case = json.load(stream)["cases"][case_index]  # as the platform's exporter writes seg-coco
    tree = SegTree(tmp_path)
    for image in case["images"]:
        assert tree.image(image["file_name"], image["width"], image["height"]) == image["id"]
    reader = tree.reader(case["ground_truth"], classes=tuple(case["class_names"]))
    items = list(reader)
    assert reader.skips.total == 0 and len(items) == len(case["images"])
    by_image = {image["id"]: [entry for entry in case["ground_truth"] if entry["image_id"] == image["id"]]
                for image in case["images"]}
    for item, image in zip(items, case["images"]):
        expected = by_image[image["id"]]
        assert [segment.annotation_id for segment in item.segments] == [entry["id"] for entry in expected]
        assert [segment.iscrowd for segment in item.segments] == [entry["iscrowd"] for entry in expected]
        assert [masks.mask_area(mask) for _, mask in item.masks()] == [entry["area"] for entry in expected]


def test_the_dataset_report_gives_the_seg_facts(tree):
    from ymir_runner.dataset_report import report_readers

    tree.image("a.png")
    tree.image("b.png")
    reader = tree.reader([annotation(1, 0, rle_of(block(0, 0, 10, 10))),
                          annotation(2, 2, rle_of(block(5, 5, 10, 10)), iscrowd=1),
                          annotation(3, 0, [[0, 0, 20, 0, 20, 10, 0, 10]], image_id=2),
                          annotation(4, 1, {}, image_id=2)])
    report = report_readers([reader], CLASSES)
    text = report.text()
    assert "masks per class (training): cat 2, dog 0, person 1" in text
    # cat: 100 pixels + the polygon's 200 (COCO's rasteriser: 20 x 10); person 100; overlaps counted per object
    assert "mask pixels per class (training; sum of the objects' areas): cat 300, dog 0, person 100" in text
    unlabelled = (2 * HEIGHT * WIDTH - 175 - 200) / (2 * HEIGHT * WIDTH)
    assert f"training masks: 1 crowd objects; {unlabelled:.1%} of the pixels in no mask" in text
    assert "training: 1 object without mask: a segmentation task learns from masks" in text


def test_mask_pixels_of_a_large_split_are_measured_on_an_even_sample(tree, monkeypatch):
    from ymir_runner import dataset_report

    for name in "abc":
        tree.image(f"{name}.png")
    reader = tree.reader([annotation(index, 0, rle_of(block(0, 0, 10, 10)), image_id=index, iscrowd=index % 2)
                          for index in (1, 2, 3)])
    monkeypatch.setattr(dataset_report, "MASK_PIXEL_IMAGES", 2)
    text = dataset_report.report_readers([reader], CLASSES).text()
    assert "masks per class (training): cat 3, dog 0, person 0" in text  # counted on every image
    assert "(training; sum of the objects' areas; training on 2 of 3 images): cat 200," in text
    assert "training masks: 2 crowd objects; " in text and "of the pixels of 2 images in no mask" in text


# --- through `ymir-runner run`: what a user sees --------------------------------------------------------------


class MaskReader:
    """A segmentation trainer that reads every training mask the core hands it and records what it saw."""

    def __init__(self, object_type: int) -> None:
        self.object_type = object_type
        self.seen: list[tuple[int, int, tuple[int, int], int]] = []

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ymir_runner.ExecutorSpec(name="masks", tasks={TaskKind.TRAINING}, object_types={self.object_type},
                                         annotation_formats=("seg-coco", "det-ark"))]

    @ymir_runner.hookimpl
    def ymir_runner_train(self, context):
        for item in context.training_set:
            for segment, mask in item.masks():
                self.seen.append((segment.annotation_id, segment.iscrowd, mask.shape, masks.mask_area(mask)))
        folder = context.training_result.stage_dir("epoch_1")
        open(os.path.join(folder, "model.bin"), "w").close()
        metric = "mIoU" if self.object_type == 3 else "maskAP"
        context.training_result.add_stage("epoch_1", ["model.bin"], {metric: 0.5})


def seg_task(ymir_task, object_type: int, segmentations: list, export_format: str = "seg-coco:raw"):
    """A training tree of 4 images (64 x 48) exported as seg-coco: image i's object is ``segmentations[i]``; the
    first two images train, the others validate."""
    tree = ymir_task(config={"object_type": object_type, "export_format": export_format})
    coco = "/in/annotations/coco-annotations.json"
    width, height = tree.size
    document = {"images": [{"id": number, "file_name": os.path.basename(image), "width": width, "height": height}
                           for number, image in enumerate(tree.images, start=1)],
                "categories": [{"id": i, "name": n} for i, n in enumerate(tree.class_names)],
                "annotations": [annotation(100 + number, number % 2, segmentation, image_id=number,
                                           iscrowd=int(number == 2))
                                for number, segmentation in enumerate(segmentations, start=1)]}
    with open(tree.local(coco), "w", encoding="utf-8") as stream:
        json.dump(document, stream)
    for index_file, images in (("/in/train-index.tsv", tree.images[:2]), ("/in/val-index.tsv", tree.images[2:])):
        with open(tree.local(index_file), "w", encoding="utf-8") as stream:
            stream.write("".join(f"{image}\t{coco}\n" for image in images))
    return tree


def square(size: int = 10) -> dict:
    mask = np.zeros((48, 64), dtype=bool)
    mask[:size, :size] = True
    return masks.encode_mask(mask)


@pytest.mark.parametrize("object_type", [3, 4])
def test_a_seg_training_reads_masks_at_the_stored_size_and_reports_the_bad_ones(ymir_registry, ymir_task,
                                                                                object_type):
    plugin = MaskReader(object_type)
    ymir_registry.register(plugin, "masks")
    bad_size = {"size": [48, 64], "counts": masks.encode_mask(np.zeros((48, 63), bool))["counts"]}
    tree = seg_task(ymir_task, object_type, [square(10), square(5), bad_size, square(3)])
    outcome = tree.run(ymir_registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert plugin.seen == [(101, 0, (48, 64), 100), (102, 1, (48, 64), 25)]  # crowd flag and ids as exported
    assert "mask size differs from image" in outcome.stderr and "annotation id 103" in outcome.stderr
    assert "masks per class (training / validation)" in outcome.stderr


@pytest.mark.parametrize("object_type", [3, 4])
def test_a_seg_training_with_no_mask_stops_with_300002_naming_export_format(ymir_registry, ymir_task, object_type):
    ymir_registry.register(MaskReader(object_type), "masks")
    outcome = seg_task(ymir_task, object_type, [{}, {}, {}, {}]).run(ymir_registry)
    assert outcome.exit_code != 0 and outcome.return_code == 300002
    assert "has an object with a mask" in outcome.last_stderr_line and "export_format" in outcome.last_stderr_line
    assert "object without mask" in outcome.stderr and "annotation id 101" in outcome.stderr


def test_a_seg_training_on_det_ark_stops_with_300001_naming_export_format(ymir_registry, ymir_task):
    ymir_registry.register(MaskReader(4), "masks")
    outcome = seg_task(ymir_task, 4, [square()] * 4, export_format="ark:raw").run(ymir_registry)
    assert outcome.exit_code != 0 and outcome.return_code == 300001
    assert "'export_format': 'ark:raw' carries no masks" in outcome.last_stderr_line
    assert "'seg-coco:raw'" in outcome.last_stderr_line


def test_the_dataset_report_says_how_seg_scores_treat_a_class_without_validation_objects(tmp_path, capsys,
                                                                                         monkeypatch):
    import seg_toy_plugin

    from ymir_runner import plugins
    from ymir_runner.cli import main
    from ymir_runner.testing import TaskTree, plugin_registry

    monkeypatch.setattr(plugins, "build_plugin_manager", lambda: plugin_registry({"segtoy": seg_toy_plugin}))
    # Images 0 and 1 train (cat, dog), images 2 and 3 validate (bird, cat): no dog to validate on.
    tree = TaskTree(str(tmp_path), class_names=("cat", "dog", "bird"), images=4, object_type=4)
    assert main(["inspect", "--env", tree.env_file, "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "classes with no validation object: dog: instance segmentation counts their maskAP as 0" in out
    assert "their AP is undefined" not in out
