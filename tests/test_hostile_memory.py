"""Valid but huge inputs stay within stated memory (issue 24, "Bounded memory and time").

Every memory-hungry case runs in a subprocess under an address-space cap (``RLIMIT_AS``) and a timeout, and
reports its own peak resident size (VmHWM), so a regression shows as a number over a generous bound, never as
a killed test machine."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from ymir_runner.protocol import images
from ymir_runner.protocol.dataset import DatasetReader, SkipLog
from ymir_runner.protocol.images import DECODE_MEMORY_BUDGET, ImageProblem, decode_image, probe_image
from ymir_runner.supervise import oom_kills

GIB = 1 << 30
MIB = 1 << 20


def run_capped(code: str, *, cap: int = 3 * GIB, timeout: int = 240) -> dict:
    """Run ``code`` in a fresh Python under an address-space cap; it sets ``result`` (a dict), which comes back
    with ``peak_mb``: the process's peak resident size (VmHWM)."""
    program = textwrap.dedent(f"""
        import json, resource
        resource.setrlimit(resource.RLIMIT_AS, ({cap}, {cap}))
        result = {{}}
    """) + textwrap.dedent(code) + textwrap.dedent("""
        result["peak_mb"] = next(int(line.split()[1]) // 1024 for line in open("/proc/self/status")
                                 if line.startswith("VmHWM"))
        print(json.dumps(result))
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(path, width: int, height: int, rows: bytes, *, colour: int = 2, depth: int = 8,
             interlaced: bool = False, palette: bytes = b"") -> str:
    """A PNG of the given filtered ``rows`` (each a filter byte, then the row), as any encoder could write."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, int(interlaced))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + (_chunk(b"PLTE", palette) if palette else b"")
                     + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))
    return str(path)


def striped_giant_png(path, side: int = 32767) -> str:
    """A ``side`` x ``side`` RGB PNG of 8-pixel vertical stripes, black and grey 200, about 3 MB: the first row
    holds the stripes, every other row is "same as above" (PNG's Up filter, zeros), deflated once for 128 rows
    after a full flush (no reference back) and that piece repeated."""
    first = b"\0" + bytes(200 * ((x // 8) % 2) for x in range(side) for _ in range(3))
    same = b"\2" + bytes(3 * side)
    blocks, rest = divmod(side - 1, 128)
    compressor = zlib.compressobj(9)
    head = compressor.compress(first) + compressor.flush(zlib.Z_FULL_FLUSH)  # the zlib header, then row 1
    repeated = compressor.compress(same * 128) + compressor.flush(zlib.Z_FULL_FLUSH)
    tail = zlib.compressobj(9, wbits=-15)  # the last rows and the final block, raw deflate
    end = tail.compress(same * rest) + tail.flush()
    checksum = zlib.adler32(first)
    for _ in range(blocks):
        checksum = zlib.adler32(same * 128, checksum)
    checksum = zlib.adler32(same * rest, checksum)
    data = head + repeated * blocks + end + struct.pack(">I", checksum)
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    with open(path, "wb") as stream:
        stream.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header))
        for start in range(0, len(data), 1 << 20):
            stream.write(_chunk(b"IDAT", data[start:start + (1 << 20)]))
        stream.write(_chunk(b"IEND", b""))
    return str(path)


@pytest.fixture(scope="module")
def giant_png(tmp_path_factory):
    return striped_giant_png(tmp_path_factory.mktemp("giant") / "giant.png")


# --- the 32767 x 32767 PNG -------------------------------------------------------------------------------------

def test_a_32767_pixel_square_png_decodes_reduced_within_the_budget(giant_png):
    assert 32767 ** 2 < images.MAX_IMAGE_PIXELS and len(open(giant_png, "rb").read()) < 8 * MIB
    result = run_capped(f"""
        import numpy
        from ymir_runner.protocol.images import decode_image
        decoded = decode_image({giant_png!r}, min_side=1280)
        pixels = numpy.asarray(decoded.image)
        result.update(size=decoded.image.size, factor=decoded.factor, damage=decoded.damage,
                      columns=pixels[::997, :4, 0].tolist())
    """)
    assert result["size"] == [4096, 4096] and result["factor"] == 8 and result["damage"] == ""
    assert all(columns == [0, 200, 0, 200] for columns in result["columns"])  # each stripe is one reduced pixel
    # Before: 4.2 GB (decoded whole, then reduced). Now: the 64 MiB result, strips and the interpreter.
    assert result["peak_mb"] < DECODE_MEMORY_BUDGET // MIB + 64 + 100, result


def test_a_full_size_decode_that_cannot_get_its_memory_says_so(giant_png):
    """The caller asked for 4 GiB of result: under a 1.5 GiB cap that is a MemoryError naming the image and
    what it needs, not an "unreadable image"."""
    result = run_capped(f"""
        from ymir_runner.protocol.images import decode_image
        try:
            decode_image({giant_png!r})
        except MemoryError as error:
            result["error"] = str(error)
    """, cap=3 * GIB // 2)
    assert "out of memory decoding" in result["error"] and "giant.png" in result["error"]
    assert "32767x32767" in result["error"] and "4096 MiB for the image" in result["error"]


# --- strips give exactly the whole decode ----------------------------------------------------------------------

def whole_then_reduced(path: str, factor: int) -> np.ndarray:
    """What decoding whole, then reducing, gives (the old way; PIL's own decoder, data that breaks off left
    black)."""
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(images.to_rgb(images._reduce(image, factor)))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = False


PNG_KINDS = [(0, 1), (0, 2), (0, 4), (0, 8), (0, 16), (2, 8), (2, 16), (3, 1), (3, 2), (3, 4), (3, 8), (4, 8),
             (4, 16), (6, 8), (6, 16)]


def random_png(path, width, height, colour, depth, seed) -> str:
    """Random bytes under random filter types: every PNG filter, in every colour type and bit depth."""
    rng = random.Random(seed)
    row_bytes = (width * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour] * depth + 7) // 8
    rows = b"".join(bytes([rng.randrange(5)]) + rng.randbytes(row_bytes) for _ in range(height))
    return png_file(path, width, height, rows, colour=colour, depth=depth,
                    palette=rng.randbytes(3 << depth) if colour == 3 else b"")


@pytest.mark.parametrize("colour, depth", PNG_KINDS)
def test_png_decoded_in_strips_is_exactly_the_whole_decode_reduced(tmp_path, monkeypatch, colour, depth):
    monkeypatch.setattr(images, "_STRIP_BYTES", 4096)  # many strips, a partial one last
    for factor in (2, 4, 8):
        for width, height in ((37, 29), (64, 64), (9, 70)):
            path = random_png(tmp_path / "r.png", width, height, colour, depth, seed=width * height + factor)
            decoded = decode_image(path, min_side=max(width, height) // factor)
            assert decoded.factor == factor and decoded.damage == ""
            np.testing.assert_array_equal(np.asarray(decoded.image), whole_then_reduced(path, factor))


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA"])
def test_bmp_decoded_in_strips_is_exactly_the_whole_decode_reduced(tmp_path, monkeypatch, mode):
    monkeypatch.setattr(images, "_STRIP_BYTES", 4096)
    pixels = np.random.default_rng(1).integers(0, 256, (45, 37, 4), np.uint8)
    Image.fromarray(pixels).convert(mode).save(tmp_path / "r.bmp")
    for factor in (2, 4, 8):
        decoded = decode_image(str(tmp_path / "r.bmp"), min_side=45 // factor)
        assert decoded.factor == factor
        np.testing.assert_array_equal(np.asarray(decoded.image), whole_then_reduced(str(tmp_path / "r.bmp"), factor))


def test_damaged_pngs_and_bmps_in_strips_are_decoded_as_far_as_they_go(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "_STRIP_BYTES", 4096)
    rng = random.Random(5)
    rows = [bytes([rng.randrange(5)]) + rng.randbytes(64 * 3) for _ in range(80)]
    complete = png_file(tmp_path / "complete.png", 64, 80, b"".join(rows))
    data = open(complete, "rb").read()
    (tmp_path / "cut.png").write_bytes(data[: len(data) * 2 // 3])
    rows[37] = b"\x09" + rows[37][1:]  # no such filter type
    png_file(tmp_path / "filter.png", 64, 80, b"".join(rows))
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (80, 64, 3), np.uint8)).save(tmp_path / "b.bmp")
    bmp = open(tmp_path / "b.bmp", "rb").read()
    (tmp_path / "cut.bmp").write_bytes(bmp[: len(bmp) * 2 // 3])
    for name, damage in (("cut.png", "truncated image"), ("filter.png", "corrupt image data"),
                         ("cut.bmp", "truncated image")):
        decoded = decode_image(str(tmp_path / name), min_side=20)
        assert (decoded.factor, decoded.damage) == (4, damage), name
        np.testing.assert_array_equal(np.asarray(decoded.image), whole_then_reduced(str(tmp_path / name), 4))


# --- formats that can only be decoded whole --------------------------------------------------------------------

def test_an_interlaced_png_over_the_budget_is_skipped_naming_the_budget(tmp_path):
    """Adam7 interlacing spreads every row over the whole file: it is decoded whole, 4 bytes a pixel. The
    header says so before anything is decoded (this file holds almost no data)."""
    big = png_file(tmp_path / "interlaced.png", 9000, 9000, b"\0" * 100, interlaced=True)
    small = png_file(tmp_path / "small.png", 8, 8, (b"\0" + bytes(24)) * 8, interlaced=True)
    for call in (probe_image, lambda path: decode_image(path, 640)):
        with pytest.raises(ImageProblem) as problem:
            call(big)
        assert problem.value.reason == "image too large"
        message = str(problem.value)
        assert "interlaced.png" in message and "9000x9000 interlaced PNG" in message
        assert "309 MiB" in message and "DECODE_MEMORY_BUDGET" in message and "256 MiB" in message
    assert decode_image(small).image.size == (8, 8)
    (tmp_path / "index.tsv").write_text(f"{big}\n{small}\n")
    skips = SkipLog()
    items = list(DatasetReader(str(tmp_path / "index.tsv"), annotations=None, skips=skips, name="candidate"))
    assert [item.image for item in items] == [small] and skips.counts == {"image too large": 1}


def progressive_jpeg_claiming(path, width: int, height: int, subsampling: int) -> str:
    """A small progressive JPEG whose frame header (SOF2) claims ``width`` x ``height``."""
    Image.new("RGB", (64, 64), (90, 20, 200)).save(path, progressive=True, subsampling=subsampling)
    data = bytearray(open(path, "rb").read())
    at = data.index(b"\xff\xc2") + 5
    data[at:at + 4] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return str(path)


def test_a_progressive_jpeg_is_limited_by_its_dct_coefficients(tmp_path):
    """libjpeg holds every coefficient of a progressive JPEG, 2 bytes each, whatever the scale asked: 3 bytes a
    pixel at 4:2:0, 6 at 4:4:4."""
    allowed = progressive_jpeg_claiming(tmp_path / "420.jpg", 8000, 8000, subsampling=2)
    refused = progressive_jpeg_claiming(tmp_path / "444.jpg", 8000, 8000, subsampling=0)
    assert probe_image(allowed)[:2] == (8000, 8000)
    with pytest.raises(ImageProblem) as problem:
        probe_image(refused)
    assert problem.value.reason == "image too large"
    assert "8000x8000 progressive JPEG" in str(problem.value) and "367 MiB" in str(problem.value)


def test_a_progressive_jpeg_within_the_budget_stays_within_it(tmp_path):
    path = tmp_path / "progressive.jpg"
    Image.new("RGB", (8000, 8000), (90, 20, 200)).save(path, progressive=True, quality=80)
    result = run_capped(f"""
        from ymir_runner.protocol.images import decode_image
        result["size"] = decode_image({str(path)!r}, min_side=1280).image.size
    """)
    assert result["size"] == [2000, 2000] and result["peak_mb"] < DECODE_MEMORY_BUDGET // MIB + 100, result


# --- 10,000 class_names in the evaluation ----------------------------------------------------------------------

def detections_case(seed: int = 0, images_count: int = 12):
    """Ground truth of classes 0-4 and predictions near it, with a class only predicted (7) and one never (6)."""
    rng = np.random.default_rng(seed)
    truths, predictions = [], []
    for _ in range(images_count):
        corners = rng.uniform(0, 300, (6, 2))
        boxes = np.concatenate([corners, corners + rng.uniform(10, 60, (6, 2))], 1)
        classes = rng.integers(0, 5, 6)
        found = np.concatenate([boxes + rng.normal(0, 4, boxes.shape), boxes[:2] + 80])
        found_classes = np.concatenate([classes, [7, 3]])
        truths.append((boxes, classes))
        predictions.append((found, rng.uniform(0.05, 1, len(found)), found_classes))
    return truths, predictions


def coco_of_every_class(truths, predictions, num_classes):
    """The evaluation before: every class of ``class_names`` on COCO's class axis."""
    from faster_coco_eval import COCOeval_faster

    from ymir_runner.evaluation import COCO_IOU_THRESHOLDS, _build_coco, _mean_valid

    coco_gt, coco_dt = _build_coco(truths, predictions, range(num_classes), None)
    evaluator = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=lambda *args, **kwargs: None)
    evaluator.params.catIds = list(range(1, num_classes + 1))
    evaluator.params.iouThrs = np.round(COCO_IOU_THRESHOLDS, 10)
    evaluator.params.maxDets = [1, 10, 100]
    evaluator.evaluate()
    evaluator.accumulate()
    precision, recall = evaluator.eval["precision"][:, :, :, 0, -1], evaluator.eval["recall"][:, :, 0, -1]
    return {"map": _mean_valid(precision[0]), "mar": _mean_valid(recall[0]), "map50_95": _mean_valid(precision),
            "mar50_95": _mean_valid(recall),
            "per_class_ap": {c: _mean_valid(precision[:, :, c]) for c in range(num_classes)}}


def test_evaluating_only_the_classes_present_gives_the_metrics_of_every_class():
    from ymir_runner.evaluation import evaluate_detections

    truths, predictions = detections_case()
    before = coco_of_every_class(truths, predictions, 40)
    now = evaluate_detections(truths, predictions, 40, class_names=[f"c{i}" for i in range(40)])
    for key in ("map", "mar", "map50_95", "mar50_95", "per_class_ap"):
        assert getattr(now, key) == before[key], key
    assert now.per_class_ap[6] is None and now.per_class_ap[7] is None and now.per_class_ap[39] is None
    assert 0.3 < now.map < 1
    same = evaluate_detections(truths, predictions, 10_000)
    assert (same.map, same.mar, same.map50_95, same.stage_counts()) == (now.map, now.mar, now.map50_95,
                                                                        now.stage_counts())
    nothing = evaluate_detections([(np.zeros((0, 4)), np.zeros(0))], [(np.zeros((0, 4)), [], [])], 3)
    assert nothing.map is None and nothing.per_class_ap == {0: None, 1: None, 2: None}


def test_10000_class_names_are_evaluated_in_bounded_time_and_memory():
    """Before: 293 s and 4.3 GB, roughly quadratic in the class count; a SIGSEGV in faster-coco-eval under a cap."""
    result = run_capped(f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        from test_hostile_memory import detections_case
        from ymir_runner.evaluation import evaluate_detections
        start = time.monotonic()
        truths, predictions = detections_case(images_count=200)
        result["map"] = evaluate_detections(truths, predictions, 10_000).map
        result["seconds"] = time.monotonic() - start
    """, cap=GIB)
    assert 0.3 < result["map"] < 1 and result["seconds"] < 30 and result["peak_mb"] < 300, result


# --- a crash in native code, the OOM killer --------------------------------------------------------------------

CRASH_PLUGIN = textwrap.dedent("""
    import atexit, multiprocessing, os, signal, sys, time
    import ymir_runner
    from ymir_runner import ExecutorSpec, TaskKind

    @ymir_runner.hookimpl
    def ymir_runner_register_executors():
        return [ExecutorSpec(name=name, tasks={TaskKind.TRAINING})
                for name in ("segfault", "oom-killed", "crash-at-exit", "sleeper")]

    def worker():  # stands in for a DataLoader worker: it outlives a crashed run unless someone stops it
        while True:
            time.sleep(1)

    def evaluate_in_native_code(signum):  # what faster-coco-eval did with 10,000 classes under a memory cap
        os.kill(os.getpid(), signum)

    def save_a_stage(context):
        with open(os.path.join(context.training_result.stage_dir("epoch_1"), "model.bin"), "wb") as stream:
            stream.write(b"weights")
        context.training_result.add_stage("epoch_1", ["model.bin"], {"mAP": 0.5})

    @ymir_runner.hookimpl
    def ymir_runner_train(context):
        name = context.executor.name
        if name == "crash-at-exit":  # a library's destructor crashing after the run reported success
            atexit.register(evaluate_in_native_code, signal.SIGSEGV)
            save_a_stage(context)
            return
        child = multiprocessing.get_context("fork").Process(target=worker, daemon=True)
        child.start()
        context.progress.update(0.5, "evaluating")
        print("READY", os.getpid(), child.pid, flush=True)
        if name == "sleeper":
            time.sleep(60)
        evaluate_in_native_code(signal.SIGSEGV if name == "segfault" else signal.SIGKILL)
""")


@pytest.fixture
def crash_run(tmp_path):
    """``crash_run(executor)`` -> (tree, process): ``ymir-runner run`` of a training task by that executor."""
    from ymir_runner.testing import TaskTree, make_fake_distribution

    site = str(tmp_path / "site")
    make_fake_distribution(site, dist_name="ymir-crash", module="ymir_crash_mod", source=CRASH_PLUGIN,
                           entry_point="crash")
    environment = dict(os.environ, PYTHONPATH=site)

    def start(executor: str):
        tree = TaskTree(str(tmp_path / executor), kinds=("training",), config={"plugin": executor})
        process = subprocess.Popen(tree.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   env=environment)
        return tree, process

    return start


def finish(process) -> tuple[list[int], str]:
    """The READY line's pids (the run, its worker) and stderr, once the command exited."""
    stdout, stderr = process.communicate(timeout=120)
    ready = next((line.split()[1:] for line in stdout.splitlines() if line.startswith("READY")), [])
    return [int(pid) for pid in ready], stderr


@pytest.mark.parametrize("executor, signum, code, reason", [
    ("segfault", signal.SIGSEGV, 160004, "the run died of SIGSEGV (Segmentation fault), a crash in native code "
                                         "called from evaluate_in_native_code ("),
    # a SIGKILL the cgroup's OOM-kill counter does not account for (here: the run's own) is not called memory
    ("oom-killed", signal.SIGKILL, 300103 if oom_kills() is None else 160004,
     "the run was killed (SIGKILL) at a peak of "),
])
def test_a_run_killed_by_a_signal_ends_in_state_4_with_a_code_and_a_last_line(crash_run, executor, signum, code,
                                                                             reason):
    from ymir_runner.shutdown import is_running

    tree, process = crash_run(executor)
    (run_pid, worker), stderr = finish(process)
    assert process.returncode == 128 + signum, stderr[-3000:]
    outcome = tree.outcome(process.returncode, stderr)
    assert (outcome.state, outcome.return_code) == (4, code)  # before: "running" forever (state 2, no code)
    last = outcome.last_stderr_line
    assert last.startswith(f"ymir-runner: error {code}: {reason}"), stderr[-3000:]
    if signum == signal.SIGSEGV:
        assert "ymir_crash_mod.py, line" in last and "its peak memory was" in last
        assert "Fatal Python error: Segmentation fault" in stderr  # the traceback, above the last line
    elif oom_kills() is None:
        assert "most likely the kernel's out-of-memory killer" in last
    else:
        assert "not by the out-of-memory killer of its cgroup (its oom_kill count did not change)" in last
    assert not is_running(worker), "the crashed run's worker outlived it"
    assert not is_running(run_pid)


@pytest.mark.parametrize("oom_killed, code, says", [
    (True, 300103, "the kernel's out-of-memory killer killed it (its cgroup's oom_kill count rose)"),
    (None, 300103, "most likely the kernel's out-of-memory killer"),
    (False, 160004, "not by the out-of-memory killer of its cgroup"),
])
def test_a_sigkill_is_called_out_of_memory_only_as_far_as_the_cgroup_says(oom_killed, code, says):
    """`kill -9` and the OOM killer send the same signal: the cgroup's oom_kill counter tells them apart."""
    from ymir_runner.supervise import death_message

    returned, reason = death_message(signal.SIGKILL, 3 << 30, "", oom_killed)
    assert int(returned) == code and says in reason and "at a peak of 3.0 GB" in reason


def test_a_crash_after_the_run_reported_success_keeps_the_success(crash_run):
    tree, process = crash_run("crash-at-exit")
    _, stderr = finish(process)
    assert process.returncode == 0, stderr[-3000:]
    outcome = tree.outcome(0, stderr)
    assert (outcome.state, outcome.percent) == (2, 1.0)
    assert outcome.last_stderr_line.startswith("ymir-runner: warning: the run died of SIGSEGV")
    assert outcome.last_stderr_line.endswith("after the run had finished and reported success")


def test_sigterm_still_reaches_the_run_and_a_sigkilled_command_takes_the_run_with_it(crash_run):
    from ymir_runner.shutdown import is_running

    tree, process = crash_run("sleeper")
    ready = process.stdout.readline().split()
    assert ready[:1] == ["READY"], process.stderr.read()
    run_pid = int(ready[1])
    assert run_pid != process.pid  # the command is the parent that watches the run
    process.send_signal(signal.SIGTERM)  # docker stop: to PID 1, the parent
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr[-3000:]
    outcome = tree.outcome(143, stderr)
    assert (outcome.state, outcome.return_code) == (4, 160004)
    assert outcome.last_stderr_line == "ymir-runner: error 160004: the task was stopped (SIGTERM)"

    tree, process = crash_run("sleeper")
    ready = process.stdout.readline().split()
    assert ready[:1] == ["READY"], process.stderr.read()
    run_pid, worker = int(ready[1]), int(ready[2])
    process.kill()  # as before the parent existed, the run's workers are left to their own watchdogs
    deadline = time.monotonic() + 10
    while is_running(run_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(run_pid), "the run outlived the command that was SIGKILLed"
    os.kill(worker, signal.SIGKILL)
    process.communicate(timeout=60)


# --- declared bounds --------------------------------------------------------------------------------------------

def test_param_bounds_are_checked_by_the_core_naming_the_key_the_value_and_the_bound():
    from ymir_runner import ConfigError, Param
    from ymir_runner.protocol.config import parse_config

    params = (Param("batch_size_per_gpu", 16, "images in memory at once", minimum=1, maximum=512),
              Param("epochs", Param.AUTO, "auto: 30", auto=int, minimum=1, maximum=10_000),
              Param("rate", 0.5, "a fraction", maximum=1.0))

    def parse(raw):
        return parse_config(raw, {p.name: p.default for p in params}, auto={p.name: p.auto for p in params if p.auto},
                            bounds={p.name: p.bounds for p in params}).hyper

    assert parse({"batch_size_per_gpu": "512", "epochs": "AUTO", "rate": -3}) == {
        "batch_size_per_gpu": 512, "epochs": "auto", "rate": -3.0}
    for raw, message in (
            ({"batch_size_per_gpu": 100000}, "config key 'batch_size_per_gpu': 100000 is not an integer from 1 to "
                                             "512"),
            ({"batch_size_per_gpu": "0"}, "config key 'batch_size_per_gpu': 0 is not an integer from 1 to 512"),
            ({"epochs": 10**9}, "config key 'epochs': 1000000000 is not an integer from 1 to 10000 or auto"),
            ({"rate": "1.5"}, "config key 'rate': 1.5 is not a number at most 1")):
        with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$") as refused:
            parse(raw)
        assert int(refused.value.code) == 300001
    for bad, reason in ((dict(default=4096, minimum=32, maximum=2048), "default 4096 is not an integer from 32 to"),
                        (dict(default=5, minimum=10, maximum=1), "no value is an integer from 10 to 1"),
                        (dict(default="x", maximum=1), "apply to numbers, not to 'x'"),
                        (dict(default=1, maximum="2"), "must be a finite number")):
        with pytest.raises(ValueError, match=reason):
            Param("key", help="", **bad)


def test_img_man_writes_the_bounds_under_the_help():
    import ymir_runner
    from ymir_runner import ExecutorSpec, Param, TaskKind
    from ymir_runner.imgman import render_template, template_entries
    from ymir_runner.testing import plugin_registry

    class Plugin:
        @staticmethod
        @ymir_runner.hookimpl
        def ymir_runner_register_executors():
            return [ExecutorSpec(name="bounded", tasks={TaskKind.TRAINING}, templates={TaskKind.TRAINING: (
                Param("batch_size_per_gpu", 16, "images per step; bounded: in memory at once", minimum=1, maximum=512),
                Param("epochs", Param.AUTO, "passes", auto=int, minimum=1, maximum=10_000)),
            })]

        @staticmethod
        @ymir_runner.hookimpl
        def ymir_runner_train(context):
            pass

    text = render_template(TaskKind.TRAINING, template_entries(plugin_registry({"bounded": Plugin}), TaskKind.TRAINING))
    assert ("# images per step; bounded: in memory at once\n# legal values: an integer from 1 to 512\n"
            "batch_size_per_gpu: 16\n") in text
    assert "# passes\n# legal values: an integer from 1 to 10000 or auto\nepochs: auto\n" in text


def test_torchs_allocator_message_is_an_out_of_memory_error_naming_what_it_could_not_get():
    from ymir_runner.errors import ReturnCode, classify, one_line

    error = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                         "you tried to allocate 80000000000 bytes. Error code 12 (Cannot allocate memory)")
    assert classify(error) is ReturnCode.OUT_OF_MEMORY
    assert one_line(error) == ("out of memory: torch's DefaultCPUAllocator could not get 74.5 GiB (80000000000 bytes) "
                               "for one tensor (RuntimeError)")
    older = RuntimeError("DefaultCPUAllocator: not enough memory: you tried to allocate 1024 bytes.")
    assert classify(older) is ReturnCode.OUT_OF_MEMORY
    assert classify(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is ReturnCode.GENERIC
