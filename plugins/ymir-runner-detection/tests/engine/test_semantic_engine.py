"""The Semantic FPN segmentation model of the engine (object type 3): shapes, the loss's two treatments of unlabelled
pixels, reuse of a detector's weights, a short overfit through the engine's training loop (seconds on 1 CPU), the
samples (image and label map letterboxed and flipped together) and label maps back in stored pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ymir_runner_detection import synthetic
from ymir_runner_detection.engine import (
    UNLABELLED,
    SemanticDataset,
    SemanticLoss,
    build_dataloader,
    build_model,
    build_semantic_model,
    build_semantic_model_from_config,
    collate_semantic,
    export_semantic_onnx,
    letterbox,
    letterbox_label_map,
    load_image,
    reuse_weights,
    stored_label_map,
    train,
)
from ymir_runner_detection.engine import semantic as semantic_module

torch.set_num_threads(1)

#: The prototype's recipe (issue 28): AdamW at 3e-3; warm-up in steps, as these runs are short.
RECIPE = {"lr": 3e-3, "optimizer": "adamw", "weight_decay": 0.05, "warmup_steps": 5}


class Batches(list):
    """Fixed batches in the form the training loop takes (a DataLoader's ``batch_size`` included)."""

    def __init__(self, batches, batch_size):
        super().__init__(batches)
        self.batch_size = batch_size


def scenes(count: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` generated scenes of ``size`` x ``size``: uint8 images ``[N, 3, S, S]`` and label maps ``[N, S, S]``."""
    rng = np.random.default_rng(seed)
    scene = synthetic.SceneConfig(objects_range=(2, 4), min_object_size=14.0, max_clutter_lines=0)
    rendered = [synthetic.render_scene(rng, (size, size), scene) for _ in range(count)]
    images = torch.from_numpy(np.stack([r.pixels for r in rendered])).permute(0, 3, 1, 2).contiguous()
    labels = torch.from_numpy(np.stack([r.label_map() for r in rendered]))
    return images, labels


@pytest.mark.parametrize(("unlabelled", "channels"), [("background", 4), ("ignore", 3)])
def test_logits_have_the_input_size_and_one_channel_per_class_and_background(unlabelled, channels):
    model = build_semantic_model("nano", 3, unlabelled).eval()
    assert model.stride == 4 and model.num_outputs == channels
    images = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        assert model.cell_logits(images).shape == (2, channels, 16, 24)
        logits = model(images)["logits"]
        probabilities = model.predict_maps(images)
    assert logits.shape == probabilities.shape == (2, channels, 64, 96)
    torch.testing.assert_close(probabilities.sum(dim=1), torch.ones(2, 64, 96))
    rebuilt = build_semantic_model_from_config(model.config())
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(images)["logits"], logits)


def test_unlabelled_pixels_are_the_background_class_or_take_no_part():
    logits = torch.zeros(1, 4, 1, 3)
    logits[0, 0, 0, 0] = 5.0  # pixel 0: class 0, right
    logits[0, 3, 0, 1] = 5.0  # pixel 1: background, right (an unlabelled pixel)
    logits[0, 1, 0, 2] = 5.0  # pixel 2: class 1, wrong (unlabelled)
    labels = torch.tensor([[[0, UNLABELLED, UNLABELLED]]], dtype=torch.uint8)
    background, _ = SemanticLoss(3, "background")({"logits": logits}, {"labels": labels})
    ignored, parts = SemanticLoss(3, "ignore")({"logits": logits[:, :3]}, {"labels": labels})
    right = -torch.log_softmax(torch.tensor([5.0, 0, 0, 0]), 0)[0]
    wrong = -torch.log_softmax(torch.tensor([5.0, 0, 0, 0]), 0)[1]
    torch.testing.assert_close(background, (right + right + wrong) / 3)
    right3 = -torch.log_softmax(torch.tensor([5.0, 0, 0]), 0)[0]
    torch.testing.assert_close(ignored, right3)  # only pixel 0 counts
    assert parts == {"ce": pytest.approx(float(right3)), "dice": 0.0}  # no Dice term unless weighted
    nothing, _ = SemanticLoss(3, "ignore")({"logits": logits[:, :3].clone().requires_grad_()},
                                           {"labels": torch.full((1, 1, 3), UNLABELLED)})
    assert nothing.item() == 0.0 and nothing.requires_grad  # no pixel counts: 0, never NaN


def test_the_dice_term_scores_each_classs_soft_overlap_on_the_pixels_that_count():
    # two classes, even odds everywhere; pixels: class 0, class 1, unlabelled (ignored: no part)
    logits = torch.zeros(1, 2, 1, 3, requires_grad=True)
    labels = torch.tensor([[[0, 1, UNLABELLED]]], dtype=torch.uint8)
    loss, parts = SemanticLoss(2, "ignore", dice_weight=0.5)({"logits": logits}, {"labels": labels})
    # per class: overlap 0.5, probability mass 1 + one label pixel: (2 * 0.5 + 1) / (2 + 1) = 2/3 -> Dice loss 1/3
    assert parts == {"ce": pytest.approx(math.log(2)), "dice": pytest.approx(1 / 3)}
    torch.testing.assert_close(loss, torch.tensor(math.log(2) + 0.5 / 3))
    loss.backward()
    assert logits.grad is not None and logits.grad[..., 2].abs().sum() == 0  # the unlabelled pixel takes no part
    confident = torch.tensor([[[[9.0, -9.0, 0.0]], [[-9.0, 9.0, 0.0]]]])
    _, parts = SemanticLoss(2, "ignore", dice_weight=1.0)({"logits": confident}, {"labels": labels})
    assert parts["dice"] < 1e-3  # right and sure: no Dice loss


def test_a_detector_gives_its_backbone_and_neck_the_head_is_new():
    torch.manual_seed(0)
    detector = build_model("nano", num_classes=5)  # output stride 8: its neck has no stride-4 level
    model = build_semantic_model("nano", 3)
    loaded, kept = reuse_weights(model, detector.state_dict())
    own = model.state_dict()
    for key, value in detector.state_dict().items():
        if key.startswith("backbone."):
            assert torch.equal(own[key], value), key
    assert torch.equal(own["neck.laterals.0.0.weight"], detector.state_dict()["neck.laterals.0.0.weight"])
    assert "neck.laterals.3.0.weight" not in detector.state_dict()  # the stride-4 level is new
    assert loaded + kept == len(own) and kept >= 2 + len(list(model.neck.laterals[3].state_dict()))
    with pytest.raises(ValueError, match="backbone is not small's"):
        reuse_weights(build_semantic_model("small", 3), detector.state_dict())
    # a segmentation model of other classes: everything but the 1x1 head
    other = build_semantic_model("nano", 2)
    loaded, kept = reuse_weights(other, model.state_dict())
    assert kept == 2  # classifier weight and bias


@pytest.mark.parametrize("unlabelled", ["background", "ignore"])
def test_a_short_training_overfits_a_few_scenes(unlabelled):
    images, labels = scenes(4, 64)
    torch.manual_seed(0)
    model = build_semantic_model("nano", 3, unlabelled)
    batches = Batches([{"images": images, "targets": {"labels": labels}, "corrupt": {}}], batch_size=4)
    result = train(model, batches, epochs=120, **RECIPE, ema_decay=None, seed=0,
                   loss_fn=SemanticLoss.for_model(model))
    losses = [epoch["ce"] for epoch in result.history]
    assert result.steps == 120 and losses[-1] < 0.25 * losses[0], losses[::20]
    model.eval()
    with torch.no_grad():
        predicted = model.predict_maps(images.float() / 255).argmax(dim=1)
    labelled = labels != UNLABELLED
    accuracy = (predicted[labelled] == labels[labelled].long()).float().mean().item()
    assert accuracy > 0.8, accuracy
    if unlabelled == "background":
        assert (predicted[~labelled] == 3).float().mean().item() > 0.9


def test_label_maps_are_letterboxed_as_their_images_nearest_and_padded_unlabelled():
    labels = np.array([[0, 1, 2, UNLABELLED], [1, 1, 0, 0]], dtype=np.uint8)  # 4 x 2 -> 8 x 4 in an 8 square
    boxed = letterbox_label_map(labels, 8)
    assert boxed.shape == (8, 8)
    assert (boxed[:2] == UNLABELLED).all() and (boxed[6:] == UNLABELLED).all()
    np.testing.assert_array_equal(boxed[2:6], labels.repeat(2, axis=0).repeat(2, axis=1))


def test_samples_hold_the_letterboxed_image_and_labels_flipped_together(tmp_path):
    data = synthetic.generate_segmentation(tmp_path, n_train=3, n_val=0, n_candidates=0, img_size_range=(40, 56),
                                           seed=1)
    items = [(path, (lambda factor, labels=labels: labels)) for path, labels in data.train_items]
    plain = SemanticDataset(items, 64)[1]
    flipped = SemanticDataset(items, 64, train=True, flip_prob=1.0)[1]
    image, _, _ = letterbox(load_image(data.train_items[1][0]), 64)
    np.testing.assert_array_equal(plain["image"].numpy(), image)
    np.testing.assert_array_equal(plain["labels"].numpy(), letterbox_label_map(data.train_items[1][1], 64))
    np.testing.assert_array_equal(flipped["image"].numpy(), image[:, ::-1])
    np.testing.assert_array_equal(flipped["labels"].numpy(), plain["labels"].numpy()[:, ::-1])
    batch = next(iter(build_dataloader(SemanticDataset(items, 64), 2, shuffle=False, collate_fn=collate_semantic)))
    assert batch["images"].shape == (2, 3, 64, 64) and batch["images"].dtype == torch.uint8
    assert batch["targets"]["labels"].shape == (2, 64, 64) and batch["corrupt"] == {}


def _reference_label_map(cell_logits, stride, info, width, height, background):
    """The same prediction by torch's grid_sample over the whole image (align_corners=False, border clamp)."""
    channels, cells_y, cells_x = cell_logits.shape
    xs = ((torch.arange(width, dtype=torch.float64) + 0.5) * info[0] + info[2]) / stride
    ys = ((torch.arange(height, dtype=torch.float64) + 0.5) * info[1] + info[3]) / stride
    grid = torch.stack(torch.meshgrid(xs / cells_x * 2 - 1, ys / cells_y * 2 - 1, indexing="xy"), dim=-1)
    sampled = F.grid_sample(cell_logits[None].double(), grid[None], mode="bilinear", padding_mode="border",
                            align_corners=False)[0]
    best, label = torch.softmax(sampled, dim=0).max(dim=0)
    if background:
        label[label == channels - 1] = UNLABELLED
    return label.to(torch.uint8).numpy(), best.float().numpy()


@pytest.mark.parametrize("background", [True, False])
def test_label_maps_come_back_in_stored_pixels_strip_by_strip(monkeypatch, background):
    torch.manual_seed(0)
    cell_logits = torch.randn(4, 8, 8) * 3  # a 32 x 32 input at stride 4
    width, height = 70, 37  # letterboxed: scale 32 / 70, placed 32 x 17 at pad_y 7
    scale = 32 / 70
    info = (scale, 17 / 37, 0.0, 7.0)
    monkeypatch.setattr(semantic_module, "STRIP_ELEMENTS", 4 * 70 * 5)  # 5 rows per strip: 8 strips
    labels, probability = stored_label_map(cell_logits, stride=4, scale_x=info[0], scale_y=info[1], pad_x=info[2],
                                           pad_y=info[3], width=width, height=height, background=background)
    expected_labels, expected_probability = _reference_label_map(cell_logits, 4, info, width, height, background)
    assert labels.shape == probability.shape == (height, width) and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(probability, expected_probability, atol=1e-5)
    assert (labels == UNLABELLED).any() == background


def test_equal_logits_label_the_first_channel_and_a_class_tied_with_the_background_is_labelled():
    cell_logits = torch.randn(4, 8, 8)
    cell_logits[2] = cell_logits[0]  # class 2 ties class 0 everywhere: class 0, as argmax's first maximum
    cell_logits[3] = cell_logits[1]  # the background ties class 1 everywhere: class 1, labelled
    labels, probability = stored_label_map(cell_logits, stride=4, scale_x=1.0, scale_y=1.0, pad_x=0.0, pad_y=0.0,
                                           width=32, height=32, background=True)
    assert set(np.unique(labels)) <= {0, 1} and {0, 1} <= set(np.unique(labels))
    np.testing.assert_array_less(probability, 0.5 + 1e-6)  # at least two channels share the top logit


def test_onnx_export_gives_the_probabilities_of_torch(tmp_path):
    import onnx
    import onnxruntime

    torch.manual_seed(0)
    model = build_semantic_model("nano", 3).eval()
    path = export_semantic_onnx(model, tmp_path / "model.onnx", img_size=64)
    onnx.checker.check_model(onnx.load(str(path)))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.rand(2, 3, 64, 64)  # batch 2 != export batch 1: dynamic axis
    (probabilities,) = session.run(["probabilities"], {"images": images.numpy()})
    assert probabilities.shape == (2, 4, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(probabilities, model.predict_maps(images).numpy(), atol=1e-5)
