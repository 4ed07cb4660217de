"""``ymir-runner verify``: an independent checker of an executor's /out tree against the YMIR protocol.

It checks what the platform reads from /out (protocol.md, section 3): monitor.txt, the training
result.yaml, the mining result.tsv and infer-result.json. It reads the files with PyYAML's safe loader and
json only, and deliberately imports nothing from the project's own writers (``ymir_runner.protocol.results``,
``.monitor``, ``.atomic``): it must catch their bugs, and it must judge images built with any other SDK,
so it checks the contract, not this project's conventions.

Findings are errors (the platform fails the task, drops data or misreads it) or warnings (legal but
suspicious). Rule ids, stable for scripts and tests (W = warning):

monitor.txt
    monitor.missing, monitor.empty, monitor.encoding, monitor.tabs, monitor.fields,
    monitor.return-code-missing (W), monitor.task-id, monitor.timestamp, monitor.timestamp-ms (W),
    monitor.percent, monitor.percent-range, monitor.state, monitor.return-code, monitor.failure-code,
    monitor.unknown-code (W), monitor.code-without-failure, monitor.failed, monitor.expected-failure,
    monitor.final-state (error for state 1, W for state 3), monitor.final-percent
models/result.yaml
    result-yaml.missing, result-yaml.encoding, result-yaml.parse, result-yaml.python-tag,
    result-yaml.duplicate-key (W), result-yaml.mapping, result-yaml.legacy-and-stages,
    result-yaml.legacy-form, result-yaml.model-stages, result-yaml.best-stage, result-yaml.stage-count (W),
    result-yaml.stage-identifier (W), result-yaml.stage, result-yaml.stage-name, result-yaml.files,
    result-yaml.file-missing, result-yaml.timestamp-int, result-yaml.timestamp-range,
    result-yaml.metric-missing, result-yaml.metric-type, result-yaml.metric-range,
    result-yaml.metric-finite, result-yaml.metric-case (W), result-yaml.count, result-yaml.stage-key (W),
    result-yaml.attachments, result-yaml.attachment-missing, result-yaml.evaluate-config,
    result-yaml.evaluate-config-int (W), result-yaml.unlisted (W)
result.tsv
    mining.missing, mining.encoding, mining.empty (W), mining.blank-line (W), mining.tabs, mining.fields,
    mining.path, mining.score, mining.order, mining.duplicate, mining.unknown-path,
    mining.path-differs (W), mining.missing-candidate
infer-result.json
    infer.missing, infer.encoding, infer.json, infer.mapping, infer.detection, infer.entry-key,
    infer.entry, infer.boxes-key, infer.missing-entry, infer.extra-entry (W), infer.box-item, infer.box,
    infer.box-keys, infer.box-int, infer.box-size (W), infer.score-missing, infer.score, infer.class-name,
    infer.class-unknown, infer.box-extra-key (W)

At most :data:`FINDINGS_PER_RULE` findings per rule and file are listed, then one "... more" line.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import re
import sys
from typing import Any, Iterable, Mapping, Sequence

import yaml

ERROR = "error"
WARNING = "warning"
TASKS = ("training", "mining", "infer")
DEFAULT_PROTOCOL = "1.1.0"
#: env.yaml without ``protocol_version`` comes from a platform <= 1.1.0: protocol.md says treat it as 0.0.1.
UNVERSIONED_PROTOCOL = "0.0.1"
#: Return codes of a failed task (monitor.txt, 5th field), protocol.md section 3.
KNOWN_FAILURE_CODES: dict[int, str] = {
    300001: "config", 300002: "dataset", 300003: "image format", 300004: "model", 300005: "object_type",
    300101: "CUDA/GPU mismatch", 300102: "no GPU", 300103: "out of memory", 300201: "NaN",
    300301: "network", 160004: "generic (non-zero exit without a code)"}
#: The platform's task states; the protocol has executors write 2 all along and 4 on failure.
STATES = {1: "pending", 2: "running", 3: "done", 4: "error"}
STATE_RUNNING, STATE_DONE, STATE_FAILED = 2, 3, 4
MAX_STAGES = 11
INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1
#: Metrics that are ratios in [0, 1]; ``mAP`` is required for detection (object_type 2).
UNIT_METRICS = ("mAP", "mAR", "mIoU", "mAcc", "maskAP", "boxAP")
COUNT_METRICS = ("tp", "fp", "fn")
STAGE_FIELDS = ("stage_name", "files", "timestamp")
MISCASED_METRICS = {"TP": "tp", "FP": "fp", "FN": "fn", "map": "mAP", "MAP": "mAP", "mar": "mAR",
                    "MAR": "mAR", "Map": "mAP"}
STAGE_NAME = re.compile(r"[A-Za-z0-9_]+")
BOX_KEYS = ("x", "y", "w", "h")
BOX_ENTRY_KEYS = ("box", "class_name", "score")
#: Files in the models folder that are not model files and that the platform handles itself.
MODELS_DIR_EXTRAS = ("attachments", "ymir-info.yaml")
FINDINGS_PER_RULE = 20
DETECTION = 2


class UsageError(ValueError):
    """A problem with what verify was asked to check (not with the /out tree): exit code 2."""


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem: ``path`` is relative to OUT_DIR when inside it; ``line`` is 1-based or None."""

    severity: str
    rule: str
    path: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{self.severity.upper()} {self.rule} {where}: {self.message}"


@dataclasses.dataclass
class Report:
    """The findings of one verification, with the files that were checked."""

    out_dir: str
    tasks: tuple[str, ...]
    findings: list[Finding] = dataclasses.field(default_factory=list)
    checked: list[str] = dataclasses.field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def rules(self, severity: str | None = None) -> set[str]:
        """The rule ids found (of one severity when given): handy in tests and scripts."""
        return {finding.rule for finding in self.findings if severity in (None, finding.severity)}

    def summary(self) -> str:
        verdict = "OK" if self.ok else "FAILED"
        return (f"{verdict}: {_plural(len(self.errors), 'error')}, {_plural(len(self.warnings), 'warning')} "
                f"in {self.out_dir} (tasks: {', '.join(self.tasks)}; checked: {', '.join(self.checked) or '-'})")

    def to_text(self) -> str:
        return "\n".join([str(finding) for finding in self.findings] + [self.summary()])

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "out_dir": self.out_dir, "tasks": list(self.tasks), "checked": self.checked,
                "errors": len(self.errors), "warnings": len(self.warnings),
                "findings": [dataclasses.asdict(finding) for finding in self.findings]}


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class _Collector:
    """Gathers findings, with paths relative to OUT_DIR and a cap per (rule, file) against floods."""

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.findings: list[Finding] = []
        self._counts: collections.Counter[tuple[str, str, str]] = collections.Counter()

    def rel(self, path: str) -> str:
        relative = os.path.relpath(path, self.out_dir)
        return path if relative.startswith("..") else relative

    def add(self, severity: str, rule: str, path: str, message: str, line: int | None = None) -> None:
        key = (severity, rule, self.rel(path))
        self._counts[key] += 1
        if self._counts[key] <= FINDINGS_PER_RULE:
            self.findings.append(Finding(severity, rule, key[2], line, message))

    def error(self, rule: str, path: str, message: str, line: int | None = None) -> None:
        self.add(ERROR, rule, path, message, line)

    def warning(self, rule: str, path: str, message: str, line: int | None = None) -> None:
        self.add(WARNING, rule, path, message, line)

    def finish(self) -> list[Finding]:
        """The findings, plus one line per capped rule saying how many were left out."""
        for (severity, rule, path), count in self._counts.items():
            if count > FINDINGS_PER_RULE:
                self.findings.append(Finding(severity, rule, path, None,
                                             f"... and {count - FINDINGS_PER_RULE} more like the above"))
        return self.findings


# --- small value helpers --------------------------------------------------------------------------------------

def _is_int(value: Any) -> bool:
    """YAML/JSON integers only: bool is an int subclass in Python but not a number in the protocol."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_name(value: Any) -> str:
    return {bool: "a boolean", str: "a string", float: "a float", int: "an integer", list: "a list",
            dict: "a mapping", type(None): "null"}.get(type(value), type(value).__name__)


def _key_path(*keys: Any) -> str:
    """``model_stages.epoch_1.files[0]``: where a value sits in a YAML/JSON document."""
    text = ""
    for key in keys:
        if isinstance(key, int):
            text += f"[{key}]"
        elif isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_\-]+", key):
            text += f".{key}" if text else key
        else:
            text += f"[{json.dumps(key)}]"
    return text


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.1.0"`` → (1, 1, 0); a protocol version that is not dotted integers is a usage error."""
    try:
        return tuple(int(part) for part in str(text).strip().split("."))
    except ValueError:
        raise UsageError(f"protocol version {text!r} is not like 1.1.0") from None


def asset_id(path: str) -> str:
    """What the platform keys a mining line by: the file name without extension."""
    return os.path.splitext(os.path.basename(path))[0]


def _read_text(collector: _Collector, path: str, prefix: str, *, required: bool = True) -> str | None:
    """The file's text, or None after reporting ``<prefix>.missing`` / ``<prefix>.encoding``."""
    if not os.path.isfile(path):
        if required:
            what = "is not a file" if os.path.exists(path) else "is missing"
            collector.error(f"{prefix}.missing", path, f"{what}: the platform expects it")
        return None
    with open(path, "rb") as stream:
        data = stream.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        collector.error(f"{prefix}.encoding", path, f"not UTF-8 ({error.reason} at byte {error.start})")
        return None


# --- monitor.txt --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _MonitorLine:
    percent: float | None = None
    state: int | None = None
    code: int | None = None
    has_code: bool = False


def check_monitor(collector: _Collector, path: str, *, task_id: str | None, expect_failure: bool) -> None:
    """Line 1 of monitor.txt: any parse failure or a missing file marks the task failed on the platform."""
    text = _read_text(collector, path, "monitor")
    if text is None:
        return
    if not text.strip():
        collector.error("monitor.empty", path, "is empty: the task never reported (or the last write was torn)")
        return
    fields = _monitor_fields(collector, path, text.split("\n", 1)[0].rstrip("\r"))
    if fields is None:
        return
    parsed = _monitor_values(collector, path, fields, task_id)
    _monitor_outcome(collector, path, parsed, expect_failure)


def _monitor_fields(collector: _Collector, path: str, line: str) -> list[str] | None:
    """The TAB-separated fields of line 1, or None when they cannot be told apart."""
    fields = line.split("\t")
    if len(fields) in (4, 5):
        if len(fields) == 4:
            collector.warning("monitor.return-code-missing", path,
                              "4 fields: return_code missing (optional, but write it)", 1)
        return fields
    if len(line.split()) in (4, 5) or any(" " in field.strip() for field in fields):
        collector.error("monitor.tabs", path, f"fields must be separated by TABs, not spaces: {line!r}", 1)
    else:
        collector.error("monitor.fields", path, f"{len(fields)} TAB-separated fields, expected "
                        f"task_id, timestamp, percent, state, return_code: {line!r}", 1)
    return None


def _monitor_values(collector: _Collector, path: str, fields: list[str], task_id: str | None) -> _MonitorLine:
    """Parse and range-check each field; what fails to parse stays None."""
    parsed = _MonitorLine(has_code=len(fields) == 5)
    if not fields[0].strip():
        collector.error("monitor.task-id", path, "task_id (field 1) is empty", 1)
    elif task_id is not None and fields[0] != str(task_id):
        collector.error("monitor.task-id", path, f"task_id {fields[0]!r} is not the task's {str(task_id)!r}", 1)
    timestamp = _parse_float(fields[1])
    if timestamp is None:
        collector.error("monitor.timestamp", path, f"timestamp {fields[1]!r} is not a finite float (seconds)", 1)
    elif timestamp > 1e11:
        collector.warning("monitor.timestamp-ms", path, f"timestamp {fields[1]} looks like milliseconds; "
                          "the platform expects seconds", 1)
    parsed.percent = _parse_float(fields[2])
    if parsed.percent is None:
        collector.error("monitor.percent", path, f"percent {fields[2]!r} is not a finite float", 1)
    elif not 0.0 <= parsed.percent <= 1.0:
        collector.error("monitor.percent-range", path, f"percent {fields[2]} is outside [0, 1]", 1)
    parsed.state = _parse_int(fields[3])
    if parsed.state not in STATES:
        parsed.state = None
        collector.error("monitor.state", path, f"state {fields[3]!r} is not one of "
                        f"{', '.join(f'{k} ({v})' for k, v in STATES.items())}", 1)
    if parsed.has_code:
        parsed.code = _parse_int(fields[4])
        if parsed.code is None:
            collector.error("monitor.return-code", path, f"return_code {fields[4]!r} is not an integer", 1)
    return parsed


def _parse_float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _monitor_outcome(collector: _Collector, path: str, line: _MonitorLine, expect_failure: bool) -> None:
    """State, code and percent together: a failure needs a known code, a success must end at 1.0 in state 2."""
    if line.state is None:
        return
    _check_return_code(collector, path, line)
    if expect_failure:
        if line.state != STATE_FAILED:
            collector.error("monitor.expected-failure", path, f"the task should have failed but its state is "
                            f"{line.state} ({STATES[line.state]}), not 4 (error)", 1)
        return
    if line.state == STATE_FAILED:
        name = KNOWN_FAILURE_CODES.get(line.code or 0, "unknown")
        collector.error("monitor.failed", path, f"the task reported failure: state 4, code {line.code} ({name})", 1)
        return
    if line.state == STATE_DONE:
        collector.warning("monitor.final-state", path, "state 3 (done): the protocol has the executor keep "
                          "state 2 (running) until the end, including the final 1.0", 1)
    elif line.state != STATE_RUNNING:
        collector.error("monitor.final-state", path, f"a finished task must end in state 2 (running) at 1.0, "
                        f"found state {line.state} ({STATES[line.state]})", 1)
    if line.percent is not None and line.percent != 1.0:
        collector.error("monitor.final-percent", path, f"a finished task must end at percent 1.0, "
                        f"found {line.percent}", 1)


def _check_return_code(collector: _Collector, path: str, line: _MonitorLine) -> None:
    if line.state == STATE_FAILED:
        if not line.has_code or line.code == 0:
            collector.error("monitor.failure-code", path, "state 4 (error) needs a non-zero return code "
                            f"(one of {', '.join(map(str, KNOWN_FAILURE_CODES))})", 1)
        elif line.code is not None and line.code not in KNOWN_FAILURE_CODES:
            collector.warning("monitor.unknown-code", path, f"unknown code {line.code}: the platform knows "
                              f"{', '.join(map(str, KNOWN_FAILURE_CODES))}", 1)
    elif line.code not in (None, 0):
        collector.error("monitor.code-without-failure", path, f"return_code {line.code} with state "
                        f"{line.state}: only state 4 (error) carries a non-zero code", 1)


# --- training: models/result.yaml -------------------------------------------------------------------------

class _YamlDoc:
    """A loaded result.yaml plus the line of each key path, to point findings at the right line."""

    def __init__(self, path: str, data: Any, lines: dict[tuple[Any, ...], int]) -> None:
        self.path = path
        self.data = data
        self.lines = lines

    def line(self, *keys: Any) -> int | None:
        while keys and keys not in self.lines:
            keys = keys[:-1]
        return self.lines.get(keys)


class _LenientLoader(yaml.SafeLoader):
    """safe_load's rules, except that a Python tag loads as a placeholder string: after reporting the tag, the
    rest of the file can still be checked."""


_LenientLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: f"!!python/{suffix}")


def _load_yaml(collector: _Collector, path: str, text: str) -> _YamlDoc | None:
    """safe_load, as the platform does: python tags (a numpy scalar dumped by yaml.dump) are refused."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        if not isinstance(error, yaml.constructor.ConstructorError) or "python/" not in str(error):
            collector.error("result-yaml.parse", path, f"not valid YAML: {' '.join(str(error).split())}", line)
            return None
        problem = " ".join((error.problem or str(error)).split())
        collector.error("result-yaml.python-tag", path, f"the platform's safe_load refuses the whole file: a "
                        f"numpy value? convert metrics with float() ({problem})", line)
        try:
            data = yaml.load(text, Loader=_LenientLoader)  # noqa: S506 - only python/ tags differ, as strings
        except yaml.YAMLError:
            return None
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[tuple[Any, ...], int] = {}
    _node_lines(collector, path, node, (), lines)
    return _YamlDoc(path, data, lines)


def _node_lines(collector: _Collector, path: str, node: Any, keys: tuple[Any, ...],
                lines: dict[tuple[Any, ...], int]) -> None:
    """Record the line of every key path; a duplicate key silently keeps the last value, so warn."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node.value)
            if key in seen:
                collector.warning("result-yaml.duplicate-key", path, f"{_key_path(*keys, key)} appears twice: "
                                  "the last value silently wins", key_node.start_mark.line + 1)
            seen.add(key)
            lines[keys + (key,)] = key_node.start_mark.line + 1
            _node_lines(collector, path, value_node, keys + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[keys + (index,)] = item.start_mark.line + 1
            _node_lines(collector, path, item, keys + (index,), lines)


def check_training(collector: _Collector, path: str, *, protocol: tuple[int, ...], object_type: int,
                   expect_failure: bool) -> None:
    """result.yaml: parsed even when the container fails, so it must be valid at every moment."""
    text = _read_text(collector, path, "result-yaml", required=not expect_failure)
    if text is None:
        return
    doc = _load_yaml(collector, path, text)
    if doc is None:
        return
    if not isinstance(doc.data, dict):
        collector.error("result-yaml.mapping", path, f"the document is {_type_name(doc.data)}, not a mapping")
        return
    models_dir = os.path.dirname(path)
    legacy = "model" in doc.data or "map" in doc.data
    if legacy and "model_stages" in doc.data:
        collector.error("result-yaml.legacy-and-stages", path, "legacy keys model/map AND model_stages: the "
                        "legacy form wins on the platform; never write both", doc.line("model"))
    elif legacy:
        if protocol >= (1, 0, 0):
            collector.error("result-yaml.legacy-form", path, "legacy form {model: [...], map: x} is only for "
                            f"protocol < 1.0.0 (checking {_version_text(protocol)}): write model_stages",
                            doc.line("model"))
        listed = _check_legacy(collector, doc, models_dir)
        _check_unlisted(collector, models_dir, os.path.basename(path), listed)
        return
    listed = _check_stages(collector, doc, models_dir, object_type)
    _check_attachments(collector, doc, models_dir)
    _check_evaluate_config(collector, doc)
    _check_unlisted(collector, models_dir, os.path.basename(path), listed)


def _version_text(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def _check_legacy(collector: _Collector, doc: _YamlDoc, models_dir: str) -> set[str]:
    """{model: [files], map: float}: files looked up in the models folder."""
    listed = _check_files(collector, doc, ("model",), doc.data.get("model"), [models_dir])
    _check_unit_metric(collector, doc, ("map",), doc.data.get("map"), required=True)
    return listed


def _check_stages(collector: _Collector, doc: _YamlDoc, models_dir: str, object_type: int) -> set[str]:
    """model_stages and best_stage_name; returns the real paths of the listed files that exist."""
    stages = doc.data.get("model_stages")
    if not isinstance(stages, dict) or not stages:
        what = "empty" if isinstance(stages, dict) else "missing" if stages is None else _type_name(stages)
        collector.error("result-yaml.model-stages", doc.path, f"model_stages must be a non-empty mapping "
                        f"(found {what})", doc.line("model_stages"))
        stages = {}
    best = doc.data.get("best_stage_name")
    if best is None:
        collector.error("result-yaml.best-stage", doc.path, "best_stage_name is missing")
    elif stages and (not isinstance(best, str) or best not in stages):
        collector.error("result-yaml.best-stage", doc.path, f"best_stage_name {best!r} is not a key of "
                        f"model_stages ({', '.join(map(str, stages))})", doc.line("best_stage_name"))
    if len(stages) > MAX_STAGES:
        collector.warning("result-yaml.stage-count", doc.path, f"{len(stages)} stages: the SDK convention is "
                          f"at most {MAX_STAGES} (best + 10 latest)", doc.line("model_stages"))
    listed: set[str] = set()
    for name, stage in stages.items():
        listed |= _check_stage(collector, doc, models_dir, name, stage, object_type)
    return listed


def _check_stage(collector: _Collector, doc: _YamlDoc, models_dir: str, name: Any, stage: Any,
                 object_type: int) -> set[str]:
    keys = ("model_stages", name)
    if not isinstance(name, str) or not STAGE_NAME.fullmatch(name):
        collector.warning("result-yaml.stage-identifier", doc.path, f"stage name {name!r} should use only "
                          "letters, digits and '_'", doc.line(*keys))
    if not isinstance(stage, dict):
        collector.error("result-yaml.stage", doc.path, f"{_key_path(*keys)} is {_type_name(stage)}, "
                        "not a mapping", doc.line(*keys))
        return set()
    if stage.get("stage_name") != name:
        collector.error("result-yaml.stage-name", doc.path, f"{_key_path(*keys, 'stage_name')} is "
                        f"{stage.get('stage_name')!r}, must equal its key {name!r}", doc.line(*keys, "stage_name"))
    folders = [os.path.join(models_dir, str(name)), models_dir]
    listed = _check_files(collector, doc, keys + ("files",), stage.get("files"), folders)
    _check_timestamp(collector, doc, keys, stage.get("timestamp"))
    _check_metrics(collector, doc, keys, stage, object_type)
    return listed


def _check_files(collector: _Collector, doc: _YamlDoc, keys: tuple[Any, ...], files: Any,
                 folders: Sequence[str]) -> set[str]:
    """A non-empty list of names, each found in one of ``folders`` (a listed file that is missing fails)."""
    where = _key_path(*keys)
    if not isinstance(files, list) or not files:
        found = "missing" if files is None else "empty" if isinstance(files, list) else _type_name(files)
        collector.error("result-yaml.files", doc.path, f"{where} must be a non-empty list of file names "
                        f"(found {found})", doc.line(*keys))
        return set()
    listed = set()
    for index, name in enumerate(files):
        if not isinstance(name, str) or not name:
            collector.error("result-yaml.files", doc.path, f"{where}[{index}] is {name!r}, not a file name",
                            doc.line(*keys, index))
            continue
        hits = [os.path.join(folder, name) for folder in folders if os.path.exists(os.path.join(folder, name))]
        if hits:
            listed.add(os.path.realpath(hits[0]))
        else:
            collector.error("result-yaml.file-missing", doc.path, f"{where}[{index}] {name!r} is in none of "
                            f"{', '.join(collector.rel(folder) + '/' for folder in folders)}: the task fails",
                            doc.line(*keys, index))
    return listed


def _check_timestamp(collector: _Collector, doc: _YamlDoc, keys: tuple[Any, ...], value: Any) -> None:
    where = _key_path(*keys, "timestamp")
    line = doc.line(*keys, "timestamp")
    if not _is_int(value):
        found = "missing" if value is None else f"{_type_name(value)} {value!r}"
        collector.error("result-yaml.timestamp-int", doc.path, f"{where} must be an integer (seconds), "
                        f"found {found}", line)
    elif not INT32_MIN <= value <= INT32_MAX:
        collector.error("result-yaml.timestamp-range", doc.path, f"{where} {value} overflows int32: "
                        "milliseconds? the platform needs integer SECONDS", line)


def _check_metrics(collector: _Collector, doc: _YamlDoc, keys: tuple[Any, ...], stage: dict[Any, Any],
                   object_type: int) -> None:
    """mAP (detection) and other ratios in [0, 1]; tp/fp/fn counts; anything else numeric must be finite."""
    if object_type == DETECTION and "mAP" not in stage:
        collector.error("result-yaml.metric-missing", doc.path, f"{_key_path(*keys)} has no mAP "
                        "(the detection main metric)", doc.line(*keys))
    for name, value in stage.items():
        if name in STAGE_FIELDS:
            continue
        if name in UNIT_METRICS:
            _check_unit_metric(collector, doc, keys + (name,), value)
        elif name in COUNT_METRICS:
            if not _is_int(value) or value < 0:
                collector.error("result-yaml.count", doc.path, f"{_key_path(*keys, name)} must be an integer "
                                f">= 0, found {value!r}", doc.line(*keys, name))
        else:
            _check_other_stage_key(collector, doc, keys, name, value)


def _check_unit_metric(collector: _Collector, doc: _YamlDoc, keys: tuple[Any, ...], value: Any,
                       required: bool = False) -> None:
    where, line = _key_path(*keys), doc.line(*keys)
    if value is None and required:
        collector.error("result-yaml.metric-missing", doc.path, f"{where} is missing", line)
    elif not _is_number(value):
        collector.error("result-yaml.metric-type", doc.path, f"{where} must be a plain float, found "
                        f"{_type_name(value)} {value!r}", line)
    elif not 0.0 <= value <= 1.0:
        hint = " (a percentage?)" if math.isfinite(value) and 1.0 < value <= 100.0 else ""
        collector.error("result-yaml.metric-range", doc.path, f"{where} {value!r} is outside [0, 1]{hint}", line)


def _check_other_stage_key(collector: _Collector, doc: _YamlDoc, keys: tuple[Any, ...], name: Any,
                           value: Any) -> None:
    where, line = _key_path(*keys, name), doc.line(*keys, name)
    if name in MISCASED_METRICS:
        collector.warning("result-yaml.metric-case", doc.path, f"{where}: the platform reads "
                          f"{MISCASED_METRICS[name]!r}, not {name!r}", line)
    if _is_number(value):
        if not math.isfinite(value):
            collector.error("result-yaml.metric-finite", doc.path, f"{where} is {value!r}: metrics must be "
                            "finite", line)
    elif name not in MISCASED_METRICS:
        collector.warning("result-yaml.stage-key", doc.path, f"{where} is {_type_name(value)}, not a metric "
                          "number: the platform does not expect it", line)


def _check_attachments(collector: _Collector, doc: _YamlDoc, models_dir: str) -> None:
    """attachments: {section: [names]} with files at models/attachments/<section>/<name>."""
    attachments = doc.data.get("attachments")
    if attachments is None:
        return
    if not isinstance(attachments, dict):
        collector.error("result-yaml.attachments", doc.path, f"attachments is {_type_name(attachments)}, "
                        "not a mapping of section → file names", doc.line("attachments"))
        return
    for section, names in attachments.items():
        keys = ("attachments", section)
        if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
            collector.error("result-yaml.attachments", doc.path, f"{_key_path(*keys)} must be a list of file "
                            f"names, found {names!r}", doc.line(*keys))
            continue
        for index, name in enumerate(names):
            if not os.path.isfile(os.path.join(models_dir, "attachments", str(section), name)):
                collector.error("result-yaml.attachment-missing", doc.path, f"{_key_path(*keys, index)} "
                                f"{name!r} is not at attachments/{section}/{name}", doc.line(*keys, index))


def _check_evaluate_config(collector: _Collector, doc: _YamlDoc) -> None:
    """evaluate_config: "values must be floats"; an int is tolerated with a warning."""
    config = doc.data.get("evaluate_config")
    if config is None:
        return
    if not isinstance(config, dict):
        collector.error("result-yaml.evaluate-config", doc.path, f"evaluate_config is {_type_name(config)}, "
                        "not a mapping", doc.line("evaluate_config"))
        return
    for key, value in config.items():
        where, line = _key_path("evaluate_config", key), doc.line("evaluate_config", key)
        if _is_int(value):
            collector.warning("result-yaml.evaluate-config-int", doc.path, f"{where} is the integer {value}: "
                              "values must be floats", line)
        elif not isinstance(value, float) or not math.isfinite(value):
            collector.error("result-yaml.evaluate-config", doc.path, f"{where} must be a finite float, found "
                            f"{_type_name(value)} {value!r}", line)


def _check_unlisted(collector: _Collector, models_dir: str, result_name: str, listed: set[str]) -> None:
    """Anything in the models folder that no stage lists is discarded by the platform: say so."""
    skip = {result_name, *MODELS_DIR_EXTRAS}
    for entry in sorted(os.listdir(models_dir)):
        path = os.path.join(models_dir, entry)
        if entry in skip or os.path.realpath(path) in listed:
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            for found in _files_under(path):
                if os.path.realpath(found) not in listed:
                    collector.warning("result-yaml.unlisted", found, "listed by no stage: discarded by the "
                                      "platform")
        else:
            collector.warning("result-yaml.unlisted", path, "listed by no stage: discarded by the platform")


def _files_under(folder: str) -> list[str]:
    found: list[str] = []
    for parent, _, files in os.walk(folder):
        found.extend(os.path.join(parent, name) for name in sorted(files))
    return found


# --- mining: result.tsv -------------------------------------------------------------------------------------

def check_mining(collector: _Collector, path: str, *, candidates: Sequence[str] | None,
                 root: str | None = None) -> None:
    """``<path>\\t<score>`` per line, highest first: the platform takes the first top-k lines in file order."""
    text = _read_text(collector, path, "mining")
    if text is None:
        return
    rows = _mining_rows(collector, path, text)
    if not rows and not candidates:
        collector.warning("mining.empty", path, "no lines: nothing will be mined")
    _check_coverage(collector, path, rows, candidates, root)


def _mining_rows(collector: _Collector, path: str, text: str) -> list[tuple[int, str]]:
    """Check each line's fields and the score order; returns (line number, image path) of readable lines."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    rows: list[tuple[int, str]] = []
    previous: tuple[int, float] | None = None
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r")
        if not line.strip():
            collector.warning("mining.blank-line", path, "blank line", number)
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            rule = "mining.tabs" if len(fields) == 1 and len(line.split()) >= 2 else "mining.fields"
            detail = "separate path and score with a TAB, not spaces" if rule == "mining.tabs" else (
                f"{len(fields) - 1} TABs, expected exactly one between path and score")
            collector.error(rule, path, f"{detail}: {line!r}", number)
            continue
        image, score_text = fields
        if not image.strip():
            collector.error("mining.path", path, "empty image path", number)
            continue
        rows.append((number, image))
        score = _parse_float(score_text)
        if score is None:
            collector.error("mining.score", path, f"score {score_text!r} is not a finite float", number)
            continue
        if previous is not None and score > previous[1]:
            collector.error("mining.order", path, f"score {score_text} is higher than line {previous[0]}'s "
                            f"{previous[1]}: lines must be sorted highest first (the platform takes the first "
                            "top-k lines)", number)
        previous = (number, score)
    return rows


def _check_coverage(collector: _Collector, path: str, rows: list[tuple[int, str]],
                    candidates: Sequence[str] | None, root: str | None) -> None:
    """Each candidate exactly once, nothing else. Paths are compared as written (or re-rooted under ``root``,
    as a local run sees them), then by asset id (what the platform really uses)."""
    by_path = {alias: candidate for candidate in candidates or ()
               for alias in (candidate, map_container_path(candidate, "/out", root))}
    by_id = {asset_id(candidate): candidate for candidate in candidates or ()}
    first_line: dict[str, int] = {}
    for number, image in rows:
        key = by_path.get(image, image)
        if candidates is not None and image not in by_path:
            if asset_id(image) not in by_id:
                collector.error("mining.unknown-path", path, f"{image!r} is not a candidate", number)
                continue
            key = by_id[asset_id(image)]
            collector.warning("mining.path-differs", path, f"{image!r} is not the candidate path {key!r} "
                              "(same asset id, which is all the platform uses)", number)
        if key in first_line:
            collector.error("mining.duplicate", path, f"{image!r} again (first at line {first_line[key]})", number)
            continue
        first_line[key] = number
    for candidate in dict.fromkeys(candidates or ()):
        if candidate not in first_line:
            collector.error("mining.missing-candidate", path, f"candidate {candidate!r} has no line")


# --- inference: infer-result.json ----------------------------------------------------------------------------

def check_infer(collector: _Collector, path: str, *, candidates: Sequence[str] | None,
                class_names: Sequence[str] | None, protocol: tuple[int, ...]) -> None:
    """{"detection": {basename: {"boxes": [...]}}}; one bad box (float, extra key in box) fails the task."""
    text = _read_text(collector, path, "infer")
    if text is None:
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        collector.error("infer.json", path, f"not valid JSON: {error.msg} (column {error.colno})", error.lineno)
        return
    if not isinstance(data, dict):
        collector.error("infer.mapping", path, f"the document is {_type_name(data)}, not a JSON object")
        return
    detection = data.get("detection")
    if not isinstance(detection, dict):
        found = "missing" if detection is None else _type_name(detection)
        collector.error("infer.detection", path, f'"detection" must be an object keyed by image basename '
                        f"(found {found})")
        return
    boxes_key = "boxes" if protocol >= (1, 0, 0) else "annotations"
    for name, entry in detection.items():
        _check_infer_entry(collector, path, name, entry, boxes_key, class_names, protocol)
    if candidates is not None:
        _check_infer_coverage(collector, path, detection, candidates)


def _check_infer_entry(collector: _Collector, path: str, name: str, entry: Any, boxes_key: str,
                       class_names: Sequence[str] | None, protocol: tuple[int, ...]) -> None:
    keys = ("detection", name)
    if "/" in name or "\\" in name:
        collector.error("infer.entry-key", path, f"{_key_path(*keys)}: the key must be the image basename, "
                        "not a path")
    if not isinstance(entry, dict):
        collector.error("infer.entry", path, f"{_key_path(*keys)} is {_type_name(entry)}, not an object")
        return
    if boxes_key not in entry:
        other = "annotations" if boxes_key == "boxes" else "boxes"
        hint = f" (found {other!r}, the key of protocol {'< ' if other == 'annotations' else '>= '}1.0.0)" \
            if other in entry else ""
        collector.error("infer.boxes-key", path, f"{_key_path(*keys)} has no {boxes_key!r} list for protocol "
                        f"{_version_text(protocol)}{hint}")
        return
    boxes = entry[boxes_key]
    if not isinstance(boxes, list):
        collector.error("infer.entry", path, f"{_key_path(*keys, boxes_key)} is {_type_name(boxes)}, not a list")
        return
    for index, box in enumerate(boxes):
        _check_box(collector, path, keys + (boxes_key, index), box, class_names)


def _check_box(collector: _Collector, path: str, keys: tuple[Any, ...], item: Any,
               class_names: Sequence[str] | None) -> None:
    where = _key_path(*keys)
    if not isinstance(item, dict):
        collector.error("infer.box-item", path, f"{where} is {_type_name(item)}, not an object")
        return
    _check_box_rect(collector, path, where, item.get("box"))
    _check_box_score(collector, path, where, item)
    _check_box_class(collector, path, where, item.get("class_name"), class_names)
    for extra in sorted(set(item) - set(BOX_ENTRY_KEYS), key=str):
        collector.warning("infer.box-extra-key", path, f"{where}.{extra}: unexpected key (box, class_name, "
                          "score are read)")


def _check_box_rect(collector: _Collector, path: str, where: str, rect: Any) -> None:
    """Exactly integer x, y, w, h: a fractional value or an extra key fails the WHOLE task."""
    if not isinstance(rect, dict):
        found = "missing" if rect is None else _type_name(rect)
        collector.error("infer.box", path, f"{where}.box must be an object {{x, y, w, h}} (found {found})")
        return
    extra = sorted(set(rect) - set(BOX_KEYS))
    missing = [key for key in BOX_KEYS if key not in rect]
    if extra:
        collector.error("infer.box-keys", path, f"{where}.box has extra key(s) {', '.join(extra)}: any key "
                        "besides x, y, w, h fails the WHOLE task")
    if missing:
        collector.error("infer.box-keys", path, f"{where}.box lacks {', '.join(missing)}")
    for key in BOX_KEYS:
        if key in rect and not _is_int(rect[key]):
            hint = " (JSON 10.0 is a float: write 10)" if isinstance(rect[key], float) else ""
            collector.error("infer.box-int", path, f"{where}.box.{key} is {_type_name(rect[key])} "
                            f"{json.dumps(rect[key])}, must be an integer{hint}")
    for key in ("w", "h"):
        if _is_int(rect.get(key)) and rect[key] <= 0:
            collector.warning("infer.box-size", path, f"{where}.box.{key} is {rect[key]}: an empty box")


def _check_box_score(collector: _Collector, path: str, where: str, item: dict[str, Any]) -> None:
    if "score" not in item:
        collector.error("infer.score-missing", path, f"{where} has no score: the platform drops the box")
        return
    score = item["score"]
    if not _is_number(score) or not math.isfinite(score) or not 0.0 <= score <= 1.0:
        collector.error("infer.score", path, f"{where}.score must be a finite number in [0, 1], found "
                        f"{_type_name(score)} {score!r}")


def _check_box_class(collector: _Collector, path: str, where: str, name: Any,
                     class_names: Sequence[str] | None) -> None:
    if not isinstance(name, str) or not name:
        collector.error("infer.class-name", path, f"{where}.class_name must be a non-empty string, found {name!r}")
    elif class_names is not None and name not in class_names:
        collector.error("infer.class-unknown", path, f"{where}.class_name {name!r} is not one of the class "
                        f"names ({', '.join(class_names)})")


def _check_infer_coverage(collector: _Collector, path: str, detection: Mapping[str, Any],
                          candidates: Sequence[str]) -> None:
    """One entry per candidate image (an empty list when nothing was found), keyed by basename."""
    expected = dict.fromkeys(os.path.basename(candidate) for candidate in candidates)
    for name in expected:
        if name not in detection:
            collector.error("infer.missing-entry", path, f"candidate {name!r} has no entry "
                            "(write an empty list when nothing was found)")
    for name in detection:
        if name not in expected:
            collector.warning("infer.extra-entry", path, f"{name!r} is not a candidate image")


# --- the API ------------------------------------------------------------------------------------------------

def default_paths(out_dir: str) -> dict[str, str]:
    """Where protocol.md puts each file the platform reads."""
    return {"monitor": os.path.join(out_dir, "monitor.txt"),
            "training": os.path.join(out_dir, "models", "result.yaml"),
            "mining": os.path.join(out_dir, "result.tsv"),
            "infer": os.path.join(out_dir, "infer-result.json")}


def _check_tasks(tasks: Iterable[str]) -> tuple[str, ...]:
    kinds = tuple(dict.fromkeys(tasks))
    unknown = [kind for kind in kinds if kind not in TASKS]
    if unknown:
        raise UsageError(f"unknown task kind(s) {', '.join(unknown)}: use {', '.join(TASKS)}")
    if not kinds:
        raise UsageError("no task to check: give --task (or --env)")
    if "training" in kinds and len(kinds) > 1:
        raise UsageError("training runs alone; only mining and infer may be combined")
    return kinds


def verify_out(out_dir: str, tasks: Iterable[str], *, candidates: Sequence[str] | None = None,
               class_names: Sequence[str] | None = None, protocol_version: str = DEFAULT_PROTOCOL,
               expect_failure: bool = False, task_id: str | None = None, object_type: int = DETECTION,
               paths: Mapping[str, str] | None = None, root: str | None = None) -> Report:
    """Check the /out tree ``out_dir`` of a finished task against protocol.md section 3.

    ``candidates``: the candidate image paths (mining/infer coverage is checked only when given);
    ``class_names``: the allowed infer class names; ``paths``: host paths overriding :func:`default_paths`
    (keys monitor, training, mining, infer); ``root``: the folder a local run re-rooted '/' onto (result.tsv
    paths under it count as the candidate's container path). A failed task (``expect_failure``) must say so
    in monitor.txt; its result.yaml is checked when present and its mining/infer outputs are not checked.
    Raises :class:`UsageError` for a bad request (missing folder, unknown task, bad version).
    """
    kinds = _check_tasks(tasks)
    if not os.path.isdir(out_dir):
        raise UsageError(f"OUT_DIR {out_dir} is not a folder")
    protocol = parse_version(protocol_version)
    files = {**default_paths(out_dir), **(paths or {})}
    collector = _Collector(out_dir)
    check_monitor(collector, files["monitor"], task_id=task_id, expect_failure=expect_failure)
    checked = [files["monitor"]]
    if "training" in kinds:
        check_training(collector, files["training"], protocol=protocol, object_type=object_type,
                       expect_failure=expect_failure)
        checked.append(files["training"])
    if "mining" in kinds and not expect_failure:
        check_mining(collector, files["mining"], candidates=candidates, root=root)
        checked.append(files["mining"])
    if "infer" in kinds and not expect_failure:
        check_infer(collector, files["infer"], candidates=candidates, class_names=class_names, protocol=protocol)
        checked.append(files["infer"])
    return Report(out_dir, kinds, collector.finish(), [collector.rel(path) for path in checked])


def read_candidates(path: str) -> list[str]:
    """A candidate index: one image path per line; a TAB-separated second column is ignored."""
    try:
        with open(path, encoding="utf-8-sig") as stream:  # a byte-order mark is not part of the first path
            return [line.rstrip("\r\n").split("\t")[0] for line in stream if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"cannot read candidate index {path}: {error}") from None


def map_container_path(path: str, out_dir: str, root: str | None) -> str:
    """/out/... → under OUT_DIR; other absolute paths under ``root`` (standing in for '/') when given."""
    if path == "/out" or path.startswith("/out/"):
        return os.path.join(out_dir, path[len("/out/"):])
    if root and os.path.isabs(path):
        return os.path.join(root, path.lstrip("/"))
    return path


def _load_yaml_file(path: str, what: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise UsageError(f"cannot read {what} {path}: {' '.join(str(error).split())}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{what} {path} is not a YAML mapping")
    return data


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes")


def settings_from_env(env_file: str, out_dir: str, root: str | None = None) -> dict[str, Any]:
    """verify_out keyword arguments (plus ``tasks``) read from an env.yaml and its config file."""
    env = _load_yaml_file(env_file, "env.yaml")
    inputs, outputs = env.get("input") or {}, env.get("output") or {}
    local = lambda container_path: map_container_path(str(container_path), out_dir, root)  # noqa: E731
    settings: dict[str, Any] = {
        "tasks": [kind for kind in TASKS if _truthy(env.get(f"run_{kind}"))],
        "protocol_version": str(env.get("protocol_version") or UNVERSIONED_PROTOCOL),
        "paths": {kind: local(outputs[key]) for kind, key in (
            ("monitor", "monitor_file"), ("training", "training_result_file"),
            ("mining", "mining_result_file"), ("infer", "infer_result_file")) if outputs.get(key)},
    }
    if root:
        settings["root"] = root
    if env.get("task_id"):
        settings["task_id"] = str(env["task_id"])
    if inputs.get("candidate_index_file"):
        settings["candidates"] = read_candidates(local(inputs["candidate_index_file"]))
    if inputs.get("config_file"):
        config = _load_yaml_file(local(inputs["config_file"]), "config file")
        if isinstance(config.get("class_names"), list):
            settings["class_names"] = [str(name) for name in config["class_names"]]
        if _is_int(config.get("object_type")):
            settings["object_type"] = config["object_type"]
    return settings


# --- the command --------------------------------------------------------------------------------------------

def add_command(commands: argparse._SubParsersAction) -> None:
    """Add the `verify` subcommand to the `ymir-runner` parser."""
    parser = commands.add_parser(
        "verify", help="check an executor's /out tree against the YMIR protocol",
        description="Check monitor.txt, models/result.yaml, result.tsv and infer-result.json of a finished "
                    "task against the protocol. Exit 0: no errors; 1: errors; 2: usage error.")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the task's /out folder")
    parser.add_argument("--task", action="append", choices=TASKS, dest="tasks",
                        help="the task kind to check (repeat for mining + infer); default: from --env")
    parser.add_argument("--candidates", metavar="FILE", help="candidate index: each candidate exactly once")
    parser.add_argument("--class-names", nargs="+", metavar="NAME",
                        help="allowed infer class names: 'a,b,c' or 'a b c'")
    parser.add_argument("--env", metavar="ENV_YAML", help="read task kinds, task_id, protocol version, paths, "
                        "candidates and class names from the task's env.yaml (and its config file)")
    parser.add_argument("--root", metavar="DIR", help="a folder standing in for '/' for the /in/... paths of "
                        "--env (/out is always OUT_DIR)")
    parser.add_argument("--protocol-version", metavar="X.Y.Z", help=f"protocol to check against (default: "
                        f"env.yaml's, else {DEFAULT_PROTOCOL}); < 1.0.0 allows the legacy forms")
    parser.add_argument("--task-id", help="the expected task_id of monitor.txt (default: env.yaml's)")
    parser.add_argument("--failed", action="store_true",
                        help="the task is expected to have failed: monitor.txt must say state 4 with a code")
    parser.add_argument("--json", action="store_true", help="machine-readable report")
    parser.set_defaults(handler=_cmd_verify)


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """verify_out keyword arguments: env.yaml's values, overridden by explicit options."""
    if not os.path.isdir(args.out_dir):
        raise UsageError(f"OUT_DIR {args.out_dir} is not a folder")
    options: dict[str, Any] = {"tasks": [], "protocol_version": DEFAULT_PROTOCOL}
    if args.env:
        options.update(settings_from_env(args.env, args.out_dir, args.root))
    if args.tasks:
        options["tasks"] = args.tasks
    if args.candidates:
        options["candidates"] = read_candidates(args.candidates)
    if args.class_names:
        options["class_names"] = [name.strip() for item in args.class_names for name in item.split(",")
                                  if name.strip()]
    if args.protocol_version:
        options["protocol_version"] = args.protocol_version
    if args.task_id:
        options["task_id"] = args.task_id
    options["expect_failure"] = args.failed
    return options


def _cmd_verify(args: argparse.Namespace) -> int:
    try:
        options = _options(args)
        report = verify_out(args.out_dir, options.pop("tasks"), **options)
    except UsageError as error:
        print(f"ymir-runner verify: {error}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return 0 if report.ok else 1
