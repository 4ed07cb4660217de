"""models/result.yaml, the training result: model stages, their files and metrics, attachments and
evaluate_config, loaded with PyYAML's safe loader as the platform does, within bounds (rules ``result-yaml.*``)."""

from __future__ import annotations

import math
import os
import re
from typing import Any, Sequence

import yaml

from .findings import Collector
from .helpers import (
    MAX_ALIAS_NODES,
    MAX_YAML_BYTES,
    MAX_YAML_DEPTH,
    YAML_LOADER,
    YamlBoundsError,
    is_int,
    is_number,
    key_path,
    load_yaml,
    read_text,
    type_name,
    version_text,
)

MAX_STAGES = 11
INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1
#: Metrics that are ratios in [0, 1]; ``mAP`` is required for detection (object_type 2).
UNIT_METRICS = ("mAP", "mAR", "mIoU", "mAcc", "maskAP", "boxAP")
COUNT_METRICS = ("tp", "fp", "fn")
STAGE_FIELDS = ("stage_name", "files", "timestamp")
MISCASED_METRICS = {"TP": "tp", "FP": "fp", "FN": "fn", "map": "mAP", "MAP": "mAP", "mar": "mAR",
                    "MAR": "mAR", "Map": "mAP"}
STAGE_NAME = re.compile(r"[A-Za-z0-9_]+")
#: Metric names at the top level of a result.yaml with model_stages: the platform ignores them (its legacy branch
#: keys on ``model`` alone). SDK 1.3.0 writes ``map`` there, equal to the best stage's mAP.
TOP_LEVEL_METRICS = frozenset(("map", *UNIT_METRICS, *COUNT_METRICS, *MISCASED_METRICS))
#: The stage the platform makes of the legacy form {model: [...], map: x}.
LEGACY_STAGE = "default_best_stage"
#: A string pydantic v1's int field (the platform's ModelStageStorage) converts: int() of it succeeds.
INT_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")
#: Files in the models folder that are not model files and that the platform handles itself.
MODELS_DIR_EXTRAS = ("attachments", "ymir-info.yaml")
#: The object_type of detection.
DETECTION = 2
#: The main metric every stage must carry, by object_type: the best stage's is the model's headline figure.
MAIN_METRICS = {2: "mAP", 3: "mIoU", 4: "maskAP"}


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


class _LenientLoader(YAML_LOADER):
    """safe_load's rules, except that a Python tag loads as a placeholder string: after reporting the tag, the
    rest of the file can still be checked."""


_LenientLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: f"!!python/{suffix}")


def _load_yaml(collector: Collector, path: str, text: str) -> _YamlDoc | None:
    """safe_load, as the platform does: python tags (a numpy scalar dumped by yaml.dump) are refused. A document
    past the bounds of :func:`~.helpers.load_yaml` is one finding, and not read further."""
    try:
        data = load_yaml(text)
    except YamlBoundsError as error:
        collector.error("result-yaml.bounds", path, f"{error} (not checked further: verify reads a YAML file of "
                        f"at most {MAX_YAML_BYTES // 2 ** 20} MiB, {MAX_YAML_DEPTH} levels deep and {MAX_ALIAS_NODES} "
                        f"alias expansions)", error.line)
        return None
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
    node = yaml.compose(text, Loader=YAML_LOADER)
    lines: dict[tuple[Any, ...], int] = {}
    _node_lines(collector, path, node, (), lines)
    return _YamlDoc(path, data, lines)


def _node_lines(collector: Collector, path: str, node: Any, keys: tuple[Any, ...],
                lines: dict[tuple[Any, ...], int]) -> None:
    """Record the line of every key path; a duplicate key silently keeps the last value, so warn."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else repr(key_node.value)
            if key in seen:
                collector.warning("result-yaml.duplicate-key", path, f"{key_path(*keys, key)} appears twice: "
                                  "the last value silently wins", key_node.start_mark.line + 1)
            seen.add(key)
            lines[keys + (key,)] = key_node.start_mark.line + 1
            _node_lines(collector, path, value_node, keys + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            lines[keys + (index,)] = item.start_mark.line + 1
            _node_lines(collector, path, item, keys + (index,), lines)


def check_training(collector: Collector, path: str, *, protocol: tuple[int, ...], object_type: int,
                   expect_failure: bool) -> None:
    """result.yaml: parsed even when the container fails, so it must be valid at every moment."""
    text = read_text(collector, path, "result-yaml", required=not expect_failure, limit=MAX_YAML_BYTES)
    if text is None:
        return
    doc = _load_yaml(collector, path, text)
    if doc is None:
        return
    if not isinstance(doc.data, dict):
        collector.error("result-yaml.mapping", path, f"the document is {type_name(doc.data)}, not a mapping")
        return
    models_dir = os.path.dirname(path)
    if "model" in doc.data:  # the platform's legacy branch: {model: [files], map: x}, keyed on `model` alone
        if "model_stages" in doc.data:
            collector.error("result-yaml.legacy-and-stages", path, "legacy key model AND model_stages: the "
                            "platform reads the legacy form {model, map} and ignores model_stages; never write both",
                            doc.line("model"))
            return
        if protocol >= (1, 0, 0):
            collector.warning("result-yaml.legacy-form", path, "legacy form {model: [...], map: x}: the platform "
                              f"still reads it, as one stage {LEGACY_STAGE!r} stamped with the time it reads it; "
                              f"protocol {version_text(protocol)} writes model_stages", doc.line("model"))
        listed = _check_legacy(collector, doc, models_dir)
    else:
        listed = _check_stages(collector, doc, models_dir, object_type)
        _check_top_level_metrics(collector, doc)
    _check_attachments(collector, doc, models_dir)
    _check_evaluate_config(collector, doc)
    _check_unlisted(collector, models_dir, os.path.basename(path), listed)


def _check_legacy(collector: Collector, doc: _YamlDoc, models_dir: str) -> set[str]:
    """{model: [files], map: float}: files looked up as the platform packs them, in the folder of its one stage
    then in the models folder."""
    folders = [os.path.join(models_dir, LEGACY_STAGE), models_dir]
    listed = _check_files(collector, doc, ("model",), doc.data.get("model"), folders)
    _check_unit_metric(collector, doc, ("map",), doc.data.get("map"), required=True)
    return listed


def _check_stages(collector: Collector, doc: _YamlDoc, models_dir: str, object_type: int) -> set[str]:
    """model_stages and best_stage_name; returns the real paths of the listed files that exist."""
    stages = doc.data.get("model_stages")
    if not isinstance(stages, dict) or not stages:
        what = "empty" if isinstance(stages, dict) else "missing" if stages is None else type_name(stages)
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


def _check_top_level_metrics(collector: Collector, doc: _YamlDoc) -> None:
    """A metric beside model_stages is ignored: the model's figure is the best stage's. SDK 1.3.0's ``map`` (the
    best stage's mAP, repeated) is what every image built on it writes, and it is silent; any other is a warning."""
    stages, name = doc.data.get("model_stages"), doc.data.get("best_stage_name")
    best = stages.get(name) if isinstance(stages, dict) and isinstance(name, str) else None
    best_map = best.get("mAP") if isinstance(best, dict) else None
    for key, value in doc.data.items():
        if key not in TOP_LEVEL_METRICS or (key == "map" and is_number(value) and value == best_map):
            continue
        figure = f"the best stage's mAP ({best_map!r})" if best_map is not None else "the best stage's mAP"
        collector.warning("result-yaml.top-level-metric", doc.path, f"top-level {key}: {value!r} is ignored by "
                          f"the platform, which reads model_stages (only a top-level `model` selects the legacy "
                          f"form): the model's figure is {figure}", doc.line(key))


def _check_stage(collector: Collector, doc: _YamlDoc, models_dir: str, name: Any, stage: Any,
                 object_type: int) -> set[str]:
    keys = ("model_stages", name)
    if not isinstance(name, str) or not STAGE_NAME.fullmatch(name):
        collector.warning("result-yaml.stage-identifier", doc.path, f"stage name {name!r} should use only "
                          "letters, digits and '_'", doc.line(*keys))
    if not isinstance(stage, dict):
        collector.error("result-yaml.stage", doc.path, f"{key_path(*keys)} is {type_name(stage)}, "
                        "not a mapping", doc.line(*keys))
        return set()
    if stage.get("stage_name") != name:
        collector.error("result-yaml.stage-name", doc.path, f"{key_path(*keys, 'stage_name')} is "
                        f"{stage.get('stage_name')!r}, must equal its key {name!r}", doc.line(*keys, "stage_name"))
    folders = [os.path.join(models_dir, str(name)), models_dir]
    listed = _check_files(collector, doc, keys + ("files",), stage.get("files"), folders)
    _check_timestamp(collector, doc, keys, stage.get("timestamp"))
    _check_metrics(collector, doc, keys, stage, object_type)
    return listed


def _check_files(collector: Collector, doc: _YamlDoc, keys: tuple[Any, ...], files: Any,
                 folders: Sequence[str]) -> set[str]:
    """A non-empty list of names, each found in one of ``folders`` (a listed file that is missing fails)."""
    where = key_path(*keys)
    if not isinstance(files, list) or not files:
        found = "missing" if files is None else "empty" if isinstance(files, list) else type_name(files)
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


def _coerced_int(value: Any) -> int | None:
    """The integer the platform's parser (a pydantic v1 ``int`` field) makes of a float or a string that is not
    already one, else None: ``int()`` of it, so 1700000000.5 keeps its whole seconds and "10" is 10."""
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    if isinstance(value, str) and INT_TEXT.fullmatch(value):
        return int(value)
    return None


def _coerced_float(value: Any) -> float | None:
    """The float the platform's parser (a pydantic v1 ``float`` field, or ``float()``) makes of a string, else
    None."""
    if not isinstance(value, str):
        return None
    try:
        return float(value)
    except ValueError:
        return None


def _finite(number: float | None) -> bool:
    return number is not None and math.isfinite(number)


def _warn_coerced(collector: Collector, doc: _YamlDoc, keys: tuple[Any, ...], value: Any, number: Any,
                  write: str) -> None:
    collector.warning("result-yaml.coerced", doc.path, f"{key_path(*keys)} is {type_name(value)} {value!r}: the "
                      f"platform converts it to {number!r} and reads it; write {write}", doc.line(*keys))


def _check_timestamp(collector: Collector, doc: _YamlDoc, keys: tuple[Any, ...], value: Any) -> None:
    where = key_path(*keys, "timestamp")
    line = doc.line(*keys, "timestamp")
    coerced = None if is_int(value) else _coerced_int(value)
    if coerced is not None:
        if INT32_MIN <= coerced <= INT32_MAX:
            _warn_coerced(collector, doc, keys + ("timestamp",), value, coerced, "integer seconds")
        value = coerced
    if not is_int(value):
        found = "missing" if value is None else f"{type_name(value)} {value!r}"
        collector.error("result-yaml.timestamp-int", doc.path, f"{where} must be an integer (seconds), "
                        f"found {found}", line)
    elif not INT32_MIN <= value <= INT32_MAX:
        collector.error("result-yaml.timestamp-range", doc.path, f"{where} {value} overflows int32: "
                        "milliseconds? the platform needs integer SECONDS", line)


def _check_metrics(collector: Collector, doc: _YamlDoc, keys: tuple[Any, ...], stage: dict[Any, Any],
                   object_type: int) -> None:
    """The object type's main metric (mAP, mIoU, maskAP) and other ratios in [0, 1]; tp/fp/fn counts; anything else
    numeric must be finite."""
    main = MAIN_METRICS.get(object_type)
    if main is not None and main not in stage:
        kind = {2: "detection", 3: "semantic segmentation", 4: "instance segmentation"}[object_type]
        collector.error("result-yaml.metric-missing", doc.path, f"{key_path(*keys)} has no {main} "
                        f"(the {kind} main metric, object_type {object_type})", doc.line(*keys))
    for name, value in stage.items():
        if name in STAGE_FIELDS:
            continue
        if name in UNIT_METRICS:
            _check_unit_metric(collector, doc, keys + (name,), value)
        elif name in COUNT_METRICS:
            coerced = _coerced_int(value)
            if coerced is not None and (isinstance(value, str) or coerced == value):  # 1.5 would lose its half
                _warn_coerced(collector, doc, keys + (name,), value, coerced, "an integer")
                value = coerced
            if not is_int(value) or value < 0:
                collector.error("result-yaml.count", doc.path, f"{key_path(*keys, name)} must be an integer "
                                f">= 0, found {value!r}", doc.line(*keys, name))
        else:
            _check_other_stage_key(collector, doc, keys, name, value)


def _check_unit_metric(collector: Collector, doc: _YamlDoc, keys: tuple[Any, ...], value: Any,
                       required: bool = False) -> None:
    where, line = key_path(*keys), doc.line(*keys)
    coerced = _coerced_float(value)
    if _finite(coerced):
        _warn_coerced(collector, doc, keys, value, coerced, "a plain float")
        value = coerced
    if value is None and required:
        collector.error("result-yaml.metric-missing", doc.path, f"{where} is missing", line)
    elif not is_number(value):
        collector.error("result-yaml.metric-type", doc.path, f"{where} must be a plain float, found "
                        f"{type_name(value)} {value!r}", line)
    elif not 0.0 <= value <= 1.0:
        hint = " (a percentage?)" if math.isfinite(value) and 1.0 < value <= 100.0 else ""
        collector.error("result-yaml.metric-range", doc.path, f"{where} {value!r} is outside [0, 1]{hint}", line)


def _check_other_stage_key(collector: Collector, doc: _YamlDoc, keys: tuple[Any, ...], name: Any,
                           value: Any) -> None:
    where, line = key_path(*keys, name), doc.line(*keys, name)
    if name in MISCASED_METRICS:
        collector.warning("result-yaml.metric-case", doc.path, f"{where}: the platform reads "
                          f"{MISCASED_METRICS[name]!r}, not {name!r}", line)
    if is_number(value):
        if not math.isfinite(value):  # ignored by the platform's parser, but a sign of a broken evaluation
            collector.warning("result-yaml.metric-finite", doc.path, f"{where} is {value!r}: the platform "
                              "ignores this key, but a metric should be finite", line)
    elif name not in MISCASED_METRICS:
        collector.warning("result-yaml.stage-key", doc.path, f"{where} is {type_name(value)}, not a metric "
                          "number: the platform does not expect it", line)


def _check_attachments(collector: Collector, doc: _YamlDoc, models_dir: str) -> None:
    """attachments: {section: [names]} with files at models/attachments/<section>/<name>."""
    attachments = doc.data.get("attachments")
    if attachments is None:
        return
    if not isinstance(attachments, dict):
        collector.error("result-yaml.attachments", doc.path, f"attachments is {type_name(attachments)}, "
                        "not a mapping of section → file names", doc.line("attachments"))
        return
    for section, names in attachments.items():
        keys = ("attachments", section)
        if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
            collector.error("result-yaml.attachments", doc.path, f"{key_path(*keys)} must be a list of file "
                            f"names, found {names!r}", doc.line(*keys))
            continue
        for index, name in enumerate(names):
            if not os.path.isfile(os.path.join(models_dir, "attachments", str(section), name)):
                collector.error("result-yaml.attachment-missing", doc.path, f"{key_path(*keys, index)} "
                                f"{name!r} is not at attachments/{section}/{name}", doc.line(*keys, index))


def _check_evaluate_config(collector: Collector, doc: _YamlDoc) -> None:
    """evaluate_config: "values must be floats"; an int is tolerated with a warning."""
    config = doc.data.get("evaluate_config")
    if config is None:
        return
    if not isinstance(config, dict):
        collector.error("result-yaml.evaluate-config", doc.path, f"evaluate_config is {type_name(config)}, "
                        "not a mapping", doc.line("evaluate_config"))
        return
    for key, value in config.items():
        where, line = key_path("evaluate_config", key), doc.line("evaluate_config", key)
        if is_int(value):
            collector.warning("result-yaml.evaluate-config-int", doc.path, f"{where} is the integer {value}: "
                              "values must be floats", line)
        elif _finite(_coerced_float(value)):
            _warn_coerced(collector, doc, ("evaluate_config", key), value, _coerced_float(value), "a plain float")
        elif not isinstance(value, float) or not math.isfinite(value):
            collector.error("result-yaml.evaluate-config", doc.path, f"{where} must be a finite float, found "
                            f"{type_name(value)} {value!r}", line)


def _check_unlisted(collector: Collector, models_dir: str, result_name: str, listed: set[str]) -> None:
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
