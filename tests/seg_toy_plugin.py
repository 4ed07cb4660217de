"""A torch-free segmentation plugin used by the core tests (object types 3 and 4, issue 26).

The test images carry their ground truth in their pixels (:func:`paint`): red is ``50 * (class id + 1)``, green
``20 * (instance + 1)``, black is no object. The "model" reads them back and perturbs them: each stage's model.json
holds a horizontal ``shift`` (pixels) and whether it adds a ``false_positive``, so stages differ in quality and
inference with a stage's model predicts exactly what that stage was evaluated on. Training evaluates its stages
with the core's :class:`ymir_runner.stages.StageEvaluator`; mining scores candidates by the model's doubt.
"""

import json
import os

import numpy as np

import ymir_runner
from ymir_runner import ExecutorSpec, Param, TaskKind, inference
from ymir_runner.inference import LabelMap
from ymir_runner.protocol.results import InstanceMask
from ymir_runner.stages import StageEvaluator, stage_epochs

NAME = "segtoy"
#: The shift of each epoch's model (the 2nd is exact), and the epochs that add a false positive.
SHIFTS = (4, 0, 2)
FALSE_POSITIVE_EPOCHS = (3,)
#: Hooks that ran, by name (tests check that a refused task ran none).
CALLS = []

TEMPLATES = {
    TaskKind.TRAINING: (Param("epochs", 3, "passes over the training set"),),
    TaskKind.MINING: (Param("batch_size_per_gpu", 4, "images per step"),),
    TaskKind.INFER: (Param("conf_threshold", 0.0, "unused"),),
}


@ymir_runner.hookimpl
def ymir_runner_register_executors():
    return [ExecutorSpec(name=NAME, tasks={TaskKind.TRAINING, TaskKind.MINING, TaskKind.INFER},
                         templates=TEMPLATES, object_types={3, 4}, annotation_formats=("seg-coco",),
                         stage_evaluation=True, description="segmentation test double")]


def paint(height, width, objects):
    """The RGB image of ``(class_id, mask)`` objects painted in order (a later one covers an earlier one)."""
    pixels = np.zeros((height, width, 3), np.uint8)
    for instance, (class_id, mask) in enumerate(objects):
        pixels[mask] = (50 * (class_id + 1), 20 * (instance + 1), 0)
    return pixels


def _shifted(mask, shift):
    out = np.zeros_like(mask)
    out[:, shift:] = mask[:, :mask.shape[1] - shift] if shift else mask
    return out


def predict(object_type, pixels, model):
    """What ``model`` predicts on an image's ``pixels`` ([H, W, 3], stored size): a label map (type 3) or the
    instance masks (type 4), in stored pixels as the inference writer takes them."""
    shift = int(model["shift"])
    red, green = pixels[..., 0].astype(np.int64), pixels[..., 1].astype(np.int64)
    classes = np.where(red > 0, red // 50 - 1, 255)
    if object_type == 3:
        labels = np.full(classes.shape, 255, np.uint8)
        labels[:, shift:] = classes[:, :classes.shape[1] - shift] if shift else classes
        return labels
    instances = []
    for instance in np.unique(green[green > 0]):
        mask = green == instance
        class_id = int(np.bincount(classes[mask]).argmax())
        instances.append(InstanceMask(_shifted(mask, shift), round(0.95 - 0.05 * int(instance // 20), 2), class_id))
    if model["false_positive"]:
        mask = np.zeros(classes.shape, bool)
        mask[-4:, -5:] = True
        instances.append(InstanceMask(mask, 0.99, 1))  # ranked first: it costs precision
    return instances


def _pixels(context, item):
    decoded = context.decode(item)
    assert decoded is not None and decoded.factor == 1, "the test images are small: decoded at the stored size"
    return decoded.pixels, decoded.width, decoded.height


def _model(context):
    with open(context.model_file(".json"), encoding="utf-8") as stream:
        return json.load(stream)


@ymir_runner.hookimpl
def ymir_runner_train(context):
    CALLS.append("train")
    object_type = context.config.object_type
    masks = sum(1 for item in context.training_set for _ in item.masks())  # "learning": every mask decodes
    assert masks > 0
    items = list(context.validation_set)
    evaluator = StageEvaluator(context, items, [(item.width, item.height) for item in items],
                               [item.image for item in items])
    epochs = context.hyper.epochs
    for epoch in stage_epochs(epochs, context.hyper.save_period):
        model = {"shift": SHIFTS[(epoch - 1) % len(SHIFTS)], "false_positive": epoch in FALSE_POSITIVE_EPOCHS}
        name = f"epoch_{epoch}"
        with open(os.path.join(context.training_result.stage_dir(name), "model.json"), "w") as stream:
            json.dump(model, stream)
        predictions = [predict(object_type, _pixels(context, item)[0], model) for item in items]
        result = evaluator.evaluate(epoch, predictions)
        context.logger.info("epoch %d: %s", epoch, evaluator.add_stage(name, ["model.json"], result))
        context.progress.steps(epoch, epochs)


@ymir_runner.hookimpl
def ymir_runner_mine(context):
    CALLS.append("mine")
    model, object_type = _model(context), context.config.object_type
    items = list(context.candidates)
    for index, item in enumerate(items, 1):
        found = predict(object_type, _pixels(context, item)[0], model)
        if object_type == 3:
            score = float(np.mean(found == 255))  # the share of pixels the model labels nothing
        else:
            score = 1.0 - float(np.mean([instance.score for instance in found])) if found else 1.0
        context.mining_result.add(item.image, score)
        context.progress.steps(index, len(items))


@ymir_runner.hookimpl
def ymir_runner_infer(context):
    """Through the core's loop (``inference.infer_seg_candidates``): ``predict`` answers per image a callable the
    core asks for the stored-pixel result."""
    CALLS.append("infer")
    model, object_type = _model(context), context.config.object_type

    def stored(pixels):
        def render(width, height, factor):
            assert factor == 1 and pixels.shape[:2] == (height, width), "the test images are decoded at stored size"
            found = predict(object_type, pixels, model)
            return LabelMap(found) if object_type == 3 else iter(found)
        return render

    inference.infer_seg_candidates(context, lambda batch: [stored(pixels) for pixels in batch], batch_size=3)
