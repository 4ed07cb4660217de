"""/in/env.yaml: what the platform asks this run to do, and where every file is; and the two documents the
platform writes for a task, env.yaml and config.yaml (:func:`env_document`, :func:`config_document`), for the
trees the sandbox, the testing kit and the demo make."""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

from ..errors import ConfigError
from .coerce import to_bool
from .config import DEFAULT_SHM_SIZE, DETECTION, RESERVED_KEYS
from .paths import CONTAINER_OUT_DIR, container_top, reroot
from .yaml_file import YamlLimitError, excerpt, read_yaml, read_yaml_mapping, salvage_scalars

DEFAULT_ENV_FILE = "/in/env.yaml"
#: Points the same run at a local tree: absolute paths under /in and /out are read under $ROOT/in, $ROOT/out.
ROOT_ENV_VAR = "YMIR_RUNNER_ROOT"
#: Platforms up to YMIR 1.1.0 wrote no protocol_version.
LEGACY_PROTOCOL_VERSION = "0.0.1"
#: The versions docs/protocol.md describes; another one is run as the nearest known and warned about.
KNOWN_PROTOCOL_VERSIONS = ("0.0.1", "1.0.0", "1.1.0")
#: The protocol version ymir-runner implements, and writes into the env.yaml files it makes.
PROTOCOL_VERSION = "1.1.0"
DEFAULT_TASK_ID = "default-task"
#: env.yaml's own top-level keys besides ``task_id`` (which config.yaml has too): a file with none of them is
#: not an env.yaml.
ENV_ONLY_KEYS = frozenset({"protocol_version", "run_training", "run_mining", "run_infer", "manifest_file", "input",
                           "output"})


class TaskKind(str, enum.Enum):
    """The three kinds of work YMIR asks of an executor, in the order a run performs them."""

    TRAINING = "training"
    MINING = "mining"
    INFER = "infer"

    def __str__(self) -> str:
        return self.value


#: An executor image's /img-man folder: the manifest and the hyper-parameter template of each task kind, which
#: the platform reads with ``docker run --rm IMAGE cat /img-man/<file>``.
IMG_MAN_DIR = "/img-man"
MANIFEST_FILE = "manifest.yaml"
TEMPLATE_FILES = {
    TaskKind.TRAINING: "training-template.yaml",
    TaskKind.MINING: "mining-template.yaml",
    TaskKind.INFER: "infer-template.yaml",
}


@dataclasses.dataclass(frozen=True)
class InputPaths:
    root_dir: str = "/in"
    assets_dir: str = "/in/assets"
    annotations_dir: str = "/in/annotations"
    models_dir: str = "/in/models"
    training_index_file: str = ""
    val_index_file: str = ""
    candidate_index_file: str = ""
    config_file: str = "/in/config.yaml"


@dataclasses.dataclass(frozen=True)
class OutputPaths:
    root_dir: str = "/out"
    models_dir: str = "/out/models"
    tensorboard_dir: str = "/out/tensorboard"
    training_result_file: str = "/out/models/result.yaml"
    mining_result_file: str = "/out/result.tsv"
    infer_result_file: str = "/out/infer-result.json"
    monitor_file: str = "/out/monitor.txt"
    executor_log_file: str = "/out/ymir-executor-out.log"


def parse_version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in str(text).strip().split("."))
    except ValueError:
        raise ConfigError(f"env.yaml: protocol_version {excerpt(text)} is not a dotted version like 1.1.0") from None


@dataclasses.dataclass(frozen=True)
class TaskEnv:
    """The typed content of env.yaml. Paths are absolute and already re-rooted when a root is given."""

    task_id: str
    protocol_version: str
    run_training: bool
    run_mining: bool
    run_infer: bool
    manifest_file: str
    input: InputPaths
    output: OutputPaths
    #: The env.yaml this was read from.
    env_file: str = DEFAULT_ENV_FILE
    #: The local folder standing in for "/" (None inside the real container).
    root: str | None = None
    #: Values read with a guess (a string for a boolean, an unknown protocol_version, a missing section):
    #: the dispatcher logs each as a warning.
    warnings: tuple[str, ...] = ()

    @property
    def protocol(self) -> tuple[int, ...]:
        return parse_version(self.protocol_version)

    @property
    def tasks(self) -> tuple[TaskKind, ...]:
        """The tasks to run, in order. Mining runs before inference when both are asked (protocol 2)."""
        if self.run_training:
            return (TaskKind.TRAINING,)
        wanted = ((self.run_mining, TaskKind.MINING), (self.run_infer, TaskKind.INFER))
        return tuple(kind for flag, kind in wanted if flag)

    def to_yaml_dict(self) -> dict[str, Any]:
        """env.yaml content with the re-rooted paths (what the ymir-exc SDK is shown during a run)."""
        data = dataclasses.asdict(self)
        for private in ("env_file", "root", "warnings"):
            data.pop(private)
        return data


def env_document(task_id: str, kinds: Iterable[TaskKind | str], *, protocol_version: str | None = PROTOCOL_VERSION,
                 manifest_file: str = IMG_MAN_DIR + "/" + MANIFEST_FILE,
                 path: Callable[[str], str] = lambda container_path: container_path) -> dict[str, Any]:
    """env.yaml as the platform writes it for ``kinds`` (protocol.md section 2): the default container
    paths, each passed through ``path`` (e.g. to name a local tree), and '' for unused index files.
    ``protocol_version=None`` leaves the key out, as platforms up to YMIR 1.1.0 did."""
    kinds = {TaskKind(kind) for kind in kinds}
    training = TaskKind.TRAINING in kinds
    inputs = InputPaths(training_index_file="/in/train-index.tsv" if training else "",
                        val_index_file="/in/val-index.tsv" if training else "",
                        candidate_index_file="" if training else "/in/candidate-index.tsv")
    document: dict[str, Any] = {"task_id": task_id}
    if protocol_version:
        document["protocol_version"] = protocol_version
    document.update({
        "run_training": training,
        "run_mining": TaskKind.MINING in kinds,
        "run_infer": TaskKind.INFER in kinds,
        "manifest_file": manifest_file,
        "input": {key: path(value) if value else value for key, value in dataclasses.asdict(inputs).items()},
        "output": {key: path(value) for key, value in dataclasses.asdict(OutputPaths()).items()},
    })
    return document


def config_document(task_id: str, kinds: Iterable[TaskKind | str], params: Mapping[str, Any] | None = None, *,
                    class_names: Sequence[str] = (), model_files: Sequence[str] = (),
                    export_format: str | None = None) -> dict[str, Any]:
    """config.yaml as the platform writes it for ``kinds`` (protocol.md section 2), the twin of
    :func:`env_document`: the keys it always writes (``task_id``, ``class_names``, ``gpu_id`` '' and ``gpu_count``
    0: the CPU, ``object_type`` 2: detection); in a mining or inference task ``run_mining`` and ``run_infer``, both
    (YMIR's ``mir infer`` command runs either task and writes the two flags into its config.yaml, as env.yaml's;
    a training config.yaml has neither); the model's files (container paths, ``/in/models/<stage>/<file>``) as
    ``pretrained_model_params`` in training (absent without a model) or ``model_params_path``; ``export_format``
    in training only. Then ``params`` over all of these: the template's values as edited in the web UI, and what a
    caller sets on purpose (a GPU, a test's broken value). ``shm_size`` is the template's, else
    :data:`~.config.DEFAULT_SHM_SIZE`."""
    kinds = {TaskKind(kind) for kind in kinds}
    training = TaskKind.TRAINING in kinds
    document: dict[str, Any] = {"task_id": task_id, "class_names": list(class_names), "gpu_id": "", "gpu_count": 0,
                                "object_type": DETECTION}
    if not training:
        document["run_mining"] = TaskKind.MINING in kinds
        document["run_infer"] = TaskKind.INFER in kinds
    if model_files:
        document["pretrained_model_params" if training else "model_params_path"] = list(model_files)
    if training and export_format:
        document["export_format"] = export_format
    document.update(params or {})
    document.setdefault("shm_size", DEFAULT_SHM_SIZE)
    return document


def _protocol_guess(version: str) -> str | None:
    """How an unknown protocol_version is read (a warning's end), or None for a known one."""
    def padded(text: str) -> tuple[int, ...]:
        numbers = parse_version(text)
        return numbers + (0,) * (3 - len(numbers))

    newest = KNOWN_PROTOCOL_VERSIONS[-1]
    if padded(version) in {padded(known) for known in KNOWN_PROTOCOL_VERSIONS}:
        return None
    if padded(version) > padded(newest):
        return f"is newer than this ymir-runner knows: outputs follow protocol {newest}"
    era = "1.0.0" if padded(version) >= (1, 0, 0) else LEGACY_PROTOCOL_VERSION
    return f"is none of {', '.join(KNOWN_PROTOCOL_VERSIONS)}: outputs follow protocol {era}"


class EnvError(ConfigError):
    """env.yaml cannot be used (300001). Carries what could still be read of it, so that the failure can be
    reported in monitor.txt: ``monitor_file`` (None when unknown or its folder does not exist) and
    ``task_id``."""

    def __init__(self, message: str, *, monitor_file: str | None = None, task_id: str = DEFAULT_TASK_ID) -> None:
        super().__init__(message)
        self.monitor_file = monitor_file
        self.task_id = task_id


def _paths(cls: type, raw: Any, root: str | None, section: str, warnings: list[str]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"env.yaml: {section} must be a mapping, got {type(raw).__name__}")
    known = {field.name for field in dataclasses.fields(cls)}
    values = {key: reroot(str(value or ""), root) for key, value in raw.items() if key in known}
    defaults = {f.name: reroot(str(f.default), root) for f in dataclasses.fields(cls) if f.name not in values}
    for key, value in raw.items():
        if key in known and value and not os.path.isabs(str(value)):
            warnings.append(f"env.yaml: {section}.{key} {excerpt(str(value))} is not an absolute path: read from "
                            f"{excerpt(os.path.abspath(str(value)))}")
    named = {key: path for key, path in defaults.items() if path}  # an unused index file is '' anyway
    if named:
        what = "no " + section + " section" if not raw else f"{section} without {', '.join(named)}"
        warnings.append(f"env.yaml has {what}: using " + ", ".join(f"{key} {path}" for key, path in named.items()))
    return cls(**defaults, **values)


def _monitor_file_guess(raw: Mapping[str, Any], root: str | None) -> str | None:
    """Where monitor.txt goes for an env.yaml that failed: its own ``output.monitor_file`` when readable,
    else the container's; None when that folder does not exist (nowhere the platform would look)."""
    output = raw.get("output")
    named = output.get("monitor_file") if isinstance(output, Mapping) else None
    path = reroot(named if isinstance(named, str) and named else OutputPaths.monitor_file, root)
    return path if os.path.isdir(os.path.dirname(path)) else None


def load_env(path: str = DEFAULT_ENV_FILE, *, root: str | None = None) -> TaskEnv:
    """Read env.yaml; ``root`` (or $YMIR_RUNNER_ROOT) re-roots /in and /out paths onto a local tree.

    Raises:
        EnvError: the file cannot be read, is not an env.yaml (a config.yaml given instead), a value is invalid
            (the message names the key), ``root`` is given for an env.yaml whose paths are not container paths
            (it cannot apply), or, without ``root``, env.yaml names container paths on a machine that is not the
            container (:data:`~.paths.CONTAINER_DIRS` missing: nothing is written, the message says to pass ``--root``).
    """
    root_origin = "--root" if root else f"${ROOT_ENV_VAR}"
    root = root or os.environ.get(ROOT_ENV_VAR) or None
    if root:
        root = os.path.abspath(root)
    env_file = os.path.abspath(path if os.path.exists(path) or not root else reroot(path, root))
    try:
        raw = read_yaml_mapping(env_file, "env file")
    except ConfigError as error:  # what can be read of it without loading it says where monitor.txt goes
        found = salvage_scalars(env_file, [("output", "monitor_file"), ("task_id",)])
        named = found.get(("output", "monitor_file"))
        if root and named and not container_top(named):  # a root applies to container paths only: never outside
            named = None
        salvaged = {"output": {"monitor_file": named}}
        raise EnvError(str(error), monitor_file=_monitor_file_guess(salvaged, root),
                       task_id=found.get(("task_id",)) or DEFAULT_TASK_ID) from error
    try:  # the wrong file, or paths that lead out of the tree meant: refused with nothing written anywhere
        _check_is_env(raw, env_file)
        _check_root_applies(raw, root, root_origin)
        _check_not_a_copy(raw, env_file, root)
    except ConfigError as error:
        raise EnvError(str(error)) from error
    try:
        return _parse_env(raw, env_file, root)
    except ConfigError as error:
        task_id = raw.get("task_id")
        raise EnvError(str(error), monitor_file=_monitor_file_guess(raw, root),
                       task_id=str(task_id) if isinstance(task_id, (str, int)) and task_id else DEFAULT_TASK_ID
                       ) from error


def _check_is_env(raw: Mapping[str, Any], env_file: str) -> None:
    """ConfigError for a file that is not an env.yaml, naming config.yaml when it is one: it holds keys only
    config.yaml has (``class_names``, ``gpu_id``, ...) and no ``input`` / ``output`` section (a mining config.yaml
    holds ``run_mining`` and ``run_infer`` too), or none of env.yaml's own keys."""
    beside = os.path.join(os.path.dirname(env_file), "env.yaml")
    hint = f"; pass --env {beside}" if os.path.isfile(beside) and beside != env_file else ""
    config_keys = sorted((RESERVED_KEYS - ENV_ONLY_KEYS - {"task_id"}).intersection(raw))
    if config_keys and not {"input", "output"}.intersection(raw):
        raise ConfigError(f"{env_file} is a config.yaml (it holds {', '.join(config_keys[:3])}), not an env.yaml: "
                          f"--env takes the task's env.yaml, which names config.yaml{hint}")
    if not ENV_ONLY_KEYS.intersection(raw):
        raise ConfigError(f"{env_file} is not an env.yaml: it has none of run_training, run_mining, run_infer, "
                          f"input, output{hint}")


def _section_paths(raw: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(section.key, path)`` for every non-empty path of env.yaml's input and output sections."""
    found = []
    for section in ("input", "output"):
        values = raw.get(section)
        if isinstance(values, Mapping):
            found += [(f"{section}.{key}", str(value)) for key, value in values.items()
                      if isinstance(value, str) and value]
    return found


def _check_root_applies(raw: Mapping[str, Any], root: str | None, root_origin: str) -> None:
    """With a root, every path of env.yaml must be a container path: the root applies to nothing else, and a
    host path would lead the run out of the tree it was pointed at (ConfigError)."""
    if not root:
        return
    foreign = [(key, path) for key, path in _section_paths(raw) if not container_top(path)]
    if foreign:
        key, path = foreign[0]
        raise ConfigError(
            f"{root_origin} {root} re-roots container paths (/in/..., /out/...), but env.yaml's {key} is "
            f"{excerpt(path)}: {root_origin} cannot apply to this env.yaml; run it without {root_origin} (its outputs "
            f"go where it names them), or write the tree with `ymir-runner sandbox --container-paths`")


def _check_not_a_copy(raw: Mapping[str, Any], env_file: str, root: str | None) -> None:
    """ConfigError for an env.yaml that names another tree's config file while a config.yaml lies beside it: a
    copied work tree written with host paths (``cp -a work copy``) would read the original's config and move,
    then overwrite, the original's results. A platform task and a ``--root`` run name the config beside env.yaml."""
    inputs = raw.get("input")
    named = inputs.get("config_file") if isinstance(inputs, Mapping) else None
    beside = os.path.join(os.path.dirname(env_file), "config.yaml")
    if not isinstance(named, str) or not named or not os.path.isfile(beside) or (container_top(named) and not root):
        return  # a container path without --root: check_paths_exist_here says what to do
    named = reroot(named, root)
    if os.path.exists(named) and os.path.samefile(named, beside):
        return
    outputs = raw.get("output")
    out = outputs.get("root_dir") if isinstance(outputs, Mapping) else None
    raise ConfigError(f"{env_file} names the config file {named}, not the config.yaml beside it: a copy of a work "
                      f"tree written with host paths still points at the original"
                      + (f" (its outputs would go to {out})" if isinstance(out, str) and out else "")
                      + "; build the copy with `ymir-runner sandbox`, or write the tree with --container-paths and "
                        "run the copy with --root")


def check_paths_exist_here(env: TaskEnv) -> None:
    """Refuse, before anything is written, to run an env.yaml whose container paths (``/in/...``, ``/out/...``,
    not re-rooted) lead to folders that do not exist on this machine: it is not the platform's container (which
    always has both), and writing ``/out/monitor.txt`` at the host's root helps nobody. The message says to pass
    ``--root``. Raises :class:`EnvError` without a monitor file."""
    if env.root:
        return
    paths = [*dataclasses.asdict(env.input).values(), *dataclasses.asdict(env.output).values()]
    missing = sorted({top for path in paths if path for top in (container_top(path),)
                      if top and not os.path.isdir(top)})
    if missing:
        work = os.path.dirname(os.path.dirname(env.env_file))
        hint = (f"--root {work}" if os.path.isdir(os.path.join(work, "in"))
                else "--root DIR (the folder holding in/ and out/)")
        raise EnvError(f"env.yaml names container paths under {' and '.join(missing)}, which "
                       f"{'does' if len(missing) == 1 else 'do'} not exist here: this is not the platform's "
                       f"container; to run a local tree written with container paths, pass {hint}")


def _parse_env(raw: Mapping[str, Any], env_file: str, root: str | None) -> TaskEnv:
    warnings: list[str] = []

    def flag(key: str) -> bool:
        value = raw.get(key, False)
        try:
            result = to_bool(value)
        except ValueError:
            raise ConfigError(f"env.yaml: {key} must be a boolean, got {excerpt(value)}") from None
        if not isinstance(value, bool):
            warnings.append(f"env.yaml: {key} is {excerpt(value)}, not a boolean; read as {str(result).lower()}")
        return result

    version = str(raw.get("protocol_version") or LEGACY_PROTOCOL_VERSION)
    guess = _protocol_guess(version)
    if guess:
        warnings.append(f"env.yaml: protocol_version {version} {guess}")
    task_id = raw.get("task_id")
    if task_id is None or task_id == "":
        warnings.append(f"env.yaml has no task_id: monitor.txt names the task {DEFAULT_TASK_ID!r}")
    elif any(char in str(task_id) for char in "\t\r\n"):
        warnings.append(f"env.yaml: task_id {excerpt(str(task_id))} holds a TAB or line break: monitor.txt writes a "
                        f"space")
    if raw.get("output") is None and not root and not os.path.isdir(CONTAINER_OUT_DIR):
        raise ConfigError(f"env.yaml has no output section and {CONTAINER_OUT_DIR} does not exist (this is not "
                          f"the platform's container): give the output paths, or run with --root DIR")
    run_training, run_mining, run_infer = flag("run_training"), flag("run_mining"), flag("run_infer")
    return TaskEnv(
        task_id=str(task_id or DEFAULT_TASK_ID),
        protocol_version=version,
        run_training=run_training,
        run_mining=run_mining,
        run_infer=run_infer,
        manifest_file=str(raw.get("manifest_file") or IMG_MAN_DIR + "/" + MANIFEST_FILE),
        input=_paths(InputPaths, raw.get("input"), root, "input", warnings),
        output=_paths(OutputPaths, raw.get("output"), root, "output", warnings),
        env_file=env_file,
        root=root,
        warnings=tuple(warnings),
    )


#: What the platform writes beside the model stages it installs under /in/models.
MODEL_INFO_FILE = "ymir-info.yaml"


def best_stage_name(models_dir: str) -> str | None:
    """``best_stage_name`` of ``<models_dir>/ymir-info.yaml`` (top level, or under ``model_stages``), when the
    platform wrote one; None when the file is missing, unreadable (not UTF-8, not YAML, not a mapping: a warning
    says why) or names no stage. Raises :class:`~ymir_runner.protocol.yaml_file.YamlLimitError` (300001) for a
    file over the bounds every YAML file is read within (size, nesting, aliases)."""
    info = _model_info(models_dir, "no best stage is known")
    if info is None:
        return None
    stages = info.get("model_stages")
    stage = info.get("best_stage_name") or (stages.get("best_stage_name") if isinstance(stages, Mapping) else None)
    return str(stage) if isinstance(stage, (str, int)) and stage else None


def _model_info(models_dir: str, unknown: str) -> Mapping[str, Any] | None:
    """``<models_dir>/ymir-info.yaml`` as a mapping; None when missing or unusable (not UTF-8, not YAML, not a
    mapping: a warning says why, ending with ``unknown``, what cannot be known without it). Raises
    :class:`~ymir_runner.protocol.yaml_file.YamlLimitError` (300001) for a file over the YAML bounds."""
    path = os.path.join(models_dir, MODEL_INFO_FILE)
    if not os.path.lexists(path):
        return None
    try:
        info = read_yaml(path, "model info file")
    except YamlLimitError:
        raise
    except ConfigError as error:
        logging.getLogger("ymir_runner").warning("%s: %s", error, unknown)
        return None
    if not isinstance(info, Mapping):
        if info is not None:
            logging.getLogger("ymir_runner").warning("model info file %s holds a %s, not a mapping: %s", path,
                                                     type(info).__name__, unknown)
        return None
    return info


def model_object_type(models_dir: str) -> int | None:
    """The object type a model was trained for: ``object_type`` of ``<models_dir>/ymir-info.yaml`` (2 detection, 3
    semantic, 4 instance segmentation), which the platform writes into every model package from the training
    task's object type (``mir/tools/models.py`` ``ModelStorage.object_type``; a segmentation training task also
    records it in ``/out/models``: :func:`record_model_object_type`). A file without it (or 0, unknown) is a
    detection model, as the platform reads one ("Unknown model object type, treat as detection models"). None
    when the file is missing or unusable: nothing is known to check against."""
    info = _model_info(models_dir, "the model's object type is not known")
    if info is None:
        return None
    value = info.get("object_type")
    if isinstance(value, bool) or not isinstance(value, int) or value == 0:
        return DETECTION
    return value


def record_model_object_type(models_dir: str, object_type: int) -> None:
    """Record a segmentation training task's object type with its model: ``<models_dir>/ymir-info.yaml`` holding
    ``object_type``, as the platform's own model package holds it (the platform writes its ymir-info.yaml over
    this one when it packs the model; ``ymir-runner sandbox`` and the testing kit copy it to the ``/in/models``
    they install). Detection writes nothing: a model without the record is a detection model
    (:func:`model_object_type`)."""
    import yaml

    if object_type == DETECTION:
        return

    from .atomic import atomic_write_text

    os.makedirs(models_dir, exist_ok=True)
    atomic_write_text(os.path.join(models_dir, MODEL_INFO_FILE), yaml.safe_dump({"object_type": int(object_type)}))
