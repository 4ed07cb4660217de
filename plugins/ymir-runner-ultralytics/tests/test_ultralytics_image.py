"""The AGPL image variant (docker/Dockerfile.ultralytics) without a docker engine: its instructions, and the weights
command it runs while building."""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

pytest.importorskip("ultralytics", reason="the ultralytics plugin's tests run in .venv-ultralytics (see conftest.py)")
pytest.importorskip("ymir_runner_ultralytics", reason="ymir-runner-ultralytics is not installed")

from ymir_runner_ultralytics.environment import DEFAULT_WEIGHTS_DIR, WEIGHTS_ENV_VAR  # noqa: E402

from ymir_runner.testing import dockerfile_instructions  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "docker" / "Dockerfile.ultralytics"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of docker/Dockerfile.ultralytics."""
    return dockerfile_instructions(str(DOCKERFILE))


def test_the_image_runs_start_sh_and_the_platform_can_cat_img_man():
    steps = instructions()
    assert not [args for name, args in steps if name == "ENTRYPOINT"]
    assert [json.loads(args) for name, args in steps if name == "CMD"] == [["bash", "/usr/bin/start.sh"]]
    runs = " ".join(args for name, args in steps if name == "RUN")
    assert "ymir-runner img-man --out /img-man --gpu-count 1" in runs


def test_every_copy_source_exists_in_the_build_context():
    for name, args in instructions():
        if name != "COPY" or "--from=" in args:
            continue
        *sources, _destination = [part for part in shlex.split(args) if not part.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"COPY source {source} does not exist"


def test_the_image_installs_this_plugin_bakes_the_weights_and_says_it_is_agpl():
    steps = instructions()
    runs = " ".join(args for name, args in steps if name == "RUN")
    assert "/src/ymir-runner/plugins/ymir-runner-ultralytics" in runs
    assert "ymir-runner ultralytics-weights --out /app/ultralytics-weights $WEIGHTS" in runs
    weights = 'WEIGHTS="yolo26n yolo26s yolo26m yolo26n-seg yolo26s-seg yolo26n-sem yolo26s-sem"'
    assert weights in [args for name, args in steps if name == "ARG"]
    assert f"{WEIGHTS_ENV_VAR}={DEFAULT_WEIGHTS_DIR}" in " ".join(args for name, args in steps if name == "ENV")
    assert "LICENSE /app/LICENSE-AGPL-3.0" in runs
    assert 'org.opencontainers.image.licenses="AGPL-3.0-only AND Apache-2.0"' in [
        args for name, args in steps if name == "LABEL"]


def test_the_weights_command_checks_the_files_it_keeps_and_refuses_unknown_names(trained, tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    best = trained.outcome.result_yaml()["best_stage_name"]
    shutil.copyfile(os.path.join(trained.tree.out_dir, "models", best, "last.pt"), folder / "yolo26n.pt")
    environment = {**os.environ, "YOLO_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "ymir_runner", "ultralytics-weights", "--out", str(folder),
                           "yolo26n"], capture_output=True, text=True, env=environment)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(folder / "yolo26n.pt")]  # present: kept, loaded, nothing fetched
    (folder / "yolo26s.pt").write_bytes(b"an interrupted download")
    done = subprocess.run([sys.executable, "-m", "ymir_runner", "ultralytics-weights", "--out", str(folder),
                           "yolo26s"], capture_output=True, text=True, env=environment)
    assert done.returncode != 0 and "is not an ultralytics checkpoint" in done.stderr
    done = subprocess.run([sys.executable, "-m", "ymir_runner", "ultralytics-weights", "--out", str(folder),
                           "yolo99n"], capture_output=True, text=True, env=environment)
    assert done.returncode != 0 and "unknown model names ['yolo99n']" in done.stderr
