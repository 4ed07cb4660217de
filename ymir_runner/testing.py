"""A testing kit for plugin authors: a pytest plugin. Enable it in a conftest.py with

    pytest_plugins = ["ymir_runner.testing"]

Fixtures:
- ``ymir_registry``: a plugin registry with entry-point autoload off (only what the test registers).
- ``ymir_register``: ``with ymir_register(plugin, "name"): ...`` registers a plugin for one block.
- ``ymir_fake_entry_point``: installs a real ``ymir_runner`` entry point (a .dist-info folder on sys.path)
  pointing at a module whose source the test gives; discovery then works as for a pip-installed wheel.
- ``ymir_shared_tmp``: a temp folder another uid can enter, for runs as uid 65534 (with ``make_read_only``
  and ``cannot_run_as``).
- ``ymir_task``: ``ymir_task(**options)`` builds a :class:`TaskTree` (a tiny /in + /out tree of generated images
  and annotations, optionally starting from a trained model) under the test's tmp_path; ``tree.run(registry)``
  runs its task end to end and returns a :class:`RunOutcome`: exit code, monitor line, result files, stderr.

The helpers (``write_png``, ``TaskTree``, ``write_task_files`` for a tree of your own data with ``ark_text``,
``voc_text``, ``annotation_text`` and ``annotation_suffix`` (the protocol's own annotation writers, which a
plugin's own code imports from ``ymir_runner``) for its annotation files, ``install_models``,
``plugin_registry`` and ``monitor_writes`` for runs in this process, ``make_fake_distribution``,
``dockerfile_instructions`` for an image's Dockerfile, and for fault
injection ``torn_protocol_files``, ``temp_files``, ``child_pids`` and ``is_running``) work without pytest too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import os
import struct
import sys
import zlib
from typing import Any, Iterator, Mapping, Sequence

import yaml

from .plugins import PluginRegistry, build_plugin_manager
from .protocol.annotations import annotation_suffix, annotation_text, ark_text, export_format_of, voc_text
from .protocol.atomic import TEMP_PREFIX
from .protocol.config import SEGMENTATION
from .protocol.env import (
    MODEL_INFO_FILE,
    PROTOCOL_VERSION,
    TaskKind,
    config_document,
    env_document,
    model_object_type,
)
from .protocol.paths import reroot
from .protocol.yaml_file import read_yaml
from .shutdown import child_pids, is_running

__all__ = [
    "png_bytes", "write_png", "RunOutcome", "TaskTree", "write_task_files", "install_models", "make_read_only",
    "cannot_run_as", "ark_text", "voc_text", "annotation_text", "annotation_suffix",
    "torn_protocol_files", "temp_files", "make_fake_distribution",
    "plugin_registry", "monitor_writes", "child_pids", "is_running",
]

try:
    import pytest
except ImportError:  # pragma: no cover - the helpers work without pytest
    pytest = None  # type: ignore[assignment]


# --- generated data ----------------------------------------------------------------------------------------

def png_bytes(width: int, height: int, color: tuple[int, int, int] = (128, 128, 128),
              boxes: Sequence[tuple[int, int, int, int, tuple[int, int, int]]] = ()) -> bytes:
    """A valid RGB PNG, filled with ``color`` and ``boxes`` of ``(x1, y1, x2, y2, color)`` (x2 exclusive)."""
    rows = []
    for y in range(height):
        row = bytearray(bytes(color) * width)
        for x1, y1, x2, y2, fill in boxes:
            if y1 <= y < y2:
                start, end = max(x1, 0), min(x2, width)
                row[start * 3:end * 3] = bytes(fill) * max(end - start, 0)
        rows.append(b"\x00" + bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"".join(rows)))
            + chunk(b"IEND", b""))


def write_png(path: str, width: int, height: int, **options: Any) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as stream:
        stream.write(png_bytes(width, height, **options))
    return path


@dataclasses.dataclass
class RunOutcome:
    """What the platform would observe after a run: ``exit_code``, ``stderr`` (the log) and its
    ``last_stderr_line`` (what users see), monitor.txt's ``monitor_fields``, ``percent``, ``state`` and
    ``return_code``, the parsed outputs ``result_yaml()``, ``result_tsv()`` (``(path, score)`` pairs in
    file order) and ``infer_result()``, and ``verify()``: what ``ymir-runner verify`` finds in the outputs."""

    exit_code: int
    stderr: str
    out_dir: str
    env_file: str
    #: The local folder the run re-rooted '/' onto (``--root``); None when env.yaml holds local paths.
    root: str | None = None

    def verify(self) -> Any:
        """Check this run's outputs as ``ymir-runner verify`` does: every task env.yaml runs, every line of the
        candidate index covered, only config.yaml's class names, its task_id in monitor.txt; a run that exited
        non-zero must report the failure in monitor.txt. Returns a ``Report``: ``ok``, ``errors``,
        ``to_text()`` (assert ``report.ok, report.to_text()``)."""
        from .protocol.config import read_config_file
        from .protocol.env import load_env
        from .verify import verify_out

        env = load_env(self.env_file, root=self.root)
        config = read_config_file(env.input.config_file)
        candidates = None
        if env.input.candidate_index_file and not env.run_training:
            with open(env.input.candidate_index_file, encoding="utf-8-sig") as stream:
                candidates = [line.split("\t")[0].strip() for line in stream if line.strip()]
        class_names = config.get("class_names")
        object_type = config.get("object_type")
        return verify_out(self.out_dir, [kind.value for kind in env.tasks], candidates=candidates,
                          class_names=list(class_names) if isinstance(class_names, list) else None,
                          protocol_version=env.protocol_version, expect_failure=self.exit_code != 0,
                          task_id=str(config.get("task_id", env.task_id)), root=self.root,
                          object_type=int(object_type) if isinstance(object_type, int) else 2)

    @property
    def monitor_fields(self) -> list[str]:
        with open(os.path.join(self.out_dir, "monitor.txt"), encoding="utf-8") as stream:
            return stream.readline().rstrip("\n").split("\t")

    @property
    def percent(self) -> float:
        return float(self.monitor_fields[2])

    @property
    def state(self) -> int:
        return int(self.monitor_fields[3])

    @property
    def return_code(self) -> int:
        return int(self.monitor_fields[4])

    @property
    def last_stderr_line(self) -> str:
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""

    def result_yaml(self) -> Any:
        return read_yaml(os.path.join(self.out_dir, "models", "result.yaml"), "result file")

    def result_tsv(self) -> list[tuple[str, float]]:
        with open(os.path.join(self.out_dir, "result.tsv"), encoding="utf-8") as stream:
            return [(path, float(score)) for path, score in (line.rstrip("\n").split("\t") for line in stream)]

    def infer_result(self) -> Any:
        with open(os.path.join(self.out_dir, "infer-result.json"), encoding="utf-8") as stream:
            return json.load(stream)


def install_models(models_from: str, models_dir: str, stages: Sequence[str] | None = None) -> list[str]:
    """Put stages of a model where the platform puts them for a mining, inference or fine-tuning task.

    ``models_from`` is either the /out/models folder of a training run (with its result.yaml): each of
    ``stages`` (default: the best stage) is copied to ``models_dir/<stage>/``; or a folder of model files
    without result.yaml (a model a test made by hand): it is copied as one stage named after the folder.
    ``models_dir/ymir-info.yaml`` names the best stage, as the platform writes it, and the model's ``object_type``
    when the training recorded one (a segmentation training; none: a detection model). Returns the copied files as
    ``<stage>/<file>``, the form of config keys ``model_params_path`` and ``pretrained_model_params`` under
    /in/models. Raises ``FileNotFoundError`` for a missing folder."""
    import shutil

    result_file = os.path.join(models_from, "result.yaml")
    if os.path.exists(result_file):
        result = read_yaml(result_file, "result file")
        best = result["best_stage_name"]
        listed = {stage: result["model_stages"][stage]["files"] for stage in stages or [best]}
    elif os.path.isdir(models_from):
        best = os.path.basename(os.path.normpath(models_from))
        listed = {best: sorted(name for name in os.listdir(models_from)
                               if os.path.isfile(os.path.join(models_from, name)))}
        models_from = os.path.dirname(os.path.normpath(models_from))
    else:
        raise FileNotFoundError(f"no model folder {models_from}")
    files = []
    for stage, names in listed.items():
        shutil.copytree(os.path.join(models_from, stage), os.path.join(models_dir, stage), dirs_exist_ok=True)
        files += [f"{stage}/{name}" for name in names]
    info: dict[str, Any] = {"best_stage_name": best}
    object_type = model_object_type(models_from) if os.path.exists(result_file) else None
    if object_type is not None:
        info["object_type"] = object_type
    with open(os.path.join(models_dir, MODEL_INFO_FILE), "w", encoding="utf-8") as stream:
        yaml.safe_dump(info, stream)
    return files


class TaskTree:
    """A YMIR work tree ``<root>/in`` + ``<root>/out`` whose env.yaml uses the container paths /in and /out;
    runs re-root them onto ``root`` (as ``ymir-runner run --root`` does).

    Options: ``kinds`` (the tasks of env.yaml), ``class_names``, ``config`` (config.yaml keys over the
    defaults), ``protocol_version`` (None: left out, as platforms up to 1.1.0 did), ``images`` generated PNGs
    of ``size`` with one box each, ``annotation_format`` (det-ark or det-voc) with its ``export_format``, and
    ``models_from``: the /out/models folder of a training run whose best stage (or ``stages``) the task starts
    from, or a folder of model files made by the test (one stage; see :func:`install_models`): they become
    ``model_params_path`` in mining and inference, ``pretrained_model_params`` in training.

    ``object_type`` 3 or 4 makes a segmentation tree, exported as the platform exports ``seg-coco:raw``
    (:mod:`ymir_runner.protocol.segcoco`): one ``/in/annotations/coco-annotations.json`` named on every index
    line, each image's box filled as its object's mask (:meth:`segmentation_of`: an RLE string on even images,
    one polygon on odd ones), ``object_type`` and ``export_format: seg-coco:raw`` in config.yaml.

    Attributes: ``root``, ``env_file``, ``out_dir``, ``images`` and ``annotations`` (container paths),
    ``config`` (change it, then ``write_config()``); ``local(path)`` maps a container path into the tree and
    ``run(registry)`` runs the task in this process, returning a :class:`RunOutcome`."""

    COLORS = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40)]

    def __init__(self, root: str, *, kinds: Sequence[TaskKind | str] = (TaskKind.TRAINING,),
                 class_names: Sequence[str] = ("cat", "dog"), config: Mapping[str, Any] | None = None,
                 protocol_version: str | None = PROTOCOL_VERSION, images: int = 4, size: tuple[int, int] = (64, 48),
                 annotation_format: str = "det-ark", export_format: str = "ark:raw",
                 models_from: str | None = None, stages: Sequence[str] | None = None, object_type: int = 2) -> None:
        self.root = os.path.abspath(root)
        self.object_type = int(object_type)
        if self.object_type in SEGMENTATION:
            annotation_format, export_format = "seg-coco", "seg-coco:raw"
            config = {"object_type": self.object_type, **(config or {})}
        self.kinds = [TaskKind(kind) for kind in kinds]
        self.class_names = list(class_names)
        self.size = size
        self.annotation_format = annotation_format
        self.images: list[str] = []  # container paths
        self.annotations: list[str] = []
        os.makedirs(self.local("/out"), exist_ok=True)
        for index in range(images):
            self.add_image(index)
        self.write_index_files()
        training = TaskKind.TRAINING in self.kinds
        models = [] if training else ["/in/models/epoch_1/model.bin"]
        if models_from:
            models = [f"/in/models/{file}" for file in install_models(models_from, self.local("/in/models"), stages)]
        self.config: dict[str, Any] = config_document("t-test", self.kinds, config, class_names=class_names,
                                                      model_files=models, export_format=export_format)
        self.protocol_version = protocol_version
        self.write_config()
        self.write_env()

    def local(self, container_path: str) -> str:
        """Where a container path (/in/..., /out/...) lives in this tree."""
        return reroot(container_path, self.root)

    @property
    def env_file(self) -> str:
        return self.local("/in/env.yaml")

    @property
    def out_dir(self) -> str:
        return self.local("/out")

    def boxes_of(self, index: int) -> list[tuple[int, int, int, int, int]]:
        """Deterministic ``(class_id, xmin, ymin, xmax, ymax)`` boxes (inclusive corners) of image ``index``."""
        width, height = self.size
        class_id = index % len(self.class_names)
        side = max(min(width, height) // 3, 2)
        x, y = (index * 7) % (width - side), (index * 5) % (height - side)
        return [(class_id, x, y, x + side - 1, y + side - 1)]

    def segmentation_of(self, index: int) -> Any:
        """The seg-coco ``segmentation`` of image ``index``'s object (a segmentation tree): its box filled, as a
        compressed RLE string on even images, as one polygon of ints on odd ones."""
        import numpy as np

        from .protocol.masks import encode_mask

        _class_id, x1, y1, x2, y2 = self.boxes_of(index)[0]
        if index % 2:
            return [[x1, y1, x2 + 1, y1, x2 + 1, y2 + 1, x1, y2 + 1]]
        mask = np.zeros((self.size[1], self.size[0]), dtype=bool)
        mask[y1:y2 + 1, x1:x2 + 1] = True
        return encode_mask(mask)

    def write_seg_coco(self) -> None:
        """(Re)write the tree's coco-annotations.json from its images (a segmentation tree)."""
        from .protocol.segcoco import SEG_COCO_FILE, SegCocoImage, seg_object, write_seg_coco

        width, height = self.size
        images = []
        for index, image in enumerate(self.images):
            class_id = self.boxes_of(index)[0][0]
            obj = seg_object(class_id, self.segmentation_of(index), height, width)
            images.append(SegCocoImage(os.path.basename(image), width, height, [obj]))
        os.makedirs(os.path.dirname(self.local(SEG_COCO_FILE)), exist_ok=True)
        write_seg_coco(self.local(SEG_COCO_FILE), images, self.class_names)

    def add_image(self, index: int) -> str:
        name = f"{index:040x}"
        image = f"/in/assets/{name[-2:]}/{name}.png"
        boxes = self.boxes_of(index)
        write_png(self.local(image), *self.size,
                  boxes=[(x1, y1, x2 + 1, y2 + 1, self.COLORS[c % 4]) for c, x1, y1, x2, y2 in boxes])
        if self.object_type in SEGMENTATION:
            self.images.append(image)
            self.annotations.append("/in/annotations/coco-annotations.json")
            self.write_seg_coco()
            return image
        annotation = f"/in/annotations/{name}{annotation_suffix(self.annotation_format)}"
        os.makedirs(os.path.dirname(self.local(annotation)), exist_ok=True)
        with open(self.local(annotation), "w", encoding="utf-8") as stream:
            stream.write(annotation_text(self.annotation_format, boxes, filename=image, size=self.size,
                                         class_names=self.class_names))
        self.images.append(image)
        self.annotations.append(annotation)
        return image

    def write_index_files(self) -> None:
        half = max(len(self.images) // 2, 1)
        pairs = list(zip(self.images, self.annotations))
        self._write("/in/train-index.tsv", "".join(f"{i}\t{a}\n" for i, a in pairs[:half]))
        self._write("/in/val-index.tsv", "".join(f"{i}\t{a}\n" for i, a in pairs[half:] or pairs))
        self._write("/in/candidate-index.tsv", "".join(f"{i}\n" for i in self.images))

    def write_config(self) -> None:
        self._write("/in/config.yaml", yaml.safe_dump(self.config, sort_keys=False))

    def write_env(self) -> None:
        env = env_document("t-test", self.kinds, protocol_version=self.protocol_version)
        self._write("/in/env.yaml", yaml.safe_dump(env, sort_keys=False))

    def _write(self, container_path: str, text: str) -> None:
        path = self.local(container_path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)

    def command(self) -> list[str]:
        """The command that runs this tree's task in a process of its own (``ymir-runner run --env ...
        --root ...``), with the interpreter running the tests; read its result with :meth:`outcome`."""
        return [sys.executable, "-m", "ymir_runner", "run", "--env", self.env_file, "--root", self.root]

    def outcome(self, exit_code: int, stderr: str = "") -> RunOutcome:
        """The :class:`RunOutcome` of a run of this tree in another process (see :meth:`command`)."""
        return RunOutcome(exit_code, stderr, self.out_dir, self.env_file, self.root)

    def run(self, registry: PluginRegistry | None = None) -> RunOutcome:
        """Run the task in this process, as ``ymir-runner run --env <tree>/in/env.yaml --root <tree>``."""
        from .dispatcher import run

        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = run(self.env_file, root=self.root, registry=registry)
        return self.outcome(code, stderr.getvalue())


def write_task_files(root: str, kinds: Sequence[TaskKind | str], config: Mapping[str, Any], *,
                     task_id: str = "t-test", annotation_format: str = "det-ark", object_type: int = 2) -> str:
    """env.yaml and config.yaml of a task on the local tree ``root`` (``root/in``, ``root/out``), as the platform
    writes them but with absolute local paths, so ``ymir-runner run --env <returned path>`` needs no ``--root``.

    The index files are expected where the platform puts them: ``root/in/train-index.tsv``, ``val-index.tsv``,
    ``candidate-index.tsv``. ``config`` is written over the keys the platform writes itself
    (:func:`~ymir_runner.protocol.env.config_document`: ``task_id``, the CPU, ``object_type`` 2, ``run_mining``
    and ``run_infer`` in mining and inference and, for training, the ``export_format`` of ``annotation_format``,
    ``det-ark`` or ``det-voc``). ``object_type`` 3 or 4: a segmentation task, ``object_type`` written and the
    training's ``export_format`` ``seg-coco:raw`` (the index files then name one
    ``root/in/annotations/coco-annotations.json``: :mod:`ymir_runner.protocol.segcoco` writes it). Returns the
    path of env.yaml."""

    root = os.path.abspath(root)
    os.makedirs(os.path.join(root, "in"), exist_ok=True)
    os.makedirs(os.path.join(root, "out"), exist_ok=True)
    document = env_document(task_id, kinds, path=lambda container_path: reroot(container_path, root))
    if object_type in SEGMENTATION:
        annotation_format = "seg-coco"
        config = {"object_type": object_type, **config}
    task_config = config_document(task_id, kinds, config, export_format=export_format_of(annotation_format))
    with open(os.path.join(root, "in", "config.yaml"), "w", encoding="utf-8") as stream:
        yaml.safe_dump(task_config, stream, sort_keys=False, allow_unicode=True)
    env_file = os.path.join(root, "in", "env.yaml")
    with open(env_file, "w", encoding="utf-8") as stream:
        yaml.safe_dump(document, stream, sort_keys=False)
    return env_file


def make_read_only(tree: str) -> None:
    """chmod a tree like the platform's ``-v <work>/in:/in:ro`` mount: nothing in it can be written (by a
    non-root uid)."""
    for folder, _dirs, files in os.walk(tree):
        for name in files:
            os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)


def dockerfile_instructions(path: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs of a Dockerfile, in order: instructions upper-cased, continuation lines
    joined, comments and blank lines dropped; e.g. ``("CMD", '["bash", "/usr/bin/start.sh"]')``. For tests of an
    executor image's Dockerfile without a docker engine (the platform runs the image's default command and
    ``cat``s its /img-man files, so it must have no ENTRYPOINT). Raises ``OSError`` when the file cannot be read."""
    joined, pending = [], ""
    with open(path, encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    for line in lines:
        if line.lstrip().startswith("#") or not line.strip():
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        joined.append(pending.strip())
        pending = ""
    return [(line.split(None, 1)[0].upper(), (line.split(None, 1) + [""])[1]) for line in joined]


def cannot_run_as(uid: int) -> str | None:
    """Why this interpreter cannot run as ``uid`` (not root; a Python under a private home), or None.

    Tests of "the platform may run the image as any uid" start processes as uid 65534 and skip with this
    reason when they cannot."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "switching uid needs root"
    import subprocess

    try:
        subprocess.run([sys.executable, "-c", "import ymir_runner"], user=uid, group=uid, check=True,
                       capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        return f"{sys.executable} cannot run as uid {uid}: {error}"
    return None


# --- runs in this process ----------------------------------------------------------------------------------

def plugin_registry(plugins: Mapping[str, Any]) -> PluginRegistry:
    """A plugin registry holding exactly ``plugins`` (name -> plugin module or object, registered in that
    order) and the core's own, entry-point autoload off: the ``ymir_registry`` fixture for code that cannot
    take a fixture, such as a helper or a session-scoped fixture that runs a task once for many tests. Pass it
    to ``ymir_runner.run(env_file, registry=...)`` or ``TaskTree.run(registry)``.

    Raises pluggy's ``PluginValidationError`` when a plugin's hook implementations do not match the hook
    specifications (a misspelt hook, an unknown argument), ``ValueError`` when one plugin object is given under
    two names."""
    registry = build_plugin_manager(autoload=False)
    for name, plugin in plugins.items():
        registry.register(plugin, name)
    return registry


@contextlib.contextmanager
def monitor_writes() -> Iterator[list[str]]:
    """``with monitor_writes() as writes:`` records every monitor.txt the runs in the block write, in order:
    each entry is the file's whole text (first line ``task_id, timestamp, percent, state, return code``
    tab-separated, then the progress message when there is one, e.g. ``mining: 3/12 images``). For checking
    progress as the platform polls it (monotonic, ending at 1.0). Only atomic writes of runs in this process are
    seen (``ymir_runner.run``, ``TaskTree.run``): not a subprocess, not the in-place fallback of a full disk."""
    from .protocol import monitor

    writes: list[str] = []
    original = monitor.atomic_write_text

    def recording(path: str, text: str) -> None:
        writes.append(text)
        original(path, text)

    monitor.atomic_write_text = recording
    try:
        yield writes
    finally:
        monitor.atomic_write_text = original


# --- fault checks ---------------------------------------------------------------------------------------------

def torn_protocol_files(out_dir: str) -> list[str]:
    """What the platform could not parse in ``out_dir`` after any run, killed or not: ``[]`` when monitor.txt
    parses and each of result.yaml (with the non-empty files its stages list), result.tsv and
    infer-result.json that exists parses too. For checking that a SIGKILL never leaves a torn file."""
    problems = []
    try:
        with open(os.path.join(out_dir, "monitor.txt"), encoding="utf-8") as stream:
            line = stream.readline()
        _, timestamp, percent, state, code = line.rstrip("\n").split("\t")
        float(timestamp), int(code)
        if not (line.endswith("\n") and 0.0 <= float(percent) <= 1.0 and state in ("2", "4")):
            problems.append(f"monitor.txt: {line!r}")
    except (OSError, ValueError) as error:
        problems.append(f"monitor.txt: {error}")
    checks = {"models/result.yaml": _check_result_yaml, "result.tsv": _check_result_tsv,
              "infer-result.json": _check_infer_result}
    for name, check in checks.items():
        path = os.path.join(out_dir, name)
        if os.path.exists(path):
            try:
                check(path)
            except Exception as error:  # any failure to parse is what the check reports
                problems.append(f"{name}: {type(error).__name__}: {error}")
    return problems


def _check_result_yaml(path: str) -> None:
    result = read_yaml(path, "result file")
    assert result["best_stage_name"] in result["model_stages"], "best_stage_name is not a stage"
    for name, stage in result["model_stages"].items():
        for file in stage["files"]:
            assert os.path.getsize(os.path.join(os.path.dirname(path), name, file)) > 0, f"{name}/{file} is empty"


def _check_result_tsv(path: str) -> None:
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            float(line.rstrip("\n").split("\t")[1])


def _check_infer_result(path: str) -> None:
    with open(path, encoding="utf-8") as stream:
        document = json.load(stream)
    if "detection" in document or not {"images", "categories", "annotations"} & set(document):
        assert isinstance(document["detection"], dict)
    else:  # the COCO form of a segmentation task (object_type 3 or 4)
        assert all(isinstance(document[key], list) for key in ("images", "categories", "annotations"))


def temp_files(folder: str) -> list[str]:
    """Temp files of atomic writes (and any ``*.tmp``) left anywhere under ``folder``."""
    return [os.path.join(path, name) for path, _, names in os.walk(folder) for name in names
            if name.startswith(TEMP_PREFIX) or name.endswith(".tmp")]


# --- fake distributions -----------------------------------------------------------------------------------

def make_fake_distribution(site_dir: str, *, dist_name: str, module: str, source: str,
                           entry_point: str | None = None, version: str = "1.0",
                           attribute: str | None = None) -> str:
    """Write ``module.py`` and a ``<dist>-<version>.dist-info`` declaring a ``ymir_runner`` entry point into
    ``site_dir``: with ``site_dir`` on sys.path (or PYTHONPATH), importlib.metadata finds it like a
    pip-installed wheel. Returns the entry-point name."""
    os.makedirs(site_dir, exist_ok=True)
    with open(os.path.join(site_dir, f"{module}.py"), "w", encoding="utf-8") as stream:
        stream.write(source)
    info = os.path.join(site_dir, f"{dist_name.replace('-', '_')}-{version}.dist-info")
    os.makedirs(info, exist_ok=True)
    name = entry_point or dist_name
    target = f"{module}:{attribute}" if attribute else module
    with open(os.path.join(info, "METADATA"), "w", encoding="utf-8") as stream:
        stream.write(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n")
    with open(os.path.join(info, "entry_points.txt"), "w", encoding="utf-8") as stream:
        stream.write(f"[ymir_runner]\n{name} = {target}\n")
    return name


if pytest is not None:

    @pytest.fixture
    def ymir_registry() -> PluginRegistry:
        """A registry with entry-point autoload off: only the plugins a test registers."""
        return plugin_registry({})

    @pytest.fixture
    def ymir_register(ymir_registry: PluginRegistry) -> Any:
        """``with ymir_register(plugin, "name"):`` registers ``plugin`` on ``ymir_registry`` for the block."""

        @contextlib.contextmanager
        def register(plugin: Any, name: str) -> Iterator[PluginRegistry]:
            ymir_registry.register(plugin, name)
            try:
                yield ymir_registry
            finally:
                ymir_registry.unregister(name)

        return register

    @pytest.fixture
    def ymir_fake_entry_point(tmp_path: Any, monkeypatch: Any) -> Any:
        """``ymir_fake_entry_point(dist_name, module, source)`` makes a discoverable plugin distribution."""
        site_dir = str(tmp_path / "fake-site")
        monkeypatch.syspath_prepend(site_dir)
        created: list[str] = []

        def make(dist_name: str, module: str, source: str, **options: Any) -> str:
            os.makedirs(site_dir, exist_ok=True)
            name = make_fake_distribution(site_dir, dist_name=dist_name, module=module, source=source, **options)
            created.append(module)
            importlib.invalidate_caches()
            return name

        make.site_dir = site_dir  # type: ignore[attr-defined]
        yield make
        for module in created:
            sys.modules.pop(module, None)

    @pytest.fixture
    def ymir_shared_tmp() -> Iterator[str]:
        """A temp folder other uids can enter (pytest's tmp_path is private to the user running the tests),
        for trees a test runs as uid 65534 (see :func:`cannot_run_as`)."""
        import shutil
        import tempfile

        path = tempfile.mkdtemp(prefix="ymir-runner-shared-")
        os.chmod(path, 0o755)
        yield path
        shutil.rmtree(path, ignore_errors=True)

    @pytest.fixture
    def ymir_task(tmp_path: Any) -> Any:
        """``ymir_task(kinds=("training",), config={...}, ...)`` → a :class:`TaskTree` under tmp_path."""
        counter = iter(range(1_000_000))

        def make(**options: Any) -> TaskTree:
            return TaskTree(str(tmp_path / f"task{next(counter)}"), **options)

        return make
