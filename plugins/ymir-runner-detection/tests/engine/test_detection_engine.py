"""Tests of the pure-PyTorch detection engine (kept small: the whole file runs in well under 2 minutes on 2 cores)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ymir_runner.evaluation import evaluate_detections
from ymir_runner_detection.devices import run_on_devices
from ymir_runner_detection.engine import (
    AugmentConfig,
    DetectionDataset,
    NonFiniteLossError,
    TargetConfig,
    batched_nms,
    boxes_to_original,
    build_dataloader,
    build_model,
    decode_maps,
    encode_targets,
    export_onnx,
    letterbox,
    load_image,
    reset_class_head,
    set_box_size_prior,
    train,
)
from ymir_runner_detection.engine.augment import horizontal_flip, letterbox_image, mosaic, random_scale_translate
from ymir_runner_detection.engine.loss import DetectionLoss
from ymir_runner_detection.engine.model import raw_to_boxes
from ymir_runner_detection.predict import predict_images
from ymir_runner_detection.templates import TRAINING_DEFAULTS

#: The plugin's training recipe in the engine's words; warm-up in steps, as these runs are short.
RECIPE = {"lr": TRAINING_DEFAULTS["learning_rate"], "optimizer": TRAINING_DEFAULTS["optimizer"],
          "weight_decay": TRAINING_DEFAULTS["weight_decay"], "warmup_steps": 100}

# One thread: small tensors gain little from two, and OpenMP threads thrash badly when
# another CPU-heavy process shares the (2-core) machine.
torch.set_num_threads(1)


def _pixel_box(image: np.ndarray, threshold: int = 128) -> np.ndarray:
    """Tight x1, y1, x2 (exclusive), y2 box of the bright pixels of an image."""
    ys, xs = np.nonzero(image.max(axis=2) > threshold)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def _perfect_raw(targets: dict, stride: int, box_mode: str) -> torch.Tensor:
    """Raw box-head values that decode exactly to the target boxes at every weighted cell."""
    box_target = torch.from_numpy(targets["box_target"])
    height, width = box_target.shape[1:]
    xs = torch.arange(width).view(1, width).expand(height, width).float()
    ys = torch.arange(height).view(height, 1).expand(height, width).float()
    x1, y1, x2, y2 = box_target
    if box_mode in ("ltrb", "ltrb_log"):
        cx, cy = (xs + 0.5) * stride, (ys + 0.5) * stride
        distances = (torch.stack([cx - x1, cy - y1, x2 - cx, y2 - cy]) / stride).clamp(min=1e-4)
        raw = torch.log(torch.expm1(distances)) if box_mode == "ltrb" else torch.log(distances)  # inverses
    else:
        raw = torch.stack([
            (x1 + x2) / 2 / stride - xs, (y1 + y2) / 2 / stride - ys,
            torch.log(((x2 - x1) / stride).clamp(min=1e-4)), torch.log(((y2 - y1) / stride).clamp(min=1e-4)),
        ])
    return raw.unsqueeze(0)


@pytest.mark.parametrize("box_mode", ["ltrb", "ltrb_log", "wh_offset"])
@pytest.mark.parametrize("stride", [4, 8])
def test_targets_decode_back_to_the_encoded_boxes(box_mode, stride):
    boxes = np.array([[10.5, 20, 60, 90], [100, 100, 141, 120], [200, 30, 250, 200], [5, 5, 17, 17]], np.float32)
    classes = np.array([0, 1, 2, 1])
    config = TargetConfig(num_classes=3, stride=stride, box_mode=box_mode)
    targets = encode_targets(boxes, classes, (256, 256), config)
    assert targets["heatmap"].shape == (3, 256 // stride, 256 // stride)
    assert (targets["heatmap"] == 1.0).sum() == len(boxes)

    raw = _perfect_raw(targets, stride, box_mode)
    decoded_boxes, scores, decoded_classes = decode_maps(
        torch.from_numpy(targets["heatmap"])[None], raw_to_boxes(raw, stride, box_mode), score_threshold=0.5
    )[0]
    order = np.lexsort((decoded_boxes[:, 0].numpy(), decoded_classes.numpy()))
    expected = np.lexsort((boxes[:, 0], classes))
    np.testing.assert_allclose(decoded_boxes.numpy()[order], boxes[expected], atol=1e-3)
    np.testing.assert_array_equal(decoded_classes.numpy()[order], classes[expected])
    assert torch.all(scores == 1.0)

    # The box loss of perfect predictions is ~0.
    logits = torch.logit(torch.from_numpy(targets["heatmap"]).clamp(1e-4, 1 - 1e-4))[None]
    batch_targets = {key: torch.from_numpy(value)[None] for key, value in targets.items()}
    _, parts = DetectionLoss(stride, box_mode)({"heatmap_logits": logits, "box_raw": raw}, batch_targets)
    assert parts["box"] < 1e-3


def test_smaller_objects_own_shared_regression_cells_and_weights_sum_to_log_area():
    big, small = [8, 8, 120, 120], [56, 56, 72, 72]
    targets = encode_targets(np.array([big, small], np.float32), np.array([0, 1]), (128, 128), TargetConfig(2, 4))
    box_target, weight = targets["box_target"], targets["box_weight"]
    np.testing.assert_array_equal(box_target[:, 16, 16], small)  # the small object's centre cell
    np.testing.assert_array_equal(box_target[:, 11, 11], big)
    owned_by_small = (box_target == np.array(small, np.float32)[:, None, None]).all(axis=0)
    assert weight[owned_by_small].sum() == pytest.approx(np.log(16 * 16), rel=1e-5)
    assert weight[~owned_by_small].sum() < np.log(112 * 112)  # the big one lost the shared cells
    assert targets["heatmap"][0, 16, 16] == 1.0 and targets["heatmap"][1, 16, 16] == 1.0


def test_empty_image_gives_zero_targets_and_finite_loss():
    model = build_model("nano", num_classes=2)
    targets = encode_targets(np.zeros((0, 4)), np.zeros(0), (64, 64), TargetConfig.for_model(model))
    assert not targets["heatmap"].any() and not targets["box_weight"].any()
    batch_targets = {key: torch.from_numpy(value)[None] for key, value in targets.items()}
    loss, parts = DetectionLoss.for_model(model)(model(torch.rand(1, 3, 64, 64)), batch_targets)
    assert math.isfinite(loss.item()) and parts["box"] == 0.0
    loss.backward()


def test_letterbox_and_inverse_mapping_round_trip():
    image = np.zeros((200, 300, 3), np.uint8)
    image[50:120, 40:200] = 255
    box = np.array([[40, 50, 200, 120]], np.float32)
    canvas, boxes, info = letterbox(image, 160, box)
    assert canvas.shape == (160, 160, 3)
    np.testing.assert_allclose(_pixel_box(canvas), boxes[0], atol=1.0)
    np.testing.assert_allclose(boxes_to_original(boxes, info), box, atol=1e-3)
    # Boxes partly outside the letterboxed area are clipped to the original image.
    outside = boxes_to_original(np.array([[-20, -20, 500, 60]], np.float32), info)
    assert outside.min() >= 0 and outside[0, 2] <= 300 and outside[0, 3] <= 200


def test_horizontal_flip_moves_boxes_with_pixels():
    image = np.zeros((64, 96, 3), np.uint8)
    image[10:30, 5:25] = 255
    box = np.array([[5, 10, 25, 30]], np.float32)
    flipped, flipped_boxes = horizontal_flip(image, box)
    np.testing.assert_array_equal(_pixel_box(flipped), flipped_boxes[0])
    twice, twice_boxes = horizontal_flip(flipped, flipped_boxes)
    np.testing.assert_array_equal(twice, image)
    np.testing.assert_array_equal(twice_boxes, box)


def test_geometric_augmentations_keep_boxes_on_their_objects():
    rng = np.random.default_rng(0)
    config = AugmentConfig(fill=0, min_visible=0.99)  # only fully visible boxes, so pixels and box agree
    for _ in range(20):
        image = np.zeros((120, 180, 3), np.uint8)
        image[30:70, 60:130] = 255
        box, cls = np.array([[60, 30, 130, 70]], np.float32), np.array([0])
        out, out_boxes, _ = random_scale_translate(image, box, cls, 128, rng, config)
        if len(out_boxes):
            np.testing.assert_allclose(_pixel_box(out), out_boxes[0], atol=1.0)
    tiles = [(np.full((64, 64, 3), 0, np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64)) for _ in range(3)]
    image = np.zeros((64, 64, 3), np.uint8)
    image[20:40, 16:48] = 255
    out, out_boxes, _ = mosaic([(image, np.array([[16, 20, 48, 40]], np.float32), np.array([1]))] + tiles, 128, rng,
                               AugmentConfig(fill=0, min_visible=0.0))
    if len(out_boxes):
        np.testing.assert_allclose(_pixel_box(out), out_boxes[0], atol=1.0)


def test_full_batches_show_every_image_each_epoch_and_no_short_batch(tiny_synthetic):
    corrupt = {str(path) for path in tiny_synthetic.corrupt_paths}
    items = [item for item in tiny_synthetic.train_items if str(item[0]) not in corrupt]  # 11 images
    dataset = DetectionDataset(items, 64, train=True, target_config=TargetConfig(3, 4))
    loader = build_dataloader(dataset, 4, shuffle=True, full_batches=True, seed=1)
    assert len(loader) == 3  # ceil(11 / 4)
    epochs = []
    for _ in range(2):
        batches = [batch["indices"] for batch in loader]
        assert [len(indices) for indices in batches] == [4, 4, 4]
        drawn = [index for indices in batches for index in indices]
        assert set(drawn) == set(range(len(items)))  # drop_last would leave 3 images out of every epoch
        epochs.append(drawn)
    assert epochs[0] != epochs[1]  # reshuffled


def test_images_decode_by_content_and_corrupt_ones_are_skipped_and_counted(tiny_synthetic, tmp_path):
    png_as_jpg = tmp_path / "really_a_png.jpg"
    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(png_as_jpg, format="PNG")
    assert load_image(png_as_jpg).shape == (20, 30, 3)

    items = tiny_synthetic.train_items
    corrupt_path = tiny_synthetic.corrupt_paths[0]
    corrupt_index = [str(p) for p, _, _ in items].index(str(corrupt_path))
    dataset = DetectionDataset(items, 96, train=True, target_config=TargetConfig(3, 4))
    loader = build_dataloader(dataset, 4, shuffle=False, num_workers=2)
    seen, corrupt = [], set()
    for batch in loader:
        seen.extend(batch["indices"])
        corrupt.update(batch["corrupt"])
        assert batch["images"].shape[1:] == (3, 96, 96)
    assert corrupt == {corrupt_index}
    assert len(seen) == len(items) and corrupt_index not in seen
    # In-process use records it on the dataset too.
    dataset[corrupt_index]
    assert set(dataset.corrupt_indices) == {corrupt_index} and dataset.corrupt_indices[corrupt_index]


def test_an_image_that_cannot_get_its_memory_is_skipped_saying_so(tiny_synthetic, monkeypatch):
    """A decode that runs out of memory (a huge image under a cap) is named as such, not as a bare 'unreadable'."""
    from ymir_runner_detection.engine import data

    items = tiny_synthetic.train_items[:3]
    real = data.decode_image

    def decode(path, *args, **kwargs):
        if str(path) == str(items[0][0]):
            raise MemoryError("cannot allocate 4.0 GiB for a 32767x32767 image")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(data, "decode_image", decode)
    sample = DetectionDataset(items, 96)[0]
    assert sample["index"] == 1
    assert sample["corrupt"] == {0: "out of memory while decoding it: cannot allocate 4.0 GiB for a 32767x32767 "
                                    "image"}


def test_class_aware_nms():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    classes = torch.tensor([0, 0, 1, 0])
    assert sorted(batched_nms(boxes, scores, classes, 0.5).tolist()) == [0, 2, 3]


def test_onnx_export_runs_in_onnxruntime_and_matches_torch(tmp_path):
    import onnx
    import onnxruntime

    torch.manual_seed(0)
    model = build_model("nano", num_classes=3).eval()
    path = export_onnx(model, tmp_path / "model.onnx", img_size=128)
    onnx.checker.check_model(onnx.load(str(path)))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.rand(2, 3, 128, 128)  # batch 2 != export batch 1: dynamic axis
    onnx_scores, onnx_boxes = session.run(["scores", "boxes"], {"images": images.numpy()})
    with torch.no_grad():
        scores, boxes = model.predict_maps(images)
    side = 128 // model.stride
    assert onnx_scores.shape == (2, 3, side, side) and onnx_boxes.shape == (2, 4, side, side)
    np.testing.assert_allclose(onnx_scores, scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(onnx_boxes, boxes.numpy(), atol=1e-2, rtol=1e-4)


def test_reset_class_head_keeps_the_rest_of_the_model():
    model = build_model("nano", num_classes=3)
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    box_before = model.box_head.predict.weight.clone()
    reset_class_head(model, 5)
    outputs = model.eval()(torch.rand(1, 3, 64, 64))  # eval: BN statistics stay untouched
    assert outputs["heatmap_logits"].shape[1] == 5 and model.num_classes == 5
    assert all(torch.equal(backbone_before[k], v) for k, v in model.backbone.state_dict().items())
    assert torch.equal(box_before, model.box_head.predict.weight)


@pytest.mark.parametrize("box_mode", ["ltrb_log", "ltrb", "wh_offset"])
def test_an_untrained_model_predicts_the_training_boxes_typical_size_after_the_prior(box_mode):
    model = build_model("nano", num_classes=2, box_mode=box_mode).eval()
    sizes = np.array([[20.0, 10.0], [80.0, 40.0]])  # geometric mean 40 x 20 px
    assert set_box_size_prior(model, sizes) == pytest.approx((40.0, 20.0))
    with torch.no_grad():
        _, boxes = model.predict_maps(torch.rand(2, 3, 128, 128))
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert float(widths.median()) == pytest.approx(40.0, rel=0.1)
    assert float(heights.median()) == pytest.approx(20.0, rel=0.1)
    assert set_box_size_prior(model, np.zeros((0, 2))) is None  # no box: the model is left as it is


def _overfit_items(tiny_synthetic):
    return [item for item in tiny_synthetic.train_items if len(item[1])][:6]


def test_short_training_overfits_a_few_images(tiny_synthetic):
    items = _overfit_items(tiny_synthetic)
    torch.manual_seed(0)
    model = build_model("nano", num_classes=3)
    train_set = DetectionDataset(items, 128, target_config=TargetConfig.for_model(model))  # letterbox only
    loader = build_dataloader(train_set, 6, shuffle=True, seed=0)
    result = train(model, loader, epochs=150, **dict(RECIPE, lr=4e-3, warmup_steps=10), ema_decay=None, seed=0)
    assert result.steps == 150 and result.corrupt_images == 0
    predictions = predict_images(model, [path for path, _, _ in items], 128, score_threshold=0.01, top_k=100)
    metrics = evaluate_detections([(boxes, classes) for _, boxes, classes in items], predictions, 3)
    assert metrics.map50 > 0.5, metrics


def test_training_is_deterministic_for_a_seed(tiny_synthetic):
    items = _overfit_items(tiny_synthetic)

    def run():
        torch.manual_seed(0)
        model = build_model("nano", num_classes=3)
        dataset = DetectionDataset(items, 96, train=True, target_config=TargetConfig.for_model(model))
        train(model, build_dataloader(dataset, 3, shuffle=True, seed=3), epochs=2, seed=3, **RECIPE)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(run(), run())


def test_nan_loss_raises_non_finite_loss_error(tiny_synthetic):
    model = build_model("nano", num_classes=3)
    with torch.no_grad():
        model.heatmap_head.predict.bias.fill_(float("nan"))
    dataset = DetectionDataset(_overfit_items(tiny_synthetic), 64, target_config=TargetConfig.for_model(model))
    with pytest.raises(NonFiniteLossError) as error:
        train(model, build_dataloader(dataset, 2, shuffle=False), epochs=1, **RECIPE)
    assert error.value.step == 0


def test_time_budget_stops_training(tiny_synthetic):
    model = build_model("nano", num_classes=3)
    dataset = DetectionDataset(_overfit_items(tiny_synthetic), 64, target_config=TargetConfig.for_model(model))
    result = train(model, build_dataloader(dataset, 2, shuffle=True), epochs=10_000, time_budget_s=1.5, **RECIPE)
    assert result.stopped_by_time_budget and result.train_seconds < 10


def _ddp_worker(rank: int, world_size: int, device: str, items, out_dir: str) -> None:
    torch.manual_seed(0)
    model = build_model("nano", num_classes=3)
    dataset = DetectionDataset(items, 64, train=True, target_config=TargetConfig.for_model(model))
    loader = build_dataloader(dataset, 2, shuffle=True, seed=0)  # DistributedSampler: the group is up
    calls = []
    result = train(model, loader, epochs=2, seed=0, device=device, **RECIPE,
                   on_step=lambda step, total, info: calls.append(step))
    checksum = float(sum(p.detach().double().sum() for p in model.parameters()))
    Path(out_dir, f"rank{rank}.json").write_text(
        json.dumps({"checksum": checksum, "callbacks": len(calls), "steps": result.steps,
                    "sampler": type(loader.sampler).__name__, "corrupt": result.corrupt_images})
    )


def test_ddp_two_gloo_processes_stay_in_sync(tiny_synthetic, tmp_path):
    items = tiny_synthetic.train_items[:8]  # includes no corrupt file
    run_on_devices(_ddp_worker, ["cpu", "cpu"], items, str(tmp_path), threads=1, process_group=True)  # gloo
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert rank0["sampler"] == "DistributedSampler"
    assert rank0["steps"] == rank1["steps"] == 4  # 8 items / 2 ranks / batch 2, 2 epochs
    assert rank0["checksum"] == pytest.approx(rank1["checksum"], rel=1e-9)
    assert rank0["callbacks"] == 4 and rank1["callbacks"] == 0


def test_letterbox_image_is_letterbox_of_the_pillow_image():
    """Inference letterboxes the decoded Pillow image (no numpy copy first): the same pixels and mapping."""
    rng = np.random.default_rng(0)
    for width, height in ((1, 90), (90, 1), (3, 5), (257, 256), (416, 300), (300, 416)):
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        for size in (32, 256):
            expected, _, expected_info = letterbox(np.asarray(image), size)
            pixels, info = letterbox_image(image, size)
            assert info == expected_info and np.array_equal(pixels, expected), (width, height, size)
