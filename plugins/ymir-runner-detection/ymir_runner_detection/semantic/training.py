"""The semantic segmentation training task: the core's context in, model stages out, each stage scored by the
core's :class:`~ymir_runner.stages.StageEvaluator` as the platform scores it (``mIoU``, ``mAcc``).

Training images come with their label maps painted by the core (``Item.label_map``: the platform's semantic
ground truth, later objects over earlier ones, 255 unlabelled) when a sample is made; stages predict each
validation image's label map in its STORED pixels (:func:`~..engine.semantic.stored_label_map`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ymir_runner import DatasetError, ModelError, NonFiniteError, TaskContext, atomic_path

from ..checkpoint import CHECKPOINT_NAME, ONNX_NAME, load_checkpoint, save_checkpoint
from ..devices import cpu_share, run_on_devices, select_devices
from ..engine import (
    NonFiniteLossError,
    NoReadableImageError,
    SemanticDataset,
    SemanticFPN,
    SemanticLoss,
    build_dataloader,
    build_semantic_model,
    build_semantic_model_from_config,
    collate_semantic,
    export_semantic_onnx,
    load_backbone_weights,
    no_readable_image_message,
    reuse_weights,
    stored_label_map,
)
from ..engine.semantic import SEMANTIC_STRIDE
from ..predict import to_input
from ..recipe import plan_schedule
from ..templates import SEMANTIC_DICE_WEIGHT, SEMANTIC_EMA_DECAY
from ..training import (
    PREPARE_SHARE,
    RankPlan,
    StageWriter,
    ValidationSet,
    backbone_weights_file,
    report_image_problems,
    train_rank,
)

#: Validation images predicted at once (at least; the training batch when it is larger).
EVAL_BATCH = 16

#: A training image as the engine takes it: its path and its label map source (``Item.label_map``).
SemanticEngineItem = tuple[str, Callable[[int], np.ndarray]]


@dataclasses.dataclass
class SemanticPlan(RankPlan[SemanticEngineItem]):
    """The semantic model's :class:`..training.RankPlan`: flips of image and label map together, the semantic
    loss, no weight average."""

    def build_model(self) -> SemanticFPN:
        model = build_semantic_model_from_config(self.model_config)
        model.load_state_dict(self.initial_state)
        return model

    def loader(self, model: torch.nn.Module, distributed: bool) -> Any:
        dataset = SemanticDataset(self.train_items, self.img_size, train=True, flip_prob=0.5 if self.flip else 0.0)
        return build_dataloader(dataset, self.batch_size, shuffle=True, num_workers=self.num_workers,
                                full_batches=True, seed=self.seed, distributed=distributed,
                                collate_fn=collate_semantic)

    def loop_options(self, model: torch.nn.Module) -> dict[str, Any]:
        assert isinstance(model, SemanticFPN), type(model)  # what build_model made
        return {"ema_decay": SEMANTIC_EMA_DECAY, "loss_fn": SemanticLoss.for_model(model, SEMANTIC_DICE_WEIGHT)}


def initial_model(context: TaskContext) -> SemanticFPN:
    """From scratch (ImageNet weights in the backbone with ``pretrained_backbone``), from a segmentation model of
    this plugin (continued when its classes and ``unlabelled_pixels`` are the task's, else its backbone and neck
    under a new head), or from a detection model of this plugin (its backbone and neck, the head new)."""
    hyper, class_names = context.hyper, list(context.class_names)
    if not context.model_files:
        torch.manual_seed(hyper.seed)
        model = build_semantic_model(hyper.model, len(class_names), hyper.unlabelled_pixels)
        if hyper.pretrained_backbone:
            path = backbone_weights_file(hyper.pretrained_backbone, hyper.model)
            try:
                weights = torch.load(path, map_location="cpu", weights_only=True)
                count = load_backbone_weights(model, weights)  # type: ignore[arg-type]  # the same backbone
            except Exception as error:  # not a state_dict, another architecture, an unreadable file
                raise ModelError(f"config key 'pretrained_backbone': {path} cannot be loaded into {hyper.model} "
                                 f"({error})") from error
            context.logger.info("backbone: %d ImageNet tensors from %s", count, path)
        return model
    if hyper.pretrained_backbone:
        context.logger.info("config key 'pretrained_backbone' is not used: training starts from %s",
                            context.model_files[0])
    checkpoint = load_checkpoint(context.model_file(".pt"))
    config = checkpoint.model_config
    same = (checkpoint.task == "semantic" and checkpoint.class_names == class_names
            and config.get("unlabelled_pixels") == hyper.unlabelled_pixels)
    if same:
        context.logger.info("continuing from %s (epoch %d)", checkpoint.path, checkpoint.epoch)
        return checkpoint.build_model()
    torch.manual_seed(hyper.seed)
    spec = {**config["spec"], "output_stride": SEMANTIC_STRIDE}
    model = build_semantic_model_from_config({"size": config.get("size", "custom"), "num_classes": len(class_names),
                                              "unlabelled_pixels": hyper.unlabelled_pixels, "spec": spec})
    try:
        loaded, kept = reuse_weights(model, checkpoint.state_dict)
    except ValueError as error:
        raise ModelError(f"config key '{context.model_key}': {checkpoint.path} cannot start this model ({error})") \
            from None
    context.logger.info("starting from the %s model %s (classes %s): %d backbone and neck tensors reused, %d new "
                        "(the head%s)", checkpoint.task, checkpoint.path, checkpoint.class_names, loaded, kept,
                        " and the neck's stride-4 level" if checkpoint.task == "detection" else "")
    if config.get("size") != hyper.model:
        context.logger.info("model size %r comes from the pretrained checkpoint (config asks for %r)",
                            config.get("size"), hyper.model)
    return model


def train(context: TaskContext) -> None:
    """Train on ``context.training_set``; every stage epoch, predict the validation set's label maps, have the core
    score them and write the stage."""
    hyper = context.hyper
    devices = select_devices(context.config.gpu_ids)
    prepare = context.progress.span(0.0, PREPARE_SHARE, "preparing data")
    training = list(context.training_set)
    train_items: list[SemanticEngineItem] = [(item.image, item.label_map) for item in training]
    prepare.update(0.7)
    validation = list(context.validation_set)
    prepare.done()
    if not train_items:
        raise DatasetError(f"no usable training image: skipped {context.skips.summary()}")
    if not validation:
        context.logger.warning("the validation set has no usable image: stage metrics are measured on the "
                               "TRAINING set and are optimistic")
        validation = training
    model = initial_model(context)
    schedule = plan_schedule(len(train_items), hyper.batch_size_per_gpu, epochs=hyper.epochs,
                             min_steps=hyper.min_steps, warmup_epochs=hyper.warmup_epochs,
                             save_period=hyper.save_period, world_size=len(devices))
    share = cpu_share(devices, hyper.num_workers_per_gpu, context.logger)
    plan = SemanticPlan(
        model_config=model.config(), initial_state=model.state_dict(), train_items=train_items,
        img_size=hyper.img_size, schedule=schedule, batch_size=hyper.batch_size_per_gpu, num_workers=share.workers,
        learning_rate=hyper.learning_rate, optimizer=hyper.optimizer, weight_decay=hyper.weight_decay,
        seed=hyper.seed, flip=hyper.flip)
    context.logger.info("training semantic %s (%d classes, unlabelled pixels: %s) on %d images, validating on %d, "
                        "img_size %d, device%s %s, %s per rank", model.size_name, len(context.class_names),
                        hyper.unlabelled_pixels, len(train_items), len(validation), hyper.img_size,
                        "s" if len(devices) > 1 else "", ", ".join(devices), share.describe())
    for line in schedule.describe():
        context.logger.info("schedule: %s", line)
    for warning in schedule.warnings():
        context.logger.warning("schedule: %s", warning)
    stages = SemanticStageWriter(context, plan, validation)
    try:
        result = run_on_devices(train_rank, devices, plan, threads=share.threads, process_group=True,
                                local_kwargs=stages.callbacks())[0]
    except NoReadableImageError as error:
        raise DatasetError(no_readable_image_message(error)) from None
    except NonFiniteLossError as error:
        raise NonFiniteError(f"training diverged: the loss became NaN/inf at step {error.step}; "
                             f"lower config key 'learning_rate' (now {hyper.learning_rate})") from error
    finally:
        stages.close()
    report_image_problems(context, result, train_items)  # type: ignore[arg-type]  # reads the paths only
    context.logger.info("trained %d steps in %.0f s: %.1f images/s, %.1f%% of the time waiting for data",
                        result.steps, result.train_seconds, result.images_per_second, 100 * result.data_wait_share)


class StagePredictions(Sequence[Any]):
    """A stage's label maps of the validation images in STORED pixels, made a batch at a time while the evaluator
    reads them: one batch of label maps alive, never the whole validation set's. An image that no longer decodes
    has ``[]`` (nothing found)."""

    def __init__(self, validation: ValidationSet, model: SemanticFPN, batch_size: int) -> None:
        self.validation = validation
        self.model = model
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.validation.items)

    def __getitem__(self, index: Any) -> Any:
        raise TypeError("stage predictions are read in order, once")

    def __iter__(self) -> Iterator[Any]:
        model = self.model
        device = next(model.parameters()).device
        for batch in self.validation.batches(self.batch_size):
            inputs = [entry for entry in batch if entry is not None]
            if inputs:
                with torch.inference_mode():
                    logits = model.cell_logits(to_input([entry.image for entry in inputs], device)).float().cpu()
            found = iter(range(len(inputs)))
            for entry in batch:
                if entry is None:
                    yield []
                    continue
                info = entry.info
                labels, _ = stored_label_map(logits[next(found)], stride=model.stride, scale_x=info.scale_x,
                                             scale_y=info.scale_y, pad_x=info.pad_x, pad_y=info.pad_y,
                                             width=info.orig_width, height=info.orig_height,
                                             background=model.background)
                yield labels


class SemanticStageWriter(StageWriter):
    """The detector's engine callbacks (progress, logs, tensorboard) with a stage scored by the core on label maps:
    the validation items are the ground truth (the evaluator paints their label maps) and each stage's predictions
    are label maps in stored pixels (:class:`StagePredictions`)."""

    STEP_SCALARS = ("loss", "lr")
    EPOCH_SCALARS = ("loss", "images_per_second")

    def ground_truths(self) -> Any:
        return self.validation.items

    def save_stage(self, epoch: int, model: SemanticFPN) -> str:
        was_training = model.training
        model.eval()
        try:
            predictions = StagePredictions(self.validation, model, max(self.plan.batch_size, EVAL_BATCH))
            result = self.evaluator.evaluate(epoch, predictions)
        finally:
            model.train(was_training)
        self.evaluated += 1
        name = f"epoch_{epoch}"
        folder = self.context.training_result.stage_dir(name)
        files = [CHECKPOINT_NAME]
        try:
            save_checkpoint(model, os.path.join(folder, CHECKPOINT_NAME), class_names=self.context.class_names,
                            img_size=self.plan.img_size, epoch=epoch, metrics=result.stage_metrics())
            if self.context.hyper.export_onnx:
                # optional: the checkpoint is the model; a failed export is warned about, counted and not listed
                with self.context.optional_output("ONNX export") as onnx:
                    with atomic_path(os.path.join(folder, ONNX_NAME)) as tmp:
                        export_semantic_onnx(model, tmp, self.plan.img_size)
                if onnx.ok:
                    files.append(ONNX_NAME)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # a stage result.yaml does not list only fills the disk
            raise
        return self.evaluator.add_stage(name, files, result)
