"""Mining scores against hand-computed values on tiny constructed inputs (../shared/mining.md)."""

import math

import numpy as np
import pytest
import torch

from ymir_runner import ConfigError
from ymir_runner_detection import mining


def test_binary_entropy_values():
    values = mining.binary_entropy(torch.tensor([0.5, 0.0, 1.0, 0.1]))
    assert values[0].item() == pytest.approx(math.log(2))
    assert values[1].item() == pytest.approx(0.0, abs=1e-4) and values[2].item() == pytest.approx(0.0, abs=1e-4)
    assert values[3].item() == pytest.approx(-(0.1 * math.log(0.1) + 0.9 * math.log(0.9)))


def test_class_weights_are_padded_and_validated():
    assert mining.class_weights("2, 0.5", 3).tolist() == [2.0, 0.5, 1.0]
    assert mining.class_weights("", 2).tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match="class_distribution_scores"):
        mining.class_weights("a,b", 2)
    with pytest.raises(ConfigError, match="at most 2"):
        mining.class_weights("1,1,1", 2)


def test_random_is_seeded():
    images = [f"/in/{i}.jpg" for i in range(5)]
    assert mining.random_scores(images, 3) == mining.random_scores(images, 3)
    assert mining.random_scores(images, 3) != mining.random_scores(images, 4)


def test_entropy_is_the_mean_over_peaks_and_ignores_object_count():
    one = torch.zeros(2, 8, 8)
    one[0, 2, 2] = 0.5
    assert mining.entropy_score(one) == pytest.approx(math.log(2), rel=1e-4)
    many = torch.zeros(2, 8, 8)
    many[0, 1, 1] = many[0, 5, 5] = many[1, 3, 6] = 0.5
    assert mining.entropy_score(many) == pytest.approx(mining.entropy_score(one), rel=1e-4)  # scale-stable
    confident = torch.zeros(2, 8, 8)
    confident[0, 2, 2] = 0.99
    assert mining.entropy_score(confident) < mining.entropy_score(one)
    assert mining.entropy_score(torch.zeros(2, 8, 8)) == 0.0  # no hypothesis at all
    weighted = mining.entropy_score(one, weights=torch.tensor([3.0, 1.0]))
    assert weighted == pytest.approx(3 * math.log(2), rel=1e-4)


def test_aldd_constant_maps_give_zero():
    maps = [torch.full((2, 16, 16), 0.3), torch.full((2, 16, 16), 0.3)]
    assert mining.aldd_score(maps, torch.ones(2)) == pytest.approx(0.0, abs=1e-6)


def test_aldd_hand_computed_checkerboard():
    # One class, one 3x3 map alternating 0/1; window 3 covers the whole map from the centre cell.
    p = torch.tensor([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]])
    score = mining.aldd_score([p], torch.ones(1), window=3, cell=32)
    # Every cell's own entropy is ~0, so U = H(window mean). Centre: mean 5/9; a corner sees 2x2 cells
    # (padding not counted) with mean 1/2, an edge 2x3 with mean 1/2: U' = max = H(1/2) = ln 2, the one
    # 32x32 cell covers the map, so s_c = ln 2.
    expected = math.log(2)
    assert score == pytest.approx(expected, rel=1e-3)
    assert mining.aldd_score([p], torch.tensor([2.0]), window=3) == pytest.approx(2 * expected, rel=1e-3)


def test_cald_identical_predictions_are_the_most_consistent():
    boxes = np.array([[10, 10, 50, 50], [60, 60, 90, 90]], np.float32)
    scores = np.array([0.9, 0.8])
    same = mining.cald_consistency([boxes, boxes], scores, [(boxes, scores), (boxes, scores)])
    # IoU 1, JS 0: c_j = 1 + s_j; the image's consistency is the min: 1 + 0.8
    assert same == pytest.approx(1.8)
    moved = boxes + np.array([8, 8, 8, 8], np.float32)
    moved_score = mining.cald_consistency([boxes, boxes], scores, [(moved, scores * 0.5), (boxes, scores)])
    vanished = mining.cald_consistency([boxes, boxes], scores, [(np.zeros((0, 4)), np.zeros(0)), (boxes, scores)])
    assert vanished < moved_score < same
    assert mining.cald_score(same) < mining.cald_score(moved_score) < mining.cald_score(vanished)


def test_cald_does_not_grow_with_the_number_of_boxes():
    one = np.array([[10, 10, 50, 50]], np.float32)
    three = np.array([[10, 10, 50, 50], [60, 60, 90, 90], [5, 60, 30, 95]], np.float32)
    c1 = mining.cald_consistency([one], np.array([0.9]), [(one, np.array([0.9]))])
    c3 = mining.cald_consistency([three], np.array([0.9] * 3), [(three, np.array([0.9] * 3))])
    assert c1 == pytest.approx(c3)


def test_cald_image_without_reference_box_ranks_first():
    assert mining.cald_score(None) == mining.CALD_MAX_CONSISTENCY
    assert mining.cald_score(None) > mining.cald_score(0.5)
