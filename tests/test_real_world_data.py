"""Real-world dataset quirks in the core: images read by the platform's import rules, boxes as the user gave
them but only where they lie in the image, index and annotation files in the encodings users' tools write.

Each test is built from a small generated input of one kind of fault (issue: "Real-world datasets in, true
numbers out")."""

from __future__ import annotations

import codecs
import logging
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from ymir_runner.dataset_report import report_readers
from ymir_runner.inspection import inspect_env
from ymir_runner.protocol.annotations import Box
from ymir_runner.protocol.dataset import AnnotationReader, DatasetReader, SkipLog
from ymir_runner.protocol.images import MAX_IMAGE_PIXELS, ImageProblem, decode_image, probe_image
from ymir_runner.testing import TaskTree, write_png

CLASSES = ("cat", "dog")


def jpeg(path, width=64, height=48, *, seed=0, mode="RGB", **options):
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    os.makedirs(os.path.dirname(str(path)) or ".", exist_ok=True)
    Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(path, "JPEG", **options)
    return str(path)


def gray16_png(path, width=64, height=48):
    values = np.linspace(20000, 60000, width * height).reshape(height, width).astype(np.uint16)
    Image.fromarray(values).save(path)
    return str(path), values


def bomb_png(path, side=100_000):
    """A tiny PNG whose header claims ``side`` x ``side`` pixels of one colour."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    with open(path, "wb") as stream:
        stream.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
                     + chunk(b"IEND", b""))
    return str(path)


def index(tmp_path, lines, name="train-index.tsv", *, bom=False):
    path = tmp_path / name
    path.write_bytes((codecs.BOM_UTF8 if bom else b"") + "".join(line + "\n" for line in lines).encode())
    return str(path)


def reader(index_file, fmt="det-ark", *, annotated=True, skips=None):
    skips = skips or SkipLog()
    annotations = AnnotationReader(CLASSES, fmt, skips) if annotated else None
    return DatasetReader(index_file, annotations=annotations, skips=skips, name="training")


# --- 1. bit depth -------------------------------------------------------------------------------------------

def test_16_bit_grey_png_keeps_its_content_scaled_by_the_full_16_bit_range(tmp_path):
    path, values = gray16_png(tmp_path / "a.png")
    assert Image.open(path).mode == "I;16"
    decoded = np.asarray(decode_image(path).image)
    assert decoded.shape == (48, 64, 3) and decoded.dtype == np.uint8
    expected = (values >> 8).astype(np.uint8)  # the high byte: 20000 -> 78, 60000 -> 234
    np.testing.assert_array_equal(decoded[..., 0], expected)
    assert decoded.min() == 78 and decoded.max() == 234  # not the all-white image PIL's convert("RGB") gives


def test_16_bit_rgb_and_grey_follow_the_same_rule(tmp_path):
    """PIL reads a 16-bit RGB PNG by keeping each value's high byte; grey gets the same rule, not its own."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    values = np.array([[[0, 20000, 60000], [65535, 511, 256]]], dtype=">u2")  # 1 row, 2 RGB pixels
    raw = b"\0" + values[0].tobytes()
    path = tmp_path / "rgb16.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 1, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    np.testing.assert_array_equal(np.asarray(decode_image(str(path)).image)[0], values[0] >> 8)
    grey_values = values[0].astype(np.uint16).reshape(2, 3)  # the same six values as a 2 x 3 grey image
    Image.fromarray(grey_values).save(tmp_path / "grey16.png")
    grey = np.asarray(decode_image(str(tmp_path / "grey16.png")).image)[..., 0]
    np.testing.assert_array_equal(grey, grey_values >> 8)


# --- 2. and 3. boxes outside the image, duplicates -----------------------------------------------------------

def test_boxes_are_clipped_to_the_image_and_boxes_outside_it_are_skipped_and_counted(tmp_path, caplog):
    image = write_png(str(tmp_path / "a.png"), 100, 80)
    annotation = tmp_path / "a.txt"
    annotation.write_text("0, -10, -5, 49, 39\n"      # sticks out top-left: clipped to (0, 0, 50, 40)
                          "1, 80, 60, 129, 99\n"      # sticks out bottom-right: clipped to (80, 60, 100, 80)
                          "0, 100, 10, 150, 20\n"     # wholly to the right of the image
                          "1, -30, -30, -1, -1\n"     # wholly above-left
                          "0, 10, 10, 19, 19\n")      # inside: kept as it is
    skips = SkipLog()
    with caplog.at_level(logging.WARNING, logger="ymir_runner.dataset"):
        (item,) = list(reader(index(tmp_path, [f"{image}\t{annotation}"]), skips=skips))
    assert [box[:5] for box in item.boxes] == [(0, 0.0, 0.0, 50.0, 40.0), (1, 80.0, 60.0, 100.0, 80.0),
                                               (0, 10.0, 10.0, 20.0, 20.0)]
    assert (item.width, item.height) == (100, 80)
    assert skips.counts["box outside image"] == 2 and skips.repairs["box clipped to image"] == 2
    assert skips.report() == "skipped 2 box outside image; repaired 2 box clipped to image"
    messages = [record.getMessage() for record in caplog.records]
    assert sum(str(annotation) in message and "box outside image" in message for message in messages) == 2


def test_exact_duplicate_boxes_are_collapsed_and_counted(tmp_path):
    image = write_png(str(tmp_path / "a.png"), 100, 80)
    annotation = tmp_path / "a.txt"
    annotation.write_text("0, 10, 10, 29, 29, -1.0, 0\n" * 25 + "1, 10, 10, 29, 29, -1.0, 0\n"
                          + "0, 10, 10, 29, 30, -1.0, 0\n")
    skips = SkipLog()
    (item,) = list(reader(index(tmp_path, [f"{image}\t{annotation}"]), skips=skips))
    # Same corners but another class, or other corners, are different boxes.
    assert [box[:5] for box in item.boxes] == [(0, 10.0, 10.0, 30.0, 30.0), (1, 10.0, 10.0, 30.0, 30.0),
                                               (0, 10.0, 10.0, 30.0, 31.0)]
    assert skips.counts == {"duplicate box": 24}


def test_an_annotated_set_is_read_once_and_counted_once(tmp_path):
    image = write_png(str(tmp_path / "a.png"), 10, 10)
    annotation = tmp_path / "a.txt"
    annotation.write_text("0, 0, 0, 3, 3\n0, 0, 0, 3, 3\n")
    skips = SkipLog()
    dataset = reader(index(tmp_path, [f"{image}\t{annotation}", f"{tmp_path}/missing.png\t{annotation}"]),
                     skips=skips)
    assert list(dataset) == list(dataset)
    assert skips.counts == {"duplicate box": 1, "missing image": 1}


# --- 5. very large images and decompression bombs ------------------------------------------------------------

def test_a_182_megapixel_jpeg_is_read_and_decoded_straight_to_a_reduced_size(tmp_path):
    path = str(tmp_path / "aerial.jpg")
    Image.new("L", (14000, 13000), 90).save(path, quality=80)  # PIL's own limit refuses this (> 179 Mpx)
    assert probe_image(path)[:3] == (14000, 13000, "jpeg")
    decoded = decode_image(path, min_side=640)
    assert (decoded.width, decoded.height, decoded.factor) == (14000, 13000, 8)
    assert decoded.image.size == (1750, 1625) and decoded.image.mode == "RGB"
    # Memory stays near the output size: a fresh process decoding it peaks far below the 546 MB of full RGB.
    # (VmHWM, the peak resident size of this process's own memory: ru_maxrss would carry pytest's over exec.)
    code = ("from ymir_runner.protocol.images import decode_image; "
            f"decode_image({path!r}, min_side=640); "
            "print(next(int(line.split()[1]) // 1024 for line in open('/proc/self/status') "
            "if line.startswith('VmHWM')))")
    peak_mb = int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout)
    assert peak_mb < 150, peak_mb


def test_a_95_megapixel_image_is_read_without_a_library_warning(tmp_path, recwarn):
    path = str(tmp_path / "big.jpg")
    Image.new("L", (10000, 9500)).save(path)
    (item,) = list(reader(index(tmp_path, [path]), annotated=False))
    assert (item.width, item.height) == (10000, 9500)
    assert decode_image(path, min_side=640).factor == 8
    assert not [warning for warning in recwarn if "decompression bomb" in str(warning.message).lower()]


def test_a_decompression_bomb_is_skipped_counted_and_named(tmp_path, caplog):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert os.path.getsize(bomb) < 1000 and 100_000 ** 2 > MAX_IMAGE_PIXELS
    with pytest.raises(ImageProblem) as problem:
        decode_image(bomb)
    assert problem.value.reason == "image too large" and "bomb.png" in str(problem.value)
    good = write_png(str(tmp_path / "good.png"), 8, 8)
    skips = SkipLog()
    with caplog.at_level(logging.WARNING, logger="ymir_runner.dataset"):
        items = list(reader(index(tmp_path, [bomb, good]), annotated=False, skips=skips))
    assert [item.image for item in items] == [good]
    assert skips.counts == {"image too large": 1}
    assert any("bomb.png" in record.getMessage() and "MAX_IMAGE_PIXELS" in record.getMessage()
               for record in caplog.records)


# --- 6. truncated images ---------------------------------------------------------------------------------------

def test_jpegs_missing_only_their_end_marker_are_used_whole_and_counted(tmp_path, caplog):
    complete = jpeg(tmp_path / "complete.jpg", seed=1)
    data = open(complete, "rb").read()
    assert data.endswith(b"\xff\xd9")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[:-2])
    info = probe_image(str(cut))
    assert info.damage == "truncated image" and (info.width, info.height) == (64, 48)
    np.testing.assert_array_equal(np.asarray(decode_image(str(cut)).image), np.asarray(decode_image(complete).image))
    skips = SkipLog()
    with caplog.at_level(logging.WARNING, logger="ymir_runner.dataset"):
        items = list(reader(index(tmp_path, [complete, str(cut)]), annotated=False, skips=skips))
    assert len(items) == 2 and skips.repairs == {"truncated image": 1} and not skips.counts
    assert any("cut.jpg" in record.getMessage() for record in caplog.records)


def test_an_image_cut_in_its_pixel_data_is_decoded_as_far_as_it_goes(tmp_path):
    data = open(jpeg(tmp_path / "complete.jpg", seed=2), "rb").read()
    cut = tmp_path / "half.jpg"
    cut.write_bytes(data[: len(data) // 2])
    assert probe_image(str(cut)).damage == "truncated image"
    decoded = decode_image(str(cut))
    assert decoded.image.size == (64, 48) and decoded.damage == "truncated image"


def test_trailing_data_after_the_end_marker_is_not_truncation(tmp_path):
    path = jpeg(tmp_path / "motion.jpg")
    with open(path, "ab") as stream:
        stream.write(b"\0\0ftypmp42" + bytes(200))  # a phone's motion-photo video after the JPEG
    assert not probe_image(path).damage


# --- 7. annotation files in a legacy encoding ------------------------------------------------------------------

def voc_text(*objects, encoding="utf-8"):
    body = "".join(f"<object><name>{name}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax>"
                   f"<ymax>{y2}</ymax></bndbox></object>" for name, x1, y1, x2, y2 in objects)
    return f'<?xml version="1.0" encoding="{encoding}"?>\n<annotation><filename>a.jpg</filename>{body}</annotation>'


def test_voc_in_its_declared_legacy_encoding_is_parsed_and_undecodable_files_are_skipped_by_path(tmp_path, caplog):
    gbk = tmp_path / "gbk.xml"
    gbk.write_bytes(voc_text(("猫", 1, 2, 10, 20), ("狗", 5, 5, 9, 9), encoding="gbk").encode("gbk"))
    big5 = tmp_path / "big5.xml"
    big5.write_bytes(voc_text(("貓", 3, 3, 7, 7), encoding="big5").encode("big5"))
    broken = tmp_path / "broken.xml"  # declares GBK, holds bytes that are not GBK
    broken.write_bytes(voc_text(encoding="gbk").encode() + b"<!-- \x80\xff -->")
    unknown = tmp_path / "unknown.xml"
    unknown.write_bytes(voc_text(("猫", 1, 1, 2, 2), encoding="x-no-such-codec").encode())
    skips = SkipLog()
    annotations = AnnotationReader(("猫", "狗", "貓"), "det-voc", skips)
    lines = [f"{write_png(str(tmp_path / f'{number}.png'), 100, 80)}\t{path}"
             for number, path in enumerate((gbk, big5, broken, unknown))]
    dataset = DatasetReader(index(tmp_path, lines), annotations=annotations, skips=skips, name="training")
    with caplog.at_level(logging.WARNING, logger="ymir_runner.dataset"):
        items = list(dataset)
    assert [[box[:5] for box in item.boxes] for item in items] == [
        [(0, 1.0, 2.0, 11.0, 21.0), (1, 5.0, 5.0, 10.0, 10.0)], [(2, 3.0, 3.0, 8.0, 8.0)]]
    assert skips.counts == {"unreadable annotation": 2}
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "broken.xml" in messages and "unknown.xml" in messages


def test_gb2312_files_holding_gbk_characters_and_a_bom_before_a_declaration_are_read(tmp_path):
    from ymir_runner.protocol.annotations import parse_xml

    # 鎔 is in GBK but not in GB2312; browsers and Windows tools decode "gb2312" as GBK
    gbk_only = voc_text(("鎔", 1, 1, 2, 2), encoding="gb2312").encode("gbk")
    assert parse_xml(gbk_only).findtext("object/name") == "鎔"
    bom_first = codecs.BOM_UTF8 + voc_text(("猫", 1, 1, 2, 2), encoding="gbk").encode("utf-8")
    assert parse_xml(bom_first).findtext("object/name") == "猫"  # the byte-order mark wins


def test_coco_boxes_narrower_than_a_pixel_are_kept_and_empty_ones_named(tmp_path):
    import json

    image = write_png(str(tmp_path / "a.png"), 20, 20)
    coco = {"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 0, "name": "cat"}],
            "annotations": [{"image_id": 1, "category_id": 0, "bbox": [2, 3, 0.5, 4]},
                            {"image_id": 1, "category_id": 0, "bbox": [2, 3, 0, 4]}]}
    annotation = tmp_path / "coco-annotations.json"
    annotation.write_text(json.dumps(coco))
    skips = SkipLog()
    (item,) = list(reader(index(tmp_path, [f"{image}\t{annotation}"]), "seg-coco", skips=skips))
    assert [box[:5] for box in item.boxes] == [(0, 2.0, 3.0, 2.5, 7.0)]
    assert skips.counts == {"empty box": 1}


# --- 8. byte-order marks ---------------------------------------------------------------------------------------

def test_a_utf8_byte_order_mark_is_ignored_in_every_index_and_annotation_file(tmp_path):
    images = [write_png(str(tmp_path / f"{name}.png"), 20, 20) for name in "ab"]
    annotation = tmp_path / "a.txt"
    annotation.write_bytes(codecs.BOM_UTF8 + b"1, 0, 0, 4, 4\n")
    training = reader(index(tmp_path, [f"{image}\t{annotation}" for image in images], bom=True))
    assert [item.image for item in training] == images and training.skips.total == 0
    assert [item.boxes for item in training][0] == (Box(1, 0.0, 0.0, 5.0, 5.0),)
    candidates = reader(index(tmp_path, images, "candidate-index.tsv", bom=True), annotated=False)
    assert candidates.paths() == images and [item.image for item in candidates] == images


def test_an_index_in_utf16_is_read_and_a_line_that_is_not_text_is_skipped_by_line(tmp_path, caplog):
    images = [write_png(str(tmp_path / f"{name}.png"), 8, 8) for name in ("a", "b", "ü")]
    utf16 = tmp_path / "utf16.tsv"
    utf16.write_bytes("".join(image + "\r\n" for image in images).encode("utf-16"))  # Notepad's "Unicode"
    assert [item.image for item in reader(str(utf16), annotated=False)] == images
    mixed = tmp_path / "mixed.tsv"  # one path saved in Latin-1 by another tool
    mixed.write_bytes(f"{images[0]}\n".encode() + f"{images[2]}\n".encode("latin-1") + f"{images[1]}\n".encode())
    skips = SkipLog()
    with caplog.at_level(logging.WARNING, logger="ymir_runner.dataset"):
        dataset = reader(str(mixed), annotated=False, skips=skips)
        assert [item.image for item in dataset] == images[:2]
    assert skips.counts == {"undecodable index line": 1} and len(dataset) == 3
    assert any(f"{mixed}:2" in record.getMessage() for record in caplog.records)


def test_an_image_listed_twice_is_used_once_and_counted(tmp_path):
    image = write_png(str(tmp_path / "a.png"), 8, 8)
    other = write_png(str(tmp_path / "b.png"), 8, 8)
    skips = SkipLog()
    dataset = reader(index(tmp_path, [image, other, image], "candidate-index.tsv"), annotated=False, skips=skips)
    assert [item.image for item in dataset] == [image, other] and dataset.paths() == [image, other]
    assert skips.counts == {"duplicate image": 1}


def png_rows(path, rows, width, *, ending=True):
    """An 8-bit RGB PNG from raw scanlines (each: a filter byte, then the pixels), CRCs valid."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, len(rows), 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
    path.write_bytes(data + (chunk(b"IEND", b"") if ending else b""))
    return str(path)


def test_image_data_that_breaks_off_is_counted_where_it_is_found(tmp_path):
    rows = [b"\0" + bytes([100]) * 96] * 24
    # A bad filter byte inside a file that ends properly: only decoding finds it; the rest decodes black.
    broken = png_rows(tmp_path / "filter.png", rows[:10] + [b"\x09" + rows[10][1:]] + rows[11:], 32)
    assert probe_image(broken).damage == ""
    decoded = decode_image(broken)
    assert decoded.damage == "corrupt image data" and decoded.image.size == (32, 24)
    assert np.asarray(decoded.image)[:10].min() == 100
    # An interrupted, pre-allocated download: the second half is zeros. Its ending gives it away.
    good = open(png_rows(tmp_path / "good.png", rows, 32), "rb").read()
    zeros = tmp_path / "zeros.png"
    zeros.write_bytes(good[: len(good) // 2] + bytes(len(good) - len(good) // 2))
    assert probe_image(str(zeros)).damage == "corrupt image data"
    skips = SkipLog()
    assert len(list(reader(index(tmp_path, [broken, str(zeros)]), annotated=False, skips=skips))) == 2
    assert skips.repairs == {"corrupt image data": 1}  # the bad filter byte is only found by decoding


def test_float_images_are_clipped_to_8_bit(tmp_path):
    path = str(tmp_path / "f.tif")
    Image.fromarray(np.array([[-5.0, 100.4, 300.0]], np.float32)).save(path)
    assert np.asarray(decode_image(path).image)[0, :, 0].tolist() == [0, 100, 255]


# --- the dataset report ----------------------------------------------------------------------------------------

def test_inspect_reports_what_the_readers_saw_with_actionable_warnings(tmp_path, capsys, monkeypatch):
    import toy_plugin

    from ymir_runner import plugins
    from ymir_runner.cli import main
    from ymir_runner.testing import plugin_registry

    monkeypatch.setattr(plugins, "build_plugin_manager", lambda: plugin_registry({"toy": toy_plugin}))
    # Training: images 0 (cat) and 1 (dog); validation: 2 (bird), 3 (cat), and image 0 again (the same asset).
    tree = TaskTree(str(tmp_path), class_names=("cat", "dog", "bird"), images=4)
    with open(tree.local("/in/val-index.tsv"), "a") as stream:
        stream.write(f"{tree.images[0]}\t{tree.annotations[0]}\n")
    assert main(["inspect", "--env", tree.env_file, "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "training: 2 usable images of 2 index lines" in out
    assert "validation: 3 usable images of 3 index lines" in out
    assert "boxes per class (training / validation): cat 1 / 2, dog 1 / 0, bird 0 / 1" in out
    assert "1 image is in both the training and the validation set" in out
    assert "classes with no training box: bird: the model cannot learn them" in out
    assert "classes with no validation box: dog" in out

    found = inspect_env(tree.env_file, str(tmp_path))
    assert not found.errors
    assert [split.lines for split in found.report.splits] == [2, 3]


def validation_warnings(tmp_path, validation_line):
    """The report's warnings for a one-image training set with boxes and a validation index of one line."""
    image = write_png(str(tmp_path / "a.png"), 20, 20)
    (tmp_path / "empty.txt").write_text("")
    boxes = tmp_path / "boxes.txt"
    boxes.write_text("0, 1, 1, 5, 5\n1, 1, 1, 5, 5\n")
    skips = SkipLog()
    annotations = AnnotationReader(CLASSES, "det-ark", skips)
    training = DatasetReader(index(tmp_path, [f"{image}\t{boxes}"]), annotations=annotations, skips=skips,
                             name="training")
    validation = DatasetReader(index(tmp_path, [validation_line.format(tmp=tmp_path)], "val-index.tsv"),
                               annotations=annotations, skips=skips, name="validation")
    return report_readers([training, validation], CLASSES).warnings()


def test_a_validation_set_without_usable_images_is_not_called_box_less(tmp_path):
    warnings = validation_warnings(tmp_path, "{tmp}/gone.png\t{tmp}/boxes.txt")
    assert any(warning.startswith("the validation set has no usable image (1 index lines") for warning in warnings)
    assert not any("no box at all" in warning for warning in warnings)


def test_a_validation_set_without_boxes_is_called_meaningless(tmp_path):
    warnings = validation_warnings(tmp_path, "{tmp}/a.png\t{tmp}/empty.txt")
    assert any(warning.startswith("the validation set has no box at all") for warning in warnings), warnings
