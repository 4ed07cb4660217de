"""ymir_runner.pictures and the two metrics it draws: evaluation.confusion_matrix and evaluation.pr_curves."""

import glob
import os

import numpy as np
import pytest
from PIL import Image

from ymir_runner import pictures
from ymir_runner.evaluation import confusion_matrix, evaluate_detections, match_counts, pr_curves
from ymir_runner.protocol.tensorboard import LazySummaryWriter

NAMES = ["cat", "dog"]


def boxes(*rows):
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def test_confusion_matrix_counts_each_kind_of_outcome():
    truth = [(boxes([0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]), np.array([0, 1, 1])),
             (boxes(), np.zeros(0, np.int64)),  # an image without objects: its prediction is a false detection
             (boxes([0, 0, 10, 10]), np.array([0]))]  # an image without predictions: a missed object
    predicted = [
        (boxes([0, 0, 10, 10],     # cat found as cat
               [1, 0, 10, 10],     # a second box on it: the object is taken (lower IoU), a false detection
               [20, 20, 30, 30],   # the first dog, called a cat
               [40, 40, 50, 50],   # on the second dog, but below the score threshold: ignored, the dog missed
               [70, 70, 90, 90]),  # nothing there: a false detection
         np.array([0.9, 0.5, 0.3, 0.29, 0.8]), np.array([0, 0, 0, 1, 1])),  # 0.3 is AT the threshold: counts
        (boxes([0, 0, 5, 5]), np.array([0.7]), np.array([1])),
        (boxes(), np.zeros(0), np.zeros(0, np.int64)),
    ]
    matrix = confusion_matrix(truth, predicted, 2, score_threshold=0.3, iou_threshold=0.5)
    # rows predicted (cat, dog, background), columns true (cat, dog, background)
    assert matrix.tolist() == [[1, 1, 1],
                               [0, 0, 2],
                               [1, 1, 0]]
    assert matrix.dtype == np.int64
    # every object is in exactly one column cell, every kept prediction in exactly one row cell
    assert matrix[:, :2].sum() == 4 and matrix[:2].sum() == 5

    shifted = [(boxes([4, 0, 14, 10]), np.array([0.9]), np.array([0]))]  # IoU 60 / 140 = 0.43 with [0, 0, 10, 10]
    one = [(boxes([0, 0, 10, 10]), np.array([0]))]
    assert confusion_matrix(one, shifted, 1, score_threshold=0.5, iou_threshold=0.4).tolist() == [[1, 0], [0, 0]]
    assert confusion_matrix(one, shifted, 1, score_threshold=0.5, iou_threshold=0.5).tolist() == [[0, 1], [1, 0]]
    with pytest.raises(ValueError, match=r"predicted class ids must be in \[0, 1\)"):
        confusion_matrix(one, [(boxes([0, 0, 1, 1]), np.array([0.9]), np.array([1]))], 1, score_threshold=0.5,
                         iou_threshold=0.5)
    with pytest.raises(ValueError, match="1 ground truths but 2 predictions"):
        confusion_matrix(one, shifted * 2, 1, score_threshold=0.5, iou_threshold=0.5)


def random_stage(seed, images=40, classes=3):
    """Ground truth and noisy predictions (boxes near objects, wrong classes, strays, tied scores)."""
    rng = np.random.default_rng(seed)
    truth, predicted = [], []
    for _ in range(images):
        count = int(rng.integers(0, 6))
        corner = rng.uniform(0, 200, (count, 2))
        gt = np.concatenate([corner, corner + rng.uniform(10, 60, (count, 2))], 1)
        truth.append((gt, rng.integers(0, classes, count)))
        found = int(rng.integers(0, 10))
        near = gt[rng.integers(0, count, found)] if count else rng.uniform(0, 200, (found, 4))
        near = near + rng.normal(0, 4, (found, 4))
        near[:, 2:] = np.maximum(near[:, 2:], near[:, :2] + 1)
        predicted.append((near, rng.uniform(0, 1, found).round(2), rng.integers(0, classes, found)))
    return truth, predicted


@pytest.mark.parametrize("seed", [0, 1])
def test_pr_curves_agree_with_match_counts_and_coco_ap(seed):
    truth, predicted = random_stage(seed)
    curves = pr_curves(truth, predicted, 3, iou_threshold=0.5)
    assert set(curves) == {0, 1, 2}
    for threshold in (0.0, 0.3, 0.5, 0.99, 1.0):
        summed = np.sum([curve.counts(threshold) for curve in curves.values()], axis=0)
        assert tuple(summed) == match_counts(truth, predicted, threshold, 0.5)
    for curve in curves.values():  # the end of each curve: every prediction kept
        assert curve.counts(0.0) == (curve.true_positives[-1], len(curve.scores) - curve.true_positives[-1],
                                     curve.ground_truth - curve.true_positives[-1])
        assert (np.diff(curve.scores) <= 0).all()
    result = evaluate_detections(truth, predicted, 3)
    for class_id, curve in curves.items():
        assert curve.average_precision() == pytest.approx(result.per_class_ap50[class_id], abs=1e-12)


def test_pr_curve_of_a_hand_made_class():
    truth = [(boxes([0, 0, 10, 10], [20, 0, 30, 10]), np.array([0, 0])), (boxes(), np.zeros(0, np.int64))]
    predicted = [(boxes([0, 0, 10, 10], [50, 50, 60, 60]), np.array([0.9, 0.6]), np.array([0, 0])),
                 (boxes([0, 0, 10, 10]), np.array([0.8]), np.array([1]))]
    curves = pr_curves(truth, predicted, 3, iou_threshold=0.5)
    assert set(curves) == {0, 1}  # class 2: neither ground truth nor predictions
    cat, dog = curves[0], curves[1]
    assert cat.scores.tolist() == [0.9, 0.6] and cat.precision.tolist() == [1.0, 0.5]
    assert cat.recall.tolist() == [0.5, 0.5] and cat.average_precision() == pytest.approx(51 / 101)
    assert dog.ground_truth == 0 and dog.average_precision() is None and dog.counts(0.5) == (0, 1, 0)


@pytest.mark.parametrize("box, rectangle", [
    ((2, 3, 7, 9), (2, 3, 6, 8)),            # pixel edges: x2, y2 exclusive
    ((7, 9, 2, 3), (2, 3, 6, 8)),            # inverted corners put in order
    ((4.2, 4.2, 4.2, 4.2), (4, 4, 4, 4)),    # zero size: the one pixel it touches
    ((-5, -5, 50, 3), (0, 0, 19, 2)),        # clipped to the image
    ((25, 25, 30, 30), None),                # outside it
    ((float("nan"), 0, 5, 5), None),
])
def test_pixel_rectangle_draws_what_a_box_touches(box, rectangle):
    assert pictures.pixel_rectangle(box, 20, 20) == rectangle


def gray_image(path, width, height):
    Image.new("RGB", (width, height), (128, 128, 128)).save(path)
    return str(path)


def test_saved_pictures_open_at_their_sizes_and_an_undecodable_image_is_left_out(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    images = [str(broken), gray_image(tmp_path / "wide.png", 200, 100), str(tmp_path / "missing.jpg"),
              gray_image(tmp_path / "tall.jpg", 1000, 2000)]
    truth = [(boxes([10, 10, 60, 60]), np.array([0])), (boxes([20, 20, 100, 80]), np.array([0])),
             (boxes(), np.zeros(0, np.int64)), (boxes([100, 100, 400, 800]), np.array([1]))]
    predicted = [(boxes([10, 10, 60, 60]), np.array([0.9]), np.array([0])),
                 (boxes(), np.zeros(0), np.zeros(0, np.int64)),
                 (boxes([0, 0, 5, 5]), np.array([0.9]), np.array([1])),
                 (boxes([100, 100, 400, 800], [np.nan, 0, 5, 5], [900, 900, 0, 0], [5000, 5000, 6000, 6000]),
                  np.array([0.8, 0.9, 0.9, 0.9]), np.array([1, 0, 1, 0]))]  # NaN, inverted, outside: no error
    figures = pictures.stage_figures(truth, predicted, class_names=NAMES, score_threshold=0.5, iou_threshold=0.5,
                                     images=images)
    assert len(figures.validation) == 2
    paths = figures.save(str(tmp_path / "attachments" / "images"))
    assert [os.path.basename(path) for path in paths] == ["pr_curve.png", "confusion_matrix.png", "val_0.jpg",
                                                          "val_1.jpg"]
    sizes = {}
    for path in paths:
        with Image.open(path) as image:
            image.load()
            sizes[os.path.basename(path)] = (image.format, image.size)
    side, gap, title = pictures.PANEL_SIDE, 8, 18
    assert sizes["val_0.jpg"] == ("JPEG", (2 * side + gap, side // 2 + title))  # 200 x 100, scaled to 480 wide
    assert sizes["val_1.jpg"] == ("JPEG", (2 * (side // 2) + gap, side + title))
    assert sizes["pr_curve.png"][0] == sizes["confusion_matrix.png"][0] == "PNG"
    assert max(sizes["pr_curve.png"][1] + sizes["confusion_matrix.png"][1]) <= 1000
    assert not glob.glob(str(tmp_path / "attachments" / "images" / ".tmp-*"))  # atomic writes left nothing

    # the wide image: its cat drawn on the ground-truth side only (no prediction scores 0.5 there)
    picture = np.asarray(Image.open(paths[2]).convert("RGB")).astype(int)
    red = (np.abs(picture - np.array(pictures.PALETTE[0])).sum(-1) < 60)
    assert red[:, :side].sum() > 100 and red[:, side + gap:].sum() == 0


def test_many_classes_stay_bounded(tmp_path):
    names = [f"class number {k}" for k in range(1000)]
    rng = np.random.default_rng(3)
    truth, predicted = [], []
    for _ in range(50):
        gt = boxes(*[[x, x, x + 20, x + 20] for x in range(0, 200, 40)])
        classes = rng.integers(0, 1000, len(gt))
        truth.append((gt, classes))
        predicted.append((gt + 1, rng.uniform(0, 1, len(gt)), np.where(rng.uniform(size=len(gt)) < 0.5, classes,
                                                                          rng.integers(0, 1000, len(gt)))))
    figures = pictures.stage_figures(truth, predicted, class_names=names, score_threshold=0.3, iou_threshold=0.5)
    assert figures.confusion.shape == (1001, 1001) and figures.confusion.sum() > 0
    assert figures.pr_curve_image.shape == (520, 820, 3)
    height, width, _ = figures.confusion_matrix_image.shape
    assert height <= 720 and width <= 720
    paths = figures.save(str(tmp_path))
    assert [os.path.basename(path) for path in paths] == ["pr_curve.png", "confusion_matrix.png"]


def tensorboard_values(logdir):
    """``{tag: [summary value, ...]}`` of every summary in the tensorboard event files under ``logdir``."""
    from tensorboardX.event_file_writer import EventFileWriter  # noqa: F401  (imported for its side effects)
    from tensorboardX.proto import event_pb2

    values = {}
    for events_file in glob.glob(os.path.join(logdir, "events.out.tfevents.*")):
        data, offset = open(events_file, "rb").read(), 0
        while offset < len(data):  # TFRecord framing: length, crc, payload, crc
            length = int.from_bytes(data[offset:offset + 8], "little")
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 16 + length
            for value in event.summary.value:
                values.setdefault(value.tag, []).append((event.step, value))
    return values


def test_to_tensorboard_writes_pr_curves_and_images(tmp_path):
    image = gray_image(tmp_path / "image.png", 64, 48)
    truth = [(boxes([0, 0, 10, 10], [20, 0, 30, 10]), np.array([0, 1]))]
    predicted = [(boxes([0, 0, 10, 10], [20, 0, 30, 10]), np.array([0.9, 0.4]), np.array([0, 0]))]
    figures = pictures.stage_figures(truth, predicted, class_names=NAMES, score_threshold=0.3, iou_threshold=0.5,
                                     images=[image])
    writer = LazySummaryWriter(str(tmp_path / "tensorboard"))  # the core's writer passes every call through
    figures.to_tensorboard(writer, step=7)
    writer.close()
    assert writer.disabled is None and writer.outputs.total == 0  # no call refused
    values = tensorboard_values(str(tmp_path / "tensorboard"))
    assert set(values) == {"pr_curve/cat", "pr_curve/dog", "confusion_matrix", "val_predictions/0"}
    (step, cat), = values["pr_curve/cat"]
    assert step == 7 and cat.metadata.plugin_data.plugin_name == "pr_curves"
    rows = np.array(cat.tensor.float_val).reshape(6, pictures.TENSORBOARD_THRESHOLDS)  # tp, fp, tn, fn, p, r
    assert rows[:, 0].tolist() == [1, 1, 0, 0, 0.5, 1]  # score >= 0: both cat predictions, one right
    assert rows[:, 50].tolist() == [1, 0, 0, 0, 1, 1]  # score >= 0.5: the right one alone
    (_, dog), = values["pr_curve/dog"]
    assert np.array(dog.tensor.float_val).reshape(6, -1)[:, 0].tolist() == [0, 0, 0, 1, 0, 0]  # missed
    (_, picture), = values["val_predictions/0"]
    assert (picture.image.width, picture.image.height) == figures.validation[0].shape[1::-1]
