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
    assert ["img-man/", "/img-man/"] in copies  # the whole tree: a manifest listing several types has folders
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


# --- docker/build.sh on a machine that never built before (no docker engine, no network) ------------------------

BUILD_SH = REPO / "docker" / "build.sh"
FAKE_DOCKER = """#!/bin/bash
# A docker CLI that records its arguments: images are there (none with $FAKE_NO_IMAGES), runs report the host's
# Python, a build lists its context's wheels, an import lists its tarball.
echo "docker $*" >> "$FAKE_LOG"
case "$1 $2" in
    "image inspect") if [ -n "$FAKE_NO_IMAGES" ]; then exit 1; fi; case "$*" in *--format*) echo 1145000000 ;; esac
                     exit 0 ;;
esac
case "$1" in
    run) exec "$REAL_PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])' ;;
    build) context="${@: -1}"; ls "$context/docker/wheelhouse" > "$FAKE_LOG.context"; exit 0 ;;
    import) tar -tf "${@: -2:1}" | sort > "$FAKE_LOG.context"; exit 0 ;;
esac
echo "fake docker: unexpected $*" >&2; exit 3
"""
FAKE_PYTHON = """#!/bin/bash
# $PYTHON for build.sh: the real interpreter, except `-m pip download`, which records its arguments and leaves a
# wheel (torch's CPU build for the pinned torch download, one more for the rest) in --dest: no network.
if [ "$1 $2 $3" = "-m pip download" ]; then
    echo "pip $*" >> "$FAKE_LOG"
    while [ $# -gt 0 ]; do if [ "$1" = --dest ]; then dest="$2"; fi; shift; done
    case "$(tail -n 1 "$FAKE_LOG")" in
        *--no-deps*) touch "$dest/torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl" ;;
        *) touch "$dest/pluggy-1.6.0-py3-none-any.whl" ;;
    esac
    exit 0
fi
exec "$REAL_PYTHON" "$@"
"""


FAKE_DEBOOTSTRAP = """#!/bin/bash
# debootstrap ... SUITE TARGET MIRROR: a root file system of a few folders, with no network.
echo "debootstrap $*" >> "$FAKE_LOG"
target="${@: -2:1}"
mkdir -p "$target/usr/bin" "$target/usr/share/locale/C.utf8" "$target/usr/share/locale/de" "$target/var/log"
"""


def run_build_sh(root: pathlib.Path, home: pathlib.Path, *args: str, script: pathlib.Path = BUILD_SH,
                 **variables: str) -> tuple[subprocess.CompletedProcess, str]:
    """docker/build.sh (or ``script``) ARGS with HOME=home (made here, empty, unless it exists), the fake docker, pip
    and debootstrap; returns the run and what the fakes recorded."""
    fake_bin = root / "bin"
    if not fake_bin.exists():
        fake_bin.mkdir()
        for name, text in (("docker", FAKE_DOCKER), ("python", FAKE_PYTHON), ("debootstrap", FAKE_DEBOOTSTRAP)):
            (fake_bin / name).write_text(text)
            (fake_bin / name).chmod(0o755)
    if not home.exists():
        home.mkdir()
    log = root / "fake.log"
    log.write_text("")
    env = {key: value for key, value in os.environ.items() if key not in ("YMIR_RUNNER_CACHE", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), PATH=os.pathsep.join([str(fake_bin), env["PATH"]]), PYTHON=str(fake_bin / "python"),
               REAL_PYTHON=sys.executable, FAKE_LOG=str(log), **variables)
    done = subprocess.run(["bash", str(script), *args], capture_output=True, text=True, env=env, timeout=300)
    return done, log.read_text()


def test_build_sh_fills_the_default_wheelhouse_under_an_empty_home(tmp_path):
    home = tmp_path / "home"
    done, log = run_build_sh(tmp_path, home, "--download-only")
    assert done.returncode == 0, done.stderr
    wheelhouse = home / ".cache" / "ymir-runner" / "wheelhouse-cpu"
    assert sorted(os.listdir(wheelhouse)) == [".requirements", "pluggy-1.6.0-py3-none-any.whl",
                                             "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl"]
    assert f"build.sh: filling the wheelhouse {wheelhouse} for Python" in done.stderr
    assert "build.sh: wheelhouse filled in " in done.stderr and ": 2 wheels, " in done.stderr
    assert "--index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in log
    assert "docker build" not in log


def test_build_sh_second_air_gapped_step_builds_with_an_empty_home(tmp_path):
    """The documented air-gapped pair: `--download-only --wheelhouse DIR` where PyPI is reachable, then `--wheelhouse
    DIR` on a machine that never built (an empty HOME: its cache folder, where the build context goes, does not
    exist yet). Once `mktemp: failed to create directory via template '~/.cache/ymir-runner/context.XXXXXX'`."""
    wheelhouse = tmp_path / "carried" / "wheelhouse"
    done, _log = run_build_sh(tmp_path, tmp_path / "online-home", "--download-only", "--wheelhouse", str(wheelhouse))
    assert done.returncode == 0, done.stderr
    home = tmp_path / "air-gapped-home"
    done, log = run_build_sh(tmp_path, home, "--wheelhouse", str(wheelhouse))
    assert done.returncode == 0, done.stderr
    assert "mktemp" not in done.stderr and "mkdir" not in done.stderr
    assert done.stderr.splitlines()[0] == f"build.sh: wheelhouse {wheelhouse} is up to date (2 wheels)"
    assert "build.sh: building ymir-runner:cpu from python:3.11-slim (docker/Dockerfile, no network)" in done.stderr
    assert done.stderr.splitlines()[-1].startswith("build.sh: built ymir-runner:cpu in ")
    assert done.stdout == "ymir-runner:cpu\n"
    assert "pip " not in log  # no download: the wheelhouse serves
    (build,) = [line for line in log.splitlines() if line.startswith("docker build")]
    assert "--network none" in build and "-t ymir-runner:cpu" in build
    assert (tmp_path / "fake.log.context").read_text().split() == ["pluggy-1.6.0-py3-none-any.whl",
                                                                    "torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl"]
    assert os.listdir(home / ".cache" / "ymir-runner") == []  # the build context is removed after the build


def test_build_sh_says_which_folder_it_cannot_create(tmp_path):
    """A HOME that is a file: the folder, the reason and what to do, as the last line."""
    wheelhouse = tmp_path / "wheelhouse"
    done, _log = run_build_sh(tmp_path, tmp_path / "home", "--download-only", "--wheelhouse", str(wheelhouse))
    assert done.returncode == 0, done.stderr
    home = tmp_path / "file-home"
    home.write_text("")
    for args, folder, hint in (
            ((), home / ".cache" / "ymir-runner" / "wheelhouse-cpu", "the wheelhouse"),
            (("--wheelhouse", str(wheelhouse)), home / ".cache" / "ymir-runner", "the cache folder")):
        done, _log = run_build_sh(tmp_path, home, *args)
        assert done.returncode == 1
        assert done.stderr.splitlines()[-1].startswith(f"build.sh: cannot create {hint} {folder} (Not a directory): ")


@pytest.mark.skipif(os.geteuid() != 0, reason="docker/base.sh runs debootstrap, which needs root")
def test_base_sh_makes_its_cache_folder_under_an_empty_home(tmp_path):
    home = tmp_path / "home"
    done, log = run_build_sh(tmp_path, home, script=REPO / "docker" / "base.sh", FAKE_NO_IMAGES="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ymir-runner-base:bookworm\n"
    cache = home / ".cache" / "ymir-runner"
    assert sorted(os.listdir(cache)) == ["base-bookworm.tar", "debootstrap.log"]  # rootfs and .part removed
    assert "docker import " in log and str(cache / "base-bookworm.tar") in log
    listed = (tmp_path / "fake.log.context").read_text().split()
    assert "./usr/share/locale/C.utf8/" in listed and "./usr/share/locale/de/" not in listed
