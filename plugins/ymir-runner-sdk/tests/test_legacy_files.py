"""What the supervisor reads of an SDK's files, and of its command's stderr (no process is started here)."""

import pytest

from ymir_runner_sdk.legacy_files import (
    LegacyFormError,
    MonitorLine,
    parse_infer,
    parse_monitor,
    parse_result_yaml,
)
from ymir_runner_sdk.supervisor import last_exception_line, staging_path


@pytest.mark.parametrize(("text", "line"), [
    ("t-1\t1700000000.5\t0.25\t2\n", MonitorLine(0.25, 2, None)),  # 1.x: 4 fields
    ("t-1\t1700000000.5\t0.25\t4\t300103\n", MonitorLine(0.25, 4, 300103)),  # 2.x: 5 fields
    ("", None),  # truncated, not yet written
    ("t-1\t1700000000.5\t0.2", None),  # torn mid-line
    ("t-1\t1700000000.5\tnan\t2\n", None),
])
def test_monitor_lines(text, line):
    assert parse_monitor(text) == line


def test_result_yaml_forms():
    legacy = parse_result_yaml("model: [a.pt, b.onnx]\nmap: 0.4\nclass_aps: {}\n")
    assert legacy.legacy and legacy.stages[0].files == ("a.pt", "b.onnx")
    assert legacy.stages[0].metrics == {"mAP": 0.4} and legacy.stages[0].dropped == ("class_aps",)
    staged = parse_result_yaml("best_stage_name: e1\nmap: 0.3\nmodel_stages:\n  e1: {stage_name: e1, files: [w.pt], "
                               "mAP: 0.3, timestamp: 1, fitness: 0.9, tp: 3}\n")
    (stage,) = staged.stages
    assert not staged.legacy and staged.best_stage_name == "e1"
    assert (stage.metrics, stage.counts, stage.dropped) == ({"mAP": 0.3}, {"tp": 3}, ("fitness",))
    assert parse_result_yaml("") is None and parse_result_yaml("model_stages: {e1: [") is None  # torn: read later
    with pytest.raises(LegacyFormError, match="neither 'model_stages'"):
        parse_result_yaml("best_stage_name: e1\n")


def test_infer_result_keys_by_basename_and_both_box_keys():
    assert parse_infer('{"detection": {"/in/assets/a.png": {"annotations": [1]}, "b.png": {"boxes": []}}}') == {
        "a.png": [1], "b.png": []}
    assert parse_infer('{"detection": {"a') is None
    with pytest.raises(LegacyFormError):
        parse_infer('{"segmentation": {}}')


def test_the_last_exception_line_is_the_last_tracebacks():
    lines = ["Traceback (most recent call last):", '  File "train.py", line 3, in <module>',
             "RuntimeError: CUDA out of memory.", "Traceback (most recent call last):",
             '  File "start.py", line 9, in <module>', "    subprocess.run(cmd, check=True)",
             "subprocess.CalledProcessError: Command 'x' returned non-zero exit status 1.", "some later log line"]
    assert last_exception_line(lines).startswith("subprocess.CalledProcessError")
    assert last_exception_line(["no traceback", "the end", ""]) == "the end"
    assert last_exception_line([]) == ""


def test_staging_files_are_dot_named_beside_the_published_ones():
    assert staging_path("/out/models/result.yaml") == "/out/models/.result.yaml"
    assert staging_path("/out/monitor.txt") == "/out/.monitor.txt"
