"""`ymir-runner verify`: every rule fails on a hand-broken /out tree, valid trees pass, and the trees the
project's own writers produce pass the independent checker.

Broken trees are literal text written here, never produced by the project's writers: the checker exists to
catch those writers' bugs.
"""

from __future__ import annotations

import ast
import json
import os
from typing import Any, Sequence

import pytest
import toy_plugin
import yaml

import ymir_runner.verify
from ymir_runner.cli import main
from ymir_runner.verify import FINDINGS_PER_RULE, Finding, verify_out

CANDIDATES = ["/in/assets/aa/img1.jpg", "/in/assets/bb/img2.png", "/in/assets/cc/img3.jpg"]
CLASS_NAMES = ["cat", "dog"]

MONITOR = "t01\t1700000000.123\t1.0000\t2\t0\nfree text on later lines\n"
FAILED_MONITOR = "t01\t1700000000.123\t0.4213\t4\t300201\n"
RESULT_YAML = """\
best_stage_name: epoch_2
model_stages:
  epoch_1:
    stage_name: epoch_1
    files: [model.pt]
    timestamp: 1700000000
    mAP: 0.5
  epoch_2:
    stage_name: epoch_2
    files: [model.pt, model.onnx, shared.json]
    timestamp: 1700000100
    mAP: 0.61
    mAR: 0.7
    tp: 10
    fp: 2
    fn: 3
attachments: {images: [pr_curve.png]}
evaluate_config: {iou_thr: 0.5, conf_thr: 0.005}
"""
MODEL_FILES = {"models/epoch_1/model.pt": "w1", "models/epoch_2/model.pt": "w2", "models/epoch_2/model.onnx": "o",
               "models/shared.json": "{}", "models/attachments/images/pr_curve.png": "png"}
LEGACY_RESULT_YAML = "model: [epoch_1/model.pt]\nmap: 0.5\n"
#: models/result.yaml as every image built on ymir-exc SDK 1.3.0 writes it (write_model_stage: yaml.safe_dump of
#: best_stage_name, the best stage's mAP again as a top-level `map`, model_stages), for RESULT_YAML's model files.
SDK_1_3_0_RESULT_YAML = """\
best_stage_name: epoch_2
map: 0.61
model_stages:
  epoch_1:
    files:
    - model.pt
    mAP: 0.5
    stage_name: epoch_1
    timestamp: 1700000000
  epoch_2:
    files:
    - model.pt
    - model.onnx
    - shared.json
    mAP: 0.61
    stage_name: epoch_2
    timestamp: 1700000100
attachments:
  images:
  - pr_curve.png
"""
RESULT_TSV = "/in/assets/bb/img2.png\t0.9\n/in/assets/aa/img1.jpg\t0.5\n/in/assets/cc/img3.jpg\t0.5\n"
INFER_JSON = """\
{"detection": {
  "img1.jpg": {"boxes": [{"box": {"x": 10, "y": 20, "w": 30, "h": 40}, "class_name": "cat", "score": 0.91}]},
  "img2.png": {"boxes": [{"box": {"x": 0, "y": 0, "w": 5, "h": 6}, "class_name": "dog", "score": 0.5}]},
  "img3.jpg": {"boxes": []}}}
"""

BASES: dict[str, dict[str, str]] = {
    "training": {"monitor.txt": MONITOR, "models/result.yaml": RESULT_YAML, **MODEL_FILES},
    "mining-infer": {"monitor.txt": MONITOR, "result.tsv": RESULT_TSV, "infer-result.json": INFER_JSON},
}
TASKS = {"training": ["training"], "mining-infer": ["mining", "infer"]}


def write_tree(root: Any, files: dict[str, str]) -> str:
    """An /out folder holding ``files`` (relative path → text)."""
    out = os.path.join(str(root), "out")
    os.makedirs(out, exist_ok=True)
    for name, text in files.items():
        path = os.path.join(out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as stream:
            stream.write(text)
    return out


def edited(base: str, file: str, old: str | None, new: str | None) -> dict[str, str]:
    """The base tree with one edit: ``old`` → ``new`` in ``file``; old None replaces the whole file and new None
    deletes it."""
    files = dict(BASES[base])
    if new is None:
        del files[file]
    elif old is None:
        files[file] = new
    else:
        assert old in files[file], f"test bug: {old!r} not in {file}"
        files[file] = files[file].replace(old, new, 1)
    return files


def run_cli(capsys: Any, tmp_path: Any, out: str, tasks: Sequence[str], argv: Sequence[str] = ()) -> tuple[int, dict]:
    """``ymir-runner verify OUT --task ... --json`` with the test's candidates and class names."""
    candidates = tmp_path / "candidate-index.tsv"
    candidates.write_text("".join(f"{path}\tsource-{i}\n" for i, path in enumerate(CANDIDATES)))
    options = [f for task in tasks for f in ("--task", task)]
    if "training" not in tasks:
        options += ["--candidates", str(candidates), "--class-names", ",".join(CLASS_NAMES)]
    code = main(["verify", out, *options, "--json", *argv])
    return code, json.loads(capsys.readouterr().out)


def rules(report: dict, severity: str) -> set[str]:
    return {finding["rule"] for finding in report["findings"] if finding["severity"] == severity}


def monitor(line: str, rule: str, *argv: str) -> Any:
    return pytest.param("training", "monitor.txt", None, line, rule, argv, id=rule)


def result_yaml(old: str | None, new: str | None, rule: str, *argv: str) -> Any:
    return pytest.param("training", "models/result.yaml", old, new, rule, argv, id=rule)


def result_tsv(old: str | None, new: str | None, rule: str) -> Any:
    return pytest.param("mining-infer", "result.tsv", old, new, rule, (), id=rule)


def infer_json(old: str | None, new: str | None, rule: str, *argv: str) -> Any:
    return pytest.param("mining-infer", "infer-result.json", old, new, rule, argv, id=rule)


ERROR_CASES = [
    pytest.param("training", "monitor.txt", None, None, "monitor.missing", (), id="monitor.missing"),
    monitor("", "monitor.empty"),
    monitor("t01 1700000000.123 1.0 2 0\n", "monitor.tabs"),
    monitor("t01\t1700000000.123\t1.0\n", "monitor.fields"),
    monitor("\t1700000000.123\t1.0\t2\t0\n", "monitor.task-id"),
    monitor(MONITOR, "monitor.task-id", "--task-id", "t02"),
    monitor("t01\tnow\t1.0\t2\t0\n", "monitor.timestamp"),
    monitor("t01\t1700000000\t1,0\t2\t0\n", "monitor.percent"),
    monitor("t01\t1700000000\t1.5\t2\t0\n", "monitor.percent-range"),
    monitor("t01\t1700000000\t1.0\trunning\t0\n", "monitor.state"),
    monitor("t01\t1700000000\t1.0\t7\t0\n", "monitor.state"),
    monitor("t01\t1700000000\t1.0\t2\tok\n", "monitor.return-code"),
    monitor("t01\t1700000000\t1.0\t2\t300001\n", "monitor.code-without-failure"),
    monitor(FAILED_MONITOR, "monitor.failed"),
    monitor("t01\t1700000000\t1.0\t1\t0\n", "monitor.final-state"),
    monitor("t01\t1700000000\t0.99\t2\t0\n", "monitor.final-percent"),
    monitor(MONITOR, "monitor.expected-failure", "--failed"),
    monitor("t01\t1700000000\t0.3\t4\t0\n", "monitor.failure-code", "--failed"),
    monitor("t01\t1700000000\t0.3\t4\n", "monitor.failure-code", "--failed"),
    result_yaml(None, None, "result-yaml.missing"),
    result_yaml(None, "best_stage_name: [\n", "result-yaml.parse"),
    result_yaml("mAP: 0.61", "mAP: !!python/object/apply:numpy.float64 [0.61]", "result-yaml.python-tag"),
    result_yaml(None, "- epoch_1\n", "result-yaml.mapping"),
    result_yaml(None, RESULT_YAML + LEGACY_RESULT_YAML, "result-yaml.legacy-and-stages"),
    result_yaml(None, SDK_1_3_0_RESULT_YAML + LEGACY_RESULT_YAML, "result-yaml.legacy-and-stages"),
    result_yaml(None, "best_stage_name: a\nmodel_stages: {}\n", "result-yaml.model-stages"),
    result_yaml("best_stage_name: epoch_2", "best_stage_name: epoch_3", "result-yaml.best-stage"),
    result_yaml("best_stage_name: epoch_2\n", "", "result-yaml.best-stage"),
    result_yaml("  epoch_1:\n    stage_name", "  epoch_1: [model.pt]\n  x:\n    stage_name", "result-yaml.stage"),
    result_yaml("stage_name: epoch_1", "stage_name: epoch_one", "result-yaml.stage-name"),
    result_yaml("files: [model.pt]", "files: []", "result-yaml.files"),
    result_yaml("files: [model.pt]", "files: model.pt", "result-yaml.files"),
    result_yaml("files: [model.pt]", "files: [model.pt, gone.pt]", "result-yaml.file-missing"),
    result_yaml("timestamp: 1700000000\n", "timestamp: '1700000000.5'\n", "result-yaml.timestamp-int"),
    result_yaml("timestamp: 1700000000\n", "timestamp: soon\n", "result-yaml.timestamp-int"),
    result_yaml("timestamp: 1700000000\n", "timestamp: true\n", "result-yaml.timestamp-int"),
    result_yaml("    timestamp: 1700000000\n", "", "result-yaml.timestamp-int"),
    result_yaml("timestamp: 1700000000\n", "timestamp: 1700000000123\n", "result-yaml.timestamp-range"),
    result_yaml("    mAP: 0.5\n", "", "result-yaml.metric-missing"),
    result_yaml("mAP: 0.61", "mAP: 'high'", "result-yaml.metric-type"),
    result_yaml("mAP: 0.61", "mAP: true", "result-yaml.metric-type"),
    result_yaml("mAP: 0.61", "mAP: 61.0", "result-yaml.metric-range"),
    result_yaml("mAR: 0.7", "mAR: -0.1", "result-yaml.metric-range"),
    result_yaml("tp: 10", "tp: -1", "result-yaml.count"),
    result_yaml("tp: 10", "tp: 1.5", "result-yaml.count"),
    result_yaml("tp: 10", "tp: '1.5'", "result-yaml.count"),
    result_yaml("{images: [pr_curve.png]}", "[pr_curve.png]", "result-yaml.attachments"),
    result_yaml("{images: [pr_curve.png]}", "{images: pr_curve.png}", "result-yaml.attachments"),
    result_yaml("{images: [pr_curve.png]}", "{images: [roc.png]}", "result-yaml.attachment-missing"),
    result_yaml("iou_thr: 0.5", "iou_thr: high", "result-yaml.evaluate-config"),
    result_yaml("{iou_thr: 0.5, conf_thr: 0.005}", "[0.5]", "result-yaml.evaluate-config"),
    result_tsv(None, None, "mining.missing"),
    result_tsv("img2.png\t0.9", "img2.png 0.9", "mining.tabs"),
    result_tsv("/in/assets/bb/img2.png\t", "\t", "mining.path"),
    result_tsv("\t0.9", "\t0.1", "mining.order"),
    result_tsv("cc/img3.jpg", "aa/img1.jpg", "mining.duplicate"),
    result_tsv("/in/assets/cc/img3.jpg\t0.5\n", "", "mining.missing-candidate"),
    result_tsv("img3.jpg\t0.5\n", "img3.jpg\t0.5\n/in/assets/dd/img4.jpg\t0.1\n", "mining.unknown-path"),
    infer_json(None, None, "infer.missing"),
    infer_json(None, '{"detection": {', "infer.json"),
    infer_json(None, "[]", "infer.mapping"),
    infer_json('"detection"', '"classification"', "infer.detection"),
    infer_json('"img1.jpg"', '"aa\\\\img1.jpg"', "infer.entry-key"),
    infer_json('"img3.jpg": {"boxes": []}', '"img3.jpg": []', "infer.entry"),
    infer_json('"img3.jpg": {"boxes": []}', '"img3.jpg": {"boxes": {}}', "infer.entry"),
    infer_json('"img3.jpg": {"boxes": []}', '"img3.jpg": {"predictions": []}', "infer.boxes-key"),
    infer_json(',\n  "img3.jpg": {"boxes": []}', "", "infer.missing-entry"),
    infer_json('"img3.jpg": {"boxes": []}', '"img3.jpg": {"boxes": [0.5]}', "infer.box-item"),
    infer_json('"box": {"x": 10, "y": 20, "w": 30, "h": 40}', '"box": [10, 20, 30, 40]', "infer.box"),
    infer_json('"h": 40}', '"h": 40, "angle": 0}', "infer.box-keys"),
    infer_json('"w": 30, "h": 40', '"w": 30', "infer.box-keys"),
    infer_json('"h": 40}', '"h": 40, "rotate_angle": "flat"}', "infer.box"),
    infer_json('"w": 30', '"w": 30.5', "infer.box-int"),
    infer_json('"x": 10', '"x": 10.5', "infer.box-int"),
    infer_json('"x": 10', '"x": true', "infer.box-int"),
    infer_json('"x": 10', '"x": "10.0"', "infer.box-int"),
    infer_json('"x": 10', '"x": "ten"', "infer.box-int"),
    infer_json(', "score": 0.91', "", "infer.score-missing"),
    infer_json('"score": 0.91', '"score": 91', "infer.score"),
    infer_json('"score": 0.91', '"score": "high"', "infer.score"),
    infer_json('"score": 0.91', '"score": "91"', "infer.score"),
    infer_json('"score": 0.91', '"score": NaN', "infer.score"),
    infer_json('"class_name": "cat"', '"class_name": ""', "infer.class-name"),
    infer_json('"class_name": "cat", ', "", "infer.class-name"),
    infer_json('"class_name": "cat"', '"class_name": "bird"', "infer.class-unknown"),
]


@pytest.mark.parametrize("base, file, old, new, rule, argv", ERROR_CASES)
def test_rule_fails_on_a_broken_file(tmp_path, capsys, base, file, old, new, rule, argv):
    out = write_tree(tmp_path, edited(base, file, old, new))
    code, report = run_cli(capsys, tmp_path, out, TASKS[base], argv)
    assert rule in rules(report, "error"), report["findings"]
    assert code == 1


WARNING_CASES = [
    monitor("t01\t1700000000.123\t1.0\t2\n", "monitor.return-code-missing"),
    monitor("t01\t1700000000123\t1.0\t2\t0\n", "monitor.timestamp-ms"),
    monitor("t01\t1700000000.123\t1.0\t3\t0\n", "monitor.final-state"),
    monitor("t01\t1700000000\t0.3\t4\t300999\n", "monitor.unknown-code", "--failed"),
    monitor("t01\t1700000000\t1.0\t2\t0\tdone\tmore\n", "monitor.extra-fields"),
    result_yaml("mAR: 0.7", "mAR: 0.7\n    mAR: 0.8", "result-yaml.duplicate-key"),
    result_yaml("tp: 10", "TP: 10", "result-yaml.metric-case"),
    result_yaml("fn: 3", "fn: 3\n    note: best so far", "result-yaml.stage-key"),
    result_yaml("conf_thr: 0.005", "conf_thr: 1", "result-yaml.evaluate-config-int"),
    # what the platform's parser (pydantic v1) accepts and reads as meant is never an error
    result_yaml("fn: 3", "fn: 3\n    loss: .nan", "result-yaml.metric-finite"),
    result_yaml("best_stage_name: epoch_2\n", "best_stage_name: epoch_2\nmAP: 0.7\n", "result-yaml.top-level-metric"),
    result_yaml("best_stage_name: epoch_2\n", "best_stage_name: epoch_2\nmap: 0.5\n", "result-yaml.top-level-metric"),
    result_yaml("mAP: 0.61", "mAP: '0.61'", "result-yaml.coerced"),
    result_yaml("tp: 10", "tp: '10'", "result-yaml.coerced"),
    result_yaml("tp: 10", "tp: 10.0", "result-yaml.coerced"),
    result_yaml("timestamp: 1700000000\n", "timestamp: 1700000000.5\n", "result-yaml.coerced"),
    result_yaml("timestamp: 1700000000\n", "timestamp: '1700000000'\n", "result-yaml.coerced"),
    result_yaml("conf_thr: 0.005", "conf_thr: '0.005'", "result-yaml.coerced"),
    result_tsv("img2.png\t0.9\n", "img2.png\t0.9\n\n", "mining.blank-line"),
    result_tsv("/in/assets/bb/img2.png", "/data/img2.png", "mining.path-differs"),
    result_tsv("img2.png\t0.9", "img2.png\t0.9\textra", "mining.fields"),
    result_tsv("img2.png\t0.9", "img2.png", "mining.fields"),
    result_tsv("\t0.9", "\thigh", "mining.score"),
    result_tsv("\t0.9", "\tnan", "mining.score"),
    infer_json('"img3.jpg"', '"img9.jpg": {"boxes": []}, "img3.jpg"', "infer.extra-entry"),
    infer_json('"w": 5', '"w": 0', "infer.box-size"),
    infer_json('"score": 0.5}', '"score": 0.5, "id": 3}', "infer.box-extra-key"),
    infer_json('"img1.jpg"', '"aa/img1.jpg"', "infer.entry-key"),
    infer_json('"img3.jpg": {"boxes": []}', '"img3.jpg": {"annotations": []}', "infer.annotations-key"),
    infer_json('"w": 30', '"w": 30.0', "infer.box-int-coerced"),
    infer_json('"x": 10', '"x": "10"', "infer.box-int-coerced"),
    infer_json('"score": 0.91', '"score": "0.91"', "infer.score-coerced"),
]


@pytest.mark.parametrize("base, file, old, new, rule, argv", WARNING_CASES)
def test_warning_alone_keeps_exit_code_0(tmp_path, capsys, base, file, old, new, rule, argv):
    out = write_tree(tmp_path, edited(base, file, old, new))
    code, report = run_cli(capsys, tmp_path, out, TASKS[base], argv)
    assert rules(report, "warning") == {rule} and rules(report, "error") == set(), report["findings"]
    assert code == 0


@pytest.mark.parametrize("file, tasks, rule", [
    ("monitor.txt", ["training"], "monitor.encoding"),
    ("models/result.yaml", ["training"], "result-yaml.encoding"),
    ("result.tsv", ["mining"], "mining.encoding"),
    ("infer-result.json", ["infer"], "infer.encoding"),
])
def test_files_must_be_utf8(tmp_path, file, tasks, rule):
    out = write_tree(tmp_path, {**BASES["training"], **BASES["mining-infer"]})
    (tmp_path / "out" / file).write_bytes(b"\xff\xfe\x00bad")
    assert verify_out(out, tasks, candidates=CANDIDATES).rules("error") == {rule}


def test_empty_result_tsv_without_candidates_is_a_warning(tmp_path):
    out = write_tree(tmp_path, {"monitor.txt": MONITOR, "result.tsv": ""})
    assert verify_out(out, ["mining"]).rules() == {"mining.empty"}
    assert verify_out(out, ["mining"], candidates=CANDIDATES).rules("error") == {"mining.missing-candidate"}


def stages_yaml(names: Sequence[str]) -> str:
    stages = {name: {"stage_name": name, "files": ["model.pt"], "timestamp": 1700000000, "mAP": 0.5}
              for name in names}
    return yaml.safe_dump({"best_stage_name": names[0], "model_stages": stages})


@pytest.mark.parametrize("names, extra, rule", [
    ([f"epoch_{i}" for i in range(12)], {}, "result-yaml.stage-count"),
    (["epoch-1"], {}, "result-yaml.stage-identifier"),
    (["epoch_1"], {"models/epoch_1/last.pt": "x"}, "result-yaml.unlisted"),
    (["epoch_1"], {"models/stray.bin": "x"}, "result-yaml.unlisted"),
])
def test_stage_layout_warnings(tmp_path, names, extra, rule):
    files = {"monitor.txt": MONITOR, "models/result.yaml": stages_yaml(names), "models/ymir-info.yaml": "a: 1\n",
             **{f"models/{name}/model.pt": "w" for name in names}, **extra}
    report = verify_out(write_tree(tmp_path, files), ["training"])
    assert report.ok and report.rules() == {rule}, report.findings


# --- valid trees ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("base, tasks", [
    ("training", ["training"]),
    ("mining-infer", ["mining", "infer"]),
    ("mining-infer", ["mining"]),
    ("mining-infer", ["infer"]),
])
def test_valid_trees_pass_without_findings(tmp_path, capsys, base, tasks):
    out = write_tree(tmp_path, BASES[base])
    code, report = run_cli(capsys, tmp_path, out, tasks, ["--task-id", "t01"])
    assert (code, report["findings"], report["ok"]) == (0, [], True)


def test_text_report_lines_and_summary(tmp_path, capsys):
    files = edited("mining-infer", "result.tsv", "\t0.5\n/in/assets/cc", "\t0.95\n/in/assets/cc")
    files["monitor.txt"] = "t01 1700000000 1.0 2 0\n"
    out = write_tree(tmp_path, files)
    code = main(["verify", out, "--task", "mining", "--class-names", "cat", "dog"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 1
    assert lines[0].startswith("ERROR monitor.tabs monitor.txt:1: fields must be separated by TABs")
    assert lines[1].startswith("ERROR mining.order result.tsv:2: score 0.95 is higher than line 1's 0.9")
    assert lines[-1].startswith("FAILED: 2 errors, 0 warnings in ")


def test_the_result_yaml_of_sdk_1_3_0_images_passes(tmp_path, capsys):
    """The platform's legacy branch keys on `model` alone: SDK 1.3.0's top-level `map` beside model_stages is
    ignored and the stages are read, so verify passes it clean (it is the best stage's mAP, repeated)."""
    out = write_tree(tmp_path, edited("training", "models/result.yaml", None, SDK_1_3_0_RESULT_YAML))
    code, report = run_cli(capsys, tmp_path, out, ["training"])
    assert (code, report["findings"]) == (0, [])


def test_a_stray_top_level_metric_is_a_warning_that_names_the_model_figure(tmp_path, capsys):
    files = edited("training", "models/result.yaml", None, SDK_1_3_0_RESULT_YAML.replace("map: 0.61", "map: 0.9"))
    code = main(["verify", write_tree(tmp_path, files), "--task", "training"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines == ["WARNING result-yaml.top-level-metric models/result.yaml:2: top-level map: 0.9 is ignored by "
                     "the platform, which reads model_stages (only a top-level `model` selects the legacy form): the "
                     "model's figure is the best stage's mAP (0.61)", lines[-1]]
    assert lines[-1].startswith("OK: 0 errors, 1 warning in ")


def test_model_beside_model_stages_is_an_error(tmp_path, capsys):
    files = edited("training", "models/result.yaml", None, "model: [model.pt]\n" + SDK_1_3_0_RESULT_YAML)
    code, report = run_cli(capsys, tmp_path, write_tree(tmp_path, files), ["training"])
    assert code == 1 and rules(report, "error") == {"result-yaml.legacy-and-stages"}
    finding = report["findings"][0]
    assert (finding["line"], "ignores model_stages" in finding["message"]) == (1, True)


def test_the_legacy_form_is_a_warning_from_protocol_1_and_its_attachments_are_checked(tmp_path, capsys):
    """The platform reads {model, map} whatever the protocol (one stage, default_best_stage): a warning, not an
    error; attachments and evaluate_config, which it reads in that branch too, are checked."""
    files = {"monitor.txt": MONITOR, "models/model.pt": "w", "models/attachments/images/pr_curve.png": "png",
             "models/result.yaml": "model: [model.pt]\nmap: 0.5\nattachments: {images: [pr_curve.png]}\n"}
    code, report = run_cli(capsys, tmp_path, write_tree(tmp_path / "a", files), ["training"])
    assert (code, rules(report, "warning"), rules(report, "error")) == (0, {"result-yaml.legacy-form"}, set())
    assert "default_best_stage" in report["findings"][0]["message"]
    files["models/result.yaml"] = files["models/result.yaml"].replace("pr_curve", "roc")
    code, report = run_cli(capsys, tmp_path, write_tree(tmp_path / "b", files), ["training"])
    assert code == 1 and rules(report, "error") == {"result-yaml.attachment-missing"}


@pytest.mark.parametrize("line", [
    "t01\t1700000000\t1.0\t2\t0\tfinished\n",  # the platform's own writer: field 6 is the message
    "t01\t1700000000\t1.0\t2\t0\t\n",  # a trailing TAB: the platform strips line 1
])
def test_monitor_lines_the_platform_reads_pass(tmp_path, line):
    report = verify_out(write_tree(tmp_path, {"monitor.txt": line, "result.tsv": RESULT_TSV}), ["mining"])
    assert report.findings == []


def test_mining_and_infer_forms_the_platform_reads_pass(tmp_path):
    """A rotate_angle in a box is a field of the platform's Rect; a path key is read by its basename (a warning,
    and the candidate is covered)."""
    infer = INFER_JSON.replace('"h": 40}', '"h": 40, "rotate_angle": 0.5}')
    out = write_tree(tmp_path, {"monitor.txt": MONITOR, "result.tsv": RESULT_TSV, "infer-result.json": infer})
    assert verify_out(out, ["infer"], candidates=CANDIDATES, class_names=CLASS_NAMES).findings == []
    infer = INFER_JSON.replace('"img1.jpg"', '"aa/img1.jpg"')
    out = write_tree(tmp_path, {"monitor.txt": MONITOR, "infer-result.json": infer})
    report = verify_out(out, ["infer"], candidates=CANDIDATES, class_names=CLASS_NAMES)
    assert report.ok and report.rules() == {"infer.entry-key"}
    assert "basename 'img1.jpg'" in report.warnings[0].message


@pytest.mark.parametrize("old, new, line, fragment", [
    ("mAP: 0.61", "mAP: !!python/object/apply:numpy.float64 [0.61]", 12, "a numpy value?"),
    ("timestamp: 1700000100", "timestamp: 1700000100000", 11, "milliseconds?"),
    ("mAP: 0.61", "mAP: 61", 12, "a percentage?"),
    ("files: [model.pt]", "files: [model.pt, gone.pt]", 5, "model_stages.epoch_1.files[1] 'gone.pt'"),
])
def test_result_yaml_findings_point_at_the_line_and_say_why(tmp_path, old, new, line, fragment):
    out = write_tree(tmp_path, edited("training", "models/result.yaml", old, new))
    finding = verify_out(out, ["training"]).errors[0]
    assert (finding.path, finding.line) == ("models/result.yaml", line)
    assert fragment in finding.message


def test_infer_findings_name_the_key_path_and_the_consequence(tmp_path):
    out = write_tree(tmp_path, edited("mining-infer", "infer-result.json", '"w": 30, "h": 40}',
                                      '"w": 30.5, "h": 40.0, "angle": 0}'))
    report = verify_out(out, ["infer"])
    messages = {finding.rule: str(finding) for finding in report.findings}
    assert messages["infer.box-int"] == ('ERROR infer.box-int infer-result.json: detection["img1.jpg"].boxes[0].box.w'
                                         " is a float 30.5, must be an integer (a fractional value fails the WHOLE "
                                         "task)")
    assert messages["infer.box-int-coerced"] == ('WARNING infer.box-int-coerced infer-result.json: detection['
                                                 '"img1.jpg"].boxes[0].box.h is a float 40.0: the platform reads it '
                                                 'as 40; write 40')
    assert "fails the WHOLE task" in messages["infer.box-keys"]


def test_legacy_forms_pass_below_protocol_1(tmp_path, capsys):
    files = {**BASES["training"], "models/result.yaml": LEGACY_RESULT_YAML}
    files.pop("models/epoch_2/model.pt"), files.pop("models/epoch_2/model.onnx"), files.pop("models/shared.json")
    code, report = run_cli(capsys, tmp_path, write_tree(tmp_path / "a", files), ["training"],
                           ["--protocol-version", "0.0.1"])
    assert (code, report["findings"]) == (0, [])
    legacy_infer = INFER_JSON.replace('"boxes"', '"annotations"')
    files = edited("mining-infer", "infer-result.json", None, legacy_infer)
    code, report = run_cli(capsys, tmp_path, write_tree(tmp_path / "b", files), ["infer"],
                           ["--protocol-version", "0.1.0"])
    assert (code, report["findings"]) == (0, [])
    code, report = run_cli(capsys, tmp_path, write_tree(tmp_path / "c", BASES["mining-infer"]), ["infer"],
                           ["--protocol-version", "0.1.0"])
    assert code == 1 and rules(report, "error") == {"infer.boxes-key"}


def test_failed_task_passes_with_failed_flag_and_no_outputs(tmp_path, capsys):
    out = write_tree(tmp_path, {"monitor.txt": FAILED_MONITOR})
    assert run_cli(capsys, tmp_path, out, ["training"], ["--failed"])[0] == 0
    assert run_cli(capsys, tmp_path, out, ["mining", "infer"], ["--failed"])[0] == 0
    code, report = run_cli(capsys, tmp_path, out, ["training"])
    assert code == 1 and rules(report, "error") == {"monitor.failed", "result-yaml.missing"}


def test_a_failed_training_result_yaml_is_still_checked(tmp_path):
    files = edited("training", "models/result.yaml", "timestamp: 1700000000\n", "timestamp: '1.5'\n")
    files["monitor.txt"] = FAILED_MONITOR
    report = verify_out(write_tree(tmp_path, files), ["training"], expect_failure=True)
    assert report.rules() == {"result-yaml.timestamp-int"}


def test_class_names_accept_commas_or_spaces(tmp_path, capsys):
    out = write_tree(tmp_path, BASES["mining-infer"])
    for names in (["cat,dog"], ["cat", "dog"], ["cat,", "dog"]):
        assert main(["verify", out, "--task", "infer", "--class-names", *names]) == 0
    assert main(["verify", out, "--task", "infer", "--class-names", "cat"]) == 1
    assert "ERROR infer.class-unknown" in capsys.readouterr().out


def test_findings_are_capped_per_rule_and_file(tmp_path):
    tsv = "".join(f"/in/assets/{i}.jpg {i}\n" for i in range(FINDINGS_PER_RULE + 5))
    report = verify_out(write_tree(tmp_path, {"monitor.txt": MONITOR, "result.tsv": tsv}), ["mining"])
    assert len(report.errors) == FINDINGS_PER_RULE + 1
    assert report.errors[-1].message == "... and 5 more like the above"


def test_report_api(tmp_path):
    report = verify_out(write_tree(tmp_path, {"monitor.txt": "t01\t1\t1.0\t2\n"}), ["training"])
    assert not report.ok and [f.rule for f in report.errors] == ["result-yaml.missing"]
    assert [f.rule for f in report.warnings] == ["monitor.return-code-missing"]
    finding = report.warnings[0]
    assert isinstance(finding, Finding) and (finding.severity, finding.path, finding.line) == ("warning",
                                                                                                "monitor.txt", 1)
    with pytest.raises(AttributeError):
        finding.rule = "x"  # frozen


# --- env.yaml ----------------------------------------------------------------------------------------------

def write_env(root: Any, *, kinds: Sequence[str], protocol_version: str | None = "1.1.0") -> str:
    env = {"task_id": "t01", "run_training": "training" in kinds, "run_mining": "mining" in kinds,
           "run_infer": "infer" in kinds,
           "input": {"root_dir": "/in", "config_file": "/in/config.yaml",
                     "candidate_index_file": "" if "training" in kinds else "/in/candidate-index.tsv"},
           "output": {"root_dir": "/out", "models_dir": "/out/models", "monitor_file": "/out/monitor.txt",
                      "training_result_file": "/out/models/result.yaml", "mining_result_file": "/out/result.tsv",
                      "infer_result_file": "/out/infer-result.json"}}
    if protocol_version:
        env["protocol_version"] = protocol_version
    os.makedirs(root / "in", exist_ok=True)
    (root / "in" / "env.yaml").write_text(yaml.safe_dump(env))
    (root / "in" / "config.yaml").write_text(yaml.safe_dump({"task_id": "t01", "class_names": CLASS_NAMES,
                                                             "object_type": 2}))
    (root / "in" / "candidate-index.tsv").write_text("".join(f"{path}\n" for path in CANDIDATES))
    return str(root / "in" / "env.yaml")


def test_env_supplies_tasks_task_id_candidates_and_class_names(tmp_path, capsys):
    env = write_env(tmp_path, kinds=["mining", "infer"])
    out = write_tree(tmp_path, BASES["mining-infer"])
    assert main(["verify", out, "--env", env, "--root", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("OK: 0 errors, 0 warnings")
    broken = edited("mining-infer", "infer-result.json", '"class_name": "cat"', '"class_name": "bird"')
    broken["monitor.txt"] = MONITOR.replace("t01", "t99")
    broken["result.tsv"] = RESULT_TSV.replace("/in/assets/cc/img3.jpg\t0.5\n", "")
    out = write_tree(tmp_path, broken)
    code, report = run_cli(capsys, tmp_path, out, [], ["--env", env, "--root", str(tmp_path)])
    assert code == 1
    assert rules(report, "error") == {"monitor.task-id", "infer.class-unknown", "mining.missing-candidate"}
    assert report["tasks"] == ["mining", "infer"]


def test_env_without_protocol_version_is_legacy(tmp_path, capsys):
    env = write_env(tmp_path, kinds=["infer"], protocol_version=None)
    out = write_tree(tmp_path, BASES["mining-infer"])
    code, report = run_cli(capsys, tmp_path, out, [], ["--env", env, "--root", str(tmp_path)])
    assert code == 1 and rules(report, "error") == {"infer.boxes-key"}  # 0.0.1 reads "annotations"
    assert main(["verify", out, "--env", env, "--root", str(tmp_path), "--protocol-version", "1.1.0"]) == 0


# --- usage errors --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["verify", "{tmp}/nowhere", "--task", "training"],
    ["verify", "{out}"],
    ["verify", "{out}", "--task", "training", "--task", "mining"],
    ["verify", "{out}", "--task", "infer", "--protocol-version", "one"],
    ["verify", "{out}", "--task", "infer", "--candidates", "{tmp}/missing.tsv"],
    ["verify", "{out}", "--env", "{tmp}/missing-env.yaml"],
])
def test_usage_errors_exit_2(tmp_path, capsys, argv):
    out = write_tree(tmp_path, BASES["mining-infer"])
    assert main([arg.format(tmp=tmp_path, out=out) for arg in argv]) == 2
    assert capsys.readouterr().err.startswith("ymir-runner verify: ")


def test_missing_out_dir_argument_exits_2(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["verify", "--task", "training"])
    assert stop.value.code == 2


# --- independence and the project's own writers --------------------------------------------------------------

def test_verify_does_not_import_the_writers_it_checks():
    """Every module of the verify package imports nothing of the project outside the package (the writers of
    ymir_runner.protocol least of all), whether by name or by a relative import that climbs out of it."""
    package_dir = os.path.dirname(ymir_runner.verify.__file__)
    imported: dict[str, set[str]] = {}
    for folder, _, files in os.walk(package_dir):
        relative = os.path.relpath(folder, package_dir)
        package = ["ymir_runner", "verify"] + ([] if relative == "." else relative.split(os.sep))
        for name in sorted(file for file in files if file.endswith(".py")):
            path = os.path.join(folder, name)
            names: set[str] = set()
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.Import):
                    names |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom):  # relative imports resolved: `from .. import x` is ymir_runner.x
                    base = package[:len(package) + 1 - node.level] if node.level else []
                    module = ".".join(base + ([node.module] if node.module else []))
                    names |= {module} | {f"{module}.{alias.name}" for alias in node.names}
            imported[os.path.relpath(path, package_dir)] = names
    assert len(imported) > 1 and "__init__.py" in imported, imported  # the package, every module of it
    outside = {module: sorted(name for name in names if "protocol" in name.split(".") or (
        name.split(".")[0] == "ymir_runner" and not (name + ".").startswith("ymir_runner.verify.")))
        for module, names in imported.items()}
    assert {module: names for module, names in outside.items() if names} == {}


@pytest.fixture
def registry(ymir_registry):
    ymir_registry.register(toy_plugin, "toy")
    return ymir_registry


def test_the_writers_training_output_passes(registry, ymir_task):
    outcome = ymir_task(config={"epochs": "3"}).run(registry)
    assert outcome.exit_code == 0, outcome.stderr
    report = verify_out(outcome.out_dir, ["training"], task_id="t-test")
    assert report.findings == []


def test_the_writers_mining_and_infer_output_passes(registry, ymir_task, capsys):
    tree = ymir_task(kinds=["mining", "infer"])
    outcome = tree.run(registry)
    assert outcome.exit_code == 0, outcome.stderr
    # result.tsv names the candidate index's container paths even when the run was re-rooted locally
    report = verify_out(outcome.out_dir, ["mining", "infer"], candidates=tree.images, class_names=tree.class_names,
                        task_id="t-test")
    assert report.findings == []
    assert main(["verify", outcome.out_dir, "--env", tree.env_file, "--root", tree.root]) == 0, capsys.readouterr()


def test_the_writers_failed_training_passes_as_a_failure(registry, ymir_task):
    outcome = ymir_task(config={"fail_with": "nan"}).run(registry)
    assert outcome.exit_code != 0
    assert verify_out(outcome.out_dir, ["training"], task_id="t-test", expect_failure=True).findings == []
    assert verify_out(outcome.out_dir, ["training"]).rules("error") >= {"monitor.failed"}
