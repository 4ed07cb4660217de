"""Hostile and careless files (issue 24): only regular files are read as data, nothing outside the tree is read,
copied or shown, every bad item is skipped and named, and nothing is left behind by a run that died.

Anything that could block or grow (a FIFO, /dev/zero) runs in a process of its own with a timeout and a memory
cap, so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import toy_plugin
import yaml

from ymir_runner import ModelError
from ymir_runner.cli import main
from ymir_runner.protocol import files
from ymir_runner.protocol.dataset import AnnotationReader, DatasetReader, SkipLog
from ymir_runner.protocol.env import load_env
from ymir_runner.protocol.files import UnreadableFile, read_text
from ymir_runner.sandbox import build_sandbox
from ymir_runner.sdk import sdk_env
from ymir_runner.shutdown import child_pids, is_running
from ymir_runner.testing import TaskTree, make_fake_distribution, write_png

#: A plugin for runs in a process of their own: it reads every set it is given, and can report what the ymir-exc
#: SDK sees (READER_SDK) and wait to be killed (READER_WAIT).
READER_PLUGIN = textwrap.dedent("""
    import os, time
    import ymir_runner
    from ymir_runner import ExecutorSpec, TaskKind

    @ymir_runner.hookimpl
    def ymir_runner_register_executors():
        return [ExecutorSpec(name="reader", tasks={TaskKind.TRAINING, TaskKind.MINING, TaskKind.INFER})]

    def sdk_report():
        from ymir_exc import dataset_reader, settings
        pairs = list(dataset_reader.item_paths(dataset_reader.DatasetType.TRAINING))
        print("SDK-ENV", settings.DEFAULT_ENV_FILE_PATH, flush=True)
        print("SDK-TRAINING", len(pairs), sum(os.path.isfile(image) for image, _ in pairs), flush=True)

    @ymir_runner.hookimpl
    def ymir_runner_train(context):
        boxes = sum(len(item.boxes) for item in context.training_set)
        list(context.validation_set)
        if os.environ.get("READER_SDK"):
            sdk_report()
        if os.environ.get("READER_WAIT"):
            print("READY", flush=True)
            time.sleep(600)
        with open(os.path.join(context.training_result.stage_dir("epoch_1"), "model.txt"), "w") as stream:
            stream.write(str(boxes))
        context.training_result.add_stage("epoch_1", ["model.txt"], {"mAP": 0.5})

    @ymir_runner.hookimpl
    def ymir_runner_mine(context):
        for item in context.candidates:
            context.mining_result.add(item.image, 0.5)

    @ymir_runner.hookimpl
    def ymir_runner_infer(context):
        for item in context.candidates:
            context.infer_result.add_empty(item.image)
""")

#: What a file that is no annotation file holds: it must never reach a log.
SECRET = "root:$6$SECRETHASH:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
#: Every run here is killed past this (a FIFO that blocks, /dev/zero read to the end).
TIMEOUT = 60


def _memory_cap() -> None:  # in the child: /dev/zero read whole must fail fast, not fill the machine
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


@pytest.fixture
def reader_env(tmp_path):
    """The environment of a process that finds the reader plugin, with a private temp folder."""
    site = str(tmp_path / "site")
    make_fake_distribution(site, dist_name="ymir-reader", module="ymir_reader_mod", source=READER_PLUGIN,
                           entry_point="reader")
    scratch = tmp_path / "scratch-tmp"
    scratch.mkdir()
    return dict(os.environ, PYTHONPATH=site, TMPDIR=str(scratch))


def run_tree(tree: TaskTree, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(tree.command(), capture_output=True, text=True, env=env, timeout=TIMEOUT,
                          preexec_fn=_memory_cap)


def training_tree(tmp_path, images: int = 8) -> TaskTree:
    return TaskTree(str(tmp_path / "task"), kinds=("training",), images=images, config={"plugin": "reader"})


def append_index(tree: TaskTree, lines: list[str], name: str = "/in/train-index.tsv") -> None:
    with open(tree.local(name), "a", encoding="utf-8", newline="\n") as stream:
        stream.writelines(line + "\n" for line in lines)


def last_line(stderr: str) -> str:
    return stderr.rstrip("\n").rsplit("\n", 1)[-1]


def monitor_line(tree: TaskTree) -> list[str]:
    with open(tree.local("/out/monitor.txt"), encoding="utf-8") as stream:
        return stream.readline().rstrip("\n").split("\t")


# --- the helper every text reader opens files with ------------------------------------------------------------

@pytest.fixture
def no_hang():
    """Fails a test of this process that blocks (a FIFO opened for reading) instead of hanging the suite."""
    def stop(*_):
        raise TimeoutError(f"blocked for {TIMEOUT} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(TIMEOUT)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_only_regular_files_of_bounded_size_are_opened(tmp_path, monkeypatch, no_hang):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    regular = tmp_path / "a.txt"
    regular.write_bytes(b"\xef\xbb\xbfhello\n")
    link = tmp_path / "link.txt"
    link.symlink_to(regular)
    assert read_text(str(link)) == "hello\n"  # a link to a regular file is fine; the byte-order mark is dropped
    refused = {str(fifo): "not a regular file (a FIFO)", "/dev/zero": "not a regular file (a character device)",
               str(tmp_path): "not a regular file (a folder)", str(regular) + "\0x": "the path holds a NUL byte"}
    for path, problem in refused.items():
        with pytest.raises(UnreadableFile) as caught:
            read_text(path)
        assert str(caught.value) == problem
    monkeypatch.setattr(files, "MAX_TEXT_BYTES", 4)
    with pytest.raises(UnreadableFile, match=r"^larger than 4 bytes \(9 bytes\)$"):
        read_text(str(regular))
    (tmp_path / "binary").write_bytes(b"ok\n\x89PNG secret")
    with pytest.raises(UnreadableFile, match=r"^not UTF-8 text \(at byte 3\)$"):
        read_text(str(tmp_path / "binary"), limit=100)


# --- runs: what the platform's users see --------------------------------------------------------------------------

def test_a_file_named_as_an_annotation_that_is_none_is_named_never_shown(tmp_path, ymir_registry):
    """An index line naming /etc/shadow as an annotation printed its first 10 lines in the warnings."""
    ymir_registry.register(toy_plugin, "toy")
    tree = TaskTree(str(tmp_path / "task"), kinds=("training",), images=8)
    secret = tmp_path / "shadow"
    secret.write_text(SECRET)
    annotation = tree.local(tree.annotations[0])
    with open(annotation, "a", encoding="utf-8") as stream:  # an annotation file with a box: its bad line is shown
        stream.write("0, 1, 2, three, 4\n")
    append_index(tree, [f"{tree.images[5]}\t{secret}"])
    outcome = tree.run(ymir_registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert "SECRETHASH" not in outcome.stderr and "daemon" not in outcome.stderr
    assert f"skipped (malformed line) at {secret}:1: no line of the file is a box, so its lines are not shown" \
        in outcome.stderr
    assert f"{annotation}:2: '0, 1, 2, three, 4'" in outcome.stderr  # a real annotation file's line is quoted
    assert "training: skipped 2 malformed line, 1 non-numeric field" in outcome.stderr


def test_special_files_as_images_and_annotations_are_skipped_counted_and_named(tmp_path, reader_env):
    """/dev/zero as an annotation grew to 3.3 GB in 3 s; a FIFO as an image or annotation blocked forever; a NUL
    byte in an annotation path stopped the task."""
    tree = training_tree(tmp_path, images=12)
    fifo = str(tmp_path / "fifo")
    os.mkfifo(fifo)
    spare = tree.images[6:]
    append_index(tree, [f"{spare[0]}\t/dev/zero", f"{spare[1]}\t{fifo}", f"{spare[2]}\t/in/annotations/a\0b.txt",
                        f"{fifo}\t{tree.annotations[0]}"])
    done = run_tree(tree, reader_env)
    assert done.returncode == 0, done.stderr
    assert "skipped (unreadable annotation) at /dev/zero: not a regular file (a character device)" in done.stderr
    assert f"skipped (unreadable annotation) at {fifo}: not a regular file (a FIFO)" in done.stderr
    assert "the path holds a NUL byte" in done.stderr
    assert f"train-index.tsv:{6 + 4}: {fifo}: not a regular file (a FIFO)" in done.stderr
    assert "training: skipped 3 unreadable annotation, 1 unreadable image" in done.stderr
    assert monitor_line(tree)[2:4] == ["1.0000", "2"]


@pytest.mark.parametrize("kind, problem", [
    ("fifo", "not a regular file (a FIFO)"),
    ("dev-zero", "not a regular file (a character device)"),
    ("too large", "larger than 1 GiB (1073741825 bytes)"),
])
def test_an_index_that_is_no_data_file_stops_the_task_naming_it(tmp_path, reader_env, kind, problem):
    tree = training_tree(tmp_path)
    index = tree.local("/in/train-index.tsv")
    os.remove(index)
    if kind == "fifo":
        os.mkfifo(index)
    elif kind == "dev-zero":
        os.symlink("/dev/zero", index)
    else:  # sparse: nothing is read
        with open(index, "wb") as stream:
            stream.truncate(files.MAX_INDEX_BYTES + 1)
    done = run_tree(tree, reader_env)
    assert done.returncode == 1
    assert last_line(done.stderr) == f"ymir-runner: error 300002: cannot read training index {index}: {problem}"
    assert monitor_line(tree)[3:] == ["4", "300002"]


@pytest.mark.parametrize("damage", ["utf-16", "one line not utf-8"])
def test_an_index_read_under_root_reaches_the_sdk_as_the_core_reads_it(tmp_path, reader_env, damage):
    """Under --root, a UTF-16 index or one non-UTF-8 line crashed the SDK bridge's re-rooting (160004)."""
    tree = training_tree(tmp_path)
    index = tree.local("/in/train-index.tsv")
    with open(index, encoding="utf-8") as stream:
        text = stream.read()
    if damage == "utf-16":
        data = text.encode("utf-16")
    else:
        data = text.encode() + b"/in/assets/\xff\xfe.png\t/in/annotations/x.txt\n"
    with open(index, "wb") as stream:
        stream.write(data)
    done = run_tree(tree, dict(reader_env, READER_SDK="1"))
    assert done.returncode == 0, done.stderr
    assert "SDK-TRAINING 4 4" in done.stdout  # the four images, each found in the local tree
    if damage != "utf-16":
        assert f"skipped (undecodable index line) at {index}:5: not UTF-8 text" in done.stderr


def test_the_sdk_bridge_reads_index_files_with_the_core_reader(tmp_path, monkeypatch):
    dataset_reader = pytest.importorskip("ymir_exc.dataset_reader")
    monkeypatch.delenv("YMIR_RUNNER_ROOT", raising=False)
    tree = TaskTree(str(tmp_path / "tree"), kinds=("training",), images=4)
    index = tree.local("/in/train-index.tsv")
    with open(index, encoding="utf-8") as stream:
        lines = stream.read().splitlines()
    with open(index, "wb") as stream:
        stream.write("\r\n".join(lines[:1] + ["", "  "] + lines[1:]).encode("utf-16") + "\r\n".encode("utf-16-le"))
    env = load_env(tree.env_file, root=tree.root)
    reader = DatasetReader(env.input.training_index_file, annotations=None, skips=SkipLog(), name="training",
                           root=env.root)
    with sdk_env(env) as path:
        assert path.startswith(f"/proc/{os.getpid()}/fd/")  # an unnamed file: the kernel deletes it with the run
        pairs = list(dataset_reader.item_paths(dataset_reader.DatasetType.TRAINING))
        assert [image for image, _ in pairs] == reader.paths() == [tree.local(i) for i in tree.images[:2]]
    assert not os.path.exists(path)


def test_no_copy_of_env_or_index_files_outlives_a_killed_run(tmp_path, reader_env):
    """Temp copies of env and index files were left behind by a run that died."""
    tree = training_tree(tmp_path)
    before = sorted(os.listdir(tree.local("/in")))
    scratch = reader_env["TMPDIR"]
    process = subprocess.Popen(tree.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(reader_env, READER_SDK="1", READER_WAIT="1"), preexec_fn=_memory_cap)
    try:
        printed = _read_until(process, "READY")
        env_path = next(line.split()[1] for line in printed if line.startswith("SDK-ENV"))
        # the run is the supervising `ymir-runner run` process's child (ymir_runner.supervise)
        run_pid = int(env_path.split("/")[2])
        assert run_pid in {process.pid, *child_pids(process.pid)}, printed
        assert env_path.startswith(f"/proc/{run_pid}/fd/"), printed
        with open(env_path, encoding="utf-8") as stream:  # the SDK's copy is readable while the run lives
            seen = yaml.safe_load(stream)
        assert seen["input"]["training_index_file"].startswith(f"/proc/{run_pid}/fd/")
        assert "SDK-TRAINING 4 4" in printed
    finally:
        process.send_signal(signal.SIGKILL)  # the run dies with it (PDEATHSIG)
        process.communicate(timeout=TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while is_running(run_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(env_path)
    assert os.listdir(scratch) == []
    assert sorted(os.listdir(tree.local("/in"))) == before
    leftovers = [name for name in os.listdir(tree.out_dir) if "env" in name or "index" in name]
    assert leftovers == []


def _read_until(process: subprocess.Popen, marker: str) -> list[str]:
    """The lines ``process`` printed up to ``marker``; fails after TIMEOUT seconds."""
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in process.stdout or ()], daemon=True).start()
    printed: list[str] = []
    deadline = time.monotonic() + TIMEOUT
    while marker not in printed:
        try:
            printed.append(lines.get(timeout=max(deadline - time.monotonic(), 0.01)))
        except queue.Empty:
            pytest.fail(f"no {marker!r} from the run: {printed}")
    return printed


def test_a_nan_quality_or_angle_skips_the_box_counted(tmp_path):
    classes = ("cat",)
    write_png(str(tmp_path / "a.png"), 64, 48)
    write_png(str(tmp_path / "b.png"), 64, 48, color=(1, 2, 3))
    (tmp_path / "a.txt").write_text("0, 1, 2, 10, 12, nan, 0\n0, 1, 2, 11, 12, -1.0, inf\n0, 3, 3, 9, 9, 0.5, 0\n")
    (tmp_path / "b.xml").write_text("<annotation><object><name>cat</name><box_quality>NaN</box_quality><bndbox>"
                                    "<xmin>1</xmin><ymin>2</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
                                    "</annotation>")
    for fmt, image, annotation, kept in (("det-ark", "a.png", "a.txt", 1), ("det-voc", "b.png", "b.xml", 0)):
        index = tmp_path / f"{fmt}.tsv"
        index.write_text(f"{tmp_path / image}\t{tmp_path / annotation}\n")
        skips = SkipLog()
        reader = DatasetReader(str(index), annotations=AnnotationReader(classes, fmt, skips), skips=skips,
                               name="training")
        (item,) = list(reader)
        assert len(item.boxes) == kept and all(box.quality == 0.5 for box in item.boxes)
        assert skips.counts["non-numeric field"] == (2 if fmt == "det-ark" else 1)


# --- sandbox ---------------------------------------------------------------------------------------------------

@pytest.fixture
def registry(ymir_registry):
    ymir_registry.register(toy_plugin, "toy")
    return ymir_registry


def coco_source(tmp_path, images, annotations):
    folder = tmp_path / "coco"
    for number, _ in enumerate(images, 1):
        write_png(str(folder / "images" / f"{number}.png"), 100, 80, color=(number, 9, 9))
    coco = {"images": [{"id": number, "file_name": name, "width": 100, "height": 80}
                       for number, name in enumerate(images, 1)],
            "categories": [{"id": 1, "name": "cat"}],
            "annotations": [{"id": number, "image_id": image, "category_id": 1, "bbox": bbox}
                            for number, (image, bbox) in enumerate(annotations, 1)]}
    (folder / "instances.json").write_text(json.dumps(coco))
    return folder


def test_sandbox_refuses_coco_file_names_outside_source_naming_each(tmp_path, registry, monkeypatch, capsys):
    """A COCO file_name of /etc/shadow or ../../../../etc/passwd copied them into the work tree."""
    monkeypatch.setattr("ymir_runner.plugins.build_plugin_manager", lambda **_: registry)
    secret = tmp_path / "outside" / "secret.png"
    write_png(str(secret), 10, 10)
    climb = "../" * 12 + str(secret).lstrip("/")
    source = coco_source(tmp_path, ["1.png", str(secret), climb, "2.png"], [(1, [10, 10, 20, 20])])
    work = tmp_path / "work"
    assert main(["sandbox", str(source), "--out", str(work)]) == 2
    message = last_line(capsys.readouterr().err)
    assert message.startswith(f"ymir-runner sandbox: error: COCO file {source / 'instances.json'} names 2 image(s) "
                              f"found only outside SOURCE {source}, which the sandbox never reads or copies: ")
    assert f"images[1] file_name '{secret}' ('{secret}')" in message
    assert f"images[2] file_name '{climb}' ('{secret}')" in message
    assert not work.exists()


def model_folder(tmp_path, *extra_files: str):
    """A training's /out/models: stage epoch_1 with model.json, and ``extra_files`` listed in it."""
    models = tmp_path / "models"
    (models / "epoch_1").mkdir(parents=True)
    (models / "epoch_1" / "model.json").write_text("{}")
    (models / "result.yaml").write_text(yaml.safe_dump({
        "best_stage_name": "epoch_1",
        "model_stages": {"epoch_1": {"stage_name": "epoch_1", "timestamp": 1, "mAP": 0.5,
                                     "files": ["model.json", *extra_files]}}}))
    return models


def test_sandbox_refuses_a_model_listing_files_outside_its_folder(tmp_path, registry):
    """A --model result.yaml listing /etc/passwd or ../../../../etc/passwd copied them into the work tree."""
    (tmp_path / "secret.bin").write_text("secret")
    climb = "../../secret.bin"
    models = model_folder(tmp_path, "/etc/passwd", climb)
    source = tmp_path / "images"
    write_png(str(source / "a.png"), 32, 32)
    work = tmp_path / "work"
    with pytest.raises(ModelError) as refused:
        build_sandbox(str(source), str(work), registry=registry, tasks=["mining"], model=str(models),
                      classes=["cat"])
    assert str(refused.value) == (f"{models}/result.yaml lists 2 file(s) outside {models}, which the sandbox never "
                                  f"copies: '/etc/passwd' (stage epoch_1), '{climb}' (stage epoch_1)")
    assert not work.exists()


@pytest.mark.parametrize("task", ["training", "mining"])
def test_sandbox_skips_fifos_and_devices_in_source_and_names_them(tmp_path, reader_env, task):
    """sandbox with a link to /dev/zero or a FIFO in SOURCE hung forever."""
    source = tmp_path / "yolo"
    for number in range(3):
        write_png(str(source / f"{number}.png"), 40, 30, color=(number, 1, 1))
        (source / f"{number}.txt").write_text("0 0.5 0.5 0.5 0.5\n")
    (source / "classes.txt").write_text("cat\n")
    os.mkfifo(source / "fifo.png")
    os.mkfifo(source / "1x.txt")
    (source / "zero.png").symlink_to("/dev/zero")
    (source / "2x.txt").symlink_to("/dev/zero")
    (source / "gone.png").symlink_to(tmp_path / "nowhere.png")
    work = tmp_path / "work"
    options = ["--model", str(model_folder(tmp_path)), "--classes", "cat"] if task == "mining" else []
    done = subprocess.run([sys.executable, "-m", "ymir_runner", "sandbox", str(source), "--out", str(work),
                           "--task", task, *options], capture_output=True, text=True, env=reader_env,
                          timeout=TIMEOUT, preexec_fn=_memory_cap)
    assert done.returncode == 0, done.stderr
    assert "images: 3 (" in done.stdout
    assert "skipped: 5 (5 not a regular file)" in done.stdout
    for name, kind in (("fifo.png", "a FIFO"), ("1x.txt", "a FIFO"), ("zero.png", "a character device"),
                       ("2x.txt", "a character device"), ("gone.png", "a dangling link")):
        assert f"skipped (not a regular file) at {source / name}: {kind}: not read" in done.stderr


def test_sandbox_skips_nan_and_overflowing_boxes_naming_them(tmp_path, registry, caplog):
    """A NaN or 1e308 box (COCO or YOLO) printed a raw traceback and built nothing."""
    nan, huge = float("nan"), 1e308
    source = coco_source(tmp_path, ["1.png", "2.png"], [(1, [10, 10, 20, 20]), (1, [nan, 1, 2, 3]),
                                                        (2, [huge, 0, huge, 5]), (2, [5, 5, 10, 10])])
    with caplog.at_level(logging.WARNING):
        summary = build_sandbox(str(source), str(tmp_path / "coco-work"), registry=registry)
    assert summary.boxes == 2 and summary.skipped == {"malformed box": 2}
    for number in (1, 2):
        assert f"skipped (malformed box) at {source / 'instances.json'}:annotations[{number}]: " in caplog.text
    caplog.clear()

    yolo = tmp_path / "yolo"
    write_png(str(yolo / "a.png"), 40, 30)
    (yolo / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n0 nan 0.5 0.2 0.2\n0 1e308 0.5 1e308 0.2\n0 0.5 0.5 inf 1\n")
    (yolo / "classes.txt").write_text("cat\n")
    with caplog.at_level(logging.WARNING):
        summary = build_sandbox(str(yolo), str(tmp_path / "yolo-work"), registry=registry)
    assert summary.boxes == 1 and summary.skipped == {"malformed box": 3}
    for number in (2, 3, 4):
        assert f"skipped (malformed box) at {yolo / 'a.txt'}:{number}: " in caplog.text


def test_sandbox_reads_no_split_list_outside_source(tmp_path, registry, caplog):
    outside = tmp_path / "elsewhere.txt"
    outside.write_text(SECRET)
    source = tmp_path / "yolo"
    for name in ("train/a", "val/b"):
        write_png(str(source / f"{name}.png"), 40, 30, color=(len(name), 1, 1))
        (source / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (source / "data.yaml").write_text(yaml.safe_dump({"names": ["cat"], "train": str(outside), "val": "val"}))
    with caplog.at_level(logging.WARNING):
        summary = build_sandbox(str(source), str(tmp_path / "work"), registry=registry)
    assert summary.skipped == {"reference outside SOURCE": 1}
    assert (f"skipped (reference outside SOURCE) at {source / 'data.yaml'} (train): list file {outside} is outside "
            f"SOURCE {source}: not read") in caplog.text
    assert "SECRETHASH" not in caplog.text

