"""A training SOURCE with images but not one usable box is refused, saying what was looked for and found and where
the annotations seem to be; ``--format images`` builds a tree without boxes only when asked."""

from __future__ import annotations

import json
import shutil

import pytest
import toy_plugin
from PIL import Image

from ymir_runner import ConfigError, sandbox
from ymir_runner.cli import main
from ymir_runner.sandbox import build_sandbox

ON_PURPOSE = ("or pass --format images to build a training tree without boxes on purpose (a run on it stops: "
              "nothing to learn)")


@pytest.fixture
def registry(ymir_registry, monkeypatch):
    ymir_registry.register(toy_plugin, "toy")
    monkeypatch.setattr("ymir_runner.plugins.build_plugin_manager", lambda **_: ymir_registry)
    monkeypatch.setattr(sandbox.log, "handlers", [])  # the handler a CLI call adds leaves with the test
    monkeypatch.setattr(sandbox.log, "propagate", True)
    return ymir_registry


def picture(path, shade):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (shade, 90, 140)).save(path)


def voc_root(tmp_path, count=3, xml=None):
    """VOC2012/JPEGImages + VOC2012/Annotations."""
    root = tmp_path / "VOC2012"
    (root / "Annotations").mkdir(parents=True)
    for index in range(count):
        picture(root / "JPEGImages" / f"img_{index:04d}.jpg", index * 40)
        (root / "Annotations" / f"img_{index:04d}.xml").write_text(
            xml if xml is not None else
            f"<annotation><filename>img_{index:04d}.jpg</filename><object><name>cat</name><bndbox><xmin>2</xmin>"
            f"<ymin>3</ymin><xmax>20</xmax><ymax>30</ymax></bndbox></object></annotation>")
    return root


def refused(source, tmp_path, registry, **options) -> str:
    with pytest.raises(ConfigError) as failure:
        build_sandbox(str(source), str(tmp_path / "work"), registry=registry, **options)
    assert not (tmp_path / "work").exists()  # nothing written
    return str(failure.value)


def test_a_voc_jpegimages_folder_is_refused_naming_where_its_annotations_are(tmp_path, registry):
    root = voc_root(tmp_path)
    message = refused(root / "JPEGImages", tmp_path, registry)
    assert message == (
        f"SOURCE {root}/JPEGImages: found no annotations for its 3 images (looked for VOC .xml, YOLO label .txt and "
        f"COCO .json anywhere below it), and a training task needs them: annotations seem to lie beside SOURCE, in "
        f"{root}/Annotations (3 .xml): point SOURCE at {root}, the folder holding both; {ON_PURPOSE}")
    # following the old advice (--format) no longer builds a tree with 0 boxes
    for source_format, looked_for in (("voc", "VOC .xml files"), ("yolo", "YOLO label .txt files")):
        message = refused(root / "JPEGImages", tmp_path, registry, format=source_format)
        assert message.startswith(f"SOURCE {root}/JPEGImages: 3 images and not one usable box as {source_format} "
                                  f"(looked for {looked_for}")
        assert f"found none), and a training task needs them: annotations seem to lie beside SOURCE, in " \
               f"{root}/Annotations (3 .xml): point SOURCE at {root}" in message
    # following the new advice builds the tree with its boxes
    summary = build_sandbox(str(root), str(tmp_path / "work"), registry=registry)
    assert (summary.source_format, summary.boxes) == ("voc", 3)


def test_a_yolo_images_folder_names_the_labels_beside_it_and_the_cli_says_it_in_one_line(tmp_path, registry, capsys):
    root = tmp_path / "yolo"
    for index in range(4):
        picture(root / "images" / f"{index}.jpg", index * 30)
        (root / "labels").mkdir(parents=True, exist_ok=True)
        (root / "labels" / f"{index}.txt").write_text("0 0.5 0.5 0.25 0.25\n")
    (root / "classes.txt").write_text("cat\n")
    assert main(["sandbox", str(root / "images"), "--out", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"ymir-runner sandbox: error: SOURCE {root}/images: found no "
                                                  "annotations for its 4 images")
    assert f"in {root}/labels (4 .txt): point SOURCE at {root}, the folder holding both" in err
    assert main(["sandbox", str(root), "--out", str(tmp_path / "work")]) == 0
    assert "boxes: 4 as det-ark (cat 4)" in capsys.readouterr().out


def test_a_folder_of_images_alone_is_told_to_point_at_the_dataset_root(tmp_path, registry):
    for index in range(2):
        picture(tmp_path / "photos" / "all" / f"{index}.png", index)
    message = refused(tmp_path / "photos" / "all", tmp_path, registry)
    assert message.endswith("a training task needs them: point SOURCE at the dataset's root, the folder holding "
                            "both the images and their annotations (JPEGImages/ and Annotations/, images/ and "
                            f"labels/, or the COCO .json); {ON_PURPOSE}")


@pytest.mark.parametrize("case, expected", [
    ("unreadable xml", "(3 .xml files, 0 boxes in them; skipped 3 unreadable annotation): fix the annotations the "
                       "warnings above name"),
    ("no objects", "(3 .xml files, 0 boxes in them): fix the annotations"),
    ("empty yolo labels", "(2 .txt files, 0 boxes in them): fix the annotations"),
    ("coco without annotations", "(1 .json files, 0 boxes in them): fix the annotations"),
    ("every box dropped", "(3 .xml files, 3 boxes in them; skipped 3 degenerate box): fix the annotations"),
    ("every class left out", "(3 .xml files, 3 boxes in them; skipped 3 class not in --classes): every box is of a "
                             "class not in --classes; add the classes to --classes"),
])
def test_annotations_without_a_usable_box_are_refused_saying_what_was_found(tmp_path, registry, case, expected):
    options = {}
    if case == "unreadable xml":
        source = voc_root(tmp_path, xml="<annotation><object>")
    elif case == "no objects":
        source = voc_root(tmp_path, xml="<annotation><filename>x.jpg</filename></annotation>")
    elif case == "empty yolo labels":
        source = tmp_path / "yolo"
        for index in range(2):
            picture(source / f"{index}.jpg", index)
            (source / f"{index}.txt").write_text("")
        (source / "obj.names").write_text("cat\n")
    elif case == "coco without annotations":
        source = tmp_path / "coco"
        picture(source / "a.jpg", 1)
        (source / "instances.json").write_text(json.dumps({
            "images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "cat"}],
            "annotations": []}))
        options = {"classes": ["cat"]}
    elif case == "every box dropped":  # inverted corners: nothing left to train on
        source = voc_root(tmp_path, xml="<annotation><object><name>cat</name><bndbox><xmin>30</xmin><ymin>3</ymin>"
                                        "<xmax>20</xmax><ymax>30</ymax></bndbox></object></annotation>")
        for index in range(3):
            xml = source / "Annotations" / f"img_{index:04d}.xml"
            xml.write_text(xml.read_text().replace("<object>", f"<filename>img_{index:04d}.jpg</filename><object>"))
    else:
        source = voc_root(tmp_path)
        options = {"classes": ["dog"], "ignore_other_classes": True}
    message = refused(source, tmp_path, registry, **options)
    assert message.startswith(f"SOURCE {source}: ") and "images and not one usable box as " in message
    assert expected in message
    assert "--format images" not in message  # the annotations are there: building without them is no answer


def test_format_images_builds_a_training_tree_without_boxes_only_when_asked(tmp_path, registry, caplog):
    root = voc_root(tmp_path)
    shutil.rmtree(root / "Annotations")
    refused(root, tmp_path, registry)
    summary = build_sandbox(str(root), str(tmp_path / "work"), registry=registry, format="images", classes=["cat"])
    assert (summary.source_format, summary.images, summary.boxes) == ("images", 3, 0)
    assert all(not path.read_text() for path in (tmp_path / "work" / "in" / "annotations").iterdir())
    assert ("--format images: a training tree without a single box (to label elsewhere, or to check what a "
            "platform does with one); `ymir-runner run` stops on it with 300002") in caplog.text
