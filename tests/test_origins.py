"""Results name the user's files: the sandbox's map of where each asset came from (``in/sandbox-origins.tsv``),
read by the run's warnings and final summary, ``inspect`` and ``ymir-runner results``."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import shutil

import pytest
import toy_plugin
import yaml
from PIL import Image

from ymir_runner import sandbox
from ymir_runner.cli import main
from ymir_runner.dispatcher import run
from ymir_runner.origins import ORIGINS_FILE, Origins, read_origins, write_origins
from ymir_runner.sandbox import build_sandbox

TRUNCATED = "img_0003.jpg"


@pytest.fixture
def registry(ymir_registry, monkeypatch):
    ymir_registry.register(toy_plugin, "toy")
    monkeypatch.setattr("ymir_runner.plugins.build_plugin_manager", lambda **_: ymir_registry)
    return ymir_registry


def sha1_of(path) -> str:
    with open(path, "rb") as stream:
        return hashlib.sha1(stream.read()).hexdigest()


def photo(path, index) -> str:
    """A 96x80 JPEG with a red square; its content differs with ``index``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    picture = Image.new("RGB", (96, 80), (index * 20 % 256, 100, 150))
    picture.paste((255, 0, 0), (10 + index, 10, 40 + index, 40))
    picture.save(path, quality=90)
    return str(path)


def truncate(path) -> None:
    with open(path, "rb") as stream:
        data = stream.read()
    with open(path, "wb") as stream:
        stream.write(data[:len(data) * 2 // 3])


def voc_folder(tmp_path):
    """A VOC folder of 6 JPEGs (img_0003.jpg truncated) and an identical copy of img_0005.jpg, each with its .xml."""
    folder = tmp_path / "voc"
    for index in range(6):
        name = f"img_{index:04d}"
        photo(folder / "JPEGImages" / f"{name}.jpg", index)
        (folder / "Annotations").mkdir(exist_ok=True)
        (folder / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><object><name>red</name><bndbox><xmin>{10 + index}</xmin>"
            f"<ymin>10</ymin><xmax>{39 + index}</xmax><ymax>39</ymax></bndbox></object></annotation>")
    truncate(folder / "JPEGImages" / TRUNCATED)
    shutil.copy(folder / "JPEGImages" / "img_0005.jpg", folder / "JPEGImages" / "copy_of_5.jpg")
    (folder / "Annotations" / "copy_of_5.xml").write_text(
        (folder / "Annotations" / "img_0005.xml").read_text().replace("img_0005.jpg", "copy_of_5.jpg"))
    return folder


def yolo_folder(tmp_path):
    """The same images as YOLO: images/ + labels/ + classes.txt."""
    folder = tmp_path / "yolo"
    (folder / "labels").mkdir(parents=True)
    for index in range(6):
        name = f"img_{index:04d}"
        photo(folder / "images" / f"{name}.jpg", index)
        (folder / "labels" / f"{name}.txt").write_text(f"0 {(25 + index) / 96} 0.3125 {30 / 96} 0.375\n")
    truncate(folder / "images" / TRUNCATED)
    shutil.copy(folder / "images" / "img_0005.jpg", folder / "images" / "copy_of_5.jpg")
    shutil.copy(folder / "labels" / "img_0005.txt", folder / "labels" / "copy_of_5.txt")
    (folder / "classes.txt").write_text("red\n")
    return folder


FOLDERS = {"voc": (voc_folder, "JPEGImages/"), "yolo": (yolo_folder, "images/")}


def map_rows(work) -> list[list[str]]:
    with open(work / "in" / ORIGINS_FILE, encoding="utf-8") as stream:
        return [line.rstrip("\n").split("\t") for line in stream]


def run_stderr(env_file, registry, root=None) -> tuple[int, str]:
    """Run in this process with the core's log on a captured stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run(env_file, root=root, registry=registry)
    return code, err.getvalue()


def asset_line(work, image) -> str:
    digest = sha1_of(image)
    return f"{work}/in/assets/{digest[-2:]}/{digest}.jpg"


@pytest.mark.parametrize("kind", sorted(FOLDERS))
def test_the_sandbox_writes_where_each_asset_came_from_and_names_the_truncated_image(tmp_path, registry, kind,
                                                                                     capsys, monkeypatch):
    monkeypatch.setattr(sandbox.log, "handlers", [])  # the handler the command adds leaves with the test
    make, prefix = FOLDERS[kind]
    source = make(tmp_path)
    work = tmp_path / "work"
    assert main(["sandbox", str(source), "--out", str(work)]) == 0
    printed = capsys.readouterr()
    images = source / prefix.rstrip("/")
    truncated = asset_line(work, images / TRUNCATED)
    # the summary and the warning name the user's truncated file and the asset it became
    assert f"{prefix}{TRUNCATED}: truncated image, as {truncated}" in printed.out
    assert f"origins: {work}/in/{ORIGINS_FILE}" in printed.out
    assert f"{images / TRUNCATED}: truncated image: stored as it is" in printed.err
    rows = map_rows(work)
    assert rows[0][0].startswith("# ymir-runner sandbox origins")
    assert rows[1] == [f"# source: {source}"]
    body = {tuple(row) for row in rows[2:]}
    assert len(rows[2:]) == len(body) == 7  # one row per source file
    assert (truncated, f"{prefix}{TRUNCATED}") in body
    copy = asset_line(work, images / "img_0005.jpg")  # identical content: one asset, both files listed
    assert {(copy, f"{prefix}copy_of_5.jpg"), (copy, f"{prefix}img_0005.jpg")} <= body
    indexed = {line.split("\t")[0] for name in ("train-index.tsv", "val-index.tsv")
               for line in (work / "in" / name).read_text().splitlines()}
    assert {asset for asset, _ in body} == indexed  # the asset as the index files name it


def test_inspect_and_a_run_name_the_users_files(tmp_path, registry, capsys):
    source = voc_folder(tmp_path)
    work = tmp_path / "work"
    summary = build_sandbox(str(source), str(work), registry=registry, val_ratio=0.0, split="random")
    truncated = asset_line(work, source / "JPEGImages" / TRUNCATED)
    capsys.readouterr()
    assert main(["inspect", "--env", summary.env_file]) == 0
    printed = capsys.readouterr()
    named = f"{truncated} (JPEGImages/{TRUNCATED})"
    assert f"repaired (truncated image) at {work}/in/train-index.tsv" in printed.err
    assert f"{named}: decoded as far as its data goes" in printed.err
    assert f"training: 1 truncated image: re-upload complete copies of these images (e.g. {named})" in printed.out
    code, err = run_stderr(summary.env_file, registry)
    assert code == 0
    assert f"{named}: decoded as far as its data goes" in err
    assert f"training: repaired 1 truncated image (JPEGImages/{TRUNCATED})" in err  # the final summary


def mining_sandbox(tmp_path, registry, **options):
    """A toy training on the VOC folder, then a mining + inference sandbox of the same images with its model."""
    source = voc_folder(tmp_path)
    trained = build_sandbox(str(source), str(tmp_path / "train"), registry=registry)
    assert run_stderr(trained.env_file, registry)[0] == 0
    work = tmp_path / "work"
    summary = build_sandbox(str(source / "JPEGImages"), str(work), registry=registry, tasks=["mining", "infer"],
                            model=str(tmp_path / "train" / "out" / "models"), classes=["red"], **options)
    return source, work, summary


def test_results_name_the_users_files_of_mining_and_inference(tmp_path, registry, capsys):
    source, work, summary = mining_sandbox(tmp_path, registry)
    code, err = run_stderr(summary.env_file, registry)
    assert code == 0 and f"infer: repaired 1 truncated image ({TRUNCATED})" in err
    capsys.readouterr()
    assert main(["results", str(work / "out")]) == 0
    out = capsys.readouterr().out
    truncated = sha1_of(source / "JPEGImages" / TRUNCATED)
    copy = sha1_of(source / "JPEGImages" / "copy_of_5.jpg")
    assert f"your files: below {source / 'JPEGImages'} (map {work}/in/{ORIGINS_FILE})" in out
    assert f"{work}/out/result.tsv: 6 images, highest score first" in out
    assert any(line.split()[2:] == [f"{truncated}.jpg", TRUNCATED] for line in out.splitlines())
    assert any(line.split()[2:] == [f"{copy}.jpg", "copy_of_5.jpg,", "img_0005.jpg"] for line in out.splitlines())
    assert f"{work}/out/infer-result.json: 6 images, 5 boxes" in out
    assert f"  {TRUNCATED} ({truncated}.jpg): 1 box" in out
    assert "    class  score  x  y   w   h" in out and "    red    0.900  0  3  30  45" in out
    assert main(["results", str(work / "out"), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    ranked = {row["asset"]: row for row in document["mining"]}
    assert ranked[f"{truncated}.jpg"]["files"] == [TRUNCATED]
    assert [row["rank"] for row in document["mining"]] == list(range(1, 7))
    infer = {entry["asset"]: entry for entry in document["infer"]}
    assert infer[f"{copy}.jpg"]["files"] == ["copy_of_5.jpg", "img_0005.jpg"]
    assert sum(len(entry["boxes"]) for entry in infer.values()) == 5
    assert {"class_name": "red", "score": 0.9, "x": 0, "y": 3, "w": 30, "h": 45} in infer[f"{truncated}.jpg"]["boxes"]
    # the platform's own files keep the protocol's names
    assert all(line.split("\t")[0].startswith(f"{work}/in/assets/")
               for line in (work / "out" / "result.tsv").read_text().splitlines())
    assert set(json.loads((work / "out" / "infer-result.json").read_text())["detection"]) == set(infer)


def test_results_of_a_container_paths_tree_run_with_root(tmp_path, registry, capsys):
    source, work, summary = mining_sandbox(tmp_path, registry, container_paths=True)
    assert map_rows(work)[2][0].startswith("/in/assets/")
    code, err = run_stderr(summary.env_file, registry, root=str(work))
    assert code == 0 and f"({TRUNCATED})" in err
    capsys.readouterr()
    assert main(["results", str(work / "out"), "--env", summary.env_file, "--root", str(work)]) == 0
    assert f"  {TRUNCATED} ({sha1_of(source / 'JPEGImages' / TRUNCATED)}.jpg): 1 box" in capsys.readouterr().out


def test_results_without_a_map_name_assets_only(tmp_path, registry, capsys):
    _, work, summary = mining_sandbox(tmp_path, registry)
    assert run_stderr(summary.env_file, registry)[0] == 0
    (work / "in" / ORIGINS_FILE).unlink()
    capsys.readouterr()
    assert main(["results", str(work / "out")]) == 0
    out = capsys.readouterr().out
    assert f"no sandbox map (in/{ORIGINS_FILE}): assets are named by id only" in out
    assert "your file" not in out and TRUNCATED not in out


@pytest.mark.parametrize("content, message", [
    ("a.jpg 0.5\n", "result.tsv:1: expected '<image>\\t<score>', got 'a.jpg 0.5'"),
    ("a.jpg\tlots\n", "result.tsv:1: expected '<image>\\t<score>', got 'a.jpg\\tlots'"),
    (b"\xff\xfe\x00", "result.tsv is not UTF-8 text"),
])
def test_results_refuse_a_malformed_result_tsv_in_one_line(tmp_path, capsys, content, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.tsv").write_bytes(content if isinstance(content, bytes) else content.encode())
    assert main(["results", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"ymir-runner results: error: {out}/") and message in captured.err
    assert len(captured.err.splitlines()) == 1


@pytest.mark.parametrize("document, message", [
    ("{", "infer-result.json is not JSON"),
    ("[]", "infer-result.json: expected {\"detection\""),
    ('{"detection": {"a.jpg": {"boxes": 3}}}', "detection['a.jpg'] has no 'boxes' list"),
    ('{"detection": {"a.jpg": {"boxes": [{"box": {"x": "1", "y": 2, "w": 3, "h": 4}, "score": 0.5}]}}}',
     "detection['a.jpg'].boxes[0]: x, y, w, h and score must be numbers"),
])
def test_results_refuse_a_malformed_infer_result_in_one_line(tmp_path, capsys, document, message):
    out = tmp_path / "out"
    out.mkdir()
    (out / "infer-result.json").write_text(document)
    assert main(["results", str(out)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and len(captured.err.splitlines()) == 1


def test_results_usage_errors(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert main(["results", str(tmp_path / "out")]) == 2
    assert "holds neither result.tsv (mining) nor infer-result.json (inference)" in capsys.readouterr().err
    assert main(["results", str(tmp_path / "out"), "--root", str(tmp_path)]) == 2
    assert "--root re-roots the container paths of --env ENV_YAML: it cannot apply without it" in (
        capsys.readouterr().err)
    os.mkfifo(tmp_path / "out" / "result.tsv")  # never opened: reading a FIFO would block
    assert main(["results", str(tmp_path / "out")]) == 2
    assert "result.tsv is not a regular file" in capsys.readouterr().err


# --- a missing or garbled map ----------------------------------------------------------------------------------

def origin_warnings(err: str) -> list[str]:
    return [line for line in err.splitlines() if ORIGINS_FILE in line]


@pytest.mark.parametrize("damage", ["missing", "garbled", "folder", "partly"])
def test_a_missing_or_garbled_map_changes_nothing_but_one_warning(tmp_path, registry, damage):
    source = voc_folder(tmp_path)
    work = tmp_path / "work"
    summary = build_sandbox(str(source), str(work), registry=registry)
    path = work / "in" / ORIGINS_FILE
    good = path.read_text()
    code, err = run_stderr(summary.env_file, registry)
    assert code == 0 and not origin_warnings(err)
    before = {name: (work / "out" / "models" / name).read_bytes() for name in ("result.yaml",)}
    if damage == "missing":
        path.unlink()
    elif damage == "garbled":
        path.write_bytes(b"\x00\xffnot a map\n")
    elif damage == "folder":
        path.unlink()
        path.mkdir()
    else:  # the truncated image's row is broken, the others are fine
        digest = sha1_of(source / "JPEGImages" / TRUNCATED)
        path.write_text("\n".join(line.replace("\t", " ") if digest in line else line for line in good.splitlines()))
    code, damaged_err = run_stderr(summary.env_file, registry)
    assert code == 0
    warnings = origin_warnings(damaged_err)
    assert len(warnings) == 1, warnings
    expected = {"missing": "is missing: reports name assets only",
                "garbled": "(it does not start with '# ymir-runner sandbox origins'): reports name assets only",
                "folder": "(not a regular file): reports name assets only",
                "partly": "1 line is not '<asset>\\t<file>' (the first: line"}[damage]
    assert expected in warnings[0]
    assert f"({TRUNCATED})" not in damaged_err and "training: repaired 1 truncated image" in damaged_err
    if damage == "partly":
        assert re.search(r"\(JPEGImages/(img_000[0-9]|copy_of_5)\.jpg", damaged_err)  # the other rows still name
    result = yaml.safe_load((work / "out" / "models" / "result.yaml").read_text())
    assert result["best_stage_name"] == yaml.safe_load(before["result.yaml"])["best_stage_name"]


def test_a_platform_task_reads_no_map_and_says_nothing_of_it(tmp_path, registry, caplog):
    source = voc_folder(tmp_path)
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=registry, overrides={"task_id": "t-platform"})
    (tmp_path / "work" / "in" / ORIGINS_FILE).unlink()
    code, err = run_stderr(summary.env_file, registry)
    assert code == 0 and not origin_warnings(err)


# --- the map itself ----------------------------------------------------------------------------------------------

def test_file_names_with_tabs_line_breaks_and_backslashes_survive_the_map(tmp_path, caplog):
    digest = "0123456789abcdef0123456789abcdef01234567"
    odd = "a\tb\nc\\d\re.jpg"
    path = str(tmp_path / ORIGINS_FILE)
    assert write_origins(path, "/data/my\tset", [(f"/w/in/assets/67/{digest}.jpg", odd)]) == 1
    with caplog.at_level(logging.WARNING):
        origins = read_origins(path)
    assert not caplog.records
    assert origins is not None and origins.source == "/data/my\tset" and origins.of(f"{digest}.png") == (odd,)


def test_annotate_names_each_asset_once_after_its_path_and_line():
    first, second = "a" * 40, "b" * 40
    origins = Origins("/src", {first: ("x/one.jpg",), second: ("two.jpg", "copy.jpg", "c3.jpg", "c4.jpg")})
    assert origins.annotate(f"/w/in/annotations/{first}.txt:3: class 9 and /w/in/assets/aa/{first}.jpg") == (
        f"/w/in/annotations/{first}.txt:3 (x/one.jpg): class 9 and /w/in/assets/aa/{first}.jpg")
    assert origins.annotate(f"/w/in/annotations/{second}.xml:object 2") == (
        f"/w/in/annotations/{second}.xml:object 2 (two.jpg, copy.jpg, c3.jpg and 1 more)")
    unknown = f"/w/in/assets/cc/{'c' * 40}.jpg and {first}0"  # not in the map, and not an asset id
    assert origins.annotate(unknown) == unknown
    assert origins.originals(f"{second}.jpg, {first}.jpg") == ["two.jpg", "copy.jpg", "c3.jpg", "c4.jpg", "x/one.jpg"]
