"""The pieces of the ultralytics plugin that decide numbers: box conversion, the dataset layout (links, converted
copies), letterboxing, where a training starts from, ultralytics_args, devices."""

import io
import os
import subprocess
import sys

import pytest

pytest.importorskip("ultralytics", reason="the ultralytics plugin's tests run in .venv-ultralytics (see conftest.py)")
pytest.importorskip("ymir_runner_ultralytics", reason="ymir-runner-ultralytics is not installed")

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402
from ymir_runner_ultralytics import dataset, devices, environment, weights  # noqa: E402
from ymir_runner_ultralytics.predict import letterbox  # noqa: E402
from ymir_runner_ultralytics.training import extra_args  # noqa: E402

from ymir_runner import Box, ConfigError, GpuMismatchError, Item, ModelError, NoGpuError  # noqa: E402

# --- boxes ------------------------------------------------------------------------------------------------------

def test_a_pixel_edge_box_becomes_the_normalised_centre_and_size_exactly():
    # x1, y1 inclusive, x2, y2 exclusive: the 20 x 20 pixels 10..29 and 20..39 of a 100 x 50 image
    assert dataset.yolo_box(10, 20, 30, 40, 100, 50) == (0.2, 0.6, 0.2, 0.4)
    # a det-ark line "0, 10, 20, 29, 39" (inclusive xmax, ymax) is Box(0, 10, 20, 30, 40) after the core's reader
    assert dataset.label_text([Box(0, 10, 20, 30, 40)], 100, 50) == "0 0.2000000000 0.6000000000 0.2000000000 " \
                                                                    "0.4000000000\n"
    # the whole image, and one pixel in the corner
    assert dataset.yolo_box(0, 0, 640, 480, 640, 480) == (0.5, 0.5, 1.0, 1.0)
    assert dataset.yolo_box(639, 479, 640, 480, 640, 480) == (639.5 / 640, 479.5 / 480, 1 / 640, 1 / 480)


def test_letterboxed_boxes_map_back_to_the_image_pixels():
    image = np.zeros((50, 200, 3), np.uint8)  # wide: scaled by 64 / 200, padded top and bottom
    canvas, fit = letterbox(image, 64)
    assert canvas.shape == (64, 64, 3) and (fit.pad_x, fit.pad_y) == (0, 24)  # 16 px high
    box = np.array([[10.0, 5.0, 110.0, 45.0]])
    on_canvas = np.array([[box[0, 0] * fit.ratio_x + fit.pad_x, box[0, 1] * fit.ratio_y + fit.pad_y,
                           box[0, 2] * fit.ratio_x + fit.pad_x, box[0, 3] * fit.ratio_y + fit.pad_y]])
    np.testing.assert_allclose(fit.to_image(on_canvas), box, atol=1e-9)
    # ultralytics' grey around the image
    assert (canvas[:24] == 114).all() and (canvas[24:40] == 0).all() and (canvas[40:] == 114).all()


# --- the dataset layout -----------------------------------------------------------------------------------------

def _jpeg(path, size, *, orientation=None, truncate=False):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    exif = Image.Exif()
    if orientation is not None:
        exif[dataset.EXIF_ORIENTATION] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes(), quality=90)
    data = buffer.getvalue()
    with open(path, "wb") as stream:
        stream.write(data[: len(data) * 9 // 10] if truncate else data)
    return path


def test_images_opencv_would_read_differently_are_converted_copies_in_stored_pixels(tmp_path):
    assets = tmp_path / "assets"
    assets.mkdir()
    plain = _jpeg(str(assets / "plain.unknown"), (120, 80))  # a JPEG with YMIR's unreliable extension
    rotated = _jpeg(str(assets / "rotated.jpg"), (120, 80), orientation=6)  # shown 80 x 120, stored 120 x 80
    truncated = _jpeg(str(assets / "truncated.jpg"), (120, 80), truncate=True)
    deep = str(assets / "deep.png")
    Image.fromarray(np.full((80, 120), 40000, np.uint16)).save(deep)  # 16-bit grey
    png = str(assets / "plain.png")
    Image.new("RGB", (120, 80)).save(png)
    tiny = str(assets / "tiny.png")
    Image.new("RGB", (8, 80)).save(tiny)
    box = Box(1, 10, 20, 30, 40)
    items = [Item(path, boxes=(box,), width=Image.open(path).width, height=Image.open(path).height)
             for path in (plain, rotated, truncated, deep, png, tiny)]

    class Skips:
        counted = []

        def skip(self, reason, where, detail=""):
            self.counted.append((reason, where))

    skips = Skips()
    layout = dataset.write_layout(str(tmp_path / "data"), {"train": items, "val": items[:1]}, ["a", "b"], skips)
    images = tmp_path / "data" / "images" / "train"
    names = sorted(os.listdir(images))
    assert names == ["000000_plain.jpg", "000001_rotated.png", "000002_truncated.png", "000003_deep.png",
                     "000004_plain.png"]
    assert os.path.islink(images / names[0]) and os.readlink(images / names[0]) == plain
    assert os.path.islink(images / names[4])
    assert dict(layout.converted) == {"EXIF orientation": 1, "truncated image": 1, "I;16 pixels": 1}
    with Image.open(images / "000001_rotated.png") as copy:
        assert copy.size == (120, 80)  # the stored pixels, not the EXIF-rotated view
    assert skips.counted == [("image smaller than 10 pixels", tiny)]
    label = (tmp_path / "data" / "labels" / "train" / "000001_rotated.txt").read_text()
    assert label == dataset.label_text([box], 120, 80)
    data = yaml.safe_load((tmp_path / "data" / "data.yaml").read_text())
    assert data == {"path": str(tmp_path / "data"), "train": "images/train", "val": "images/val",
                    "names": {0: "a", 1: "b"}}
    assert [used[0] for used in layout.splits["train"]] == [plain, rotated, truncated, deep, png]
    again = dataset.write_layout(str(tmp_path / "data"), {"train": items[:2], "val": items[:1]}, ["a", "b"], skips)
    assert len(again.splits["train"]) == 2 and len(os.listdir(images)) == 2  # a second run starts afresh


# --- where a training starts from -------------------------------------------------------------------------------

def test_the_start_of_a_training_is_pretrained_then_the_user_file_then_the_image_weights_then_scratch(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "yolo26s.pt").write_bytes(b"x")
    own = tmp_path / "own.pt"
    own.write_bytes(b"x")
    pretrained = str(tmp_path / "models" / "epoch_3" / "last.pt")  # context.model_file(".pt") of the task

    def start(model, pretrained=None):
        return weights.resolve_start(model, str(folder), pretrained)

    assert start("yolo26s", pretrained) == weights.Start(weights.PRETRAINED, pretrained)
    assert start(str(own)) == weights.Start(weights.USER_FILE, str(own))
    assert start("yolo26s") == weights.Start(weights.IMAGE_WEIGHTS, str(folder / "yolo26s.pt"))
    assert start("yolo26m") == weights.Start(weights.SCRATCH, "yolo26m.yaml")
    assert start("yolov8n").source == start("yolo11x").source == weights.SCRATCH
    assert start("small") == weights.Start(weights.IMAGE_WEIGHTS, str(folder / "yolo26s.pt"))  # the built-in's word
    with pytest.raises(ConfigError, match="config key 'model'"):
        start("yolo27n")
    with pytest.raises(ConfigError, match="config key 'model': .*missing.pt is not a file"):
        start(str(tmp_path / "missing.pt"))


def test_a_file_that_is_not_an_ultralytics_checkpoint_names_the_key(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="config key 'model_params_path': .* is not an ultralytics checkpoint"):
        weights.load_checkpoint(str(path), "model_params_path")


# --- config and devices -------------------------------------------------------------------------------------

def test_ultralytics_args_are_checked_naming_the_key():
    assert extra_args("") == {}
    assert extra_args("{degrees: 5, mixup: 0.1}") == {"degrees": 5, "mixup": 0.1}
    for text, message in [("{epochs: 3}", "epochs cannot be set there"), ("{not_an_arg: 1}", "not_an_arg are not"),
                          ("[1, 2]", "is not a mapping"), ("{a: [", "not valid YAML")]:
        with pytest.raises(ConfigError, match=f"config key 'ultralytics_args': .*{message}"):
            extra_args(text)


def test_devices_one_gpu_or_the_cpu(monkeypatch):
    import torch

    assert devices.select_device(()) == "cpu"
    with pytest.raises(ConfigError, match="config key 'gpu_id': 0,1 names several GPUs"):
        devices.select_device((0, 1))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(NoGpuError, match="gpu_id"):
        devices.select_device((0,))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert devices.select_device((0,)) == "0"
    with pytest.raises(GpuMismatchError, match="names GPU 3 but the container sees 1"):
        devices.select_device((3,))


def test_the_entry_point_imports_neither_torch_nor_ultralytics_and_lists_the_executor():
    code = ("import sys, ymir_runner_ultralytics.plugin as p; specs = p.ymir_runner_register_executors(); "
            "print(specs[0].name, sorted(specs[0].mining_algorithms), 'torch' in sys.modules, "
            "'ultralytics' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["ultralytics", "['aldd',", "'cald',", "'entropy',", "'random']", "False", "False"]


def test_img_man_writes_the_templates_with_their_help(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ymir_runner", "img-man", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # three object types (detection, semantic and instance segmentation): one template folder each, as the platform
    # reads them (the semantic templates: test_ultralytics_semantic.py)
    assert yaml.safe_load((tmp_path / "manifest.yaml").read_text())["object_type"] == [2, 3, 4]
    training = (tmp_path / "det" / "training-template.yaml").read_text()
    assert "model: yolo26n\n" in training and "# the architecture: yolo26n/s/m/l/x" in training
    assert yaml.safe_load((tmp_path / "det" / "mining-template.yaml").read_text())["mining_algorithm"] == "aldd"
    assert yaml.safe_load((tmp_path / "det" / "infer-template.yaml").read_text())["iou_threshold"] == 0.7
    instance = yaml.safe_load((tmp_path / "instance-seg" / "training-template.yaml").read_text())
    assert instance["model"] == "yolo26n-seg" and instance["export_format"] == "seg-coco:raw"
    assert yaml.safe_load((tmp_path / "instance-seg" / "infer-template.yaml").read_text())["iou_threshold"] == 0.7


def test_aldd_maps_are_the_class_scores_of_the_finest_grid_in_row_major_order(tmp_path, monkeypatch):
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path))
    environment.prepare(str(tmp_path))
    from ultralytics.nn.tasks import DetectionModel
    from ymir_runner_ultralytics.predict import Predictor

    network = DetectionModel("yolo26n.yaml", nc=3, verbose=False).eval()
    images = [np.full((40, 64, 3), 200, np.uint8), np.zeros((64, 30, 3), np.uint8)]
    maps = Predictor(network, "cpu", 64).class_maps(images)
    assert len(maps) == 2 and all(len(views) == 2 for views in maps)  # K = 2: the image and its mirror
    for views in maps:
        for view in views:
            assert view.shape == (3, 8, 8) and 0.0 <= view.min() and view.max() <= 1.0
    # the head's first 8 x 8 anchors are the stride-8 grid, row by row: what the reshape assumes
    head = network.model[-1]
    assert int(head.stride[0]) == 8
    anchors = head.anchors[:, :64].T.numpy()  # (x, y) centres in grid cells
    np.testing.assert_array_equal(anchors[:, 0], np.tile(np.arange(8) + 0.5, 8))
    np.testing.assert_array_equal(anchors[:, 1], np.repeat(np.arange(8) + 0.5, 8))
