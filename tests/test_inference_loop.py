"""The core's task loops: ymir_runner.inference.infer_candidates and its prefetch pipeline, context.decode,
context.model_file, inference_threshold and the Prediction record, on generated work trees.

Concurrency is asserted with events and the order things happened in, never with timing: an event wait's
timeout is only there so that a broken pipeline fails the test instead of hanging it."""

from __future__ import annotations

import concurrent.futures
import io
import logging
import os
import signal
import threading

import numpy as np
import pytest
from PIL import Image

import ymir_runner
from ymir_runner import ExecutorSpec, ModelError, Param, Prediction, TaskKind, TaskTerminated, inference
from ymir_runner.protocol.dataset import Item
from ymir_runner.testing import png_bytes, write_png

WAIT = 30  # seconds an event may take before the test fails (never reached when the pipeline works)


class LoopPlugin:
    """An executor for inference, mining and training whose task runs ``body(context)``."""

    def __init__(self, body):
        self.body = body

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ExecutorSpec(name="loop", tasks={TaskKind.INFER, TaskKind.MINING, TaskKind.TRAINING},
                             templates={TaskKind.INFER: (Param("conf_threshold", 0.0, "score threshold"),)})]

    @ymir_runner.hookimpl
    def ymir_runner_infer(self, context):
        self.body(context)

    @ymir_runner.hookimpl
    def ymir_runner_mine(self, context):
        self.body(context)

    @ymir_runner.hookimpl
    def ymir_runner_train(self, context):
        self.body(context)


def run_task(registry, tree, body):
    registry.register(LoopPlugin(body), "loop")
    try:
        return tree.run(registry)
    finally:
        registry.unregister("loop")


def entries(outcome):
    return outcome.infer_result()["detection"]


def unreadable_tiff() -> bytes:
    """A TIFF whose header is sound (the candidate reader keeps it) but whose LZW data is garbage: only decoding
    finds it unusable (``unreadable image``)."""
    stream = io.BytesIO()
    Image.new("RGB", (40, 30), (90, 90, 90)).save(stream, "TIFF", compression="tiff_lzw")
    with Image.open(stream) as image:
        (start,), (size,) = image.tag_v2[273], image.tag_v2[279]  # StripOffsets, StripByteCounts
    data = bytearray(stream.getvalue())
    data[start:start + size] = b"\xff" * size
    return bytes(data)


def corrupt_png(width: int, height: int) -> bytes:
    """A PNG that ends properly (its header reads as sound) but whose data breaks off inside: decoded as far as it
    goes, with ``corrupt image data``, found only when decoding."""
    data = bytearray(png_bytes(width, height, color=(10, 20, 30)))
    start = data.find(b"IDAT") + 6
    data[start:start + 24] = bytes(byte ^ 0x5A for byte in data[start:start + 24])
    return bytes(data)


def write(path: str, data: bytes) -> None:
    with open(path, "wb") as stream:
        stream.write(data)


def sized_tree(ymir_task, count: int, **options):
    """An inference tree whose candidate i is a ``(20 + i) x 10`` PNG: its decoded width names it."""
    tree = ymir_task(kinds=("infer",), images=count, **options)
    for index, image in enumerate(tree.images):
        write_png(tree.local(image), 20 + index, 10)
    return tree


def square_finder(pixels: np.ndarray) -> Prediction:
    """A 'detector' that finds the coloured square TaskTree paints on grey, plus a fixed box at (1, 1, 5, 5)."""
    ys, xs = np.nonzero(np.abs(pixels.astype(int) - 128).sum(2) > 30)
    return Prediction([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], [1, 1, 5, 5]], [0.9, 0.5], [0, 1])


class Steps:
    """Records ``context.progress.steps`` calls and passes them on."""

    def __init__(self, progress):
        self.progress, self.calls = progress, []

    def steps(self, done, total, message=None):
        self.calls.append((done, total))
        self.progress.steps(done, total, message)

    def __getattr__(self, name):
        return getattr(self.progress, name)


# --- infer_candidates, end to end ------------------------------------------------------------------------------

def test_infer_candidates_writes_stored_pixel_boxes_skips_repairs_and_progress(ymir_registry, ymir_task):
    tree = ymir_task(kinds=("infer",), images=6, size=(64, 48))
    not_an_image, undecodable, damaged = (tree.local(tree.images[i]) for i in (1, 3, 4))
    write(not_an_image, b"not an image at all")  # the candidate reader skips it
    write(undecodable, unreadable_tiff())  # the reader keeps it; decoding skips it
    write(damaged, corrupt_png(64, 48))  # used, decoded as far as it goes: a repair
    seen, returned = [], []

    def body(context):
        context.progress = steps = Steps(context.progress)

        def predict(batch):
            seen.extend(pixels.shape for pixels in batch)
            return [square_finder(pixels) for pixels in batch]

        returned.append(inference.infer_candidates(context, predict, batch_size=2, min_side=32, workers=2))
        returned.append(steps.calls)

    outcome = run_task(ymir_registry, tree, body)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.verify().ok, outcome.verify().to_text()
    result = entries(outcome)
    names = [os.path.basename(image) for image in tree.images]
    assert sorted(result) == sorted(names)
    # min_side 32 reduces a 64 x 48 image twice on decode: predict sees 32 x 24, the boxes are stored pixels
    assert seen == [(24, 32, 3)] * 4
    for index in (0, 2, 5):
        boxes = result[names[index]]["boxes"]
        _, x1, y1, x2, y2 = tree.boxes_of(index)[0]  # inclusive corners
        found = boxes[0]["box"]
        assert abs(found["x"] - x1) <= 1 and abs(found["y"] - y1) <= 1
        assert abs(found["x"] + found["w"] - (x2 + 1)) <= 1 and abs(found["y"] + found["h"] - (y2 + 1)) <= 1
        assert boxes[1] == {"box": {"x": 2, "y": 2, "w": 8, "h": 8}, "class_name": "dog", "score": 0.5}
    assert result[names[1]]["boxes"] == [] and result[names[3]]["boxes"] == []  # empty entries
    assert len(result[names[4]]["boxes"]) == 2  # the damaged image is used
    assert returned[0] == sum(len(entry["boxes"]) for entry in result.values()) == 8
    # the undecodable image is named with the decoder's reason; the repair is counted once
    assert f"skipped (unreadable image) at {undecodable}" in outcome.stderr
    assert "skipped 2 unreadable image" in outcome.stderr
    assert "repaired 1 corrupt image data" in outcome.stderr
    assert f"repaired (corrupt image data) at {damaged}" in outcome.stderr
    # 5 candidates the reader kept, in batches of 2: progress after each batch
    assert returned[1] == [(2, 5), (4, 5), (5, 5)]
    assert "inference: 8 boxes on 6 images (2 unusable)" in outcome.stderr
    assert "decoded on 2 threads ahead of the model" in outcome.stderr


def test_predict_sees_the_candidates_in_order_whatever_order_the_threads_finish(ymir_registry, ymir_task):
    tree = sized_tree(ymir_task, 7)
    second_done = threading.Event()
    finished, seen = [], []

    def preprocess(decoded):
        if decoded.width == 20:  # the first candidate finishes only after the second
            assert second_done.wait(WAIT), "the second candidate was never prepared beside the first"
        finished.append(decoded.width)
        if decoded.width == 21:
            second_done.set()
        return decoded.width

    def body(context):
        inference.infer_candidates(context, lambda batch: seen.append(batch) or [Prediction([], [], [])] * len(batch),
                                   preprocess=preprocess, batch_size=3, workers=3)

    outcome = run_task(ymir_registry, tree, body)
    assert outcome.exit_code == 0, outcome.stderr
    assert finished.index(21) < finished.index(20)
    assert seen == [[20, 21, 22], [23, 24, 25], [26]]


def test_the_next_two_batches_are_prepared_while_predict_runs_and_no_more(ymir_registry, ymir_task):
    tree = sized_tree(ymir_task, 10)
    ready = {20 + index: threading.Event() for index in range(10)}
    lock = threading.Lock()
    prepared, during_first = [], []

    def preprocess(decoded):
        with lock:
            prepared.append(decoded.width)
        ready[decoded.width].set()
        return decoded.width

    def predict(batch):
        if batch == [20, 21]:
            # batches 1 and 2 are prepared while the model works on batch 0 ...
            assert all(ready[width].wait(WAIT) for width in range(22, 26)), "the pipeline does not run ahead"
            with lock:
                during_first.extend(sorted(prepared))
        return [Prediction([], [], [])] * len(batch)

    outcome = run_task(ymir_registry, tree, lambda context: inference.infer_candidates(
        context, predict, preprocess=preprocess, batch_size=2, workers=4))
    assert outcome.exit_code == 0, outcome.stderr
    # ... and batch 3 is not: at most two batches ahead of the model, however many threads are idle
    assert during_first == list(range(20, 26))
    assert sorted(prepared) == list(range(20, 30))


@pytest.mark.parametrize("stop", [RuntimeError("the model broke"), KeyboardInterrupt(), TaskTerminated()],
                         ids=["error", "ctrl-c", "sigterm"])
def test_a_stop_in_predict_is_raised_at_once_without_waiting_for_the_threads(ymir_registry, ymir_task, stop):
    tree = sized_tree(ymir_task, 8)
    entered = {22: threading.Event(), 23: threading.Event()}
    release = threading.Event()
    started, finished, observed = [], [], []

    def preprocess(decoded):
        started.append(decoded.width)
        if decoded.width in entered:  # batch 1 hangs in preprocess until the test lets it go
            entered[decoded.width].set()
            release.wait(WAIT)
        finished.append(decoded.width)
        return decoded.width

    def predict(batch):
        assert all(event.wait(WAIT) for event in entered.values())  # both threads are busy with batch 1
        raise stop

    def body(context):
        with pytest.raises(type(stop)):
            inference.infer_candidates(context, predict, preprocess=preprocess, batch_size=2, workers=2)
        # back here while two threads are still inside preprocess: the loop did not wait for them
        observed.append((sorted(started), sorted(finished), release.is_set()))
        release.set()
        for thread in threading.enumerate():
            if thread.name.startswith("ymir-runner-prefetch"):
                thread.join(WAIT)
                assert not thread.is_alive()

    outcome = run_task(ymir_registry, tree, body)
    assert outcome.exit_code == 0, outcome.stderr
    assert observed == [([20, 21, 22, 23], [20, 21], False)]
    assert sorted(started) == [20, 21, 22, 23]  # batch 2, queued behind batch 1, was cancelled


def test_a_stop_signal_while_the_loop_waits_for_a_decode_ends_the_run_without_waiting(ymir_registry, ymir_task):
    tree = sized_tree(ymir_task, 6)
    release = threading.Event()
    finished, predicted = [], []

    def preprocess(decoded):
        if decoded.width == 20:  # the platform stops the task while the loop waits for this image
            os.kill(os.getpid(), signal.SIGTERM)
            release.wait(WAIT)
        finished.append(decoded.width)
        return decoded.width

    outcome = run_task(ymir_registry, tree, lambda context: inference.infer_candidates(
        context, lambda batch: predicted.append(batch) or [], preprocess=preprocess, batch_size=2, workers=2))
    still_decoding = not release.is_set() and 20 not in finished
    release.set()
    for thread in threading.enumerate():
        if thread.name.startswith("ymir-runner-prefetch"):
            thread.join(WAIT)
    assert still_decoding  # the run ended while a thread was still inside preprocess
    assert outcome.exit_code == 128 + signal.SIGTERM and outcome.state == 4
    assert predicted == []


def test_predict_must_answer_every_image(ymir_registry, ymir_task):
    tree = sized_tree(ymir_task, 3)
    outcome = run_task(ymir_registry, tree, lambda context: inference.infer_candidates(
        context, lambda batch: [Prediction([], [], [])], batch_size=3))
    assert outcome.exit_code != 0
    assert "predict returned 1 predictions for 3 images" in outcome.stderr


def test_no_usable_candidate_is_a_valid_result_with_a_warning(ymir_registry, ymir_task):
    tree = sized_tree(ymir_task, 2)
    write(tree.local(tree.images[0]), unreadable_tiff())
    write(tree.local(tree.images[1]), unreadable_tiff())
    calls = []
    outcome = run_task(ymir_registry, tree, lambda context: inference.infer_candidates(
        context, lambda batch: calls.append(batch) or []))
    assert outcome.exit_code == 0, outcome.stderr
    assert calls == []  # no batch without an image is predicted
    assert all(entry["boxes"] == [] for entry in entries(outcome).values()) and len(entries(outcome)) == 2
    assert "every entry of infer-result.json is empty" in outcome.stderr


# --- context.decode -------------------------------------------------------------------------------------------

def test_decode_counts_a_skip_or_a_repair_once_per_image_from_any_thread(ymir_registry, ymir_task):
    tree = ymir_task(kinds=("infer",), images=3, size=(64, 48))
    undecodable, damaged, truncated = (tree.local(image) for image in tree.images)
    write(undecodable, unreadable_tiff())
    write(damaged, corrupt_png(64, 48))
    whole = png_bytes(64, 48)
    write(truncated, whole[:len(whole) // 2])  # the reader finds and counts this damage itself
    found = {}

    def body(context):
        items = {os.path.basename(item.image): item for item in context.candidates}
        assert items[os.path.basename(truncated)].damage == "truncated image"
        work = [item for item in items.values() for _ in range(8)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda item: context.decode(item, min_side=16), work))
        found["results"] = {os.path.basename(item.image): result for item, result in zip(work, results)}
        found["missing"] = context.decode(Item(tree.local("/in/assets/gone.png")))
        found["skips"], found["repairs"] = dict(context.skips.counts), dict(context.skips.repairs)

    outcome = run_task(ymir_registry, tree, body)
    assert outcome.exit_code == 0, outcome.stderr
    results = found["results"]
    assert results[os.path.basename(undecodable)] is None and found["missing"] is None
    decoded = results[os.path.basename(damaged)]
    assert (decoded.width, decoded.height, decoded.factor, decoded.damage) == (64, 48, 4, "corrupt image data")
    assert decoded.pixels.shape == (12, 16, 3) and decoded.pixels.dtype == np.uint8
    assert decoded.pixels is decoded.pixels and not decoded.pixels.flags.writeable  # made once, shared
    assert found["skips"] == {"unreadable image": 1, "missing image": 1}
    assert found["repairs"] == {"corrupt image data": 1, "truncated image": 1}  # the reader's, not again
    assert outcome.stderr.count(f"skipped (unreadable image) at {undecodable}") == 1


# --- context.model_file -----------------------------------------------------------------------------------------

def install(tree, files, best=None):
    for name in files:
        path = tree.local(f"/in/models/{name}")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write(path, b"weights")
    info = tree.local("/in/models/ymir-info.yaml")
    if best:
        write(info, f"best_stage_name: {best}\n".encode())
    elif os.path.exists(info):
        os.remove(info)
    tree.config["model_params_path"] = [f"/in/models/{name}" for name in files]
    tree.write_config()


def test_model_file_picks_the_best_stage_by_ymir_info(ymir_registry, ymir_task):
    tree = sized_tree(ymir_task, 1)
    install(tree, ["epoch_1/model.pt", "epoch_2/model.pt", "epoch_2/model.json", "epoch_1/notes.txt"],
            best="epoch_2")
    found = {}

    def body(context):
        found["pt"] = context.model_file(".pt")
        found["json"] = context.model_file(".json")
        found["key"] = context.model_key
        with pytest.raises(ModelError, match=r"config key 'model_params_path' lists no \.onnx file"):
            context.model_file(".onnx")

    outcome = run_task(ymir_registry, tree, body)
    assert outcome.exit_code == 0, outcome.stderr
    assert found == {"pt": tree.local("/in/models/epoch_2/model.pt"),
                     "json": tree.local("/in/models/epoch_2/model.json"), "key": "model_params_path"}


def model_file_error(ymir_registry, tree):
    return run_task(ymir_registry, tree, lambda context: context.model_file(".pt"))


def test_model_file_without_a_best_stage_among_several_is_a_model_error_naming_the_key(ymir_registry, ymir_task):
    tree = sized_tree(ymir_task, 1)
    install(tree, ["epoch_1/model.pt", "epoch_2/model.pt"])
    outcome = model_file_error(ymir_registry, tree)
    assert outcome.return_code == 300004 and outcome.state == 4
    assert "config key 'model_params_path' lists several .pt files" in outcome.last_stderr_line
    assert "ymir-info.yaml names no best stage among them" in outcome.last_stderr_line
    install(tree, ["epoch_1/model.pt", "epoch_2/model.pt"], best="epoch_9")
    assert "names no best stage among them" in model_file_error(ymir_registry, tree).last_stderr_line


def test_model_file_names_the_training_key_and_a_missing_file(ymir_registry, ymir_task):
    training = ymir_task(kinds=("training",), images=2, config={"pretrained_model_params": ["/in/models/a/x.bin"]})
    outcome = model_file_error(ymir_registry, training)
    assert outcome.return_code == 300004
    assert "config key 'pretrained_model_params' lists no .pt file" in outcome.last_stderr_line
    tree = sized_tree(ymir_task, 1)
    tree.config["model_params_path"] = ["/in/models/epoch_1/model.pt"]
    tree.write_config()
    outcome = model_file_error(ymir_registry, tree)
    assert outcome.return_code == 300004
    assert "config key 'model_params_path'" in outcome.last_stderr_line
    assert "epoch_1/model.pt does not exist" in outcome.last_stderr_line


# --- inference_threshold and the Prediction record --------------------------------------------------------------

class Context:
    def __init__(self, hyper):
        from easydict import EasyDict

        self.hyper = EasyDict(hyper)
        self.logger = logging.getLogger("test_inference_loop")


def test_inference_threshold_config_then_model_then_default(caplog):
    caplog.set_level(logging.INFO, "test_inference_loop")
    assert inference.inference_threshold(Context({"conf_threshold": 0.6}), 0.4) == 0.6
    assert inference.inference_threshold(Context({"conf_threshold": 0.0}), 0.4) == 0.4
    assert inference.inference_threshold(Context({"conf_threshold": 0}), None) == 0.25
    assert inference.inference_threshold(Context({}), 0.3) == 0.3  # mining alone has no such key
    assert caplog.messages[:3] == [
        "infer: boxes scoring at least 0.600 (config key 'conf_threshold')",
        "infer: boxes scoring at least 0.400 (the model's F1-optimal threshold on its validation set; config key "
        "'conf_threshold' is 0)",
        "infer: boxes scoring at least 0.250 (no threshold stored in the model, the default; config key "
        "'conf_threshold' is 0)"]


def test_prediction_best_scaled_and_detections():
    prediction = Prediction([[0, 0, 2, 2], [1, 1, 3, 3], [2, 2, 4, 4], [3, 3, 5, 5]], [0.5, 0.9, 0.5, 0.1],
                            [0, 1, 2, 3], np.eye(4))
    best = prediction.best(3)
    assert best.scores.tolist() == [0.9, 0.5, 0.5] and best.classes.tolist() == [1, 0, 2]  # ties keep their order
    assert best.class_probabilities.argmax(1).tolist() == [1, 0, 2]
    assert len(prediction.best(10)) == 4 and len(prediction.best(0)) == 0
    with pytest.raises(ValueError, match="k must be >= 0"):
        prediction.best(-1)
    scaled = prediction.scaled(4)
    assert scaled.boxes[1].tolist() == [4, 4, 12, 12] and scaled.scores.tolist() == prediction.scores.tolist()
    detections = scaled.above(0.5).detections()
    assert [(d.x1, d.y2, d.score, d.class_id) for d in detections] == [(0.0, 8.0, 0.5, 0), (4.0, 12.0, 0.9, 1),
                                                                       (8.0, 16.0, 0.5, 2)]
    assert all(type(d.class_id) is int and type(d.score) is float for d in detections)
    assert ymir_runner.mining.Prediction is Prediction is ymir_runner.prediction.Prediction


def test_prefetch_workers_default_to_the_task_cpus_and_zero_prepares_in_the_callers_thread():
    from ymir_runner.pipeline import Prefetch, prefetch_workers

    assert prefetch_workers(None, cpus=1) == 1 and prefetch_workers(None, cpus=4) == 3
    assert prefetch_workers(None, cpus=64) == 8 and prefetch_workers(0) == 0
    with pytest.raises(ValueError, match="workers must be an integer >= 0"):
        prefetch_workers(-1)
    with Prefetch(lambda x: x * 2, list(range(5)), batch_size=2, workers=0) as batches:
        assert list(batches) == [([0, 1], [0, 2]), ([2, 3], [4, 6]), ([4], [8])]


def test_the_caller_prepares_what_no_thread_has_started_instead_of_waiting():
    from ymir_runner.pipeline import Prefetch

    first_may_finish = threading.Event()
    where: dict[int, str] = {}

    def prepare(item):
        where[item] = threading.current_thread().name
        if item == 0:  # the only thread is held here until item 1 is prepared: by the caller, or never
            assert first_may_finish.wait(WAIT), "the caller waited for the busy thread instead of helping"
        if item == 1:
            first_may_finish.set()
        if item == 3:
            raise ValueError("item 3 is unreadable")
        return item * 10

    with Prefetch(prepare, list(range(6)), batch_size=3, workers=1) as batches:
        batch = iter(batches)
        assert next(batch) == ([0, 1, 2], [0, 10, 20])
        assert where[1] == threading.current_thread().name and where[0].startswith("ymir-runner-prefetch")
        with pytest.raises(ValueError, match="item 3 is unreadable"):  # raised for its batch, wherever it ran
            next(batch)


def test_a_stop_signal_while_the_loop_prepares_an_image_itself_ends_the_run(ymir_registry, ymir_task):
    tree = sized_tree(ymir_task, 6)
    release = threading.Event()
    helped, waited_out, predicted = [], [], []

    def preprocess(decoded):
        if decoded.width == 20:  # the only thread is busy here, so the loop prepares 21 itself ...
            release.wait(WAIT)
        elif threading.current_thread() is threading.main_thread():
            helped.append(decoded.width)
            os.kill(os.getpid(), signal.SIGTERM)  # ... and the platform stops the task while it does
            release.wait(WAIT)
            waited_out.append(decoded.width)  # not reached: the stop is raised inside the wait
        return decoded.width

    outcome = run_task(ymir_registry, tree, lambda context: inference.infer_candidates(
        context, lambda batch: predicted.append(batch) or [], preprocess=preprocess, batch_size=2, workers=1))
    release.set()
    for thread in threading.enumerate():
        if thread.name.startswith("ymir-runner-prefetch"):
            thread.join(WAIT)
    assert helped == [21] and waited_out == []
    assert outcome.exit_code == 128 + signal.SIGTERM and outcome.state == 4
    assert predicted == []
