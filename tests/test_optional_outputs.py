"""Optional outputs (tensorboard, pictures, exports, attachments, reports) never stop a task: a failure is warned
about once per kind, counted, and summed up in the task's final summary line (issue 23)."""

import glob
import logging
import os
import signal

import numpy as np
import pytest
import toy_plugin

import ymir_runner
from ymir_runner import OptionalOutputs, TaskTerminated
from ymir_runner.protocol import tensorboard as tensorboard_module
from ymir_runner.protocol.tensorboard import LazySummaryWriter


@pytest.fixture
def registry(ymir_registry):
    ymir_registry.register(toy_plugin, "toy")
    return ymir_registry


def warnings_of(caplog, text):
    return [record for record in caplog.records if record.levelno == logging.WARNING and text in record.getMessage()]


# --- the home: OptionalOutputs ----------------------------------------------------------------------------------

def test_a_failure_is_warned_about_once_per_kind_and_every_one_is_counted(caplog):
    caplog.set_level(logging.DEBUG, logger="ymir_runner")
    outputs = OptionalOutputs()
    for _ in range(3):
        with outputs.guard("tensorboard picture") as picture:
            raise ValueError("y1 must be greater than or equal to y0")
        assert not picture.ok and picture.reason == "ValueError: y1 must be greater than or equal to y0"
    with outputs.guard("ONNX export") as onnx:
        raise RuntimeError("an operator ONNX cannot express\nand a second line")
    assert onnx.reason == "RuntimeError: an operator ONNX cannot express and a second line"
    with outputs.guard("ONNX export") as later:
        pass
    assert later.ok and later.reason == ""
    (picture_warning,) = warnings_of(caplog, "tensorboard picture failed")
    assert "the task goes on without it: ValueError: y1 must be greater than or equal to y0" \
        in picture_warning.getMessage()
    assert picture_warning.exc_info is None  # the reason in one line; the traceback only at debug level
    (onnx_warning,) = warnings_of(caplog, "ONNX export failed")
    assert "RuntimeError: an operator ONNX cannot express and a second line" in onnx_warning.getMessage()
    tracebacks = [record for record in caplog.records if record.levelno == logging.DEBUG and record.exc_info]
    assert len(tracebacks) == 4
    assert outputs.total == 4
    assert outputs.report() == "optional outputs failed: 1 ONNX export, 3 tensorboard picture"


def test_nothing_failed_says_nothing():
    outputs = OptionalOutputs()
    with outputs.guard("tensorboard picture") as picture:
        pass
    assert picture.ok and outputs.report() == "" and outputs.total == 0


@pytest.mark.parametrize("stop", [TaskTerminated.for_signal(signal.SIGTERM), KeyboardInterrupt(), SystemExit(3)])
def test_a_stop_signal_still_stops_the_task(stop):
    outputs = OptionalOutputs()
    with pytest.raises(type(stop)):
        with outputs.guard("tensorboard picture"):
            raise stop
    assert outputs.total == 0


# --- tensorboard ------------------------------------------------------------------------------------------------

class _Writer:
    """A tensorboardX writer double: add_image refuses its data, everything else is recorded."""

    def __init__(self, logdir):
        self.calls = []

    def add_image(self, tag, image, step, dataformats="CHW"):
        raise AssertionError("size of input tensor and input format are different")

    def add_scalar(self, tag, value, step):
        self.calls.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        pass

    @property
    def file_writer(self):
        return self


def test_tensorboard_data_it_refuses_fails_that_call_alone(tmp_path, caplog, monkeypatch):
    import tensorboardX

    monkeypatch.setattr(tensorboardX, "SummaryWriter", _Writer)
    outputs = OptionalOutputs()
    writer = LazySummaryWriter(str(tmp_path / "tensorboard"))
    writer.report_to(outputs)
    for step in range(3):
        writer.add_image("val_predictions/0", np.zeros(3), step, dataformats="HWC")
        writer.add_scalar("train/loss", 1.0, step)
    assert writer.disabled is None and writer._writer.calls == [("train/loss", 1.0, step) for step in range(3)]
    assert len(warnings_of(caplog, "tensorboard image failed")) == 1
    assert outputs.report() == "optional outputs failed: 3 tensorboard image"


def test_tensorboard_that_cannot_write_is_switched_off_and_counted_once(tmp_path, caplog, monkeypatch):
    import tensorboardX

    monkeypatch.setattr(tensorboardX, "SummaryWriter", _Writer)
    monkeypatch.setattr(_Writer, "add_scalar", lambda *args: (_ for _ in ()).throw(OSError(28, "No space left")))
    outputs = OptionalOutputs()
    writer = LazySummaryWriter(str(tmp_path / "tensorboard"))
    writer.report_to(outputs)
    for step in range(3):
        writer.add_scalar("train/loss", 1.0, step)
    assert writer.disabled == "OSError: [Errno 28] No space left"
    assert len(warnings_of(caplog, "tensorboard is switched off for this run")) == 1
    assert not warnings_of(caplog, "tensorboard failed")  # the writer's own words, not a second warning
    assert outputs.report() == "optional outputs failed: 1 tensorboard"


def test_a_switch_off_before_the_first_task_counts_in_the_first_task(tmp_path, monkeypatch):
    monkeypatch.setattr(tensorboard_module, "free_bytes", lambda path: 0)  # a full device
    writer = LazySummaryWriter(str(tmp_path / "tensorboard"))
    writer.add_text("ymir-runner/plugins", "toy", 0)  # the run's first write, before any task
    assert writer.disabled
    first, second = OptionalOutputs(), OptionalOutputs()
    writer.report_to(first)
    writer.report_to(second)
    assert first.report() == "optional outputs failed: 1 tensorboard" and second.report() == ""


# --- a task ---------------------------------------------------------------------------------------------------

class _PictureTaker:
    """An observer plugin with optional outputs at every saved stage: a picture that fails to draw, an image
    tensorboard refuses, a scalar that works."""

    @ymir_runner.hookimpl
    def ymir_runner_stage_saved(self, context, stage):
        with context.optional_output("stage picture"):
            raise ValueError("y1 must be greater than or equal to y0")
        context.tensorboard.add_image("bad", np.zeros(3), 0, dataformats="HWC")
        context.tensorboard.add_scalar("stage/mAP", stage.metrics["mAP"], 0)


def scalar_tags(out_dir):
    from tensorboardX.event_file_writer import EventFileWriter  # noqa: F401  (imported for its side effects)
    from tensorboardX.proto import event_pb2

    (events_file,) = glob.glob(os.path.join(out_dir, "tensorboard", "events.out.tfevents.*"))
    data, offset, tags = open(events_file, "rb").read(), 0, []
    while offset < len(data):  # TFRecord framing: length, crc, payload, crc
        length = int.from_bytes(data[offset:offset + 8], "little")
        event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
        offset += 16 + length
        tags += [value.tag for value in event.summary.value if value.HasField("simple_value")]
    return tags


def test_a_training_whose_optional_outputs_fail_succeeds_and_says_so_once(registry, ymir_task):
    registry.register(_PictureTaker(), "pictures")
    outcome = ymir_task(config={"epochs": 3}).run(registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert set(outcome.result_yaml()["model_stages"]) == {"epoch_1", "epoch_2", "epoch_3"}
    assert outcome.stderr.count("stage picture failed, the task goes on without it: ValueError: y1 must be "
                                "greater than or equal to y0") == 1
    assert outcome.stderr.count("tensorboard image failed") == 1
    assert "Traceback" not in outcome.stderr
    (summary,) = [line for line in outcome.stderr.splitlines() if "optional outputs failed" in line]
    assert summary.endswith("training: optional outputs failed: 3 stage picture, 3 tensorboard image")
    assert scalar_tags(outcome.out_dir).count("stage/mAP") == 3  # tensorboard stayed on
    assert outcome.verify().ok


def test_a_tensorboard_folder_that_cannot_be_written_is_in_the_summary(registry, ymir_task):
    tree = ymir_task()
    with open(os.path.join(tree.out_dir, "tensorboard"), "w", encoding="utf-8") as stream:
        stream.write("not a folder")
    outcome = tree.run(registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stderr.count("tensorboard is switched off for this run") == 1
    assert "training: optional outputs failed: 1 tensorboard" in outcome.stderr


def test_a_failing_dataset_report_is_an_optional_output(registry, ymir_task, monkeypatch):
    from ymir_runner.dataset_report import DatasetReport

    monkeypatch.setattr(DatasetReport, "markdown", lambda self: 1 / 0)
    outcome = ymir_task().run(registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stderr.count("dataset report failed, the task goes on without it: ZeroDivisionError") == 1
    assert "training: optional outputs failed: 1 dataset report" in outcome.stderr


def test_a_stop_inside_an_optional_output_stops_the_task(registry, ymir_task):
    class Stopper:
        @ymir_runner.hookimpl
        def ymir_runner_stage_saved(self, context, stage):
            with context.optional_output("stage picture"):
                raise TaskTerminated.for_signal(signal.SIGTERM)

    registry.register(Stopper(), "stopper")
    outcome = ymir_task().run(registry)
    assert outcome.exit_code == 128 + signal.SIGTERM
    assert outcome.last_stderr_line == "ymir-runner: error 160004: the task was stopped (SIGTERM)"
