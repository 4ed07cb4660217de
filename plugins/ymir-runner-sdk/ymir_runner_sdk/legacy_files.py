"""Reading what a ymir_exc-based executor writes: its monitor line, result.yaml in any SDK's form, result.tsv and
infer-result.json. Nothing here writes a protocol file: the supervisor republishes through the core's writers.

The SDK's writers are not atomic (``open(path, "w")`` then write: a reader can find the file empty or half
written), so every reader here answers None for a file it cannot read whole, and the supervisor keeps what it
read before. Forms read (per the SDK's lines, see ymir_runner/sdk.py for the table of writers):

- monitor.txt: ``task_id<TAB>timestamp<TAB>percent<TAB>state`` (1.x, 4 fields) or with ``<TAB>return_code``
  (2.x, 5 fields); further lines are ignored.
- result.yaml: ``model_stages`` (1.3.0 and 2.x; a top-level ``map`` (1.3.0) or ``mAP`` beside it is ignored, as
  the platform ignores it), or the legacy ``{model: [files], map: float}`` (1.1), read as one stage.
- result.tsv: ``image<TAB>score`` lines.
- infer-result.json: ``{"detection": {image: {"boxes" | "annotations": [{"box": {x, y, w, h}, "class_name",
  "score"}]}}}``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Mapping

import yaml

#: Stage keys that are no metric.
_STAGE_FIELDS = {"stage_name", "files", "timestamp"}
#: Stage metrics the platform keeps for detection (protocol.md section 3), and the counts.
STAGE_METRICS = ("mAP", "mAR")
STAGE_COUNTS = ("tp", "fp", "fn")


@dataclasses.dataclass(frozen=True)
class MonitorLine:
    """Line 1 of a monitor.txt: ``percent`` in [0, 1] as written (not clamped), ``state`` (2 running, 4 failed) and
    ``return_code`` (None: a 4-field line)."""

    percent: float
    state: int
    return_code: int | None


def read_text(path: str, limit: int = 64 << 20) -> str | None:
    """A file's text (UTF-8); None when it is missing, empty, not a regular file or larger than ``limit`` bytes."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(limit + 1)
    except (OSError, ValueError):
        return None
    if not data or len(data) > limit:
        return None
    return data.decode("utf-8", "replace")


def parse_monitor(text: str | None) -> MonitorLine | None:
    """Line 1 of monitor.txt text; None for an empty, torn or unparseable line."""
    if not text:
        return None
    fields = text.split("\n", 1)[0].strip().split("\t")
    if len(fields) < 4:
        return None
    try:
        percent, state = float(fields[2]), int(fields[3])
        code = int(fields[4]) if len(fields) > 4 and fields[4].strip() else None
    except ValueError:
        return None
    if not math.isfinite(percent):
        return None
    return MonitorLine(percent, state, code)


@dataclasses.dataclass(frozen=True)
class LegacyStage:
    """One model stage as the executor wrote it: ``files`` as listed (names relative to /out/models or its stage
    folder, or paths), ``metrics`` (mAP, mAR) and ``counts`` (tp, fp, fn) unchecked, and ``dropped``: the other
    keys, which have no place in a stage the platform reads."""

    name: str
    files: tuple[str, ...]
    metrics: Mapping[str, Any]
    counts: Mapping[str, Any]
    dropped: tuple[str, ...] = ()
    #: The stage's ``timestamp`` as written (None in the legacy form, which has none).
    timestamp: Any = None


@dataclasses.dataclass(frozen=True)
class LegacyResult:
    """result.yaml as the executor wrote it: its stages (``legacy``: the 1.1 ``{model, map}`` form, one stage with
    no name of its own), ``best_stage_name`` as it says, ``evaluate_config`` and ``attachments``."""

    stages: tuple[LegacyStage, ...]
    legacy: bool = False
    best_stage_name: str | None = None
    evaluate_config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    attachments: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class LegacyFormError(ValueError):
    """result.yaml read whole but in no form an SDK writes (the message says what is wrong)."""


def parse_result_yaml(text: str | None) -> LegacyResult | None:
    """result.yaml text in any SDK's form (see the module); None for a file that is empty or does not parse (the
    SDK writes it in place: read again later).

    Raises:
        LegacyFormError: YAML that parses but is no result.yaml of any SDK.
    """
    if not text or not text.strip():
        return None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(document, dict):
        raise LegacyFormError(f"result.yaml holds a {type(document).__name__}, not a mapping")
    config = document.get("evaluate_config") or {}
    attachments = document.get("attachments") or {}
    if "model" in document and "model_stages" not in document:
        files = document["model"]
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, list):
            raise LegacyFormError(f"result.yaml 'model' is {files!r}, not a list of files")
        stage = LegacyStage("", tuple(str(file) for file in files), {"mAP": document.get("map")}, {},
                            tuple(sorted(str(key) for key in document if key not in {"model", "map",
                                                                                      "evaluate_config",
                                                                                      "attachments"})))
        return LegacyResult((stage,), True, None, _mapping(config), _mapping(attachments))
    stages = document.get("model_stages")
    if not isinstance(stages, dict):
        raise LegacyFormError("result.yaml has neither 'model_stages' (a mapping) nor the legacy 'model' list")
    parsed = []
    for name, entry in stages.items():
        if not isinstance(entry, dict):
            raise LegacyFormError(f"result.yaml stage {name!r} is not a mapping")
        files = entry.get("files") or []
        if isinstance(files, str):
            files = [files]
        metrics = {key: entry[key] for key in STAGE_METRICS if key in entry}
        counts = {key: entry[key] for key in STAGE_COUNTS if key in entry}
        dropped = tuple(sorted(str(key) for key in entry
                               if key not in _STAGE_FIELDS and key not in metrics and key not in counts))
        parsed.append(LegacyStage(str(name), tuple(str(file) for file in files), metrics, counts, dropped,
                                  entry.get("timestamp")))
    best = document.get("best_stage_name")
    return LegacyResult(tuple(parsed), False, str(best) if best is not None else None, _mapping(config),
                        _mapping(attachments))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_mining(text: str | None) -> list[tuple[str, str]] | None:
    """result.tsv text: ``(image, score text)`` per non-blank line (the score unchecked; a line without a TAB gives
    an empty score); None for an empty file."""
    if not text or not text.strip():
        return None
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        image, _, score = line.partition("\t")
        rows.append((image.strip(), score.strip()))
    return rows


def parse_infer(text: str | None) -> dict[str, list[Any]] | None:
    """infer-result.json text: image key -> its list of box entries (``boxes``, else ``annotations``), unchecked;
    None for an empty or torn file.

    Raises:
        LegacyFormError: JSON that is no detection result.
    """
    if not text or not text.strip():
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    detection = document.get("detection") if isinstance(document, dict) else None
    if not isinstance(detection, dict):
        raise LegacyFormError("infer-result.json has no 'detection' mapping (only detection results are read)")
    images = {}
    for image, entry in detection.items():
        boxes = entry.get("boxes", entry.get("annotations")) if isinstance(entry, dict) else None
        images[os.path.basename(str(image))] = boxes if isinstance(boxes, list) else []
    return images
