"""`ymir-runner sandbox`: the /in tree it builds from VOC, YOLO and COCO data is the platform's, and runs."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import xml.etree.ElementTree as ElementTree

import pytest
import toy_plugin
import yaml
from PIL import Image

import ymir_runner
from ymir_runner import ConfigError, DatasetError, ExecutorSpec, Param, sandbox
from ymir_runner.cli import main
from ymir_runner.dispatcher import run
from ymir_runner.protocol.config import parse_config
from ymir_runner.protocol.dataset import AnnotationReader, SkipLog
from ymir_runner.protocol.env import TaskKind
from ymir_runner.sandbox import build_sandbox
from ymir_runner.testing import write_png


@pytest.fixture
def registry(ymir_registry):
    ymir_registry.register(toy_plugin, "toy")
    return ymir_registry


def sha1_of(path) -> str:
    with open(path, "rb") as stream:
        return hashlib.sha1(stream.read()).hexdigest()


def read(path) -> str:
    with open(path, encoding="utf-8") as stream:
        return stream.read()


def read_yaml(path):
    return yaml.safe_load(read(path))


def image(path, width=100, height=80, shade=0) -> str:
    """A PNG whose content differs with ``shade`` (assets are named by content)."""
    return write_png(str(path), width, height, color=(shade % 256, 128, 128))


def index_lines(work, name):
    return [line.split("\t") for line in read(work / "in" / name).splitlines()]


def annotation_of(work, source_image, ext="txt") -> str:
    return read(work / "in" / "annotations" / f"{sha1_of(source_image)}.{ext}")


def coco_source(tmp_path, bbox=(10, 20, 30, 40)):
    folder = tmp_path / "coco"
    first = image(folder / "images" / "a.png", shade=1)
    image(folder / "images" / "b.png", shade=2)
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80},
                       {"id": 2, "file_name": "b.png", "width": 100, "height": 80}],
            "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": list(bbox)}]}
    (folder / "instances.json").write_text(json.dumps(coco))
    return folder, first


def voc_source(tmp_path, boxes):
    folder = tmp_path / "voc"
    first = image(folder / "a.png", shade=1)
    image(folder / "b.png", shade=2)
    objects = "".join(f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                      f"<ymax>{y2}</ymax></bndbox></object>" for name, x1, y1, x2, y2 in boxes)
    (folder / "a.xml").write_text(f"<annotation><filename>a.png</filename>{objects}</annotation>")
    return folder, first


def exif_photo(path, orientation, width=100, height=80) -> str:
    """A JPEG whose STORED pixels are ``width`` x ``height`` with a red top-left corner, carrying an EXIF
    orientation (6: shown turned a quarter clockwise, so the red corner is at the top right)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    picture = Image.new("RGB", (width, height), (40, 40, 200))
    picture.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = orientation
    picture.save(path, exif=exif)
    return str(path)


def voc_xml(boxes, size=None, declaration="") -> str:
    """A VOC annotation; ``size`` is the ``<size>`` the labelling tool recorded."""
    recorded = f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>" if size else ""
    objects = "".join(f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                      f"<ymax>{y2}</ymax></bndbox></object>" for name, x1, y1, x2, y2 in boxes)
    return f"{declaration}<annotation>{recorded}{objects}</annotation>"


@pytest.fixture
def sandbox_log(caplog, monkeypatch):
    """The sandbox's warnings, in ``caplog``; the stderr handler a CLI call adds leaves with the test."""
    monkeypatch.setattr(sandbox.log, "handlers", [caplog.handler])
    monkeypatch.setattr(sandbox.log, "propagate", False)
    return caplog


def stored_asset(work, source_image=None):
    """The asset of the only training image (or of ``source_image``) and its annotation lines."""
    lines = index_lines(work, "train-index.tsv") + index_lines(work, "val-index.tsv")
    pairs = dict(lines)
    if source_image is not None:
        digest = sha1_of(source_image)
        pairs = {path: note for path, note in pairs.items() if digest in path}
    (asset, annotation), = set(pairs.items())
    return asset, read(annotation)


def yolo_source(tmp_path, names=("cat", "dog"), lines=("1 0.25 0.5 0.2 0.5",)):
    folder = tmp_path / "yolo"
    first = image(folder / "images" / "train" / "a.png", shade=1)
    image(folder / "images" / "train" / "b.png", shade=2)
    (folder / "labels" / "train").mkdir(parents=True)
    (folder / "labels" / "train" / "a.txt").write_text("\n".join(lines) + "\n")
    (folder / "labels" / "train" / "b.txt").write_text("0 0.5 0.5 0.4 0.4\n")  # whichever part gets a, b has a box
    if names:
        (folder / "classes.txt").write_text("\n".join(names) + "\n")
    return folder, first


def many_images(tmp_path, count=10):
    """YOLO: ``count`` images, the first with a box (a training source without one is refused)."""
    folder = tmp_path / "many"
    for index in range(count):
        image(folder / f"{index}.png", width=20, height=16, shade=index)
    (folder / "data.yaml").write_text("names: [cat]\n")
    (folder / "0.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    return folder


def fake_models(tmp_path):
    """A previous training's /out/models: two stages, epoch_2 the best."""
    models = tmp_path / "models"
    for stage in ("epoch_1", "epoch_2"):
        (models / stage).mkdir(parents=True)
        (models / stage / "model.json").write_text(json.dumps({"stage": stage}))
    (models / "result.yaml").write_text(yaml.safe_dump({
        "best_stage_name": "epoch_2",
        "model_stages": {stage: {"stage_name": stage, "files": ["model.json"], "timestamp": 1700000000,
                                 "mAP": 0.5} for stage in ("epoch_1", "epoch_2")}}))
    return models


# --- assets and annotations --------------------------------------------------------------------------------

def test_coco_box_becomes_inclusive_ark_line_and_asset_is_named_by_content(tmp_path, registry):
    source, first = coco_source(tmp_path)
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=registry)
    digest = sha1_of(first)
    stored = tmp_path / "work" / "in" / "assets" / digest[-2:] / f"{digest}.png"
    assert stored.read_bytes() == open(first, "rb").read()
    # categories in id order: cat (id 3) is index 0; [x, y, w, h] = [10, 20, 30, 40] ends at 39, 59 inclusive
    assert summary.class_names == ("cat", "dog")
    assert annotation_of(tmp_path / "work", first) == "0, 10, 20, 39, 59, -1.0, 0\n"
    assert (summary.images, summary.boxes, summary.source_format) == (2, 1, "coco")


def test_coco_json_given_as_source_and_fractional_boxes_round_their_edges(tmp_path, registry):
    source, first = coco_source(tmp_path, bbox=(10.4, 19.6, 30.4, 40.2))
    build_sandbox(str(source / "instances.json"), str(tmp_path / "work"), registry=registry)
    assert annotation_of(tmp_path / "work", first) == "0, 10, 20, 40, 59, -1.0, 0\n"


def test_voc_keeps_inclusive_corners_clips_and_drops_degenerate_boxes(tmp_path, registry):
    source, first = voc_source(tmp_path, [("Dog", 10, 20, 39, 59), ("cat", 90, 70, 120, 100),
                                          ("cat", 50, 10, 40, 30), ("cat", 200, 200, 220, 220)])
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=registry)
    assert summary.class_names == ("cat", "dog")  # VOC: sorted names found, lower case
    assert annotation_of(tmp_path / "work", first) == "1, 10, 20, 39, 59, -1.0, 0\n0, 90, 70, 99, 79, -1.0, 0\n"
    # inverted (50 > 40) and nothing inside the 100x80 image (200, 200) are told apart; the clipped box is counted
    assert summary.skipped == {"degenerate box": 1, "box outside image": 1}
    assert summary.repaired == {"box clipped to image": 1}
    rendered = summary.render()
    assert "skipped: 2 (1 box outside image, 1 degenerate box)" in rendered
    assert "repaired: 1 (1 box clipped to image)" in rendered


def test_yolo_normalised_boxes_become_pixels(tmp_path, registry):
    source, first = yolo_source(tmp_path)
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=registry)
    # 100x80 image: centre (25, 40), size 20x40 → x 15..34, y 20..59 inclusive
    assert summary.source_format == "yolo"
    assert annotation_of(tmp_path / "work", first) == "1, 15, 20, 34, 59, -1.0, 0\n"


def test_yolo_boxes_of_a_182_megapixel_photo_use_its_size_as_run_reads_it(tmp_path, registry):
    """PIL's own limit refuses this aerial JPEG (> 179 Mpx); the sandbox reads it by ``ymir-runner run``'s rules."""
    source, _ = yolo_source(tmp_path)
    big = source / "images" / "train" / "aerial.jpg"
    Image.new("L", (14000, 13000), 90).save(big)
    (source / "labels" / "train" / "aerial.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=registry)
    assert summary.unreadable_images == 0
    assert annotation_of(tmp_path / "work", big) == "0, 3500, 3250, 10499, 9749, -1.0, 0\n"


def test_yolo_without_names_needs_classes_which_name_the_indexes(tmp_path, registry):
    source, first = yolo_source(tmp_path, names=())
    with pytest.raises(ConfigError, match="pass --classes"):
        build_sandbox(str(source), str(tmp_path / "work"), registry=registry)
    with pytest.raises(ConfigError, match="class index 1, but --classes names only 1"):
        build_sandbox(str(source), str(tmp_path / "work"), registry=registry, classes=["cat"])
    build_sandbox(str(source), str(tmp_path / "work"), registry=registry, classes=["cat", "dog"])
    assert annotation_of(tmp_path / "work", first) == "1, 15, 20, 34, 59, -1.0, 0\n"


def test_voc_in_gbk_is_read_and_undecodable_annotations_are_skipped_with_their_path(
        tmp_path, registry, monkeypatch, capsys, sandbox_log):
    monkeypatch.setattr("ymir_runner.plugins.build_plugin_manager", lambda **_: registry)
    folder = tmp_path / "voc"
    first = image(folder / "a.png", shade=1)
    image(folder / "b.png", shade=2)
    image(folder / "c.png", shade=3)
    gbk = '<?xml version="1.0" encoding="gbk"?>\n'
    (folder / "a.xml").write_bytes(voc_xml([("猫", 10, 20, 39, 59)], declaration=gbk).encode("gbk"))
    (folder / "b.xml").write_bytes(gbk.encode() + b"<annotation><object><name>\xff\xff</name></object></annotation>")
    (folder / "c.xml").write_bytes(b'<?xml version="1.0" encoding="no-such-encoding"?><annotation/>')
    work = tmp_path / "work"
    assert main(["sandbox", str(folder), "--out", str(work)]) == 0
    output = capsys.readouterr().out
    assert "classes: 猫" in output and "skipped: 2 (2 unreadable annotation)" in output
    assert read_yaml(work / "in" / "config.yaml")["class_names"] == ["猫"]
    assert annotation_of(work, first) == "0, 10, 20, 39, 59, -1.0, 0\n"
    for broken in ("b.xml", "c.xml"):
        assert any("unreadable annotation" in line and str(folder / broken) in line for line in sandbox_log.messages)


def test_yolo_and_coco_files_with_a_byte_order_mark_are_read(tmp_path, registry):
    source, first = yolo_source(tmp_path)
    for path in (source / "labels" / "train" / "a.txt", source / "classes.txt"):
        path.write_text(path.read_text(), encoding="utf-8-sig")
    summary = build_sandbox(str(source), str(tmp_path / "yolo-work"), registry=registry)
    assert summary.class_names == ("cat", "dog") and summary.skipped == {}
    assert annotation_of(tmp_path / "yolo-work", first) == "1, 15, 20, 34, 59, -1.0, 0\n"
    source, first = coco_source(tmp_path)
    (source / "instances.json").write_text((source / "instances.json").read_text(), encoding="utf-8-sig")
    build_sandbox(str(source / "instances.json"), str(tmp_path / "coco-work"), registry=registry)
    assert annotation_of(tmp_path / "coco-work", first) == "0, 10, 20, 39, 59, -1.0, 0\n"


# --- EXIF orientation ------------------------------------------------------------------------------------------

def rotated_voc(tmp_path):
    """A photo stored 100x80 with EXIF orientation 6, labelled on its rotated 80x100 pixels."""
    folder = tmp_path / "voc"
    photo = exif_photo(folder / "a.jpg", 6)
    (folder / "a.xml").write_text(voc_xml([("cat", 5, 60, 30, 95)], size=(80, 100)))
    return folder, photo


def rotated_coco(tmp_path):
    folder = tmp_path / "coco"
    photo = exif_photo(folder / "a.jpg", 6)
    coco = {"images": [{"id": 1, "file_name": "a.jpg", "width": 80, "height": 100}],
            "categories": [{"id": 1, "name": "cat"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 60, 26, 36]}]}
    (folder / "instances.json").write_text(json.dumps(coco))
    return folder, photo


def exif_warned(summary) -> dict[str, int]:
    """The summary's warnings but the split's (a one-image source is in both train and val, warned)."""
    return {reason: count for reason, count in summary.warned.items() if reason != "image in both train and val"}


@pytest.mark.parametrize("make_source", [rotated_voc, rotated_coco])
def test_boxes_labelled_on_exif_rotated_pixels_are_warned_about_and_counted(tmp_path, registry, sandbox_log,
                                                                           make_source):
    source, photo = make_source(tmp_path)
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=registry)
    assert exif_warned(summary) == {"labelled on EXIF-rotated pixels": 1}
    warning, = [line for line in sandbox_log.messages if "labelled on EXIF-rotated pixels" in line]
    assert all(part in warning for part in (photo, "orientation 6", "100x80", "80x100", "--exif-transpose"))
    assert "1 labelled on EXIF-rotated pixels" in summary.render()
    assert "--exif-transpose" in summary.render()
    asset, annotation = stored_asset(tmp_path / "work")
    assert open(asset, "rb").read() == open(photo, "rb").read()  # the platform's stored pixels, unchanged


def test_exif_transpose_stores_the_rotated_pixels_unless_the_size_says_the_boxes_are_on_the_stored_ones(
        tmp_path, registry, sandbox_log):
    source, photo = rotated_voc(tmp_path)
    kept = exif_photo(source / "b.jpg", 8, width=60, height=40)
    (source / "b.xml").write_text(voc_xml([("cat", 1, 2, 30, 39)], size=(60, 40)))  # labelled on stored pixels
    work = tmp_path / "work"
    summary = build_sandbox(str(source), str(work), registry=registry, exif_transpose=True)
    assert summary.repaired == {"EXIF orientation applied to pixels": 1}
    assert summary.warned == {"labelled on stored pixels (not transposed)": 1}
    asset, annotation = stored_asset(work, kept)
    assert open(asset, "rb").read() == open(kept, "rb").read() and annotation == "0, 1, 2, 30, 39, -1.0, 0\n"
    turned = [path for path, _ in index_lines(work, "train-index.tsv") + index_lines(work, "val-index.tsv")
              if path != asset]
    asset, = turned
    assert os.path.basename(asset) == f"{sha1_of(asset)}.jpg"
    with Image.open(asset) as stored:
        assert stored.size == (80, 100) and stored.getexif().get(0x0112) is None
        red, green, _ = stored.convert("RGB").getpixel((75, 4))  # the red corner, turned to the top right
        assert red > 200 and green < 60
    assert read(work / "in" / "annotations" / f"{sha1_of(asset)}.txt") == "0, 5, 60, 30, 95, -1.0, 0\n"
    assert not any("labelled on EXIF-rotated pixels" in line for line in sandbox_log.messages)


def test_yolo_boxes_are_scaled_by_the_rotated_size_only_with_exif_transpose(tmp_path, registry):
    folder = tmp_path / "yolo"
    photo = exif_photo(folder / "a.jpg", 6)
    (folder / "a.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (folder / "classes.txt").write_text("cat\n")
    summary = build_sandbox(str(folder), str(tmp_path / "stored"), registry=registry)
    assert annotation_of(tmp_path / "stored", photo) == "0, 25, 20, 74, 59, -1.0, 0\n"  # 100x80
    assert exif_warned(summary) == {"boxes may be on EXIF-rotated pixels": 1}  # YOLO records no size
    summary = build_sandbox(str(folder), str(tmp_path / "turned"), registry=registry, exif_transpose=True)
    asset, annotation = stored_asset(tmp_path / "turned")
    assert annotation == "0, 20, 25, 59, 74, -1.0, 0\n"  # 80x100
    assert exif_warned(summary) == {} and summary.repaired == {"EXIF orientation applied to pixels": 1}


def test_orientation_that_keeps_the_size_is_warned_about_once_per_image(tmp_path, registry, sandbox_log):
    folder = tmp_path / "voc"
    photo = exif_photo(folder / "a.jpg", 3)
    (folder / "a.xml").write_text(voc_xml([("cat", 1, 1, 9, 9), ("cat", 20, 20, 29, 29)], size=(100, 80)))
    exif_photo(folder / "b.jpg", 3, width=50)  # no boxes: nothing to warn about
    summary = build_sandbox(str(folder), str(tmp_path / "work"), registry=registry)
    assert summary.warned == {"boxes may be on EXIF-rotated pixels": 1}
    warning, = [line for line in sandbox_log.messages if "EXIF orientation" in line]
    assert photo in warning and "orientation 3" in warning and "--exif-transpose" in warning


def test_cli_exif_transpose_flag(tmp_path, registry, monkeypatch, capsys, sandbox_log):
    monkeypatch.setattr("ymir_runner.plugins.build_plugin_manager", lambda **_: registry)
    source, _ = rotated_voc(tmp_path)
    assert main(["sandbox", str(source), "--out", str(tmp_path / "work"), "--exif-transpose"]) == 0
    assert "repaired: 1 (1 EXIF orientation applied to pixels)" in capsys.readouterr().out


def test_det_voc_output_is_what_the_protocol_reader_reads(tmp_path, registry):
    source, first = coco_source(tmp_path)
    work = tmp_path / "work"
    build_sandbox(str(source), str(work), registry=registry, annotation_format="det-voc", classes=["Cat", "dog"])
    digest = sha1_of(first)
    root = ElementTree.fromstring(annotation_of(work, first, "xml"))
    assert root.findtext("filename") == f"/in/assets/{digest[-2:]}/{digest}.png"
    assert root.findtext("object/name") == "cat"
    corners = [root.findtext(f"object/bndbox/{tag}") for tag in ("xmin", "ymin", "xmax", "ymax")]
    assert corners == ["10", "20", "39", "59"]
    assert read_yaml(work / "in" / "config.yaml")["export_format"] == "voc:raw"
    lines = dict(index_lines(work, "train-index.tsv") + index_lines(work, "val-index.tsv"))
    assert all(path.endswith(".xml") and os.path.isfile(path) for path in lines.values())
    empty = [path for path in lines.values() if not read(path)]
    assert len(empty) == 1  # the image without boxes still has its (empty) annotation file
    boxes = AnnotationReader(["Cat", "dog"], "det-voc", SkipLog()).read(
        str(work / "in" / "annotations" / f"{digest}.xml"), "")
    assert [(box.class_id, box.x1, box.y1, box.x2, box.y2) for box in boxes] == [(0, 10, 20, 40, 60)]


def test_duplicates_are_stored_once_and_unreadable_images_are_copied_and_counted(tmp_path, registry):
    source = many_images(tmp_path, 3)
    (source / "copy.png").write_bytes((source / "0.png").read_bytes())
    (source / "broken.jpg").write_bytes(b"not an image")
    work = tmp_path / "work"
    summary = build_sandbox(str(source), str(work), registry=registry)
    assert (summary.images, summary.duplicates, summary.unreadable_images) == (4, 1, 1)
    digest = hashlib.sha1(b"not an image").hexdigest()
    assert (work / "in" / "assets" / digest[-2:] / f"{digest}.jpg").is_file()
    assert "1 PIL cannot open (copied anyway)" in summary.render()


# --- index files, env.yaml and config.yaml -----------------------------------------------------------------------

def test_split_sizes_follow_the_ratio_and_the_seed(tmp_path, registry):
    source = many_images(tmp_path)

    def val_set(work, **options):
        summary = build_sandbox(str(source), str(tmp_path / work), registry=registry, val_ratio=0.3, **options)
        assert (summary.train, summary.val) == (7, 3)
        return {line[0].rsplit("/", 1)[1] for line in index_lines(tmp_path / work, "val-index.tsv")}

    assert val_set("a", seed=1) == val_set("b", seed=1)
    assert val_set("c", seed=1) != val_set("d", seed=2)
    train = index_lines(tmp_path / "a", "train-index.tsv")
    assert len(train) == 7 and all(os.path.isabs(path) and os.path.isfile(path) for line in train for path in line)


def test_env_yaml_has_the_protocol_shape_with_absolute_existing_paths(tmp_path, registry):
    source, _ = coco_source(tmp_path)
    work = tmp_path / "work"
    summary = build_sandbox(str(source), str(work), registry=registry)
    env = read_yaml(summary.env_file)
    assert env["protocol_version"] == "1.1.0" and env["manifest_file"] == "/img-man/manifest.yaml"
    assert (env["run_training"], env["run_mining"], env["run_infer"]) == (True, False, False)
    assert env["task_id"] == read_yaml(work / "in" / "config.yaml")["task_id"]
    assert env["input"]["candidate_index_file"] == ""
    used = {key: path for key, path in env["input"].items() if path}
    assert set(used) == {"root_dir", "assets_dir", "annotations_dir", "models_dir", "training_index_file",
                         "val_index_file", "config_file"}
    assert all(os.path.isabs(path) and os.path.exists(path) for path in used.values())
    assert env["output"]["monitor_file"] == str(work / "out" / "monitor.txt")
    assert os.path.isdir(env["output"]["root_dir"])


def test_config_has_template_and_platform_keys_and_no_pretrained_key(tmp_path, registry):
    source, _ = coco_source(tmp_path)
    work = tmp_path / "work"
    build_sandbox(str(source), str(work), registry=registry, overrides={"epochs": 5}, plugin="toy")
    config = read_yaml(work / "in" / "config.yaml")
    template = {"epochs": 5, "learning_rate": 0.01, "use_flip": False, "optimizer": "sgd", "fail_with": ""}
    assert template.items() <= config.items()
    assert {"class_names": ["cat", "dog"], "gpu_id": "", "gpu_count": 0, "object_type": 2, "shm_size": "16G",
            "export_format": "ark:raw", "plugin": "toy"}.items() <= config.items()
    assert "pretrained_model_params" not in config and "model_params_path" not in config
    assert not {"run_mining", "run_infer"} & set(config)


def test_pretrained_copies_the_best_stage_and_names_it(tmp_path, registry):
    source, _ = coco_source(tmp_path)
    work = tmp_path / "work"
    build_sandbox(str(source), str(work), registry=registry, pretrained=str(fake_models(tmp_path)))
    config = read_yaml(work / "in" / "config.yaml")
    assert config["pretrained_model_params"] == [str(work / "in" / "models" / "epoch_2" / "model.json")]
    assert read_yaml(work / "in" / "models" / "ymir-info.yaml")["best_stage_name"] == "epoch_2"
    assert not (work / "in" / "models" / "epoch_1").exists()


def test_web_ui_strings_round_trip_through_the_config_reader(tmp_path, registry):
    source, _ = coco_source(tmp_path)
    work = tmp_path / "work"
    build_sandbox(str(source), str(work), registry=registry, web_ui_strings=True,
                  overrides={"use_flip": True, "learning_rate": 0.5})
    raw = read_yaml(work / "in" / "config.yaml")
    assert (raw["use_flip"], raw["optimizer"], raw["epochs"], raw["learning_rate"]) == ("true", "sgd", 2, 0.5)
    assert "fail_with" not in raw  # '' values are dropped
    assert raw["class_names"] == ["cat", "dog"] and raw["gpu_id"] == ""  # the platform's own keys keep their types
    defaults = {param.name: param.default for param in toy_plugin.TEMPLATES[TaskKind.TRAINING]}
    parsed = parse_config(raw, defaults)
    assert (parsed.hyper.use_flip, parsed.hyper.epochs, parsed.hyper.fail_with) == (True, 2, "")
    assert parsed.class_names == ("cat", "dog")


def test_container_paths_write_in_paths_and_run_with_root(tmp_path, registry):
    source, _ = yolo_source(tmp_path)
    work = tmp_path / "work"
    summary = build_sandbox(str(source), str(work), registry=registry, container_paths=True)
    env = read_yaml(summary.env_file)
    assert env["input"]["training_index_file"] == "/in/train-index.tsv"
    assert env["output"]["root_dir"] == "/out"
    assert all(line[0].startswith("/in/assets/") and line[1].startswith("/in/annotations/")
               for line in index_lines(work, "train-index.tsv"))
    assert summary.next_command == f"ymir-runner run --env {work}/in/env.yaml --root {work}"
    assert quiet_run(summary.env_file, registry, root=str(work)) == 0


# --- the source's own train/val split ---------------------------------------------------------------------------

def split_of(work) -> dict[str, set[str]]:
    """The sha1s of the assets in train-index.tsv and val-index.tsv."""
    return {part: {os.path.basename(line[0]).split(".")[0] for line in index_lines(work, f"{part}-index.tsv")}
            for part in ("train", "val")}


def sha1s(*paths) -> set[str]:
    return {sha1_of(path) for path in paths}


def yolo_split_source(tmp_path):
    """Ultralytics' layout: images/train (3 images), images/val (2), labels/ beside them."""
    folder = tmp_path / "yolo"
    parts = {"train": [], "val": []}
    for number, part in enumerate(["train", "train", "train", "val", "val"]):
        parts[part].append(image(folder / "images" / part / f"{number}.png", shade=number))
        (folder / "labels" / part).mkdir(parents=True, exist_ok=True)
        (folder / "labels" / part / f"{number}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (folder / "data.yaml").write_text("names: [cat]\n")
    return folder, parts


def test_a_yolo_dataset_keeps_its_images_train_and_images_val_split(tmp_path, registry):
    source, parts = yolo_split_source(tmp_path)
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=registry)
    assert split_of(tmp_path / "work") == {"train": sha1s(*parts["train"]), "val": sha1s(*parts["val"])}
    assert "images: 5 (train 3, val 2)" in summary.render()
    assert "split: kept from SOURCE (folders images/train + images/val): train 3, val 2" in summary.render()


def test_a_yolo_data_yaml_names_the_split_with_list_files(tmp_path, registry):
    source, parts = yolo_split_source(tmp_path)
    chosen = parts["train"][:2] + parts["val"][:1]  # the lists, not the folders, decide
    (source / "train.txt").write_text("".join(f"./images/train/{os.path.basename(path)}\n" for path in chosen[:2]))
    (source / "val.txt").write_text(f"images/val/{os.path.basename(chosen[2])}\n")
    (source / "data.yaml").write_text("path: .\ntrain: train.txt\nval: val.txt\nnames: [cat]\n")
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=registry, seed=3)
    kept = split_of(tmp_path / "work")
    assert sha1s(*chosen[:2]) <= kept["train"] and sha1s(chosen[2]) <= kept["val"]
    assert ("split: kept from SOURCE (data.yaml train: train.txt, val: val.txt): train 2, val 1; 2 in neither part "
            "shared at random (--val-ratio 0.2, --seed 3): train 2, val 0") in summary.render()


def voc_split_source(tmp_path):
    """The Pascal VOC layout: JPEGImages, Annotations, ImageSets/Main/train.txt + val.txt; 'e' is in neither."""
    folder = tmp_path / "VOC2012"
    paths = {}
    for number, stem in enumerate("abcde"):
        paths[stem] = image(folder / "JPEGImages" / f"{stem}.png", shade=number)
        (folder / "Annotations").mkdir(exist_ok=True)
        (folder / "Annotations" / f"{stem}.xml").write_text(voc_xml([("cat", 10, 10, 30, 30)]))
    (folder / "ImageSets" / "Main").mkdir(parents=True)
    (folder / "ImageSets" / "Main" / "train.txt").write_text("a\nb\nc\n")
    (folder / "ImageSets" / "Main" / "val.txt").write_text("d\n")
    return folder, paths


def test_a_voc_dataset_keeps_its_image_sets_and_shares_out_the_others(tmp_path, registry):
    source, paths = voc_split_source(tmp_path)
    work = tmp_path / "work"
    summary = build_sandbox(str(source), str(work), registry=registry, split="keep", val_ratio=0.9)
    assert split_of(work) == {"train": sha1s(paths["a"], paths["b"], paths["c"]), "val": sha1s(paths["d"], paths["e"])}
    assert (summary.train, summary.val) == (3, 2)
    assert ("split: kept from SOURCE (ImageSets/Main/train.txt + val.txt): train 3, val 1; 1 in neither part "
            "shared at random (--val-ratio 0.9, --seed 0): train 0, val 1") in summary.render()


def test_val_ratio_alone_is_refused_when_the_source_has_a_split(tmp_path, registry, monkeypatch, capsys):
    monkeypatch.setattr("ymir_runner.plugins.build_plugin_manager", lambda **_: registry)
    source, _ = voc_split_source(tmp_path)
    work = tmp_path / "work"
    assert main(["sandbox", str(source), "--out", str(work), "--val-ratio", "0.5"]) == 2
    error = capsys.readouterr().err
    assert ("--val-ratio 0.5: SOURCE comes with its own train/val split (ImageSets/Main/train.txt + val.txt), "
            "kept by default; pass --split random") in error
    assert not work.exists()


def test_coco_files_per_split_keep_their_split(tmp_path, registry):
    folder = tmp_path / "coco"
    files = {}
    for part, names in (("train", ["a.png", "b.png"]), ("val", ["c.png"])):
        entries = []
        for number, name in enumerate(names, 1):
            files[name] = image(folder / f"{part}2017" / name, shade=len(files))
            entries.append({"id": number, "file_name": name, "width": 100, "height": 80})
        coco = {"images": entries, "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": f"{part} dog"}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [10, 20, 30, 40]}]}
        (folder / "annotations").mkdir(exist_ok=True)
        (folder / "annotations" / f"instances_{part}2017.json").write_text(json.dumps(coco))
    work = tmp_path / "work"
    summary = build_sandbox(str(folder), str(work), registry=registry)
    assert split_of(work) == {"train": sha1s(files["a.png"], files["b.png"]), "val": sha1s(files["c.png"])}
    assert summary.class_names == ("cat", "train dog", "val dog")
    assert annotation_of(work, files["a.png"]) == "1, 10, 20, 39, 59, -1.0, 0\n"
    assert annotation_of(work, files["c.png"]) == "2, 10, 20, 39, 59, -1.0, 0\n"  # ids are per file
    assert ("split: kept from SOURCE (annotations/instances_train2017.json + annotations/instances_val2017.json): "
            "train 2, val 1") in summary.render()
    (folder / "annotations" / "instances_test2017.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ConfigError, match="several COCO files"):
        build_sandbox(str(folder), str(tmp_path / "other"), registry=registry)


def test_a_coco_category_without_a_name_fails_the_read_naming_the_file(tmp_path, registry):
    source, _ = coco_source(tmp_path)
    coco = json.loads((source / "instances.json").read_text())
    del coco["categories"][0]["name"]
    (source / "instances.json").write_text(json.dumps(coco))
    with pytest.raises(DatasetError, match=f"cannot read COCO file {source / 'instances.json'}: category 7"):
        build_sandbox(str(source), str(tmp_path / "work"), registry=registry)


def test_split_random_re_splits_a_source_with_its_own_split(tmp_path, registry, monkeypatch, capsys):
    monkeypatch.setattr("ymir_runner.plugins.build_plugin_manager", lambda **_: registry)
    source, parts = yolo_split_source(tmp_path)
    work = tmp_path / "work"
    assert main(["sandbox", str(source), "--out", str(work), "--split", "random", "--val-ratio", "0.6",
                 "--seed", "1"]) == 0
    output = capsys.readouterr().out
    assert "images: 5 (train 2, val 3)" in output
    assert ("split: at random (--split random, --val-ratio 0.6, --seed 1); SOURCE's own split "
            "(folders images/train + images/val) not used") in output
    assert split_of(work)["val"] != sha1s(*parts["val"])


def test_a_source_without_a_split_is_split_at_random_as_before(tmp_path, registry):
    source, _ = yolo_source(tmp_path)  # images/train only: no val part, so no split
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=registry, val_ratio=0.5)
    assert (summary.train, summary.val) == (1, 1)
    assert "split: at random (--val-ratio 0.5, --seed 0)" in summary.render()


# --- --plugin ---------------------------------------------------------------------------------------------------

class Other:
    """A second executor declaring the toy executor's keys with other defaults (an optimizer toy refuses)."""

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ExecutorSpec(name="other", tasks={TaskKind.TRAINING}, annotation_formats=("det-voc",),
                             templates={TaskKind.TRAINING: (Param("epochs", 50, "epochs of other"),
                                                            Param("optimizer", "lion", "other's optimizer"),
                                                            Param("depth", 3, "layers"))})]

    @ymir_runner.hookimpl
    def ymir_runner_train(self, context):
        raise NotImplementedError


def test_several_executors_are_refused_and_listed_and_plugin_takes_only_its_own_template(tmp_path, registry):
    """As `run` does: with two executors for the task, the sandbox never picks one itself (a freshly installed
    plugin must not silently replace the one the user meant); --plugin NAME writes that executor's keys only."""
    registry.register(Other(), "other")
    source, _ = yolo_source(tmp_path)
    with pytest.raises(ConfigError, match=r"several installed executors can run training for object_type 2: "
                                          r"other, toy; choose one with --plugin NAME"):
        build_sandbox(str(source), str(tmp_path / "refused"), registry=registry)
    assert not (tmp_path / "refused").exists()
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=registry, plugin="toy")
    config = read_yaml(tmp_path / "work" / "in" / "config.yaml")
    assert (config["plugin"], config["epochs"], config["optimizer"], config["export_format"]) == (
        "toy", 2, "sgd", "ark:raw")
    assert "depth" not in config
    other = build_sandbox(str(source), str(tmp_path / "other"), registry=registry, plugin="other")
    assert read_yaml(tmp_path / "other" / "in" / "config.yaml")["depth"] == 3
    assert other.annotation_format == "det-voc" and summary.annotation_format == "det-ark"
    assert quiet_run(summary.env_file, registry) == 0


def test_set_refuses_an_unknown_key_naming_the_closest_unless_force(tmp_path, registry, caplog):
    source, _ = yolo_source(tmp_path)
    with pytest.raises(ConfigError) as excinfo:
        build_sandbox(str(source), str(tmp_path / "work"), registry=registry, overrides={"epoch": 5})
    assert str(excinfo.value) == ("--set: config key 'epoch' is not a template key of executor 'toy' nor one the "
                                  "platform writes: the executor does not read it (did you mean 'epochs'?); pass "
                                  "--force to write it anyway")
    assert not (tmp_path / "work").exists()
    build_sandbox(str(source), str(tmp_path / "work"), registry=registry, overrides={"epoch": 5, "gpu_count": 1},
                  force=True)
    config = read_yaml(tmp_path / "work" / "in" / "config.yaml")
    assert (config["epoch"], config["epochs"], config["gpu_count"]) == (5, 2, 1)
    assert "did you mean 'epochs'?" in caplog.text


# --- end to end ---------------------------------------------------------------------------------------------

def quiet_run(env_file, registry, root=None) -> int:
    with contextlib.redirect_stderr(io.StringIO()):
        return run(env_file, root=root, registry=registry)


def test_training_runs_end_to_end_on_the_sandbox(tmp_path, registry):
    source, _ = yolo_source(tmp_path)
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=registry)
    assert summary.next_command == f"ymir-runner run --env {summary.env_file}"
    assert quiet_run(summary.env_file, registry) == 0
    result = read_yaml(tmp_path / "work" / "out" / "models" / "result.yaml")
    assert result["best_stage_name"] in result["model_stages"]


def test_mining_and_infer_run_end_to_end_with_a_model(tmp_path, registry):
    source, _ = voc_source(tmp_path, [("cat", 1, 1, 5, 5)])
    (source / "c.png").write_bytes(open(image(tmp_path / "tmp.png", shade=3), "rb").read())
    work = tmp_path / "work"
    summary = build_sandbox(str(source), str(work), registry=registry, tasks=["mining", "infer"],
                            model=str(fake_models(tmp_path)), classes=["cat"])
    env = read_yaml(summary.env_file)
    assert (env["run_training"], env["run_mining"], env["run_infer"]) == (False, True, True)
    assert env["input"]["training_index_file"] == env["input"]["val_index_file"] == ""
    candidates = read(work / "in" / "candidate-index.tsv").splitlines()
    assert len(candidates) == 3 and all(os.path.isabs(path) and os.path.isfile(path) for path in candidates)
    config = read_yaml(work / "in" / "config.yaml")
    assert config["model_params_path"] == [str(work / "in" / "models" / "epoch_2" / "model.json")]
    assert (config["run_mining"], config["run_infer"]) == (True, True)
    assert "export_format" not in config and "batch_size_per_gpu" in config and "conf_threshold" in config
    assert quiet_run(summary.env_file, registry) == 0
    assert len(read(work / "out" / "result.tsv").splitlines()) == 3
    assert len(json.loads(read(work / "out" / "infer-result.json"))["detection"]) == 3


# --- errors ---------------------------------------------------------------------------------------------------

def test_bad_requests_fail_with_a_clear_message(tmp_path, registry):
    source, _ = coco_source(tmp_path)
    work = str(tmp_path / "work")
    with pytest.raises(ConfigError, match="unknown --format 'kitti'"):
        build_sandbox(str(source), work, registry=registry, format="kitti")
    with pytest.raises(ConfigError, match=r"classes \['dog'\] of SOURCE are not in --classes \['cat'\]"):
        build_sandbox(str(source), work, registry=registry, classes=["cat"])
    with pytest.raises(ConfigError, match="need --model DIR"):
        build_sandbox(str(source), work, registry=registry, tasks=["mining"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        build_sandbox(str(tmp_path / "empty"), work, registry=registry, tasks=["infer"],
                      model=str(fake_models(tmp_path)), classes=["cat"])
    assert not os.path.exists(work)  # nothing written before the checks pass


def test_ignore_other_classes_drops_their_boxes(tmp_path, registry):
    source, first = coco_source(tmp_path)
    coco = json.loads((source / "instances.json").read_text())
    coco["annotations"].append({"id": 2, "image_id": 2, "category_id": 7, "bbox": [1, 2, 3, 4]})
    (source / "instances.json").write_text(json.dumps(coco))
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=registry, classes=["dog"],
                            ignore_other_classes=True)
    assert annotation_of(tmp_path / "work", first) == ""
    assert summary.skipped == {"class not in --classes": 1} and summary.boxes_per_class == {"dog": 1}


def test_cli_refuses_a_non_empty_work_dir_unless_forced(tmp_path, registry, monkeypatch, capsys):
    monkeypatch.setattr("ymir_runner.plugins.build_plugin_manager", lambda **_: registry)
    source, _ = coco_source(tmp_path)
    work = tmp_path / "work"
    assert main(["sandbox", str(source), "--out", str(work), "--set", "epochs=3"]) == 0
    output = capsys.readouterr().out
    assert "images: 2 (train 1, val 1)" in output and f"next: ymir-runner run --env {work}/in/env.yaml" in output
    assert read_yaml(work / "in" / "config.yaml")["epochs"] == 3
    assert main(["sandbox", str(source), "--out", str(work)]) == 2
    error = capsys.readouterr().err
    assert error.strip() == f"ymir-runner sandbox: error: {work}/in is not empty: pass --force to replace it"
    assert main(["sandbox", str(source), "--out", str(work), "--force"]) == 0
    assert read_yaml(work / "in" / "config.yaml")["epochs"] == 2


def test_a_work_dir_inside_source_is_not_read_back_and_source_inside_in_is_protected(tmp_path, registry):
    source = many_images(tmp_path, 4)
    work = source / "sandbox"
    build_sandbox(str(source), str(work), registry=registry)
    summary = build_sandbox(str(source), str(work), registry=registry, force=True)
    assert summary.images == 4
    with pytest.raises(ConfigError, match="inside .* which --force would delete"):
        build_sandbox(str(work / "in" / "assets"), str(work), registry=registry, force=True)


def test_plain_images_serve_inference_but_not_training(tmp_path, registry):
    folder = tmp_path / "plain"
    for index in range(3):
        image(folder / "sub" / f"{index}.PNG", shade=index)
    with pytest.raises(ConfigError, match="found no annotations .* a training task needs them"):
        build_sandbox(str(folder), str(tmp_path / "work"), registry=registry)
    summary = build_sandbox(str(folder), str(tmp_path / "work"), registry=registry, tasks=["infer"],
                            model=str(fake_models(tmp_path)), classes=["cat"])
    assert (summary.source_format, summary.candidates) == ("images", 3)
    assert all(path.endswith(".png") for path in read(tmp_path / "work" / "in" / "candidate-index.tsv").split())


def test_cli_task_list_and_model_for_mining_with_inference(tmp_path, registry, monkeypatch, capsys):
    monkeypatch.setattr("ymir_runner.plugins.build_plugin_manager", lambda **_: registry)
    source, _ = coco_source(tmp_path)
    work = tmp_path / "work"
    assert main(["sandbox", "--task", "mining,infer", str(source), "--out", str(work)]) == 2
    assert "need --model DIR" in capsys.readouterr().err
    assert main(["sandbox", "--task", "mining,infer", str(source), "--out", str(work), "--model",
                 str(fake_models(tmp_path)), "--all-stages", "--container-paths"]) == 0
    assert "images: 2 (candidates 2)" in capsys.readouterr().out
    config = read_yaml(work / "in" / "config.yaml")
    assert config["model_params_path"] == ["/in/models/epoch_1/model.json", "/in/models/epoch_2/model.json"]
    assert set(read_yaml(work / "in" / "models" / "ymir-info.yaml")["model_stages"]) == {"epoch_1", "epoch_2"}
