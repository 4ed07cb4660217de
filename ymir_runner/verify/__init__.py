"""``ymir-runner verify``: an independent checker of an executor's /out tree against the YMIR protocol.

It checks what the platform reads from /out (protocol.md, section 3): monitor.txt, the training
result.yaml, the mining result.tsv and infer-result.json, one module each (:mod:`.monitor`,
:mod:`.result_yaml`, :mod:`.mining`, :mod:`.infer`; the COCO infer-result.json of segmentation tasks, object_type 3
and 4, by :mod:`.seg_infer`, segmentation.md section 4); :mod:`.findings` holds the findings and their report,
:mod:`.api` runs the checkers on one tree (:func:`verify_out`), :mod:`.env` reads a task's env.yaml and
:mod:`.cli` is the subcommand. It reads the files with PyYAML's safe loader (within bounds: a file of
at most 4 MiB, 100 levels deep, 100,000 alias expansions) and json only, and no module of
this package imports anything of the project outside the package (COCO's RLE codec comes from faster-coco-eval),
least of all its writers
(``ymir_runner.protocol.results``, ``.monitor``, ``.atomic``): it must catch their bugs, and it must judge
images built with any other SDK, so it checks the contract, not this project's conventions.

Findings are errors (the platform fails the task, drops data or misreads it) or warnings (legal but
suspicious). It is never stricter than the platform: what the platform's own parser accepts and reads as meant
(a numeric string it converts, SDK 1.3.0's top-level ``map``, the legacy ``annotations`` key, a field it ignores)
is at most a warning. Rule ids, stable for scripts and tests (W = warning):

monitor.txt
    monitor.missing, monitor.empty, monitor.encoding, monitor.tabs, monitor.fields,
    monitor.return-code-missing (W), monitor.extra-fields (W), monitor.task-id, monitor.timestamp,
    monitor.timestamp-ms (W), monitor.percent, monitor.percent-range, monitor.state, monitor.return-code,
    monitor.failure-code, monitor.unknown-code (W), monitor.code-without-failure, monitor.failed,
    monitor.expected-failure, monitor.final-state (error for state 1, W for state 3), monitor.final-percent
models/result.yaml
    result-yaml.missing, result-yaml.encoding, result-yaml.bounds, result-yaml.parse, result-yaml.python-tag,
    result-yaml.duplicate-key (W), result-yaml.mapping, result-yaml.legacy-and-stages,
    result-yaml.legacy-form (W), result-yaml.top-level-metric (W), result-yaml.model-stages,
    result-yaml.best-stage, result-yaml.stage-count (W), result-yaml.stage-identifier (W), result-yaml.stage,
    result-yaml.stage-name, result-yaml.files, result-yaml.file-missing, result-yaml.timestamp-int,
    result-yaml.timestamp-range, result-yaml.metric-missing, result-yaml.metric-type, result-yaml.metric-range,
    result-yaml.metric-finite (W), result-yaml.metric-case (W), result-yaml.count, result-yaml.stage-key (W),
    result-yaml.coerced (W), result-yaml.attachments, result-yaml.attachment-missing,
    result-yaml.evaluate-config, result-yaml.evaluate-config-int (W), result-yaml.unlisted (W)
result.tsv
    mining.missing, mining.encoding, mining.empty (W), mining.blank-line (W), mining.tabs, mining.fields (W),
    mining.path, mining.score (W), mining.order, mining.duplicate, mining.unknown-path, mining.path-differs (W),
    mining.missing-candidate
infer-result.json
    infer.missing, infer.encoding, infer.json, infer.mapping, infer.detection,
    infer.entry-key (W for a '/' path), infer.entry, infer.boxes-key, infer.annotations-key (W),
    infer.missing-entry, infer.extra-entry (W), infer.box-item, infer.box, infer.box-keys, infer.box-int,
    infer.box-int-coerced (W), infer.box-size (W), infer.score-coerced (W), infer.score-missing, infer.score,
    infer.class-name, infer.class-unknown, infer.box-extra-key (W)
infer-result.json of object_type 3 / 4 (the COCO form; stages then need mIoU / maskAP instead of mAP)
    seg-infer.missing, seg-infer.encoding, seg-infer.json, seg-infer.mapping, seg-infer.keys, seg-infer.image,
    seg-infer.image-id-duplicate, seg-infer.file-name, seg-infer.image-size, seg-infer.category,
    seg-infer.category-unknown, seg-infer.category-duplicate (W), seg-infer.annotation, seg-infer.unknown-id,
    seg-infer.bbox, seg-infer.bbox-int (W), seg-infer.duplicate-box, seg-infer.area, seg-infer.iscrowd (W when
    missing), seg-infer.crowd (W), seg-infer.confidence-missing (W), seg-infer.confidence (W),
    seg-infer.segmentation, seg-infer.rle-counts, seg-infer.rle-size (W for a size other than the image's),
    seg-infer.rle-length, seg-infer.polygon, seg-infer.empty-mask (W), seg-infer.bbox-tight (W),
    seg-infer.area-pixels (W), seg-infer.semantic-repeat (W), seg-infer.missing-image, seg-infer.extra-image (W)

At most :data:`FINDINGS_PER_RULE` findings per rule and file are listed, then one "... more" line.

The face below is the package's API: :func:`verify_out`, what it returns (:class:`Report` of :class:`Finding`)
and raises (:class:`UsageError`), and the subcommand; the checkers are imported from their own modules.
"""

from .api import verify_out
from .cli import add_command
from .findings import FINDINGS_PER_RULE, Finding, Report, UsageError

__all__ = ["FINDINGS_PER_RULE", "Finding", "Report", "UsageError", "add_command", "verify_out"]
