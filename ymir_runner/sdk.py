"""The bridge to the ymir-exc SDK (the old 1.1.0 protocol): the one place that knows it.

During a run, code written against ``ymir_exc.env`` / ``ymir_exc.dataset_reader`` sees the same task as
ymir-runner: the SDK's env path points at the run's env.yaml (in a local run with a root, a copy whose
paths, index files included, point into the local tree; :func:`sdk_env`). The SDK's writers would write
protocol files the old way (two-decimal monitor, no return code, legacy result.yaml, ``annotations`` key, no
atomicity), so during a task they are routed to that task's writers instead (:func:`sdk_writers`): ymir-exc
never writes a protocol file.

One floor above the protocol: it reads the task's env and writes through a :class:`~.context.TaskContext`.

The SDK's writers, by line (``pip show ymir-exc`` prints the version; two lines print the same 2.1.1.0215, so
the bridge routes by each function's signature and the version only names the SDK in messages)::

    1.1-pypi  1.1.0.523 (PyPI)            1.1-git  1.1.0.0815, 1.1.1.0902 (modelai/ymir-executor-sdk, ymir1.0.0)
    1.3       2.0.0.1221 (branch ymir1.3.0) 2.1-tag  2.1.1.0215 (tag v2.1.0, Feb 2023)
    2.x       2.1.1.0215 (branches ymir2.1.0 / ymir2.4.0 from Mar 2023: what the public executors install)

    writer                                  lines                  parameters (defaults as in the SDK)
    monitor.write_monitor_logger            1.1-*, 1.3, 2.1-tag    (percent)
                                            2.x                    (percent, state=ES_RUNNING, return_code=0)
    monitor.write_monitor_logger_for_multiple_tasks  1.3, 2.*      (cfg, task, percent, order='tmi')
    result_writer.write_training_result     1.1-pypi               (model_names, mAP, classAPs, **kwargs)
                                            1.1-git, 1.3, 2.1-tag  (model_names, mAP, **kwargs)
                                            2.x                    (stage_name, files, evaluation_result={},
                                                                    timestamp=None, attachments=None,
                                                                    evaluate_config=None)
    result_writer.write_model_stage         1.1-git                (stage_name, files, mAP, timestamp=None)
                                            1.3                    (stage_name, files, mAP, timestamp=None,
                                                                    attachments=None)
                                            2.*                    (stage_name, files, evaluation_result={},
                                                                    mAP=None, timestamp=None, attachments=None,
                                                                    evaluate_config=None)
    result_writer.write_mining_result       all                    (mining_result)
    result_writer.write_infer_result        1.1-*                  (infer_result)
                                            1.3, 2.*               (infer_result, algorithm='detection')
    result_writer.multiple_model_stages_supportable  1.1-git, 1.3, 2.*  ()

What each parameter becomes (``context`` is the running task's :class:`~.context.TaskContext`)::

    percent            this task's progress in [0, 1]: ``context.progress.update`` (the core maps it into the task's
                       share of a mining + inference run; never goes down; monitor.txt gets 4 decimals, a code)
    state              2 (ES_RUNNING): progress only. 4 (ES_ERROR): the task fails now (a YmirError carrying
                       ``return_code``), so state 4 is always followed by a non-zero exit; other values: ValueError
    return_code        with state 4: monitor.txt's code (one the protocol lists; 0 or another: 160004); ignored
                       with state 2 (the platform reads a code only with state 4)
    cfg, task, order   ignored: the core knows which task runs and in which order; ``percent`` is the task's own
    model_names        1.x: files (names relative to /out/models, or paths) copied into a new stage folder
                       ``stage_<n>`` (each call is one stage: a later call cannot change an earlier stage's files)
    mAP                the stage's ``mAP`` in [0, 1]; in 2.* write_model_stage only when ``evaluation_result`` is
                       empty (as the SDK did)
    classAPs, **kwargs 1.x: keys the protocol's stage holds (``mAR``; ``tp``/``fp``/``fn``) go to the stage, the
                       others (``classAPs`` too: result.yaml has no per-class AP) are logged once and dropped
    stage_name         the stage's name ('-' becomes '_', as the SDK did); letters, digits, '_' only
    files              names in /out/models/<stage_name>/ or /out/models/ (kept as given), or absolute paths:
                       inside those folders made relative, elsewhere copied into the stage folder
    evaluation_result  the stage's metrics: ``mAP``, ``mAR`` (and any other key: a float in [0, 1]) as metrics,
                       ``tp``, ``fp``, ``fn`` as counts; empty and no ``mAP``: ValueError, as the SDK
    timestamp          ignored: a stage is stamped when recorded, in integer seconds (a millisecond stamp would
                       overflow the platform's int32)
    attachments        {section: [file]}: each file (in /out/models/attachments/<section>/, /out/models/, or a
                       path) listed under ``attachments`` in result.yaml, copied there when it is elsewhere
    evaluate_config    ``iou_thr``, ``conf_thr``...: result.yaml's ``evaluate_config`` (floats)
    mining_result      (image, score) pairs: ``context.mining_result.add`` (calls add up; a later score for an
                       image replaces the earlier); the core writes result.tsv highest first when the task ends
    infer_result       {image: [Annotation(class_name, score, box=Box(x, y, w, h))]}: ``context.infer_result.add``
                       (``boxes`` or, protocol < 1.0.0, ``annotations``; class_name must be in class_names)
    algorithm          'detection' only: a segmentation or classification result fails the task (ymir-runner
                       writes detection results)
    multiple_model_stages_supportable()  answers True during a task, so the SDK's helpers (2.x
                       ``util.write_ymir_training_result``) call write_model_stage instead of writing the legacy
                       result.yaml themselves; ymir-runner writes the legacy form for protocol < 1.0.0

Not replaced: ``monitor.write_tensorboard_text`` and ``write_final_executor_log`` (tensorboard files, no protocol
file). Any other ``write_*`` function of ``monitor`` or ``result_writer``, or a known one whose signature is none
of the above, is refused: one warning names the SDK version and the writers, and a call fails the task (error
160004 naming the writer) instead of writing the file the SDK's way. Calls through the module (``rw.write_...``,
``monitor.write_...``: what the public executors write) are routed, and so is every name a loaded module bound
to a writer (``from ymir_exc.result_writer import write_model_stage``; 2.x ``util`` binds
``write_monitor_logger_for_multiple_tasks``); a writer kept elsewhere (a default argument, an object's
attribute) is not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import inspect
import logging
import os
import shutil
import sys
import tempfile
from typing import Any, Callable, Iterable, Iterator, Mapping

import yaml

from .context import TaskContext
from .errors import ReturnCode, YmirError, one_line
from .protocol.dataset import index_lines
from .protocol.env import TaskEnv
from .protocol.monitor import STATE_FAILED, STATE_RUNNING
from .protocol.paths import reroot
from .protocol.results import COUNT_KEYS, Detection, TrainingResult

log = logging.getLogger(__name__)


def _rerooted_env(env: TaskEnv, scratch: _Scratch | _Folder,
                  output: Mapping[str, str] | None = None) -> str:
    """env.yaml and index files whose container paths point into the local root, written as ``scratch`` files;
    ``output`` replaces keys of its ``output`` section.

    The index files are read by the core's one reader (:func:`~.protocol.dataset.index_lines`: UTF-16, a
    byte-order mark, a line that is not text, a FIFO), so the SDK sees the lines the core reads; a line that is not
    text is left out (the core skips it, with a warning, when it reads the set)."""
    document = env.to_yaml_dict()
    for key, name in (("training_index_file", "training"), ("val_index_file", "validation"),
                      ("candidate_index_file", "candidate")):
        index = document["input"][key]
        if not env.root or not index or not os.path.lexists(index):
            continue
        lines = ("\t".join(reroot(field.strip(), env.root) for field in text.split("\t")) + "\n"
                 for _, text in index_lines(index, name) if text is not None)
        document["input"][key] = scratch.write(os.path.basename(index), lines)
    unknown = sorted(set(output or {}) - set(document["output"]))
    if unknown:
        raise ValueError(f"env.yaml has no output keys {unknown}; it has {sorted(document['output'])}")
    document["output"].update(output or {})
    return scratch.write("env.yaml", [yaml.safe_dump(document, sort_keys=False)])


class _Folder:
    """Files written into a folder the caller owns (and removes)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def write(self, name: str, lines: Iterable[str]) -> str:
        path = os.path.join(self.folder, name)
        with open(path, "w", encoding="utf-8") as stream:
            stream.writelines(lines)
        return path


def write_sdk_env(env: TaskEnv, folder: str, *, output: Mapping[str, str] | None = None) -> str:
    """Write the env.yaml a ymir-exc executor running in ANOTHER process reads (handed to it through
    ``$DEFAULT_ENV_FILE_PATH``) into ``folder`` (which must exist); returns its path.

    It is the run's env.yaml (``env``: paths already re-rooted under a root), with ``output`` replacing keys of its
    ``output`` section (``{"monitor_file": ...}``: where the executor's own writers are to write instead). With a
    root (a local run), the index files are written into ``folder`` too, each line's container paths re-rooted
    (the lines the core's reader reads: a line that is not text is left out), and env.yaml names those copies.

    Raises:
        ValueError: a key of ``output`` that env.yaml's ``output`` section does not have.
        DatasetError: an index file the core cannot read either.
    """
    return _rerooted_env(env, _Folder(folder), output)


class _Scratch:
    """Files that live as long as the run: unnamed temp files, named ``/proc/<pid>/fd/<n>``, which the kernel
    deletes when the process ends, even by SIGKILL (Linux). Where there is no ``/proc`` (macOS), a temp folder
    removed when the run ends, which a SIGKILLed run leaves to the system's temp cleaner."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self._stack = stack
        self._proc = f"/proc/{os.getpid()}/fd"
        self._folder = "" if os.path.isdir(self._proc) else stack.enter_context(
            tempfile.TemporaryDirectory(prefix="ymir-runner-env-"))

    def write(self, name: str, lines: Iterable[str]) -> str:
        """A file holding ``lines`` (UTF-8), readable by path by this process and its children; its path."""
        if self._folder:
            path = os.path.join(self._folder, name)
            with open(path, "w", encoding="utf-8") as stream:
                stream.writelines(lines)
            return path
        stream = self._stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8", prefix="ymir-runner-env-"))
        stream.writelines(lines)
        stream.flush()
        return f"{self._proc}/{stream.fileno()}"


@contextlib.contextmanager
def sdk_env(env: TaskEnv) -> Iterator[str]:
    """Point ``ymir_exc.settings.DEFAULT_ENV_FILE_PATH`` at the run's env file; restore it afterwards.

    With a root (a local run), the SDK gets re-rooted copies of env.yaml and the index files (:func:`_rerooted_env`)
    that nothing outlives: see :class:`_Scratch`. Raises :class:`~ymir_runner.errors.DatasetError` for an index
    file the core cannot read either."""
    try:
        from ymir_exc import settings
    except ImportError:  # the SDK is a dependency, but a broken install must not stop a run
        settings = None
    if settings is None:  # (not inside the except: the task would run "while handling" the ImportError)
        yield env.env_file
        return
    previous = settings.DEFAULT_ENV_FILE_PATH
    with contextlib.ExitStack() as stack:
        path = env.env_file
        if env.root:
            path = _rerooted_env(env, _Scratch(stack))
        settings.DEFAULT_ENV_FILE_PATH = path
        try:
            yield path
        finally:
            settings.DEFAULT_ENV_FILE_PATH = previous


@contextlib.contextmanager
def sdk_writers(context: TaskContext) -> Iterator[None]:
    """Route the SDK's writers to ``context``'s writers while the task runs (see the module's table), and put the
    SDK's own back afterwards. A writer the bridge cannot route is refused: one warning, and a call fails."""
    try:
        from ymir_exc import monitor as sdk_monitor
        from ymir_exc import result_writer
    except ImportError:  # the SDK is a dependency, but a broken install must not stop a run
        sdk_monitor = result_writer = None
    if sdk_monitor is None or result_writer is None:
        yield
        return
    routes = _plan_routes(sdk_monitor, result_writer)
    _CONTEXTS.append(context)
    try:
        _bind(routes)
        yield
    finally:
        _CONTEXTS.remove(context)
        _unbind(routes)


# --- routing plan ---------------------------------------------------------------------------------------------

#: The running tasks' contexts (the latest is routed to): adapters look it up at each call, so a name bound to an
#: adapter during one task (a module first imported then) routes to the task that runs when it is called.
_CONTEXTS: list[TaskContext] = []
#: Messages already logged: a refusal once per process (per SDK version and set of writers), others once a task.
_SAID: set[str] = set()
#: Writers that write no protocol file (tensorboard text): left as they are.
_HARMLESS = {"write_tensorboard_text", "write_final_executor_log"}

_Router = Callable[[TaskContext, dict, dict], None]


@dataclasses.dataclass(frozen=True)
class _Route:
    """One SDK function and what replaces it during a task."""

    original: Callable[..., Any]
    replacement: Callable[..., Any]


def _shape(function: Callable[..., Any]) -> tuple[str, ...] | None:
    """The parameter names in order (``**kwargs`` as ``**kwargs``); None when Python cannot tell."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    prefix: dict[Any, str] = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**",
                              inspect.Parameter.KEYWORD_ONLY: "*, "}
    return tuple(prefix.get(parameter.kind, "") + parameter.name for parameter in parameters)


def _sdk_version() -> str:
    """The installed SDK's version, as ``pip show ymir-exc`` prints it (a module's ``__version__`` first)."""
    module = sys.modules.get("ymir_exc")
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        return importlib.metadata.version("ymir-exc")
    except importlib.metadata.PackageNotFoundError:
        return "(unknown version)"


def _plan_routes(sdk_monitor: Any, result_writer: Any) -> list[_Route]:
    """A route for every writer of the two modules: an adapter with the SDK function's own signature where the
    shape is known, a refusal where it is not (warned about once)."""
    routes, refused = [], []
    for module in (sdk_monitor, result_writer):
        for name, function in sorted(vars(module).items()):
            if not (name.startswith("write_") or name == "multiple_model_stages_supportable") or name in _HARMLESS:
                continue
            if _defined_in(function) != module.__name__:  # imported from elsewhere, or not a function
                continue
            if name == "multiple_model_stages_supportable":
                if _shape(function) == ():
                    routes.append(_Route(function, _supportable))
                continue
            qualname = f"{module.__name__}.{name}"
            shape = _shape(function)
            known = _KNOWN_SHAPES.get(name, {})
            if shape in known:
                routes.append(_Route(function, _adapter(qualname, function, known[shape])))
            else:
                refused.append(f"{name}({', '.join(shape or ('?',))})")
                routes.append(_Route(function, _refusal(qualname, shape, known)))
    if refused:
        message = (f"ymir-exc {_sdk_version()}: ymir-runner cannot route {', '.join(refused)} to its writers (a "
                   f"signature it does not know); a call fails the task instead of writing the old way")
        if message not in _SAID:
            _SAID.add(message)
            log.warning("%s", message)
    return routes


def _defined_in(function: Any) -> str | None:
    """The module a function (under its decorators: the SDK's ``@deprecated``) was defined in; None: not one."""
    try:
        function = inspect.unwrap(function)
    except ValueError:  # a cycle of __wrapped__
        return None
    return function.__module__ if inspect.isfunction(function) else None


def _bind(routes: list[_Route]) -> None:
    """Replace every name a loaded module binds to an SDK writer (the SDK's modules and ``from ... import``s)."""
    _rebind({id(route.original): (route.original, route.replacement) for route in routes})


def _unbind(routes: list[_Route]) -> None:
    """Put the SDK's functions back wherever an adapter is bound now (modules imported during the task too)."""
    _rebind({id(route.replacement): (route.replacement, route.original) for route in routes})


def _rebind(swaps: dict[int, tuple[Any, Any]]) -> None:
    this = sys.modules.get(__name__)
    for module in list(sys.modules.values()):
        if module is this:  # its own names (``_supportable``) stay what they are
            continue
        try:
            names = list(vars(module).items())
        except TypeError:  # something that is not a module in sys.modules
            continue
        for name, value in names:
            swap = swaps.get(id(value))
            if swap is not None and swap[0] is value:
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(module, name, swap[1])


def _current(qualname: str) -> TaskContext:
    if not _CONTEXTS:
        raise RuntimeError(f"{qualname} was called outside a ymir-runner task: the SDK's writers are routed to a "
                           f"task's writers only while it runs")
    return _CONTEXTS[-1]


def _adapter(qualname: str, function: Callable[..., Any], router: _Router) -> Callable[..., Any]:
    """A function with ``function``'s signature (names, order, defaults) whose arguments go to ``router``."""
    signature = inspect.signature(function)
    extra_name = next((parameter.name for parameter in signature.parameters.values()
                       if parameter.kind is inspect.Parameter.VAR_KEYWORD), None)

    def adapter(*args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{qualname}(): {error}") from None
        bound.apply_defaults()
        values = dict(bound.arguments)
        extra = dict(values.pop(extra_name, {})) if extra_name else {}
        router(_current(qualname), values, extra)

    adapter.__signature__ = signature  # type: ignore[attr-defined]
    adapter.__name__ = function.__name__
    adapter.__qualname__ = function.__qualname__
    adapter.__module__ = function.__module__
    adapter.__doc__ = f"{qualname}, routed by ymir-runner to the running task's writers (ymir_runner.sdk)."
    return adapter


def _refusal(qualname: str, shape: tuple[str, ...] | None, known: dict[tuple[str, ...], _Router]
             ) -> Callable[..., Any]:
    """What replaces a writer the bridge cannot route: a call fails the task, naming the writer and the SDK."""
    forms = "; ".join(f"({', '.join(form)})" for form in known) or "none: not an SDK writer it knows"

    def refused(*args: Any, **kwargs: Any) -> None:
        raise YmirError(f"{qualname}({', '.join(shape or ('?',))}) of ymir-exc {_sdk_version()} is not routed by "
                        f"ymir-runner (signatures it routes: {forms}); write through the task context or install "
                        f"a ymir-exc it knows (1.1, 1.3.0, 2.x)")

    refused.__name__ = qualname.rsplit(".", 1)[-1]
    refused.__doc__ = f"{qualname}: refused by ymir-runner (a signature it cannot route)."
    return refused


def _supportable() -> bool:
    """``multiple_model_stages_supportable`` during a task: stages always go through ``write_model_stage``."""
    return True


# --- what each writer's arguments become ----------------------------------------------------------------------

def _monitor(context: TaskContext, values: dict, extra: dict) -> None:
    state = int(values.get("state", STATE_RUNNING))
    if state == STATE_RUNNING:
        context.progress.update(float(values["percent"]))
        return
    if state != STATE_FAILED:
        raise ValueError(f"ymir_exc.monitor.write_monitor_logger: state {state} is neither {STATE_RUNNING} "
                         f"(running) nor {STATE_FAILED} (failed)")
    reported = int(values.get("return_code", 0))
    try:
        code = ReturnCode(reported)
    except ValueError:
        code = ReturnCode.GENERIC
    handling = sys.exc_info()[1]
    cause = f" while handling {one_line(handling)}" if handling is not None else ""
    raise YmirError(f"the executor reported a failure through ymir_exc.monitor.write_monitor_logger (state "
                    f"{STATE_FAILED}, return code {reported}){cause}", code=code)


def _task_monitor(context: TaskContext, values: dict, extra: dict) -> None:
    context.progress.update(float(values["percent"]))


def _mining(context: TaskContext, values: dict, extra: dict) -> None:
    for image, score in values["mining_result"]:
        context.mining_result.add(image, score)


def _infer(context: TaskContext, values: dict, extra: dict) -> None:
    algorithm = values.get("algorithm", "detection")
    if algorithm != "detection":
        raise YmirError(f"ymir_exc.result_writer.write_infer_result(algorithm={algorithm!r}): ymir-runner writes "
                        f"detection results only")
    names = context.class_names
    for image, boxes in values["infer_result"].items():
        detections = []
        for annotation in boxes:
            box, name = annotation.box, annotation.class_name
            if name not in names:
                raise ValueError(f"{image}: class_name {name!r} is not one of class_names {list(names)}")
            detections.append(Detection(box.x, box.y, box.x + box.w, box.y + box.h, annotation.score,
                                        names.index(name)))
        context.infer_result.add(image, detections)


def _split_metrics(values: dict) -> tuple[dict, dict]:
    """Stage metrics (floats) and counts (``tp``, ``fp``, ``fn``)."""
    counts = {key: value for key, value in values.items() if str(key).lower() in COUNT_KEYS}
    return {key: value for key, value in values.items() if key not in counts}, counts


def _model_path(context: TaskContext, name: str) -> str:
    path = os.path.join(context.env.output.models_dir, os.fspath(name))
    if not os.path.isfile(path):
        raise ValueError(f"ymir_exc.result_writer.write_training_result: model file {name!r} not found in "
                         f"{context.env.output.models_dir}")
    return path


def _legacy_training(context: TaskContext, values: dict, extra: dict) -> None:
    """1.x ``write_training_result(model_names, mAP, ...)``: each call is a stage of its own."""
    results = context.training_result
    number = len(results.stages)
    while f"stage_{number}" in results.stages:
        number += 1
    stage = f"stage_{number}"
    sources = [_model_path(context, name) for name in values["model_names"]]
    folder = results.stage_dir(stage)
    for source in sources:
        shutil.copy2(source, folder)
    kept = {key: value for key, value in extra.items() if key == "mAR" or key.lower() in COUNT_KEYS}
    dropped = sorted(key for key in extra if key not in kept) + (["classAPs"] if values.get("classAPs") else [])
    if dropped:
        _say_once(context, f"ymir_exc.result_writer.write_training_result: {', '.join(dropped)} have no place "
                           f"in a result.yaml stage; not written")
    metrics, counts = _split_metrics({"mAP": values["mAP"], **kept})
    results.add_stage(stage, [os.path.basename(source) for source in sources], metrics, counts)


def _stage(context: TaskContext, values: dict, extra: dict) -> None:
    """``write_model_stage`` (every line) and the 2.x ``write_training_result``."""
    stage, files = str(values["stage_name"] or "").replace("-", "_"), list(values["files"] or ())
    if not stage or not files:
        raise ValueError("ymir_exc.result_writer: empty stage_name or files")
    evaluation = dict(values.get("evaluation_result") or {})
    if not evaluation:
        if values.get("mAP") is None:
            raise ValueError(f"ymir_exc.result_writer: stage {stage!r} has no evaluation_result (and no mAP)")
        evaluation = {"mAP": values["mAP"]}
    results = context.training_result
    folder = results.stage_dir(stage)
    names = [_stage_file(results, folder, file) for file in files]
    for section, attached in (values.get("attachments") or {}).items():
        for file in attached:
            with context.optional_output("attachment"):  # a missing PR curve must not cost the stage
                _attach(results, str(section), os.fspath(file))
    if values.get("evaluate_config"):
        results.set_evaluate_config(**{str(key): value for key, value in values["evaluate_config"].items()})
    metrics, counts = _split_metrics(evaluation)
    results.add_stage(stage, names, metrics, counts)


def _stage_file(results: TrainingResult, folder: str, file: Any) -> str:
    """A stage's file as result.yaml names it: relative names as given; a path inside the stage folder or
    /out/models made relative to it; a path elsewhere copied into the stage folder."""
    file = os.fspath(file)
    if not os.path.isabs(file):
        return file
    for base in (folder, results.models_dir):
        base = os.path.abspath(base)
        if os.path.abspath(file).startswith(base + os.sep):
            return os.path.relpath(file, base)
    if not os.path.isfile(file):
        raise ValueError(f"ymir_exc.result_writer: stage file {file} not found")
    shutil.copy2(file, folder)
    return os.path.basename(file)


def _attach(results: TrainingResult, section: str, file: str) -> None:
    """List ``file`` under ``attachments[section]``, copied to /out/models/attachments/<section>/ unless there."""
    target = os.path.join(results.models_dir, "attachments", section)
    candidates = [file] if os.path.isabs(file) else [os.path.join(target, file),
                                                     os.path.join(results.models_dir, file)]
    source = next((path for path in candidates if os.path.isfile(path)), None)
    if source is None:
        raise ValueError(f"ymir_exc.result_writer: attachment {file!r} ({section}) not found in {target} or "
                         f"{results.models_dir}")
    if os.path.dirname(os.path.abspath(source)) != os.path.abspath(target):
        results.add_attachment(section, source)
        return
    names = results.attachments.setdefault(section, [])
    if os.path.basename(source) not in names:
        names.append(os.path.basename(source))


def _say_once(context: TaskContext, message: str) -> None:
    """Log ``message`` once per task."""
    key = f"{id(context)} {message}"
    if key not in _SAID:
        _SAID.add(key)
        log.info("%s", message)


#: The signatures the bridge routes, per writer name (see the module's table).
_KNOWN_SHAPES: dict[str, dict[tuple[str, ...], _Router]] = {
    "write_monitor_logger": {("percent",): _monitor, ("percent", "state", "return_code"): _monitor},
    "write_monitor_logger_for_multiple_tasks": {("cfg", "task", "percent", "order"): _task_monitor},
    "write_training_result": {
        ("model_names", "mAP", "classAPs", "**kwargs"): _legacy_training,
        ("model_names", "mAP", "**kwargs"): _legacy_training,
        ("stage_name", "files", "evaluation_result", "timestamp", "attachments", "evaluate_config"): _stage,
    },
    "write_model_stage": {
        ("stage_name", "files", "mAP", "timestamp"): _stage,
        ("stage_name", "files", "mAP", "timestamp", "attachments"): _stage,
        ("stage_name", "files", "evaluation_result", "mAP", "timestamp", "attachments", "evaluate_config"): _stage,
    },
    "write_mining_result": {("mining_result",): _mining},
    "write_infer_result": {("infer_result",): _infer, ("infer_result", "algorithm"): _infer},
}
