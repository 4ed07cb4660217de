"""Inference and mining of the semantic segmentation executor (``semantic-fpn``, object type 3) through the core's
loops: label maps at the candidates' STORED pixels written as the platform reads them, the memory of a 6000 x 4000
candidate, and the mining algorithms of type 3.

Models here are made by hand (a Semantic FPN at its initialisation, saved as a stage): what is tested is the
mapping to stored pixels and the files, not what a model learnt (test_semantic_consistency.py trains)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import yaml
from PIL import Image

from ymir_runner import TaskKind, decode_image
from ymir_runner.protocol.masks import decode_segmentation
from ymir_runner.testing import RunOutcome, install_models, plugin_registry, write_task_files
from ymir_runner_detection import SEMANTIC_EXECUTOR_NAME, plugin, synthetic
from ymir_runner_detection.checkpoint import save_checkpoint
from ymir_runner_detection.engine import build_semantic_model, stored_label_map
from ymir_runner_detection.predict import decode_side, letterboxed
from ymir_runner_detection.semantic.inference import semantic_predictions

CLASSES = list(synthetic.CLASS_NAMES)
IMG_SIZE = 64


def hand_made_model(folder, unlabelled_pixels: str, img_size: int = IMG_SIZE) -> str:
    """A folder holding one stage's model.pt: a nano Semantic FPN at its (seeded) initialisation."""
    import torch

    torch.manual_seed(0)
    model = build_semantic_model("nano", len(CLASSES), unlabelled_pixels)
    stage = os.path.join(str(folder), "epoch_1")
    os.makedirs(stage, exist_ok=True)
    save_checkpoint(model, os.path.join(stage, "model.pt"), class_names=CLASSES, img_size=img_size, epoch=1)
    return stage


def seg_task(root, kinds, candidates, models_from, *, stages=None, **config) -> str:
    """A mining and/or inference task of object type 3 on ``candidates`` (image paths), its model installed from
    ``models_from`` (a training's /out/models, or a folder of model files); returns env.yaml."""
    root = str(root)
    os.makedirs(os.path.join(root, "in"), exist_ok=True)
    with open(os.path.join(root, "in", "candidate-index.tsv"), "w", encoding="utf-8") as stream:
        stream.write("".join(f"{path}\n" for path in candidates))
    models = os.path.join(root, "in", "models")
    files = install_models(str(models_from), models, stages)
    info_file = os.path.join(models, "ymir-info.yaml")
    with open(info_file, encoding="utf-8") as stream:
        info = yaml.safe_load(stream)
    if "object_type" not in info:  # a model made by hand: recorded as a segmentation training records it
        info["object_type"] = 3
        with open(info_file, "w", encoding="utf-8") as stream:
            yaml.safe_dump(info, stream)
    task_config = {"class_names": CLASSES, "model_params_path": [os.path.join(models, file) for file in files],
                   "num_workers_per_gpu": 0, "batch_size_per_gpu": 4, **config}
    return write_task_files(root, kinds, task_config, object_type=3)


def run_task(env_file: str) -> RunOutcome:
    """Run the task with this plugin alone (both its executors registered, as the image has them)."""
    import contextlib
    import io

    from ymir_runner import run

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = run(env_file, registry=plugin_registry({"detection": plugin}))
    return RunOutcome(code, stderr.getvalue(), os.path.join(os.path.dirname(os.path.dirname(env_file)), "out"),
                      env_file)


def odd_candidates(folder) -> dict[str, tuple[int, int]]:
    """Candidates the decoder treats specially -> their STORED (width, height): an EXIF-rotated JPEG (orientation
    6: shown turned, stored 90 x 60), a truncated JPEG, a 16-bit grey PNG, and a JPEG large enough to be reduced on
    decode (1000 x 600 at img_size 64: decoded a quarter of its size)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    found = {}

    def photo(width, height):
        return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))

    path = os.path.join(folder, "rotated.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    photo(90, 60).save(path, exif=exif)
    found[path] = (90, 60)
    path = os.path.join(folder, "truncated.jpg")
    photo(80, 70).save(path, quality=90)
    with open(path, "rb") as stream:
        data = stream.read()
    with open(path, "wb") as stream:
        stream.write(data[:len(data) * 2 // 3])
    found[path] = (80, 70)
    path = os.path.join(folder, "grey16.png")
    Image.fromarray(rng.integers(0, 65535, (50, 70), dtype=np.uint16)).save(path)
    assert Image.open(path).mode == "I;16"
    found[path] = (70, 50)
    path = os.path.join(folder, "large.jpg")
    photo(1000, 600).save(path, quality=85)
    found[path] = (1000, 600)
    return found


def test_the_executor_is_registered_for_every_task_of_object_type_3():
    specs = {spec.name: spec for spec in plugin.ymir_runner_register_executors()}
    spec = specs[SEMANTIC_EXECUTOR_NAME]
    assert spec.object_types == {3} and spec.tasks == {TaskKind.TRAINING, TaskKind.MINING, TaskKind.INFER}
    assert spec.mining_algorithms == ("entropy", "aldd", "random")
    infer_keys = [param.name for param in spec.templates[TaskKind.INFER]]
    assert infer_keys == ["img_size", "batch_size_per_gpu", "num_workers_per_gpu"]  # no score, no box count


def test_label_maps_of_odd_candidates_have_their_stored_size(tmp_path):
    model = hand_made_model(tmp_path / "model", "ignore")  # every pixel is a class: every image has objects
    stored = odd_candidates(tmp_path / "candidates")
    outcome = run_task(seg_task(tmp_path / "task", ("infer",), list(stored), model))
    assert outcome.exit_code == 0, outcome.stderr[-2000:]
    report = outcome.verify()
    assert report.ok, report.to_text()
    result = outcome.infer_result()
    images = {image["id"]: image for image in result["images"]}
    assert {image["file_name"]: (image["width"], image["height"]) for image in images.values()} == {
        os.path.basename(path): size for path, size in stored.items()}
    covered = {}
    for annotation in result["annotations"]:
        image = images[annotation["image_id"]]
        mask = decode_segmentation(annotation["segmentation"], image["height"], image["width"])
        assert mask.shape == (image["height"], image["width"]) and mask.sum() == annotation["area"]
        assert 0.0 <= annotation["confidence"] <= 1.0
        covered[image["file_name"]] = covered.get(image["file_name"], 0) + annotation["area"]
    # with unlabelled_pixels: ignore every stored pixel gets a class: the classes' masks tile the image
    assert covered == {os.path.basename(path): width * height for path, (width, height) in stored.items()}
    assert "truncated" in outcome.stderr  # the damaged candidate is predicted, and said to be damaged


def test_reduce_on_decode_is_undone_in_the_label_map(tmp_path):
    stored = odd_candidates(tmp_path)
    large = next(path for path in stored if path.endswith("large.jpg"))
    decoded = decode_image(large, decode_side(IMG_SIZE))
    assert decoded.factor == 4 and decoded.image.size == (250, 150)
    model = build_semantic_model("nano", len(CLASSES), "background").eval()
    (prediction,) = semantic_predictions(model, [letterboxed(decoded, IMG_SIZE)], "cpu")
    label_map = prediction(1000, 600, decoded.factor)
    assert label_map.labels.shape == (600, 1000) and label_map.labels.dtype == np.uint8
    assert label_map.probability.shape == (600, 1000) and label_map.probability.dtype == np.float32
    assert set(np.unique(label_map.labels)) <= {0, 1, 2, 255}
    # the very map stage evaluation computes for this image (one call of the engine's resampling)
    info = prediction.info
    labels, probability = stored_label_map(prediction.logits, stride=model.stride, scale_x=info.scale_x,
                                           scale_y=info.scale_y, pad_x=info.pad_x, pad_y=info.pad_y, width=1000,
                                           height=600, background=True)
    np.testing.assert_array_equal(label_map.labels, labels)
    np.testing.assert_array_equal(label_map.probability, probability)
    with pytest.raises(ValueError, match="letterboxed from 1000x600"):
        prediction(500, 300, 1)


MEMORY_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import torch
    import ymir_runner
    from ymir_runner.testing import plugin_registry
    from ymir_runner_detection import plugin
    from ymir_runner_detection.semantic import inference  # noqa: F401  (imported before the baseline)

    def rss():
        with open("/proc/self/statm") as stream:
            return int(stream.read().split()[1]) * resource.getpagesize()

    registry = plugin_registry({"detection": plugin})
    warm_up = ymir_runner.run(sys.argv[1], registry=registry)  # what any task costs: imports, model, first forward
    before = max(rss(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    code = warm_up or ymir_runner.run(sys.argv[2], registry=registry)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"code": code, "before": before, "peak": peak}))
""")


def test_a_6000_by_4000_candidate_never_gets_a_full_size_class_by_pixel_array(tmp_path):
    """The task's peak memory above the peak of the same task on a small candidate in the same process (what any
    task costs: imports, the model, the first forward pass) stays below ONE float32 array of K x H x W, K = 4 (3
    classes and the background): the label map, its probability and the writer's class masks are H x W each; the
    logits are resampled strip by strip (``engine.semantic.stored_label_map``)."""
    width, height = 6000, 4000
    path = tmp_path / "huge.jpg"
    picture = Image.new("RGB", (width, height), (90, 120, 60))
    picture.paste((200, 40, 40), (1000, 800, 3000, 2600))
    picture.save(path, quality=80)
    del picture
    model = hand_made_model(tmp_path / "model", "background")
    small = tmp_path / "small.jpg"
    Image.new("RGB", (64, 48), (90, 120, 60)).save(small)
    warm_up = seg_task(tmp_path / "warm-up", ("infer",), [str(small)], model)
    env_file = seg_task(tmp_path / "task", ("infer",), [str(path)], model)
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, warm_up, env_file], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["code"] == 0, done.stderr[-2000:]
    grown = measured["peak"] - measured["before"]
    full_size = 4 * height * width * 4  # K x H x W float32: 384 MB
    print(f"6000 x 4000 candidate: peak memory {grown / 2**20:.0f} MiB above a task on a 64 x 48 one; one "
          f"K x H x W float32 array is {full_size / 2**20:.0f} MiB")
    assert grown < full_size
    result = json.loads((tmp_path / "task" / "out" / "infer-result.json").read_text())
    assert [(image["width"], image["height"]) for image in result["images"]] == [(width, height)]


@pytest.mark.parametrize("algorithm", ["entropy", "aldd", "random"])
def test_mining_ranks_every_candidate(tmp_path, algorithm):
    model = hand_made_model(tmp_path / "model", "ignore")
    data = synthetic.generate_segmentation(tmp_path / "data", n_train=0, n_val=0, n_candidates=5,
                                           img_size_range=(48, 96), seed=3)
    candidates = [line.strip() for line in open(data.candidate_index) if line.strip()]
    outcome = run_task(seg_task(tmp_path / "task", ("mining",), candidates, model, mining_algorithm=algorithm))
    assert outcome.exit_code == 0, outcome.stderr[-2000:]
    report = outcome.verify()
    assert report.ok, report.to_text()
    ranked = outcome.result_tsv()
    assert sorted(path for path, _ in ranked) == sorted(candidates)
    scores = [score for _, score in ranked]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) > 1
    if algorithm == "entropy":  # the mean pixel entropy over 3 classes
        assert all(0.0 <= score <= np.log(3) + 1e-6 for score in scores)


def test_mining_a_model_trained_with_a_background_class(tmp_path):
    """Its softmax maps have a background channel, last: the core scores the whole distribution."""
    model = hand_made_model(tmp_path / "model", "background")
    data = synthetic.generate_segmentation(tmp_path / "data", n_train=0, n_val=0, n_candidates=3,
                                           img_size_range=(48, 64), seed=3)
    candidates = [line.strip() for line in open(data.candidate_index) if line.strip()]
    outcome = run_task(seg_task(tmp_path / "task", ("mining",), candidates, model, mining_algorithm="entropy"))
    assert outcome.exit_code == 0, outcome.last_stderr_line
    assert len(outcome.result_tsv()) == 3


def test_cald_is_not_offered_and_a_config_asking_for_it_stops_naming_the_key(tmp_path):
    spec = {spec.name: spec for spec in plugin.ymir_runner_register_executors()}[SEMANTIC_EXECUTOR_NAME]
    algorithm = {param.name: param for param in spec.template(TaskKind.MINING)}["mining_algorithm"]
    assert "cald" not in algorithm.choices and algorithm.default == "entropy"
    model = hand_made_model(tmp_path / "model", "ignore")
    stored = odd_candidates(tmp_path / "candidates")
    outcome = run_task(seg_task(tmp_path / "task", ("mining",), list(stored)[:1], model, mining_algorithm="cald"))
    assert outcome.exit_code != 0
    assert "'mining_algorithm'" in outcome.last_stderr_line and "cald" in outcome.last_stderr_line


def test_a_detection_model_recorded_as_a_segmentation_model_is_refused_naming_the_key(tmp_path):
    """The core refuses a model whose ymir-info.yaml records another object type (300005); a detection checkpoint
    under a type-3 record is refused by the executor, naming the config key and the file."""
    import torch

    from ymir_runner_detection.engine import build_model

    torch.manual_seed(0)
    stage = tmp_path / "model" / "epoch_1"
    stage.mkdir(parents=True)
    save_checkpoint(build_model("nano", len(CLASSES)), str(stage / "model.pt"), class_names=CLASSES,
                    img_size=IMG_SIZE, epoch=1)
    stored = odd_candidates(tmp_path / "candidates")
    outcome = run_task(seg_task(tmp_path / "task", ("infer",), list(stored)[:1], stage))
    assert outcome.exit_code != 0
    assert "'model_params_path'" in outcome.last_stderr_line and "detection model" in outcome.last_stderr_line


def test_mining_and_inference_in_one_run(tmp_path):
    model = hand_made_model(tmp_path / "model", "ignore")
    stored = odd_candidates(tmp_path / "candidates")
    outcome = run_task(seg_task(tmp_path / "task", ("mining", "infer"), list(stored), model))
    assert outcome.exit_code == 0, outcome.stderr[-2000:]
    report = outcome.verify()
    assert report.ok, report.to_text()
    assert len(outcome.result_tsv()) == len(stored) and len(outcome.infer_result()["images"]) == len(stored)
    assert yaml.safe_load(open(os.path.join(tmp_path, "task", "in", "config.yaml")))["object_type"] == 3


def test_mining_scores_the_image_s_cells_not_the_letterbox_padding():
    from ymir_runner_detection.engine.augment import letterbox_image
    from ymir_runner_detection.semantic.mining import image_cells

    wide = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 64, 3), dtype=np.uint8))
    image, info = letterbox_image(wide, 64)
    assert (info.pad_x, info.pad_y) == (0, 17)  # rows 17..46 hold the image
    assert image_cells(image, 4) == (slice(4, 12), slice(0, 16))  # every cell touching an image row: 17 // 4 to 47 / 4
    assert image_cells(np.full((64, 64, 3), 114, np.uint8), 4) == (slice(0, 16), slice(0, 16))  # all grey: all cells
