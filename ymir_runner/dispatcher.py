"""env.yaml → tasks → the chosen plugin's hooks → monitor state and exit code.

The dispatcher owns the run's outcome: on success monitor.txt ends at percent 1.0, state 2, and the exit
code is 0; on any error (SIGTERM and SIGINT included) it writes state 4 with the error's return code, stops the
run's child processes, prints the one-line reason as the LAST line of stderr (the platform shows users the
last 5 log lines) and exits non-zero. See shutdown.py for stop signals.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import sys
from typing import Any, Callable, Sequence

from .context import TaskContext
from .cpus import cpu_limits, openmp_settings
from .dataset_report import report_readers
from .errors import TaskTerminated, YmirError, classify, one_line
from .logs import configure_logging
from .origins import load_origins
from .plugins import Executor, PluginRegistry, build_plugin_manager
from .preflight import check_inputs, check_training_boxes, config_key_warnings, no_task_error, task_config
from .protocol.config import parse_config, read_config_file
from .protocol.dataset import SkipLog
from .protocol.env import (
    DEFAULT_ENV_FILE,
    EnvError,
    TaskEnv,
    TaskKind,
    check_paths_exist_here,
    load_env,
    record_model_object_type,
)
from .protocol.monitor import Monitor, Progress
from .protocol.outlock import hold_output_lock
from .protocol.paths import unroot
from .protocol.results import (
    MAIN_METRICS,
    SEGMENTATION_TYPES,
    InferResult,
    MiningResult,
    SegInferResult,
    Stage,
    TrainingResult,
    set_aside_previous_results,
)
from .protocol.tensorboard import CLOSE_TIMEOUT, LazySummaryWriter
from .sdk import sdk_env, sdk_writers
from .shutdown import StopSignals, child_pids, run_ends_process, silence_output, stop_children
from .version import __version__

log = logging.getLogger("ymir_runner")

EXIT_FAILED = 1
#: Seconds a failed or stopped run waits for its tensorboard events file to close. ``docker stop`` kills the
#: task 10 s after its SIGTERM; monitor.txt is written before and the children's grace
#: (:data:`~ymir_runner.shutdown.CHILD_GRACE_SECONDS`) comes out of the same 10 s.
FAILED_CLOSE_SECONDS = 2.0


def phase_spans(tasks: Sequence[TaskKind]) -> list[tuple[float, float]]:
    """Equal shares of [0, 1] per task: mining + inference → [0, 0.5] and [0.5, 1]."""
    width = 1.0 / max(len(tasks), 1)
    return [(index * width, (index + 1) * width) for index in range(len(tasks))]


class Run:
    """One execution of env.yaml: its tasks, in order, sharing a monitor, a tensorboard writer and a cache."""

    def __init__(self, env: TaskEnv, registry: PluginRegistry, monitor: Monitor,
                 executor: str | None = None) -> None:
        self.env = env
        #: The executor every task runs with, named by the command (``sdk-run``); None: config key ``plugin``.
        self.executor = executor
        self.registry = registry
        self.monitor = monitor
        self.tensorboard = LazySummaryWriter(env.output.tensorboard_dir)
        self.run_cache: dict[str, Any] = {}
        self.raw_config = read_config_file(env.input.config_file)
        self.base_config = parse_config(self.raw_config)  # reserved keys, validated before any plugin runs
        self.origins = load_origins(env)  # a sandbox's map: warnings name the user's own files too

    def execute(self) -> None:
        tasks = self.env.tasks
        if not tasks:
            raise no_task_error()
        self._log_plugins()
        requested = self.executor or self.base_config.plugin
        if self.executor and self.base_config.plugin and self.base_config.plugin != self.executor:
            log.warning("config key 'plugin' names %r, but this command runs executor %r: the key is ignored",
                        self.base_config.plugin, self.executor)
        chosen = {kind: self.registry.select(kind, self.base_config.object_type, requested) for kind in tasks}
        for warning in config_key_warnings(self.raw_config, chosen):
            log.warning("%s", warning)
        for kind, (start, end) in zip(tasks, phase_spans(tasks)):
            self.run_task(self.build_task(kind, chosen[kind], Progress(self.monitor, start, end, kind.value)))

    def build_task(self, kind: TaskKind, executor: Executor, progress: Progress) -> _Task:
        config = task_config(self.raw_config, executor.spec, kind, self.env)
        out, legacy = self.env.output, self.env.protocol < (1, 0, 0)
        output: TrainingResult | MiningResult | InferResult | SegInferResult
        if kind is TaskKind.TRAINING:
            # ``context`` is bound below, before any stage can be added; every stage carries the object type's
            # main metric, which ranks the stages (protocol.results.fitness)
            output = _CommittedStages(out.models_dir, out.training_result_file, legacy=legacy,
                                      main_metric=MAIN_METRICS.get(config.object_type, "mAP"),
                                      on_commit=lambda stage: self.registry.stage_saved(context, stage))
        elif kind is TaskKind.MINING:
            output = MiningResult(out.mining_result_file, lambda image: unroot(image, self.env.root))
        elif config.object_type in SEGMENTATION_TYPES:
            output = SegInferResult(out.infer_result_file, config.class_names, config.object_type)
        else:
            output = InferResult(out.infer_result_file, config.class_names, legacy=legacy)
        context = TaskContext(
            kind=kind, env=self.env, config=config, executor=executor.spec, progress=progress,
            logger=logging.getLogger(f"ymir_runner.{executor.spec.name}"), tensorboard=self.tensorboard,
            skips=SkipLog(names=self.origins), run_cache=self.run_cache, _output=output)
        return _Task(context, executor)

    def run_task(self, task: _Task) -> None:
        context, executor = task.context, task.executor
        log.info("%s task %s: executor %s", context.kind, self.env.task_id, executor.spec.name)
        check_inputs(context.kind, self.env, context.config, executor.spec, context.skips)
        try:
            if context.kind is TaskKind.TRAINING:
                # the model's object type goes with it: mining and inference refuse a model of another type
                record_model_object_type(self.env.output.models_dir, context.config.object_type)
                self._report_dataset(context)
            self.registry.before_task(context)
            with sdk_writers(context):
                self.registry.run_task(executor, context)
            self._finish_outputs(context)
            self.registry.after_task(context)
        except BaseException as error:
            self.registry.on_task_error(context, error)
            raise
        finally:
            report = context.summary()
            if report:
                log.warning("%s: %s", context.kind, report)
        context.progress.done()

    def _report_dataset(self, context: TaskContext) -> None:
        """Read the training and validation sets (the plugin gets what was read, nothing is read twice) and
        log what they hold and what is wrong with them; the same report goes to tensorboard as text."""
        report = report_readers([context.training_set, context.validation_set], context.class_names)
        check_training_boxes(list(context.training_set), context.config)
        with context.optional_output("dataset report"):  # the sets are read: what is left is a view of them
            for line in report.lines():
                log.info("dataset: %s", line)
            for warning in report.warnings():
                log.warning("dataset: %s", warning)
            self.tensorboard.add_text("ymir-runner/dataset", report.markdown(), 0)

    def _finish_outputs(self, context: TaskContext) -> None:
        name = context.executor.name
        if context.kind is TaskKind.TRAINING:
            if not context.training_result.stages:
                raise RuntimeError(f"executor {name!r} finished training without saving a model stage")
        elif context.kind is TaskKind.MINING:
            result = context.mining_result
            if not result.scores:
                raise RuntimeError(f"executor {name!r} finished mining without scoring any candidate")
            unscored = [path for path in context.candidates.paths() if unroot(path, self.env.root) not in result.scores]
            if unscored:
                log.warning("mining: %d candidates have no score and are left out of %s (never selected), e.g. %s",
                            len(unscored), self.env.output.mining_result_file, ", ".join(unscored[:3]))
            count = result.write()
            log.info("mining: wrote %d scores to %s", count, self.env.output.mining_result_file)
        elif context.config.object_type in SEGMENTATION_TYPES:
            writer = context.seg_infer_result
            count = writer.write(context.candidates.paths())
            for reason, dropped in writer.dropped.items():
                log.warning("infer: %d masks left out of %s (%s)", dropped, self.env.output.infer_result_file,
                            reason)
            log.info("infer: wrote %d images to %s", count, self.env.output.infer_result_file)
        else:
            count = context.infer_result.write(context.candidates.paths())
            log.info("infer: wrote %d image entries to %s", count, self.env.output.infer_result_file)

    def _log_plugins(self) -> None:
        versions = ", ".join(self.registry.versions()) or "none"
        log.info("ymir-runner %s, protocol %s, plugins: %s", __version__, self.env.protocol_version, versions)
        log.info("CPUs: %s; %s", cpu_limits().describe(), openmp_settings())
        self.tensorboard.add_text("ymir-runner/plugins", f"ymir-runner {__version__}; {versions}", 0)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Close what the run holds open (the tensorboard events file), waiting at most ``timeout`` seconds."""
        self.tensorboard.close(timeout)


@dataclasses.dataclass
class _Task:
    """The dispatcher's own record of one task: what the plugin sees, and the plugin that provides it."""

    context: TaskContext
    executor: Executor


class _CommittedStages(TrainingResult):
    """The training writer a task gets: the core fires ``stage_saved`` once a stage is in result.yaml."""

    def __init__(self, *args: Any, on_commit: Callable[[Stage], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_commit = on_commit

    def add_stage(self, *args: Any, **kwargs: Any) -> Stage:
        stage = super().add_stage(*args, **kwargs)
        self.on_commit(stage)
        return stage


@dataclasses.dataclass
class _RunState:
    """What the error path needs of a run that may have failed at any point."""

    children_before: set[int] = dataclasses.field(default_factory=set)
    monitor: Monitor | None = None
    current: Run | None = None
    #: What the run holds until it has reported its outcome (the lock on /out).
    held: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)


def run(env_file: str = DEFAULT_ENV_FILE, *, root: str | None = None,
        registry: PluginRegistry | None = None, exiting: bool = False, executor: str | None = None) -> int:
    """Run the tasks of ``env_file``; returns the process exit code. Never raises.

    ``executor`` names the executor every task runs with, whatever config key ``plugin`` says (a command made for
    one executor, such as the ``sdk`` plugin's ``sdk-run``; a ``plugin`` key naming another is warned about).

    The first SIGTERM or SIGINT stops the run through the error path (state 4, exit 128 + signal); later
    ones are ignored until the failure is reported and the run's child processes are gone, and after the
    run too when ``exiting`` (the process ends with this run: the command line, whose executable then ends at a
    failed run's last line: :func:`~ymir_runner.shutdown.exit_after_failed_run`). When ``exiting``, a failed run
    also sends whatever the process would still print to /dev/null after its last line
    (:func:`~ymir_runner.shutdown.silence_output`): the platform shows users the log's last lines.
    """
    configure_logging()
    state = _RunState(children_before=set(child_pids()))
    with state.held, StopSignals(exiting=exiting) as stop:  # /out stays locked until the failure is reported
        try:
            try:
                _execute(env_file, root, registry, state, stop, executor)
                log.info("done")
                code = 0
            except BaseException as error:  # SystemExit and KeyboardInterrupt too: the platform needs state 4
                stop.hold()
                code = _fail(stop.cause(error), state)
        except TaskTerminated as late:  # a stop signal in the instant between another error and hold()
            stop.hold()
            code = _fail(late, state)
    if exiting:
        run_ends_process(code)
        if code:  # the error line stays the log's last line: nothing printed at exit may follow it
            silence_output()
    return code


def _execute(env_file: str, root: str | None, registry: PluginRegistry | None, state: _RunState,
             stop: StopSignals, executor: str | None = None) -> None:
    env = load_env(env_file, root=root)
    check_paths_exist_here(env)
    state.held.enter_context(hold_output_lock(env.output.root_dir))  # a second run on this tree: refused here
    for warning in env.warnings:
        log.warning("%s", warning)
    state.monitor = Monitor(env.output.monitor_file, env.task_id)
    stop.raise_deferred()  # stopped while plugins were loading: now that monitor.txt is known
    for line in set_aside_previous_results(env.output):
        log.warning("%s", line)
    state.monitor.start()
    with sdk_env(env):
        registry = registry or build_plugin_manager()
        state.current = Run(env, registry, state.monitor, executor)
        state.current.execute()
        state.current.close()
        state.monitor.succeed()


def _fail(error: BaseException, state: _RunState) -> int:
    """Report a failed run: state 4 + code in monitor.txt, children stopped, the error as the LAST line."""
    code = classify(error)
    monitor = state.monitor
    if monitor is None and isinstance(error, EnvError) and error.monitor_file:
        monitor = Monitor(error.monitor_file, error.task_id)  # env.yaml failed, but its monitor path is known
    if monitor is not None:
        with contextlib.suppress(BaseException):
            monitor.fail(code)  # first: the platform knows the outcome whatever the rest costs
    with contextlib.suppress(BaseException):
        stop_children(spare=state.children_before)  # a DataLoader worker must not print after the last line
    with contextlib.suppress(BaseException):
        if state.current is not None:
            state.current.close(timeout=FAILED_CLOSE_SECONDS)
    if isinstance(error, TaskTerminated) and error.__context__ is not None:
        log.info("while stopping: %s", one_line(error.__context__))
    elif not isinstance(error, (YmirError, TaskTerminated)):  # a bug or a library failure: keep the traceback
        log.error("unexpected error", exc_info=error)
    with contextlib.suppress(Exception):  # stdout or stderr closed or on a full disk: the monitor still tells
        for handler in logging.getLogger("ymir_runner").handlers:
            handler.flush()
        if sys.stdout is not None:
            sys.stdout.flush()
        sys.stderr.write(f"ymir-runner: error {int(code)}: {one_line(error)}\n")
        sys.stderr.flush()
    if isinstance(error, TaskTerminated):
        return 128 + error.signum
    return 128 + signal.SIGINT if isinstance(error, KeyboardInterrupt) else EXIT_FAILED
