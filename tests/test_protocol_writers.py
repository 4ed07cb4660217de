"""What the platform reads from /out: monitor.txt, result.yaml, result.tsv, infer-result.json; SDK interop."""

import json
import math
import os
import time

import numpy as np
import pytest
import yaml

from ymir_runner.errors import OutputError, ReturnCode
from ymir_runner.protocol import atomic
from ymir_runner.protocol import env as env_module
from ymir_runner.protocol.atomic import atomic_write_text
from ymir_runner.protocol.dataset import DatasetReader, SkipLog
from ymir_runner.protocol.env import ROOT_ENV_VAR, load_env
from ymir_runner.protocol.monitor import STATE_FAILED, STATE_RUNNING, Monitor, Progress
from ymir_runner.protocol.results import MAX_STAGES, Detection, InferResult, TrainingResult, write_mining_result
from ymir_runner.sdk import sdk_env
from ymir_runner.testing import TaskTree


def leftovers(folder):
    """Temp files an atomic writer might have left behind."""
    return [name for name in os.listdir(folder) if name.startswith(".tmp-")]


# --- atomic_write_text -------------------------------------------------------------------------------------

def test_atomic_write_replaces_content_and_leaves_no_temp(tmp_path):
    path = str(tmp_path / "sub" / "file.txt")
    atomic_write_text(path, "first\n")
    atomic_write_text(path, "second\n")
    with open(path, encoding="utf-8") as stream:
        assert stream.read() == "second\n"
    assert leftovers(tmp_path / "sub") == []
    assert os.stat(path).st_mode & 0o644 == 0o644  # readable by the platform's uid


def test_atomic_write_failing_midway_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "monitor.txt")
    atomic_write_text(path, "old\n")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", broken_fsync)
    with pytest.raises(OutputError, match=f"cannot write {path}: no space left on device"):
        atomic_write_text(path, "new content that never lands\n")
    with open(path, encoding="utf-8") as stream:
        assert stream.read() == "old\n"
    assert leftovers(tmp_path) == []


def test_atomic_write_interrupted_by_keyboard_interrupt(tmp_path, monkeypatch):
    path = str(tmp_path / "result.tsv")
    atomic_write_text(path, "a\t1.0\n")

    def interrupted_replace(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "b\t2.0\n")
    assert (tmp_path / "result.tsv").read_text() == "a\t1.0\n"
    assert leftovers(tmp_path) == []


# --- monitor.txt -------------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self, now=1_700_000_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def read_monitor(path):
    with open(path, encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    return lines[0].split("\t"), lines[1:]


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def monitor(tmp_path, clock):
    return Monitor(str(tmp_path / "monitor.txt"), "t0001", clock=clock)


def test_monitor_line_has_five_tab_separated_fields(monitor):
    monitor.update(0.42134)
    fields, rest = read_monitor(monitor.path)
    assert len(fields) == 5
    task_id, timestamp, percent, state, code = fields
    assert task_id == "t0001"
    assert float(timestamp) == pytest.approx(1_700_000_000.0)
    assert percent == "0.4213"  # 4 decimals
    assert (state, code) == ("2", "0")
    assert rest == []


def test_monitor_start_writes_zero(monitor):
    monitor.start()
    fields, _ = read_monitor(monitor.path)
    assert fields[2:] == ["0.0000", "2", "0"]


def test_monitor_is_monotonic_and_clamped(monitor, clock):
    monitor.update(0.5)
    clock.advance(2)
    monitor.update(0.3)  # lower: ignored
    assert read_monitor(monitor.path)[0][2] == "0.5000"
    assert monitor.percent == 0.5
    clock.advance(2)
    monitor.update(7.0)
    assert read_monitor(monitor.path)[0][2] == "1.0000"
    clock.advance(2)
    monitor.update(-3.0)
    assert read_monitor(monitor.path)[0][2] == "1.0000"


def test_monitor_negative_first_update_clamped_to_zero(monitor):
    monitor.update(-0.5, "warming up")
    fields, rest = read_monitor(monitor.path)
    assert fields[2] == "0.0000"
    assert rest == ["warming up"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_monitor_rejects_non_finite_progress(monitor, value):
    monitor.update(0.25)
    with pytest.raises(ValueError):
        monitor.update(value)
    with pytest.raises(ValueError):
        Progress(monitor).update(value)
    monitor.flush()
    assert read_monitor(monitor.path)[0][2] == "0.2500"


def test_monitor_throttled_to_about_one_write_per_second(monitor, clock):
    monitor.update(0.1)  # first write is immediate
    assert read_monitor(monitor.path)[0][2] == "0.1000"
    for step in range(1, 10):
        clock.advance(0.05)
        monitor.update(0.1 + step * 0.01)
    assert read_monitor(monitor.path)[0][2] == "0.1000"  # all within 0.45 s: nothing written
    clock.advance(0.6)
    monitor.update(0.3)
    fields, _ = read_monitor(monitor.path)
    assert fields[2] == "0.3000"
    assert float(fields[1]) == pytest.approx(clock.now, abs=0.002)


def test_monitor_counts_writes(tmp_path, clock):
    from ymir_runner.testing import monitor_writes

    with monitor_writes() as writes:
        monitor = Monitor(str(tmp_path / "monitor.txt"), "t", clock=clock)
        for step in range(1, 501):  # 5 s of updates every 10 ms
            clock.advance(0.01)
            monitor.update(step / 1000)
        assert 5 <= len(writes) <= 6
        monitor.flush()
        assert read_monitor(monitor.path)[0][2] == "0.5000"
        count = len(writes)
        monitor.flush()  # nothing pending: no write
        assert len(writes) == count


def test_monitor_flush_writes_pending_update(monitor, clock):
    monitor.update(0.2)
    clock.advance(0.1)
    monitor.update(0.6, "epoch 3")
    assert read_monitor(monitor.path)[0][2] == "0.2000"
    monitor.flush()
    fields, rest = read_monitor(monitor.path)
    assert fields[2] == "0.6000" and rest == ["epoch 3"]


def test_monitor_succeed(monitor, clock):
    monitor.update(0.4)
    clock.advance(0.01)
    monitor.succeed()
    fields, _ = read_monitor(monitor.path)
    assert fields[2:] == ["1.0000", str(STATE_RUNNING), "0"]
    assert STATE_RUNNING == 2


def test_monitor_fail_then_frozen(monitor, clock):
    monitor.update(0.4)
    clock.advance(0.01)
    monitor.fail(ReturnCode.OUT_OF_MEMORY)
    fields, _ = read_monitor(monitor.path)
    assert fields[2:] == ["0.4000", str(STATE_FAILED), "300103"]
    assert STATE_FAILED == 4
    clock.advance(5)
    monitor.update(0.9)
    Progress(monitor).update(1.0)
    monitor.flush()
    fields, _ = read_monitor(monitor.path)
    assert fields[2:] == ["0.4000", "4", "300103"]


def test_monitor_fail_without_code_uses_generic(monitor):
    monitor.fail(0)
    assert read_monitor(monitor.path)[0][3:] == ["4", "160004"]


def test_monitor_message_is_one_line(monitor):
    monitor.update(0.1, "line one\nline two")
    fields, rest = read_monitor(monitor.path)
    assert len(fields) == 5 and rest == ["line one line two"]


def test_monitor_timestamps_strictly_increase_even_with_a_stalled_clock(monitor, clock):
    stamps = []
    monitor.start()
    stamps.append(read_monitor(monitor.path)[0][1])
    monitor.update(0.5)
    monitor.flush()
    stamps.append(read_monitor(monitor.path)[0][1])
    monitor.succeed()
    stamps.append(read_monitor(monitor.path)[0][1])
    monitor.fail(ReturnCode.NAN)
    stamps.append(read_monitor(monitor.path)[0][1])
    assert all(len(stamp.split(".")[1]) == 3 for stamp in stamps)
    values = [float(stamp) for stamp in stamps]
    assert values == sorted(values) and len(set(stamps)) == len(stamps), stamps


def test_monitor_timestamp_with_a_clock_going_back(monitor, clock):
    monitor.start()
    first = read_monitor(monitor.path)[0][1]
    clock.advance(-0.5)
    monitor.succeed()
    second = read_monitor(monitor.path)[0][1]
    assert float(second) > float(first)


def test_monitor_uses_real_time_by_default(tmp_path):
    monitor = Monitor(str(tmp_path / "monitor.txt"), "t")
    before = time.time()
    monitor.start()
    assert abs(float(read_monitor(monitor.path)[0][1]) - before) < 5


def test_monitor_writes_atomically(monitor, clock, tmp_path):
    for step in range(20):
        clock.advance(1.5)
        monitor.update(step / 20)
    monitor.fail(ReturnCode.CONFIG)
    assert leftovers(tmp_path) == []
    assert os.listdir(tmp_path) == ["monitor.txt"]


def test_progress_spans_map_mining_then_infer(monitor, clock):
    whole = Progress(monitor)
    mining, infer = whole.span(0.0, 0.5, "mining"), whole.span(0.5, 1.0, "infer")
    mining.update(0.5)
    assert monitor.percent == pytest.approx(0.25)
    clock.advance(2)
    mining.steps(10, 10, "images")
    assert monitor.percent == pytest.approx(0.5)
    assert read_monitor(monitor.path)[1] == ["mining: images"]
    clock.advance(2)
    infer.update(0.5)
    assert monitor.percent == pytest.approx(0.75)
    clock.advance(2)
    phase = infer.span(0.5, 1.0)  # nested: the second half of inference
    phase.update(0.5)
    assert monitor.percent == pytest.approx(0.875)
    assert phase.label == "infer"
    infer.done()
    assert read_monitor(monitor.path)[0][2] == "1.0000"


def test_progress_clamps_and_never_goes_back(monitor):
    part = Progress(monitor, 0.2, 0.4)
    part.update(2.0)
    assert monitor.percent == pytest.approx(0.4)
    part.update(0.1)
    assert monitor.percent == pytest.approx(0.4)
    part.steps(0, 0)  # no work at all counts as done
    assert monitor.percent == pytest.approx(0.4)


@pytest.mark.parametrize("start, end", [(-0.1, 0.5), (0.5, 1.1), (0.6, 0.4)])
def test_progress_span_outside_unit_interval(monitor, start, end):
    with pytest.raises(ValueError):
        Progress(monitor, start, end)


# --- result.yaml -------------------------------------------------------------------------------------------

@pytest.fixture
def models(tmp_path):
    return tmp_path / "models"


def training_result(models, **options):
    return TrainingResult(str(models), str(models / "result.yaml"), **options)


def save(result, name, metrics, files=("best.pt",), counts=None):
    folder = result.stage_dir(name)
    for file in files:
        with open(os.path.join(folder, file), "wb") as stream:
            stream.write(b"weights")
    return result.add_stage(name, list(files), metrics, counts)


def load_result(models):
    text = (models / "result.yaml").read_text(encoding="utf-8")
    assert "!!" not in text and "numpy" not in text and "python" not in text, text
    return yaml.safe_load(text)


def test_result_yaml_schema(models):
    result = training_result(models)
    before = int(time.time())
    save(result, "epoch_10", {"mAP": np.float32(0.5), "mAR": np.float64(0.6)}, files=("best.pt", "best.onnx"),
         counts={"TP": np.int64(10), "Fp": 2, "fn": 3.0})
    save(result, "epoch_20", {"mAP": np.float32(0.61), "mAR": 0.7})
    after = time.time()
    document = load_result(models)
    assert set(document) == {"best_stage_name", "model_stages"}
    assert document["best_stage_name"] == "epoch_20"
    assert document["best_stage_name"] in document["model_stages"]
    assert list(document["model_stages"]) == ["epoch_10", "epoch_20"]
    for key, stage in document["model_stages"].items():
        assert stage["stage_name"] == key
        assert isinstance(stage["files"], list) and stage["files"]
        assert type(stage["timestamp"]) is int
        assert before <= stage["timestamp"] <= after
        assert type(stage["mAP"]) is float and type(stage["mAR"]) is float
        assert 0.0 <= stage["mAP"] <= 1.0 and 0.0 <= stage["mAR"] <= 1.0
    first = document["model_stages"]["epoch_10"]
    assert first["files"] == ["best.pt", "best.onnx"]
    assert first["mAP"] == pytest.approx(0.5) and first["mAR"] == pytest.approx(0.6)
    assert {key: first[key] for key in ("tp", "fp", "fn")} == {"tp": 10, "fp": 2, "fn": 3}
    assert all(type(first[key]) is int for key in ("tp", "fp", "fn"))
    assert not {"TP", "Fp"} & set(first)
    assert document["model_stages"]["epoch_20"]["mAP"] == pytest.approx(0.61, abs=1e-6)


def test_result_file_may_live_in_models_dir(models):
    result = training_result(models)
    models.mkdir()
    (models / "shared.bin").write_bytes(b"x")
    result.stage_dir("epoch_1")
    result.add_stage("epoch_1", ["shared.bin"], {"mAP": 0.3})
    assert load_result(models)["model_stages"]["epoch_1"]["files"] == ["shared.bin"]


@pytest.mark.parametrize("metrics", [
    {"mAP": 1.5}, {"mAP": -0.01}, {"mAP": 61.0}, {"mAP": math.nan}, {"mAP": np.float32("nan")},
    {"mAP": math.inf}, {"mAP": 0.5, "mAR": 2}, {"mAP": "high"}, {"mAR": 0.5},
])
def test_bad_metrics_rejected_and_previous_file_untouched(models, metrics):
    result = training_result(models)
    save(result, "epoch_1", {"mAP": 0.4})
    before = (models / "result.yaml").read_bytes()
    folder = result.stage_dir("epoch_2")
    (open(os.path.join(folder, "best.pt"), "wb")).close()
    with pytest.raises(ValueError):
        result.add_stage("epoch_2", ["best.pt"], metrics)
    assert (models / "result.yaml").read_bytes() == before
    assert list(result.stages) == ["epoch_1"]


@pytest.mark.parametrize("counts", [{"tp": -1}, {"fp": 1.5}, {"fn": math.nan}])
def test_bad_counts_rejected(models, counts):
    result = training_result(models)
    folder = result.stage_dir("epoch_1")
    (open(os.path.join(folder, "best.pt"), "wb")).close()
    with pytest.raises(ValueError):
        result.add_stage("epoch_1", ["best.pt"], {"mAP": 0.5}, counts)
    assert not (models / "result.yaml").exists()


def test_listed_file_missing_rejected(models):
    result = training_result(models)
    save(result, "epoch_1", {"mAP": 0.4})
    before = (models / "result.yaml").read_bytes()
    result.stage_dir("epoch_2")
    with pytest.raises(ValueError, match="missing.pt"):
        result.add_stage("epoch_2", ["missing.pt"], {"mAP": 0.9})
    with pytest.raises(ValueError):
        result.add_stage("epoch_2", [], {"mAP": 0.9})
    assert (models / "result.yaml").read_bytes() == before


@pytest.mark.parametrize("name", ["epoch-1", "epoch 1", "", "../epoch", "epoch/1", "epoch_1\n", "attachments",
                                  "épоch"])
def test_invalid_stage_name_rejected(models, name):
    result = training_result(models)
    with pytest.raises(ValueError):
        result.stage_dir(name)
    with pytest.raises(ValueError):
        result.add_stage(name, ["best.pt"], {"mAP": 0.5})
    assert not (models / "result.yaml").exists()


def test_best_stage_by_main_metric(models):
    result = training_result(models)
    save(result, "epoch_1", {"mAP": 0.3, "mAR": 0.9})
    save(result, "epoch_2", {"mAP": 0.7, "mAR": 0.1})
    save(result, "epoch_3", {"mAP": 0.5, "mAR": 0.5})
    assert load_result(models)["best_stage_name"] == "epoch_2"
    save(result, "epoch_4", {"mAP": 0.7, "mAR": 0.2})  # a tie goes to the later stage
    assert load_result(models)["best_stage_name"] == "epoch_4"
    recall = training_result(models, main_metric="mAR")
    save(recall, "epoch_1", {"mAP": 0.3, "mAR": 0.9})
    save(recall, "epoch_2", {"mAP": 0.7, "mAR": 0.1})
    assert load_result(models)["best_stage_name"] == "epoch_1"


def test_at_most_eleven_stages_best_kept_and_dropped_folders_deleted(models):
    result = training_result(models)
    save(result, "epoch_1", {"mAP": 0.9})  # the best, and the oldest
    for epoch in range(2, 16):
        save(result, f"epoch_{epoch}", {"mAP": 0.1 + epoch / 100})
    document = load_result(models)
    names = list(document["model_stages"])
    assert MAX_STAGES == 11 and len(names) == 11
    assert document["best_stage_name"] == "epoch_1" and "epoch_1" in names
    assert names[1:] == [f"epoch_{epoch}" for epoch in range(6, 16)]  # the 10 latest
    for epoch in range(2, 6):
        assert not (models / f"epoch_{epoch}").exists()
    for name in names:
        assert (models / name / "best.pt").is_file()


def test_best_moves_and_old_best_can_be_dropped(models):
    result = training_result(models, max_stages=3)
    save(result, "e1", {"mAP": 0.9})
    save(result, "e2", {"mAP": 0.1})
    save(result, "e3", {"mAP": 0.95})  # new best
    save(result, "e4", {"mAP": 0.2})   # drops e1 (oldest, no longer best)
    document = load_result(models)
    assert list(document["model_stages"]) == ["e2", "e3", "e4"]
    assert document["best_stage_name"] == "e3"
    assert not (models / "e1").exists()


def test_legacy_protocol_writes_only_model_and_map(models):
    result = training_result(models, legacy=True)
    save(result, "epoch_1", {"mAP": np.float32(0.25)}, files=("a.pt", "a.onnx"))
    save(result, "epoch_2", {"mAP": 0.5}, files=("b.pt",))
    source = models / "pr.png"
    source.write_bytes(b"png")
    result.add_attachment("images", str(source))
    result.set_evaluate_config(iou_thr=0.5)
    document = load_result(models)
    assert set(document) == {"model", "map"}
    assert document["map"] == 0.5 and type(document["map"]) is float
    assert document["model"] == ["epoch_2/b.pt"]
    for file in document["model"]:
        assert (models / file).is_file()


def test_attachments_and_evaluate_config(models, tmp_path):
    result = training_result(models)
    curve = tmp_path / "pr_curve.png"
    curve.write_bytes(b"\x89PNG fake")
    result.add_attachment("images", str(curve))
    assert not (models / "result.yaml").exists()  # nothing to write before the first stage
    result.set_evaluate_config(iou_thr=np.float32(0.5), conf_thr="0.005")
    save(result, "epoch_1", {"mAP": 0.5})
    result.add_attachment("images", str(curve))  # listed once
    document = load_result(models)
    assert document["attachments"] == {"images": ["pr_curve.png"]}
    assert (models / "attachments" / "images" / "pr_curve.png").read_bytes() == b"\x89PNG fake"
    assert document["evaluate_config"] == {"iou_thr": 0.5, "conf_thr": 0.005}
    assert all(type(value) is float for value in document["evaluate_config"].values())


def test_the_best_stage_labels_the_threshold_its_counts_were_made_at(models):
    """A stage's conf_thr metric (its tp/fp/fn's score threshold) labels evaluate_config while it is the best."""
    result = training_result(models)
    result.set_evaluate_config(iou_thr=0.5)
    save(result, "epoch_1", {"mAP": 0.4, "conf_thr": 0.31}, counts={"tp": 1, "fp": 0, "fn": 1})
    assert load_result(models)["evaluate_config"] == {"iou_thr": 0.5, "conf_thr": 0.31}
    save(result, "epoch_2", {"mAP": 0.3, "conf_thr": 0.12}, counts={"tp": 1, "fp": 3, "fn": 1})
    assert load_result(models)["evaluate_config"]["conf_thr"] == 0.31  # epoch_1 is still the best
    save(result, "epoch_3", {"mAP": 0.6, "conf_thr": 0.27}, counts={"tp": 2, "fp": 0, "fn": 0})
    document = load_result(models)
    assert document["best_stage_name"] == "epoch_3" and document["evaluate_config"]["conf_thr"] == 0.27


def test_result_rewritten_atomically(models):
    result = training_result(models)
    for epoch in range(1, 4):
        save(result, f"epoch_{epoch}", {"mAP": epoch / 10})
    assert leftovers(models) == []


def test_to_yaml_without_stage_is_an_error(models):
    with pytest.raises(ValueError):
        training_result(models).to_yaml()


# --- result.tsv --------------------------------------------------------------------------------------------

def test_mining_result_sorted_descending_stable(tmp_path):
    path = tmp_path / "result.tsv"
    scores = [("/in/assets/aa/a.jpg", 0.2), ("/in/assets/bb/b.png", np.float32(0.9)), ("/in/assets/c.bmp", 0.5),
              ("/in/assets/d.jpg", 0.5), ("/in/assets/e.jpg", -3), ("/in/assets/f.jpg", 0.5)]
    assert write_mining_result(str(path), scores) == 6
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [line.split("\t") for line in lines]
    assert all(len(row) == 2 for row in rows)
    assert [row[0] for row in rows] == ["/in/assets/bb/b.png", "/in/assets/c.bmp", "/in/assets/d.jpg",
                                        "/in/assets/f.jpg", "/in/assets/aa/a.jpg", "/in/assets/e.jpg"]
    assert [float(row[1]) for row in rows] == pytest.approx([0.9, 0.5, 0.5, 0.5, 0.2, -3.0])
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float32("nan"), "x", None])
def test_mining_result_non_finite_writes_nothing(tmp_path, bad):
    path = tmp_path / "result.tsv"
    with pytest.raises(ValueError):
        write_mining_result(str(path), [("/in/assets/a.jpg", 0.5), ("/in/assets/b.jpg", bad)])
    assert not path.exists()
    path.write_text("previous\t1.0\n")
    with pytest.raises(ValueError):
        write_mining_result(str(path), [("/in/assets/b.jpg", bad)])
    assert path.read_text() == "previous\t1.0\n"


def test_mining_result_empty(tmp_path):
    path = tmp_path / "result.tsv"
    assert write_mining_result(str(path), []) == 0
    assert path.read_text() == ""


# --- infer-result.json -------------------------------------------------------------------------------------

CLASSES = ("cat", "dog")


def read_json(path):
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def test_infer_result_integer_clipped_boxes(tmp_path):
    path = str(tmp_path / "infer-result.json")
    result = InferResult(path, CLASSES)
    result.add("/in/assets/ab/abc.jpg", [
        Detection(10.4, 20.6, 40.2, 45.4, np.float32(0.91), 1),
        Detection(-5.0, -3.0, 20.0, 30.0, 0.5, 0),       # clipped at 0
        Detection(90.0, 40.0, 130.0, 70.0, 0.4, 0),      # clipped at the right/bottom edge
        Detection(120.0, 10.0, 150.0, 20.0, 0.9, 0),     # fully outside: dropped
        Detection(10.0, 10.0, 10.2, 20.0, 0.9, 0),       # empty after rounding: dropped
    ], width=100, height=50)
    assert result.write(["/in/assets/ab/abc.jpg", "/in/assets/cd/none.png"]) == 2
    document = read_json(path)
    assert set(document) == {"detection"}
    assert set(document["detection"]) == {"abc.jpg", "none.png"}
    boxes = document["detection"]["abc.jpg"]["boxes"]
    assert boxes == [
        {"box": {"x": 10, "y": 21, "w": 30, "h": 24}, "class_name": "dog", "score": pytest.approx(0.91)},
        {"box": {"x": 0, "y": 0, "w": 20, "h": 30}, "class_name": "cat", "score": 0.5},
        {"box": {"x": 90, "y": 40, "w": 10, "h": 10}, "class_name": "cat", "score": 0.4},
    ]
    for box in boxes:
        assert set(box) == {"box", "class_name", "score"}
        assert set(box["box"]) == {"x", "y", "w", "h"}
        assert all(type(value) is int for value in box["box"].values())
        assert box["class_name"] in CLASSES
        assert type(box["score"]) is float
    assert document["detection"]["none.png"] == {"boxes": []}
    assert leftovers(tmp_path) == []


def test_infer_result_one_entry_per_candidate(tmp_path):
    path = str(tmp_path / "infer-result.json")
    result = InferResult(path, CLASSES)
    candidates = [f"/in/assets/{index:02x}/{index:040x}.jpg" for index in range(5)]
    result.add(candidates[1], [Detection(0, 0, 5, 5, 0.5, 0)], 10, 10)
    result.add_empty(candidates[3])
    assert result.write(candidates) == 5
    entries = read_json(path)["detection"]
    assert sorted(entries) == sorted(os.path.basename(candidate) for candidate in candidates)
    assert [len(entries[os.path.basename(c)]["boxes"]) for c in candidates] == [0, 1, 0, 0, 0]


@pytest.mark.parametrize("detection", [
    Detection(0, 0, 5, 5, 1.5, 0), Detection(0, 0, 5, 5, -0.1, 0), Detection(0, 0, 5, 5, math.nan, 0),
    Detection(0, 0, 5, 5, 0.5, 2), Detection(0, 0, 5, 5, 0.5, -1),
])
def test_infer_result_bad_score_or_class_rejected(tmp_path, detection):
    result = InferResult(str(tmp_path / "infer-result.json"), CLASSES)
    with pytest.raises(ValueError):
        result.add("/in/assets/a.jpg", [detection], 10, 10)


def test_infer_result_legacy_uses_annotations_key(tmp_path):
    path = str(tmp_path / "infer-result.json")
    result = InferResult(path, CLASSES, legacy=True)
    result.add("/in/assets/a.jpg", [Detection(1, 2, 3, 4, 0.5, 0)], 10, 10)
    result.write(["/in/assets/a.jpg", "/in/assets/b.jpg"])
    document = read_json(path)["detection"]
    assert document["a.jpg"] == {"annotations": [{"box": {"x": 1, "y": 2, "w": 2, "h": 2}, "class_name": "cat",
                                                  "score": 0.5}]}
    assert document["b.jpg"] == {"annotations": []}


# --- ymir-exc SDK interop ----------------------------------------------------------------------------------

@pytest.fixture
def sdk():
    settings = pytest.importorskip("ymir_exc.settings")
    from ymir_exc import dataset_reader
    from ymir_exc import env as sdk_env_module
    return settings, sdk_env_module, dataset_reader


@pytest.mark.parametrize("via_variable", [False, True])
def test_sdk_env_sees_the_same_rerooted_task(tmp_path, monkeypatch, sdk, via_variable):
    settings, sdk_env_module, dataset_reader = sdk
    monkeypatch.delenv(ROOT_ENV_VAR, raising=False)
    tree = TaskTree(str(tmp_path / "tree"), kinds=("training",))
    if via_variable:
        monkeypatch.setenv(ROOT_ENV_VAR, tree.root)
        env = load_env("/in/env.yaml")
    else:
        env = load_env(tree.env_file, root=tree.root)
    previous = settings.DEFAULT_ENV_FILE_PATH
    with sdk_env(env) as path:
        assert settings.DEFAULT_ENV_FILE_PATH == path
        seen = sdk_env_module.get_current_env()
        assert seen.task_id == env.task_id == "t-test"
        assert seen.run_training is True and seen.run_mining is False
        assert seen.input.config_file == env.input.config_file == tree.local("/in/config.yaml")
        assert seen.output.monitor_file == env.output.monitor_file == tree.local("/out/monitor.txt")
        assert seen.output.models_dir == tree.local("/out/models")
        assert seen.input.val_index_file and seen.input.candidate_index_file == ""
        assert sdk_env_module.get_executor_config()["class_names"] == ["cat", "dog"]
        # the SDK reads the same training set as ymir-runner, with paths that exist in the local tree
        pairs = list(dataset_reader.item_paths(dataset_reader.DatasetType.TRAINING))
        reader = DatasetReader(env.input.training_index_file, annotations=None, skips=SkipLog(), name="training",
                               root=env.root)
        assert [image for image, _ in pairs] == reader.paths() == [tree.local(i) for i in tree.images[:2]]
        assert [annotation for _, annotation in pairs] == [tree.local(a) for a in tree.annotations[:2]]
        assert all(os.path.isfile(image) and os.path.isfile(annotation) for image, annotation in pairs)
        validation = list(dataset_reader.item_paths(dataset_reader.DatasetType.VALIDATION))
        assert [image for image, _ in validation] == [tree.local(i) for i in tree.images[2:]]
    assert settings.DEFAULT_ENV_FILE_PATH == previous
    assert not os.path.exists(path)  # the re-rooted copy was temporary


def test_sdk_env_without_root_points_at_the_env_file(tmp_path, monkeypatch, sdk):
    settings, sdk_env_module, _ = sdk
    monkeypatch.delenv(ROOT_ENV_VAR, raising=False)
    monkeypatch.setattr(env_module, "CONTAINER_OUT_DIR", str(tmp_path))  # as if /out were mounted
    env_file = tmp_path / "env.yaml"
    env_file.write_text(yaml.safe_dump({"task_id": "t-plain", "run_mining": True, "protocol_version": "1.1.0",
                                        "input": {"candidate_index_file": "/in/candidate-index.tsv"}}))
    env = load_env(str(env_file))
    previous = settings.DEFAULT_ENV_FILE_PATH
    with sdk_env(env) as path:
        assert path == str(env_file)
        seen = sdk_env_module.get_current_env()
        assert seen.task_id == "t-plain" and seen.run_mining is True
        assert seen.input.candidate_index_file == "/in/candidate-index.tsv"
    assert settings.DEFAULT_ENV_FILE_PATH == previous


def test_sdk_env_restored_after_an_error(tmp_path, monkeypatch, sdk):
    settings = sdk[0]
    monkeypatch.delenv(ROOT_ENV_VAR, raising=False)
    tree = TaskTree(str(tmp_path / "tree"), kinds=("mining",), images=1)
    env = load_env(tree.env_file, root=tree.root)
    previous = settings.DEFAULT_ENV_FILE_PATH
    with pytest.raises(RuntimeError):
        with sdk_env(env):
            assert settings.DEFAULT_ENV_FILE_PATH != previous
            raise RuntimeError("plugin failed")
    assert settings.DEFAULT_ENV_FILE_PATH == previous
