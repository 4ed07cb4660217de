"""The training task: the core's datasets in ultralytics' layout, ultralytics' trainer, the core's stages.

ultralytics trains (its recipe: optimizer, warm-up, augmentation, EMA, loss); the core decides what the platform
sees. At every stage epoch (:func:`ymir_runner.stages.stage_epochs`: config key ``save_period``, the last epoch
always) the EMA model predicts the validation set through :mod:`.predict` (as inference will), the core's
:class:`ymir_runner.stages.StageEvaluator` measures it and records the stage, whose checkpoint is written here; the
deployed stage is the core's rule too (:func:`ymir_runner.stages.fitness`). Progress comes from the trainer's batch
callbacks; the best stage is exported to ONNX at the end.
"""

from __future__ import annotations

import datetime
import math
import os
import re
import time
import warnings
from typing import Any, Mapping

import numpy as np

from ymir_runner import (
    ConfigError,
    DatasetError,
    ModelError,
    NonFiniteError,
    Param,
    Prediction,
    TaskContext,
    atomic_path,
    excerpt,
    parse_yaml,
    stages,
)

from . import dataset, devices, environment, weights
from .predict import Fitted, Predictor
from .templates import AUTO_VALUES, OPTIMIZERS

#: Shares of the task's progress: writing the dataset layout, training (batches and stage evaluations), ONNX export.
PREPARE_END = 0.03
TRAINING_END = 0.9
#: The NMS IoU of the stage evaluation (ultralytics' validation default).
EVAL_NMS_IOU = 0.7
#: Letterboxed validation images kept in memory between stage evaluations, at most (bytes).
EVAL_CACHE_BYTES = 512 * 1024 * 1024
#: The prediction on a validation image that cannot be used.
NOTHING = Prediction(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64))
#: The stage checkpoint and its ONNX export, in each stage's folder.
CHECKPOINT_NAME = "last.pt"
ONNX_NAME = "last.onnx"
#: YMIR's instance-segmentation object type.
INSTANCE = 4
#: YMIR's segmentation object types (3 semantic: :mod:`.semantic`; 4 instance).
SEGMENTATION = (3, 4)
#: Instances kept per validation image for the stage evaluation: the platform scores at most 100 per image and
#: class, so 300 (ultralytics' default) keeps what it could score on images of a few classes.
INSTANCE_MAX_DET = 300
#: Training arguments the runner sets itself: refused in config key ``ultralytics_args``.
RUNNER_ARGS = {"data", "device", "project", "name", "exist_ok", "epochs", "imgsz", "batch", "workers", "seed", "lr0",
               "optimizer", "mosaic", "close_mosaic", "fliplr", "cache", "amp", "save", "save_period", "val", "plots",
               "resume", "model", "task", "mode", "pretrained", "verbose", "patience", "time", "fraction", "cfg",
               "single_cls", "classes"}


def choose_auto(hyper: Any, device: str, logger: Any) -> None:
    """Replace ``auto`` by this executor's number for the keys of ``AUTO_VALUES`` (a template shared with the built-in
    detector has ``auto`` where this executor's own has a number), logged; ``max_detections: auto`` is the core's
    stage evaluator's. Also logs that ultralytics loads the data in the training process on the CPU, whatever
    ``num_workers_per_gpu`` says (its trainer sets ``workers = 0`` there)."""
    for key, value in AUTO_VALUES.items():
        if hyper[key] == Param.AUTO:
            hyper[key] = value
            logger.info("%s auto: %d (this executor's default)", key, value)
    if device == "cpu" and isinstance(hyper.num_workers_per_gpu, int) and hyper.num_workers_per_gpu > 0:
        logger.info("config key 'num_workers_per_gpu' %d: not used on the CPU, where ultralytics loads the data in "
                    "the training process", hyper.num_workers_per_gpu)


def extra_args(text: Any) -> dict[str, Any]:
    """Config key ``ultralytics_args``: a YAML mapping of further training arguments ('' for none)."""
    if isinstance(text, dict):
        extra = text
    elif not str(text).strip():
        return {}
    else:
        extra = parse_yaml(str(text), "config key 'ultralytics_args': the value")
    if not isinstance(extra, dict):
        raise ConfigError(f"config key 'ultralytics_args': {excerpt(text)} is not a mapping such as '{{degrees: 5}}'")
    owned = sorted(str(key) for key in extra if key in RUNNER_ARGS)
    if owned:
        raise ConfigError(f"config key 'ultralytics_args': {', '.join(owned)} cannot be set there (the template or the "
                          "runner sets them)")
    from ultralytics.cfg import DEFAULT_CFG_DICT

    unknown = sorted(str(key) for key in extra if key not in DEFAULT_CFG_DICT)
    if unknown:
        raise ConfigError(f"config key 'ultralytics_args': {', '.join(unknown)} are not ultralytics arguments")
    return {str(key): value for key, value in extra.items()}


def train(context: TaskContext) -> None:
    hyper = context.hyper
    device = devices.select_device(context.config.gpu_ids)
    environment.prepare(context.work_dir)  # before ultralytics is imported
    choose_auto(hyper, device, context.logger)
    extra = extra_args(hyper.ultralytics_args)
    with environment.task_log(), devices.out_of_memory_as_error():
        _train(context, device, extra)


def read_splits(context: TaskContext, prepare: Any) -> tuple[list[Any], list[Any]]:
    """The usable training and validation items (the core's readers skip, count and name the others), ``prepare``
    (the data-preparation progress span) moved on between them. No training item: ``DatasetError``; no validation
    item: the training items, with a warning that the stage metrics are measured on them."""
    training_items = list(context.training_set)
    prepare.update(0.3)
    validation_items = list(context.validation_set)
    if not training_items:
        raise DatasetError(f"no usable training image: skipped {context.skips.summary()}")
    if not validation_items:
        context.logger.warning("the validation set has no usable image: stage metrics are measured on the TRAINING "
                               "set and are optimistic")
        validation_items = training_items
    return training_items, validation_items


def _train(context: TaskContext, device: str, extra: dict[str, Any]) -> None:
    hyper, logger = context.hyper, context.logger
    prepare = context.progress.span(0.0, PREPARE_END, "preparing data")
    object_type = context.config.object_type
    start = weights.resolve_start(hyper.model, environment.weights_dir(),
                                  context.model_file(".pt") if context.model_files else None, object_type)
    training_items, validation_items = read_splits(context, prepare)
    layout = dataset.write_layout(os.path.join(context.work_dir, "dataset"),
                                  {"train": training_items, "val": validation_items}, context.class_names,
                                  context.skips, instances=object_type == INSTANCE)
    if not layout.splits["train"] or not layout.splits["val"]:
        raise DatasetError(f"no usable training or validation image: skipped {context.skips.summary()}")
    logger.info("dataset: %s", layout.describe())
    prepare.done()

    model = _initial_model(context, start)
    writer = StageWriter(context, layout, device)
    for event, callback in writer.callbacks().items():
        model.add_callback(event, callback)
    arguments = {**training_arguments(hyper, layout.data_yaml, device, context.work_dir), **extra}
    check_arguments(arguments, extra)
    logger.info("training %s on %s: %d epochs, img_size %d, batch %d, stages at epochs %s", start.path, device,
                hyper.epochs, hyper.img_size, hyper.batch_size_per_gpu, writer.epochs)
    try:
        model.train(trainer=trainer_class(writer, weights.TASKS[object_type]), **arguments)
    finally:
        writer.close()
    writer.export_best()


def _initial_model(context: TaskContext, start: weights.Start) -> Any:
    from ultralytics import YOLO

    logger = context.logger
    task = weights.TASKS[context.config.object_type]
    if start.source == weights.SCRATCH:
        logger.warning("no pretrained weights: config key 'pretrained_model_params' is not set and %s has no %s.pt "
                       "(%s); training %s from SCRATCH, which needs far more epochs and data",
                       environment.weights_dir(), start.path[:-len(".yaml")], environment.WEIGHTS_ENV_VAR, start.path)
        return YOLO(start.path, task=task)
    key = weights.PRETRAINED if start.source == weights.PRETRAINED else "model"
    network, checkpoint = weights.load_checkpoint(start.path, key, task)  # ModelError naming the key for a bad file
    names = weights.class_names_of(network, checkpoint)
    logger.info("starting from %s", start.describe())
    if names != list(context.class_names):
        logger.info("its classes %s differ from the task's %s: ultralytics keeps every layer whose shape still fits "
                    "(the class outputs are new)", names if len(names) <= 10 else f"({len(names)})",
                    list(context.class_names))
    try:
        return YOLO(start.path, task=task)
    except Exception as error:  # noqa: BLE001 - the file loaded above but ultralytics cannot build from it
        raise ModelError(f"config key {key!r}: {start.path} cannot be trained from ({error})") from error


def training_arguments(hyper: Any, data_yaml: str, device: str, work_dir: str) -> dict[str, Any]:
    """ultralytics' ``model.train`` arguments from the template's keys."""
    return dict(
        data=data_yaml, device=device, project=os.path.join(work_dir, "runs"), name="train", exist_ok=True,
        epochs=hyper.epochs, imgsz=hyper.img_size, batch=hyper.batch_size_per_gpu, workers=hyper.num_workers_per_gpu,
        seed=hyper.seed, optimizer=OPTIMIZERS[hyper.optimizer], lr0=hyper.learning_rate, mosaic=hyper.mosaic,
        close_mosaic=hyper.close_mosaic, fliplr=0.5 if hyper.flip else 0.0, cache="ram" if hyper.cache else False,
        amp=bool(hyper.amp) and device != "cpu",
        # The stages are this executor's (validate() below); ultralytics saves only its final last.pt/best.pt.
        save=False, save_period=-1, val=True, plots=False, patience=0, verbose=True, pretrained=True)


#: ultralytics' argument -> the template key that sets it (for messages naming the key).
TEMPLATE_KEYS = {"lr0": "learning_rate", "imgsz": "img_size", "batch": "batch_size_per_gpu",
                 "workers": "num_workers_per_gpu", "fliplr": "flip"}


def check_arguments(arguments: dict[str, Any], extra: dict[str, Any]) -> None:
    """ultralytics' own checks of the training arguments (types, ranges such as ``lr0`` in [0, 1]), before anything
    is built; a refusal names the config key."""
    from ultralytics.cfg import get_cfg

    try:
        get_cfg(overrides=dict(arguments))
    except (ValueError, TypeError, SyntaxError, KeyError) as error:
        found = re.search(r"'(\w+)=", str(error))
        name = found.group(1) if found else ""
        key = "ultralytics_args" if name in extra or not name else TEMPLATE_KEYS.get(name, name)
        raise ConfigError(f"config key {key!r}: {str(error).splitlines()[0]}") from None


def trainer_class(writer: StageWriter, task: str = "detect") -> type:
    """ultralytics' trainer of ``task`` (DetectionTrainer, SegmentationTrainer, SemanticSegmentationTrainer) whose
    validation is this executor's stage evaluation."""
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.models.yolo.segment import SegmentationTrainer
    from ultralytics.models.yolo.semantic import SemanticSegmentationTrainer

    base = {"detect": DetectionTrainer, "segment": SegmentationTrainer, "semantic": SemanticSegmentationTrainer}[task]

    class YmirTrainer(base):  # type: ignore[misc,valid-type]
        def validate(self) -> tuple[dict, float | None]:
            """At a stage epoch: the EMA model evaluated by the core, the stage written; other epochs: the last
            stage's metrics again (results.csv keeps its columns) and no fitness (ultralytics' best.pt and early
            stopping are not used)."""
            return writer.on_validate(self)

        def final_eval(self) -> None:
            """ultralytics re-validates best.pt here; every stage was evaluated already."""

        def progress_string(self) -> str:
            return ""  # the bar's header, logged every epoch: the bars themselves are off

    return YmirTrainer


class StageWriter:
    """Trainer callbacks: progress, log and tensorboard; stage evaluation by the core and the stage's checkpoint
    (from ``validate``)."""

    def __init__(self, context: TaskContext, layout: dataset.Layout, device: str) -> None:
        self.context = context
        self.hyper = context.hyper
        self.device = devices.torch_device(device)
        self.progress = context.progress.span(PREPARE_END, TRAINING_END, "training")
        self.epochs = stages.stage_epochs(self.hyper.epochs, self.hyper.save_period)
        self.validation = layout.splits["val"]
        #: Instance segmentation: stages are scored on masks (the core's seg path), the model predicts instances.
        self.instances = context.config.object_type == INSTANCE
        #: Segmentation (3, 4): the evaluator reads each validation Item's masks itself.
        truths = (list(self.validation) if context.config.object_type in SEGMENTATION else
                  [([(b.x1, b.y1, b.x2, b.y2) for b in item.boxes], [b.class_id for b in item.boxes])
                   for item in self.validation])
        self.evaluator = stages.StageEvaluator(
            context, truths, [(item.width, item.height) for item in self.validation],
            [item.image for item in self.validation])
        #: Letterboxed validation images and their decode factors (None: unusable), kept between stages.
        self.cache: dict[int, tuple[Fitted, int] | None] = {}
        self.cache_bytes = 0
        self.batches_done = 0
        self.evaluated = 0
        self.started = time.monotonic()
        self.epoch_started = self.started
        #: What validate() returns between stages (results.csv keeps the same columns every epoch).
        self.last_metrics = ({"metrics/maskAP": 0.0, "metrics/maskAP50_95": 0.0} if self.instances else
                             {"metrics/mAP": 0.0, "metrics/mAP50_95": 0.0})
        self.tb = context.tensorboard

    def callbacks(self) -> dict[str, Any]:
        return {"on_train_batch_end": self.on_train_batch_end, "on_train_epoch_start": self.on_train_epoch_start,
                "on_train_epoch_end": self.on_train_epoch_end}

    # --- progress ------------------------------------------------------------------------------------------

    def _report(self, trainer: Any, message: str | None = None) -> None:
        batches = len(trainer.train_loader)
        eval_batches = stages.EVAL_COST * len(self.validation) / max(trainer.batch_size, 1)
        work = trainer.epochs * batches + len(self.epochs) * eval_batches
        self.progress.update(min(1.0, (self.batches_done + self.evaluated * eval_batches) / max(work, 1e-9)), message)

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.epoch_started = time.monotonic()

    def on_train_batch_end(self, trainer: Any) -> None:
        loss = trainer.loss
        if loss is not None and not bool(loss.detach().isfinite().all()):
            raise NonFiniteError(f"training diverged: the loss became NaN/inf in epoch {trainer.epoch + 1}; lower "
                                 f"config key 'learning_rate' (now {self.hyper.learning_rate}) or set optimizer sgd")
        self.batches_done += 1
        self._report(trainer)

    def on_train_epoch_end(self, trainer: Any) -> None:
        epoch = trainer.epoch + 1
        losses = trainer.label_loss_items(trainer.tloss, prefix="train") if trainer.tloss else {}
        for key, value in {**losses, **trainer.lr}.items():
            self.tb.add_scalar(key, value, epoch)
        seconds = time.monotonic() - self.epoch_started
        images = len(trainer.train_loader.dataset)
        elapsed = time.monotonic() - self.started
        remaining = elapsed / max(epoch - trainer.start_epoch, 1) * (trainer.epochs - epoch)
        self.context.logger.info("epoch %d/%d: %s, lr %.2e, %.1f images/s, ETA %s", epoch, trainer.epochs,
                                 " ".join(f"{key.split('/')[-1]} {value:.4f}" for key, value in losses.items()),
                                 max(trainer.lr.values(), default=0.0), images / max(seconds, 1e-9),
                                 _duration(remaining))
        self._report(trainer, f"epoch {epoch}/{trainer.epochs}")

    # --- stages --------------------------------------------------------------------------------------------

    def on_validate(self, trainer: Any) -> tuple[dict, float | None]:
        epoch = trainer.epoch + 1
        if epoch not in self.epochs and not (trainer.stop or epoch >= trainer.epochs):
            return dict(self.last_metrics), None
        network = trainer.ema.ema
        # Instance segmentation: the stage is measured on the network as inference will load it (the checkpoint's
        # fp16 weights, back in fp32, conv and batch norm fused), so that its maskAP is what `ymir-runner evaluate`
        # gives on the stage's own infer-result.json: a mask threshold at 0 flips pixels on far smaller changes.
        result = self.evaluator.evaluate(epoch, self.predict(as_deployed(network) if self.instances else network))
        self.evaluated += 1
        metrics = self.write_stage(trainer, epoch, network, result)
        self.last_metrics = ({"metrics/maskAP": result.maskAP, "metrics/maskAP50_95": result.maskAP50_95}
                             if self.instances else
                             {"metrics/mAP": result.map or 0.0, "metrics/mAP50_95": result.map50_95 or 0.0})
        self._report(trainer)
        return dict(self.last_metrics), (metrics["maskAP"] if self.instances else stages.fitness(metrics))

    def predict(self, network: Any) -> list[Any]:
        """The network's predictions on the validation set in stored pixels, down to the evaluator's score floor:
        a Prediction per image, or for instance segmentation its instances as ``InstanceMask`` regions (what
        inference writes)."""
        predictor = Predictor(network, self.device, self.hyper.img_size)
        batch = max(int(self.hyper.batch_size_per_gpu), 1)
        predictions: list[Any] = []
        for start in range(0, len(self.validation), batch):
            indices = range(start, min(start + batch, len(self.validation)))
            inputs = [self._input(index, predictor) for index in indices]
            usable = [entry for entry in inputs if entry is not None]
            fitted = [entry[0] for entry in usable]
            if self.instances:
                found_instances = iter(predictor.predict_instances(fitted, conf=self.evaluator.SCORE_FLOOR,
                                                                   iou=EVAL_NMS_IOU, max_det=INSTANCE_MAX_DET))
                for index, entry in zip(indices, inputs):
                    item = self.validation[index]
                    predictions.append([] if entry is None else
                                       [encoded(instance, item.width, item.height) for instance in
                                        next(found_instances).instance_masks(item.width, item.height, entry[1])])
                continue
            found = iter(predictor.predict(fitted, conf=self.evaluator.SCORE_FLOOR, iou=EVAL_NMS_IOU,
                                           max_det=self.evaluator.max_detections))
            predictions += [NOTHING if entry is None else next(found).scaled(entry[1]) for entry in inputs]
        return predictions

    def _input(self, index: int, predictor: Predictor) -> tuple[Fitted, int] | None:
        """Validation image ``index`` letterboxed, and its decode factor; None when it cannot be used (written to
        the layout earlier, so that is rare: a file that changed; the core counts and names it once)."""
        if index in self.cache:
            return self.cache[index]
        decoded = self.context.decode(self.validation[index], min_side=predictor.img_size)
        entry = None if decoded is None else (predictor.fit(decoded.pixels), decoded.factor)
        size = 0 if entry is None else entry[0].canvas.nbytes
        if self.cache_bytes + size <= EVAL_CACHE_BYTES:
            self.cache[index] = entry
            self.cache_bytes += size
        return entry

    def write_stage(self, trainer: Any, epoch: int, network: Any, result: Any) -> Mapping[str, float]:
        """The stage's checkpoint, with the metrics and operating point the core measured, recorded as a stage;
        returns its metrics."""
        name = f"epoch_{epoch}"
        # Instance segmentation: tp/fp/fn at conf_threshold (0: every prediction); inference's default threshold
        # then stays evaluation.DEFAULT_SCORE_THRESHOLD unless the user set one.
        conf_thr = result.conf_thr if self.instances else result.score_threshold
        metrics = {**result.stage_metrics(), "conf_thr": conf_thr}
        path = os.path.join(self.context.training_result.stage_dir(name), CHECKPOINT_NAME)
        save_checkpoint(path, trainer, network, {
            "class_names": list(self.context.class_names), "img_size": int(self.hyper.img_size), "epoch": epoch,
            "conf_thr": float(conf_thr) if not self.instances or conf_thr else None,
            "metrics": {key: float(v) for key, v in metrics.items()}, "iou_thr": self.evaluator.iou_threshold,
            "object_type": int(self.context.config.object_type)})
        self.context.logger.info("stage %s: %s", name, self.evaluator.add_stage(name, [CHECKPOINT_NAME], result))
        return metrics

    def export_best(self) -> None:
        """The best stage's checkpoint exported to ONNX (the last 10 % of the progress) and added to its files. An
        export that fails (onnx missing, an operator it cannot export) is an optional output that failed: warned
        about, counted in the task's summary, and the stage keeps its checkpoint only: the checkpoint is the model."""
        results = self.context.training_result
        best = results.best
        export = self.context.progress.span(TRAINING_END, 1.0, "ONNX export")
        if best is None or not self.hyper.export_onnx:
            export.done()
            return
        folder = results.stage_dir(best.name)
        with self.context.optional_output("ONNX export") as onnx:
            with atomic_path(os.path.join(folder, ONNX_NAME)) as target:
                export_onnx(os.path.join(folder, CHECKPOINT_NAME), target, int(self.hyper.img_size),
                            os.path.join(self.context.work_dir, "export"),
                            weights.TASKS[self.context.config.object_type])
        if onnx.ok:
            results.add_stage(best.name, [*best.files, ONNX_NAME], best.metrics, best.counts)
            self.context.logger.info("stage %s: ONNX export %s (input 'images' 1x3x%dx%d RGB in [0, 1])", best.name,
                                     ONNX_NAME, self.hyper.img_size, self.hyper.img_size)
        export.done()

    def close(self) -> None:
        self.tb.flush()


def as_deployed(network: Any) -> Any:
    """A copy of ``network`` as a stage checkpoint is loaded for inference (:func:`.weights.load_model`): its weights
    rounded to fp16 (what :func:`save_checkpoint` stores), in fp32, fused, in eval mode."""
    import copy

    deployed = copy.deepcopy(network).half().float()
    deployed = deployed.fuse(verbose=False) if hasattr(deployed, "fuse") else deployed
    return deployed.eval()


def encoded(instance: Any, width: int, height: int) -> Any:
    """An ``InstanceMask`` (a box-sized region and its origin) as the ``EncodedMask`` of its stored-size RLE: a
    stage's predictions on the whole validation set are kept as strings, not masks."""
    from faster_coco_eval.core import mask as coco_mask  # the core's codec (ymir_runner.protocol.masks)

    from ymir_runner import EncodedMask

    full = np.zeros((height, width), np.bool_, order="F")  # column-major, as the codec reads it
    x, y = instance.origin
    full[y:y + instance.mask.shape[0], x:x + instance.mask.shape[1]] = instance.mask
    rle = coco_mask.encode(full.view(np.uint8))
    counts = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
    return EncodedMask({"size": [height, width], "counts": counts}, instance.score, instance.class_id)


def save_checkpoint(path: str, trainer: Any, network: Any, metadata: dict[str, Any]) -> None:
    """An ultralytics checkpoint of ``network`` (fp16, no optimizer: what ultralytics' strip_optimizer leaves) with
    this executor's ``metadata``; written atomically. ultralytics loads it (``YOLO(path)``) for prediction, export
    and fine-tuning."""
    import copy

    import torch
    from ultralytics import __version__ as ultralytics_version

    snapshot = copy.deepcopy(network).half()
    if hasattr(snapshot, "criterion"):
        snapshot.criterion = None
    for parameter in snapshot.parameters():
        parameter.requires_grad = False
    arguments = {key: (str(value) if isinstance(value, os.PathLike) else value)
                 for key, value in vars(trainer.args).items()}
    checkpoint = {"epoch": -1, "best_fitness": None, "model": snapshot, "ema": None, "updates": None,
                  "optimizer": None, "train_args": arguments, "date": datetime.datetime.now().astimezone().isoformat(),
                  "version": ultralytics_version, "license": "AGPL-3.0 (https://ultralytics.com/license)",
                  weights.METADATA_KEY: metadata}
    with atomic_path(path) as target:
        torch.save(checkpoint, target)


def export_onnx(checkpoint: str, target: str, img_size: int, scratch: str, task: str = "detect") -> None:
    """ultralytics' ONNX export of ``checkpoint`` on the CPU, made in ``scratch`` and moved to ``target``: a static
    ``images [1,3,S,S]`` input (RGB in [0, 1], letterboxed) and ultralytics' default output ``[1, 4 + classes,
    anchors]`` (cx, cy, w, h in input pixels, then the class scores), the one-to-many head that the stage metrics and
    inference use, with NMS outside the graph. Not simplified: onnxslim is not a requirement."""
    import shutil

    from ultralytics import YOLO

    os.makedirs(scratch, exist_ok=True)
    source = shutil.copyfile(checkpoint, os.path.join(scratch, os.path.basename(checkpoint)))
    with warnings.catch_warnings():  # torch's tracer warns about the head's shape checks, to no one's use
        warnings.simplefilter("ignore")
        written = YOLO(source, task=task).export(format="onnx", imgsz=img_size, device="cpu", simplify=False,
                                                     dynamic=False, verbose=False)
    shutil.move(str(written), target)


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(seconds))) if math.isfinite(seconds) else "?"

