"""The executor image without a docker engine: the Dockerfiles' instructions, and docker/start.sh run as the
platform runs the image (no arguments, /in and /out redirected to a local tree, any uid, read-only /in)."""

from __future__ import annotations

import glob
import json
import os
import pathlib
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from ymir_runner.testing import (
    TaskTree,
    cannot_run_as,
    dockerfile_instructions,
    make_fake_distribution,
    make_read_only,
)
from ymir_runner.verify import verify_out

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCKERFILES = ["docker/Dockerfile", "docker/Dockerfile.cuda"]
START_SH = REPO / "docker" / "start.sh"
NOBODY = 65534
CANNOT_RUN_AS_NOBODY = cannot_run_as(NOBODY)  # .ci/run makes the interpreter reachable for other uids


def instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of one of the repository's Dockerfiles."""
    return dockerfile_instructions(str(REPO / dockerfile))


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_platform_can_cat_img_man_and_run_the_default_command(dockerfile):
    steps = instructions(dockerfile)
    assert not [args for name, args in steps if name == "ENTRYPOINT"], "an ENTRYPOINT swallows `cat /img-man/...`"
    commands = [json.loads(args) for name, args in steps if name == "CMD"]
    assert commands == [["bash", "/usr/bin/start.sh"]]
    copies = [shlex.split(args) for name, args in steps if name == "COPY"]
    assert ["img-man/*.yaml", "/img-man/"] in copies
    assert ["docker/start.sh", "/usr/bin/start.sh"] in copies


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_copy_source_exists_in_the_build_context(dockerfile):
    for name, args in instructions(dockerfile):
        if name != "COPY" or "--from=" in args:  # --from: a file of an earlier stage
            continue
        *sources, _destination = [part for part in shlex.split(args) if not part.startswith("--")]
        for source in sources:
            assert glob.glob(str(REPO / source)), f"{dockerfile}: COPY source {source} does not exist"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_the_image_installs_the_core_and_every_first_party_plugin_with_install_sh(dockerfile):
    """install.sh installs /src/ymir-runner and every plugins/*/setup.cfg folder under it (the docker-marked
    tests/test_docker_image.py lists the plugins of the built image)."""
    steps = instructions(dockerfile)
    copies = [shlex.split(args) for name, args in steps if name == "COPY"]
    assert ["plugins", "/src/ymir-runner/plugins"] in copies
    assert ["ymir_runner", "/src/ymir-runner/ymir_runner"] in copies
    assert ["docker/install.sh", "/src/install.sh"] in copies
    assert any(args.startswith("sh /src/install.sh") for name, args in steps if name == "RUN")


def test_only_the_cpu_image_pins_the_cpu_build_of_torch():
    cpu = " ".join(args for name, args in instructions("docker/Dockerfile") if name == "RUN")
    cuda = " ".join(args for name, args in instructions("docker/Dockerfile.cuda") if name == "RUN")
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in cpu
    assert "whl/cpu" not in cuda and "--gpu-count 1" in cuda


def test_the_build_context_leaves_local_environments_out():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"**/.venv", ".git", "**/__pycache__"} <= set(ignored)


def start_sh_env(extra_path: str = "", **variables: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(filter(None, [extra_path, os.path.dirname(sys.executable), env["PATH"]]))
    env.update(variables)
    return env


def test_start_sh_points_every_cache_at_a_writable_temp_folder_and_passes_arguments(ymir_shared_tmp):
    shared = pathlib.Path(ymir_shared_tmp)
    fake_bin = shared / "bin"
    fake_bin.mkdir()
    (fake_bin / "ymir-runner").write_text('#!/bin/sh\nenv\necho "ARGS $*"\n')
    (fake_bin / "ymir-runner").chmod(0o755)
    done = subprocess.run(["bash", str(START_SH), "--env", "/in/env.yaml"], capture_output=True, text=True,
                          env=start_sh_env(str(fake_bin), HOME="/nonexistent"), check=True)
    lines = done.stdout.splitlines()
    seen = dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("ARGS"))
    assert "ARGS run --env /in/env.yaml" in lines
    for variable in ("HOME", "XDG_CACHE_HOME", "TORCH_HOME", "MPLCONFIGDIR", "PIP_CACHE_DIR"):
        assert seen[variable].startswith(tempfile.gettempdir()), variable
    assert os.path.isdir(seen["HOME"]) and os.access(seen["HOME"], os.W_OK)
    shutil.rmtree(os.path.dirname(seen["HOME"]))


def toy_site(site_dir: pathlib.Path) -> str:
    """The core tests' toy executor as a pip-installed distribution a subprocess discovers by entry point."""
    make_fake_distribution(str(site_dir), dist_name="ymir-runner-toy", module="toy_plugin",
                           source=(REPO / "tests" / "toy_plugin.py").read_text(), entry_point="toy")
    return str(site_dir)


def run_start_sh(tree: TaskTree, site_dir: str, **options) -> subprocess.CompletedProcess:
    env = start_sh_env(PYTHONPATH=site_dir, YMIR_RUNNER_ROOT=tree.root)
    return subprocess.run(["bash", str(START_SH)], capture_output=True, text=True, env=env, timeout=120, **options)


def test_start_sh_runs_the_task_of_the_redirected_in_tree(ymir_shared_tmp):
    shared = pathlib.Path(ymir_shared_tmp)
    tree = TaskTree(str(shared / "work"), kinds=("mining", "infer"))
    done = run_start_sh(tree, toy_site(shared / "site"))
    assert done.returncode == 0, done.stderr
    report = verify_out(tree.out_dir, ["mining", "infer"], candidates=tree.images,
                        class_names=tree.class_names)
    assert report.ok, report.findings


@pytest.mark.skipif(bool(CANNOT_RUN_AS_NOBODY), reason=str(CANNOT_RUN_AS_NOBODY))
def test_training_as_uid_65534_on_a_read_only_in_tree_passes_verify(ymir_shared_tmp):
    shared = pathlib.Path(ymir_shared_tmp)
    tree = TaskTree(str(shared / "work"), images=6)
    make_read_only(tree.local("/in"))
    os.chmod(tree.out_dir, 0o777)
    done = run_start_sh(tree, toy_site(shared / "site"), user=NOBODY, group=NOBODY,
                        cwd=ymir_shared_tmp)
    assert done.returncode == 0, done.stderr
    report = verify_out(tree.out_dir, ["training"])
    assert report.ok, report.findings
    owners = {os.stat(os.path.join(folder, name)).st_uid
              for folder, _dirs, files in os.walk(tree.out_dir) for name in files}
    assert owners == {NOBODY}
    assert not stat.S_IMODE(os.stat(tree.local("/in")).st_mode) & 0o222  # nothing could have written /in
