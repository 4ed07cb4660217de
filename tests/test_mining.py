"""ymir_runner.mining against hand-computed values on tiny constructed inputs (docs/mining.md)."""

import math
import os

import numpy as np
import pytest

import ymir_runner
from ymir_runner import ConfigError, ExecutorSpec, Param, TaskKind, mining
from ymir_runner.mining import Prediction


def prediction(boxes, scores, classes=None, probabilities=None):
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    classes = np.zeros(len(boxes), np.int64) if classes is None else classes
    return Prediction(boxes, np.asarray(scores, np.float64), classes, probabilities)


def test_binary_entropy_values():
    values = mining.binary_entropy(np.array([0.5, 0.0, 1.0, 0.1]))
    assert values[0] == pytest.approx(math.log(2))
    assert values[1] == pytest.approx(0.0, abs=1e-4) and values[2] == pytest.approx(0.0, abs=1e-4)
    assert values[3] == pytest.approx(-(0.1 * math.log(0.1) + 0.9 * math.log(0.9)))


def test_class_weights_are_padded_and_validated():
    assert mining.class_weights("2, 0.5", 3).tolist() == [2.0, 0.5, 1.0]
    assert mining.class_weights("", 2).tolist() == [1.0, 1.0]
    with pytest.raises(ConfigError, match="class_distribution_scores"):
        mining.class_weights("a,b", 2)
    with pytest.raises(ConfigError, match="at most 2"):
        mining.class_weights("1,1,1", 2)
    with pytest.raises(ConfigError, match="non-negative"):
        mining.class_weights("-1", 2)


def test_random_is_seeded_and_independent_of_order_and_sharding():
    images = [f"/in/{i}.jpg" for i in range(6)]
    scores = mining.random_scores(images, 3)
    assert scores == mining.random_scores(images, 3)
    assert scores != mining.random_scores(images, 4)
    assert all(0.0 <= s < 1.0 for s in scores) and len(set(scores)) == 6
    # rank 1 of 2 scores images 1, 3, 5 alone: the same numbers
    assert mining.random_scores(images[1::2], 3) == scores[1::2]


def test_prediction_checks_shapes():
    with pytest.raises(ValueError, match="2 boxes, 1 scores"):
        Prediction(np.zeros((2, 4)), np.zeros(1), np.zeros(2))
    with pytest.raises(ValueError, match="class_probabilities"):
        Prediction(np.zeros((2, 4)), np.zeros(2), np.zeros(2), np.zeros((3, 2)))
    assert len(Prediction([], [], [])) == 0


def test_entropy_is_the_mean_over_hypotheses_and_ignores_object_count():
    one = prediction([[0, 0, 4, 4]], [0.5])
    assert mining.entropy_score(one) == pytest.approx(math.log(2))
    many = prediction([[0, 0, 4, 4]] * 3, [0.5, 0.5, 0.5], np.array([0, 0, 1]))
    assert mining.entropy_score(many) == pytest.approx(mining.entropy_score(one))  # scale-stable
    assert mining.entropy_score(prediction([[0, 0, 4, 4]], [0.99])) < mining.entropy_score(one)
    assert mining.entropy_score(prediction([], [])) == 0.0  # no hypothesis at all
    assert mining.entropy_score(prediction([[0, 0, 4, 4]], [0.01])) == 0.0  # below MIN_SCORE
    assert mining.entropy_score(one, np.array([3.0, 1.0])) == pytest.approx(3 * math.log(2))
    # mixed: (H(0.5) + H(0.1)) / 2, a box below 0.05 ignored
    mixed = prediction([[0, 0, 4, 4]] * 3, [0.5, 0.1, 0.01])
    h = -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))
    assert mining.entropy_score(mixed) == pytest.approx((math.log(2) + h) / 2)


def test_aldd_constant_maps_give_zero():
    maps = [np.full((2, 16, 16), 0.3), np.full((2, 16, 16), 0.3)]
    assert mining.aldd_score(maps) == pytest.approx(0.0, abs=1e-9)


def test_aldd_hand_computed_checkerboard():
    # One class, one 3x3 map alternating 0/1; window 3. Every cell's own entropy is ~0, so U = H(window mean).
    # Centre: mean 5/9; a corner sees 2x2 cells (padding not counted) with mean 1/2, an edge 2x3 with mean 1/2:
    # U' = max = H(1/2) = ln 2 (the one 32x32 block covers the map), so s_c = ln 2.
    p = np.array([[[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 1.0]]])
    assert mining.aldd_score([p], np.ones(1), window=3) == pytest.approx(math.log(2), rel=1e-3)
    assert mining.aldd_score([p], np.array([2.0]), window=3) == pytest.approx(2 * math.log(2), rel=1e-3)


def test_aldd_two_maps_that_disagree_score_where_they_disagree():
    # K = 2 maps of one class, equal except one cell: 0 in one map, 1 in the other. With window 1,
    # U = sum_k H(p_k) - sum_k H(p_k) = 0 everywhere; with window 3 the cell's neighbourhood mean differs.
    a, b = np.full((1, 8, 8), 0.2), np.full((1, 8, 8), 0.2)
    a[0, 4, 4], b[0, 4, 4] = 0.0, 1.0
    assert mining.aldd_score([a, b], window=1) == pytest.approx(0.0, abs=1e-6)
    mean_a, mean_b = (8 * 0.2 + 0.0) / 9, (8 * 0.2 + 1.0) / 9
    h = mining.binary_entropy
    expected = h(mean_a) + h(mean_b) - 2 * (8 * h(0.2) + h(0.0)) / 9  # at the centre cell: its block's max
    assert mining.aldd_score([a, b], window=3, cell=8) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match="one \\[C,h,w\\] shape"):
        mining.aldd_score([a, np.zeros((1, 4, 4))])


def test_aldd_partial_border_blocks_count_in_the_mean():
    # 40 x 40 with 32 x 32 blocks: 2 x 2 blocks, three of them partial; disagreement only in the last one.
    a, b = np.full((1, 40, 40), 0.5), np.full((1, 40, 40), 0.5)
    a[0, 36:, 36:], b[0, 36:, 36:] = 0.0, 1.0
    # The 8 x 8 corner alone has the same disagreement (it lies away from the cut): its max counts 1/4.
    corner = mining.aldd_score([a[:, 32:, 32:], b[:, 32:, 32:]], window=3, cell=32)
    assert corner > 0
    assert mining.aldd_score([a, b], window=3, cell=32) == pytest.approx(corner / 4, rel=1e-9)


def test_cald_identical_predictions_are_the_most_consistent():
    boxes = np.array([[10, 10, 50, 50], [60, 60, 90, 90]], np.float64)
    reference = prediction(boxes, [0.9, 0.8])
    same = mining.cald_consistency(reference, [(boxes, reference), (boxes, reference)])
    # IoU 1, JS 0: c_j = 1 + s_j; the image's consistency is the min: 1 + 0.8
    assert same == pytest.approx(1.8)
    moved = mining.cald_consistency(reference, [(boxes, prediction(boxes + 8, [0.45, 0.4])), (boxes, reference)])
    vanished = mining.cald_consistency(reference, [(boxes, prediction([], [])), (boxes, reference)])
    assert vanished < moved < same
    assert vanished == pytest.approx((0.0 + 1.8) / 2)
    assert mining.cald_score(same) < mining.cald_score(moved) < mining.cald_score(vanished)


def test_cald_hand_computed_single_box():
    reference = prediction([[0, 0, 10, 10]], [0.8])
    shifted = prediction([[5, 0, 15, 10]], [0.4])  # IoU 50 / 150 = 1/3
    p, q = np.array([0.8, 0.2]), np.array([0.4, 0.6])
    m = (p + q) / 2
    js = ((p * np.log(p / m)).sum() + (q * np.log(q / m)).sum()) / 2 / math.log(2)
    expected = 1 / 3 + (0.8 + 0.4) / 2 * (1 - js)
    assert mining.cald_consistency(reference, [(reference.boxes, shifted)]) == pytest.approx(expected)


def test_cald_uses_class_probabilities_when_given():
    boxes = [[0, 0, 10, 10]]
    agree = prediction(boxes, [0.9], probabilities=np.array([[0.7, 0.3]]))
    disagree = prediction(boxes, [0.9], probabilities=np.array([[0.3, 0.7]]))
    same = mining.cald_consistency(agree, [(agree.boxes, agree)])
    assert same == pytest.approx(1 + 0.9)
    assert mining.cald_consistency(agree, [(agree.boxes, disagree)]) < same


def test_cald_does_not_grow_with_the_number_of_boxes():
    one = prediction([[10, 10, 50, 50]], [0.9])
    three = prediction([[10, 10, 50, 50], [60, 60, 90, 90], [5, 60, 30, 95]], [0.9] * 3)
    c1 = mining.cald_consistency(one, [(one.boxes, one)])
    c3 = mining.cald_consistency(three, [(three.boxes, three)])
    assert c1 == pytest.approx(c3)


def test_cald_image_without_reference_box_ranks_first():
    assert mining.cald_score(None) == mining.CALD_MAX_CONSISTENCY
    assert mining.cald_score(None) > mining.cald_score(0.5)
    with pytest.raises(ValueError, match="reference box"):
        mining.cald_consistency(prediction([], []), [])


def test_cald_augmentations_move_boxes_with_the_image():
    image = np.zeros((40, 60, 3), np.uint8)
    image[10:20, 5:15] = 255  # a white square at x 5..15, y 10..20
    box = np.array([[5, 10, 15, 20]])
    rng = np.random.default_rng(0)
    flipped, transform = mining.horizontal_flip(image, rng)
    assert transform(box).tolist() == [[45, 10, 55, 20]] and flipped[10:20, 45:55].min() == 255
    scaled, transform = mining.rescale(0.5)(image, rng)
    assert scaled.shape == image.shape and transform(box).tolist() == [[2.5, 5, 7.5, 10]]
    assert scaled[6:9, 3:7].min() > 200 and scaled[25:, 35:].tolist() == np.full((15, 25, 3), 114).tolist()
    cut, transform = mining.cutout(count=1, fraction=0.5)(np.zeros((40, 60, 3), np.uint8), rng)
    assert (cut == 114).all(-1).sum() == 20 * 20 and transform(box).tolist() == box.tolist()


class StableModel:
    """Finds the white square of each image wherever it is: identical answers under every augmentation."""

    def __call__(self, images):
        result = []
        for image in images:
            ys, xs = np.nonzero(image[..., 0] > 127)
            if len(xs) == 0:
                result.append(prediction([], []))
            else:
                result.append(prediction([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], [0.9]))
        return result


class FragileModel(StableModel):
    """Finds the square only in images whose top-left pixel is black (the plain and rescaled ones, not the
    mirror of an image with a marked pixel at the top right)."""

    def __call__(self, images):
        found = super().__call__(images)
        return [p if image[0, 0, 0] == 0 else prediction([], []) for p, image in zip(found, images)]


def test_cald_ranks_a_model_that_changes_its_answer_above_a_stable_one():
    image = np.zeros((64, 64, 3), np.uint8)
    image[20:40, 20:40] = 255
    image[0, -1] = 1  # a mark that the flip moves to the top-left corner
    stable = mining.cald_scores([image], StableModel(), augmentations=(mining.horizontal_flip, mining.rescale()))
    fragile = mining.cald_scores([image], FragileModel(), augmentations=(mining.horizontal_flip, mining.rescale()))
    assert fragile[0] > stable[0]
    assert stable[0] == pytest.approx(2 - 1.9, abs=0.05)  # IoU ~1 and JS 0 under both: c = 1 + 0.9
    assert mining.cald_scores([np.zeros((64, 64, 3), np.uint8)], StableModel()) == [2.0]  # nothing found: first


def test_cald_cutouts_are_seeded_per_image_not_per_batch():
    images = [np.full((32, 32, 3), value, np.uint8) for value in (10, 20, 30)]
    model = StableModel()
    together = mining.cald_scores(images, model, seed=1)
    alone = [mining.cald_scores([image], model, seed=1)[0] for image in images]
    assert together == alone


def spec(**kwargs):
    return ExecutorSpec(name="x", tasks={TaskKind.MINING, TaskKind.INFER}, **kwargs)


def test_executor_spec_adds_the_mining_keys_to_its_template():
    declared = spec(mining_algorithms=("entropy", "random"))
    assert declared.defaults(TaskKind.MINING) == {"mining_algorithm": "entropy", "class_distribution_scores": "",
                                                   "seed": 0}
    assert dict((p.name, p.choices) for p in declared.template(TaskKind.MINING))["mining_algorithm"] == (
        "entropy", "random")
    assert declared.template(TaskKind.INFER) == ()
    own_seed = spec(mining_algorithms=("cald",), templates={TaskKind.MINING: (Param("seed", 7),)})
    assert own_seed.defaults(TaskKind.MINING)["seed"] == 7
    assert spec().template(TaskKind.MINING) == ()
    with pytest.raises(ValueError, match="mining_algorithms"):
        spec(mining_algorithms=("coreset",))
    with pytest.raises(ValueError, match="does not handle mining"):
        ExecutorSpec(name="x", tasks={TaskKind.INFER}, mining_algorithms=("random",))


class Context:
    def __init__(self, hyper, algorithms=("aldd", "entropy")):
        from easydict import EasyDict

        self.hyper = EasyDict(hyper)
        self.executor = spec(mining_algorithms=algorithms)
        self.class_names = ("a", "b")
        self.config = EasyDict(object_type=2)


def test_settings_from_context_name_the_bad_key():
    settings = mining.MiningSettings.from_context(Context({"mining_algorithm": "entropy",
                                                            "class_distribution_scores": "2", "seed": 3}))
    assert (settings.algorithm, settings.weights.tolist(), settings.seed) == ("entropy", [2.0, 1.0], 3)
    with pytest.raises(ConfigError, match="'mining_algorithm': 'cald' is not one of aldd, entropy"):
        mining.MiningSettings.from_context(Context({"mining_algorithm": "cald"}))
    with pytest.raises(ConfigError, match="'seed'"):
        mining.MiningSettings.from_context(Context({"seed": "x"}))
    with pytest.raises(ValueError, match="needs probability_maps"):
        mining.MiningSettings("aldd", np.ones(2)).score([np.zeros((4, 4, 3), np.uint8)], predict=StableModel())


class MiningPlugin:
    """Mines with the library around a predict function that sees the pixels: brighter images are surer."""

    @staticmethod
    @ymir_runner.hookimpl
    def ymir_runner_register_executors():
        return [ExecutorSpec(name="brightness", tasks={TaskKind.MINING}, mining_algorithms=("entropy", "random"))]

    @staticmethod
    @ymir_runner.hookimpl
    def ymir_runner_mine(context):
        def predict(images):
            return [prediction([[0, 0, 4, 4]], [min(0.5 + image.mean() / 510, 1.0)]) for image in images]

        mining.mine_candidates(context, predict=predict, batch_size=3)


@pytest.mark.parametrize("algorithm", ["entropy", "random"])
def test_mine_candidates_ranks_an_unreadable_candidate_last_and_names_it(ymir_registry, ymir_task, algorithm):
    ymir_registry.register(MiningPlugin, "brightness")
    tree = ymir_task(kinds=("mining",), images=5, config={"mining_algorithm": algorithm})
    broken = tree.local(tree.images[2])
    with open(broken, "r+b") as stream:
        stream.write(b"not an image at all")
    outcome = tree.run(ymir_registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.verify().ok, outcome.verify().to_text()
    ranked = outcome.result_tsv()
    assert len(ranked) == 5 and ranked[-1][0].endswith(os.path.basename(broken))
    assert ranked[-1][1] < min(score for _, score in ranked[:-1])
    assert "unreadable image" in outcome.stderr and os.path.basename(broken) in outcome.stderr
    assert f"mining ({algorithm}): scored 4 images, 1 unusable ranked last" in outcome.stderr


class PreprocessingPlugin:
    """Mines images its preprocess pads to 64 x 64 (a letterbox, as a detector's input); ``preprocess`` and
    ``workers`` come from the test."""

    def __init__(self, preprocess, workers):
        self.preprocess, self.workers, self.shapes = preprocess, workers, []

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ExecutorSpec(name="padded", tasks={TaskKind.MINING}, mining_algorithms=("entropy",))]

    @ymir_runner.hookimpl
    def ymir_runner_mine(self, context):
        def predict(images):
            self.shapes += [image.shape for image in images]
            return [prediction([[0, 0, 4, 4]], [min(0.5 + image[:24].mean() / 510, 1.0)]) for image in images]

        mining.mine_candidates(context, predict=predict, preprocess=self.preprocess, batch_size=2,
                               workers=self.workers, min_side=32)


def pad_to_64(decoded):
    canvas = np.full((64, 64, 3), 114, np.uint8)
    pixels = decoded.pixels
    canvas[:pixels.shape[0], :pixels.shape[1]] = pixels
    return canvas


@pytest.mark.parametrize("workers", [0, 3])
def test_mine_candidates_scores_what_preprocess_makes_of_each_decoded_image(ymir_registry, ymir_task, workers):
    plugin = PreprocessingPlugin(pad_to_64, workers)
    ymir_registry.register(plugin, "padded")
    tree = ymir_task(kinds=("mining",), images=5, size=(64, 48))
    outcome = tree.run(ymir_registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert plugin.shapes == [(64, 64, 3)] * 5  # decoded at 32 x 24 (min_side 32), then padded
    assert len(outcome.result_tsv()) == 5
    assert "mining (entropy): scored 5 images, 0 unusable ranked last" in outcome.stderr
    assert ("decoded on 3 threads ahead of the model" if workers else "decoded on the model's thread") in outcome.stderr


def test_mine_candidates_refuses_a_preprocess_that_is_not_an_rgb_uint8_image(ymir_registry, ymir_task):
    ymir_registry.register(PreprocessingPlugin(lambda decoded: decoded.pixels.astype(np.float32), 2), "padded")
    outcome = ymir_task(kinds=("mining",), images=2).run(ymir_registry)
    assert outcome.exit_code != 0
    assert "preprocess returned a float32 array of shape [24, 32, 3]" in outcome.last_stderr_line
    assert "the mining scores need an [H,W,3] uint8 RGB array" in outcome.last_stderr_line
