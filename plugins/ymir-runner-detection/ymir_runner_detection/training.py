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
from typing import Any, Sequence

import numpy as np
import torch

from ymir_runner import ConfigError, DatasetError, ModelError, NonFiniteError, Param, atomic_path

from .checkpoint import CHECKPOINT_NAME, ONNX_NAME, find_checkpoint, load_checkpoint, save_checkpoint
from .engine import (
    AugmentConfig,
    DetectionDataset,
    NonFiniteLossError,
    NoReadableImageError,
    TargetConfig,
    build_dataloader,
    build_model,
    evaluate_model,
    export_onnx,
    letterbox_scale,
    load_backbone_weights,
    no_readable_image_message,
    reset_class_head,
    set_box_size_prior,
)
from .engine.train import TrainResult, is_distributed
from .engine.train import train as training_loop
from .launch import cpu_share, run_on_devices, select_devices
from .progress import LogProgressBar
from .recipe import Schedule, plan_schedule
from .templates import AUTO_MAX_DETECTIONS
from .visualize import draw_detections

#: Shares of the task's progress: reading the dataset, then training + evaluations.
PREPARE_SHARE = 0.03
#: An evaluation of one image costs about this many training images (forward only, no augmentation).
EVAL_COST = 0.35
#: A stage's fitness is ``MAP_WEIGHT * mAP + (1 - MAP_WEIGHT) * mAP50_95`` (ultralytics' fitness: mostly
#: localisation quality, so a lucky stage at one loose IoU does not win).
MAP_WEIGHT = 0.1
#: The best stage has the highest mean fitness over itself and the ``SELECTION_WINDOW - 1`` stages before it
#: (fewer at the start of a run): on a small validation set one evaluation can be lucky by several points, a run
#: of three rarely is. The window looks back only, so a stage's rank never changes once it is written.
SELECTION_WINDOW = 3

Item = tuple[str, np.ndarray, np.ndarray]


@dataclasses.dataclass
class TrainingPlan:
    """Everything a training rank needs, picklable for the spawned ranks."""

    model_config: dict[str, Any]
    initial_state: dict[str, torch.Tensor]
    train_items: list[Item]
    img_size: int
    schedule: Schedule
    batch_size: int
    num_workers: int
    learning_rate: float
    optimizer: str
    weight_decay: float
    seed: int
    flip: bool
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

    def run(self, model: torch.nn.Module, device: str, **callbacks: Any) -> TrainResult:
        loader = self.loader(model, is_distributed())
        if len(loader) != self.schedule.steps_per_epoch:  # one formula for the plan and the loader, or a bug
            raise RuntimeError(f"the schedule planned {self.schedule.steps_per_epoch} steps per epoch, the "
                               f"DataLoader has {len(loader)}")
        return training_loop(model, loader, epochs=self.schedule.epochs, lr=self.learning_rate,
                             optimizer=self.optimizer, weight_decay=self.weight_decay,
                             warmup_steps=self.schedule.warmup_steps, device=device, seed=self.seed, **callbacks)


def _train_rank(rank: int, world_size: int, device: str, plan: TrainingPlan, **callbacks: Any) -> TrainResult:
    """One rank of the training (the only one on a single device); only rank 0 gets the stage callbacks."""
    return plan.run(plan.build_model(), device, **callbacks)


def report_image_problems(skips: Any, unreadable: dict[str, str], damaged: dict[str, str], counted: set[str]) -> None:
    """Count and name, once per image path, what decoding found that the core's reader could not see from the
    header: images that do not decode are skipped (``unreadable image``); images whose data breaks off were used
    as far as they decode (``truncated image`` / ``corrupt image data``), unless the reader counted them
    already (``counted``: their paths)."""
    for path, reason in sorted(unreadable.items()):
        skips.skip("unreadable image", path, "found when decoding it" + (f": {reason}" if reason else ""))
    for path, reason in sorted(damaged.items()):
        if path not in counted:
            skips.repair(reason, path, "found when decoding it: used as far as its data goes")


def read_items(reader: Any) -> list[Item]:
    """The dataset as engine items; boxes are already in pixel-edge coordinates (x2 exclusive)."""
    items = []
    for item in reader:
        boxes = np.array([box[1:5] for box in item.boxes], dtype=np.float32).reshape(-1, 4)
        classes = np.array([box.class_id for box in item.boxes], dtype=np.int64)
        items.append((item.image, boxes, classes))
    return items


def _check_hyper(hyper: Any) -> None:
    """Refuse impossible values naming the key. The ranges are the template's declared bounds, checked by the core
    before the task starts; what is left are the rules a range cannot say."""
    if hyper.img_size % 32:
        raise ConfigError(f"config key 'img_size': {hyper.img_size} must be a multiple of 32")
    if not hyper.learning_rate > 0:
        raise ConfigError(f"config key 'learning_rate': {hyper.learning_rate} must be positive")
    if not 0.0 < hyper.map_iou_threshold < 1.0:
        raise ConfigError(f"config key 'map_iou_threshold': {hyper.map_iou_threshold} must be in (0, 1)")


def _initial_model(context: Any) -> torch.nn.Module:
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
    checkpoint = load_checkpoint(find_checkpoint(paths, "pretrained_model_params"))
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


def input_box_sizes(reader: Any, img_size: int) -> np.ndarray:
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


def train(context: Any) -> None:
    hyper = context.hyper
    _check_hyper(hyper)
    devices = select_devices(context.config.gpu_ids)
    prepare = context.progress.span(0.0, PREPARE_SHARE, "preparing data")
    train_items = read_items(context.training_set)
    prepare.update(0.7)
    val_items = read_items(context.validation_set)
    prepare.done()
    if not train_items:
        raise DatasetError(f"no usable training image: skipped {context.skips.summary()}")
    if not val_items:
        context.logger.warning("the validation set has no usable image: stage metrics are measured on the "
                               "TRAINING set and are optimistic")
        val_items = train_items
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
                        len(val_items), hyper.img_size, "s" if len(devices) > 1 else "", ", ".join(devices),
                        share.describe())
    for line in schedule.describe():
        context.logger.info("schedule: %s", line)
    for warning in schedule.warnings():
        context.logger.warning("schedule: %s", warning)
    stages = StageWriter(context, plan, val_items)
    try:
        # Rank 0 (this process) reports progress and writes the stages; the other ranks train in lockstep.
        result = run_on_devices(_train_rank, devices, plan, threads=share.threads, process_group=True,
                                local_kwargs=stages.callbacks())[0]
    except NoReadableImageError as error:  # from a DataLoader worker: its traceback is no use to a user
        raise DatasetError(no_readable_image_message(error)) from None
    except NonFiniteLossError as error:
        raise NonFiniteError(f"training diverged: the loss became NaN/inf at step {error.step}; "
                             f"lower config key 'learning_rate' (now {hyper.learning_rate})") from error
    finally:
        stages.close()
    counted = {item.image for reader in (context.training_set, context.validation_set) for item in reader
               if item.damage}
    unreadable = {train_items[index][0]: reason for index, reason in result.unreadable.items()}
    unreadable.update({val_items[index][0]: reason for index, reason in stages.val_unreadable.items()})
    damaged = {train_items[index][0]: reason for index, reason in result.damaged.items()}
    damaged.update({val_items[index][0]: reason for index, reason in stages.val_damaged.items()})
    report_image_problems(context.skips, unreadable, damaged, counted)
    context.logger.info("trained %d steps in %.0f s: %.1f images/s, %.1f%% of the time waiting for data",
                        result.steps, result.train_seconds, result.images_per_second, 100 * result.data_wait_share)


def validation_max_detections(setting: int | str, classes_per_image: Sequence[Any]) -> int:
    """Detections kept per validation image (and COCO's maxDets), config key ``max_detections``: a number as set;
    ``auto``: ``AUTO_MAX_DETECTIONS``, or the object count of the densest image when it has more, so a model that
    finds every object can score mAP 1.0 on any scene."""
    if setting != Param.AUTO:
        return int(setting)
    return max(AUTO_MAX_DETECTIONS, densest(classes_per_image))


def densest(classes_per_image: Sequence[Any]) -> int:
    """The object count of the image that has the most."""
    return max((len(classes) for classes in classes_per_image), default=0)


class StageWriter:
    """Engine callbacks: progress, logs, tensorboard, and every ``save_period`` epochs an evaluated stage."""

    def __init__(self, context: Any, plan: TrainingPlan, val_items: list[Item]) -> None:
        self.context = context
        self.plan = plan
        self.hyper = context.hyper
        self.progress = context.progress.span(PREPARE_SHARE, 1.0, "training")
        val_set = DetectionDataset(val_items, plan.img_size)
        self.val_loader = build_dataloader(val_set, max(plan.batch_size, 16), shuffle=False,
                                           num_workers=0, distributed=False)
        objects = [classes for _, _, classes in val_items]
        self.max_detections = validation_max_detections(self.hyper.max_detections, objects)
        if self.hyper.max_detections == Param.AUTO:
            context.logger.info("max_detections auto: %d per validation image (at least %d; the densest validation "
                                "image has %d objects)", self.max_detections, AUTO_MAX_DETECTIONS, densest(objects))
        elif self.max_detections < densest(objects):
            context.logger.warning("config key 'max_detections' %d: the densest validation image has %d objects, so "
                                   "no stage can find them all there (max_detections: auto would keep %d)",
                                   self.max_detections, densest(objects),
                                   validation_max_detections(Param.AUTO, objects))
        self.val_unreadable: dict[int, str] = {}
        self.val_damaged: dict[int, str] = {}
        self.schedule = plan.schedule
        self.evaluations = len(self.schedule.stage_epochs)
        self.fitness_history: list[float] = []
        self.eval_steps = EVAL_COST * len(val_items) / plan.batch_size  # in training-step units
        self.evaluated = 0
        self.total_steps = 1
        self.steps_done = 0
        self.started = time.monotonic()
        self.bar = LogProgressBar(context.logger, total=self.schedule.epochs, unit="epoch")
        self.tb = context.tensorboard

    def callbacks(self) -> dict[str, Any]:
        return {"on_step": self.on_step, "on_epoch_end": self.on_epoch_end}

    def _report(self, message: str | None = None) -> None:
        work = self.total_steps + self.evaluations * self.eval_steps
        self.progress.update((self.steps_done + self.evaluated * self.eval_steps) / work, message)

    def on_step(self, step: int, total_steps: int, info: dict) -> None:
        self.steps_done, self.total_steps = step, total_steps
        self._report()
        if step % 10 == 0:
            for key in ("loss", "heatmap", "box", "lr"):
                self.tb.add_scalar(f"train/{key}", info[key], step)

    def on_epoch_end(self, epoch: int, metrics: dict, model: torch.nn.Module) -> None:
        number = epoch + 1
        for key in ("loss", "heatmap", "box"):
            self.tb.add_scalar(f"epoch/{key}", metrics[key], number)
        self.tb.add_scalar("epoch/images_per_second", metrics["images_per_second"], number)
        self.tb.add_scalar("epoch/data_wait_share", metrics["data_wait_share"], number)
        summary = f"loss {metrics['loss']:.3f} lr {metrics['lr']:.2e} {metrics['images_per_second']:.1f} img/s"
        if self.schedule.is_stage(number):
            summary += " " + self.save_stage(number, model)
        elapsed = time.monotonic() - self.started
        remaining = elapsed / number * (self.schedule.epochs - number)
        self.bar.update(number, f"{summary} ETA {_duration(remaining)}")
        self._report(f"epoch {number}/{self.schedule.epochs}")

    def save_stage(self, epoch: int, model: torch.nn.Module) -> str:
        iou = float(self.hyper.map_iou_threshold)
        # conf_threshold 0: tp/fp/fn at this stage's F1-optimal threshold on the validation set.
        result, problems = evaluate_model(model, self.val_loader, len(self.context.class_names),
                                          score_threshold=self.hyper.conf_threshold or None, iou_threshold=iou,
                                          max_detections=self.max_detections,
                                          class_names=list(self.context.class_names))
        self.val_unreadable.update(problems["unreadable"])
        self.val_damaged.update(problems["damaged"])
        self.evaluated += 1
        self._log_metrics(epoch, result, model)
        name = f"epoch_{epoch}"
        results = self.context.training_result
        folder = results.stage_dir(name)
        # mAP, mAR and tp/fp/fn at evaluate_config.iou_thr (what the platform labels mAP with); mAP50_95 beside.
        # conf_thr: the score threshold this stage's tp/fp/fn were counted at (in the model's ymir-info.yaml).
        metrics = {**result.stage_metrics(), "conf_thr": result.score_threshold}
        files = [CHECKPOINT_NAME]
        try:
            save_checkpoint(model, os.path.join(folder, CHECKPOINT_NAME), class_names=self.context.class_names,
                            img_size=self.plan.img_size, epoch=epoch, metrics=metrics,
                            # no true positive: no F1 optimum exists, and the default must not be stored as one
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
        self.fitness_history.append(MAP_WEIGHT * metrics["mAP"] + (1 - MAP_WEIGHT) * metrics["mAP50_95"])
        window = self.fitness_history[-SELECTION_WINDOW:]
        fitness = sum(window) / len(window)
        # evaluate_config labels mAP with its IoU; the core labels conf_thr from the best stage's conf_thr metric.
        results.set_evaluate_config(iou_thr=iou)
        results.add_stage(name, files, metrics, result.stage_counts(), fitness=fitness)
        return (f"mAP@{iou:.2f} {metrics['mAP']:.3f} mAP50-95 {metrics['mAP50_95']:.3f} "
                f"tp/fp/fn {result.true_positives}/{result.false_positives}/{result.false_negatives} at score "
                f"{result.score_threshold:.3f} -> {name}")

    def _log_metrics(self, epoch: int, result: Any, model: torch.nn.Module) -> None:
        """The stage's metrics and pictures of its predictions in tensorboard: optional outputs, never fatal."""
        with self.context.optional_output("tensorboard metrics"):
            for tag, value in result.tensorboard_scalars(self.context.class_names).items():
                self.tb.add_scalar(tag, value, epoch)
        with self.context.optional_output("tensorboard picture"):
            for index, image in enumerate(draw_detections(model, self.val_loader, self.context.class_names,
                                                          result.score_threshold, count=4)):
                self.tb.add_image(f"val_predictions/{index}", image, epoch, dataformats="HWC")

    def close(self) -> None:
        self.bar.close()
        self.tb.flush()


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds))) if math.isfinite(seconds) else "?"

