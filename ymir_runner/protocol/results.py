"""Writers for what the platform reads after a task: result.yaml, result.tsv and infer-result.json.

Each writer validates its values against docs/protocol.md before anything reaches the disk, and
replaces its file atomically, so a killed task leaves either the previous valid file or the new one.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import json
import math
import os
import re
import shutil
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from ..errors import OutputError
from .atomic import atomic_path, atomic_write_text, output_error, remove_temp_files
from .env import OutputPaths

_STAGE_NAME = re.compile(r"^[A-Za-z0-9_]+$")
#: The SDK convention the platform follows: the best stage plus the 10 latest.
MAX_STAGES = 11
COUNT_KEYS = ("tp", "fp", "fn")
#: A stage metric: the score threshold its tp/fp/fn were counted at; the best stage's labels evaluate_config.
STAGE_CONF_THR = "conf_thr"
#: Where results an earlier run left in /out are moved, under the output root.
PREVIOUS_RUNS_DIR = "previous-runs"


#: The weight of ``mAP`` in a stage's :func:`fitness`; ``mAP50_95`` has the rest (ultralytics' ``Metric.fitness``).
MAP_WEIGHT = 0.1


def fitness(metrics: Mapping[str, float], main_metric: str = "mAP") -> float:
    """What model stages are ranked by, for every engine: ``0.1 * mAP + 0.9 * mAP50_95``, higher is better.

    The weights are ultralytics' ``Metric.fitness`` (``ultralytics/utils/metrics.py``: ``[0.0, 0.0, 0.1, 0.9]`` on
    precision, recall, mAP50, mAP50-95), with ``mAP`` at the IoU the stage was evaluated at
    (``evaluate_config.iou_thr``, 0.5 by default: ultralytics' mAP50): mostly localisation quality, so a stage
    that is lucky at one loose IoU does not win. A stage without ``mAP50_95`` is ranked by its ``mAP`` alone.

    Segmentation (``main_metric`` ``mIoU`` for object_type 3, ``maskAP`` for 4: :func:`main_metric`): the main
    metric alone, whatever else the stage holds (``mAcc``, ``boxAP``, a mask mAP50-95): it is the figure the
    platform shows as the model's and labels with ``evaluate_config``, so the deployed stage is the one with the best
    headline figure. The same tie rule applies (:class:`TrainingResult`: the later stage).

    Raises:
        KeyError: ``metrics`` holds no ``main_metric``.
    """
    if main_metric == "mAP" and "mAP50_95" in metrics:
        return MAP_WEIGHT * float(metrics["mAP"]) + (1.0 - MAP_WEIGHT) * float(metrics["mAP50_95"])
    return float(metrics[main_metric])


def metric_value(name: str, value: Any) -> float:
    """A metric as a plain float in [0, 1] (numpy scalars and 0-d tensors are converted, never written)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r} must be a number, got {value!r}") from None
    if not math.isfinite(number) or not 0.0 <= number <= 1.0:
        raise ValueError(f"metric {name!r} must be a float in [0, 1], got {number!r}")
    return number


def count_value(name: str, value: Any) -> int:
    number = float(value)
    if not number.is_integer() or number < 0:
        raise ValueError(f"{name!r} must be a non-negative integer, got {value!r}")
    return int(number)


@dataclasses.dataclass(frozen=True)
class Stage:
    """One model stage of result.yaml; its files live in ``<models_dir>/<name>/``."""

    name: str
    files: tuple[str, ...]
    timestamp: int
    metrics: Mapping[str, float]
    counts: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def to_yaml(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"stage_name": self.name, "files": list(self.files), "timestamp": self.timestamp}
        entry.update(self.metrics)
        entry.update(self.counts)
        return entry


class TrainingResult:
    """Model stages of a training task → /out/models/result.yaml, rewritten atomically after each stage.

    At most ``max_stages`` are kept: the best and the latest; a dropped stage's folder is deleted. Every stage must
    carry ``main_metric``, the object type's (:func:`main_metric`: ``mAP``, ``mIoU``, ``maskAP``; the core passes
    the task's). The best stage (``best_stage_name``, the one the platform deploys) has the highest :func:`fitness`
    of its own metrics; of equal fitness, the later stage (trained longer). No engine ranks stages by a formula of
    its own. For protocol < 1.0.0 the legacy ``{model: [...], map: ...}`` form is written instead (never both: the
    legacy form would win).
    """

    def __init__(self, models_dir: str, result_file: str, *, main_metric: str = "mAP",
                 max_stages: int = MAX_STAGES, legacy: bool = False) -> None:
        self.models_dir = models_dir
        self.result_file = result_file
        self.main_metric = main_metric
        self.max_stages = max(1, max_stages)
        self.legacy = legacy
        self.stages: dict[str, Stage] = {}
        self.attachments: dict[str, list[str]] = {}
        self.evaluate_config: dict[str, float] = {}

    def stage_dir(self, name: str) -> str:
        """The folder for a stage's files (created).

        Raises:
            OutputError: the folder cannot be created (a full disk, a file in the way); names the folder.
        """
        self._check_name(name)
        path = os.path.join(self.models_dir, name)
        if os.path.islink(path):  # the plugin would write its model files wherever the link leads
            raise OutputError(f"cannot create {path}: a symbolic link (to {os.readlink(path)}) is in the way")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as error:
            raise output_error(path, error, "create") from error
        return path

    def fitness(self, stage: Stage) -> float:
        """What stages are ranked by: :func:`fitness` of the stage's metrics."""
        return fitness(stage.metrics, self.main_metric)

    @property
    def best(self) -> Stage | None:
        """Highest fitness; a tie goes to the later stage (trained longer). ``None`` before the first stage."""
        best = None
        for stage in self.stages.values():
            if best is None or self.fitness(stage) >= self.fitness(best):
                best = stage
        return best

    def add_stage(self, name: str, files: Sequence[str], metrics: Mapping[str, Any],
                  counts: Mapping[str, Any] | None = None) -> Stage:
        """Record a stage whose ``files`` (names in ``stage_dir(name)``) are already written; result.yaml is
        rewritten. The stage is ranked for ``best_stage_name`` by :func:`fitness` of ``metrics``. Adding a stage
        of a name already recorded replaces it (e.g. the best stage with its ONNX export added).

        Raises:
            ValueError: a bad name, no files or a listed file missing, a metric outside [0, 1], no main metric,
                a count that is not a non-negative integer."""
        self._check_name(name)
        files = tuple(str(file) for file in files)
        if not files:
            raise ValueError(f"stage {name!r} lists no files")
        missing = [file for file in files if not self._file_exists(name, file)]
        if missing:
            raise ValueError(f"stage {name!r}: files not found in {self.models_dir}/{name}: {missing}")
        values = {key: metric_value(key, value) for key, value in metrics.items()}
        if self.main_metric not in values:
            raise ValueError(f"stage {name!r} has no {self.main_metric!r} metric")
        ints = {key.lower(): count_value(key, value) for key, value in (counts or {}).items()}
        stage = Stage(name, files, int(time.time()), values, ints)
        self.stages.pop(name, None)
        self.stages[name] = stage
        dropped = self._prune()
        self.write()
        for old in dropped:  # delete files only once result.yaml no longer lists them
            shutil.rmtree(os.path.join(self.models_dir, old), ignore_errors=True)
        return stage

    def add_attachment(self, section: str, path: str) -> None:
        """Copy a file (e.g. a PR curve) to models/attachments/<section>/ and list it in result.yaml."""
        name = self._copy_attachment(section, path)
        names = self.attachments.setdefault(section, [])
        if name not in names:
            names.append(name)
        if self.stages:
            self.write()

    def replace_attachments(self, section: str, paths: Sequence[str]) -> list[str]:
        """Make the files ``paths`` the whole of result.yaml's ``attachments[section]`` (e.g. the deployed stage's
        pictures, replaced when another stage becomes the best): each is copied to models/attachments/<section>/,
        result.yaml is rewritten once, then the section's earlier files that are no longer listed are deleted.
        Empty ``paths`` removes the section. Returns the names now listed.

        Raises:
            OSError: a file cannot be read; OutputError: it cannot be written (nothing listed changes then).
        """
        names = list(dict.fromkeys(self._copy_attachment(section, path) for path in paths))
        earlier = self.attachments.pop(section, [])
        if names:
            self.attachments[section] = names
        if self.stages:
            self.write()
        folder = os.path.join(self.models_dir, "attachments", section)
        for name in earlier:  # only once result.yaml no longer lists them
            if name not in names:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))
        return names

    def _copy_attachment(self, section: str, path: str) -> str:
        """Copy ``path`` into models/attachments/<section>/ atomically; returns its name there."""
        name = os.path.basename(path)
        folder = os.path.join(self.models_dir, "attachments", section)
        with open(path, "rb") as source, atomic_path(os.path.join(folder, name)) as tmp:
            with open(tmp, "wb") as target:  # a new file that replaces a link there, never writes through it
                shutil.copyfileobj(source, target)
        return name

    def set_evaluate_config(self, **values: float) -> None:
        """``evaluate_config`` of result.yaml (the platform reads ``iou_thr``, labelling mAP with it, and
        ``conf_thr``). A stage whose metrics hold ``conf_thr`` (the score its tp/fp/fn were counted at, e.g. an
        F1-optimal threshold per stage) labels ``conf_thr`` itself while it is the best stage."""
        self.evaluate_config.update({key: float(value) for key, value in values.items()})
        if self.stages:
            self.write()

    def to_yaml(self) -> dict[str, Any]:
        best = self.best
        if best is None:
            raise ValueError("no model stage was added")
        if self.legacy:
            return {"model": [f"{best.name}/{file}" for file in best.files], "map": best.metrics[self.main_metric]}
        document: dict[str, Any] = {
            "best_stage_name": best.name,
            "model_stages": {name: stage.to_yaml() for name, stage in self.stages.items()},
        }
        if self.attachments:
            document["attachments"] = {key: list(value) for key, value in self.attachments.items()}
        evaluate_config = dict(self.evaluate_config)
        if STAGE_CONF_THR in best.metrics:  # the platform shows the best stage's tp/fp/fn: label its threshold
            evaluate_config["conf_thr"] = float(best.metrics[STAGE_CONF_THR])
        if evaluate_config:
            document["evaluate_config"] = evaluate_config
        return document

    def write(self) -> None:
        atomic_write_text(self.result_file, yaml.safe_dump(self.to_yaml(), sort_keys=False))

    def _prune(self) -> list[str]:
        dropped = []
        while len(self.stages) > self.max_stages:
            best = self.best
            oldest = next(name for name in self.stages if best is None or name != best.name)
            del self.stages[oldest]
            dropped.append(oldest)
        return dropped

    def _file_exists(self, stage: str, file: str) -> bool:
        return any(os.path.isfile(os.path.join(folder, file))
                   for folder in (os.path.join(self.models_dir, stage), self.models_dir))

    @staticmethod
    def _check_name(name: str) -> None:
        if not _STAGE_NAME.fullmatch(name) or name == "attachments":
            raise ValueError(f"stage name {name!r} must use only letters, digits and '_'")


def _finite(path: str, score: Any) -> float:
    try:
        value = float(score)
    except (TypeError, ValueError):
        raise ValueError(f"mining score for {path} is not a number: {score!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"mining score for {path} is not finite: {value!r}")
    return value


class MiningResult:
    """result.tsv of a mining task: ``add(image, score)`` for each candidate; the core writes the file when the
    task ends, highest score first (the platform takes the first top-k lines and never reads the score).

    ``image`` is the candidate's path as the reader gave it; ``unroot`` maps it back to the path the candidate
    index names (under ``--root``, readers hand out local paths)."""

    def __init__(self, path: str, unroot: Callable[[str], str] = lambda image: image) -> None:
        self.path = path
        self._unroot = unroot
        self.scores: dict[str, float] = {}

    def add(self, image: str, score: Any) -> None:
        """Record ``image``'s score (a finite number; higher = more worth labelling). Raises ValueError for
        NaN or inf: one bad score would make the whole ranking meaningless."""
        path = self._unroot(str(image))
        self.scores[path] = _finite(path, score)

    def write(self) -> int:
        """Write result.tsv; returns the line count."""
        return write_mining_result(self.path, self.scores.items())


def write_mining_result(path: str, scores: Iterable[tuple[str, Any]]) -> int:
    """result.tsv: ``image<TAB>score``, highest score first (the platform takes the first top-k lines).

    Every score must be finite: one NaN is an error and nothing is written. Returns the line count.
    """
    rows = [(str(image), _finite(str(image), score)) for image, score in scores]
    rows.sort(key=lambda row: -row[1])  # stable: equal scores keep the plugin's order
    atomic_write_text(path, "".join(f"{image}\t{score!r}\n" for image, score in rows))
    return len(rows)


def _clip(value: float, limit: int | None) -> int:
    pixel = max(int(round(value)), 0)
    return pixel if limit is None else min(pixel, int(limit))


@dataclasses.dataclass(frozen=True)
class Detection:
    """A predicted box in pixel-edge coordinates (x2 exclusive) of the ORIGINAL image."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    class_id: int


class InferResult:
    """infer-result.json: one entry per candidate image (keyed by basename), integer boxes, class names."""

    def __init__(self, path: str, class_names: Sequence[str], *, legacy: bool = False) -> None:
        self.path = path
        self.class_names = tuple(class_names)
        self.key = "annotations" if legacy else "boxes"
        self.images: dict[str, list[dict[str, Any]]] = {}

    def add(self, image: str, detections: Iterable[Detection], width: int | None = None,
            height: int | None = None) -> None:
        """Record ``image``'s detections, rounded to pixels and clipped to ``width`` x ``height`` (always
        give the size: only the ymir-exc adapter, which never knew it, leaves it out)."""
        self.images[os.path.basename(image)] = [
            box for box in (self._box(image, d, width, height) for d in detections) if box is not None]

    def add_empty(self, image: str) -> None:
        """An image with no result (nothing found, or unreadable)."""
        self.images[os.path.basename(image)] = []

    def _box(self, image: str, detection: Detection, width: int | None,
             height: int | None) -> dict[str, Any] | None:
        if not 0 <= detection.class_id < len(self.class_names):
            raise ValueError(f"{image}: class id {detection.class_id} outside {len(self.class_names)} classes")
        corners = (detection.x1, detection.y1, detection.x2, detection.y2)
        if not all(math.isfinite(value) for value in corners):
            raise ValueError(f"{image}: box {corners} has a non-finite coordinate")
        score = float(detection.score)
        if not math.isfinite(score) or not 0.0 <= score <= 1.0:
            raise ValueError(f"{image}: score {score!r} is not in [0, 1]")
        x1, x2 = (_clip(detection.x1, width), _clip(detection.x2, width))
        y1, y2 = (_clip(detection.y1, height), _clip(detection.y2, height))
        if x2 <= x1 or y2 <= y1:
            return None  # nothing of the box is left inside the image
        return {"box": {"x": x1, "y": y1, "w": x2 - x1, "h": y2 - y1},
                "class_name": self.class_names[detection.class_id], "score": score}

    def write(self, candidates: Iterable[str] = ()) -> int:
        """Write the file; every path of ``candidates`` without a result gets an empty entry."""
        for image in candidates:
            self.images.setdefault(os.path.basename(image), [])
        document = {"detection": {name: {self.key: boxes} for name, boxes in self.images.items()}}
        atomic_write_text(self.path, json.dumps(document))
        return len(self.images)


#: object_type values (protocol.md section 2; :data:`ymir_runner.protocol.config.OBJECT_TYPES`).
DETECTION, SEMANTIC_SEGMENTATION, INSTANCE_SEGMENTATION = 2, 3, 4
#: The main metric of a result.yaml stage by object_type: the best stage's is the model's headline figure on the
#: platform (protocol.md section 3, segmentation.md section 3), and every stage must carry it.
MAIN_METRICS = {DETECTION: "mAP", SEMANTIC_SEGMENTATION: "mIoU", INSTANCE_SEGMENTATION: "maskAP"}
#: The object types whose infer-result.json is the COCO form of segmentation.md section 4 (:class:`SegInferResult`).
SEGMENTATION_TYPES = (SEMANTIC_SEGMENTATION, INSTANCE_SEGMENTATION)
#: Pixels of a label map counted at a time (``SegInferResult.add_label_map``): its temporaries stay a few MB.
CLASS_PIXEL_BLOCK = 1 << 20
#: Up to this many classes, a block of a label map is counted class by class (a comparison, a count and, with
#: weights, a dot product each: vectorised); more, by two bincounts (the weighted one makes a float64 copy of the
#: block's weights and runs 4-5x slower than a few dot products).
_CLASS_BY_CLASS = 16


def _pixels_by_class(flat: Any, weights: Any, classes: int) -> tuple[Any, Any]:
    """``(counts, sums)``, ``[classes]`` int64 and float64: how many of ``flat``'s values (1-D class ids; other
    values ignored) are each class id, and the sum of ``weights`` (1-D, as long, or None: zeros) over them."""
    import numpy as np

    if classes > _CLASS_BY_CLASS:
        counts = np.bincount(flat, minlength=classes + 1)[:classes]
        sums = (np.zeros(classes) if weights is None
                else np.bincount(flat, weights=weights, minlength=classes + 1)[:classes])
        return counts, sums
    counts, sums = np.zeros(classes, dtype=np.int64), np.zeros(classes)
    for class_id in range(classes):
        pixels = flat == class_id
        counts[class_id] = np.count_nonzero(pixels)
        if weights is not None and counts[class_id]:
            sums[class_id] = np.dot(pixels, weights)  # float32 weights: float32 within a block of 1 Mi pixels
    return counts, sums


def main_metric(object_type: int) -> str:
    """``mAP`` (2), ``mIoU`` (3) or ``maskAP`` (4): what :class:`TrainingResult` requires of every stage and ranks
    the stages by (:func:`fitness`).

    Raises:
        ValueError: an object_type the platform does not have.
    """
    try:
        return MAIN_METRICS[int(object_type)]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"object_type {object_type!r} is not one of {sorted(MAIN_METRICS)}") from None


@dataclasses.dataclass(frozen=True)
class InstanceMask:
    """A predicted instance (object_type 4): ``mask`` an ``[H, W]`` array, non-zero where the object is, in STORED
    pixels of the whole image; or, with ``origin = (x, y)``, the mask of the image region whose top-left stored pixel
    is ``(x, y)`` (e.g. a box-sized mask: no full-size array is needed to hand it over). Without ``origin`` a mask
    of another size than the image is refused (a mask of the reduced, decoded image would be misplaced). A
    multi-part instance is one mask."""

    mask: Any
    score: float
    class_id: int
    origin: tuple[int, int] | None = None


@dataclasses.dataclass(frozen=True)
class EncodedMask:
    """A predicted object given as a COCO ``segmentation`` of the STORED image (e.g. what pycocotools or an engine's
    own RLE encoder made): an RLE dict ``{"size": [H, W], "counts": ...}`` (a string or a list of counts) or a list
    of polygons ``[[x1, y1, x2, y2, ...], ...]`` (rasterised and merged by COCO's rasteriser). It is checked against
    the image's stored size and written as one compressed RLE string, as a mask would be."""

    segmentation: Any
    score: float
    class_id: int


@dataclasses.dataclass(frozen=True)
class _SegObject:
    """One encoded annotation of an image, before ids are given."""

    class_id: int
    score: float
    bbox: tuple[int, int, int, int]
    area: int
    counts: str


@dataclasses.dataclass
class _SegImage:
    width: int | None
    height: int | None
    objects: list[_SegObject]


class SegInferResult:
    """infer-result.json of a segmentation task (object_type 3 semantic, 4 instance): the COCO form of
    segmentation.md section 4, and no other.

    Each mask is encoded when it is added (a compressed RLE string of the stored-pixel mask, its tight integer
    bbox and pixel count): the writer keeps strings, never a stack of masks, so at most one full-size mask per call
    is alive besides the caller's own. The platform forms that crash a task or silently lose objects cannot be
    written through it:

    - every candidate image is listed once (``images[].id`` unique, ``file_name`` the basename), every class in
      ``categories`` (``id`` the 0-based class index, ``name`` the class name, never empty);
    - every annotation has ``category_id``, ``image_id`` of a listed image, a tight int ``bbox`` with w, h >= 1,
      ``area`` the pixel count, ``iscrowd`` the int 0, ``confidence`` in [0, 1], and an RLE ``segmentation``
      with STRING counts of the image's stored H x W (a mask of another size is refused: the platform decodes it
      with the stored size); never a polygon, ``{}`` or an empty mask (an empty mask is left out and counted);
    - two masks of one class with the same int bbox in an image: the platform keeps the first and silently drops
      the other, so only the higher-scoring one is written, and the other counted in :attr:`dropped`;
    - each image's annotations are sorted by confidence, highest first; type 3 has one annotation per class
      present in the label map, never a background class.

    Instance tasks call :meth:`add`, semantic tasks :meth:`add_label_map`; either may give COCO segmentations
    (RLE or polygons) to :meth:`add_encoded`; :meth:`add_empty` for an image with no result. :attr:`dropped`
    counts what was left out, by reason, for the task's log.
    """

    def __init__(self, path: str, class_names: Sequence[str], object_type: int) -> None:
        if int(object_type) not in SEGMENTATION_TYPES:
            raise ValueError(f"SegInferResult writes object_type 3 or 4, not {object_type!r}")
        names = tuple(str(name) for name in class_names)
        keys = [name.strip().lower() for name in names]
        if not names or not all(keys):
            raise ValueError(f"class names must be non-empty (the platform crashes on an empty one): {list(names)}")
        if len(set(keys)) != len(keys):  # the platform maps categories to classes by lower-cased, stripped name
            raise ValueError(f"class names {list(names)} are not distinct once lower-cased and stripped")
        self.path = path
        self.class_names = names
        self.object_type = int(object_type)
        self.images: dict[str, _SegImage] = {}
        #: What was left out, by reason (``empty mask``, ``same class and bbox as a higher-scoring mask``).
        self.dropped: collections.Counter[str] = collections.Counter()

    # --- adding ---------------------------------------------------------------------------------------------

    def add(self, image: str, instances: Iterable[InstanceMask], width: int, height: int) -> int:
        """Record ``image``'s instances (object_type 4); ``width`` x ``height`` is the image's STORED size, which
        every mask must cover (a mask of the decoded, reduced image must be scaled up first). Give a generator to
        keep one mask alive at a time. Returns the number of annotations recorded for the image.

        Raises:
            ValueError: a semantic task (use :meth:`add_label_map`), a mask that is not 2-D or leaves the image,
                a class id outside the class names, a score that is not a finite number in [0, 1].
        """
        if self.object_type != INSTANCE_SEGMENTATION:
            raise ValueError("add() takes instance masks (object_type 4); a semantic task writes add_label_map()")
        width, height = self._size(image, width, height)
        return self._record(image, width, height,
                            self._best_of_a_bbox(self._instance(image, instance, width, height)
                                                 for instance in instances))

    def add_encoded(self, image: str, objects: Iterable[EncodedMask], width: int, height: int) -> int:
        """Record ``image``'s objects given as COCO segmentations (:class:`EncodedMask`) of its STORED ``width`` x
        ``height``, in either task: instance (4) as :meth:`add` writes them; semantic (3) with the objects of one
        class merged into one annotation, its confidence their area-weighted mean. Returns the number of
        annotations recorded for the image.

        Raises:
            ValueError: a segmentation that is not of the stored image (an RLE of another size or whose counts do
                not sum to its pixels, a bad polygon, ``{}``), a class id outside the class names, a score that is
                not a finite number in [0, 1].
        """
        from .masks import MaskProblem, merge_rles, rle_area, to_rle

        width, height = self._size(image, width, height)
        found: list[tuple[int, float, dict[str, Any]]] = []
        for item in objects:
            class_id, score = self._class_id(image, item.class_id), self._score(image, item.score)
            try:
                found.append((class_id, score, to_rle(item.segmentation, height, width)))
            except MaskProblem as problem:
                raise ValueError(f"{image}: {problem.reason}: {problem}") from None
        if self.object_type == INSTANCE_SEGMENTATION:
            encoded = self._best_of_a_bbox(self._from_rle(rle, class_id, score) for class_id, score, rle in found)
            return self._record(image, width, height, encoded)
        merged = []
        for class_id in dict.fromkeys(class_id for class_id, _, _ in found):
            parts = [(score, rle) for part_class, score, rle in found if part_class == class_id]
            areas = [rle_area(rle) for _, rle in parts]
            score = sum(area * score for area, (score, _) in zip(areas, parts)) / max(sum(areas), 1)
            merged.append(self._from_rle(merge_rles([rle for _, rle in parts]), class_id, score))
        return self._record(image, width, height, merged)

    def add_label_map(self, image: str, label_map: Any, width: int, height: int, *, probability: Any = None,
                      unlabelled: int | None = None) -> int:
        """Record ``image``'s predicted label map (object_type 3): ``label_map [H, W]`` integer class ids into the
        class names, ``unlabelled`` (None: 255, ``masks.IGNORE_LABEL``) where no class is predicted; ``width`` x
        ``height`` its STORED size, which the map must have. One annotation per class present; its ``confidence``
        is the mean of ``probability [H, W]`` (e.g. the top-1 softmax probability) over that class's pixels, 1.0
        without it. Returns the number of annotations recorded for the image.

        Raises:
            ValueError: an instance task (use :meth:`add`), a map of another size or not of integers, a value that
                is neither a class id nor ``unlabelled``, ``unlabelled`` a class id, a probability outside [0, 1].
        """
        import numpy as np

        from .masks import IGNORE_LABEL

        if unlabelled is None:
            unlabelled = IGNORE_LABEL
        if self.object_type != SEMANTIC_SEGMENTATION:
            raise ValueError("add_label_map() takes a semantic label map (object_type 3); an instance task writes "
                             "add()")
        width, height = self._size(image, width, height)
        labels = np.asarray(label_map)
        if labels.shape != (height, width):
            raise ValueError(f"{image}: label map of shape {labels.shape}, the stored image is {height} x {width} "
                             f"(H x W): give the map at the stored size")
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{image}: label map of {labels.dtype}, not integer class ids")
        classes = len(self.class_names)
        if 0 <= unlabelled < classes:
            raise ValueError(f"unlabelled value {unlabelled} is a class id (of {self.class_names[unlabelled]!r})")
        weights = None if probability is None else np.asarray(probability)
        if weights is not None and weights.shape != labels.shape:
            raise ValueError(f"{image}: probability of shape {weights.shape}, label map {labels.shape}")
        columns, counts, sums = self._class_map(image, labels, weights, unlabelled)
        means = np.ones(classes) if weights is None else np.divide(sums, counts, out=np.zeros(classes),
                                                                   where=counts > 0)
        objects = []
        for class_id in np.flatnonzero(counts):
            mask = columns == class_id  # one class's mask alive at a time
            score = self._score(image, float(means[class_id]))
            objects.append(self._encoded(mask, int(class_id), score))
        return self._record(image, width, height, objects)

    def add_empty(self, image: str, width: int | None = None, height: int | None = None) -> None:
        """An image with no result (nothing found, or unreadable); its stored size when known."""
        self.images[os.path.basename(image)] = _SegImage(width, height, [])

    # --- writing --------------------------------------------------------------------------------------------

    def to_json(self, candidates: Iterable[str] = ()) -> dict[str, Any]:
        """The document; every path of ``candidates`` without a result is listed without objects (its stored size
        read from the image header when it can be)."""
        for image in candidates:
            name = os.path.basename(image)
            if name not in self.images:
                self.images[name] = _SegImage(*_header_size(image), [])
        categories = [{"id": index, "name": name} for index, name in enumerate(self.class_names)]
        images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for image_id, (name, entry) in enumerate(self.images.items(), start=1):
            record: dict[str, Any] = {"id": image_id, "file_name": name}
            if entry.width is not None and entry.height is not None:
                record.update(width=entry.width, height=entry.height)
            images.append(record)
            for found in sorted(entry.objects, key=lambda found: -found.score):  # stable: equal scores keep order
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": found.class_id,
                    "bbox": list(found.bbox), "area": found.area,
                    "segmentation": {"size": [entry.height, entry.width], "counts": found.counts},
                    "iscrowd": 0, "confidence": found.score})
        return {"images": images, "categories": categories, "annotations": annotations}

    def write(self, candidates: Iterable[str] = ()) -> int:
        """Write the file atomically (see :meth:`to_json`); returns the number of images listed."""
        document = self.to_json(candidates)
        atomic_write_text(self.path, json.dumps(document, separators=(",", ":")))
        return len(document["images"])

    # --- helpers ----------------------------------------------------------------------------------------------

    @staticmethod
    def _size(image: str, width: Any, height: Any) -> tuple[int, int]:
        try:
            size = (int(width), int(height))
        except (TypeError, ValueError):
            size = (0, 0)
        if size[0] < 1 or size[1] < 1 or size != (width, height):
            raise ValueError(f"{image}: the stored image size must be given as positive integers, got "
                             f"{width!r} x {height!r}")
        return size

    @staticmethod
    def _score(image: str, score: Any) -> float:
        try:
            value = float(score)
        except (TypeError, ValueError):
            raise ValueError(f"{image}: score {score!r} is not a number") from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"{image}: score {value!r} is not in [0, 1]")
        return value

    def _class_id(self, image: str, class_id: Any) -> int:
        try:
            index = int(class_id)
        except (TypeError, ValueError):
            raise ValueError(f"{image}: class id {class_id!r} is not an integer") from None
        if index != class_id or not 0 <= index < len(self.class_names):
            raise ValueError(f"{image}: class id {class_id!r} outside {len(self.class_names)} classes")
        return index

    def _class_map(self, image: str, labels: Any, weights: Any, unlabelled: int) -> tuple[Any, Any, Any]:
        """One pass over a label map, in blocks of rows (a few MB of temporaries whatever the image's size): the
        map as the codec reads masks, column-major, in the smallest unsigned type that holds the class ids (one
        byte per pixel up to 254 classes, however wide the map's own type: an int64 argmax would cost 8), pixels
        of no class set to its largest value; the pixels of each class and the sum of ``weights`` over them.

        Raises:
            ValueError: a value that is neither a class id nor ``unlabelled``.
        """
        import numpy as np

        classes = len(self.class_names)
        dtype = np.uint8 if classes < 0xFF else np.uint16 if classes < 0xFFFF else np.int64
        none = classes if dtype is np.int64 else int(np.iinfo(dtype).max)
        columns = np.empty(labels.shape, dtype=dtype, order="F")
        counts = np.zeros(classes, dtype=np.int64)
        sums = np.zeros(classes)
        rows = max(1, CLASS_PIXEL_BLOCK // max(labels.shape[1], 1))
        for start in range(0, labels.shape[0], rows):
            block = labels[start:start + rows]
            inside = (block >= 0) & (block < classes)
            if not inside.all():
                strays = np.unique(block[~inside & (block != unlabelled)])
                if strays.size:
                    raise ValueError(f"{image}: label map values {strays[:5].tolist()} are neither class ids (0 to "
                                     f"{classes - 1}) nor the unlabelled value {unlabelled}")
                block = np.where(inside, block, none)
            compact = block.astype(dtype, copy=False)
            columns[start:start + rows] = compact
            flat = compact.ravel()
            block_counts, block_sums = _pixels_by_class(
                flat, None if weights is None else weights[start:start + rows].ravel(), classes)
            counts += block_counts
            sums += block_sums
        return columns, counts, sums

    def _instance(self, image: str, instance: InstanceMask, width: int, height: int) -> _SegObject | None:
        import numpy as np

        class_id = self._class_id(image, instance.class_id)
        score = self._score(image, instance.score)
        mask = np.asarray(instance.mask)
        if mask.ndim != 2:
            raise ValueError(f"{image}: a mask must be [H, W], got shape {mask.shape}")
        rows, columns = mask.shape
        if instance.origin is None and (rows, columns) != (height, width):
            raise ValueError(f"{image}: a {rows} x {columns} (H x W) mask for the stored {height} x {width} image: "
                             f"give masks in stored pixels (or a region's mask with its origin)")
        x, y = (0, 0) if instance.origin is None else (int(value) for value in instance.origin)
        if x < 0 or y < 0 or x + columns > width or y + rows > height:
            raise ValueError(f"{image}: a {rows} x {columns} (H x W) mask at ({x}, {y}) leaves the stored "
                             f"{height} x {width} image: masks are in stored pixels")
        binary = mask if mask.dtype == np.bool_ else mask != 0
        if (x, y, columns, rows) == (0, 0, width, height):
            return self._encoded(binary, class_id, score)
        full = np.zeros((height, width), dtype=np.bool_, order="F")  # column-major, as the codec reads it
        full[y:y + rows, x:x + columns] = binary
        return self._encoded(full, class_id, score)

    def _encoded(self, mask: Any, class_id: int, score: float) -> _SegObject | None:
        from .masks import encode_mask  # numpy and faster-coco-eval: only when writing masks

        return self._from_rle(encode_mask(mask), class_id, score)

    def _from_rle(self, rle: dict[str, Any], class_id: int, score: float) -> _SegObject | None:
        """The annotation of a compressed RLE of the stored image; None (counted) when its mask is empty."""
        from .masks import rle_area, rle_bbox

        bbox, area = rle_bbox(rle), rle_area(rle)  # from the RLE: no pass over pixels
        if area == 0:
            self.dropped["empty mask"] += 1
            return None
        x, y, w, h = bbox
        return _SegObject(class_id, score, (x, y, w, h), area, rle["counts"])

    def _best_of_a_bbox(self, objects: Iterable[_SegObject | None]) -> list[_SegObject]:
        """``objects`` without the empty ones, and of those of one class with one int bbox (the platform keeps the
        first and silently drops the others) the highest-scoring only (the first of equal scores); counted."""
        kept: dict[tuple[int, tuple[int, int, int, int]], _SegObject] = {}
        for found in objects:
            if found is None:
                continue
            key = (found.class_id, found.bbox)
            earlier = kept.get(key)
            if earlier is not None:
                self.dropped["same class and bbox as a higher-scoring mask"] += 1
                if earlier.score >= found.score:
                    continue
            kept[key] = found
        return list(kept.values())

    def _record(self, image: str, width: int, height: int, objects: Sequence[_SegObject | None]) -> int:
        kept = [found for found in objects if found is not None]
        self.images[os.path.basename(image)] = _SegImage(width, height, kept)
        return len(kept)


def _header_size(image: str) -> tuple[int | None, int | None]:
    """An image's stored width and height from its header; (None, None) when it cannot be read."""
    from .images import ImageProblem, probe_image

    try:
        info = probe_image(image)
    except (ImageProblem, OSError):
        return None, None
    return info.width, info.height


def set_aside_previous_results(output: OutputPaths) -> list[str]:
    """Move what an earlier run published in this /out into ``<root_dir>/previous-runs/<UTC time>/``,
    keeping relative paths: result.yaml with the whole models folder, result.tsv and infer-result.json.
    Temp files of writes a SIGKILL cut short (in /out itself or among the moved files) are deleted.
    Returns what was done, one line each for the log; ``[]`` when /out held nothing of an earlier run.

    The platform reads result.yaml even when a task fails, and result.tsv and infer-result.json after it:
    left in place, an earlier run's files would be published as this task's, and its stage folders written
    over. Nothing of an earlier run is ever deleted or written over: what cannot be moved stops the task, which
    has written nothing yet. Nothing is moved through a link: a link among the results is moved as a link (its
    target, wherever it leads, is untouched), and ``previous-runs`` must be a real folder of the tree.

    Raises:
        OutputError: ``previous-runs`` is in the way (a file, a link, a folder that cannot be created), or an
            earlier result cannot be moved; the message names it.
    """
    root = os.path.abspath(output.root_dir)
    models = os.path.abspath(output.models_dir)
    remove_temp_files(root, recursive=False)  # not under tensorboard/ (the platform's mount) or previous-runs/
    published = [path for path in (output.training_result_file, output.mining_result_file,
                                   output.infer_result_file)
                 if os.path.lexists(path) and not _behind_link(os.path.abspath(path), root)]
    others = []
    if models != root and not root.startswith(models + os.sep):
        if os.path.isdir(models) and not os.path.islink(models):
            others = [os.path.join(models, name) for name in sorted(os.listdir(models))]
        elif os.path.lexists(models):  # a file or a link where the models folder belongs: moved as it is
            others = [models]
    if not published and not others:
        return []
    paths = list(dict.fromkeys(os.path.abspath(path) for path in published + others))
    holder, created = _previous_runs_folder(root, paths)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = _new_folder(holder, stamp)
    moved: list[str] = []
    try:
        for path in paths:
            if not os.path.lexists(path):  # result.yaml already moved with the models folder's entries
                continue
            relative = os.path.relpath(path, root)
            destination = os.path.join(target, os.path.basename(path) if relative.startswith("..") else relative)
            try:
                os.makedirs(os.path.dirname(destination), exist_ok=True)  # inside the new folder: ours
                _move(path, destination)
            except OSError as error:
                so_far = f" (what was moved before it is in {target})" if moved else ""
                raise OutputError(f"cannot move {path} of an earlier run aside to {holder} ({_reason(error)}): it "
                                  f"is left as it was and this task stops before it would publish it as its own or "
                                  f"write over it{so_far}; move it out of {root} or run on a new tree") from error
            moved.append(path)
    finally:
        if not moved:  # nothing could be moved: leave no empty folder behind (rmdir removes only empty ones)
            for folder, _, _ in os.walk(target, topdown=False):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)
            if created:
                with contextlib.suppress(OSError):
                    os.rmdir(holder)
    remove_temp_files(target)
    return [f"results of an earlier run were in {root}: moved to {target} (a task publishes only its own outputs)"]


def _behind_link(path: str, root: str) -> bool:
    """Whether a folder between ``root`` and ``path`` is a symbolic link (what is behind it moves with the link)."""
    folder = os.path.dirname(path)
    while folder.startswith(root + os.sep):
        if os.path.islink(folder):
            return True
        folder = os.path.dirname(folder)
    return False


def _previous_runs_folder(root: str, paths: Sequence[str]) -> tuple[str, bool]:
    """``<root>/previous-runs``, a real folder of the tree (created: True when this call created it).

    Raises:
        OutputError: a link (dangling or not), a file or anything else is in the way, or it cannot be created.
    """
    holder = os.path.join(root, PREVIOUS_RUNS_DIR)
    names = ", ".join(os.path.relpath(path, root) for path in paths[:3]) + (", ..." if len(paths) > 3 else "")
    stops = (f"the results of an earlier run in {root} ({names}) are left as they were and this task stops before "
             f"it would write over them")
    if os.path.islink(holder):
        raise OutputError(f"{holder} is a symbolic link (to {os.readlink(holder)}), not a folder of this tree: "
                          f"{stops}; replace the link with a folder or run on a new tree")
    if os.path.lexists(holder) and not os.path.isdir(holder):
        raise OutputError(f"{holder} is a file, not a folder: {stops}; move the file away or run on a new tree")
    try:
        os.mkdir(holder)  # never through a link: mkdir does not follow one
    except FileExistsError:
        return holder, False
    except OSError as error:
        raise OutputError(f"cannot create {holder} ({_reason(error)}): {stops}") from error
    return holder, True


def _new_folder(holder: str, stamp: str) -> str:
    """A new, empty ``holder/stamp`` (``stamp-1``, ``stamp-2``... when taken)."""
    for suffix in range(1000):
        target = os.path.join(holder, f"{stamp}-{suffix}" if suffix else stamp)
        try:
            os.mkdir(target)
        except FileExistsError:
            continue
        except OSError as error:
            raise OutputError(f"cannot create {target} ({_reason(error)}): the results of an earlier run in "
                              f"{os.path.dirname(holder)} are left as they were and this task stops before it "
                              f"would write over them") from error
        return target
    raise OutputError(f"{holder} holds 1000 folders named {stamp}: move some away")


def _move(path: str, destination: str) -> None:
    """Move a file, link (as a link) or folder tree to ``destination`` (which does not exist). Across devices:
    copy, then delete the source; a copy that failed is removed (the source is intact), a complete copy is
    never removed (the source may be partly deleted by then)."""
    try:
        os.rename(path, destination)
        return
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    try:
        if os.path.islink(path):
            os.symlink(os.readlink(path), destination)
        elif os.path.isdir(path):
            shutil.copytree(path, destination, symlinks=True)
        else:
            shutil.copy2(path, destination, follow_symlinks=False)
    except OSError:
        _remove_copy(destination)
        raise
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _remove_copy(path: str) -> None:
    """Delete what a failed copy left at ``path`` (a new folder's content, never an earlier result)."""
    with contextlib.suppress(OSError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)


def _reason(error: OSError) -> str:
    return error.strerror or str(error)
