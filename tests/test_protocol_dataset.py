"""Streaming dataset readers: index files, det-ark, det-voc, seg-coco, and what gets skipped (and said)."""

import json
import logging
import os

import pytest

from ymir_runner.errors import ConfigError, DatasetError
from ymir_runner.protocol.annotations import Box, parse_ark_line
from ymir_runner.protocol.dataset import (
    MAX_WARNINGS_PER_REASON,
    AnnotationReader,
    DatasetReader,
    SkipLog,
)
from ymir_runner.protocol.images import sniff_image_format
from ymir_runner.testing import png_bytes, write_png

CLASSES = ("cat", "dog", "person")


class Tree:
    """Images and annotations under ``<tmp>/in`` and an index naming them by container path (/in/...)."""

    def __init__(self, base):
        self.root = str(base)
        self.lines = []

    def local(self, container_path):
        return f"{self.root}{container_path}"

    def image(self, name, *, missing=False, width=100, height=80):
        """A PNG large enough for every box of these tests (boxes are clipped to their image)."""
        path = f"/in/assets/{name}"
        if not missing:
            write_png(self.local(path), width, height)
        return path

    def annotation(self, name, text=None, *, binary=None):
        path = f"/in/annotations/{name}"
        target = self.local(path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if binary is not None:
            with open(target, "wb") as stream:
                stream.write(binary)
        elif text is not None:
            with open(target, "w", encoding="utf-8") as stream:
                stream.write(text)
        return path

    def add(self, image, annotation=None):
        self.lines.append(image if annotation is None else f"{image}\t{annotation}")

    def index(self, name="train-index.tsv", text=None):
        path = self.local(f"/in/{name}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text if text is not None else "".join(line + "\n" for line in self.lines))
        return path

    def reader(self, fmt="det-ark", classes=CLASSES, *, annotated=True, skips=None, name="training"):
        skips = skips or SkipLog()
        annotations = AnnotationReader(classes, fmt, skips) if annotated else None
        return DatasetReader(self.index(), annotations=annotations, skips=skips, name=name, root=self.root)


@pytest.fixture
def tree(tmp_path):
    return Tree(tmp_path)


def warnings_of(caplog):
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


# --- det-ark -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("line", ["1, 10, 20, 29, 59, 0.9, 15", "1,10,20,29,59,0.9,15", "1,10, 20 ,29,59,0.9,15\n"])
def test_ark_line_separators_and_inclusive_corners(line):
    box = parse_ark_line(line, len(CLASSES))
    assert box == Box(1, 10.0, 20.0, 30.0, 60.0, 0.9, 15.0)
    assert box.x2 == 29 + 1 and box.y2 == 59 + 1
    assert box.width == 29 - 10 + 1 == 20 and box.height == 59 - 20 + 1 == 40


@pytest.mark.parametrize("line, quality, angle", [
    ("0, 1, 2, 3, 4", -1.0, 0.0),
    ("0, 1, 2, 3, 4, 0.5", 0.5, 0.0),
    ("0, 1, 2, 3, 4, -1.0, 30", -1.0, 30.0),
])
def test_ark_line_five_six_seven_fields(line, quality, angle):
    box = parse_ark_line(line, 1)
    assert (box.class_id, box.x1, box.y1, box.x2, box.y2) == (0, 1.0, 2.0, 4.0, 5.0)
    assert (box.quality, box.angle) == (quality, angle)


def test_ark_single_pixel_box_has_width_one():
    box = parse_ark_line("0, 5, 5, 5, 5", 1)
    assert box.width == 1 and box.height == 1


def test_ark_file_skips_bad_lines_and_counts_them(tree, caplog):
    text = "\n".join([
        "0, 0, 0, 3, 3, -1.0, 0",    # 1 ok
        "3, 0, 0, 3, 3",             # 2 class id outside 3 classes
        "-1, 0, 0, 3, 3",            # 3 negative class id
        "1, 5, 0, 4, 3",             # 4 x2 < x1
        "1, 0, 5, 3, 4",             # 5 y2 < y1
        "1, a, 0, 3, 3",             # 6 non-numeric
        "1, 0, 0, 3",                # 7 four fields
        "1, 0, 0, 3, 3, 1, 1, 1",    # 8 eight fields
        "",                          # 9 blank: ignored, not counted
        "1.5, 0, 0, 3, 3",           # 10 fractional class id
        "inf, 0, 0, 3, 3",           # 11 infinite class id
        "1, nan, 0, 3, 3",           # 12 NaN coordinate
        "1, 0, 0, inf, 3",           # 13 infinite coordinate
        "2, 1, 1, 2, 2, 0.5",        # 14 ok
        "garbage",                   # 15 malformed
    ]) + "\n"
    tree.add(tree.image("a.png"), tree.annotation("a.txt", text))
    reader = tree.reader()
    with caplog.at_level(logging.WARNING, logger="ymir_runner.dataset"):
        items = list(reader)
    assert len(items) == 1
    assert [box.class_id for box in items[0].boxes] == [0, 2]
    assert items[0].boxes[1] == Box(2, 1.0, 1.0, 3.0, 3.0, 0.5, 0.0)
    skips = reader.skips
    assert skips.counts["class id outside class_names"] == 2
    assert skips.counts["inverted box"] == 2
    assert skips.counts["non-numeric field"] == 5
    assert skips.counts["malformed line"] == 3
    assert skips.total == 12
    messages = warnings_of(caplog)
    annotation = tree.local("/in/annotations/a.txt")
    for number in (2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15):
        assert any(f"{annotation}:{number}" in message for message in messages), number
    assert not any(f"{annotation}:1:" in message or f"{annotation}:9" in message for message in messages)
    assert skips.summary() == "2 class id outside class_names, 2 inverted box, 3 malformed line, 5 non-numeric field"


def test_ark_crlf_line_endings(tree):
    tree.add(tree.image("a.png"), tree.annotation("a.txt", "0, 1, 2, 3, 4, -1.0, 0\r\n1, 1, 1, 1, 1\r\n"))
    reader = tree.reader()
    (item,) = list(reader)
    assert [box.class_id for box in item.boxes] == [0, 1]
    assert reader.skips.total == 0


def test_empty_ark_file_is_an_image_without_boxes(tree):
    tree.add(tree.image("a.png"), tree.annotation("a.txt", ""))
    reader = tree.reader()
    (item,) = list(reader)
    assert item.boxes == () and reader.skips.total == 0
    assert item.image == tree.local("/in/assets/a.png")
    assert item.annotation == tree.local("/in/annotations/a.txt")


# --- index: skipped lines ----------------------------------------------------------------------------------

def test_missing_image_and_annotation_are_skipped_and_counted(tree, caplog):
    tree.add(tree.image("ok.png"), tree.annotation("ok.txt", "0, 0, 0, 1, 1\n"))
    tree.add(tree.image("gone.png", missing=True), tree.annotation("gone.txt", "0, 0, 0, 1, 1\n"))
    tree.add(tree.image("noann.png"), "/in/annotations/does-not-exist.txt")
    tree.add(tree.image("nopath.png"))  # no annotation column at all
    tree.add(tree.image("binary.png"), tree.annotation("binary.txt", binary=b"\xff\xfe\x00garbage"))
    reader = tree.reader()
    with caplog.at_level(logging.WARNING, logger="ymir_runner.dataset"):
        items = list(reader)
    assert [item.image for item in items] == [tree.local("/in/assets/ok.png")]
    assert reader.skips.counts == {"missing image": 1, "unreadable annotation": 2, "missing annotation": 1}
    messages = warnings_of(caplog)
    index = tree.local("/in/train-index.tsv")
    assert any(f"{index}:2" in m and "missing image" in m and "gone.png" in m for m in messages)
    assert any(f"{index}:4" in m and "missing annotation" in m for m in messages)
    assert any("does-not-exist.txt" in m and "unreadable annotation" in m for m in messages)
    assert any("binary.txt" in m for m in messages)


def test_warnings_are_limited_but_everything_is_counted(tree, caplog):
    for index in range(MAX_WARNINGS_PER_REASON + 5):
        tree.add(tree.image(f"{index}.png", missing=True), tree.annotation(f"{index}.txt", ""))
    reader = tree.reader()
    with caplog.at_level(logging.WARNING, logger="ymir_runner.dataset"):
        assert list(reader) == []
    assert reader.skips.counts["missing image"] == MAX_WARNINGS_PER_REASON + 5
    assert "15 missing image" in reader.skips.summary()
    messages = warnings_of(caplog)
    assert len([m for m in messages if m.startswith("skipped")]) == MAX_WARNINGS_PER_REASON
    assert any("only counted" in m for m in messages)


def test_len_is_empty_and_paths(tree):
    tree.add(tree.image("a.png"), tree.annotation("a.txt", ""))
    tree.add(tree.image("b.png", missing=True), tree.annotation("b.txt", ""))
    tree.add(tree.image("c.png"), tree.annotation("c.txt", "0, 0, 0, 1, 1\n"))
    index = tree.index(text="".join(line + "\n\n" for line in tree.lines))  # blank lines are not entries
    reader = DatasetReader(index, annotations=AnnotationReader(CLASSES, "det-ark", SkipLog()), skips=SkipLog(),
                           name="training", root=tree.root)
    assert len(reader) == 3  # counts index lines: does not check images
    assert not reader.is_empty()
    assert reader.paths() == [tree.local(f"/in/assets/{name}.png") for name in "abc"]
    assert [item.image for item in reader] == [tree.local("/in/assets/a.png"), tree.local("/in/assets/c.png")]
    assert [item.image for item in reader] == [tree.local("/in/assets/a.png"), tree.local("/in/assets/c.png")]


def test_empty_and_unset_index(tree):
    empty = DatasetReader(tree.index(text="\n\n"), annotations=None, skips=SkipLog(), name="training")
    assert empty.is_empty() and len(empty) == 0 and list(empty) == [] and empty.paths() == []
    unset = DatasetReader("", annotations=None, skips=SkipLog(), name="candidate")
    assert unset.is_empty() and len(unset) == 0


def test_missing_index_file_is_a_dataset_error(tmp_path):
    reader = DatasetReader(str(tmp_path / "nope.tsv"), annotations=None, skips=SkipLog(), name="validation")
    with pytest.raises(DatasetError) as excinfo:
        list(reader)
    assert excinfo.value.code == 300002
    assert "validation" in excinfo.value.message and "nope.tsv" in excinfo.value.message


def test_index_paths_rerooted_only_with_a_root(tree):
    tree.add(tree.image("a.png"))
    index = tree.index("candidate-index.tsv")
    local = DatasetReader(index, annotations=None, skips=SkipLog(), name="candidate", root=tree.root)
    assert local.paths() == [tree.local("/in/assets/a.png")]
    assert [item.image for item in local] == [tree.local("/in/assets/a.png")]
    container = DatasetReader(index, annotations=None, skips=SkipLog(), name="candidate")
    assert container.paths() == ["/in/assets/a.png"]


def test_candidate_index_yields_images_without_annotations(tree):
    tree.add(tree.image("a.png"))
    tree.add(tree.image("b.png", missing=True))
    tree.add(tree.image("c.png"))
    reader = tree.reader(annotated=False, name="candidate")
    assert not reader.annotated
    items = list(reader)
    assert [(item.annotation, item.boxes) for item in items] == [("", ()), ("", ())]
    assert [item.image for item in items] == [tree.local("/in/assets/a.png"), tree.local("/in/assets/c.png")]
    assert reader.skips.counts == {"missing image": 1}
    assert len(reader) == 3


def test_reader_is_streaming(tree):
    for index in range(3):
        tree.add(tree.image(f"{index}.png"), tree.annotation(f"{index}.txt", "0, 0, 0, 1, 1\n"))
    iterator = iter(tree.reader())
    first = next(iterator)
    assert first.image.endswith("0.png")
    assert len(list(iterator)) == 2


def test_unsupported_annotation_format_is_a_config_error():
    with pytest.raises(ConfigError) as excinfo:
        AnnotationReader(CLASSES, "yolo", SkipLog())
    assert "export_format" in excinfo.value.message and "yolo" in excinfo.value.message


# --- det-voc -----------------------------------------------------------------------------------------------

def voc(*objects, filename="/in/assets/x.png"):
    return f"<annotation><filename>{filename}</filename><size><width>8</width></size>{''.join(objects)}</annotation>"


def voc_object(name, xmin, ymin, xmax, ymax, *, extra="", bndbox_extra=""):
    return (f"<object><name>{name}</name><difficult>0</difficult>{extra}<bndbox><xmin>{xmin}</xmin>"
            f"<ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>{bndbox_extra}</bndbox></object>")


def test_voc_class_by_name_inclusive_and_optional_fields(tree):
    text = voc(
        voc_object("dog", 10, 20, 29, 59),
        voc_object("Person", 0, 0, 0, 0, extra="<box_quality>0.75</box_quality>"),
        voc_object(" CAT ", 1, 2, 3, 4, bndbox_extra="<rotate_angle>12.5</rotate_angle>"),
    )
    tree.add(tree.image("a.png"), tree.annotation("a.xml", text))
    reader = tree.reader("det-voc")
    (item,) = list(reader)
    assert item.boxes == (
        Box(1, 10.0, 20.0, 30.0, 60.0, -1.0, 0.0),
        Box(2, 0.0, 0.0, 1.0, 1.0, 0.75, 0.0),
        Box(0, 1.0, 2.0, 4.0, 5.0, -1.0, 12.5),
    )
    assert item.boxes[0].width == 20 and item.boxes[0].height == 40
    assert reader.skips.total == 0


def test_voc_class_names_with_capitals(tree):
    tree.add(tree.image("a.png"), tree.annotation("a.xml", voc(voc_object("truck", 1, 1, 2, 2))))
    (item,) = list(tree.reader("det-voc", classes=("Car", "Truck")))
    assert [box.class_id for box in item.boxes] == [1]


def test_voc_bad_objects_skipped_and_counted(tree, caplog):
    text = voc(
        voc_object("cat", 1, 1, 5, 5),
        voc_object("horse", 1, 1, 5, 5),
        voc_object("dog", 5, 1, 4, 5),
        voc_object("dog", "x", 1, 4, 5),
        "<object><name>dog</name></object>",
        voc_object("dog", 1, 1, "nan", 5),
    )
    tree.add(tree.image("a.png"), tree.annotation("a.xml", text))
    reader = tree.reader("det-voc")
    with caplog.at_level(logging.WARNING, logger="ymir_runner.dataset"):
        (item,) = list(reader)
    assert [box.class_id for box in item.boxes] == [0]
    assert reader.skips.counts == {"class name outside class_names": 1, "inverted box": 1,
                                   "non-numeric field": 2, "malformed object": 1}
    annotation = tree.local("/in/annotations/a.xml")
    messages = warnings_of(caplog)
    assert any(annotation in m and "object 2" in m and "horse" in m for m in messages)
    assert any(annotation in m and "object 5" in m for m in messages)


def test_voc_unreadable_xml_is_skipped_and_counted(tree, caplog):
    tree.add(tree.image("a.png"), tree.annotation("a.xml", "<annotation><object>"))
    tree.add(tree.image("b.png"), tree.annotation("b.xml", voc(voc_object("cat", 0, 0, 1, 1))))
    reader = tree.reader("det-voc")
    with caplog.at_level(logging.WARNING, logger="ymir_runner.dataset"):
        items = list(reader)
    assert [item.image for item in items] == [tree.local("/in/assets/b.png")]
    assert reader.skips.counts == {"unreadable annotation": 1}
    assert any(tree.local("/in/annotations/a.xml") in m for m in warnings_of(caplog))


@pytest.mark.parametrize("text", ["", "\n", voc()])
def test_voc_empty_file_or_no_objects_is_an_image_without_boxes(tree, text):
    tree.add(tree.image("a.png"), tree.annotation("a.xml", text))
    reader = tree.reader("det-voc")
    (item,) = list(reader)
    assert item.boxes == () and reader.skips.total == 0


# --- seg-coco ----------------------------------------------------------------------------------------------

def test_coco_boxes_from_one_shared_json(tree):
    coco = {
        "images": [{"id": 1, "file_name": "/in/assets/a.png"}, {"id": 2, "file_name": "b.png"},
                   {"id": 3, "file_name": "c.png"}],
        "categories": [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}, {"id": 2, "name": "person"}],
        "annotations": [
            {"image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40], "segmentation": []},
            {"image_id": 1, "category_id": 0, "bbox": [0, 0, 1, 1]},
            {"image_id": 2, "category_id": 2, "bbox": [1.5, 2.5, 3, 4]},
            {"image_id": 2, "category_id": 7, "bbox": [1, 1, 1, 1]},     # outside class_names
            {"image_id": 2, "category_id": 0, "bbox": [1, 1]},           # malformed
            {"image_id": 99, "category_id": 0, "bbox": [1, 1, 1, 1]},    # unknown image
        ],
    }
    shared = tree.annotation("coco-annotations.json", json.dumps(coco))
    for name in "abc":
        tree.add(tree.image(f"{name}.png"), shared)
    reader = tree.reader("seg-coco")
    items = {item.image.rsplit("/", 1)[1]: item.boxes for item in reader}
    assert items["a.png"] == (Box(1, 10.0, 20.0, 40.0, 60.0, -1.0, 0.0), Box(0, 0.0, 0.0, 1.0, 1.0, -1.0, 0.0))
    assert items["a.png"][0].width == 30 and items["a.png"][0].height == 40
    assert items["b.png"] == (Box(2, 1.5, 2.5, 4.5, 6.5, -1.0, 0.0),)
    assert items["c.png"] == ()
    assert reader.skips.counts == {"class name outside class_names": 1, "malformed object": 2}


def test_coco_categories_are_matched_by_name_not_position(tree):
    coco = {"images": [{"id": 0, "file_name": "a.png"}],
            "categories": [{"id": 0, "name": "person"}, {"id": 1, "name": "Cat"}, {"id": 2, "name": "bike"}],
            "annotations": [{"image_id": 0, "category_id": 1, "bbox": [0, 0, 2, 2]},
                            {"image_id": 0, "category_id": 2, "bbox": [0, 0, 2, 2]}]}
    tree.add(tree.image("a.png"), tree.annotation("coco-annotations.json", json.dumps(coco)))
    reader = tree.reader("seg-coco")
    (item,) = list(reader)
    assert [box.class_id for box in item.boxes] == [0]  # "Cat" is class_names[0] ("cat")
    assert reader.skips.counts == {"class name outside class_names": 1}


def test_coco_category_ids_are_zero_based_without_names(tree):
    coco = {"images": [{"id": 0, "file_name": "a.png"}],
            "annotations": [{"image_id": 0, "category_id": 0, "bbox": [0, 0, 2, 2]},
                            {"image_id": 0, "category_id": 2, "bbox": [0, 0, 2, 2]}]}
    tree.add(tree.image("a.png"), tree.annotation("coco-annotations.json", json.dumps(coco)))
    (item,) = list(tree.reader("seg-coco"))
    assert [box.class_id for box in item.boxes] == [0, 2]


def test_coco_unreadable_json_is_a_dataset_error(tree):
    tree.add(tree.image("a.png"), tree.annotation("coco-annotations.json", "{not json"))
    with pytest.raises(DatasetError) as excinfo:
        list(tree.reader("seg-coco"))
    assert "coco-annotations.json" in excinfo.value.message


# --- images ------------------------------------------------------------------------------------------------

def test_sniff_image_format_by_content(tmp_path):
    png_named_jpg = write_png(str(tmp_path / "ab" / "0123.jpg"), 4, 4)
    assert sniff_image_format(png_named_jpg) == "png"
    jpeg = tmp_path / "photo.png"
    jpeg.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32)
    assert sniff_image_format(str(jpeg)) == "jpeg"
    bmp = tmp_path / "x.unknown"
    bmp.write_bytes(b"BM" + b"\x00" * 52)
    assert sniff_image_format(str(bmp)) == "bmp"
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image at all")
    assert sniff_image_format(str(junk)) is None
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert sniff_image_format(str(empty)) is None
    assert sniff_image_format(str(tmp_path / "missing.png")) is None


def test_sniff_real_encoders_when_pillow_is_there(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    image = image_module.new("RGB", (5, 4), (10, 20, 30))
    for fmt, name in (("JPEG", "a.png"), ("BMP", "b.jpg"), ("PNG", "c.bmp")):
        path = tmp_path / name
        image.save(str(path), format=fmt)
        assert sniff_image_format(str(path)) == fmt.lower()
    assert png_bytes(2, 2).startswith(b"\x89PNG")
