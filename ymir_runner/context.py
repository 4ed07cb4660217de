"""The object a task hook receives: the parsed task, typed readers and the writers for its outputs."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Callable, Iterable

from .errors import ConfigError
from .protocol.config import TaskConfig
from .protocol.dataset import AnnotationReader, DatasetReader, SkipLog
from .protocol.env import TaskEnv, TaskKind, unroot
from .protocol.monitor import Progress
from .protocol.results import InferResult, Stage, TrainingResult, write_mining_result
from .protocol.tensorboard import LazySummaryWriter
from .records import ExecutorSpec


@dataclasses.dataclass
class TaskContext:
    """Everything a plugin needs for one task. Plugins never open the protocol files themselves."""

    kind: TaskKind
    env: TaskEnv
    config: TaskConfig
    executor: ExecutorSpec
    #: The registered name of the plugin that provides ``executor``.
    plugin_name: str
    progress: Progress
    logger: logging.Logger
    tensorboard: LazySummaryWriter
    skips: SkipLog
    #: Shared by the tasks of one run (mining then inference): e.g. a model loaded once.
    run_cache: dict[str, Any]
    #: Called with each stage once it is in result.yaml (the core wires it to the stage_saved hook).
    on_stage: Callable[[Stage], None] | None = None
    mining_written: bool = False
    _training_result: TrainingResult | None = dataclasses.field(default=None, repr=False)
    _infer_result: InferResult | None = dataclasses.field(default=None, repr=False)

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

    # --- writers ------------------------------------------------------------------------------------------

    @property
    def training_result(self) -> TrainingResult:
        """The model stages of result.yaml (training only)."""
        self._require(TaskKind.TRAINING, "training_result")
        if self._training_result is None:
            out = self.env.output
            self._training_result = TrainingResult(
                out.models_dir, out.training_result_file, legacy=self.legacy_protocol, on_stage=self.on_stage)
        return self._training_result

    @property
    def infer_result(self) -> InferResult:
        """Detections per candidate image; written to infer-result.json when the task ends (inference only)."""
        self._require(TaskKind.INFER, "infer_result")
        if self._infer_result is None:
            self._infer_result = InferResult(self.env.output.infer_result_file, self.class_names,
                                             legacy=self.legacy_protocol)
        return self._infer_result

    def write_mining_result(self, scores: Iterable[tuple[str, float]]) -> int:
        """Write result.tsv from ``(image path, score)`` pairs, highest score first (mining only)."""
        self._require(TaskKind.MINING, "write_mining_result")
        # Under a local root the readers hand out local paths; result.tsv names the candidate index's paths.
        scores = ((unroot(str(image), self.env.root), score) for image, score in scores)
        count = write_mining_result(self.env.output.mining_result_file, scores)
        self.mining_written = True
        return count

    def _require(self, kind: TaskKind, what: str) -> None:
        if self.kind is not kind:
            raise RuntimeError(f"{what} is only available in a {kind} task, not in {self.kind}")

    # --- checks the core runs around the hook -----------------------------------------------------------

    def check_inputs(self) -> None:
        """Fail early on configuration errors the platform only shows as an empty dataset."""
        if self.kind is TaskKind.TRAINING:
            if not self.class_names:
                raise ConfigError("config key 'class_names' is empty: a training task needs classes")
            export = self.config.export_format
            index = DatasetReader(self.env.input.training_index_file, annotations=None, skips=self.skips,
                                  name="training")
            if index.is_empty():
                raw = export.raw if export else "(absent)"
                raise ConfigError(
                    f"training index {self.env.input.training_index_file or '(not set)'} is empty: the platform "
                    f"exported no annotations; check config key 'export_format' (got {raw!r}, e.g. 'ark:raw')")
            if export is not None and export.annotation not in self.executor.annotation_formats:
                raise ConfigError(
                    f"config key 'export_format': executor {self.executor.name!r} reads "
                    f"{', '.join(self.executor.annotation_formats)}, not {export.raw!r}")
        elif not self.env.input.candidate_index_file:
            raise ConfigError(f"env.yaml: input.candidate_index_file is not set for a {self.kind} task")
