"""infer-result.json of segmentation tasks (object_type 3 and 4), the COCO form of segmentation.md section 4, and the
main metric of result.yaml by object type.

One test per row of section 4's table of forms that crash a task or lose objects on the platform: each must be
impossible to write through :class:`SegInferResult`."""

import json
import os
import time
import tracemalloc

import faster_coco_eval.mask_api_new_cpp as coco_cpp
import numpy as np
import pytest
from faster_coco_eval.core import mask as coco_mask

import ymir_runner
from ymir_runner.protocol.env import TaskKind
from ymir_runner.protocol.results import (
    EncodedMask,
    InstanceMask,
    SegInferResult,
    TrainingResult,
    fitness,
    main_metric,
)
from ymir_runner.testing import write_png

CLASSES = ("cat", "dog", "person")


def blob(height, width, x, y, w, h):
    mask = np.zeros((height, width), bool)
    mask[y:y + h, x:x + w] = True
    return mask


def written(writer, candidates=()):
    writer.write(candidates)
    with open(writer.path, encoding="utf-8") as stream:
        return json.load(stream)


def decoded(annotation):
    rle = dict(annotation["segmentation"])
    return coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()}).astype(bool)


def instance_writer(tmp_path, classes=CLASSES):
    return SegInferResult(str(tmp_path / "infer-result.json"), classes, 4)


def semantic_writer(tmp_path, classes=CLASSES):
    return SegInferResult(str(tmp_path / "infer-result.json"), classes, 3)


# --- the form to write ---------------------------------------------------------------------------------------

def test_instance_form_is_exactly_the_coco_form(tmp_path):
    writer = instance_writer(tmp_path)
    mask = blob(48, 64, 10, 5, 20, 10)
    mask[7, 10] = False  # not a rectangle: area is the pixel count, not w * h
    writer.add("/in/assets/ab/abc.jpg", [InstanceMask(mask, 0.87, 1)], 64, 48)
    document = written(writer)
    assert document == {
        "images": [{"id": 1, "file_name": "abc.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}, {"id": 2, "name": "person"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 10], "area": 199,
                         "segmentation": {"size": [48, 64], "counts": document["annotations"][0]["segmentation"][
                             "counts"]},
                         "iscrowd": 0, "confidence": 0.87}]}
    annotation = document["annotations"][0]
    assert isinstance(annotation["segmentation"]["counts"], str)
    assert (decoded(annotation) == mask).all()


def test_a_box_sized_mask_at_its_origin_is_written_as_the_full_image_mask(tmp_path):
    writer = instance_writer(tmp_path)
    crop = np.ones((10, 20), np.uint8)
    crop[0, 0] = 0
    writer.add("img.png", [InstanceMask(crop, 0.5, 0, origin=(10, 5))], 64, 48)
    annotation = written(writer)["annotations"][0]
    expected = blob(48, 64, 10, 5, 20, 10)
    expected[5, 10] = False
    assert (decoded(annotation) == expected).all()
    assert annotation["bbox"] == [10, 5, 20, 10] and annotation["area"] == 199


# --- one test per crash or loss form (segmentation.md section 4) -------------------------------------------

def test_images_categories_and_annotations_are_always_there(tmp_path):
    writer = instance_writer(tmp_path)
    document = written(writer)  # a missing key crashes the task
    assert set(document) == {"images", "categories", "annotations"}
    assert document["images"] == [] and document["annotations"] == [] and len(document["categories"]) == 3


def test_every_candidate_is_listed_once_with_a_unique_id(tmp_path):
    writer = instance_writer(tmp_path)
    first = write_png(str(tmp_path / "in" / "aa" / "one.png"), 32, 24)
    second = str(tmp_path / "in" / "bb" / "two.png")  # missing: listed without a size
    writer.add(first, [InstanceMask(blob(24, 32, 1, 1, 3, 3), 0.9, 0)], 32, 24)
    writer.add(first, [InstanceMask(blob(24, 32, 2, 2, 3, 3), 0.8, 0)], 32, 24)  # the latest result wins
    writer.add_empty(str(tmp_path / "in" / "cc" / "three.png"), 32, 24)
    document = written(writer, [first, second, first])
    ids = [image["id"] for image in document["images"]]
    assert len(ids) == len(set(ids)) == 3  # an id used twice makes the platform ignore every image with it
    assert [image["file_name"] for image in document["images"]] == ["one.png", "three.png", "two.png"]
    assert document["images"][2] == {"id": 3, "file_name": "two.png"}
    assert [annotation["bbox"] for annotation in document["annotations"]] == [[2, 2, 3, 3]]


def test_an_unread_candidate_is_listed_with_its_header_size(tmp_path):
    writer = instance_writer(tmp_path)
    path = write_png(str(tmp_path / "in" / "aa" / "one.png"), 32, 24)
    assert written(writer, [path])["images"] == [{"id": 1, "file_name": "one.png", "width": 32, "height": 24}]


def test_file_name_is_the_basename(tmp_path):
    writer = instance_writer(tmp_path)
    writer.add("/in/assets/ab/deadbeef.jpg", [InstanceMask(blob(8, 8, 0, 0, 2, 2), 0.5, 0)], 8, 8)
    assert written(writer)["images"][0]["file_name"] == "deadbeef.jpg"  # a path imports 0 objects


@pytest.mark.parametrize("names, problem", [
    (("cat", ""), "non-empty"), (("cat", "  "), "non-empty"), ((), "non-empty"),
    (("Cat", "cat "), "not distinct")])
def test_category_names_that_crash_or_collide_are_refused(tmp_path, names, problem):
    with pytest.raises(ValueError, match=problem):
        SegInferResult(str(tmp_path / "infer-result.json"), names, 4)


def test_every_class_is_a_category_with_id_and_name(tmp_path):
    writer = semantic_writer(tmp_path)
    writer.add_label_map("a.png", np.full((4, 4), 255, np.uint8), 4, 4)
    assert written(writer)["categories"] == [{"id": index, "name": name} for index, name in enumerate(CLASSES)]


@pytest.mark.parametrize("class_id", [-1, 3, 1.5, "dog", None])
def test_a_class_id_outside_the_classes_is_refused(tmp_path, class_id):
    writer = instance_writer(tmp_path)
    with pytest.raises(ValueError, match="class id"):  # an unknown category_id drops the object
        writer.add("a.png", [InstanceMask(blob(8, 8, 0, 0, 2, 2), 0.5, class_id)], 8, 8)


def test_every_annotation_has_its_ids_int_bbox_area_and_int_iscrowd(tmp_path):
    writer = instance_writer(tmp_path)
    rng = np.random.default_rng(0)
    masks = [rng.random((30, 40)) > threshold for threshold in (0.5, 0.9, 0.99)]
    writer.add("a.png", [InstanceMask(mask, 0.3, index) for index, mask in enumerate(masks)], 40, 30)
    writer.add("b.png", [InstanceMask(masks[0], 0.6, 2)], 40, 30)
    document = written(writer)
    image_ids = {image["id"] for image in document["images"]}
    for annotation in document["annotations"]:
        assert annotation["image_id"] in image_ids and annotation["category_id"] in range(3)
        assert all(type(value) is int for value in annotation["bbox"])  # truncated by int(): w, h must stay >= 1
        x, y, w, h = annotation["bbox"]
        assert w >= 1 and h >= 1
        mask = decoded(annotation)
        rows, columns = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert (x, y, w, h) == (columns[0], rows[0], columns[-1] - columns[0] + 1, rows[-1] - rows[0] + 1)
        assert type(annotation["area"]) is int and annotation["area"] == mask.sum()  # missing area crashes
        assert type(annotation["iscrowd"]) is int and annotation["iscrowd"] == 0  # 0.0 crashes
        assert "score" not in annotation  # the platform ignores `score`


@pytest.mark.parametrize("score", [-0.1, 1.5, float("nan"), float("inf"), "high", None])
def test_a_confidence_outside_0_1_is_refused(tmp_path, score):
    writer = instance_writer(tmp_path)
    with pytest.raises(ValueError, match="score"):
        writer.add("a.png", [InstanceMask(blob(8, 8, 0, 0, 2, 2), score, 0)], 8, 8)


def test_same_class_and_int_bbox_keeps_only_the_higher_scoring_mask(tmp_path):
    writer = instance_writer(tmp_path)
    square = blob(20, 20, 2, 2, 10, 10)
    ring = square.copy()
    ring[4:10, 4:10] = False  # another mask, the same tight bbox
    count = writer.add("a.png", [InstanceMask(square, 0.4, 0), InstanceMask(ring, 0.7, 0),
                                 InstanceMask(square, 0.6, 1)], 20, 20)
    annotations = written(writer)["annotations"]
    assert count == 2 and len(annotations) == 2  # the platform would silently drop one of the class-0 pair
    assert [(a["category_id"], a["confidence"]) for a in annotations] == [(0, 0.7), (1, 0.6)]
    assert (decoded(annotations[0]) == ring).all()
    assert writer.dropped == {"same class and bbox as a higher-scoring mask": 1}


def test_counts_is_a_string_of_the_stored_size(tmp_path):
    writer = instance_writer(tmp_path)
    writer.add("a.png", [InstanceMask(blob(30, 50, 3, 4, 5, 6), 0.5, 0)], 50, 30)
    segmentation = written(writer)["annotations"][0]["segmentation"]
    assert isinstance(segmentation["counts"], str)  # a list crashes
    assert segmentation["size"] == [30, 50]
    counts = coco_cpp.toUncompressedRLE([{"size": [30, 50], "counts": segmentation["counts"]}])[0]["counts"]
    assert sum(counts) == 30 * 50  # wrong-length counts crash or corrupt the platform's evaluation


@pytest.mark.parametrize("shape, origin", [((24, 32), None), ((48, 64), None), ((10, 10), (60, 0)),
                                           ((10, 10), (-1, 0)), ((48, 64, 1), None)])
def test_a_mask_that_is_not_of_the_stored_image_is_refused(tmp_path, shape, origin):
    writer = instance_writer(tmp_path)
    with pytest.raises(ValueError, match="mask"):  # the platform decodes counts with its own stored H x W
        writer.add("a.png", [InstanceMask(np.ones(shape, bool), 0.5, 0, origin)], 64, 40)


@pytest.mark.parametrize("width, height", [(0, 10), (10.5, 10), (None, 10), (-3, 10)])
def test_the_stored_size_must_be_given(tmp_path, width, height):
    with pytest.raises(ValueError, match="stored image size"):
        instance_writer(tmp_path).add("a.png", [], width, height)


def test_an_empty_mask_is_left_out_and_counted(tmp_path):
    writer = instance_writer(tmp_path)
    count = writer.add("a.png", [InstanceMask(np.zeros((8, 8), bool), 0.9, 0),
                                 InstanceMask(blob(8, 8, 1, 1, 2, 2), 0.5, 0)], 8, 8)
    annotations = written(writer)["annotations"]
    assert count == 1 and len(annotations) == 1 and annotations[0]["area"] == 4  # {} or an empty mask breaks it
    assert writer.dropped == {"empty mask": 1}


def test_segmentation_is_never_a_polygon_or_empty(tmp_path):
    writer = instance_writer(tmp_path)
    writer.add("a.png", [InstanceMask(blob(16, 16, 1, 1, 4, 4), 0.5, 0), InstanceMask(blob(16, 16, 8, 8, 4, 4), 0.4,
                                                                                     2)], 16, 16)
    for annotation in written(writer)["annotations"]:
        assert set(annotation["segmentation"]) == {"size", "counts"} and annotation["segmentation"]["counts"]


def test_a_multi_part_instance_is_one_merged_rle(tmp_path):
    writer = instance_writer(tmp_path)
    parts = blob(20, 20, 0, 0, 3, 3) | blob(20, 20, 15, 15, 5, 5)
    writer.add("a.png", [InstanceMask(parts, 0.5, 0)], 20, 20)
    (annotation,) = written(writer)["annotations"]
    assert annotation["bbox"] == [0, 0, 20, 20] and annotation["area"] == 34 and (decoded(annotation) == parts).all()


def test_each_images_annotations_are_sorted_by_confidence(tmp_path):
    writer = instance_writer(tmp_path)
    scores = [0.2, 0.9, 0.5, 0.9, 0.1]
    writer.add("a.png", [InstanceMask(blob(40, 40, 5 * i, 0, 3, 3), s, 0) for i, s in enumerate(scores)], 40, 40)
    writer.add("b.png", [InstanceMask(blob(40, 40, 0, 0, 3, 3), 0.95, 1)], 40, 40)
    annotations = written(writer)["annotations"]
    assert [a["confidence"] for a in annotations] == [0.9, 0.9, 0.5, 0.2, 0.1, 0.95]
    assert [a["bbox"][0] for a in annotations[:2]] == [5, 15]  # equal confidences keep their order
    assert [a["id"] for a in annotations] == [1, 2, 3, 4, 5, 6]


# --- objects given as COCO segmentations ----------------------------------------------------------------------

def coco_rle(mask):
    encoded = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": list(encoded["size"]), "counts": encoded["counts"].decode()}


def test_encoded_objects_are_written_as_one_rle_string_each(tmp_path):
    writer = instance_writer(tmp_path)
    square = blob(20, 30, 2, 3, 6, 4)
    uncompressed = coco_cpp.toUncompressedRLE([coco_rle(square)])[0]
    two_polygons = [[20, 10, 25, 10, 25, 15, 20, 15], [10, 15, 14, 15, 14, 18]]
    count = writer.add_encoded("a.png", [EncodedMask(coco_rle(square), 0.9, 0),
                                         EncodedMask({"size": [20, 30], "counts": uncompressed["counts"]}, 0.5, 0),
                                         EncodedMask(two_polygons, 0.7, 1)], 30, 20)
    annotations = written(writer)["annotations"]
    assert count == 2 and writer.dropped == {"same class and bbox as a higher-scoring mask": 1}
    assert [(a["category_id"], a["confidence"], a["bbox"]) for a in annotations][0] == (0, 0.9, [2, 3, 6, 4])
    polygons = coco_mask.merge(coco_mask.frPyObjects(two_polygons, 20, 30))  # COCO's rasteriser, merged
    assert (decoded(annotations[1]) == coco_mask.decode(polygons).astype(bool)).all()
    assert all(isinstance(a["segmentation"]["counts"], str) for a in annotations)


@pytest.mark.parametrize("segmentation, problem", [
    (coco_rle(np.ones((20, 31), bool)), "mask size differs from image"), ({}, "object without mask"),
    ([[1, 2, 3, 4, 5]], "bad polygon"), ([], "bad polygon"), ("counts", "malformed mask")])
def test_an_encoded_object_that_is_not_of_the_stored_image_is_refused(tmp_path, segmentation, problem):
    with pytest.raises(ValueError, match=problem):
        instance_writer(tmp_path).add_encoded("a.png", [EncodedMask(segmentation, 0.5, 0)], 30, 20)


def test_encoded_semantic_objects_of_a_class_are_merged(tmp_path):
    writer = semantic_writer(tmp_path)
    left, right = blob(10, 20, 0, 0, 5, 10), blob(10, 20, 15, 0, 5, 2)
    assert writer.add_encoded("a.png", [EncodedMask(coco_rle(left), 0.9, 2), EncodedMask(coco_rle(right), 0.4, 2),
                                        EncodedMask(coco_rle(np.zeros((10, 20), bool)), 0.8, 0)], 20, 10) == 1
    (annotation,) = written(writer)["annotations"]
    assert annotation["area"] == 60 and (decoded(annotation) == (left | right)).all()
    assert annotation["confidence"] == pytest.approx((50 * 0.9 + 10 * 0.4) / 60)
    assert writer.dropped == {"empty mask": 1}


# --- semantic (object_type 3) --------------------------------------------------------------------------------

def test_semantic_writes_one_annotation_per_class_present_and_no_background(tmp_path):
    writer = semantic_writer(tmp_path)
    labels = np.full((30, 40), 255, np.uint8)
    labels[0:10, 0:10] = 2
    labels[20:30, 30:40] = 2  # two regions of one class: one annotation
    labels[12:15, 5:25] = 0
    probability = np.full((30, 40), 0.25)
    probability[labels == 2] = 0.8
    count = writer.add_label_map("/in/assets/a.png", labels, 40, 30, probability=probability)
    annotations = written(writer)["annotations"]
    assert count == 2
    assert [(a["category_id"], a["confidence"], a["area"], a["bbox"]) for a in annotations] == [
        (2, pytest.approx(0.8), 200, [0, 0, 40, 30]), (0, pytest.approx(0.25), 60, [5, 12, 20, 3])]
    assert (decoded(annotations[0]) == (labels == 2)).all() and (decoded(annotations[1]) == (labels == 0)).all()
    assert {a["iscrowd"] for a in annotations} == {0}


def test_semantic_with_more_classes_than_a_byte_holds(tmp_path):
    writer = semantic_writer(tmp_path, classes=tuple(f"c{index}" for index in range(300)))
    labels = np.full((10, 10), -1, np.int32)
    labels[0, :5], labels[5:, 5:] = 299, 255
    assert writer.add_label_map("a.png", labels, 10, 10, unlabelled=-1) == 2
    annotations = written(writer)["annotations"]
    assert [(a["category_id"], a["area"]) for a in annotations] == [(255, 25), (299, 5)]


@pytest.mark.parametrize("classes", [3, 40])  # counted class by class, and by bincount (over 16 classes)
def test_semantic_confidence_is_each_class_mean_probability(tmp_path, classes):
    rng = np.random.default_rng(classes)
    writer = semantic_writer(tmp_path, classes=tuple(f"c{index}" for index in range(classes)))
    labels = rng.integers(0, classes, (60, 50)).astype(np.uint8)
    labels[:, :7] = 255
    probability = rng.random((60, 50), dtype=np.float32)
    writer.add_label_map("a.png", labels, 50, 60, probability=probability)
    confidences = {a["category_id"]: a["confidence"] for a in written(writer)["annotations"]}
    assert confidences == {class_id: pytest.approx(float(probability[labels == class_id].mean()), rel=1e-5)
                           for class_id in np.unique(labels[labels != 255]).tolist()}


def test_semantic_confidence_is_1_without_probabilities(tmp_path):
    writer = semantic_writer(tmp_path)
    writer.add_label_map("a.png", np.ones((4, 4), np.int64), 4, 4)
    assert [a["confidence"] for a in written(writer)["annotations"]] == [1.0]


@pytest.mark.parametrize("labels, options, problem", [
    (np.full((4, 4), 7), {}, "neither class ids"), (np.full((4, 4), -1), {}, "neither class ids"),
    (np.zeros((4, 5), np.uint8), {}, "stored size"), (np.zeros((4, 4), np.float32), {}, "not integer"),
    (np.zeros((4, 4), np.uint8), {"unlabelled": 1}, "is a class id"),
    (np.zeros((4, 4), np.uint8), {"probability": np.full((4, 4), 1.5)}, "score"),
    (np.zeros((4, 4), np.uint8), {"probability": np.ones((2, 2))}, "probability of shape")])
def test_a_bad_label_map_is_refused(tmp_path, labels, options, problem):
    with pytest.raises(ValueError, match=problem):
        semantic_writer(tmp_path).add_label_map("a.png", labels, 4, 4, **options)


def test_semantic_and_instance_calls_are_not_mixed(tmp_path):
    with pytest.raises(ValueError, match="add_label_map"):
        semantic_writer(tmp_path).add("a.png", [], 4, 4)
    with pytest.raises(ValueError, match="add\\(\\)"):
        instance_writer(tmp_path).add_label_map("a.png", np.zeros((4, 4), np.uint8), 4, 4)
    with pytest.raises(ValueError, match="object_type 3 or 4"):
        SegInferResult(str(tmp_path / "x.json"), CLASSES, 2)


def test_the_file_is_replaced_atomically(tmp_path):
    writer = instance_writer(tmp_path)
    writer.write()
    writer.add("a.png", [InstanceMask(blob(8, 8, 0, 0, 2, 2), 0.5, 0)], 8, 8)
    assert writer.write() == 1
    assert [name for name in os.listdir(tmp_path) if name.startswith(".tmp-")] == []
    assert len(written(writer)["annotations"]) == 1


# --- memory and time ------------------------------------------------------------------------------------------

def test_a_large_candidate_with_100_instances_never_holds_a_stack_of_masks(tmp_path):
    writer = instance_writer(tmp_path)
    height, width = 4000, 6000
    full = height * width  # bytes of one uint8 mask

    def instances():  # box-sized masks: the writer makes each full-size mask alone
        for index in range(100):
            yield InstanceMask(np.ones((40, 60), bool), 0.5, index % 3, origin=(55 * index, 39 * index))

    tracemalloc.start()
    try:
        count = writer.add("big.jpg", instances(), width, height)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 100
    assert peak < 3 * full, f"{peak / full:.1f} full-size masks alive at once"  # N x H x W would be 100


@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_a_large_label_map_is_written_one_class_mask_at_a_time(tmp_path, dtype):
    writer = semantic_writer(tmp_path, classes=tuple(f"class{index}" for index in range(20)))
    height, width = 4000, 6000
    labels = np.full((height, width), 255, dtype)
    for class_id in range(20):
        labels[200 * class_id:200 * class_id + 100, 300 * class_id:300 * class_id + 150] = class_id
    probability = np.full((height, width), 0.5, np.float32)
    tracemalloc.start()
    try:
        count = writer.add_label_map("big.jpg", labels, width, height, probability=probability)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 20
    # a byte copy of the map, one class's mask and blocks of a million pixels; N x H x W would be 20 of them
    assert peak < 3.5 * height * width, f"{peak / (height * width):.1f} full-size byte masks alive at once"
    assert [a["area"] for a in written(writer)["annotations"]] == [15000] * 20


@pytest.mark.slow
def test_writing_1000_images_of_10_masks_takes_at_most_10_s(tmp_path):
    rng = np.random.default_rng(1)
    masks = [blob(480, 640, *rng.integers(0, 300, 2), *rng.integers(20, 300, 2)) for _ in range(10)]
    writer = instance_writer(tmp_path)
    start = time.perf_counter()
    for image in range(1000):
        writer.add(f"{image:04d}.jpg", (InstanceMask(mask, 0.1 * (i + 1) - 0.05, i % 3)
                                        for i, mask in enumerate(masks)), 640, 480)
    writer.write()
    elapsed = time.perf_counter() - start
    assert len(written(writer)["annotations"]) == 10000
    assert elapsed <= 10.0, f"{elapsed:.1f} s"


# --- result.yaml: the main metric by object type --------------------------------------------------------------

@pytest.mark.parametrize("object_type, metric", [(2, "mAP"), (3, "mIoU"), (4, "maskAP")])
def test_main_metric_by_object_type(object_type, metric):
    assert main_metric(object_type) == metric


def test_an_unknown_object_type_has_no_main_metric():
    with pytest.raises(ValueError, match="object_type 5"):
        main_metric(5)


@pytest.mark.parametrize("object_type, better, worse", [
    (3, {"mIoU": 0.6, "mAcc": 0.5}, {"mIoU": 0.5, "mAcc": 0.9}),
    (4, {"maskAP": 0.6, "boxAP": 0.1, "mAP50_95": 0.1}, {"maskAP": 0.5, "boxAP": 0.9, "mAP50_95": 0.9})])
def test_a_seg_stage_is_ranked_by_its_main_metric_alone(tmp_path, object_type, better, worse):
    models = tmp_path / "models"
    result = TrainingResult(str(models), str(models / "result.yaml"), main_metric=main_metric(object_type))
    for name, metrics in (("epoch_1", better), ("epoch_2", worse)):
        folder = result.stage_dir(name)
        open(os.path.join(folder, "model.pt"), "w").close()
        result.add_stage(name, ["model.pt"], metrics)
    assert result.best.name == "epoch_1"
    assert fitness(better, main_metric(object_type)) == better[main_metric(object_type)]
    open(os.path.join(result.stage_dir("epoch_3"), "model.pt"), "w").close()
    with pytest.raises(ValueError, match=f"no '{main_metric(object_type)}' metric"):
        result.add_stage("epoch_3", ["model.pt"], {"mAP": 0.9})


# --- the writer a task gets -----------------------------------------------------------------------------------

class SegPlugin:
    """Infers one mask per candidate (the image's left half) and trains two stages with ``metrics``."""

    def __init__(self, object_type, metrics=()):
        self.object_type = object_type
        self.metrics = list(metrics)
        self.errors = []

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ymir_runner.ExecutorSpec(name="seg", tasks={TaskKind.TRAINING, TaskKind.INFER},
                                         object_types={self.object_type}, annotation_formats=("seg-coco",))]

    @ymir_runner.hookimpl
    def ymir_runner_train(self, context):
        results = context.training_result
        for index, metrics in enumerate(self.metrics, start=1):
            folder = results.stage_dir(f"epoch_{index}")
            open(os.path.join(folder, "model.bin"), "w").close()
            results.add_stage(f"epoch_{index}", ["model.bin"], metrics)

    @ymir_runner.hookimpl
    def ymir_runner_infer(self, context):
        with pytest.raises(RuntimeError, match="context.seg_infer_result") as detection:
            context.infer_result  # noqa: B018 - a detection writer in a segmentation task is an error
        self.errors.append(str(detection.value))
        writer = context.seg_infer_result
        for item in list(context.candidates)[:2]:
            decoded = context.decode(item)
            width, height = decoded.width, decoded.height
            if self.object_type == 4:
                writer.add(item.image, [InstanceMask(blob(height, width, 0, 0, width // 2, height), 0.9, 1),
                                        InstanceMask(np.zeros((height, width), bool), 0.8, 0)], width, height)
            else:
                labels = np.full((height, width), 255, np.uint8)
                labels[:, : width // 2] = 1
                writer.add_label_map(item.image, labels, width, height)


@pytest.mark.parametrize("object_type", [3, 4])
def test_a_segmentation_inference_task_writes_the_coco_form(ymir_registry, ymir_task, object_type):
    plugin = SegPlugin(object_type)
    ymir_registry.register(plugin, "seg")
    tree = ymir_task(kinds=["infer"], config={"object_type": object_type})
    outcome = tree.run(ymir_registry)
    assert outcome.exit_code == 0, outcome.stderr
    document = outcome.infer_result()
    assert set(document) == {"images", "categories", "annotations"}
    assert [image["file_name"] for image in document["images"]] == [os.path.basename(i) for i in tree.images]
    assert [image.get("width") for image in document["images"]] == [64] * 4  # read from the headers: 2 unread
    assert [(a["image_id"], a["category_id"], a["bbox"]) for a in document["annotations"]] == [
        (1, 1, [0, 0, 32, 48]), (2, 1, [0, 0, 32, 48])]
    if object_type == 4:
        assert "infer: 2 masks left out of " in outcome.stderr and "(empty mask)" in outcome.stderr
    assert plugin.errors and "object_type" in plugin.errors[0]
    report = outcome.verify()  # the COCO form, checked as object_type says
    assert report.ok and not report.findings, report.to_text()


def seg_training_tree(ymir_task, object_type):
    """A training tree exported as the platform exports seg-coco:raw: one COCO file named on every index line, each
    image's box as an RLE mask."""
    tree = ymir_task(config={"object_type": object_type, "export_format": "seg-coco:raw"})
    coco = "/in/annotations/coco-annotations.json"
    width, height = tree.size
    document = {"images": [], "categories": [{"id": i, "name": n} for i, n in enumerate(tree.class_names)],
                "annotations": []}
    for number, image in enumerate(tree.images, start=1):
        document["images"].append({"id": number, "file_name": os.path.basename(image), "width": width,
                                   "height": height})
        for class_id, x1, y1, x2, y2 in tree.boxes_of(number - 1):
            encoded = coco_mask.encode(np.asfortranarray(blob(height, width, x1, y1, x2 - x1 + 1, y2 - y1 + 1),
                                                         dtype=np.uint8))
            document["annotations"].append({
                "id": len(document["annotations"]) + 1, "image_id": number, "category_id": class_id, "iscrowd": 0,
                "bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1], "area": int(coco_mask.area(encoded)), "confidence": -1,
                "segmentation": {"size": [height, width], "counts": encoded["counts"].decode()}})
    with open(tree.local(coco), "w", encoding="utf-8") as stream:
        json.dump(document, stream)
    half = len(tree.images) // 2
    for index_file, images in (("/in/train-index.tsv", tree.images[:half]), ("/in/val-index.tsv", tree.images[half:])):
        with open(tree.local(index_file), "w", encoding="utf-8") as stream:
            stream.write("".join(f"{image}\t{coco}\n" for image in images))
    return tree


@pytest.mark.parametrize("object_type, stages, best", [
    (3, [{"mIoU": 0.7, "mAcc": 0.2}, {"mIoU": 0.6, "mAcc": 0.9}], "epoch_1"),
    (4, [{"maskAP": 0.4, "boxAP": 0.9}, {"maskAP": 0.5, "boxAP": 0.1}], "epoch_2")])
def test_a_segmentation_training_deploys_the_best_main_metric(ymir_registry, ymir_task, object_type, stages, best):
    ymir_registry.register(SegPlugin(object_type, stages), "seg")
    outcome = seg_training_tree(ymir_task, object_type).run(ymir_registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.result_yaml()["best_stage_name"] == best


def test_a_segmentation_stage_without_its_main_metric_fails(ymir_registry, ymir_task):
    ymir_registry.register(SegPlugin(3, [{"mAP": 0.7}]), "seg")
    outcome = seg_training_tree(ymir_task, 3).run(ymir_registry)
    assert outcome.exit_code != 0 and "stage 'epoch_1' has no 'mIoU' metric" in outcome.stderr
