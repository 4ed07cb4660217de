"""Mining for segmentation (docs/mining.md, numbered 5-7): type 4 scores instance boxes as detection does, type 3
scores softmax maps by pixel entropy and ALDD, scale-stable; orientation higher = more worth labelling."""

import math

import numpy as np
import pytest
from PIL import Image

import ymir_runner
from ymir_runner import ConfigError, ExecutorSpec, TaskKind, mining


def softmax(logits):
    e = np.exp(logits - logits.max(0))
    return e / e.sum(0)


def two_class_map(p0):
    """A 2-class softmax map whose class-0 probability is ``p0 [h,w]``."""
    p0 = np.asarray(p0, np.float64)
    return np.stack([p0, 1.0 - p0])


def smooth_scene(height=48, width=64, classes=3, seed=0):
    """Softmax maps of a plausible scene: smooth blobs of classes, sharp inside, uncertain at the borders."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width] / max(height, width)
    logits = np.stack([sum(rng.normal() * np.cos(rng.uniform(1, 6) * xx + rng.uniform(0, 6))
                           * np.cos(rng.uniform(1, 6) * yy + rng.uniform(0, 6)) for _ in range(3)) * 6
                       for _ in range(classes)])
    return softmax(logits)


def nearest(p, factor):
    return p.repeat(factor, 1).repeat(factor, 2)


def bilinear(p, height, width):
    return np.stack([np.asarray(Image.fromarray(channel.astype(np.float32)).resize((width, height),
                                                                               Image.Resampling.BILINEAR))
                     for channel in p]).astype(np.float64)


# --- type 4: instance boxes ------------------------------------------------------------------------------

def test_instance_prediction_boxes_are_the_masks_tight_bounds():
    masks = np.zeros((3, 20, 30), bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 10, 29] = True
    prediction = mining.instance_prediction(iter(masks), [0.9, 0.5, 0.2], [1, 0, 1], [[0.1, 0.9], [0.5, 0.5],
                                                                                      [0.8, 0.2]])
    assert prediction.boxes.tolist() == [[3, 2, 9, 5], [29, 10, 30, 11], [0, 0, 0, 0]]
    assert prediction.classes.tolist() == [1, 0, 1] and prediction.class_probabilities.shape == (3, 2)
    assert len(mining.instance_prediction([], [], [])) == 0
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        mining.instance_prediction(masks[:2], [0.5], [0, 0])


def test_instance_scores_are_the_box_scores_of_the_instances():
    masks = np.zeros((2, 32, 32), bool)
    masks[0, 4:12, 4:12] = True
    masks[1, 20:30, 16:28] = True
    unsure = mining.instance_prediction(masks, [0.5, 0.6], [0, 1])
    sure = mining.instance_prediction(masks, [0.99, 0.97], [0, 1])
    assert mining.entropy_score(unsure) > mining.entropy_score(sure)
    h = mining.binary_entropy(np.array([0.5, 0.6]))
    assert mining.entropy_score(unsure) == pytest.approx(h.mean())
    # CALD on instance boxes: the same answer under a flip is consistent; a lost instance is not
    flipped = mining.instance_prediction(masks[:, :, ::-1], [0.5, 0.6], [0, 1])
    boxes = mining.horizontal_flip(np.zeros((32, 32, 3), np.uint8), None)[1](unsure.boxes)
    consistent = mining.cald_consistency(unsure, [(boxes, flipped)])
    assert consistent == pytest.approx(1 + 0.5)  # IoU 1, JS 0, the worse instance's mean score 0.5
    lost = mining.instance_prediction(masks[:1, :, ::-1], [0.5], [0])
    assert mining.cald_consistency(unsure, [(boxes, lost)]) < consistent


# --- type 3: softmax maps ----------------------------------------------------------------------------------

def test_pixel_entropy_hand_computed():
    uniform = np.full((4, 2, 3), 0.25)
    assert mining.pixel_entropy(uniform) == pytest.approx(np.full((2, 3), math.log(4)))
    assert mining.pixel_entropy(two_class_map(np.ones((2, 2)))).max() < 1e-4


def test_semantic_entropy_is_the_mean_over_pixels():
    half = np.zeros((2, 4, 6))
    half[:, :, :3] = 0.5  # left half unsure between the two classes
    half[0, :, 3:] = 1.0  # right half sure of class 0
    assert mining.semantic_entropy_score(half) == pytest.approx(math.log(2) / 2, abs=1e-4)
    # K maps: the entropy of their mean (two sure maps that disagree are an unsure prediction)
    assert mining.semantic_entropy_score([two_class_map(np.ones((3, 3))), two_class_map(np.zeros((3, 3)))]) == (
        pytest.approx(math.log(2)))
    # weights: w of each pixel's most probable class
    p = two_class_map(np.full((3, 3), 0.75))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert mining.semantic_entropy_score(p, np.array([3.0, 1.0])) == pytest.approx(3 * h)
    assert mining.semantic_entropy_score(two_class_map(np.full((3, 3), 0.25)), np.array([3.0, 1.0])) == (
        pytest.approx(h))


def test_semantic_scores_rank_the_unsure_image_first():
    sure = softmax(np.stack([np.full((32, 32), 5.0), np.zeros((32, 32)), np.zeros((32, 32))]))
    unsure = softmax(np.stack([np.full((32, 32), 0.5), np.zeros((32, 32)), np.zeros((32, 32))]))
    assert mining.semantic_entropy_score(unsure) > mining.semantic_entropy_score(sure)
    # ALDD: two views that agree everywhere give ~0; views that disagree on a region score it
    assert mining.semantic_aldd_score([sure, sure]) == pytest.approx(0.0, abs=1e-3)
    assert mining.semantic_aldd_score([unsure, unsure]) == pytest.approx(0.0, abs=1e-9)  # unsure but consistent
    other = sure.copy()
    other[:, 8:20, 8:20] = np.roll(sure, 1, axis=0)[:, 8:20, 8:20]  # the second view sees class 2 there
    assert mining.semantic_aldd_score([sure, other]) > 0.1
    # a map whose class flips from pixel to pixel (salt and pepper) scores above a smooth one
    noisy = sure.copy()
    noisy[:, ::2, ::2] = np.roll(sure, 1, axis=0)[:, ::2, ::2]
    assert mining.semantic_aldd_score([noisy]) > mining.semantic_aldd_score([sure]) + 0.1


def test_semantic_aldd_hand_computed_total_disagreement():
    # two sure views of opposite classes everywhere: every neighbourhood's mean is (1/2, 1/2), entropy ln 2,
    # each view's own entropy 0, so U = ln 2 in every cell and the score is ln 2
    ones, zeros = two_class_map(np.ones((20, 30))), two_class_map(np.zeros((20, 30)))
    assert mining.semantic_aldd_score([ones, zeros]) == pytest.approx(math.log(2), abs=1e-3)
    assert mining.semantic_aldd_score([ones, zeros], np.array([2.0, 2.0])) == pytest.approx(2 * math.log(2),
                                                                                          abs=2e-3)
    assert mining.semantic_aldd_score([ones, ones]) == pytest.approx(0.0, abs=1e-3)


def test_semantic_aldd_weights_scale_by_the_class_where_views_disagree():
    ones, zeros = two_class_map(np.ones((16, 16))), two_class_map(np.zeros((16, 16)))
    mostly_zero = (ones + 3 * zeros) / 4  # class 1 most probable everywhere
    base = mining.semantic_aldd_score([ones, zeros, zeros, zeros])
    assert base > 0.1
    assert mining.semantic_aldd_score([ones, zeros, zeros, zeros], np.array([1.0, 3.0])) == pytest.approx(3 * base)
    assert mining.semantic_aldd_score([ones, zeros, zeros, zeros], np.array([3.0, 1.0])) == pytest.approx(base)
    assert mining.semantic_entropy_score([mostly_zero], np.array([1.0, 2.0])) == pytest.approx(
        2 * mining.semantic_entropy_score([mostly_zero]))


@pytest.mark.parametrize("factor", [2, 3, 5])
@pytest.mark.parametrize("dtype, rounding", [(np.float64, 1e-9), (np.float32, 1e-5)])
def test_semantic_scores_do_not_change_with_the_resolution(factor, dtype, rounding):
    views = [p.astype(dtype) for p in (smooth_scene(seed=1), 0.7 * smooth_scene(seed=1) + 0.3 * smooth_scene(seed=2))]
    weights = np.array([1.0, 2.0, 0.5])
    larger = [nearest(p, factor) for p in views]
    assert mining.semantic_entropy_score(larger, weights) == pytest.approx(
        mining.semantic_entropy_score(views, weights), rel=rounding)
    assert mining.semantic_aldd_score(larger, weights) == pytest.approx(
        mining.semantic_aldd_score(views, weights), rel=rounding)
    assert mining.semantic_aldd_score(views, weights) > 0.05  # not a vacuous equality
    # float32 maps are scored in float32: the same figures as float64 to its rounding
    assert mining.semantic_aldd_score(views, weights) == pytest.approx(
        mining.semantic_aldd_score([p.astype(np.float64) for p in views], weights), rel=1e-4)


def test_semantic_scores_are_stable_under_smooth_resizing_and_keep_the_ranking():
    scenes = [smooth_scene(seed=seed) for seed in range(6)]
    views = [[p, 0.8 * p + 0.2 * smooth_scene(seed=seed + 10)] for seed, p in enumerate(scenes)]
    for score in (mining.semantic_entropy_score, mining.semantic_aldd_score):
        small = [score(pair) for pair in views]
        large = [score([bilinear(p, 144, 192) for p in pair]) for pair in views]  # 3x, bilinear
        assert np.allclose(large, small, rtol=0.1), (score.__name__, small, large)
        assert np.argsort(large).tolist() == np.argsort(small).tolist()
    # the detection ALDD counts grid cells: it is not what semantic segmentation uses
    pair = views[0]
    per_class = [np.stack([p[c] for c in range(3)]) for p in pair]
    assert mining.aldd_score([nearest(p, 4) for p in per_class]) != pytest.approx(mining.aldd_score(per_class),
                                                                                   rel=0.1)


def test_softmax_maps_are_checked():
    with pytest.raises(ValueError, match="4 channels for 2 classes"):
        mining.semantic_entropy_score(np.full((4, 4, 4), 1 / 4), np.ones(2))
    with pytest.raises(ValueError, match="sum to 1 over the classes"):
        mining.semantic_entropy_score(np.full((2, 4, 4), 0.9))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        mining.semantic_aldd_score(np.full((2, 4, 4), 2.0))
    with pytest.raises(ValueError, match="share one"):
        mining.semantic_aldd_score([np.full((2, 4, 4), 0.5), np.full((2, 4, 5), 0.5)])
    with pytest.raises(ValueError, match="non-empty"):
        mining.semantic_aldd_score([np.zeros((2, 0, 5))])
    assert mining.semantic_aldd_score([two_class_map([[1.0]]), two_class_map([[0.0]])]) == pytest.approx(
        math.log(2), abs=1e-3)  # one pixel spread over the whole grid
    assert mining.semantic_aldd_score([two_class_map(np.ones((1, 900)))]) == pytest.approx(0.0, abs=1e-3)
    with pytest.raises(ValueError, match="at least one"):
        mining.semantic_aldd_score([])
    # float16 rounding is renormalised, not refused
    p = softmax(np.random.default_rng(0).normal(size=(5, 8, 8))).astype(np.float16)
    assert mining.semantic_entropy_score(p) == pytest.approx(mining.semantic_entropy_score(p.astype(np.float64)),
                                                              rel=1e-3)


# --- settings and the whole task ---------------------------------------------------------------------------

class Context:
    def __init__(self, hyper, object_type, algorithms=("aldd", "entropy", "cald", "random")):
        from easydict import EasyDict

        self.hyper = EasyDict(hyper)
        self.executor = ExecutorSpec(name="x", tasks={TaskKind.MINING}, mining_algorithms=algorithms,
                                     object_types={object_type})
        self.class_names = ("a", "b")
        self.config = EasyDict(object_type=object_type)


def test_settings_refuse_cald_for_semantic_segmentation_only():
    with pytest.raises(ConfigError, match="'mining_algorithm': 'cald' is not one of aldd, entropy, random "
                                          r"\(a semantic segmentation task\)"):
        mining.MiningSettings.from_context(Context({"mining_algorithm": "cald"}, 3))
    assert mining.MiningSettings.from_context(Context({"mining_algorithm": "cald"}, 4)).algorithm == "cald"
    assert mining.MiningSettings.from_context(Context({}, 3, ("cald", "entropy"))).algorithm == "entropy"
    settings = mining.MiningSettings.from_context(Context({"mining_algorithm": "aldd"}, 3))
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="semantic segmentation task .* needs softmax_maps"):
        settings.score([image], probability_maps=lambda images: [[np.full((2, 4, 4), 0.5)]])
    assert settings.score([image], softmax_maps=lambda images: [np.full((2, 4, 4), 0.5)] * len(images)) == [
        pytest.approx(0.0, abs=1e-9)]


class SegMiningPlugin:
    """Mines with the library: a fake model that is surer of brighter images (type 4: its instances' scores;
    type 3: its two views disagree on a band of pixels, the wider the darker)."""

    def __init__(self, object_type):
        self.object_type = object_type

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ExecutorSpec(name="seg", tasks={TaskKind.MINING}, object_types={self.object_type},
                             mining_algorithms=("entropy", "aldd", "cald", "random"))]

    @staticmethod
    def sureness(image):
        return min(0.5 + image.mean() / 510, 0.999)

    def softmax_maps(self, images):
        maps = []
        for image in images:
            height = image.shape[0]
            p = np.full(image.shape[:2], 0.95)
            p[: height // 2] = 1.0 - p[: height // 2]  # class 1 on top, class 0 below
            other = p.copy()  # a second view (say the mirror's) that sees class 1 in a band, the wider the darker
            band = slice(height * 2 // 3, height * 2 // 3 + int(height / 3 * (1 - image.mean() / 255)))
            other[band] = 1.0 - other[band]
            maps.append([two_class_map(p), two_class_map(other)])
        return maps

    def predict(self, images):
        result = []
        for image in images:
            masks = np.zeros((1,) + image.shape[:2], bool)
            masks[0, 2:10, 3:12] = True
            result.append(mining.instance_prediction(masks, [self.sureness(image)], [1]))
        return result

    @ymir_runner.hookimpl
    def ymir_runner_mine(self, context):
        if self.object_type == 3:
            mining.mine_candidates(context, softmax_maps=self.softmax_maps, batch_size=2)
        else:
            mining.mine_candidates(context, predict=self.predict, batch_size=2)


def brighten(tree, levels):
    """Write the tree's images as flat grey pictures of ``levels`` (brighter = surer)."""
    for path, level in zip(tree.images, levels):
        Image.new("RGB", (64, 48), (level,) * 3).save(tree.local(path), "JPEG", quality=100)


@pytest.mark.parametrize("object_type, algorithm", [(3, "entropy"), (3, "aldd"), (4, "entropy"), (4, "cald"),
                                                    (3, "random")])
def test_mine_candidates_ranks_the_darkest_image_first(ymir_registry, ymir_task, object_type, algorithm):
    ymir_registry.register(SegMiningPlugin(object_type), "seg")
    tree = ymir_task(kinds=("mining",), images=4, config={"object_type": object_type, "mining_algorithm": algorithm})
    brighten(tree, [200, 20, 120, 250])
    outcome = tree.run(ymir_registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.verify().ok, outcome.verify().to_text()
    ranked = [path for path, _ in outcome.result_tsv()]
    assert sorted(ranked) == sorted(tree.images)
    if algorithm != "random":
        assert [tree.images.index(path) for path in ranked] == [1, 2, 0, 3]
    assert f"mining ({algorithm}): scored 4 images, 0 unusable ranked last" in outcome.stderr


def test_a_semantic_mining_task_refuses_cald_naming_the_key(ymir_registry, ymir_task):
    ymir_registry.register(SegMiningPlugin(3), "seg")
    outcome = ymir_task(kinds=("mining",), images=2, config={"object_type": 3, "mining_algorithm": "cald"}).run(
        ymir_registry)
    assert outcome.exit_code != 0
    assert "config key 'mining_algorithm': 'cald' is not one of entropy, aldd, random" in outcome.last_stderr_line


def test_a_background_channel_is_part_of_the_distribution_with_weight_1():
    """A model trained with unlabelled pixels as a class hands over C + 1 channels (background last): a pixel sure
    of the background is certain (entropy ~0), one split between an object and the background is not; class
    weights apply to the classes, the background weighs 1."""
    sure_background = np.zeros((3, 8, 8))
    sure_background[2] = 1.0
    split = np.zeros((3, 8, 8))
    split[0], split[2] = 0.5, 0.5
    weights = np.array([2.0, 1.0])
    for score in (mining.semantic_entropy_score, mining.semantic_aldd_score):
        assert score(sure_background, weights) == pytest.approx(0.0, abs=1e-4)
    assert mining.semantic_entropy_score(split, weights) == pytest.approx(2 * np.log(2), rel=1e-4)  # c* = class 0
    split[0], split[2] = 0.49, 0.51  # background most probable: weight 1
    entropy = -(0.49 * np.log(0.49) + 0.51 * np.log(0.51))
    assert mining.semantic_entropy_score(split, weights) == pytest.approx(entropy, rel=1e-4)
