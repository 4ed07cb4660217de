"""``ymir-runner evaluate``: score an infer-result.json against ground truth exactly as the platform would.

What a user runs to check an executor, and what the tests use to prove that a stage's metrics are the scores of
the model's own inference output. Object type 2 goes through :func:`~.evaluation.evaluate_detections` (the
core's detection stage metrics), types 3 and 4 through :mod:`.seg_evaluation` (the platform's own definitions).

Interface (scripts depend on it: keep it)::

    ymir-runner evaluate --object-type {2,3,4} --ground-truth FILE --predictions FILE --class-names a,b,...
                         [--class-ids 0,3,...] [--iou-thr 0.5 | 0.5:0.95:0.05] [--conf-thr X] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Sequence

from .errors import ConfigError, DatasetError

OBJECT_TYPES = {2: "detection", 3: "semantic segmentation", 4: "instance segmentation"}


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``ymir-runner evaluate`` to the command line."""
    parser = commands.add_parser(
        "evaluate", help="score an infer-result.json against ground truth as the platform would",
        description="Score PREDICTIONS (an infer-result.json: the detection form for object type 2, the COCO form "
                    "for 3 and 4) against GROUND_TRUTH exactly as the platform scores them, and print the metrics "
                    "(mAP / mIoU, mAcc, aAcc / maskAP, boxAP, with tp, fp, fn and per-class values). GROUND_TRUTH: "
                    "a COCO json as the platform exports seg-coco (all its images), or an index file (image<TAB>"
                    "annotation per line, as /in/val-index.tsv) naming a seg-coco json (only the index's images are "
                    "scored) or, for detection, det-ark / det-voc files. Predictions below --conf-thr are left out "
                    "first. Exit 2 when a file cannot be read.")
    parser.add_argument("--object-type", type=int, choices=sorted(OBJECT_TYPES), required=True,
                        help="2 detection, 3 semantic segmentation, 4 instance segmentation")
    parser.add_argument("--ground-truth", metavar="FILE", required=True, help="COCO json or index file")
    parser.add_argument("--predictions", metavar="FILE", required=True, help="infer-result.json")
    parser.add_argument("--class-names", required=True, type=_names, metavar="a,b,...",
                        help="the task's class_names, in order (class id = place in this list)")
    parser.add_argument("--class-ids", type=_ids, metavar="0,3,...",
                        help="the evaluated class ids (default: every class)")
    parser.add_argument("--iou-thr", default="0.5", metavar="0.5 | 0.5:0.95:0.05",
                        help="the IoU threshold, or a range from:to:step (end included) the APs are averaged over "
                             "and the counts summed over (default 0.5)")
    parser.add_argument("--conf-thr", type=float, default=0.0, metavar="X",
                        help="predictions scoring below X are left out first, for types 2 and 4 (default 0: every "
                             "prediction); semantic scores use every prediction, as the platform's do")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object keyed as result.yaml names the metrics, plus per-class values")
    parser.set_defaults(handler=_cmd_evaluate)


def _names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"empty class name in {text!r}")
    if len({name.lower() for name in names}) != len(names):
        raise argparse.ArgumentTypeError(f"a class name is given twice in {text!r}")
    return names


def _ids(text: str) -> list[int]:
    try:
        ids = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected class ids like 0,3, got {text!r}") from None
    return list(dict.fromkeys(ids))


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from .seg_evaluation import iou_thresholds, platform_evaluation_notes

    class_names: list[str] = args.class_names
    class_ids = list(range(len(class_names))) if args.class_ids is None else args.class_ids
    outside = [i for i in class_ids if not 0 <= i < len(class_names)]
    if outside:
        raise ConfigError(f"--class-ids {outside} outside the {len(class_names)} class names")
    try:
        thresholds = iou_thresholds(args.iou_thr)
    except ValueError as error:
        raise ConfigError(f"--iou-thr: {error}") from None
    if not math.isfinite(args.conf_thr):
        raise ConfigError(f"--conf-thr must be a number, got {args.conf_thr}")
    from .protocol.dataset import SkipLog

    skips = SkipLog()
    if args.object_type == 2:
        result = _evaluate_detection(args, class_names, class_ids, thresholds, skips)
    else:
        result = _evaluate_segmentation(args, class_names, class_ids, skips)
    notes = platform_evaluation_notes(args.object_type, class_ids, result.pop("num_images"))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(args, result, class_names, class_ids)
    for note in notes:
        print(f"note: the platform will not evaluate this set itself: {note}", file=sys.stderr)
    if skips.total:
        print(f"ymir-runner evaluate: {skips.report()}", file=sys.stderr)
    return 0


# --- reading ----------------------------------------------------------------------------------------------------


def _json_or_none(path: str) -> Any:
    """The JSON document of ``path``, or None when it is not JSON (then it may be an index file)."""
    from .protocol.files import read_text

    try:
        text = read_text(path)
    except OSError as error:
        raise DatasetError(f"cannot read {path}: {error.strerror or error}") from None
    except ValueError as error:  # not UTF-8 text
        raise DatasetError(f"cannot read {path}: {error}") from None
    try:
        return json.loads(text)
    except ValueError:
        return None


def _index(path: str) -> list[tuple[str, str]]:
    """``(image path, annotation path)`` of each line of an index file."""
    from .protocol.dataset import index_lines

    pairs = []
    for number, line in index_lines(path, "ground truth"):
        fields = (line or "").split("\t")
        if len(fields) < 2 or not fields[1].strip():
            raise DatasetError(f"{path}:{number}: expected 'image<TAB>annotation' (a COCO json or an index file)")
        pairs.append((fields[0].strip(), fields[1].strip()))
    if not pairs:
        raise DatasetError(f"{path}: an empty index: no ground truth")
    return pairs


def _coco_ground_truth(path: str) -> dict[str, Any]:
    """The seg-coco document ``path`` names: the file itself, or the one json of an index file restricted to the
    index's images (train and val share one file on the platform)."""
    document = _json_or_none(path)
    if isinstance(document, dict):
        return _checked_coco(document, path)
    pairs = _index(path)
    files = {annotation for _, annotation in pairs}
    if len(files) != 1 or not next(iter(files)).lower().endswith(".json"):
        raise ConfigError(f"{path}: segmentation ground truth must be one seg-coco json (the index names "
                          f"{', '.join(sorted(files)[:3])}): det-ark and det-voc carry no masks")
    coco_path = next(iter(files))
    document = _checked_coco(_json_or_none(coco_path), coco_path)
    wanted = {os.path.basename(image) for image, _ in pairs}
    images = [image for image in document.get("images") or [] if
              os.path.basename(str(image.get("file_name", ""))) in wanted]
    ids = {image.get("id") for image in images}
    return {**document, "images": images,
            "annotations": [a for a in document.get("annotations") or [] if a.get("image_id") in ids]}


def _checked_coco(document: Any, path: str) -> dict[str, Any]:
    if not isinstance(document, dict) or not isinstance(document.get("images"), list) or not isinstance(
            document.get("annotations"), list):
        if isinstance(document, dict) and "detection" in document:
            raise ConfigError(f"{path} is a detection infer-result.json: score it with --object-type 2")
        raise DatasetError(f"{path}: expected a COCO json with 'images' and 'annotations' lists")
    if not all(isinstance(entry, dict) for key in ("images", "annotations", "categories")
               for entry in document.get(key) or []):
        raise DatasetError(f"{path}: every entry of 'images', 'annotations' and 'categories' must be an object")
    return document


def _evaluate_segmentation(args: argparse.Namespace, class_names: list[str], class_ids: list[int],
                           skips: Any) -> dict[str, Any]:
    from .seg_evaluation import score_coco

    truth = _coco_ground_truth(args.ground_truth)
    predictions = _checked_coco(_json_or_none(args.predictions), args.predictions)
    try:
        scores = score_coco(args.object_type, truth, predictions, class_names, class_ids=class_ids,
                            iou_thrs=args.iou_thr, conf_thr=args.conf_thr, skips=skips)
    except ValueError as error:  # settings the scores cannot be computed with (too many classes for a label map)
        raise ConfigError(str(error)) from None
    return scores.to_dict()


def _detection_ground_truth(path: str, class_names: list[str], skips: Any) -> dict[str, Any]:
    """basename -> (boxes, classes) of a COCO json, or of an index naming det-ark / det-voc / seg-coco files."""
    import numpy as np

    from .protocol.dataset import AnnotationReader, DatasetReader

    def arrays(boxes: Sequence[Any]) -> tuple[Any, Any]:
        return (np.array([[b.x1, b.y1, b.x2, b.y2] for b in boxes], np.float64).reshape(-1, 4),
                np.array([b.class_id for b in boxes], np.int64))

    document = _json_or_none(path)
    if isinstance(document, dict):
        _checked_coco(document, path)
        reader = AnnotationReader(class_names, "seg-coco", skips)
        names = [os.path.basename(str(image.get("file_name", ""))) for image in document["images"]]
        return {name: arrays(reader.read(path, name) or ()) for name in dict.fromkeys(names)}
    suffixes = {os.path.splitext(annotation)[1].lower() for _, annotation in _index(path)}
    formats = {".txt": "det-ark", ".xml": "det-voc", ".json": "seg-coco"}
    if len(suffixes) != 1 or next(iter(suffixes)) not in formats:
        raise DatasetError(f"{path}: the annotation files must all be .txt (det-ark), .xml (det-voc) or one .json "
                           f"(seg-coco), got {', '.join(sorted(suffixes))}")
    annotations = AnnotationReader(class_names, formats[next(iter(suffixes))], skips)
    dataset = DatasetReader(path, annotations=annotations, skips=skips, name="ground truth")
    return {os.path.basename(item.image): arrays(item.boxes) for item in dataset}


def _evaluate_detection(args: argparse.Namespace, class_names: list[str], class_ids: list[int],
                        thresholds: list[float], skips: Any) -> dict[str, Any]:
    import numpy as np

    from .evaluation import evaluate_detections
    from .results_view import ResultsError, read_infer

    truth = _detection_ground_truth(args.ground_truth, class_names, skips)
    try:
        predicted = read_infer(args.predictions, None)
    except ResultsError as error:
        raise DatasetError(str(error)) from None
    lowered = {name.lower(): k for k, name in enumerate(class_names)}
    wanted = set(class_ids)
    by_image: dict[str, list[tuple[list[float], float, int]]] = {name: [] for name in truth}
    for image in predicted:
        if image.asset not in truth:
            skips.skip("image not in the ground truth", args.predictions, image.asset)
            continue
        for box in image.boxes:
            class_id = lowered.get(box.class_name.strip().lower())
            if class_id is None:
                skips.skip("class name outside class_names", f"{args.predictions}: {image.asset}",
                           repr(box.class_name))
            elif box.w <= 0 or box.h <= 0:
                skips.skip("empty box", f"{args.predictions}: {image.asset}", f"w {box.w}, h {box.h}")
            elif class_id in wanted and box.score >= args.conf_thr:
                by_image[image.asset].append(([box.x, box.y, box.x + box.w, box.y + box.h], box.score, class_id))
    names = list(truth)
    ground_truths = []
    for name in names:
        boxes, classes = truth[name]
        keep = np.isin(classes, list(wanted))
        ground_truths.append((boxes[keep], classes[keep]))
    predictions = [(np.array([p[0] for p in by_image[name]], np.float64).reshape(-1, 4),
                    np.array([p[1] for p in by_image[name]], np.float64),
                    np.array([p[2] for p in by_image[name]], np.int64)) for name in names]
    results = [evaluate_detections(ground_truths, predictions, len(class_names), score_threshold=args.conf_thr,
                                   iou_threshold=threshold, class_names=class_names) for threshold in thresholds]
    first = results[0]
    metrics: dict[str, Any] = {
        "mAP": (first.map or 0.0) if len(thresholds) == 1 else (first.map50_95 or 0.0),
        "mAR": (first.mar or 0.0) if len(thresholds) == 1 else (first.mar50_95 or 0.0),
        "mAP50_95": first.map50_95 or 0.0,
    }
    for key in ("tp", "fp", "fn"):
        metrics[key] = sum(result.stage_counts()[key] for result in results)
    metrics["per_class_AP"] = {class_names[c]: (first.per_class_ap50 if thresholds == [0.5] else
                                                first.per_class_ap)[c] for c in class_ids}
    metrics.update(iou_thrs=args.iou_thr, conf_thr=args.conf_thr, num_images=len(names))
    return metrics


# --- output -----------------------------------------------------------------------------------------------------


def _number(value: Any) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _print_table(args: argparse.Namespace, result: dict[str, Any], class_names: list[str],
                 class_ids: list[int]) -> None:
    print(f"object type {args.object_type} ({OBJECT_TYPES[args.object_type]}): {args.predictions} against "
          f"{args.ground_truth}")
    if args.object_type != 3:
        print(f"IoU {args.iou_thr}, predictions scoring at least {args.conf_thr}")
    scalars = [(key, value) for key, value in result.items() if isinstance(value, (int, float))
               and not isinstance(value, bool) and key != "conf_thr"]
    width = max(len(key) for key, _ in scalars)
    for key, value in scalars:
        print(f"{key:<{width}}  {_number(value)}")
    columns = [key for key, value in result.items() if isinstance(value, dict)]
    if not columns:
        return
    name_width = max(len("class"), *(len(class_names[c]) for c in class_ids))
    print()
    print(f"{'class':<{name_width}}" + "".join(f"  {column:>16}" for column in columns))
    for c in class_ids:
        name = class_names[c]
        print(f"{name:<{name_width}}" + "".join(f"  {_number(result[column].get(name)):>16}" for column in columns))
