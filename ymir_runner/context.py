"""The object a task hook receives: the parsed task, typed readers and the writers for its outputs."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, ContextManager, TypeVar

from .optional import OptionalOutput, OptionalOutputs
from .protocol.config import TaskConfig
from .protocol.dataset import AnnotationReader, DatasetReader, SkipLog
from .protocol.env import TaskEnv, TaskKind
from .protocol.monitor import Progress
from .protocol.results import InferResult, MiningResult, TrainingResult
from .protocol.tensorboard import LazySummaryWriter
from .records import ExecutorSpec

_Writer = TypeVar("_Writer", TrainingResult, MiningResult, InferResult)


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
    #: This task's output writer (created by the core: one of the three, by ``kind``).
    _output: TrainingResult | MiningResult | InferResult = dataclasses.field(repr=False)
    #: The failures of this task's optional outputs, by kind (see :meth:`optional_output`).
    optional_outputs: OptionalOutputs = dataclasses.field(default_factory=OptionalOutputs, repr=False)

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
    def work_dir(self) -> str:
        """A writable scratch folder for this task (under /out: /in is read-only and $HOME may not exist)."""
        path = os.path.join(self.env.output.root_dir, "tmp", self.kind.value)
        os.makedirs(path, exist_ok=True)
        return path

    # --- readers ------------------------------------------------------------------------------------------

    @functools.cached_property
    def _annotations(self) -> AnnotationReader:
        """One annotation reader for both sets: a COCO file they share is read, and its skips counted, once."""
        return AnnotationReader(self.class_names, self.config.annotation_format, self.skips)

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
        """infer-result.json (inference only): ``add(image, detections, width, height)`` for each candidate;
        written with an empty entry for every candidate left out."""
        return self._writer(TaskKind.INFER, InferResult, "infer_result")

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
