"""Pictures, tensorboard and ONNX exports are optional outputs: whatever a model predicts, and whatever fails in
them, a training goes on and says so once (issue 23: a predicted box under 1 px high killed a training at 8 %)."""

from __future__ import annotations

import glob
import math
import os

import torch
from helpers import FAST, registry
from PIL import Image

from ymir_runner import pictures
from ymir_runner_detection import demo, training
from ymir_runner_detection.engine.model import CenterNetDetector

NAN, INF = math.nan, math.inf


# --- drawing any box (the core's pictures: tests/test_pictures.py; here the demo's) --------------------------------

#: (class id, x1, y1, x2, y2) in network-input pixels (img_size 64) of a model's predictions that early epochs make.
DEGENERATE = [
    (0, 10.0, 10.0, 10.0, 10.0),  # zero size
    (1, 40.0, 30.0, 20.0, 10.0),  # inverted
    (2, 5.0, 20.0, 30.0, 20.4),  # under a pixel high, of the class without instances
    (0, -50.0, -50.0, -10.0, -10.0),  # wholly outside
    (1, 50.0, 50.0, 200.0, 200.0),  # partly outside
    (2, -1e30, 3.0, 1e30, 3.0),  # huge and flat
    (0, NAN, 0.0, 10.0, 10.0),  # not a number
    (1, 0.0, 0.0, INF, 10.0),  # infinite
    (2, 30.0, 30.0, 30.5, 29.9),  # inverted and under a pixel
]


def test_the_demo_picture_draws_degenerate_boxes_safely():
    image = Image.new("RGB", (64, 48))
    for _, *box in DEGENERATE:
        demo._label(image, box, "unicorn 0.90", (220, 0, 0))
    assert image.getpixel((10, 10)) == (220, 0, 0)


# --- a training whose model predicts nothing but degenerate boxes -------------------------------------------------

#: Cells of the nano model's 8 x 8 output map (stride 8 at img_size 64) far enough apart to stay peaks.
CELLS = [(0, 0), (0, 3), (0, 6), (3, 0), (3, 3), (3, 6), (6, 0), (6, 3), (6, 6)]
FAST_TINY = dict(FAST, epochs=2, save_period=1, img_size=64, batch_size_per_gpu=2, num_workers_per_gpu=0,
                 conf_threshold=0.5, max_detections=100)


def task_with_an_empty_class(ymir_task, **config):
    """TaskTree's 4 images of 64 x 48 px (one box each, classes cat and dog), and a third class without any."""
    tree = ymir_task(class_names=("cat", "dog"), config=dict(FAST_TINY, **config))
    tree.config["class_names"] = ["cat", "dog", "unicorn"]
    tree.write_config()
    return tree


def summary_tags(out_dir, field):
    """The tags of every summary in the run's event file that holds ``field`` (``image``, ``simple_value``)."""
    from tensorboardX.event_file_writer import EventFileWriter  # noqa: F401  (imported for its side effects)
    from tensorboardX.proto import event_pb2

    (events_file,) = glob.glob(os.path.join(out_dir, "tensorboard", "events.out.tfevents.*"))
    with open(events_file, "rb") as stream:
        data = stream.read()
    offset, tags = 0, []
    while offset < len(data):  # TFRecord framing: length, crc, payload, crc
        length = int.from_bytes(data[offset:offset + 8], "little")
        event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
        offset += 16 + length
        tags += [value.tag for value in event.summary.value if value.HasField(field)]
    return tags


def summary_lines(stderr):
    """The final summary line of the training task (what was skipped, repaired, failed), if any."""
    return [line for line in stderr.splitlines() if " WARNING ymir_runner: training: " in line]


def test_a_training_whose_model_predicts_degenerate_boxes_succeeds(ymir_task, monkeypatch):
    predict_maps = CenterNetDetector.predict_maps

    def degenerate_maps(self, images):
        scores, boxes = predict_maps(self, images)
        scores, boxes = torch.zeros_like(scores), torch.zeros_like(boxes)
        for (class_id, *box), (row, col) in zip(DEGENERATE, CELLS):
            scores[:, class_id, row, col] = 0.95
            boxes[:, :, row, col] = torch.tensor(box)
        return scores, boxes

    drawn = []
    pixel_rectangle = pictures.pixel_rectangle
    monkeypatch.setattr(CenterNetDetector, "predict_maps", degenerate_maps)
    monkeypatch.setattr(pictures, "pixel_rectangle", lambda box, *size: drawn.append(tuple(box)) or
                        pixel_rectangle(box, *size))
    outcome = task_with_an_empty_class(ymir_task, export_onnx=False, conf_threshold=0.0).run(registry())
    assert outcome.exit_code == 0, outcome.stderr
    result = outcome.result_yaml()
    assert {name: stage["files"] for name, stage in result["model_stages"].items()} == {
        "epoch_1": ["model.pt"], "epoch_2": ["model.pt"]}
    assert outcome.verify().ok
    assert summary_lines(outcome.stderr) == []  # nothing spurious skipped, repaired or failed
    assert "optional outputs failed" not in outcome.stderr and " ymir_runner.outputs: " not in outcome.stderr
    # the degenerate boxes that keep an area in the image reached the pictures (the others match nothing and are
    # dropped before evaluation), and the pictures are in tensorboard: 2 validation images, 2 stages
    assert drawn
    assert sorted(tag for tag in summary_tags(outcome.out_dir, "image") if tag.startswith("val_")) == [
        "val_predictions/0", "val_predictions/0", "val_predictions/1", "val_predictions/1"]
    # no true positive: no F1-optimal threshold exists, and none is stored as if it did (inference says so)
    from ymir_runner_detection.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(os.path.join(outcome.out_dir, "models", "epoch_2", "model.pt"))
    assert checkpoint.score_threshold is None


def test_a_picture_and_an_onnx_export_that_raise_do_not_stop_the_training(ymir_task, monkeypatch):
    def broken_picture(*args, **kwargs):
        raise ValueError("y1 must be greater than or equal to y0")

    export_onnx, exports = training.export_onnx, []

    def first_export_fails(model, path, img_size):
        exports.append(path)
        if len(exports) == 1:
            with open(path, "wb") as stream:
                stream.write(b"half an ONNX file")
            raise RuntimeError("an operator ONNX cannot express")
        return export_onnx(model, path, img_size)

    monkeypatch.setattr(pictures, "stage_figures", broken_picture)
    monkeypatch.setattr(training, "export_onnx", first_export_fails)
    outcome = task_with_an_empty_class(ymir_task, export_onnx=True).run(registry())
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stderr.count("stage pictures failed, the task goes on without it: ValueError: y1 must be "
                                "greater than or equal to y0") == 1
    assert outcome.stderr.count("ONNX export failed, the task goes on without it: RuntimeError: an operator ONNX "
                                "cannot express") == 1
    assert "Traceback" not in outcome.stderr
    (summary,) = summary_lines(outcome.stderr)
    assert summary.endswith("training: optional outputs failed: 1 ONNX export, 2 stage pictures")
    # result.yaml lists only files that exist and are complete: no ONNX file for the stage whose export failed
    result = outcome.result_yaml()
    assert {name: stage["files"] for name, stage in result["model_stages"].items()} == {
        "epoch_1": ["model.pt"], "epoch_2": ["model.pt", "model.onnx"]}
    assert os.listdir(os.path.join(outcome.out_dir, "models", "epoch_1")) == ["model.pt"]
    assert outcome.verify().ok
    assert "epoch/loss" in summary_tags(outcome.out_dir, "simple_value")  # tensorboard itself stayed on
