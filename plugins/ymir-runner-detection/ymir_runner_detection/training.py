"""The training task: the core's context in, model stages out.

Data comes from the core's readers (det-ark / det-voc by ``export_format``), progress goes to the core's
monitor, stages to result.yaml. The engine (:mod:`.engine`) knows nothing of YMIR.
"""

from __future__ import annotations

import dataclasses
import datetime
import glob
import math
import os
import shutil
import time
from typing import Any, Generic, Iterable, Sequence, TypeVar

import numpy as np
import torch

from ymir_runner import (
    ConfigError,
    DatasetError,
    Item,
    ModelError,
    NonFiniteError,
    Prediction,
    TaskContext,
    atomic_path,
)
from ymir_runner.stages import EVAL_COST, StageEvaluator

from .checkpoint import CHECKPOINT_NAME, ONNX_NAME, load_checkpoint, save_checkpoint
from .devices import cpu_share, run_on_devices, select_devices
from .engine import (
    AugmentConfig,
    DetectionDataset,
    NonFiniteLossError,
    NoReadableImageError,
    TargetConfig,
    build_dataloader,
    build_model,
    export_onnx,
    letterbox_scale,
    load_backbone_weights,
    no_readable_image_message,
    reset_class_head,
    set_box_size_prior,
)
from .engine.model import CenterNetDetector
from .engine.train import TrainResult, is_distributed
from .engine.train import train as training_loop
from .predict import Letterboxed, Predictor, decode_side, letterboxed
from .progress import LogProgressBar
from .recipe import Schedule, plan_schedule

#: Shares of the task's progress: reading the dataset, then training + evaluations.
PREPARE_SHARE = 0.03
#: Validation images predicted at once (at least; the training batch when it is larger).
EVAL_BATCH = 16

#: A training image as the engine takes it: path, boxes ``[N,4]`` in stored pixels, classes ``[N]``.
EngineItem = tuple[str, np.ndarray, np.ndarray]


ItemT = TypeVar("ItemT")


@dataclasses.dataclass
class RankPlan(Generic[ItemT]):
    """Everything a training rank needs, picklable for the spawned ranks: the model to build (``model_config``,
    ``initial_state``), the training images and the recipe. A subclass says how its model is built, how its
    images are loaded and what the training loop takes beside the recipe (:meth:`loop_options`)."""

    model_config: dict[str, Any]
    initial_state: dict[str, torch.Tensor]
    train_items: list[ItemT]
    img_size: int
    schedule: Schedule
    batch_size: int
    num_workers: int
    learning_rate: float
    optimizer: str
    weight_decay: float
    seed: int
    flip: bool

    def build_model(self) -> torch.nn.Module:
        raise NotImplementedError

    def loader(self, model: torch.nn.Module, distributed: bool) -> Any:
        raise NotImplementedError

    def loop_options(self, model: torch.nn.Module) -> dict[str, Any]:
        """Keyword arguments of :func:`.engine.train.train` beside the recipe (none by default)."""
        return {}

    def run(self, model: torch.nn.Module, device: str, **callbacks: Any) -> TrainResult:
        loader = self.loader(model, is_distributed())
        if len(loader) != self.schedule.steps_per_epoch:  # one formula for the plan and the loader, or a bug
            raise RuntimeError(f"the schedule planned {self.schedule.steps_per_epoch} steps per epoch, the "
                               f"DataLoader has {len(loader)}")
        return training_loop(model, loader, epochs=self.schedule.epochs, lr=self.learning_rate,
                             optimizer=self.optimizer, weight_decay=self.weight_decay,
                             warmup_steps=self.schedule.warmup_steps, device=device, seed=self.seed,
                             **self.loop_options(model), **callbacks)


@dataclasses.dataclass
class TrainingPlan(RankPlan[EngineItem]):
    """The detector's :class:`RankPlan`: mosaic and flips, targets encoded for the model's heads."""

    mosaic: float

    def build_model(self) -> torch.nn.Module:
        from .engine import build_model_from_config

        model = build_model_from_config(self.model_config)
        model.load_state_dict(self.initial_state)
        return model

    def loader(self, model: torch.nn.Module, distributed: bool) -> Any:
        augment = AugmentConfig(flip_prob=0.5 if self.flip else 0.0, mosaic_prob=self.mosaic)
        dataset = DetectionDataset(self.train_items, self.img_size, train=True, augment=augment,
                                   target_config=TargetConfig.for_model(model))
        return build_dataloader(dataset, self.batch_size, shuffle=True, num_workers=self.num_workers,
                                full_batches=True, seed=self.seed, distributed=distributed)


def train_rank(rank: int, world_size: int, device: str, plan: RankPlan, **callbacks: Any) -> TrainResult:
    """One rank of a training (the only one on a single device); only rank 0 gets the stage callbacks."""
    return plan.run(plan.build_model(), device, **callbacks)


def report_image_problems(context: TaskContext, result: TrainResult, items: Sequence[EngineItem]) -> None:
    """Count and name, once per image path, what the training DataLoader's decoding found that the core's reader
    could not see from the header: images that do not decode are skipped (``unreadable image``); images whose data
    breaks off were used as far as they decode (``truncated image`` / ``corrupt image data``), unless the reader
    counted them already. (Validation images go through ``context.decode``, which counts them itself.)"""
    counted = {item.image for item in context.training_set if item.damage}
    for index, reason in sorted(result.unreadable.items()):
        context.skips.skip("unreadable image", items[index][0], "found when decoding it" + (f": {reason}" if reason
                                                                                               else ""))
    for index, reason in sorted(result.damaged.items()):
        if items[index][0] not in counted:
            context.skips.repair(reason, items[index][0], "found when decoding it: used as far as its data goes")


def read_items(items: Sequence[Item]) -> list[EngineItem]:
    """Dataset items as engine items; boxes are already in pixel-edge coordinates (x2 exclusive)."""
    engine_items = []
    for item in items:
        boxes = np.array([box[1:5] for box in item.boxes], dtype=np.float32).reshape(-1, 4)
        classes = np.array([box.class_id for box in item.boxes], dtype=np.int64)
        engine_items.append((item.image, boxes, classes))
    return engine_items


def _initial_model(context: TaskContext) -> CenterNetDetector:
    """From scratch, or from a pretrained checkpoint of this plugin (class head re-initialised when the
    class list changed)."""
    hyper, class_names = context.hyper, list(context.class_names)
    paths = context.model_files
    if not paths:
        torch.manual_seed(hyper.seed)
        model = build_model(hyper.model, len(class_names))
        if hyper.pretrained_backbone:
            path = backbone_weights_file(hyper.pretrained_backbone, hyper.model)
            try:
                count = load_backbone_weights(model, torch.load(path, map_location="cpu", weights_only=True))
            except Exception as error:  # not a state_dict, another architecture, an unreadable file
                raise ModelError(f"config key 'pretrained_backbone': {path} cannot be loaded into {hyper.model} "
                                 f"({error})") from error
            context.logger.info("backbone: %d ImageNet tensors from %s", count, path)
        sizes = input_box_sizes(context.training_set, hyper.img_size)
        prior = set_box_size_prior(model, sizes)
        if prior:
            context.logger.info("box head starts at %.0f x %.0f px, the geometric mean size of the %d training boxes "
                                "at img_size %d", prior[0], prior[1], len(sizes), hyper.img_size)
        return model
    if hyper.pretrained_backbone:
        context.logger.info("config key 'pretrained_backbone' is not used: training starts from %s", paths[0])
    checkpoint = load_checkpoint(context.model_file(".pt"))
    if checkpoint.task != "detection":
        raise ModelError(f"config key '{context.model_key}': {checkpoint.path} is a {checkpoint.task} "
                         f"segmentation model; a detection training starts from a detection model of this plugin")
    model = checkpoint.build_model()
    if checkpoint.class_names != class_names:
        context.logger.info("pretrained classes %s differ from the task's %s: class head re-initialised, "
                            "backbone, neck and box head kept", checkpoint.class_names, class_names)
        torch.manual_seed(hyper.seed)
        reset_class_head(model, len(class_names))
    else:
        context.logger.info("continuing from %s (epoch %d)", checkpoint.path, checkpoint.epoch)
    if checkpoint.model_config.get("size") != hyper.model:
        context.logger.info("model size %r comes from the pretrained checkpoint (config asks for %r)",
                            checkpoint.model_config.get("size"), hyper.model)
    return model


def input_box_sizes(reader: Iterable[Item], img_size: int) -> np.ndarray:
    """``[N, 2]`` widths and heights of a dataset's boxes in network-input pixels: stored pixels times the
    letterbox scale of their image (images of unknown size are left out)."""
    sizes = [((box.x2 - box.x1) * scale, (box.y2 - box.y1) * scale)
             for item in reader if item.width > 0 and item.height > 0
             for scale in (letterbox_scale(item.width, item.height, img_size),) for box in item.boxes]
    return np.array(sizes, dtype=np.float64).reshape(-1, 2)


def backbone_weights_file(setting: str, model: str) -> str:
    """The weights file of config key ``pretrained_backbone``: the path itself, or in a folder the one file named
    ``<model>-*.pth`` (torchvision's published names, e.g. ``resnet18-f37072fd.pth``). ConfigError otherwise."""
    if model not in ("resnet18", "resnet34"):
        raise ConfigError(f"config key 'pretrained_backbone' needs model resnet18 or resnet34, not {model!r}")
    if os.path.isdir(setting):
        found = sorted(glob.glob(os.path.join(glob.escape(setting), f"{model}-*.pth")))
        if len(found) != 1:
            raise ConfigError(f"config key 'pretrained_backbone': {setting} holds {len(found)} files named "
                              f"{model}-*.pth, expected one")
        return found[0]
    if not os.path.isfile(setting):
        raise ConfigError(f"config key 'pretrained_backbone': {setting} is not a file or a folder")
    return setting


def train(context: TaskContext) -> None:
    """Train on ``context.training_set``; every stage epoch, evaluate on the validation set (the core's
    :class:`StageEvaluator`) and write the stage: checkpoint, ONNX export, metrics."""
    hyper = context.hyper
    devices = select_devices(context.config.gpu_ids)
    prepare = context.progress.span(0.0, PREPARE_SHARE, "preparing data")
    train_items = read_items(list(context.training_set))
    prepare.update(0.7)
    validation = list(context.validation_set)
    prepare.done()
    if not train_items:
        raise DatasetError(f"no usable training image: skipped {context.skips.summary()}")
    if not validation:
        context.logger.warning("the validation set has no usable image: stage metrics are measured on the "
                               "TRAINING set and are optimistic")
        validation = list(context.training_set)
    model = _initial_model(context)
    model_config = model.config()
    schedule = plan_schedule(len(train_items), hyper.batch_size_per_gpu, epochs=hyper.epochs,
                             min_steps=hyper.min_steps, warmup_epochs=hyper.warmup_epochs,
                             save_period=hyper.save_period, world_size=len(devices))
    share = cpu_share(devices, hyper.num_workers_per_gpu, context.logger)
    plan = TrainingPlan(
        model_config=model_config, initial_state=model.state_dict(), train_items=train_items, img_size=hyper.img_size,
        schedule=schedule, batch_size=hyper.batch_size_per_gpu, num_workers=share.workers,
        learning_rate=hyper.learning_rate, optimizer=hyper.optimizer, weight_decay=hyper.weight_decay,
        seed=hyper.seed, flip=hyper.flip, mosaic=hyper.mosaic)
    context.logger.info("training %s (%d classes) on %d images, validating on %d, img_size %d, device%s %s, %s "
                        "per rank", model_config.get("size"), len(context.class_names), len(train_items),
                        len(validation), hyper.img_size, "s" if len(devices) > 1 else "", ", ".join(devices),
                        share.describe())
    for line in schedule.describe():
        context.logger.info("schedule: %s", line)
    for warning in schedule.warnings():
        context.logger.warning("schedule: %s", warning)
    stages = StageWriter(context, plan, validation)
    try:
        # Rank 0 (this process) reports progress and writes the stages; the other ranks train in lockstep.
        result = run_on_devices(train_rank, devices, plan, threads=share.threads, process_group=True,
                                local_kwargs=stages.callbacks())[0]
    except NoReadableImageError as error:  # from a DataLoader worker: its traceback is no use to a user
        raise DatasetError(no_readable_image_message(error)) from None
    except NonFiniteLossError as error:
        raise NonFiniteError(f"training diverged: the loss became NaN/inf at step {error.step}; "
                             f"lower config key 'learning_rate' (now {hyper.learning_rate})") from error
    finally:
        stages.close()
    report_image_problems(context, result, train_items)
    context.logger.info("trained %d steps in %.0f s: %.1f images/s, %.1f%% of the time waiting for data",
                        result.steps, result.train_seconds, result.images_per_second, 100 * result.data_wait_share)


class ValidationSet:
    """The validation images as the network sees them: decoded by ``context.decode`` (an image that cannot be used
    is skipped, counted and named there, once) and letterboxed, a batch at a time, every stage anew.

    Built from the images that decode: each is decoded once here, for its stored size and to leave out the ones
    that cannot be used (they have no prediction to evaluate)."""

    def __init__(self, context: TaskContext, items: Sequence[Item], img_size: int) -> None:
        self.context = context
        self.img_size = img_size
        self.items: list[Item] = []
        self.sizes: list[tuple[int, int]] = []
        for item in items:
            decoded = context.decode(item, min_side=decode_side(img_size))
            if decoded is not None:
                self.items.append(item)
                self.sizes.append((decoded.width, decoded.height))

    def ground_truths(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per image: boxes ``[N,4]`` in stored pixels and classes ``[N]``."""
        return [(boxes, classes) for _, boxes, classes in read_items(self.items)]

    def batches(self, size: int) -> Iterable[list[Letterboxed | None]]:
        """The images letterboxed, ``size`` at a time (None for an image that no longer decodes)."""
        for start in range(0, len(self.items), size):
            decoded = [self.context.decode(item, min_side=decode_side(self.img_size))
                       for item in self.items[start:start + size]]
            yield [None if image is None else letterboxed(image, self.img_size) for image in decoded]


class StageWriter:
    """Engine callbacks: progress, logs, tensorboard, and at every stage epoch an evaluated stage. The semantic
    executor's writer (``semantic.training.SemanticStageWriter``) is this one with its own loss parts, ground truth
    and :meth:`save_stage`."""

    #: The engine's per-step values written to tensorboard every 10 steps (``train/<key>``).
    STEP_SCALARS: tuple[str, ...] = ("loss", "heatmap", "box", "lr")
    #: The epoch metrics written to tensorboard at each epoch's end (``epoch/<key>``).
    EPOCH_SCALARS: tuple[str, ...] = ("loss", "heatmap", "box", "images_per_second", "data_wait_share")

    def __init__(self, context: TaskContext, plan: Any, validation: Sequence[Item]) -> None:
        self.context = context
        self.plan = plan
        self.hyper = context.hyper
        self.progress = context.progress.span(PREPARE_SHARE, 1.0, "training")
        self.validation = ValidationSet(context, validation, plan.img_size)
        if not self.validation.items:
            raise DatasetError(f"no validation image can be decoded: skipped {context.skips.summary()}")
        self.evaluator = StageEvaluator(context, self.ground_truths(), self.validation.sizes,
                                        [item.image for item in self.validation.items])
        self.schedule = plan.schedule
        self.evaluations = len(self.schedule.stage_epochs)
        self.eval_steps = EVAL_COST * len(self.validation.items) / plan.batch_size  # in training-step units
        self.evaluated = 0
        self.total_steps = 1
        self.steps_done = 0
        self.started = time.monotonic()
        self.bar = LogProgressBar(context.logger, total=self.schedule.epochs, unit="epoch")
        self.tb = context.tensorboard

    def ground_truths(self) -> Any:
        """What the stage evaluator scores against: per validation image, boxes and classes."""
        return self.validation.ground_truths()

    def callbacks(self) -> dict[str, Any]:
        return {"on_step": self.on_step, "on_epoch_end": self.on_epoch_end}

    def _report(self, message: str | None = None) -> None:
        work = self.total_steps + self.evaluations * self.eval_steps
        self.progress.update((self.steps_done + self.evaluated * self.eval_steps) / work, message)

    def on_step(self, step: int, total_steps: int, info: dict) -> None:
        self.steps_done, self.total_steps = step, total_steps
        self._report()
        if step % 10 == 0:
            for key in self.STEP_SCALARS:
                self.tb.add_scalar(f"train/{key}", info[key], step)

    def on_epoch_end(self, epoch: int, metrics: dict, model: Any) -> None:
        number = epoch + 1
        for key in self.EPOCH_SCALARS:
            self.tb.add_scalar(f"epoch/{key}", metrics[key], number)
        summary = f"loss {metrics['loss']:.3f} lr {metrics['lr']:.2e} {metrics['images_per_second']:.1f} img/s"
        if self.schedule.is_stage(number):
            summary += " " + self.save_stage(number, model)
        elapsed = time.monotonic() - self.started
        remaining = elapsed / number * (self.schedule.epochs - number)
        self.bar.update(number, f"{summary} ETA {_duration(remaining)}")
        self._report(f"epoch {number}/{self.schedule.epochs}")

    def predict(self, model: CenterNetDetector) -> list[Prediction]:
        """Every validation image's peaks down to ``StageEvaluator.SCORE_FLOOR``, the evaluator's
        ``max_detections`` best, in stored pixels (an image that no longer decodes: none)."""
        predictor = Predictor(model, next(model.parameters()).device)
        predictions: list[Prediction] = []
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for batch in self.validation.batches(max(self.plan.batch_size, EVAL_BATCH)):
                    inputs = [entry for entry in batch if entry is not None]
                    found = iter(predictor.for_evaluation(inputs, score_floor=StageEvaluator.SCORE_FLOOR,
                                                          top_k=self.evaluator.max_detections) if inputs else [])
                    predictions += [next(found) if entry is not None else Prediction(np.zeros((0, 4)), [], [])
                                    for entry in batch]
        finally:
            model.train(was_training)
        return predictions

    def save_stage(self, epoch: int, model: Any) -> str:
        result = self.evaluator.evaluate(epoch, self.predict(model))
        self.evaluated += 1
        name = f"epoch_{epoch}"
        folder = self.context.training_result.stage_dir(name)
        files = [CHECKPOINT_NAME]
        try:
            # conf_thr: the score this stage's tp/fp/fn were counted at (inference's default threshold); a stage
            # without a true positive has no F1 optimum, and the default must not be stored as one.
            save_checkpoint(model, os.path.join(folder, CHECKPOINT_NAME), class_names=self.context.class_names,
                            img_size=self.plan.img_size, epoch=epoch,
                            metrics={**result.stage_metrics(), "conf_thr": result.score_threshold},
                            score_threshold=result.score_threshold
                            if self.hyper.conf_threshold or result.true_positives else None)
            if self.hyper.export_onnx:
                # optional: the checkpoint is the model; a failed export is warned about, counted and not listed
                with self.context.optional_output("ONNX export") as onnx:
                    with atomic_path(os.path.join(folder, ONNX_NAME)) as tmp:
                        export_onnx(model, tmp, self.plan.img_size)
                if onnx.ok:
                    files.append(ONNX_NAME)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # a stage result.yaml does not list only fills the disk
            raise
        return self.evaluator.add_stage(name, files, result)

    def close(self) -> None:
        self.bar.close()
        self.tb.flush()


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds))) if math.isfinite(seconds) else "?"
