"""ymir_runner.evaluation: COCO mAP (faster-coco-eval) and tp/fp/fn of a model stage."""

import numpy as np
import pytest

from ymir_runner.evaluation import box_iou, evaluate_detections


def test_evaluation_perfect_empty_and_half_right():
    gts = [
        (np.array([[10, 10, 50, 50], [60, 60, 90, 100]], np.float32), np.array([0, 1])),
        (np.zeros((0, 4), np.float32), np.zeros(0, np.int64)),  # image without objects
        (np.array([[5, 5, 40, 30]], np.float32), np.array([0])),
    ]
    perfect = [(boxes, np.ones(len(boxes)), classes) for boxes, classes in gts]
    result = evaluate_detections(gts, perfect, num_classes=3, class_names=["a", "b", "c"])
    assert result.map50_95 == pytest.approx(1.0) and result.map50 == pytest.approx(1.0)
    assert result.mar50_95 == pytest.approx(1.0) and result.mar == pytest.approx(1.0)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (3, 0, 0)
    assert result.per_class_ap[2] is None  # class "c" has no ground truth: undefined, excluded from the mean
    assert result.to_dict()["per_class_ap"]["c"] is None

    empty = [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)) for _ in gts]
    result = evaluate_detections(gts, empty, num_classes=3)
    assert result.map50_95 == 0.0 and result.map50 == 0.0
    assert (result.true_positives, result.false_positives, result.false_negatives) == (0, 0, 3)

    # Class 0: one of two objects found (the other prediction is misplaced); class 1 missed.
    half = [
        (np.array([[10, 10, 50, 50]], np.float32), np.array([0.9]), np.array([0])),
        (np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)),
        (np.array([[200, 200, 240, 230]], np.float32), np.array([0.8]), np.array([0])),
    ]
    result = evaluate_detections(gts, half, num_classes=3, score_threshold=0.5)
    # COCO's 101-point interpolation: precision 1 up to recall 0.5 -> 51/101.
    assert result.per_class_ap50[0] == pytest.approx(51 / 101, abs=1e-6)
    assert result.per_class_ap50[1] == 0.0
    assert result.map50 == pytest.approx(51 / 202, abs=1e-6)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (1, 1, 2)
    assert result.precision == 0.5 and result.recall == pytest.approx(1 / 3)
    assert all(isinstance(v, float) for v in (result.map50, result.map50_95, result.mar50_95, result.map, result.mar))
    assert result.stage_metrics() == {"mAP": result.map, "mAR": result.mar, "mAP50_95": result.map50_95}
    assert result.stage_counts() == {"tp": 1, "fp": 1, "fn": 2}


def test_iou_threshold_labels_map_and_counts():
    gts = [(np.array([[0, 0, 10, 10]], np.float32), np.array([0]))]
    shifted = [(np.array([[4, 0, 14, 10]], np.float32), np.array([0.9]), np.array([0]))]  # IoU 60 / 140 = 0.43
    loose = evaluate_detections(gts, shifted, num_classes=1, iou_threshold=0.4)
    strict = evaluate_detections(gts, shifted, num_classes=1, iou_threshold=0.5)
    assert loose.stage_metrics()["mAP"] == pytest.approx(1.0) and loose.stage_counts()["tp"] == 1
    assert strict.stage_metrics()["mAP"] == 0.0 and strict.stage_counts() == {"tp": 0, "fp": 1, "fn": 1}
    assert loose.map50_95 == strict.map50_95 == 0.0  # below 0.5 at every COCO threshold


def test_undefined_metrics_are_zero_in_a_stage():
    no_objects = [(np.zeros((0, 4)), np.zeros(0, np.int64))]
    result = evaluate_detections(no_objects, [(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))], 2)
    assert result.map is None and result.stage_metrics() == {"mAP": 0.0, "mAR": 0.0, "mAP50_95": 0.0}


def test_tensorboard_scalars_name_each_metric_and_class_and_leave_out_undefined_ones():
    truth = [(np.array([[0, 0, 10, 10]], float), np.array([1]))]
    found = [(np.array([[0, 0, 10, 10]], float), np.array([0.9]), np.array([1]))]
    result = evaluate_detections(truth, found, 2, class_names=["cat", "dog"])
    tags = result.tensorboard_scalars()
    assert tags["val/mAP"] == tags["val/mAP50_95"] == tags["val_AP50_95/dog"] == 1.0
    assert {"val/mAR", "val/mAP50", "val/mAR50_95", "val/precision", "val/recall"} < set(tags)
    assert "val_AP50_95/cat" not in tags  # no cat in the ground truth: its AP is undefined, not 0
    assert "val_AP50_95/Dog" in result.tensorboard_scalars(["Cat", "Dog"])


def test_box_iou_hand_computed():
    iou = box_iou(np.array([[0, 0, 10, 10]]), np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]]))
    assert iou.tolist() == [[pytest.approx(1 / 3), 0.0, 1.0]]
    assert box_iou(np.zeros((0, 4)), np.zeros((2, 4))).shape == (0, 2)


def test_f1_optimal_threshold_is_the_score_that_maximises_f1_and_counts_follow_it():
    from ymir_runner.evaluation import f1_optimal_threshold, match_counts

    gts = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], np.float32), np.array([0, 0, 0]))]
    # Scores squeezed into 0.30-0.36 as after a short run: 0.36, 0.35, 0.34 hit; 0.33 and 0.30 are false.
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70], [80, 80, 90, 90]])
    scores = np.array([0.36, 0.35, 0.34, 0.33, 0.30])
    predictions = [(boxes, scores, np.zeros(5, np.int64))]
    threshold, f1 = f1_optimal_threshold(gts, predictions)
    # Kept at 0.34: tp 3, fp 0, fn 0 -> F1 1.0; at 0.30: tp 3, fp 2 -> 6/8.
    assert threshold == pytest.approx(0.34) and f1 == pytest.approx(1.0)
    assert match_counts(gts, predictions, threshold) == (3, 0, 0)
    assert match_counts(gts, predictions, 0.25) == (3, 2, 0)  # a fixed 0.25 decides the count instead

    result = evaluate_detections(gts, predictions, num_classes=1, score_threshold=None)
    assert result.score_threshold == pytest.approx(0.34)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (3, 0, 0)

    # Hand-computed F1 per threshold when the best is in the middle: hits at 0.9 and 0.5, a miss at 0.7.
    predictions = [(boxes[[0, 3, 1]], np.array([0.9, 0.7, 0.5]), np.zeros(3, np.int64))]
    # 0.9: 2*1/(1+3)=0.5; 0.7: 2*1/(2+3)=0.4; 0.5: 2*2/(3+3)=0.667
    assert f1_optimal_threshold(gts, predictions) == (pytest.approx(0.5), pytest.approx(2 / 3))
    # Equal scores are one threshold: both boxes at 0.8 are kept or neither.
    predictions = [(boxes[[0, 3]], np.array([0.8, 0.8]), np.zeros(2, np.int64))]
    assert f1_optimal_threshold(gts, predictions) == (pytest.approx(0.8), pytest.approx(2 / 5))
    # Nothing to measure against: the default operating point, F1 0.
    empty_gt = [(np.zeros((0, 4)), np.zeros(0, np.int64))]
    assert f1_optimal_threshold(empty_gt, predictions, default=0.25) == (0.25, 0.0)
