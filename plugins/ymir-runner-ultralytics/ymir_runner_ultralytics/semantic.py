"""Semantic segmentation (object type 3): the executor ``ultralytics-sem``, ultralytics' ``-sem`` models (YOLO26).

The dataset (:func:`write_layout`): ultralytics' ``SemanticDataset`` layout, one PNG label mask per image

    <root>/images/{train,val}/<n>_<name>.<ext>   a link to the asset, or a converted copy (as :mod:`.dataset`)
    <root>/masks/{train,val}/<n>_<name>.png      uint8 class ids, 255 = ignored by the loss
    <root>/data.yaml                             path, train, val, names, masks_dir: masks

Each mask is the core's label map (``Item.label_map()``: the platform's painting of the objects in file order over
255) through :func:`mask_lut`: with ``unlabelled_pixels: ignore`` it IS the label map, bit for bit (255 stays
ignored); with ``background`` the pixels of no class become an extra class ``C`` (``len(class_names)``), which the
model learns and predicts, and which is written as no class. An image without objects is kept (all background, or
all ignored). One class with ``ignore`` is refused (every labelled pixel is the class: nothing to learn); one class
with ``background`` trains 2 channels with a softmax like any other (not ultralytics' 1-channel binary form).

The model: ``SemanticSegment`` gives logits ``[B, K, S/8, S/8]`` for a letterboxed ``S x S`` input (K = C, or C + 1
with the background channel last). :class:`ClassLogits` maps them to the candidate's STORED pixels (letterbox and
reduce-on-decode undone in one bilinear sampling of the logits at each stored pixel's centre, as
:func:`.predict.instance_region` does for instance masks; ultralytics upsamples twice, to the input then to the
image) in strips of rows: a ``[K, rows, W]`` float strip at a time, never ``K x H x W``.

Training runs ultralytics' ``SemanticSegmentationTrainer`` (its recipe, loss and augmentation); each stage is the
EMA model as inference loads it, predicting the validation set through the same code as inference, scored by the
core's :class:`ymir_runner.stages.StageEvaluator` (the platform's mIoU), the core's best-stage rule
(:func:`ymir_runner.stages.fitness`: mIoU), and the best stage exported to ONNX (ultralytics' semantic export:
``images [1,3,S,S]`` in, the ``[1,S,S]`` uint8 class map out, argmax in the graph).

Mining: ``entropy`` and ``aldd`` on the softmax maps of the letterboxed image's content (the pad cut off), through
:func:`ymir_runner.mining.mine_candidates`; ``random`` without a model.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import shutil
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import numpy as np
import yaml

from ymir_runner import (
    ConfigError,
    DatasetError,
    EncodedMask,
    ImageProblem,
    Item,
    ModelError,
    inference,
    mining,
    stages,
)
from ymir_runner.inference import LabelMap
from ymir_runner.mining import MiningSettings

from . import dataset, devices, environment, training, weights
from .predict import Fitted, _axis, letterbox

if TYPE_CHECKING:
    from ymir_runner import DecodedImage, TaskContext

#: YMIR's semantic-segmentation object type and ultralytics' task.
SEMANTIC = 3
TASK = "semantic"
#: The core's label-map value of pixels of no class (the platform's canvas), ultralytics' ignore label too.
IGNORE_LABEL = 255
BACKGROUND, IGNORE = "background", "ignore"
#: The name of the extra class in data.yaml (ultralytics' own word for its polygon datasets' extra class).
BACKGROUND_NAME = "background"
#: Logit samples per strip when mapping to stored pixels (``K x rows x W`` float32: 16 MB), whatever the image.
STRIP_ELEMENTS = 1 << 22
#: The run's model in ``context.run_cache``: mining and inference of one run share it.
MODEL_CACHE_KEY = "ymir_runner_ultralytics.semantic_model"


# --- the dataset ---------------------------------------------------------------------------------------------

def mask_lut(classes: int, unlabelled: str) -> np.ndarray:
    """The ``[256]`` uint8 table from the core's label map to the PNG mask: the identity, and with ``background``
    255 -> ``classes`` (the extra class)."""
    lut = np.arange(256, dtype=np.uint8)
    if unlabelled == BACKGROUND:
        lut[IGNORE_LABEL] = classes
    return lut


def label_mask(item: Item, classes: int, unlabelled: str) -> np.ndarray:
    """Image ``item``'s training mask ``[H, W]`` uint8 in stored pixels: its label map (the core's reader) through
    :func:`mask_lut`."""
    return mask_lut(classes, unlabelled)[item.label_map()]


def write_layout(root: str, splits: dict[str, Iterable[Item]], class_names: Sequence[str], skips: Any,
                 unlabelled: str) -> tuple[dataset.Layout, int]:
    """Write ``splits`` (name -> the core's ``Item`` records) under ``root`` in ultralytics' semantic layout (see the
    module's docstring) and return it with the number of images that have no labelled pixel (kept). Images the core
    cannot decode, or smaller than ultralytics accepts, are left out and counted in ``skips``; ``root`` is emptied
    first."""
    from PIL import Image

    shutil.rmtree(root, ignore_errors=True)
    layout = dataset.Layout(root, os.path.join(root, "data.yaml"), {}, collections.Counter(), collections.Counter())
    classes = len(class_names)
    lut = mask_lut(classes, unlabelled)
    unlabelled_images = 0
    for split, items in splits.items():
        images, masks = os.path.join(root, "images", split), os.path.join(root, "masks", split)
        os.makedirs(images, exist_ok=True)
        os.makedirs(masks, exist_ok=True)
        used = layout.splits.setdefault(split, [])
        for item in items:
            name = f"{len(used):06d}_{os.path.splitext(os.path.basename(item.image))[0]}"
            try:
                width, height = dataset.stored_size(item)
                if min(width, height) < dataset.MIN_SIDE:
                    skips.skip("image smaller than 10 pixels", item.image, f"{width}x{height}: ultralytics needs 10")
                    layout.skipped["image smaller than 10 pixels"] += 1
                    continue
                dataset._place_image(item, os.path.join(images, name), layout.converted)
            except ImageProblem as problem:
                skips.skip(problem.reason, item.image, str(problem))
                layout.skipped[problem.reason] += 1
                continue
            item = item._replace(width=width, height=height)
            label_map = item.label_map()
            if not (label_map != IGNORE_LABEL).any():
                unlabelled_images += 1
            Image.fromarray(lut[label_map]).save(os.path.join(masks, f"{name}.png"))
            used.append(item)
    names = {index: name for index, name in enumerate(class_names)}
    if unlabelled == BACKGROUND:
        names[classes] = BACKGROUND_NAME
    data = {"path": root, **{split: f"images/{split}" for split in splits}, "names": names, "masks_dir": "masks"}
    with open(layout.data_yaml, "w", encoding="utf-8") as stream:
        yaml.safe_dump(data, stream, sort_keys=False, allow_unicode=True)
    return layout, unlabelled_images


# --- the model's output in stored pixels -------------------------------------------------------------------------

@dataclasses.dataclass
class ClassLogits:
    """A semantic model's output on one letterboxed image: ``logits [K, h, w]`` float32 on the head's grid (stride 8
    over the ``img_size`` input), the letterbox ``fit``, and ``background``: the channel of the extra background class
    (None: every channel is a class). A :class:`ymir_runner.inference.SegPrediction`."""

    logits: np.ndarray
    fit: Any
    img_size: int
    background: int | None = None

    def label_map(self, width: int, height: int, factor: float = 1) -> LabelMap:
        """The prediction in the pixels of a ``width`` x ``height`` image (STORED pixels; ``factor``: the decode's
        reduction, the letterboxed image was ``factor`` times smaller): each pixel's logits sampled bilinearly at its
        centre (align_corners False, edges clamped, as ``F.interpolate``), ``labels [H, W]`` uint8 their argmax (the
        background channel: no class, ``unlabelled`` = its index) and ``probability [H, W]`` float32 the top-1
        softmax probability. Made in strips of rows: at most :data:`STRIP_ELEMENTS` logit samples at a time."""
        channels, rows, columns = self.logits.shape
        fit = self.fit
        low_y, high_y, weight_y = _axis(0, height, factor, fit.ratio_y, fit.pad_y, self.img_size, rows)
        low_x, high_x, weight_x = _axis(0, width, factor, fit.ratio_x, fit.pad_x, self.img_size, columns)
        labels = np.empty((height, width), np.uint8 if channels <= 256 else np.int32)
        probability = np.empty((height, width), np.float32)
        logits = self.logits.astype(np.float32, copy=False)
        step = max(1, STRIP_ELEMENTS // max(channels * width, 1))
        for start in range(0, height, step):
            stop = min(start + step, height)
            weight = weight_y[start:stop, None]
            lines = logits[:, low_y[start:stop]] * (1 - weight) + logits[:, high_y[start:stop]] * weight  # [K,r,w]
            strip = lines[:, :, low_x] * (1 - weight_x)
            strip += lines[:, :, high_x] * weight_x  # [K, rows, W]
            labels[start:stop] = strip.argmax(0)
            strip -= strip.max(0)
            np.exp(strip, out=strip)
            probability[start:stop] = 1.0 / strip.sum(0)
        return LabelMap(labels, probability, self.background)

    __call__ = label_map


def encoded_classes(label_map: LabelMap, classes: int) -> list[EncodedMask]:
    """One :class:`ymir_runner.EncodedMask` (compressed RLE of the stored-size mask) per class present in
    ``label_map``, its score the mean probability over its pixels: what infer-result.json holds for the image, kept as
    strings (a stage's predictions on the whole validation set are never label maps in memory)."""
    from faster_coco_eval.core import mask as coco_mask  # the core's codec (ymir_runner.protocol.masks)

    labels = label_map.labels
    height, width = labels.shape
    counts = np.bincount(labels.ravel(), minlength=classes)[:classes]
    sums = np.bincount(labels.ravel(), weights=label_map.probability.ravel(), minlength=classes)[:classes]
    columns = np.asfortranarray(labels)
    objects = []
    for class_id in np.flatnonzero(counts):
        mask = np.asfortranarray(columns == class_id)
        rle = coco_mask.encode(mask.view(np.uint8))
        text = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
        score = float(np.clip(sums[class_id] / counts[class_id], 0.0, 1.0))
        objects.append(EncodedMask({"size": [height, width], "counts": text}, score, int(class_id)))
    return objects


class SemanticPredictor:
    """A semantic network (an ultralytics ``SemanticSegmentationModel``) on ``device`` in eval mode, fed ``img_size``
    letterboxes; ``classes`` the task's class count, ``background`` whether its last channel is the extra class."""

    def __init__(self, network: Any, device: Any, img_size: int, classes: int, background: bool) -> None:
        self.network = network
        self.device = device
        self.img_size = int(img_size)
        self.classes = int(classes)
        self.background = bool(background)
        self.dtype = next(network.parameters()).dtype

    def fit(self, image: np.ndarray) -> Fitted:
        """``image [H,W,3]`` uint8 RGB letterboxed to ``img_size``."""
        return Fitted(*letterbox(image, self.img_size))

    def preprocess(self, decoded: DecodedImage) -> Fitted:
        """Inference's decode side (on the core's threads): the decoded image letterboxed."""
        return self.fit(decoded.pixels)

    def resized(self, decoded: DecodedImage) -> np.ndarray:
        """Mining's decode side: the decoded image scaled as the letterbox scales it (long side ``img_size``), not
        padded, so that :meth:`softmax_maps` knows the content (letterboxing it again only pads)."""
        import cv2

        image = decoded.pixels
        height, width = image.shape[:2]
        ratio = min(self.img_size / height, self.img_size / width)
        size = (max(1, round(width * ratio)), max(1, round(height * ratio)))
        return image if size == (width, height) else cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)

    def logits(self, fitted: Sequence[Fitted], mirrored: bool = False) -> np.ndarray:
        """The network's logits ``[B, K, S/8, S/8]`` float32 on the letterboxed images (``mirrored``: of their mirror
        images, mirrored back onto the same grid)."""
        import torch

        batch = torch.from_numpy(np.stack([image.canvas for image in fitted])).to(self.device)
        batch = batch.permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
        with torch.inference_mode():
            output = self.network(batch.flip(3) if mirrored else batch)
            while isinstance(output, (tuple, list)):
                output = output[0]
            output = output.float()
            return (output.flip(3) if mirrored else output).cpu().numpy()

    def predict(self, fitted: Sequence[Fitted]) -> list[ClassLogits]:
        """Per letterboxed image, its :class:`ClassLogits` (the core asks it for the label map at the stored size)."""
        if not fitted:
            return []
        background = self.classes if self.background else None
        return [ClassLogits(logits, image.fit, self.img_size, background)
                for logits, image in zip(self.logits(fitted), fitted)]

    def softmax_maps(self, images: Sequence[np.ndarray], views: int = 1) -> list[list[np.ndarray]]:
        """The mining maps: per image (:meth:`resized`), ``views`` softmax maps ``[C, h, w]`` (1: the image; 2: also
        its mirror image, mirrored back) on the head's grid cells whose centres lie on the image, not the pad.

        Of a model with a background channel each pixel's distribution over the classes alone is given, ``[C, h, w]``,
        ``p_c / (1 - p_background)`` (the confusion between classes is scored; the one between background and a
        class is not), although the core also takes the whole ``[C + 1, h, w]`` softmax. Measured on the overfit
        two-square model (README; 6 candidates with a colour no class has, 6 like the training images): with the
        renormalisation ``entropy`` ranks the 6 absent-class ones first at epochs 50 (the deployed stage), 150 and
        300; with the whole softmax at none of them (the model's background probabilities stay soft, about 0.55, so
        every background cell is uncertain and the mean entropy is the background's); giving the background's
        probability to the most probable class ranked them apart only at epoch 300. ``aldd`` ranks the familiar
        ones first either way."""
        if not images:
            return []
        fitted = [self.fit(image) for image in images]
        per_view = [self.logits(fitted, mirrored=bool(view)) for view in range(views)]
        maps: list[list[np.ndarray]] = []
        for index, image in enumerate(fitted):
            rows, columns = per_view[0].shape[2:]
            height, width = images[index].shape[:2]
            top, bottom = _cells(image.fit.pad_y, height, self.img_size, rows)
            left, right = _cells(image.fit.pad_x, width, self.img_size, columns)
            maps.append([self._softmax(logits[index][:, top:bottom, left:right]) for logits in per_view])
        return maps

    def _softmax(self, logits: np.ndarray) -> np.ndarray:
        shifted = logits - logits.max(0)
        np.exp(shifted, out=shifted)
        shifted /= shifted.sum(0)
        if not self.background:
            return shifted
        classes = shifted[:self.classes]
        classes /= classes.sum(0)
        return classes


def _cells(pad: int, size: int, img_size: int, cells: int) -> tuple[int, int]:
    """The grid cells (of ``cells`` over ``img_size`` input pixels) whose centres lie in ``[pad, pad + size)``, at
    least one."""
    step = img_size / cells
    start = int(np.clip(np.ceil(pad / step - 0.5), 0, cells - 1))
    stop = int(np.clip(np.ceil((pad + size) / step - 0.5), start + 1, cells))
    return start, stop


# --- the trained model -------------------------------------------------------------------------------------------

def load_model(context: TaskContext, device: str) -> SemanticPredictor:
    """The model of ``model_params_path`` (``context.model_file(".pt")``) as a :class:`SemanticPredictor`, loaded once
    for the mining and inference of a run. ModelError naming ``model_params_path`` for a file that is no ultralytics
    semantic model (a detector or an instance model: 300004), a model of other classes, or an output that is neither
    one channel per class nor one more (background)."""
    cached = context.run_cache.get(MODEL_CACHE_KEY)
    if cached is not None:
        return cached
    key = context.model_key
    path = context.model_file(".pt")
    network, checkpoint = weights.load_checkpoint(path, key, TASK)
    names = weights.class_names_of(network, checkpoint)
    if names != list(context.class_names):
        raise ModelError(f"the model {path} was trained on classes {names} but config key 'class_names' is "
                         f"{list(context.class_names)}")
    classes = len(names)
    channels = int(getattr(network.model[-1], "nc", 0))
    if channels not in (classes, classes + 1) or channels < 2:
        raise ModelError(f"config key {key!r}: {path} has {channels} output channels for {classes} classes: this "
                         f"executor reads one channel per class, plus one for background (1 channel, ultralytics' "
                         f"binary form, is not read)")
    metadata = checkpoint.get(weights.METADATA_KEY) or {}
    trained_size = int(metadata.get("img_size") or (checkpoint.get("train_args") or {}).get("imgsz") or 640)
    img_size = int(context.hyper.img_size or trained_size)
    on = devices.torch_device(device)
    network = network.fuse(verbose=False) if hasattr(network, "fuse") else network
    background = channels == classes + 1
    predictor = SemanticPredictor(network.to(on).eval(), on, img_size, classes, background)
    context.logger.info("model %s: %d classes%s, img_size %d, on %s", path, classes,
                        " and background" if background else "", img_size, on)
    context.run_cache[MODEL_CACHE_KEY] = predictor
    return predictor


# --- the tasks ---------------------------------------------------------------------------------------------------

def train(context: TaskContext) -> None:
    """The training task of a semantic-segmentation executor (see the module's docstring). ConfigError naming
    ``unlabelled_pixels`` for ``ignore`` with one class."""
    hyper = context.hyper
    unlabelled = str(hyper.unlabelled_pixels)
    if unlabelled == IGNORE and len(context.class_names) < 2:
        raise ConfigError(f"config key 'unlabelled_pixels': {IGNORE} with one class ({context.class_names[0]!r}) "
                          f"leaves every labelled pixel of that class and no other to learn from: use {BACKGROUND}")
    device = devices.select_device(context.config.gpu_ids)
    environment.prepare(context.work_dir)  # before ultralytics is imported
    training.choose_auto(hyper, device, context.logger)
    extra = training.extra_args(hyper.ultralytics_args)
    with environment.task_log(), devices.out_of_memory_as_error():
        _train(context, device, extra, unlabelled)


def _train(context: TaskContext, device: str, extra: dict[str, Any], unlabelled: str) -> None:
    hyper, logger = context.hyper, context.logger
    prepare = context.progress.span(0.0, training.PREPARE_END, "preparing data")
    start = weights.resolve_start(hyper.model, environment.weights_dir(),
                                  context.model_file(".pt") if context.model_files else None, SEMANTIC)
    training_items, validation_items = training.read_splits(context, prepare)
    layout, unlabelled_images = write_layout(
        os.path.join(context.work_dir, "dataset"), {"train": training_items, "val": validation_items},
        context.class_names, context.skips, unlabelled)
    if not layout.splits["train"] or not layout.splits["val"]:
        raise DatasetError(f"no usable training or validation image: skipped {context.skips.summary()}")
    logger.info("dataset: %s; PNG label masks, unlabelled pixels: %s (%s); %d images without labelled pixels kept",
                layout.describe(), unlabelled,
                f"class {len(context.class_names)} '{BACKGROUND_NAME}'" if unlabelled == BACKGROUND else
                f"{IGNORE_LABEL}, left out of the loss", unlabelled_images)
    prepare.done()

    model = training._initial_model(context, start)
    writer = SemanticStageWriter(context, layout, device, unlabelled)
    for event, callback in writer.callbacks().items():
        model.add_callback(event, callback)
    arguments = {**training.training_arguments(hyper, layout.data_yaml, device, context.work_dir), **extra}
    training.check_arguments(arguments, extra)
    logger.info("training %s on %s: %d epochs, img_size %d, batch %d, stages at epochs %s", start.path, device,
                hyper.epochs, hyper.img_size, hyper.batch_size_per_gpu, writer.epochs)
    try:
        model.train(trainer=training.trainer_class(writer, TASK), **arguments)
    finally:
        writer.close()
    writer.export_best()


class SemanticStageWriter(training.StageWriter):
    """The stage writer of a semantic training: stages scored on label maps (the platform's mIoU, mAcc, aAcc), the
    deployed stage the highest mIoU (:func:`ymir_runner.stages.fitness`)."""

    def __init__(self, context: TaskContext, layout: dataset.Layout, device: str, unlabelled: str) -> None:
        super().__init__(context, layout, device)
        self.unlabelled = unlabelled
        self.last_metrics = {"metrics/mIoU": 0.0, "metrics/mAcc": 0.0}

    def on_validate(self, trainer: Any) -> tuple[dict, float | None]:
        epoch = trainer.epoch + 1
        if epoch not in self.epochs and not (trainer.stop or epoch >= trainer.epochs):
            return dict(self.last_metrics), None
        network = trainer.ema.ema
        # measured on the network as inference loads it (the checkpoint's fp16 weights in fp32, fused): the argmax
        # flips on far smaller changes, and the stage's mIoU is then what its own infer-result.json scores
        result = self.evaluator.evaluate(epoch, self.predict(training.as_deployed(network)))
        self.evaluated += 1
        metrics = self.write_stage(trainer, epoch, network, result)
        self.last_metrics = {"metrics/mIoU": metrics["mIoU"], "metrics/mAcc": metrics["mAcc"]}
        self._report(trainer)
        return dict(self.last_metrics), stages.fitness(metrics, "mIoU")

    def predict(self, network: Any) -> list[Any]:
        """Each validation image's label map in stored pixels (as inference makes it), as one encoded mask per class
        present; an image that cannot be used: none."""
        classes = len(self.context.class_names)
        predictor = SemanticPredictor(network, self.device, self.hyper.img_size, classes,
                                      self.unlabelled == BACKGROUND)
        batch = max(int(self.hyper.batch_size_per_gpu), 1)
        predictions: list[Any] = []
        for start in range(0, len(self.validation), batch):
            indices = range(start, min(start + batch, len(self.validation)))
            inputs = [self._input(index, predictor) for index in indices]  # type: ignore[arg-type]
            found = iter(predictor.predict([entry[0] for entry in inputs if entry is not None]))
            for index, entry in zip(indices, inputs):
                item = self.validation[index]
                predictions.append([] if entry is None else
                                   encoded_classes(next(found).label_map(item.width, item.height, entry[1]), classes))
        return predictions

    def write_stage(self, trainer: Any, epoch: int, network: Any, result: Any) -> dict[str, float]:
        name = f"epoch_{epoch}"
        metrics = dict(result.stage_metrics())
        path = os.path.join(self.context.training_result.stage_dir(name), training.CHECKPOINT_NAME)
        training.save_checkpoint(path, trainer, network, {
            "class_names": list(self.context.class_names), "img_size": int(self.hyper.img_size), "epoch": epoch,
            "conf_thr": None, "metrics": {key: float(value) for key, value in metrics.items()},
            "object_type": SEMANTIC, "unlabelled_pixels": self.unlabelled})
        self.context.logger.info("stage %s: %s", name,
                                 self.evaluator.add_stage(name, [training.CHECKPOINT_NAME], result))
        return metrics


def infer(context: TaskContext) -> None:
    """The inference task: every candidate's label map in stored pixels, written by the core
    (:func:`ymir_runner.inference.infer_seg_candidates`)."""
    device = devices.select_device(context.config.gpu_ids)
    environment.prepare(context.work_dir)
    with environment.task_log(), devices.out_of_memory_as_error():
        predictor = load_model(context, device)
        inference.infer_seg_candidates(context, predictor.predict, preprocess=predictor.preprocess,
                                       batch_size=int(context.hyper.batch_size_per_gpu), min_side=predictor.img_size)


def mine(context: TaskContext) -> None:
    """The mining task: ``entropy`` (one view) and ``aldd`` (the image and its mirror image) on softmax maps
    (:meth:`SemanticPredictor.softmax_maps`), ``random`` without a model. ConfigError naming ``mining_algorithm`` for
    a model-based algorithm in a one-class task: one channel per class is a constant map, every image would score
    0 (with the whole 2-channel softmax a one-class model overfit on red squares scored 0.51-0.53, 6 candidates with a
    blue square beside the red one mixed with 6 without: measured 2026-12-07, not a ranking shown to mean anything)."""
    settings = MiningSettings.from_context(context)
    if not settings.uses_model:
        mining.mine_candidates(context)
        return
    if len(context.class_names) < 2:
        raise ConfigError(f"config key 'mining_algorithm': {settings.algorithm} on a one-class semantic task scores "
                          f"every image 0 (this executor's softmax maps hold the distribution over the classes, one "
                          f"channel here): use random")
    device = devices.select_device(context.config.gpu_ids)
    environment.prepare(context.work_dir)
    with environment.task_log(), devices.out_of_memory_as_error():
        predictor = load_model(context, device)
        views = 2 if settings.algorithm == "aldd" else 1

        def softmax_maps(images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
            return predictor.softmax_maps(images, views)

        mining.mine_candidates(context, softmax_maps=softmax_maps, preprocess=predictor.resized,
                               batch_size=int(context.hyper.batch_size_per_gpu), min_side=predictor.img_size)
