"""The supervisor: runs an unchanged ymir_exc-based executor as a subprocess and republishes what it writes.

The executor reads an env.yaml of its own (:func:`ymir_runner.write_sdk_env`, handed over through the SDK's
``$DEFAULT_ENV_FILE_PATH``) whose output files are dot-named staging files beside the published ones
(``/out/.monitor.txt``, ``/out/models/.result.yaml``, ``/out/.result.tsv``, ``/out/.infer-result.json``): code that
globs ``models/*`` or takes ``dirname()`` of a path sees what it always saw. Every :data:`POLL_SECONDS` the
supervisor reads them (and the published files, which an executor that bypasses the SDK writes directly) and
republishes through the core's writers:

- monitor.txt: the executor's percent, never lower than before and below 1.0 (:data:`RUNNING_CEILING`) while it
  runs; 1.0 is written by the core once the command exited 0 and its results were read. An empty or torn read
  (the SDK truncates, then writes) is skipped: the published file always holds a whole line.
- result.yaml: each stage the executor lists, checked by the core's writer (metrics in [0, 1], files present),
  the legacy ``{model, map}`` form read as a stage ``stage_<n>`` per distinct write. A file outside the stage's own
  folder (yolov5's ``models/best.pt``, overwritten every epoch) is copied into ``models/<stage>/`` when the stage
  is read, so result.yaml and the files it lists agree; a file in the stage's own folder is taken as it is.
- result.tsv and infer-result.json: read once the command exited 0; every line and box checked (a candidate of
  the task, a finite score in [0, 1], a class of ``class_names``), a bad one skipped, counted and named; boxes
  clipped to the image by the core's writer, which writes atomically.

Failures: the executor's own state-4 code, else the last line of its stderr tail that names a known failure
(:func:`ymir_runner.classify_text`: CUDA out of memory 300103, invalid device 300101, no GPU 300102, network
300301), else 160004; the message carries the last exception line of its stderr. A stop signal stops the whole
process tree (:mod:`.processes`).
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any, Callable, Deque, Mapping

from ymir_runner import (
    ConfigError,
    Detection,
    ImageProblem,
    ReturnCode,
    TaskContext,
    TaskKind,
    YmirError,
    atomic_path,
    classify_text,
    probe_image,
    write_sdk_env,
)

from .legacy_files import (
    LegacyFormError,
    LegacyResult,
    LegacyStage,
    MonitorLine,
    parse_infer,
    parse_mining,
    parse_monitor,
    parse_result_yaml,
    read_text,
)
from .processes import child_setup, descendants, resolve_prctl, stop_tree

#: Seconds between two reads of the executor's files.
POLL_SECONDS = 0.2
#: The highest percent published while the command runs: monitor.txt's 4 decimals, below 1.0 (1.0 says "done").
RUNNING_CEILING = 0.9999
#: Seconds after which a progress value the core's monitor kept pending (its writes are throttled) is written.
FLUSH_SECONDS = 1.0
#: Lines of the command's stderr kept to classify a failure.
STDERR_TAIL_LINES = 200
#: Where the run's LegacyRun is kept in ``context.run_cache`` (mining and inference share one command).
RUN_CACHE_KEY = "ymir_runner_sdk.legacy_run"
#: The env.yaml output keys the executor writes, which are staged.
STAGED_OUTPUTS = ("monitor_file", "training_result_file", "mining_result_file", "infer_result_file")

_command: list[str] = []


def set_command(command: list[str]) -> None:
    """The executor's command line (``sdk-run -- CMD...``) the next run supervises."""
    _command[:] = list(command)


def staging_path(path: str) -> str:
    """The dot-named staging file beside a published file: ``/out/models/result.yaml`` ->
    ``/out/models/.result.yaml``."""
    folder, name = os.path.split(path)
    return os.path.join(folder, "." + name)


def run_task(context: TaskContext) -> None:
    """A task of the ``sdk`` executor: the first task of a run starts the command and supervises it until it ends
    (mining and inference share one command, as one container runs both); each task then takes its results.

    Raises:
        ConfigError: no command was given (the executor was chosen by ``ymir-runner run``, not ``sdk-run``).
        YmirError: the command failed (its code, see the module), or wrote no result for this task.
    """
    legacy = context.run_cache.get(RUN_CACHE_KEY)
    if legacy is None:
        if not _command:
            raise ConfigError("executor 'sdk' supervises an image's own ymir_exc command: start it with "
                              "`ymir-runner sdk-run -- CMD...` (e.g. `-- python3 /app/start.py`), not "
                              "`ymir-runner run`")
        legacy = context.run_cache[RUN_CACHE_KEY] = LegacyRun(context, list(_command))
        legacy.run()
    legacy.take_results(context)


#: A folder first on the command's PYTHONPATH: its sitecustomize points an SDK that reads no variable (PyPI's
#: ymir-exc 1.1.0) at the staged env.yaml (legacy_hook/sitecustomize.py).
HOOK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "legacy_hook")


def legacy_environment(env_file: str) -> dict[str, str]:
    """The command's environment: ours, with the SDK's ``$DEFAULT_ENV_FILE_PATH`` naming ``env_file`` and
    :data:`HOOK_DIR` first on ``PYTHONPATH`` (the image's own entries kept after it)."""
    environ = dict(os.environ, DEFAULT_ENV_FILE_PATH=env_file)
    environ["PYTHONPATH"] = os.pathsep.join([HOOK_DIR] + ([environ["PYTHONPATH"]] if environ.get("PYTHONPATH")
                                                          else []))
    return environ


def last_exception_line(lines: list[str]) -> str:
    """The exception line of the last Python traceback in ``lines`` (``RuntimeError: boom``: the first line after
    ``Traceback (most recent call last):`` that is not indented); without a traceback, the last non-blank line."""
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("Traceback (most recent call last):"):
            for line in lines[index + 1:]:
                if line.strip() and not line.startswith((" ", "\t")):
                    return line.strip()
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _signature(path: str) -> tuple[int, int, int] | None:
    """What tells a file's versions apart: inode, modification time (ns), size; None when it is missing."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


class LegacyRun:
    """One run of the executor's command, supervised for the tasks of one env.yaml."""

    def __init__(self, context: TaskContext, command: list[str]) -> None:
        self.context = context
        self.command = command
        self.log = context.logger
        out = context.env.output
        self.published = {key: getattr(out, key) for key in STAGED_OUTPUTS}
        self.staging = {key: staging_path(path) for key, path in self.published.items()}
        #: The core's monitor.txt writer (the run's, not the task's span: the command reports the whole run).
        self.monitor = context.progress.monitor
        self.returncode: int | None = None
        self.reported_failure: MonitorLine | None = None
        self.stderr_tail: Deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._highest = 0.0
        self._unflushed, self._flushed = False, time.monotonic()
        self._read: dict[str, tuple[int, int, int] | None] = {}  # staging file -> signature last read whole
        self._written: dict[str, tuple[int, int, int] | None] = {}  # published file -> signature after our write
        self._stages: dict[str, tuple[Any, ...]] = {}  # the executor's stage name -> fingerprint published
        self._legacy_names: dict[tuple[Any, ...], str] = {}  # legacy-form fingerprint -> its stage name
        self._snapshots: set[str] = set()  # stage files this supervisor copied
        self._evaluate_config: Mapping[str, Any] = {}
        self._said: set[str] = set()

    # --- the command -------------------------------------------------------------------------------------

    def run(self) -> None:
        """Start the command, republish its files until it exits, then stop what it left and check its outcome.
        A stop signal (``TaskTerminated``) stops the whole tree before it propagates."""
        for path in self.staging.values():  # an earlier run's staging files must not be read as this run's
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(path)
        out = self.context.env.output
        for needed in (out.models_dir, out.tensorboard_dir):  # the platform's /out has them; the SDK expects them
            os.makedirs(needed, exist_ok=True)
        folder = tempfile.mkdtemp(prefix="ymir-runner-sdk-")
        try:
            env_file = write_sdk_env(self.context.env, folder, output=self.staging)
            self._remember_published()
            spare = set(descendants())
            resolve_prctl()  # resolved here: child_setup runs between fork and exec
            self.log.info("sdk: running %s with DEFAULT_ENV_FILE_PATH=%s (its outputs are staged as %s)",
                          shlex.join(self.command), env_file, ", ".join(self.staging.values()))
            try:
                process = subprocess.Popen(  # noqa: S603 - the image's own command, as its start.sh ran it
                    self.command, env=legacy_environment(env_file), stdin=subprocess.DEVNULL,
                    stderr=subprocess.PIPE, preexec_fn=child_setup, close_fds=True)  # noqa: PLW1509
            except OSError as error:
                raise ConfigError(f"cannot start the executor's command {shlex.join(self.command)}: "
                                  f"{error.strerror or error}") from error
            assert process.stderr is not None
            reader = threading.Thread(target=self._forward_stderr, args=(process.stderr,), daemon=True,
                                      name="ymir-runner-sdk-stderr")
            reader.start()
            try:
                while process.poll() is None:
                    self._poll()
                    time.sleep(POLL_SECONDS)
            except BaseException:
                stopped = stop_tree(process.pid, spare=spare, keep_status=process.pid)
                with contextlib.suppress(Exception):
                    process.wait(5)
                reader.join(2)
                self.log.info("sdk: stopped the executor's process tree (%d processes)", len(stopped))
                raise
            left = stop_tree(process.pid, spare=spare, keep_status=process.pid)
            if left:
                self.log.warning("sdk: the command exited leaving %d processes of its own running: stopped them",
                                 len(left))
            reader.join(5)
            self.returncode = process.returncode
            self._poll()  # what it wrote last
            self._check_outcome(process.returncode)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def _forward_stderr(self, stream: IO[bytes]) -> None:
        """Copy the command's stderr to ours as it comes (progress bars end lines with \\r), keeping its tail."""
        fd = stream.fileno()
        partial = ""
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            text = data.decode("utf-8", "replace")
            with contextlib.suppress(Exception):
                sys.stderr.write(text)
                sys.stderr.flush()
            lines = (partial + text).replace("\r", "\n").split("\n")
            partial = lines.pop()[-4096:]
            self.stderr_tail.extend(line for line in lines if line.strip())
        if partial.strip():
            self.stderr_tail.append(partial)
        with contextlib.suppress(OSError):
            stream.close()

    def _check_outcome(self, returncode: int) -> None:
        """Raise the failure of a command that exited non-zero or reported state 4 (see the module)."""
        reported = self.reported_failure
        if returncode == 0 and reported is None:
            return
        tail = list(self.stderr_tail)
        exception = last_exception_line(tail)
        if returncode < 0:
            how = f"was killed by {signal.Signals(-returncode).name}"
        else:
            how = f"exited with code {returncode}"
        said = f": {exception}" if exception else " and printed nothing on stderr"
        if reported is not None and reported.return_code:
            try:
                code = ReturnCode(reported.return_code)
            except ValueError:
                code = ReturnCode.GENERIC
            raise YmirError(f"{exception or 'the executor reported a failure'} (the executor reported error "
                            f"{reported.return_code} in monitor.txt, state 4; its command {how})", code=code)
        for line in reversed(tail):
            known = classify_text(line)
            if known is not None:
                raise YmirError(f"{line.strip()} (the executor's command {how})", code=known)
        if returncode == -signal.SIGKILL:
            raise YmirError(f"the executor's command {how}: most likely the kernel's out-of-memory killer, which "
                            f"stops a process this way at the memory limit{said}", code=ReturnCode.OUT_OF_MEMORY)
        if reported is not None and returncode == 0:
            raise YmirError(f"{exception or 'the executor reported a failure'} (the executor reported state 4 "
                            f"without a return code, then exited 0)")
        raise YmirError(f"{exception} (the executor's command {how})" if exception
                        else f"the executor's command {how} and printed nothing on stderr")

    # --- polling -------------------------------------------------------------------------------------------

    def _remember_published(self) -> None:
        for key in ("monitor_file", "training_result_file"):
            self._written[key] = _signature(self.published[key])

    def _changed(self, key: str) -> str | None:
        """The staging file's text when it changed since it was last read whole, else None."""
        path = self.staging[key]
        signature = _signature(path)
        if signature is None or signature == self._read.get(key):
            return None
        text = read_text(path)
        if text is not None and _signature(path) == signature:  # not rewritten while it was read
            self._read[key] = signature
            return text
        return None

    def _foreign(self, key: str) -> str | None:
        """The published file's text when someone else wrote it since this supervisor last did, else None."""
        signature = _signature(self.published[key])
        if signature is None or signature == self._written.get(key):
            return None
        self._written[key] = signature
        return read_text(self.published[key]) or ""

    def _poll(self) -> None:
        # files someone else wrote first: the supervisor's own writes below must not be taken for theirs
        direct_monitor = self._foreign("monitor_file")
        training = self.context.kind is TaskKind.TRAINING
        direct_result = self._foreign("training_result_file") if training else None
        if direct_monitor is not None:
            self._say_once("monitor", f"sdk: the executor wrote {self.published['monitor_file']} itself (not "
                                      f"through the SDK's env.yaml): its lines are read, and replaced by the "
                                      f"supervisor's")
            line = parse_monitor(direct_monitor)
            if line is not None:
                self._note_monitor(line)
            if self.monitor.state == 2:
                self.monitor.start()  # its own line again, whatever the executor left there
        line = parse_monitor(self._changed("monitor_file"))
        if line is not None:
            self._note_monitor(line)
        if training:
            if direct_result is not None:
                self._take_result_yaml(direct_result, self.published["training_result_file"])
            staged = self._changed("training_result_file")
            if staged is not None:
                self._take_result_yaml(staged, self.staging["training_result_file"])
        if self._unflushed and time.monotonic() - self._flushed >= FLUSH_SECONDS:
            # the core's monitor writes at most once a second and keeps a later value pending until the next
            # report: the executor may not report again for minutes (a long epoch), so the pending value is written
            self.monitor.flush()
            self._unflushed, self._flushed = False, time.monotonic()
        self._remember_published()

    def _note_monitor(self, line: MonitorLine) -> None:
        if line.state == 4:
            if self.reported_failure is None:
                self.log.info("sdk: the executor reported a failure in monitor.txt (state 4, return code %s)",
                              line.return_code)
            self.reported_failure = line
            return
        percent = line.percent
        if percent > 1.0:
            self._say_once("percent>1", f"sdk: the executor reported progress {percent:g}, above 1 (a "
                                        f"percentage?): monitor.txt stays below 1.0 until the command exits 0")
        if percent < self._highest - 1e-6:
            self._say_once("back", f"sdk: the executor's progress went back from {self._highest:.4f} to "
                                   f"{percent:.4f}: monitor.txt keeps the highest (progress never goes down)")
        self._highest = max(self._highest, percent)
        self.monitor.update(min(max(percent, 0.0), RUNNING_CEILING))
        self._unflushed = True

    def _take_result_yaml(self, text: str, source: str) -> None:
        try:
            result = parse_result_yaml(text)
        except LegacyFormError as error:
            self._say_once(f"form {source} {error}", f"sdk: {source} not read: {error}")
            return
        direct = source == self.published["training_result_file"]
        if result is None:
            if not direct:
                self._read.pop("training_result_file", None)  # torn: read it again
            return
        if direct:
            self._say_once("direct result", f"sdk: the executor wrote {source} itself (not through the SDK's "
                                            f"env.yaml): its stages are read and the file is rewritten by "
                                            f"ymir-runner")
        self._ingest(result, source)
        if direct and self.context.training_result.stages:
            self.context.training_result.write()

    # --- training stages -------------------------------------------------------------------------------------

    def _ingest(self, result: LegacyResult, source: str) -> None:
        results = self.context.training_result
        for stage in result.stages:
            fingerprint = self._fingerprint(stage, result.legacy)
            if result.legacy:
                name = self._legacy_names.setdefault(fingerprint, f"stage_{len(self._legacy_names)}")
            else:
                name = stage.name.replace("-", "_")
            if self._stages.get(name) == fingerprint:
                continue
            try:
                self._publish_stage(name, stage)
            except (ValueError, OSError, YmirError) as error:
                self._say_once(f"stage {name} {fingerprint}", f"sdk: stage {stage.name or name!r} of {source} is "
                                                              f"not published: {error}")
                continue
            self._stages[name] = fingerprint
            if stage.dropped:
                self._say_once(f"dropped {stage.dropped}", f"sdk: stage {name!r}: {', '.join(stage.dropped)} have "
                                                           f"no place in a stage the platform reads: not published")
        config = {str(key): value for key, value in result.evaluate_config.items()}
        if config and config != self._evaluate_config:
            try:
                results.set_evaluate_config(**{key: float(value) for key, value in config.items()})
                self._evaluate_config = config
            except (TypeError, ValueError) as error:
                self._say_once(f"evaluate_config {config}", f"sdk: evaluate_config {config} of {source} is not "
                                                            f"published: {error}")
        best = results.best
        if best is not None and not self._evaluate_config:
            self._say_once("no evaluate_config", f"sdk: the executor writes no evaluate_config: the platform shows "
                                                 f"the best stage's mAP ({best.name}: {best.metrics['mAP']:.4f}) as "
                                                 f"AP at its default IoU 0.5, whatever the executor computed (yolov5 "
                                                 f"writes a fitness mixing mAP50 and mAP50-95, mmdetection "
                                                 f"bbox_mAP_50)")
        if best is not None and result.best_stage_name and result.best_stage_name.replace("-", "_") != best.name:
            self._say_once(f"best {result.best_stage_name} {best.name}",
                           f"sdk: the executor names {result.best_stage_name!r} its best stage; the platform deploys "
                           f"{best.name!r}, ranked by ymir-runner's one rule (the highest mAP)")

    def _fingerprint(self, stage: LegacyStage, legacy: bool) -> tuple[Any, ...]:
        """What tells a stage's versions apart: its entry as written; in the legacy form, which has no timestamp
        and is rewritten whole with each model, the listed files' signatures too (a new write is a new stage)."""
        files: tuple[Any, ...] = stage.files
        if legacy:
            files = tuple((file, _signature(self._source(stage.name, file) or "")) for file in stage.files)
        return (files, repr(stage.timestamp), tuple(sorted((key, repr(value)) for key, value in stage.metrics.items())),
                tuple(sorted((key, repr(value)) for key, value in stage.counts.items())))

    def _source(self, stage: str, file: str) -> str | None:
        """Where the executor keeps a stage's file: a path as given; a name in ``models/<stage>/`` (unless that is
        this supervisor's snapshot), then in ``models/``; None when it is in neither."""
        if os.path.isabs(file):
            return file if os.path.isfile(file) else None
        models = self.context.training_result.models_dir
        for folder in (os.path.join(models, stage.replace("-", "_")), os.path.join(models, stage), models):
            path = os.path.join(folder, file)
            if os.path.isfile(path) and path not in self._snapshots:
                return path
        return None

    def _publish_stage(self, name: str, stage: LegacyStage) -> None:
        results = self.context.training_result
        if not stage.files:
            raise ValueError("it lists no files")
        folder = results.stage_dir(name)
        names, copies = [], []
        protocol_files = {os.path.abspath(self.published["training_result_file"]),
                          os.path.abspath(self.staging["training_result_file"])}
        for file in stage.files:
            source = self._source(stage.name or name, file)
            if source is None:
                raise ValueError(f"file {file!r} is not in {folder} or {results.models_dir}")
            if os.path.abspath(source) in protocol_files:  # an SDK helper's glob of the models folder found it
                self._say_once("lists result.yaml", f"sdk: stage {name!r} lists {file} (an SDK helper listing every "
                                                    f"file of the models folder): left out of the stage")
                continue
            if os.path.dirname(os.path.abspath(source)) == os.path.abspath(folder):
                names.append(os.path.basename(source))
                continue
            target = os.path.join(folder, os.path.basename(source))
            _snapshot(source, target)
            self._snapshots.add(target)
            copies.append(target)
            names.append(os.path.basename(source))
        try:
            results.add_stage(name, names, dict(stage.metrics), dict(stage.counts))
        except ValueError:
            if name not in results.stages:
                for target in copies:
                    with contextlib.suppress(OSError):
                        os.unlink(target)
            raise
        if copies:
            self.log.info("sdk: stage %s: %s copied into %s (the executor writes them again later)", name,
                          ", ".join(os.path.basename(copy) for copy in copies), folder)

    # --- mining and inference results ------------------------------------------------------------------------

    def take_results(self, context: TaskContext) -> None:
        """Check and hand this task's results to the core's writer (training: the stages are published already)."""
        if context.kind is TaskKind.TRAINING:
            if not context.training_result.stages:
                raise YmirError(f"the executor's command exited 0 without a usable model stage (read from "
                                f"{self.staging['training_result_file']} and "
                                f"{self.published['training_result_file']}; the warnings above say why a stage "
                                f"was not published)")
            return
        key = "mining_result_file" if context.kind is TaskKind.MINING else "infer_result_file"
        staged, published = self.staging[key], self.published[key]
        text, source = read_text(staged), staged
        if text is None and read_text(published) is not None:
            text, source = read_text(published), published
            self.log.warning("sdk: the executor wrote %s itself (not through the SDK's env.yaml): it is read and "
                             "rewritten by ymir-runner", published)
        if text is None:
            raise YmirError(f"the executor's command exited 0 without writing a {context.kind} result (neither "
                            f"{staged} nor {published} holds one)")
        try:
            if context.kind is TaskKind.MINING:
                self._take_mining(context, text, source)
            else:
                self._take_infer(context, text, source)
        except LegacyFormError as error:
            raise YmirError(f"{source}: {error}") from error

    def _candidates(self, context: TaskContext) -> tuple[list[str], Callable[[str], str | None]]:
        """The candidate paths (local) and a lookup of an image as the executor named it (a path, re-rooted or
        not, or a basename) to its candidate path."""
        paths = context.candidates.paths()
        root = context.env.root
        by_name: dict[str, str] = {}
        for path in paths:
            by_name[path] = path
            by_name.setdefault(os.path.basename(path), path)
            if root and path.startswith(root.rstrip("/") + "/"):
                by_name[path[len(root.rstrip("/")):]] = path
        return paths, by_name.get

    def _take_mining(self, context: TaskContext, text: str, source: str) -> None:
        rows = parse_mining(text) or []
        _, candidate = self._candidates(context)
        taken = 0
        for image, score in rows:
            path = candidate(image)
            if path is None:
                context.skips.skip("mining score of no candidate", image, f"{source}: not in the candidate index")
                continue
            try:
                value = float(score)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                context.skips.skip("mining score not a finite number", image, f"{source}: {score!r}")
                continue
            context.mining_result.add(path, value)
            taken += 1
        self.log.info("sdk: %d mining scores read from %s", taken, source)

    def _take_infer(self, context: TaskContext, text: str, source: str) -> None:
        images = parse_infer(text) or {}
        _, candidate = self._candidates(context)
        names = list(context.class_names)
        clipped = 0
        for key, boxes in images.items():
            path = candidate(key)
            if path is None:
                context.skips.skip("inference result of no candidate", key, f"{source}: not in the candidate index")
                continue
            try:
                info = probe_image(path)
            except (ImageProblem, OSError) as unreadable:
                context.skips.skip("inference result of an unreadable image", path, str(unreadable))
                context.infer_result.add_empty(path)
                continue
            detections = []
            for entry in boxes:
                detection, problem = _detection(entry, names)
                if detection is None:
                    context.skips.skip(problem, path, f"{source}: {str(entry)[:120]}")
                    continue
                if (detection.x1 < 0 or detection.y1 < 0 or detection.x2 > info.width
                        or detection.y2 > info.height):
                    clipped += 1
                detections.append(detection)
            context.infer_result.add(path, detections, info.width, info.height)
        if clipped:
            self.log.info("sdk: %d boxes of %s reached outside their image: clipped to it (a box left with no "
                          "area inside is dropped)", clipped, source)
        self.log.info("sdk: inference results of %d images read from %s", len(images), source)

    def _say_once(self, key: str, message: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self.log.warning("%s", message)


def _detection(entry: Any, class_names: list[str]) -> tuple[Detection | None, str]:
    """A box entry ``{"box": {x, y, w, h}, "class_name", "score"}`` as a Detection, or None and the reason."""
    if not isinstance(entry, dict) or not isinstance(entry.get("box"), dict):
        return None, "inference box not in the SDK's form"
    name = entry.get("class_name")
    if name not in class_names:
        return None, "inference box of a class not in class_names"
    try:
        box = entry["box"]
        x, y, w, h = (float(box[key]) for key in ("x", "y", "w", "h"))
        score = float(entry.get("score"))  # type: ignore[arg-type]
    except (KeyError, TypeError, ValueError):
        return None, "inference box with a coordinate or score that is not a number"
    if not all(math.isfinite(value) for value in (x, y, w, h)) or w <= 0 or h <= 0:
        return None, "inference box with a non-finite coordinate or no area"
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        return None, "inference box with a score outside [0, 1]"
    return Detection(x, y, x + w, y + h, score, class_names.index(name)), ""


def _snapshot(source: str, target: str, attempts: int = 3) -> None:
    """Copy ``source`` to ``target`` atomically, again when the source changed while it was copied (an executor
    saving its next checkpoint); raises OSError when it never held still."""
    for _ in range(attempts):
        before = _signature(source)
        with atomic_path(target) as temporary:
            shutil.copyfile(source, temporary)
        if _signature(source) == before:
            return
        time.sleep(POLL_SECONDS)
    raise OSError(f"{source} changed while it was copied, {attempts} times")
