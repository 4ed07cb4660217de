"""`ymir-runner verify` for segmentation tasks (object_type 3 and 4): every crash or loss form of the COCO
infer-result.json (segmentation.md section 4) is an error, every misread form a warning; result.yaml stages need
``mIoU`` (3) / ``maskAP`` (4). Broken documents are made here by hand (masks by faster-coco-eval, COCO's codec),
never by the project's writers; the writers' own output must pass."""

from __future__ import annotations

import copy
import inspect
import json
import os

import numpy as np
import pytest
from faster_coco_eval.core import mask as coco_mask

from ymir_runner.cli import main
from ymir_runner.protocol.results import InstanceMask, SegInferResult
from ymir_runner.testing import write_png
from ymir_runner.verify import verify_out

MONITOR = "t01\t1700000000.123\t1.0000\t2\t0\n"
CANDIDATES = ["/in/assets/aa/img1.jpg", "/in/assets/bb/img2.png"]
CLASS_NAMES = ["cat", "dog"]
HEIGHT, WIDTH = 30, 40


def rle(x, y, w, h, height=HEIGHT, width=WIDTH):
    mask = np.zeros((height, width), np.uint8, order="F")
    mask[y:y + h, x:x + w] = 1
    encoded = coco_mask.encode(mask)
    return {"size": [height, width], "counts": encoded["counts"].decode()}


def good_document():
    return {
        "images": [{"id": 1, "file_name": "img1.jpg", "width": WIDTH, "height": HEIGHT},
                   {"id": 2, "file_name": "img2.png", "width": WIDTH, "height": HEIGHT}],
        "categories": [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 0, "bbox": [2, 3, 10, 5], "area": 50,
             "segmentation": rle(2, 3, 10, 5), "iscrowd": 0, "confidence": 0.9},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 10, 4, 4], "area": 16,
             "segmentation": rle(20, 10, 4, 4), "iscrowd": 0, "confidence": 0.5}]}


def verify(tmp_path, document, object_type=4, tasks=("infer",), **options):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "monitor.txt").write_text(MONITOR)
    (out / "infer-result.json").write_text(json.dumps(document) if not isinstance(document, str) else document)
    return verify_out(str(out), list(tasks), candidates=options.pop("candidates", CANDIDATES),
                      class_names=CLASS_NAMES, object_type=object_type, **options)


def changed(edit):
    document = good_document()
    edit(document)
    return document


def annotation(**values):
    def edit(document):
        for key, value in values.items():
            if value is ...:
                del document["annotations"][0][key]
            else:
                document["annotations"][0][key] = value
    return edit


@pytest.mark.parametrize("object_type", [3, 4])
def test_the_coco_form_passes(tmp_path, object_type):
    report = verify(tmp_path, good_document(), object_type)
    assert report.findings == [], report.to_text()


def set_item(path, value):
    def edit(document):
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def duplicate_box(document):
    document["annotations"].append({**document["annotations"][0], "id": 3, "confidence": 0.3})


# one case per row of segmentation.md section 4 that crashes the task or loses objects
ERRORS = [
    (lambda d: d.pop("annotations"), "seg-infer.keys"),
    (lambda d: d.pop("images"), "seg-infer.keys"),
    (set_item(["images", 1, "id"], 1), "seg-infer.image-id-duplicate"),
    (set_item(["images", 0, "file_name"], "/in/assets/aa/img1.jpg"), "seg-infer.file-name"),
    (lambda d: d["categories"][0].pop("name"), "seg-infer.category"),
    (set_item(["categories", 0, "name"], " "), "seg-infer.category"),
    (set_item(["categories", 0, "name"], "background"), "seg-infer.category-unknown"),
    (annotation(category_id=...), "seg-infer.annotation"),
    (annotation(image_id=...), "seg-infer.annotation"),
    (annotation(image_id=7), "seg-infer.unknown-id"),
    (annotation(category_id=5), "seg-infer.unknown-id"),
    (annotation(bbox=[2, 3, 0.6, 5]), "seg-infer.bbox"),
    (annotation(bbox=[2, 3, 10]), "seg-infer.bbox"),
    (annotation(area=...), "seg-infer.annotation"),
    (annotation(area="50"), "seg-infer.area"),
    (lambda d: d["images"][0].pop("file_name"), "seg-infer.image"),
    (annotation(iscrowd=0.0), "seg-infer.iscrowd"),
    (duplicate_box, "seg-infer.duplicate-box"),
    (annotation(segmentation={"size": [HEIGHT, WIDTH], "counts": [0, 50, 1150]}), "seg-infer.rle-counts"),
    (annotation(segmentation=rle(2, 3, 10, 5, height=HEIGHT + 1)), "seg-infer.rle-length"),
    (annotation(segmentation={"size": [HEIGHT, WIDTH], "counts": "\x01garbage"}), "seg-infer.rle-length"),
    (annotation(segmentation=[[2, 3, 12, 3, 12, 8], [20, 10, 24, 10, 24, 14]]), "seg-infer.polygon"),
    (annotation(segmentation=[]), "seg-infer.polygon"),
    (annotation(segmentation=[[2, 3, 12, 3, 12]]), "seg-infer.polygon"),
    (annotation(segmentation={}), "seg-infer.segmentation"),
    (annotation(segmentation=...), "seg-infer.segmentation"),
    (lambda d: d["images"].pop(), "seg-infer.missing-image"),
]


@pytest.mark.parametrize("edit, rule", ERRORS, ids=[f"{rule}-{index}" for index, (_, rule) in enumerate(ERRORS)])
def test_a_crash_or_loss_form_is_an_error(tmp_path, edit, rule):
    report = verify(tmp_path, changed(edit))
    assert rule in report.rules("error"), report.to_text()
    assert not report.ok


def test_the_detection_form_in_a_segmentation_task_says_so(tmp_path):
    report = verify(tmp_path, {"detection": {"img1.jpg": {"boxes": []}, "img2.png": {"boxes": []}}}, 3)
    (finding,) = report.errors
    assert finding.rule == "seg-infer.keys" and "the detection form" in finding.message


def test_the_coco_form_in_a_detection_task_says_so(tmp_path):
    (finding,) = verify(tmp_path, good_document(), 2).errors
    assert finding.rule == "infer.detection" and "--object-type" in finding.message


WARNINGS = [
    (annotation(confidence=...), "seg-infer.confidence-missing"),
    (annotation(confidence=..., score=0.9), "seg-infer.confidence-missing"),
    (annotation(confidence=1.5), "seg-infer.confidence"),
    (annotation(iscrowd=...), "seg-infer.iscrowd"),
    (annotation(iscrowd=1), "seg-infer.crowd"),
    (annotation(bbox=[2.5, 3, 10, 5]), "seg-infer.bbox-int"),
    (annotation(bbox=[0, 0, 20, 20]), "seg-infer.bbox-tight"),
    (annotation(area=49), "seg-infer.area-pixels"),
    (annotation(segmentation={"size": [HEIGHT, WIDTH], "counts": rle(0, 0, 0, 0)["counts"]}), "seg-infer.empty-mask"),
    (annotation(segmentation={"size": [WIDTH, HEIGHT], "counts": rle(2, 3, 10, 5)["counts"]}), "seg-infer.rle-size"),
    (set_item(["categories", 1, "id"], 0), "seg-infer.category-duplicate"),
    (lambda d: d["images"].append({"id": 3, "file_name": "other.jpg"}), "seg-infer.extra-image"),
]


@pytest.mark.parametrize("edit, rule", WARNINGS, ids=[f"{rule}-{i}" for i, (_, rule) in enumerate(WARNINGS)])
def test_a_misread_form_is_a_warning(tmp_path, edit, rule):
    report = verify(tmp_path, changed(edit))
    assert rule in report.rules("warning"), report.to_text()
    assert rule not in report.rules("error")


def test_one_polygon_is_read(tmp_path):
    report = verify(tmp_path, changed(annotation(segmentation=[[2, 3, 12, 3, 12, 8, 2, 8]], bbox=[2, 3, 10, 5],
                                                 area=50)))
    assert report.ok, report.to_text()


def test_a_semantic_result_repeating_a_class_in_an_image_is_a_warning(tmp_path):
    def repeat(document):
        document["annotations"][1]["category_id"] = 0
    assert "seg-infer.semantic-repeat" in verify(tmp_path, changed(repeat), 3).rules("warning")
    assert "seg-infer.semantic-repeat" not in verify(tmp_path, changed(repeat), 4).rules()


def test_the_writers_output_passes(tmp_path):
    out = tmp_path / "out"
    for object_type in (3, 4):
        writer = SegInferResult(str(out / "infer-result.json"), CLASS_NAMES, object_type)
        mask = np.zeros((HEIGHT, WIDTH), bool)
        mask[4:9, 1:30] = True
        if object_type == 4:
            writer.add(CANDIDATES[0], [InstanceMask(mask, 0.7, 1), InstanceMask(~mask, 0.2, 0)], WIDTH, HEIGHT)
        else:
            writer.add_label_map(CANDIDATES[0], mask.astype(np.uint8), WIDTH, HEIGHT)
        writer.add_empty(CANDIDATES[1], WIDTH, HEIGHT)
        writer.write(CANDIDATES)
        (out / "monitor.txt").write_text(MONITOR)
        report = verify_out(str(out), ["infer"], candidates=CANDIDATES, class_names=CLASS_NAMES,
                            object_type=object_type)
        assert report.findings == [], report.to_text()


# --- result.yaml: the main metric by object type -----------------------------------------------------------

def stage_tree(tmp_path, metrics):
    out = tmp_path / "out"
    (out / "models" / "epoch_1").mkdir(parents=True)
    (out / "models" / "epoch_1" / "model.bin").write_text("x")
    (out / "monitor.txt").write_text(MONITOR)
    lines = "".join(f"    {key}: {value}\n" for key, value in metrics.items())
    (out / "models" / "result.yaml").write_text(
        "best_stage_name: epoch_1\nmodel_stages:\n  epoch_1:\n    stage_name: epoch_1\n    files: [model.bin]\n"
        f"    timestamp: 1700000000\n{lines}")
    return str(out)


@pytest.mark.parametrize("object_type, metrics, rule", [
    (3, {"mAP": 0.5}, "result-yaml.metric-missing"),
    (4, {"mIoU": 0.5, "boxAP": 0.3}, "result-yaml.metric-missing"),
    (3, {"mIoU": -1.0, "mAcc": 0.5}, "result-yaml.metric-range"),
    (4, {"maskAP": ".nan"}, "result-yaml.metric-range"),
    (3, {"mIoU": 0.5, "mAcc": 50.0}, "result-yaml.metric-range")])
def test_a_segmentation_stage_needs_its_main_metric_in_0_1(tmp_path, object_type, metrics, rule):
    report = verify_out(stage_tree(tmp_path, metrics), ["training"], object_type=object_type)
    assert rule in report.rules("error"), report.to_text()


@pytest.mark.parametrize("object_type, metrics", [(2, {"mAP": 0.5}), (3, {"mIoU": 0.5, "mAcc": 0.6, "tp": 3}),
                                                  (4, {"maskAP": 0.5, "boxAP": 0.6})])
def test_a_stage_with_its_main_metric_passes(tmp_path, object_type, metrics):
    report = verify_out(stage_tree(tmp_path, metrics), ["training"], object_type=object_type)
    assert report.ok and not report.findings, report.to_text()


def test_the_command_takes_the_object_type(tmp_path, capsys):
    out = stage_tree(tmp_path, {"mIoU": 0.5})
    assert main(["verify", out, "--task", "training", "--object-type", "3"]) == 0
    assert main(["verify", out, "--task", "training"]) == 1  # detection: no mAP
    assert "has no mAP" in capsys.readouterr().out
    document = copy.deepcopy(good_document())
    (tmp_path / "out" / "infer-result.json").write_text(json.dumps(document))
    assert main(["verify", out, "--task", "infer", "--object-type", "4", "--class-names", "cat,dog"]) == 0
    assert os.path.isfile(os.path.join(out, "infer-result.json"))


def test_the_stored_size_of_a_candidate_found_here_is_the_size_masks_are_checked_with(tmp_path):
    root = tmp_path / "root"
    write_png(str(root / "in" / "assets" / "aa" / "img1.jpg"), WIDTH, HEIGHT)  # the name's extension is not read
    write_png(str(root / "in" / "assets" / "bb" / "img2.png"), WIDTH + 2, HEIGHT)
    assert verify(tmp_path, good_document(), root=str(root)).rules("error") == {"seg-infer.image-size"}

    def wider(document):  # images[] and masks agree with each other, not with the image the platform has
        document["images"][0].update(width=WIDTH + 2)
        for entry in document["annotations"]:
            x, y, w, h = entry["bbox"]
            entry["segmentation"] = rle(x, y, w, h, width=WIDTH + 2)
    report = verify(tmp_path, changed(wider), root=str(root))
    assert {"seg-infer.image-size", "seg-infer.rle-length"} <= report.rules("error"), report.to_text()
    assert "the image has 30 x 40 = 1200" in " ".join(finding.message for finding in report.errors)


def test_without_width_and_height_the_stored_size_is_read_from_the_image(tmp_path):
    root = tmp_path / "root"
    for candidate in CANDIDATES:
        write_png(str(root / candidate.lstrip("/")), WIDTH, HEIGHT)

    def sizeless(document):
        for image in document["images"]:
            del image["width"], image["height"]
    assert verify(tmp_path, changed(sizeless), root=str(root)).findings == []


def test_every_seg_rule_is_documented_and_exercised():
    import re

    import ymir_runner.verify
    from ymir_runner.verify import seg_infer

    source = open(seg_infer.__file__, encoding="utf-8").read()
    used = set(re.findall(r'"(seg-infer\.[a-z-]+)"', source)) | {"seg-infer.missing", "seg-infer.encoding"}
    documented = set(re.findall(r"seg-infer\.[a-z-]+[a-z]", ymir_runner.verify.__doc__))
    assert used == documented
    this = inspect.getsource(test_every_seg_rule_is_documented_and_exercised)
    tests = open(__file__, encoding="utf-8").read().replace(this, "")
    assert {rule for rule in used if f'"{rule}"' not in tests} == set()


@pytest.mark.parametrize("text, rule", [("{not json", "seg-infer.json"), ("[]", "seg-infer.mapping"),
                                        (None, "seg-infer.missing"), (b"\xff\xfe", "seg-infer.encoding")])
def test_a_file_that_cannot_be_read_is_an_error(tmp_path, text, rule):
    out = tmp_path / "out"
    out.mkdir()
    (out / "monitor.txt").write_text(MONITOR)
    if isinstance(text, bytes):
        (out / "infer-result.json").write_bytes(text)
    elif text is not None:
        (out / "infer-result.json").write_text(text)
    report = verify_out(str(out), ["infer"], object_type=3)
    assert rule in report.rules("error"), report.to_text()
