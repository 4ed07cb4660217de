"""Semantic segmentation (object type 3, issue 27): the executor ``ultralytics-sem``, its PNG label masks (the core's
label map bit for bit; unlabelled pixels an extra background class or ignored), label maps mapped back to STORED
pixels in strips (never a full-size C x H x W float array), training scored by the core's seg StageEvaluator (the
platform's mIoU), inference through the core's ``infer_seg_candidates`` and mining on softmax maps."""

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("ultralytics", reason="the ultralytics plugin's tests run in .venv-ultralytics (see conftest.py)")
pytest.importorskip("ymir_runner_ultralytics", reason="ymir-runner-ultralytics is not installed")

from helpers import FAST, registry, run_in_subprocess  # noqa: E402
from ymir_runner_ultralytics import SEMANTIC_EXECUTOR_NAME, plugin, predict, semantic, weights  # noqa: E402

from ymir_runner import ConfigError, TaskKind  # noqa: E402
from ymir_runner.protocol.dataset import AnnotationReader, DatasetReader, SkipLog  # noqa: E402
from ymir_runner.testing import TaskTree  # noqa: E402

SIZE = (96, 96)
IMAGES = 12
COCO = "/in/annotations/coco-annotations.json"


# --- the executor and its templates ---------------------------------------------------------------------------

def test_the_semantic_executor_declares_object_type_3_and_a_nano_sem_model():
    import ultralytics

    specs = {spec.name: spec for spec in plugin.ymir_runner_register_executors()}
    spec = specs[SEMANTIC_EXECUTOR_NAME]
    assert spec.object_types == {3} and spec.annotation_formats == ("seg-coco",)
    training = {param.name: param for param in spec.templates[TaskKind.TRAINING]}
    assert training["model"].default == "yolo26n-sem"
    assert training["unlabelled_pixels"].default == "background"
    assert training["unlabelled_pixels"].choices == ("background", "ignore")
    assert {"save_period", "img_size", "epochs", "batch_size_per_gpu", "seed", "export_onnx"} <= set(training)
    models = os.path.join(os.path.dirname(ultralytics.__file__), "cfg", "models", "26")
    assert os.path.isfile(os.path.join(models, "yolo26-sem.yaml"))  # what yolo26n-sem.yaml is built from
    assert {param.name for param in spec.templates[TaskKind.INFER]} == {"img_size", "batch_size_per_gpu"}
    assert spec.mining_algorithms == ("entropy", "aldd", "random")
    assert "yolo26n-sem" in plugin.DEFAULT_DOWNLOADS  # the image's weights folder gets sem weights too


def test_img_man_writes_the_semantic_templates_in_their_folder(tmp_path):
    import subprocess
    import sys

    import yaml

    done = subprocess.run([sys.executable, "-m", "ymir_runner", "img-man", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert 3 in yaml.safe_load((tmp_path / "manifest.yaml").read_text())["object_type"]
    text = (tmp_path / "semantic-seg" / "training-template.yaml").read_text()
    training = yaml.safe_load(text)
    assert training["model"] == "yolo26n-sem" and training["export_format"] == "seg-coco:raw"
    assert training["unlabelled_pixels"] == "background" and "legal values: one of 'background', 'ignore'" in text
    mining = yaml.safe_load((tmp_path / "semantic-seg" / "mining-template.yaml").read_text())
    assert mining["mining_algorithm"] == "entropy"
    assert set(yaml.safe_load((tmp_path / "semantic-seg" / "infer-template.yaml").read_text())) >= {"img_size"}


def test_model_names_of_other_tasks_are_refused_naming_model(tmp_path):
    with pytest.raises(ConfigError, match=r"config key 'model': 'yolo26n' .*a detect model, this is a semantic task"):
        weights.resolve_start("yolo26n", str(tmp_path), None, 3)
    with pytest.raises(ConfigError, match=r"config key 'model': 'yolo26n-seg' .*a segment model, this is a semantic"):
        weights.resolve_start("yolo26n-seg", str(tmp_path), None, 3)
    with pytest.raises(ConfigError, match="config key 'model'"):
        weights.resolve_start("yolo11n-sem", str(tmp_path), None, 3)  # ultralytics has YOLO26 sem models only
    start = weights.resolve_start("yolo26s-sem", str(tmp_path), None, 3)
    assert (start.source, start.path) == (weights.SCRATCH, "yolo26s-sem.yaml")
    (tmp_path / "yolo26n-sem.pt").write_bytes(b"")
    assert weights.resolve_start("yolo26n-sem", str(tmp_path), None, 3).source == weights.IMAGE_WEIGHTS


# --- the dataset --------------------------------------------------------------------------------------------------

def sem_tree(root, **options):
    """A type-3 tree whose COCO file paints a polygon of the other class over part of every even image's object
    (later objects paint over earlier ones), marks image 1's object crowd (painted all the same) and has no object on
    image 4 (kept)."""
    tree = TaskTree(root, images=options.pop("images", IMAGES), size=SIZE, object_type=3, **options)
    path = tree.local(COCO)
    with open(path, encoding="utf-8") as stream:
        document = json.load(stream)
    extra = []
    for annotation in document["annotations"]:
        if annotation["image_id"] == 2:
            annotation["iscrowd"] = 1
        if annotation["image_id"] % 2:  # image ids are 1-based: image index 0, 2, 4...
            x, y, w, h = annotation["bbox"]
            x1, y1, x2, y2 = x + w // 2, y + h // 2, min(x + w + 6, SIZE[0] - 1), min(y + h + 4, SIZE[1] - 1)
            extra.append({**annotation, "id": 1000 + annotation["id"], "iscrowd": 0,
                          "category_id": 1 - annotation["category_id"], "bbox": [x1, y1, x2 - x1, y2 - y1],
                          "area": (x2 - x1) * (y2 - y1), "segmentation": [[x1, y1, x2, y1, x2, y2, x1, y2]]})
    document["annotations"] = [annotation for annotation in document["annotations"] + extra
                               if annotation["image_id"] != 5]
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(document, stream)
    return tree


def read_items(tree, index="train"):
    skips = SkipLog()
    reader = DatasetReader(tree.local(f"/in/{index}-index.tsv"), skips=skips, name=index, root=tree.root,
                           annotations=AnnotationReader(tuple(tree.class_names), "seg-coco", skips, object_type=3))
    return list(reader), skips


@pytest.mark.parametrize("unlabelled", ["ignore", "background"])
def test_label_masks_are_the_core_label_map_bit_for_bit(tmp_path, unlabelled):
    from PIL import Image

    tree = sem_tree(str(tmp_path / "tree"))
    items, skips = read_items(tree)
    layout, empty = semantic.write_layout(str(tmp_path / "dataset"), {"train": items}, tree.class_names, skips,
                                          unlabelled)
    assert len(layout.splits["train"]) == len(items) == IMAGES // 2 and empty == 1  # image 4: no object, kept
    painted_over = 0
    for index, item in enumerate(layout.splits["train"]):
        stem = f"{index:06d}_{os.path.splitext(os.path.basename(item.image))[0]}"
        with Image.open(tmp_path / "dataset" / "masks" / "train" / f"{stem}.png") as image:
            assert image.mode == "L"
            mask = np.asarray(image)
        label_map = item.label_map()
        expected = label_map.copy()
        if unlabelled == "background":
            expected[label_map == 255] = 2  # the extra class, after cat 0 and dog 1
        assert mask.dtype == np.uint8 and mask.shape == (item.height, item.width)
        assert np.array_equal(mask, expected)
        painted_over += len(np.unique(label_map[label_map != 255])) > 1
    assert painted_over >= 2  # two classes in one map: the later object painted over the earlier
    import yaml

    with open(layout.data_yaml, encoding="utf-8") as stream:
        data = yaml.safe_load(stream)
    assert data["masks_dir"] == "masks"
    assert data["names"] == ({0: "cat", 1: "dog", 2: "background"} if unlabelled == "background" else
                             {0: "cat", 1: "dog"})


# --- label maps in stored pixels -----------------------------------------------------------------------------------

def smooth_logits(rng, channels, side):
    rows, columns = np.mgrid[:side, :side]
    logits = np.zeros((channels, side, side), np.float32)
    for channel in range(channels):
        for _ in range(3):
            cx, cy, sigma = rng.uniform(0, side), rng.uniform(0, side), rng.uniform(2, 5)
            logits[channel] += rng.uniform(0, 3) * np.exp(-((columns - cx) ** 2 + (rows - cy) ** 2) / sigma ** 2)
    return logits


def test_label_maps_are_ultralytics_own_upsampling_in_stored_pixels():
    """Sampled straight at the stored pixels, the labels equal ultralytics' SemanticSegmentationPredictor path
    (upsample to the input, undo the letterbox with scale_masks, argmax) but on pixels where two classes' logits
    cross (the two interpolations round differently); the probability is the top-1 softmax."""
    import torch
    from ultralytics.utils import ops

    rng = np.random.default_rng(0)
    width, height, size, side = 150, 100, 64, 8
    _canvas, fit = predict.letterbox(np.zeros((height, width, 3), np.uint8), size)
    logits = smooth_logits(rng, 3, side)
    found = semantic.ClassLogits(logits, fit, size, background=2)
    result = found.label_map(width, height)
    assert result.labels.shape == (height, width) and result.unlabelled == 2
    upsampled = torch.nn.functional.interpolate(torch.from_numpy(logits)[None], (size, size), mode="bilinear")
    theirs = ops.scale_masks(upsampled, (height, width))[0]
    agree = (theirs.argmax(0).numpy() == result.labels).mean()
    print(f"labels equal to ultralytics' on {agree:.2%} of the pixels")
    assert agree > 0.995  # measured 2026-12-07: 99.99 %
    probability = torch.softmax(theirs, 0).max(0).values.numpy()
    assert np.abs(probability - result.probability)[theirs.argmax(0).numpy() == result.labels].mean() < 0.02


def test_a_reduced_decode_gives_the_label_map_at_the_stored_size():
    """Decoded at half the stored size (reduce-on-decode factor 2): the map is made at the STORED size, equal to the
    half-size map scaled up but near class borders (sampled finer)."""
    import cv2

    rng = np.random.default_rng(1)
    stored_w, stored_h, size, side = 300, 200, 64, 8
    _canvas, fit = predict.letterbox(np.zeros((stored_h // 2, stored_w // 2, 3), np.uint8), size)
    found = semantic.ClassLogits(smooth_logits(rng, 3, side), fit, size)
    stored = found.label_map(stored_w, stored_h, factor=2)
    half = found.label_map(stored_w // 2, stored_h // 2)
    assert stored.labels.shape == (stored_h, stored_w) and stored.unlabelled is None
    scaled = half.labels.repeat(2, 0).repeat(2, 1)
    differ = stored.labels != scaled
    assert differ.mean() < 0.02
    border = np.zeros_like(differ)
    for label in range(3):
        region = (scaled == label).astype(np.uint8)
        border |= (cv2.dilate(region, np.ones((5, 5), np.uint8)) != cv2.erode(region, np.ones((5, 5), np.uint8)))
    assert not (differ & ~border).any()


def test_a_6000_by_4000_candidate_with_19_classes_never_holds_a_full_size_class_array():
    """Memory above the model: the logits are sampled at the stored pixels in strips of rows, so the peak is the
    map itself (uint8 labels, float32 probability: 5 bytes a pixel), the writer's column-major copy and one class's
    mask (1 + 1), and strips of 16 MB: measured 183 MiB (8 bytes a pixel), never 20 x H x W floats (1.8 GB here;
    issue 27: <= 1.5 GB above the model)."""
    import tracemalloc

    from ymir_runner.protocol.results import SegInferResult

    rng = np.random.default_rng(7)
    width, height, size, side, classes = 6000, 4000, 640, 80, 19
    _canvas, fit = predict.letterbox(np.zeros((height // 8, width // 8, 3), np.uint8), size)  # decoded at 1/8
    found = semantic.ClassLogits(smooth_logits(rng, classes + 1, side), fit, size, background=classes)
    writer = SegInferResult(os.devnull, [f"c{index}" for index in range(classes)], 3)
    tracemalloc.start()
    try:
        result = found(width, height, 8)
        written = writer.add_label_map("big.jpg", result.labels, width, height, probability=result.probability,
                                       unlabelled=result.unlabelled)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written >= 10
    pixels = width * height
    print(f"peak {peak / 2**20:.0f} MiB for a 6000 x 4000 map of {classes} classes and background "
          f"({classes * pixels * 4 / 2**20:.0f} MiB for a C x H x W float32 array)")
    assert peak < 12 * pixels  # C x H x W float32 would be 80 bytes a pixel


def test_softmax_maps_hold_one_channel_per_class_on_the_image_not_the_pad():
    """Mining's maps: C channels summing to 1 (the background's probability given to each pixel's most probable
    class), on the grid cells of the image (a 2:1 image letterboxed to 64 px keeps 8 x 4 of the 8 x 8 cells)."""
    from ultralytics.nn.tasks import SemanticSegmentationModel

    network = SemanticSegmentationModel("yolo26n-sem.yaml", nc=3, verbose=False).eval()
    predictor = semantic.SemanticPredictor(network, "cpu", 64, 2, background=True)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)
    (maps,) = predictor.softmax_maps([image], views=2)
    assert len(maps) == 2
    for p in maps:
        assert p.shape == (2, 4, 8)
        assert np.allclose(p.sum(0), 1.0, atol=1e-5) and p.min() >= 0
    from ymir_runner import mining

    assert 0.0 <= mining.semantic_entropy_score(maps, np.ones(2)) <= np.log(2)
    assert mining.semantic_aldd_score(maps, np.ones(2)) >= 0.0


# --- the tasks ----------------------------------------------------------------------------------------------------

def two_squares(index, width, height):
    """Image ``index``'s two squares ``(class_id, xmin, ymin, xmax, ymax)`` (inclusive corners): class 0 in one half
    and class 1 in the other (sides swapped on odd images), each a sixth to a third of the width."""
    rng = np.random.default_rng(index)
    boxes = []
    for class_id, left in ((0, index % 2 == 0), (1, index % 2 == 1)):
        side = int(rng.integers(width // 6, width // 3))
        x = int(rng.integers(0, width // 2 - side)) + (0 if left else width // 2)
        y = int(rng.integers(0, height - side))
        boxes.append((class_id, x, y, x + side - 1, y + side - 1))
    return boxes


class TwoSquareTree(TaskTree):
    """A type-3 tree whose images each show a red square (class 0) and a green square (class 1) side by side on
    grey, sides and places varying by image, both filled as their masks; the rest unlabelled. The platform's mIoU
    counts the labelled pixels only: a model scores 1 only by giving each square's pixels its class."""

    def boxes_of(self, index):
        return two_squares(index, *self.size)

    def write_seg_coco(self):
        from ymir_runner.protocol.segcoco import SEG_COCO_FILE, SegCocoImage, seg_object, write_seg_coco

        width, height = self.size
        images = []
        for index, image in enumerate(self.images):
            objects = []
            for class_id, x1, y1, x2, y2 in self.boxes_of(index):
                objects.append(seg_object(class_id, [[x1, y1, x2 + 1, y1, x2 + 1, y2 + 1, x1, y2 + 1]], height,
                                          width))
            images.append(SegCocoImage(os.path.basename(image), width, height, objects))
        os.makedirs(os.path.dirname(self.local(SEG_COCO_FILE)), exist_ok=True)
        write_seg_coco(self.local(SEG_COCO_FILE), images, self.class_names)


#: 60 epochs of 6 two-square images at 96 px, batches of 4, no mosaic: long enough for the stages' label maps to hold
#: both classes and unlabelled regions side by side (2 epochs predict one class, or nothing, everywhere: a map any
#: mapping to stored pixels gets right); about 35 s on 2 busy CPUs.
SEM_TRAINING = {"epochs": 60, "img_size": 96, "batch_size_per_gpu": 4, "save_period": 20, "mosaic": 0.0}
STAGES = {"epoch_20", "epoch_40", "epoch_60"}


def two_square_tree(root, **options):
    return TwoSquareTree(root, images=options.pop("images", IMAGES), size=SIZE, object_type=3, **options)


@pytest.fixture(scope="module")
def sem_trained(shared_root):
    return run_in_subprocess(two_square_tree(os.path.join(shared_root, "sem-train"), config=SEM_TRAINING))


def test_sem_training_writes_miou_stages_that_verify_accepts(sem_trained):
    import yaml

    outcome = sem_trained.outcome
    assert outcome.exit_code == 0, outcome.stderr[-4000:]
    report = outcome.verify()
    assert report.ok, report.to_text()
    result = outcome.result_yaml()
    assert set(result["model_stages"]) == STAGES
    for stage in result["model_stages"].values():
        for key in ("mIoU", "mAcc", "aAcc"):
            assert type(stage[key]) is float and 0.0 <= stage[key] <= 1.0
        assert stage["files"][0] == "last.pt"
    assert result["model_stages"][result["best_stage_name"]]["files"] == ["last.pt", "last.onnx"]  # its ONNX export
    with open(os.path.join(outcome.out_dir, "models", "ymir-info.yaml"), encoding="utf-8") as stream:
        assert yaml.safe_load(stream)["object_type"] == 3
    masks = os.path.join(outcome.out_dir, "tmp", "training", "dataset", "masks")
    assert len(os.listdir(os.path.join(masks, "train"))) >= IMAGES // 2  # + ultralytics' label cache
    log = outcome.stderr
    assert "training yolo26n-sem.yaml from SCRATCH" in log
    assert "unlabelled pixels: background (class 2 'background'); 0 images without labelled pixels kept" in log
    assert "stage epoch_60: mIoU" in log
    assert sem_trained.network_attempts == []


def test_the_stage_checkpoint_records_its_object_type_and_the_onnx_gives_a_class_map(sem_trained):
    import onnxruntime
    import torch

    models = os.path.join(sem_trained.tree.out_dir, "models")
    best = sem_trained.outcome.result_yaml()["best_stage_name"]
    checkpoint = torch.load(os.path.join(models, best, "last.pt"), map_location="cpu", weights_only=False)
    metadata = checkpoint[weights.METADATA_KEY]
    assert metadata["object_type"] == 3 and metadata["unlabelled_pixels"] == "background"
    assert metadata["class_names"] == ["cat", "dog"] and int(checkpoint["model"].model[-1].nc) == 3
    session = onnxruntime.InferenceSession(os.path.join(models, best, "last.onnx"))
    (output,) = session.run(None, {"images": np.zeros((1, 3, 96, 96), np.float32)})
    assert output.shape == (1, 96, 96) and output.max() <= 2


def test_each_stage_miou_is_evaluate_on_its_own_inference_output(sem_trained, shared_root, capsys):
    """The stage's mIoU, mAcc and aAcc equal `ymir-runner evaluate` (the platform's scoring) on the infer-result.json
    that the stage's model writes for the validation images; verify accepts that file. At least one stage's maps
    hold a class beside unlabelled pixels (a map of one class everywhere would agree whatever the mapping)."""
    from ymir_runner.cli import main

    models = os.path.join(sem_trained.tree.out_dir, "models")
    stages = sem_trained.outcome.result_yaml()["model_stages"]
    partial = 0
    for name, stage in stages.items():
        tree = two_square_tree(os.path.join(shared_root, f"sem-consistency-{name}"), kinds=("infer",),
                               models_from=models, stages=[name], config={"img_size": SEM_TRAINING["img_size"]})
        validation = tree.images[IMAGES // 2:]
        with open(tree.local("/in/candidate-index.tsv"), "w", encoding="utf-8") as stream:
            stream.write("".join(f"{image}\n" for image in validation))
        outcome = tree.run(registry())
        assert outcome.exit_code == 0, outcome.stderr[-4000:]
        report = outcome.verify()
        assert report.ok, report.to_text()
        index = os.path.join(tree.root, "val-index-local.tsv")
        with open(index, "w", encoding="utf-8") as stream:
            stream.write("".join(f"{tree.local(image)}\t{tree.local(COCO)}\n" for image in validation))
        capsys.readouterr()
        assert main(["evaluate", "--object-type", "3", "--ground-truth", index, "--predictions",
                     os.path.join(outcome.out_dir, "infer-result.json"), "--class-names", "cat,dog", "--json"]) == 0
        scores = json.loads(capsys.readouterr().out)
        for key in ("mIoU", "mAcc", "aAcc"):
            assert abs(scores[key] - stage[key]) <= 1e-6, (name, key, scores[key], stage[key])
        areas = [annotation["area"] for annotation in outcome.infer_result()["annotations"]]
        print(f"{name}: mIoU {stage['mIoU']:.4f} mAcc {stage['mAcc']:.4f}, class regions of {sorted(areas)} pixels "
              f"of {SIZE[0] * SIZE[1]}")
        partial += any(0 < area < SIZE[0] * SIZE[1] for area in areas)
    assert partial


def test_sem_inference_writes_stored_size_maps_for_a_reduced_decode(sem_trained, shared_root):
    from PIL import Image

    models = os.path.join(sem_trained.tree.out_dir, "models")
    tree = TaskTree(os.path.join(shared_root, "sem-infer"), kinds=("infer",), images=3, size=(150, 100),
                    object_type=3, models_from=models, config={"img_size": 64})
    rng = np.random.default_rng(5)
    container = "/in/assets/od/big.jpg"  # 400 x 300: decoded at a quarter, which still covers img_size 64
    os.makedirs(os.path.dirname(tree.local(container)), exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(tree.local(container), quality=90)
    tree.images.append(container)
    tree.write_index_files()
    run = run_in_subprocess(tree)
    outcome = run.outcome
    assert outcome.exit_code == 0, outcome.stderr[-4000:]
    report = outcome.verify()
    assert report.ok, report.to_text()
    document = outcome.infer_result()
    sizes = {image["file_name"]: (image["width"], image["height"]) for image in document["images"]}
    assert sizes["big.jpg"] == (400, 300) and len(sizes) == 4
    ids = {image["id"]: image["file_name"] for image in document["images"]}
    per_image = {}
    for annotation in document["annotations"]:
        width, height = sizes[ids[annotation["image_id"]]]
        assert annotation["segmentation"]["size"] == [height, width] and annotation["category_id"] in (0, 1)
        per_image.setdefault(ids[annotation["image_id"]], set()).add(annotation["category_id"])
    assert all(len(classes) == len(set(classes)) for classes in per_image.values())  # one annotation per class
    assert run.network_attempts == []


@pytest.mark.parametrize("algorithm", ["entropy", "aldd", "random"])
def test_sem_mining_scores_every_candidate(sem_trained, shared_root, algorithm):
    models = os.path.join(sem_trained.tree.out_dir, "models")
    tree = TaskTree(os.path.join(shared_root, f"sem-mine-{algorithm}"), kinds=("mining",), images=5, size=SIZE,
                    object_type=3, models_from=models, config={"mining_algorithm": algorithm, "img_size": 64})
    outcome = tree.run(registry())
    assert outcome.exit_code == 0, outcome.stderr[-4000:]
    assert len(outcome.result_tsv()) == 5


def novelty_tree(root, models, algorithm, size=SIZE):
    """A mining tree of FAMILIAR candidates (a red and a green square, as in training, at new places and sizes) and
    ABSENT-class ones (a blue square beside a red one: a colour no class has), interleaved, and an unreadable file;
    returns it and each candidate's kind."""
    from ymir_runner.testing import write_png

    tree = TaskTree(root, kinds=("mining",), images=0, size=size, object_type=3, models_from=models,
                    config={"mining_algorithm": algorithm})
    red, green, blue = TaskTree.COLORS[:3]
    kinds = {}
    for index in range(12):
        absent = index % 2 == 1
        boxes = [(x1, y1, x2 + 1, y2 + 1, (red, blue if absent else green)[class_id])
                 for class_id, x1, y1, x2, y2 in two_squares(100 + index, *size)]
        image = f"/in/assets/mine/{index:02d}.png"
        write_png(tree.local(image), *size, boxes=boxes)
        tree.images.append(image)
        kinds[image] = "absent" if absent else "familiar"
    broken = "/in/assets/mine/broken.jpg"
    with open(tree.local(broken), "wb") as stream:
        stream.write(b"\xff\xd8\xff\xe0 not a JPEG")
    tree.images.append(broken)
    kinds[broken] = "unusable"
    with open(tree.local("/in/candidate-index.tsv"), "w", encoding="utf-8") as stream:
        stream.write("".join(f"{image}\n" for image in tree.images))
    return tree, kinds


def test_cald_is_not_a_semantic_mining_algorithm(sem_trained, shared_root):
    models = os.path.join(sem_trained.tree.out_dir, "models")
    tree = TaskTree(os.path.join(shared_root, "sem-mine-cald"), kinds=("mining",), images=2, size=SIZE,
                    object_type=3, models_from=models, config={"mining_algorithm": "cald"})
    outcome = tree.run(registry())
    assert outcome.return_code == 300001
    assert "config key 'mining_algorithm'" in outcome.last_stderr_line


def test_sem_fine_tuning_starts_from_a_sem_model_of_other_classes(sem_trained, tmp_path):
    """pretrained_model_params: a stage of this executor with 2 classes and background, fine-tuned on 3 classes:
    ultralytics keeps every layer whose shape fits (the class outputs are new)."""
    models = os.path.join(sem_trained.tree.out_dir, "models")
    tree = two_square_tree(str(tmp_path / "t"), class_names=("cat", "dog", "bird"), models_from=models,
                           config={**SEM_TRAINING, "epochs": 1, "export_onnx": False})
    outcome = tree.run(registry())
    assert outcome.exit_code == 0, outcome.stderr[-4000:]
    assert "starting from the pretrained model" in outcome.stderr
    assert "class outputs are new" in outcome.stderr
    assert 0.0 <= outcome.result_yaml()["model_stages"]["epoch_1"]["mIoU"] <= 1.0


# --- bad input ------------------------------------------------------------------------------------------------------

def test_a_bad_unlabelled_pixels_value_stops_naming_the_key(tmp_path):
    tree = sem_tree(str(tmp_path / "t"), config={**FAST, "unlabelled_pixels": "void"})
    outcome = tree.run(registry())
    assert outcome.return_code == 300001
    assert "config key 'unlabelled_pixels'" in outcome.last_stderr_line and "void" in outcome.last_stderr_line


def test_ignore_with_one_class_is_refused_naming_the_key(tmp_path):
    tree = sem_tree(str(tmp_path / "t"), class_names=("cat",), config={**FAST, "unlabelled_pixels": "ignore"})
    outcome = tree.run(registry())
    assert outcome.return_code == 300001
    assert "config key 'unlabelled_pixels': ignore with one class" in outcome.last_stderr_line


def test_a_detection_model_name_stops_the_training_naming_model(tmp_path):
    tree = sem_tree(str(tmp_path / "t"), config={**FAST, "model": "yolo26n"})
    outcome = tree.run(registry())
    assert outcome.return_code == 300001
    assert "config key 'model': 'yolo26n'" in outcome.last_stderr_line
    assert "a detect model, this is a semantic task" in outcome.last_stderr_line


def test_a_detection_model_in_a_semantic_task_is_refused(tmp_path):
    """A model package of a detector (no object type recorded: detection, as the platform reads it) in a type-3
    inference: 300005 before any image is read; the same checkpoint as pretrained_model_params of a type-3
    training: 300004 naming the key."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    detector = tmp_path / "detector" / "epoch_1"
    detector.mkdir(parents=True)
    torch.save({"model": DetectionModel("yolo26n.yaml", nc=2, verbose=False).half(),
                "train_args": {"task": "detect"}}, str(detector / "last.pt"))
    tree = sem_tree(str(tmp_path / "infer"), kinds=("infer",), models_from=str(detector))
    outcome = tree.run(registry())
    assert outcome.return_code == 300005, outcome.stderr[-3000:]
    tree = sem_tree(str(tmp_path / "train"), models_from=str(detector), config=FAST)
    outcome = tree.run(registry())
    assert outcome.return_code == 300004, outcome.stderr[-3000:]
    assert "config key 'pretrained_model_params'" in outcome.last_stderr_line
    assert "is an ultralytics detect model; this executor segments pixels by class" in outcome.last_stderr_line


def test_an_instance_checkpoint_in_a_semantic_model_package_is_a_model_error(sem_trained, tmp_path):
    """A package that says object type 3 but holds an instance-segmentation checkpoint: 300004 naming
    model_params_path (the package says 4: the core's 300005, as above)."""
    import torch
    from ultralytics.nn.tasks import SegmentationModel

    models = str(tmp_path / "models")
    shutil.copytree(os.path.join(sem_trained.tree.out_dir, "models"), models)
    best = sem_trained.outcome.result_yaml()["best_stage_name"]
    torch.save({"model": SegmentationModel("yolo26n-seg.yaml", nc=2, verbose=False).half(),
                "train_args": {"task": "segment"}}, os.path.join(models, best, "last.pt"))
    tree = sem_tree(str(tmp_path / "infer"), kinds=("infer",), models_from=models)
    outcome = tree.run(registry())
    assert outcome.return_code == 300004, outcome.stderr[-3000:]
    assert "config key 'model_params_path'" in outcome.last_stderr_line
    assert "is an ultralytics segment model; this executor segments pixels by class" in outcome.last_stderr_line


def test_one_class_semantic_trains_and_infers_with_a_background_class(tmp_path):
    tree = sem_tree(str(tmp_path / "train"), class_names=("cat",), config={**FAST, "epochs": 1,
                                                                            "export_onnx": False})
    outcome = tree.run(registry())
    assert outcome.exit_code == 0, outcome.stderr[-4000:]
    assert outcome.verify().ok
    assert "unlabelled pixels: background (class 1 'background')" in outcome.stderr
    stage = outcome.result_yaml()["model_stages"]["epoch_1"]
    assert 0.0 <= stage["mIoU"] <= 1.0
    infer = sem_tree(str(tmp_path / "infer"), kinds=("infer",), class_names=("cat",), images=2,
                     models_from=os.path.join(outcome.out_dir, "models"))
    outcome = infer.run(registry())
    assert outcome.exit_code == 0, outcome.stderr[-4000:]
    assert outcome.verify().ok
    assert {annotation["category_id"] for annotation in outcome.infer_result()["annotations"]} <= {0}


# --- quality: an overfit run (slow) --------------------------------------------------------------------------------

def overfit_tree(root, seed, epochs, model="yolo26n-sem"):
    """The overfit run of issue 27 (bench/bench_ultralytics_sem_overfit.py measures it per seed): 16 images of
    :class:`TwoSquareTree` at 160 px, training set = validation set, ``model`` from scratch."""
    shutil.rmtree(root, ignore_errors=True)
    tree = TwoSquareTree(root, images=16, size=(160, 160), object_type=3,
                         config={"epochs": epochs, "img_size": 160, "batch_size_per_gpu": 8,
                                 "save_period": max(epochs // 6, 1), "seed": seed, "export_onnx": False,
                                 "model": model})
    pairs = "".join(f"{image}\t{annotation}\n" for image, annotation in zip(tree.images, tree.annotations))
    for index in ("/in/train-index.tsv", "/in/val-index.tsv"):
        with open(tree.local(index), "w", encoding="utf-8") as stream:
            stream.write(pairs)
    return tree


#: The overfit run's epochs: about 250 CPU s on 2 cores (issue 27: <= 300 CPU s).
OVERFIT_EPOCHS = 300
#: The lowest deployed mIoU of 3 seeds (bench/bench_ultralytics_sem_overfit.py, 2026-12-07: 1.000, 0.993, 0.999;
#: see the README) minus 0.05.
OVERFIT_BAR = 0.943


@pytest.fixture(scope="module")
def overfit_run(shared_root):
    """The overfit run (seed 0) and its CPU seconds: the slow tests' model."""
    tree = overfit_tree(os.path.join(shared_root, "sem-overfit"), 0, OVERFIT_EPOCHS)
    before = os.times()
    run = run_in_subprocess(tree, timeout=1800)
    after = os.times()
    assert run.outcome.exit_code == 0, run.outcome.stderr[-4000:]
    return run, (after.children_user - before.children_user) + (after.children_system - before.children_system)


@pytest.mark.slow
def test_a_nano_sem_model_from_scratch_overfits_16_images(overfit_run):
    """Issue 27's CPU quality check: yolo26n-sem from scratch at 160 px on 16 two-square images, training set =
    validation set, seed 0; the deployed stage's mIoU (the core's evaluator) reaches the bar set from 3 measured
    seeds."""
    run, cpu = overfit_run
    result = run.outcome.result_yaml()
    best = result["model_stages"][result["best_stage_name"]]
    print(f"\n{OVERFIT_EPOCHS} epochs, {cpu:.0f} CPU s: deployed {result['best_stage_name']} mIoU {best['mIoU']:.3f}; "
          + ", ".join(f"{name} {stage['mIoU']:.3f}" for name, stage in result["model_stages"].items()))
    assert best["mIoU"] >= OVERFIT_BAR


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["entropy", "aldd"])
def test_absent_class_candidates_and_mining(overfit_run, shared_root, algorithm):
    """Mining with the overfit model on 6 candidates like its training images and 6 showing a colour no class has
    (a blue square beside a red one), interleaved, and an unreadable file: every candidate scored, the unreadable
    one last; ``entropy`` ranks the 6 absent-class candidates first. ``aldd`` does not (measured 2026-12-07: the 6
    familiar first, 0.016-0.024 against 0.010-0.015: its score is the disagreement between neighbouring cells, which
    the sharp edges of the familiar squares make; printed here; bench/bench_ultralytics_sem_novelty.py shows it for six
    kinds of unseen content and four choices of views, hence ``entropy`` is the executor's default). The whole C + 1
    softmax instead of the classes' renormalised distribution loses entropy's ranking (README's table)."""
    run, _cpu = overfit_run
    tree, kinds = novelty_tree(os.path.join(shared_root, f"sem-novelty-{algorithm}"),
                               os.path.join(run.tree.out_dir, "models"), algorithm, size=(160, 160))
    outcome = tree.run(registry())
    assert outcome.exit_code == 0, outcome.stderr[-4000:]
    rows = outcome.result_tsv()
    assert sorted(path for path, _ in rows) == sorted(kinds)
    ranked = sorted(rows, key=lambda row: -row[1])
    order = [kinds[path] for path, _ in ranked]
    print(f"\n{algorithm}: " + ", ".join(f"{kinds[path][0]} {score:.4f}" for path, score in ranked))
    assert order[-1] == "unusable"
    if algorithm == "entropy":
        assert order[:6] == ["absent"] * 6, order
