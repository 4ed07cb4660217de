"""The executor image, built and run the way the platform runs it.

docker/build.sh builds docker/Dockerfile FROM a local Debian base (docker/base.sh: debootstrap, so no registry
is needed; reused while it exists) with its wheelhouse and no network in the build. The platform then registers
the image with `docker run --rm IMAGE cat /img-man/<file>` and runs each task as
`docker run --rm -v WORK/in:/in:ro -v WORK/out:/out --user UID:GID --shm-size=1g IMAGE`, with no command, here
on trees made by `ymir-runner sandbox --container-paths` and checked with `ymir-runner verify`.

Marked docker and slow (`python -m pytest --slow`: .ci/run, which installs and starts the engine). Skipped with
the reason when no docker engine answers `docker info`, or when the base image is missing and docker/base.sh
cannot make it (root and debootstrap).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import yaml
from PIL import Image, ImageDraw

import ymir_runner
from ymir_runner.plugins import DISABLE_ENV_VAR
from ymir_runner.protocol.env import MANIFEST_FILE, TEMPLATE_FILES, TaskKind

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = pathlib.Path(__file__).resolve().parents[1]
BASE_SH = REPO / "docker" / "base.sh"
BUILD_SH = REPO / "docker" / "build.sh"
BASE = "ymir-runner-base:bookworm"
CPU_TAG, CUDA_TAG = "ymir-runner:test-cpu", "ymir-runner:test-cuda"
XDG_CACHE = pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache")
CACHE = pathlib.Path(os.environ.get("YMIR_RUNNER_CACHE") or XDG_CACHE / "ymir-runner")  # as docker/build.sh
UID = GID = 1000  # the platform's uid is not the caller's and has no passwd entry in the image
CLASSES = ["box", "disc"]
TINY = {"epochs": 2, "min_steps": 0, "save_period": 1, "img_size": 64, "batch_size_per_gpu": 4,
        "num_workers_per_gpu": 1}


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def ymir_runner_cli(*args: str) -> subprocess.CompletedProcess:
    """The host's ymir-runner (the same sources as the image's), its installed plugins unblocked (conftest.py)."""
    env = {name: value for name, value in os.environ.items() if name != DISABLE_ENV_VAR}
    return subprocess.run([sys.executable, "-m", "ymir_runner", *args], capture_output=True, text=True, timeout=120,
                          env=env)


@pytest.fixture(scope="session")
def engine() -> None:
    if shutil.which("docker") is None:
        pytest.skip("no docker client on PATH")
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("no docker engine: `docker info` timed out")
    if info.returncode != 0:
        why = (info.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"no docker engine (`docker info` failed: {why}); .ci/run installs and starts one as root")


@pytest.fixture(scope="session")
def base_image(engine: None) -> str:
    """The debootstrap base, made once and then reused (docker/base.sh keeps an image that exists)."""
    if docker("image", "inspect", BASE).returncode != 0:
        if os.geteuid() != 0 or shutil.which("debootstrap") is None:
            pytest.skip(f"no base image {BASE}, and docker/base.sh cannot make one here: it needs root and "
                        "debootstrap (apt-get install -y debootstrap)")
        made = subprocess.run(["bash", str(BASE_SH)], capture_output=True, text=True, timeout=900)
        assert made.returncode == 0, made.stderr[-3000:]
    return BASE


def build(*options: str) -> str:
    """docker/build.sh with these options; the tag it printed. The test tag's earlier image (a run that stopped
    before its clean-up) is removed first: rebuilt under the same tag it would stay on disk, untagged."""
    docker("rmi", "--force", options[options.index("--tag") + 1])
    done = subprocess.run(["bash", str(BUILD_SH), *options], capture_output=True, text=True, timeout=1800,
                          env=dict(os.environ, PYTHON=sys.executable))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-5000:]
    return done.stdout.split()[-1]


@pytest.fixture(scope="session")
def cpu_image(base_image: str) -> Iterator[str]:
    """The CPU image, removed after the session: each is over 1 GB, and a machine that runs the tests again and
    again (CI on one host) would otherwise fill its disk. The base is kept (docker/base.sh reuses it)."""
    yield build("--base", base_image, "--wheelhouse", str(CACHE / "wheelhouse-cpu"), "--tag", CPU_TAG)
    docker("rmi", "--force", CPU_TAG)


# --- the tasks' trees -------------------------------------------------------------------------------------------

def shapes_source(folder: pathlib.Path, images: int, *, seed: int, labelled: bool = True) -> pathlib.Path:
    """YOLO-labelled 64x64 pictures of boxes and discs (or the pictures alone)."""
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for index in range(images):
        picture = Image.new("RGB", (64, 64), (rng.randint(0, 90),) * 3)
        draw, labels = ImageDraw.Draw(picture), []
        for _ in range(rng.randint(1, 2)):
            size, x, y, kind = rng.randint(14, 28), rng.randint(0, 34), rng.randint(0, 34), rng.randint(0, 1)
            shape = draw.rectangle if kind == 0 else draw.ellipse
            shape([x, y, x + size - 1, y + size - 1], fill=(230, 60 + 150 * kind, 40))
            labels.append(f"{kind} {(x + size / 2) / 64:.5f} {(y + size / 2) / 64:.5f} {size / 64:.5f} {size / 64:.5f}")
        picture.save(folder / f"shape_{index:03d}.png")
        if labelled:
            (folder / f"shape_{index:03d}.txt").write_text("\n".join(labels) + "\n")
    if labelled:
        (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return folder


def sandbox(source: pathlib.Path, work: pathlib.Path, *options: str, config: dict | None = None) -> pathlib.Path:
    sets = [item for key, value in (config or {}).items() for item in ("--set", f"{key}={value}")]
    done = ymir_runner_cli("sandbox", str(source), "--out", str(work), "--container-paths", *sets, *options)
    assert done.returncode == 0, done.stderr
    for folder in (work / "out", work / "out" / "tensorboard"):  # the platform's, writable by the task's uid
        os.chmod(folder, 0o777)
    return work


def platform_run(image: str, work: pathlib.Path, *extra: str) -> list[str]:
    return ["docker", "run", "--rm", "-v", f"{work}/in:/in:ro", "-v", f"{work}/out:/out", "--user", f"{UID}:{GID}",
            "--shm-size=1g", *extra, image]


def run_task(image: str, work: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(platform_run(image, work), capture_output=True, text=True, timeout=600)


def verify(work: pathlib.Path, *options: str) -> None:
    done = ymir_runner_cli("verify", str(work / "out"), "--env", str(work / "in" / "env.yaml"), "--root", str(work),
                           *options)
    assert done.returncode == 0, done.stdout + done.stderr


def owners(out: pathlib.Path) -> set[int]:
    """The owners of everything the task wrote under /out (/out and /out/tensorboard are the platform's)."""
    return {path.lstat().st_uid for path in out.rglob("*") if path != out / "tensorboard"}


@pytest.fixture(scope="module")
def trained(cpu_image: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path,
                                                                             subprocess.CompletedProcess]:
    root = tmp_path_factory.mktemp("trained")
    work = sandbox(shapes_source(root / "shapes", 16, seed=1), root / "work", "--val-ratio", "0.25", config=TINY)
    return work, run_task(cpu_image, work)


# --- the image --------------------------------------------------------------------------------------------------

def test_the_image_records_every_installed_version(cpu_image):
    done = docker("run", "--rm", cpu_image, "cat", "/app/pip-freeze.txt")
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and lines and all("==" in line for line in lines), done.stdout
    assert f"ymir-runner=={ymir_runner.__version__}" in lines
    assert any(line.startswith("torch==") and line.endswith("+cpu") for line in lines), lines


def test_registration_cats_each_img_man_file_as_exactly_the_img_man_command_writes_it(cpu_image, tmp_path):
    expected = tmp_path / "img-man"
    written = ymir_runner_cli("img-man", "--out", str(expected))
    assert written.returncode == 0, written.stderr
    names = sorted(str(path.relative_to(expected)) for path in expected.rglob("*") if path.is_file())
    assert MANIFEST_FILE in names and f"det/{TEMPLATE_FILES[TaskKind.TRAINING]}" in names, names
    for name in names:  # the manifest and each object type's folder (det/, semantic-seg/)
        done = docker("run", "--rm", cpu_image, "cat", f"/img-man/{name}")
        assert (done.returncode, done.stderr) == (0, ""), name
        assert isinstance(yaml.safe_load(done.stdout), dict), name
        assert done.stdout == (expected / name).read_text(), name


# --- tasks ------------------------------------------------------------------------------------------------------

def test_training_as_a_foreign_uid_passes_verify(trained):
    work, done = trained
    assert done.returncode == 0, done.stderr[-3000:]
    verify(work)
    assert owners(work / "out") == {UID}
    result = yaml.safe_load((work / "out" / "models" / "result.yaml").read_text())
    best = result["model_stages"][result["best_stage_name"]]
    assert {"model.pt", "model.onnx"} <= set(best["files"])  # the image can export ONNX
    assert any(path.name.startswith("events.out.tfevents") for path in (work / "out" / "tensorboard").iterdir())


def test_mining_and_inference_with_the_trained_model(cpu_image, trained, tmp_path):
    models = trained[0] / "out" / "models"
    source = shapes_source(tmp_path / "new", 6, seed=2, labelled=False)
    work = sandbox(source, tmp_path / "work", "--task", "mining,infer", "--format", "images",
                   "--model", str(models), "--classes", ",".join(CLASSES))
    done = run_task(cpu_image, work)
    assert done.returncode == 0, done.stderr[-3000:]
    verify(work)
    assert owners(work / "out") == {UID}
    assert len((work / "out" / "result.tsv").read_text().splitlines()) == 6


def test_inference_on_original_file_names(cpu_image, trained, tmp_path):
    """Dataset inference may give /in/assets/<original file name> instead of the sha1 layout."""
    models = trained[0] / "out" / "models"
    source = shapes_source(tmp_path / "new", 4, seed=3, labelled=False)
    work = sandbox(source, tmp_path / "work", "--task", "infer", "--format", "images",
                   "--model", str(models), "--classes", ",".join(CLASSES))
    originals = {hashlib.sha1(path.read_bytes()).hexdigest(): path.name for path in source.glob("*.png")}
    index, candidates = work / "in" / "candidate-index.tsv", []
    for line in index.read_text().splitlines():
        stored = work / line.lstrip("/")
        renamed = f"/in/assets/{originals[stored.stem]}"
        stored.rename(work / renamed.lstrip("/"))
        candidates.append(renamed)
    index.write_text("\n".join(candidates) + "\n")
    done = run_task(cpu_image, work)
    assert done.returncode == 0, done.stderr[-3000:]
    verify(work)
    assert owners(work / "out") == {UID}
    infer = yaml.safe_load((work / "out" / "infer-result.json").read_text())
    assert sorted(infer["detection"]) == sorted(originals.values())


def test_docker_stop_during_training_reports_a_failure_and_keeps_result_yaml_valid(cpu_image, tmp_path):
    work = sandbox(shapes_source(tmp_path / "shapes", 16, seed=4), tmp_path / "work", "--val-ratio", "0.25",
                   config={**TINY, "epochs": 500})
    name = f"ymir-runner-test-stop-{os.getpid()}"
    running = subprocess.Popen(platform_run(cpu_image, work, "--name", name), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (work / "out" / "models" / "result.yaml").exists():  # training is under way: a stage is saved
            assert running.poll() is None and time.monotonic() < deadline, running.communicate()[1][-3000:]
            time.sleep(0.5)
        stopped = docker("stop", "--time", "10", name, timeout=60)  # SIGTERM, SIGKILL 10 s later
        assert stopped.returncode == 0, stopped.stderr
        _out, err = running.communicate(timeout=60)
    finally:
        if running.poll() is None:
            docker("kill", name)
            running.wait()
    assert running.returncode == 143, err[-3000:]  # 128 + SIGTERM: the runner stopped in time
    state, code = (work / "out" / "monitor.txt").read_text().splitlines()[0].split("\t")[3:5]
    assert (state, code) == ("4", "160004")
    verify(work, "--failed")  # result.yaml, present, is still valid
    assert owners(work / "out") == {UID}


def test_a_tensorboard_folder_the_task_cannot_write_does_not_fail_it(cpu_image, tmp_path):
    work = sandbox(shapes_source(tmp_path / "shapes", 8, seed=5), tmp_path / "work", "--val-ratio", "0.25",
                   config={**TINY, "epochs": 1, "export_onnx": False})
    tensorboard = work / "out" / "tensorboard"
    tensorboard.chmod(0o755)  # created by the platform (root), not writable by the task's uid
    done = run_task(cpu_image, work)
    assert done.returncode == 0, done.stderr[-3000:]
    verify(work)
    assert "tensorboard is switched off for this run" in done.stderr
    assert not list(tensorboard.iterdir())


# --- the CUDA image ---------------------------------------------------------------------------------------------

def test_the_cuda_dockerfile_builds_on_a_local_base_and_lists_the_plugins(base_image, cpu_image, request):
    """No CUDA base can be pulled here: the CUDA Dockerfile is built on the Debian base with the CPU wheelhouse
    (torch from it), and what can be checked is: the core imports, every first-party plugin is listed, and the
    templates ask for a GPU."""
    image = build("--cuda", "--base", base_image, "--wheelhouse", str(CACHE / "wheelhouse-cpu"), "--tag", CUDA_TAG)
    request.addfinalizer(lambda: docker("rmi", "--force", CUDA_TAG))
    listed = docker("run", "--rm", image, "ymir-runner", "plugins")
    assert listed.returncode == 0, listed.stderr
    for plugin in sorted((REPO / "plugins").glob("*/setup.cfg")):
        assert f"({plugin.parent.name} " in listed.stdout, listed.stdout
    imported = docker("run", "--rm", image, "python", "-c", "import ymir_runner.cli, ymir_runner_detection")
    assert imported.returncode == 0, imported.stderr
    for folder in ("det", "semantic-seg"):  # the object types of the image's manifest, object_type: [2, 3]
        template = docker("run", "--rm", image, "cat", f"/img-man/{folder}/{TEMPLATE_FILES[TaskKind.TRAINING]}")
        assert yaml.safe_load(template.stdout)["gpu_count"] == 1, folder
