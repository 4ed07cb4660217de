""":func:`verify_out`: the checkers of monitor.txt, result.yaml, result.tsv and infer-result.json run on one
/out tree, as the task kinds ask."""

from __future__ import annotations

import os
from typing import Iterable, Mapping, Sequence

from .findings import Collector, Report, UsageError
from .infer import check_infer
from .mining import check_mining
from .monitor import check_monitor
from .result_yaml import DETECTION, check_training
from .seg_infer import check_seg_infer

TASKS = ("training", "mining", "infer")
DEFAULT_PROTOCOL = "1.1.0"
#: The object types whose infer-result.json is the COCO form (semantic 3, instance 4).
SEGMENTATION_TYPES = (3, 4)


def parse_version(text: str) -> tuple[int, ...]:
    """``"1.1.0"`` → (1, 1, 0); a protocol version that is not dotted integers is a usage error."""
    try:
        return tuple(int(part) for part in str(text).strip().split("."))
    except ValueError:
        raise UsageError(f"protocol version {text!r} is not like 1.1.0") from None


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

    ``object_type``: 2 detection (infer-result.json ``{"detection": ...}``, stages need ``mAP``), 3 semantic or 4
    instance segmentation (the COCO form, stages need ``mIoU`` / ``maskAP``);
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
    collector = Collector(out_dir)
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
        if object_type in SEGMENTATION_TYPES:  # the COCO form of segmentation.md section 4
            check_seg_infer(collector, files["infer"], candidates=candidates, class_names=class_names,
                            object_type=object_type, root=root)
        else:
            check_infer(collector, files["infer"], candidates=candidates, class_names=class_names,
                        protocol=protocol)
        checked.append(files["infer"])
    return Report(out_dir, kinds, collector.finish(), [collector.rel(path) for path in checked])
