"""The plugin API's seg-coco writer (``ymir_runner.write_seg_coco``, ``SegCocoImage``, ``seg_object``): what a
plugin's generated segmentation dataset is written with, read back by the core as the platform's own export."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ymir_runner
from ymir_runner import IGNORE_LABEL, SegCocoImage, seg_object, write_seg_coco
from ymir_runner.protocol.dataset import AnnotationReader, DatasetReader, SkipLog
from ymir_runner.testing import write_png


def test_numpy_masks_are_written_as_compressed_rle_and_read_back_in_painting_order(tmp_path):
    assert IGNORE_LABEL == 255 and {"write_seg_coco", "SegCocoImage", "seg_object"} <= set(ymir_runner.__all__)
    height, width = 12, 16
    image = tmp_path / "assets" / "0001.png"
    write_png(str(image), width, height)
    below = np.zeros((height, width), bool)
    below[2:10, 2:10] = True
    above = np.zeros((height, width), np.uint8)  # any dtype: != 0 is the mask
    above[6:12, 6:14] = 7
    objects = [seg_object(0, below, height, width), seg_object(1, above, height, width)]
    assert objects[1].bbox == (6, 6, 8, 6) and objects[1].area == 48
    annotations = tmp_path / "annotations" / "coco-annotations.json"
    annotations.parent.mkdir()
    write_seg_coco(str(annotations), [SegCocoImage(image.name, width, height, objects)], ["low", "high"])
    document = json.loads(annotations.read_text())
    assert [type(entry["segmentation"]["counts"]) for entry in document["annotations"]] == [str, str]
    index = tmp_path / "train-index.tsv"
    index.write_text(f"{image}\t{annotations}\n")
    skips = SkipLog()
    reader = AnnotationReader(["low", "high"], "seg-coco", skips, object_type=3)
    (item,) = DatasetReader(str(index), annotations=reader, skips=skips, name="training")
    expected = np.full((height, width), IGNORE_LABEL, np.uint8)
    expected[below] = 0
    expected[above != 0] = 1  # the later object paints over the earlier one
    np.testing.assert_array_equal(item.label_map(), expected)


def test_a_mask_of_another_size_is_refused():
    from ymir_runner.protocol.masks import MaskProblem

    with pytest.raises(MaskProblem, match="RLE size"):
        seg_object(0, np.ones((4, 5), bool), 4, 6)
