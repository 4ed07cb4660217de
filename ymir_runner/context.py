"""The object a task hook receives: the parsed task, typed readers and the writers for its outputs."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import threading
from typing import Any, ContextManager, TypeVar

from .errors import ModelError
from .optional import OptionalOutput, OptionalOutputs
from .protocol.config import TaskConfig
from .protocol.dataset import AnnotationReader, DatasetReader, Item, SkipLog
from .protocol.env import MODEL_INFO_FILE, TaskEnv, TaskKind, best_stage_name
from .protocol.images import DecodedImage, ImageProblem, decode_image
from .protocol.monitor import Progress
from .protocol.results import InferResult, MiningResult, SegInferResult, TrainingResult
from .protocol.tensorboard import LazySummaryWriter
from .records import ExecutorSpec

_Writer = TypeVar("_Writer", TrainingResult, MiningResult, InferResult, SegInferResult)


@dataclasses.dataclass
class TaskContext:
    """Everything a plugin needs for one task. Plugins never open the protocol files themselves."""

    kind: TaskKind
    env: TaskEnv
    config: TaskConfig
    executor: ExecutorSpec
    progress: Progress
    logger: logging.Logger
    tensorboard: LazySummaryWriter
    skips: SkipLog
    #: Shared by the tasks of one run (mining then inference): e.g. a model loaded once.
    run_cache: dict[str, Any]
    #: This task's output writer (created by the core by ``kind``; in inference by ``config.object_type`` too).
    _output: TrainingResult | MiningResult | InferResult | SegInferResult = dataclasses.field(repr=False)
    #: The failures of this task's optional outputs, by kind (see :meth:`optional_output`).
    optional_outputs: OptionalOutputs = dataclasses.field(default_factory=OptionalOutputs, repr=False)
    #: Guards ``skips`` and ``_decode_noted`` for :meth:`decode`, which the task loops call from threads.
    _decode_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, init=False, repr=False,
                                                     compare=False)
    #: ``(image, what)`` :meth:`decode` has counted already: each skip or repair is counted once per task.
    _decode_noted: set[tuple[str, str]] = dataclasses.field(default_factory=set, init=False, repr=False,
                                                            compare=False)

    def __post_init__(self) -> None:
        self.tensorboard.report_to(self.optional_outputs)  # tensorboard's failures count in this task's summary

    # --- what the task is about -------------------------------------------------------------------------

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.config.class_names

    @property
    def hyper(self) -> Any:
        """The hyper-parameters (template defaults merged with config.yaml, typed), an EasyDict."""
        return self.config.hyper

    @property
    def legacy_protocol(self) -> bool:
        """Protocol < 1.0.0 (no ``protocol_version`` in env.yaml): legacy result formats."""
        return self.env.protocol < (1, 0, 0)

    @property
    def model_files(self) -> tuple[str, ...]:
        """The model files this task starts from, as local paths (re-rooted under ``--root``): config key
        ``pretrained_model_params`` in training (empty: train from scratch), ``model_params_path`` in mining
        and inference. Each is a file of a stage folder, ``/in/models/<stage>/<file>``."""
        if self.kind is TaskKind.TRAINING:
            return self.config.pretrained_model_params
        return self.config.model_params_path

    @property
    def model_key(self) -> str:
        """The config key that lists :attr:`model_files`: ``pretrained_model_params`` in training,
        ``model_params_path`` in mining and inference (name it in a :class:`ModelError` about a model file)."""
        return "pretrained_model_params" if self.kind is TaskKind.TRAINING else "model_params_path"

    def model_file(self, suffix: str) -> str:
        """The one file of :attr:`model_files` whose name ends in ``suffix`` (e.g. ``".pt"``), as a local path.

        Several (the task was given several stages): the one in the folder of the stage the platform marked
        best in ``<models_dir>/ymir-info.yaml`` (:func:`ymir_runner.best_stage_name`); each file of a stage is
        ``/in/models/<stage>/<file>``. In training, check ``context.model_files`` first: none there means train
        from scratch.

        Raises :class:`ModelError` (300004) naming the config key (:attr:`model_key`) when no file ends in
        ``suffix``, when several do and ymir-info.yaml names no best stage holding exactly one of them, or when
        the chosen file does not exist.
        """
        key = self.model_key
        files = list(dict.fromkeys(path for path in self.model_files if path.endswith(suffix)))
        if not files:
            raise ModelError(f"config key {key!r} lists no {suffix} file: {list(self.model_files)}")
        if len(files) > 1:
            models_dir = self.env.input.models_dir
            stage = best_stage_name(models_dir) if models_dir else None
            of_best = [path for path in files if os.path.basename(os.path.dirname(path)) == stage]
            if len(of_best) > 1:
                raise ModelError(f"config key {key!r} lists several {suffix} files of the best stage {stage!r}, "
                                 f"expected one: {of_best}")
            if not of_best:
                raise ModelError(f"config key {key!r} lists several {suffix} files {files} and "
                                 f"{os.path.join(models_dir, MODEL_INFO_FILE)} names no best stage among them")
            files = of_best
        if not os.path.isfile(files[0]):
            raise ModelError(f"config key {key!r}: {files[0]} does not exist")
        return files[0]

    @property
    def work_dir(self) -> str:
        """A writable scratch folder for this task (under /out: /in is read-only and $HOME may not exist)."""
        path = os.path.join(self.env.output.root_dir, "tmp", self.kind.value)
        os.makedirs(path, exist_ok=True)
        return path

    # --- readers ------------------------------------------------------------------------------------------

    @functools.cached_property
    def _annotations(self) -> AnnotationReader:
        """One annotation reader for both sets: a COCO file they share is read, and its skips counted, once."""
        return AnnotationReader(self.class_names, self.config.annotation_format, self.skips,
                                object_type=self.config.object_type)

    def _annotated(self, index_file: str, name: str) -> DatasetReader:
        self._require(TaskKind.TRAINING, name)
        return DatasetReader(index_file, annotations=self._annotations, skips=self.skips, name=name,
                             root=self.env.root)

    @functools.cached_property
    def training_set(self) -> DatasetReader:
        return self._annotated(self.env.input.training_index_file, "training")

    @functools.cached_property
    def validation_set(self) -> DatasetReader:
        return self._annotated(self.env.input.val_index_file, "validation")

    @functools.cached_property
    def candidates(self) -> DatasetReader:
        if self.kind is TaskKind.TRAINING:
            raise RuntimeError("candidates exist only in mining and inference tasks")
        return DatasetReader(self.env.input.candidate_index_file, annotations=None, skips=self.skips,
                             name="candidate", root=self.env.root)

    def decode(self, item: Item, *, min_side: int | None = None) -> DecodedImage | None:
        """``item.image`` decoded by the project's rules (:func:`ymir_runner.decode_image`: format by content,
        stored pixels without EXIF rotation, 8-bit RGB, damaged data decoded as far as it goes), reduced on decode
        by a power of two while its long side stays at least ``min_side`` (None: the stored size; the result's
        ``factor`` maps its pixels back to stored ones).

        An image that cannot be used (``missing image``, ``unreadable image``, ``image too large``) is skipped:
        counted in :attr:`skips` with the problem's reason and named, and None is returned. Damage the dataset
        reader had not counted (``item.damage`` is '') is counted as a repair. Each skip and repair is counted
        once per task, however often the image is decoded (every epoch's validation, say). Thread-safe: the task
        loops call it from their prefetch threads (not from other processes: their counts would be lost).

        Raises ``MemoryError`` naming the image when even the reduced image cannot be had.
        """
        try:
            decoded = decode_image(item.image, min_side)
        except ImageProblem as problem:
            self._note_once(item.image, "skip", problem.reason, str(problem))
            return None
        if decoded.damage and not item.damage:
            self._note_once(item.image, "repair", decoded.damage, "decoded as far as its data goes")
        return decoded

    def _note_once(self, image: str, verb: str, reason: str, detail: str) -> None:
        with self._decode_lock:
            if (image, verb) in self._decode_noted:
                return
            self._decode_noted.add((image, verb))
            if verb == "skip":
                self.skips.skip(reason, image, detail)
            else:
                self.skips.repair(reason, image, detail)

    # --- writers: one shape for the three outputs; the core finalises and checks each when the task ends ----

    @property
    def training_result(self) -> TrainingResult:
        """The model stages of result.yaml (training only): ``stage_dir(name)``, then ``add_stage(...)``."""
        return self._writer(TaskKind.TRAINING, TrainingResult, "training_result")

    @property
    def mining_result(self) -> MiningResult:
        """result.tsv (mining only): ``add(image, score)`` for each candidate."""
        return self._writer(TaskKind.MINING, MiningResult, "mining_result")

    @property
    def infer_result(self) -> InferResult:
        """infer-result.json of a detection task (inference, object_type 2): ``add(image, detections, width,
        height)`` for each candidate; written with an empty entry for every candidate left out. A segmentation
        task writes :attr:`seg_infer_result` instead."""
        if self.kind is TaskKind.INFER and isinstance(self._output, SegInferResult):
            raise RuntimeError(f"infer_result writes detections; an object_type {self.config.object_type} task "
                               f"writes masks to context.seg_infer_result")
        return self._writer(TaskKind.INFER, InferResult, "infer_result")

    @property
    def seg_infer_result(self) -> SegInferResult:
        """infer-result.json of a segmentation task (inference, object_type 3 or 4), the COCO form the platform
        reads: ``add(image, instances, width, height)`` (instance masks, type 4) or ``add_label_map(image,
        label_map, width, height, probability=...)`` (type 3) for each candidate, in STORED pixels; every candidate
        left out is listed without objects."""
        if self.kind is TaskKind.INFER and isinstance(self._output, InferResult):
            raise RuntimeError(f"seg_infer_result writes masks; an object_type {self.config.object_type} task "
                               f"writes detections to context.infer_result")
        return self._writer(TaskKind.INFER, SegInferResult, "seg_infer_result")

    def optional_output(self, kind: str) -> ContextManager[OptionalOutput]:
        """``with context.optional_output("ONNX export") as onnx: ...``: for what the task writes beside its
        results (pictures, an ONNX export, attachments, reports). An ``Exception`` in the block does not stop the
        task: the first of each ``kind`` is warned about with its one-line reason, every one is counted in the
        task's final summary; ``onnx.ok`` says whether the block finished (list a file only then). A stop signal
        (a ``BaseException``) still stops the task. ``context.tensorboard`` counts its own failures the same way."""
        return self.optional_outputs.guard(kind)

    def summary(self) -> str:
        """The task's final summary line: what was skipped and repaired, what optional outputs failed ('' when
        there is nothing to say)."""
        return "; ".join(part for part in (self.skips.report(), self.optional_outputs.report()) if part)

    def _writer(self, kind: TaskKind, cls: type[_Writer], what: str) -> _Writer:
        self._require(kind, what)
        assert isinstance(self._output, cls)
        return self._output

    def _require(self, kind: TaskKind, what: str) -> None:
        if self.kind is not kind:
            raise RuntimeError(f"{what} is only available in a {kind} task, not in {self.kind}")
