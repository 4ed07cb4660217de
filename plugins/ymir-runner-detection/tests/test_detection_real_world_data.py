"""The detection plugin on a dataset mixing the quirks of real users' data, end to end.

The set holds a 16-bit grey PNG, JPEGs missing their end marker, a 182-megapixel aerial JPEG, a decompression
bomb, boxes sticking out of or lying outside their image, every box written 25 times, a dense validation image
(150 objects: more than COCO's default 100 detections), VOC files saved in GBK with Chinese class names and index
files with a UTF-8 byte-order mark. Training must finish, say what it repaired and skipped, and measure the
ground truth that is really in the images: predicting that ground truth exactly scores mAP 1.0.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import json
import os
import shutil
import struct
import zlib

import numpy as np
import pytest
from helpers import read_result, run
from PIL import Image

import ymir_runner
from ymir_runner import TaskKind
from ymir_runner.evaluation import evaluate_detections
from ymir_runner.testing import RunOutcome, write_task_files
from ymir_runner_detection.engine import DetectionDataset

CLASSES = ["猫", "狗"]  # VOC files name classes; these are written in GBK
COLORS = [(230, 60, 60), (60, 60, 230)]
CONFIG = {"epochs": 2, "min_steps": 0,
        "save_period": 1, "img_size": 128, "batch_size_per_gpu": 4, "num_workers_per_gpu": 1,
          "mosaic": 0.0, "export_onnx": False, "max_detections": "auto"}


def reroot(container_path: str, root: str) -> str:
    """Where a container path (/in/..., /out/...) lies in the local tree ``root``."""
    return os.path.join(root, container_path.lstrip("/"))


class QuirkySet:
    """Writes images and VOC annotations under ``<root>/in`` and remembers the VISIBLE truth of each image:
    ``(class, x1, y1, x2, y2)`` in stored pixels (x2 exclusive), clipped to the image, each object once."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.rng = np.random.default_rng(0)
        self.lines: dict[str, list[str]] = {"train": [], "val": [], "candidate": []}
        self.truth: dict[str, list[tuple[int, int, int, int, int]]] = {}
        self.count = 0

    def local(self, container_path: str) -> str:
        return reroot(container_path, self.root)

    def _asset(self, data: bytes) -> str:
        """The asset's local path (index files name local paths, as ``ymir_runner_detection.demo`` does)."""
        self.count += 1
        name = f"{self.count:040x}"
        path = self.local(f"/in/assets/{name[-2:]}/{name}.jpg")  # the extension lies for PNGs, as it may
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as stream:
            stream.write(data)
        return path

    def _voc(self, path: str, boxes, *, encoding: str = "utf-8", repeat: int = 1) -> str:
        """VOC objects with INCLUSIVE corners as written (boxes may stick out of the image)."""
        objects = "".join(
            f"<object><name>{CLASSES[c]}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
            f"<ymax>{y2}</ymax></bndbox></object>" for c, x1, y1, x2, y2 in boxes) * repeat
        text = (f'<?xml version="1.0" encoding="{encoding}"?>\n'
                f"<annotation><filename>{path}</filename>{objects}</annotation>")
        annotation = self.local(f"/in/annotations/{os.path.basename(path).split('.')[0]}.xml")
        os.makedirs(os.path.dirname(annotation), exist_ok=True)
        with open(annotation, "wb") as stream:
            stream.write(text.encode(encoding))
        return annotation

    def add(self, split: str, data: bytes, size: tuple[int, int], boxes=(), *, encoding: str = "utf-8",
            repeat: int = 1) -> str:
        path = self._asset(data)
        width, height = size
        visible = []
        for c, x1, y1, x2, y2 in boxes:  # inclusive corners -> clipped pixel edges
            edges = (max(x1, 0), max(y1, 0), min(x2 + 1, width), min(y2 + 1, height))
            if edges[2] > edges[0] and edges[3] > edges[1]:
                visible.append((c, *edges))
        self.truth[path] = visible
        if split == "candidate":
            self.lines[split].append(path)
        else:
            self.lines[split].append(f"{path}\t{self._voc(path, boxes, encoding=encoding, repeat=repeat)}")
        return path

    def scene(self, size: tuple[int, int], boxes, *, mode: str = "RGB") -> np.ndarray:
        width, height = size
        image = self.rng.integers(90, 140, (height, width, 3), dtype=np.uint8)
        for c, x1, y1, x2, y2 in boxes:
            image[max(y1, 0):max(y2 + 1, 0), max(x1, 0):max(x2 + 1, 0)] = COLORS[c]
        return image

    def write_indexes(self) -> None:
        for split, name in (("train", "train-index.tsv"), ("val", "val-index.tsv"),
                            ("candidate", "candidate-index.tsv")):
            with open(self.local(f"/in/{name}"), "wb") as stream:  # a Windows editor's byte-order mark
                stream.write(codecs.BOM_UTF8 + "".join(line + "\n" for line in self.lines[split]).encode())


def encode(image, fmt: str, **options) -> bytes:
    """An array or PIL image encoded as ``fmt``."""
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, fmt, **options)
    return buffer.getvalue()


def sixteen_bit_png(image: np.ndarray) -> bytes:
    """A 16-bit grey PNG whose values span 20000..60000 (8-bit brightness times 257, squeezed)."""
    grey = image.mean(axis=2)
    values = (20000 + grey / 255 * 40000).astype(np.uint16)
    return encode(values, "PNG")


def broken_png(image: np.ndarray) -> bytes:
    """A PNG that ends properly but whose middle scanline has an invalid filter byte: only decoding finds it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    height, width = image.shape[:2]
    rows = [bytes([9 if y == height // 2 else 0]) + image[y].tobytes() for y in range(height)]
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


def bomb_png(side: int = 100_000) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + chunk(b"IEND", b""))


def random_boxes(rng, size, count, side=(14, 30)):
    width, height = size
    boxes = []
    for _ in range(count):
        w, h = (int(v) for v in rng.integers(*side, size=2))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        boxes.append((int(rng.integers(0, 2)), x, y, x + w - 1, y + h - 1))
    return boxes


def build(root: str) -> QuirkySet:
    data = QuirkySet(root)
    rng = data.rng
    size = (96, 96)
    for number in range(10):  # plain images, half saved in GBK
        boxes = random_boxes(rng, size, 2)
        data.add("train", encode(data.scene(size, boxes), "PNG"), size, boxes,
                 encoding="gbk" if number % 2 else "utf-8")
    sticking_out = [(0, -10, 20, 30, 50), (1, 70, 60, 120, 110), (0, 100, 10, 130, 30)]  # the last: outside
    data.add("train", encode(data.scene(size, sticking_out), "PNG"), size, sticking_out)
    boxes = random_boxes(rng, size, 2)
    data.add("train", encode(data.scene(size, boxes), "PNG"), size, boxes, repeat=25)
    boxes = random_boxes(rng, size, 2)
    data.add("train", sixteen_bit_png(data.scene(size, boxes)), size, boxes)
    for _ in range(4):  # interrupted copies: every byte but the end marker
        boxes = random_boxes(rng, size, 2)
        data.add("train", encode(data.scene(size, boxes), "JPEG", quality=95)[:-2], size, boxes)
    aerial = (14000, 13000)  # a valid JPEG of 182 Mpx: one big object in the middle
    aerial_box = [(1, 5000, 4000, 8999, 7999)]
    big = Image.new("L", aerial, 110)
    big.paste(60, (5000, 4000, 9000, 8000))
    data.add("train", encode(big, "JPEG", quality=80), aerial, aerial_box)
    del big
    data.add("train", bomb_png(), (1, 1), [(0, 1, 1, 5, 5)])
    boxes = random_boxes(rng, size, 2)
    data.add("train", broken_png(data.scene(size, boxes)), size, boxes)  # bad data after a proper header

    dense_size = (256, 256)  # 150 objects of 8 x 8 px on a grid
    dense = [(k % 2, 16 * (k % 15) + 4, 16 * (k // 15) + 40, 16 * (k % 15) + 11, 16 * (k // 15) + 47)
             for k in range(150)]
    data.add("val", encode(data.scene(dense_size, dense), "PNG"), dense_size, dense, encoding="gbk")
    val_out = [(1, -5, -5, 20, 20), (0, 40, 40, 60, 60)]
    data.add("val", encode(data.scene(size, val_out), "PNG"), size, val_out, repeat=25)
    boxes = random_boxes(rng, size, 2)
    data.add("val", sixteen_bit_png(data.scene(size, boxes)), size, boxes)
    boxes = random_boxes(rng, size, 2)
    data.add("val", encode(data.scene(size, boxes), "JPEG", quality=95)[:-2], size, boxes)

    for name in ("plain", "16-bit", "truncated"):
        boxes = random_boxes(rng, size, 1)
        image = data.scene(size, boxes)
        blob = {"plain": lambda image: encode(image, "PNG"), "16-bit": sixteen_bit_png,
                "truncated": lambda image: encode(image, "JPEG")[:-2]}[name](image)
        data.add("candidate", blob, size, boxes)
    data.add("candidate", bomb_png(), (1, 1))
    data.write_indexes()
    return data


def write_env(root: str, kinds, config) -> str:
    task_config = {"class_names": CLASSES, "gpu_id": "", "gpu_count": 0, "object_type": 2, "shm_size": "16G",
                   "plugin": "detection", **config}
    return write_task_files(root, kinds, task_config, task_id="quirks")


class ValidationRecorder:
    """An observer plugin: keeps the validation items the core's readers give the training task (boxes
    clipped to the image, duplicates removed), which is the ground truth the stage metrics are measured on."""

    def __init__(self) -> None:
        self.items: list = []

    @ymir_runner.hookimpl
    def ymir_runner_before_task(self, context):
        if context.kind == TaskKind.TRAINING:
            self.items = list(context.validation_set)


@pytest.fixture(scope="module")
def quirky(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("quirks"))
    data = build(root)
    env_file = write_env(root, ("training",), dict(CONFIG, export_format="det-voc:raw"))
    return root, data, env_file


@pytest.fixture(scope="module")
def trained_on_quirks(quirky):
    """The training run: root, data, exit code, stderr, and the validation items the task was given."""
    root, data, env_file = quirky
    recorder = ValidationRecorder()
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = run(env_file, recorder=recorder)
    return root, data, code, stderr.getvalue(), recorder.items


def test_training_on_real_world_quirks_finishes_and_names_every_repair_and_skip(trained_on_quirks):
    root, data, code, err, _ = trained_on_quirks
    assert code == 0, err[-3000:]
    summary = next(line for line in err.splitlines() if "training: skipped" in line)
    # train: 1 box outside + 24 duplicates x 2 boxes; val: 24 x 2 duplicates. Clipped: 2 train + 1 val boxes.
    assert ("skipped 1 box outside image, 96 duplicate box, 1 image too large; repaired 3 box clipped to image, "
            "1 corrupt image data, 5 truncated image") in summary, summary
    broken = data.lines["train"][-1].split("\t")[0]
    assert f"repaired (corrupt image data) at {broken}: found when decoding it" in err  # named, though only
    assert err.count("repaired (corrupt image data)") == 1  # decoding found it, once in every epoch
    assert "skipped (box outside image)" in err  # the box wholly outside, named with its file
    assert "dataset: training: 19 usable images of 20 index lines" in err
    assert "validation boxes per image: at most 150" in err
    assert "max_detections auto: 150 per validation image (at least 100; the densest validation image has 150 " \
           "objects)" in err
    assert "missing image" not in err and "unreadable" not in err  # no BOM-mangled path, no GBK failure
    result = read_result(root)
    best = result["model_stages"][result["best_stage_name"]]
    assert set(best) >= {"mAP", "mAR", "mAP50_95", "tp", "fp", "fn"}
    # An untrained model finds no object: no threshold is better than another, the default operating point 0.25.
    assert result["evaluate_config"] == {"iou_thr": 0.5, "conf_thr": best["conf_thr"]}
    # ymir-runner verify: training outputs, config.yaml's classes, task_id quirks
    report = RunOutcome(code, err, os.path.join(root, "out"), os.path.join(root, "in", "env.yaml")).verify()
    assert report.ok, report.to_text()


def test_a_model_predicting_the_visible_ground_truth_scores_map_1(trained_on_quirks):
    """The evaluator gets the ground truth the readers produce (clipped, deduplicated) and the detection cap the
    training task uses: predicting exactly what is visible in each image scores 1.0 at every IoU."""
    root, data, _, _, validation = trained_on_quirks
    assert len(validation) == 4
    ground_truth, perfect = [], []
    for item in validation:
        boxes = np.array([box[1:5] for box in item.boxes], np.float32).reshape(-1, 4)
        classes = np.array([box.class_id for box in item.boxes], np.int64)
        ground_truth.append((boxes, classes))
        truth = np.array(data.truth[item.image], np.float32).reshape(-1, 5)
        perfect.append((truth[:, 1:], np.ones(len(truth), np.float32), truth[:, 0].astype(np.int64)))
    cap = max(len(classes) for _, classes in ground_truth)  # max_detections auto: the densest image (logged above)
    assert cap == 150 and CONFIG["max_detections"] == "auto"
    result = evaluate_detections(ground_truth, perfect, len(CLASSES), max_detections=cap)
    assert result.map == pytest.approx(1.0) and result.map50_95 == pytest.approx(1.0)
    assert result.mar == pytest.approx(1.0)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (
        sum(len(classes) for _, classes in ground_truth), 0, 0)
    # COCO's default of 100 detections per image would have hidden a third of the dense image's objects.
    assert evaluate_detections(ground_truth, perfect, len(CLASSES), max_detections=100).map < 0.95


def test_every_task_decodes_the_quirky_images_by_the_same_rules(quirky):
    root, data, _ = quirky
    lines = [line.split("\t")[0] for line in data.lines["train"]]
    by_kind = {"16-bit": lines[12], "truncated": lines[13], "aerial": lines[17]}
    items = [(path, np.array(data.truth[path], np.float32)[:, 1:].reshape(-1, 4),
              np.array(data.truth[path], np.int64)[:, 0]) for path in by_kind.values()]
    dataset = DetectionDataset(items, 128)  # validation, mining and inference letterbox this way
    for index, name in enumerate(by_kind):
        sample = dataset[index]
        image = sample["image"].numpy()
        assert sample["corrupt"] == {}, name
        assert image.std() > 2, name  # content, not a white (16-bit) or grey (failed decode) square
        info = sample["letterbox"]
        width, height = data_size = (14000, 13000) if name == "aerial" else (96, 96)
        assert (info.orig_width, info.orig_height) == data_size, name
        # Boxes in the network input come back to the stored pixels exactly (the aerial one decoded at 1/8).
        pad = np.array([info.pad_x, info.pad_y] * 2)
        scale = np.array([info.scale_x, info.scale_y] * 2)
        back = (sample["boxes"].numpy() - pad) / scale
        np.testing.assert_allclose(back, items[index][1], atol=0.01 * max(width, height) / 128)
    # The 16-bit image is scaled by the full 16-bit range (v8 = v16 >> 8), not clipped to white.
    stored = np.asarray(Image.open(by_kind["16-bit"])).astype(np.float64)
    np.testing.assert_array_equal(dataset.load_readable(0)[0][..., 0], stored.astype(np.int64) >> 8)


def test_mining_and_inference_answer_for_every_quirky_candidate(trained_on_quirks, tmp_path):
    root, data, code, _, _ = trained_on_quirks
    assert code == 0
    task = str(tmp_path)
    shutil.copytree(reroot("/in", root), reroot("/in", task), ignore=shutil.ignore_patterns("models"))
    result = read_result(root)
    stage = result["best_stage_name"]
    shutil.copytree(os.path.join(root, "out", "models", stage), reroot(f"/in/models/{stage}", task))
    env_file = write_env(task, ("mining", "infer"), {
        "model_params_path": [reroot(f"/in/models/{stage}/model.pt", task)], "mining_algorithm": "entropy",
        "batch_size_per_gpu": 2, "num_workers_per_gpu": 0})
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert run(env_file) == 0, stderr.getvalue()[-3000:]
    err = stderr.getvalue()
    assert "skipped 1 image too large; repaired 1 truncated image" in err
    candidates = data.lines["candidate"]
    rows = [line.rstrip("\n").split("\t") for line in open(reroot("/out/result.tsv", task))]
    assert sorted(path for path, _ in rows) == sorted(candidates)
    assert rows[-1][0] == candidates[-1]  # only the bomb is ranked last (the BOM'd first line is scored)
    with open(reroot("/out/infer-result.json", task)) as stream:
        detection = json.load(stream)["detection"]
    assert set(detection) == {os.path.basename(path) for path in candidates}
    assert detection[os.path.basename(candidates[-1])] == {"boxes": []}
