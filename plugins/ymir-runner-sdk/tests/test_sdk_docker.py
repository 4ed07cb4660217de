"""An image built the way an author of a ymir_exc image adds ymir-runner (docs/sdk-run.md), run the way the platform
runs images: ``docker run --rm -v WORK/in:/in:ro -v WORK/out:/out --user UID:GID IMAGE``, no command.

No registry is needed: the Python 3.8 base is made here, as ``python:3.8-slim`` is made, from docker/base.sh's
Debian bookworm base (debootstrap) and a CPython 3.8 built on this machine (pyenv's: Debian ships no 3.8; found as
``python3.8`` on PATH or under ~/.pyenv/versions), copied to /opt/python3.8. On it: the legacy side (the tests' fake
ymir_exc, PyYAML and the demo-like app, on Python 3.8) and, as docs/sdk-run.md says, ymir-runner with this plugin in
a venv of Debian's own Python 3.11; wheels fetched before the build, which has no network.

Marked docker and slow; skipped with the reason without a docker engine, root and debootstrap, a Python 3.8 or PyPI.
"""

from __future__ import annotations

import glob
import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml
from sdk_helpers import APPS, CORE, FAKE_SDK, PLUGIN

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BASE = "ymir-runner-base:bookworm"
TAG = "ymir-runner-sdk:test"
CACHE = pathlib.Path(os.environ.get("YMIR_RUNNER_CACHE") or pathlib.Path(
    os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "ymir-runner")
UID = GID = 1000
PLATFORMS = ["--platform", "manylinux_2_36_x86_64", "--platform", "manylinux_2_28_x86_64", "--platform",
             "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64"]
DOCKERFILE = """\
ARG BASE_IMAGE
# the Python 3.8 base (what python:3.8-slim-bookworm is: Debian bookworm and a CPython 3.8 of its own)
FROM ${BASE_IMAGE} AS python38
COPY python3.8 /opt/python3.8
RUN echo /opt/python3.8/lib > /etc/ld.so.conf.d/python3.8.conf && ldconfig \\
    && ln -s /opt/python3.8/bin/python3.8 /usr/local/bin/python3.8 && chmod -R a+rX /opt/python3.8

FROM python38
COPY wheels /wheels
# the image as it was: its Python 3.8, its SDK (here the tests' fake ymir_exc) and PyYAML, its app and /img-man
RUN set -e; for wheel in /wheels/py38/*.whl; do \\
        python3.8 -m zipfile -e "$wheel" /opt/python3.8/lib/python3.8/site-packages; done
COPY ymir_exc /opt/python3.8/lib/python3.8/site-packages/ymir_exc
COPY app /app
COPY img-man /img-man
# what docs/sdk-run.md adds: ymir-runner in a Python >= 3.10 of its own, and start.sh handing over to it
RUN python3 -m venv /opt/ymir-runner \\
    && /opt/ymir-runner/bin/pip install -q --no-index --find-links /wheels ymir-runner ymir-runner-sdk \\
    && rm -rf /wheels && chmod -R a+rX /opt /app /img-man
COPY start.sh /usr/bin/start.sh
CMD ["bash", "/usr/bin/start.sh"]
"""
START_SH = "#!/bin/bash\nexec /opt/ymir-runner/bin/ymir-runner sdk-run -- python3.8 /app/start.py\n"


def docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def host_cli(*args: str) -> subprocess.CompletedProcess:
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join([str(CORE), str(PLUGIN)]))
    return subprocess.run([sys.executable, "-m", "ymir_runner", *args], capture_output=True, text=True,
                          timeout=300, env=environ)


def python38() -> pathlib.Path | None:
    """The prefix of a CPython 3.8 on this machine (``python3.8`` on PATH, else pyenv's), None without one."""
    found = shutil.which("python3.8")
    candidates = ([found] if found else []) + sorted(glob.glob(str(pathlib.Path.home() / ".pyenv/versions/3.8*/bin/"
                                                                   "python3.8")))
    for executable in candidates:
        real = pathlib.Path(os.path.realpath(executable))
        prefix = real.parent.parent
        if (prefix / "lib" / "python3.8" / "os.py").exists() and not str(prefix).startswith("/usr"):
            return prefix
    return None


def _install_requires(setup_cfg: pathlib.Path) -> list[str]:
    import configparser

    config = configparser.ConfigParser()
    config.read(setup_cfg, encoding="utf-8")
    return [line.split("#")[0].strip() for line in config["options"]["install_requires"].splitlines()
            if line.split("#")[0].strip()]


def _download(folder: pathlib.Path, version: str, *requirements: str) -> None:
    abi = "cp" + version.replace(".", "")
    done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-d", str(folder), "--only-binary",
                           ":all:", "--python-version", version, "--implementation", "cp", "--abi", abi,
                           *PLATFORMS, "--find-links", str(CACHE / "wheelhouse-cpu"), *requirements],
                          capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.skip(f"cannot fetch the Python {version} wheels: {done.stderr.strip().splitlines()[-1:]}")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Iterator[str]:
    """The legacy app's image, removed after the module (half a GB; a host that runs the tests again and again
    would keep every earlier build, untagged)."""
    if shutil.which("docker") is None or docker("info", timeout=30).returncode != 0:
        pytest.skip("no docker engine answers `docker info` (.ci/run installs and starts one as root)")
    prefix = python38()
    if prefix is None:
        pytest.skip("no CPython 3.8 on this machine to make the Python 3.8 base from (python3.8, pyenv)")
    if docker("image", "inspect", BASE).returncode != 0:
        if os.geteuid() != 0 or shutil.which("debootstrap") is None:
            pytest.skip(f"no base image {BASE}: docker/base.sh needs root and debootstrap")
        made = subprocess.run(["bash", str(CORE / "docker" / "base.sh"), "--tag", BASE], capture_output=True,
                              text=True, timeout=1200)
        assert made.returncode == 0, made.stderr[-3000:]
    context = tmp_path_factory.mktemp("context")
    wheels = CACHE / "wheelhouse-sdk"
    requirements = [line for line in _install_requires(CORE / "setup.cfg") + _install_requires(PLUGIN / "setup.cfg")
                    if not line.startswith("ymir-runner")]
    _download(wheels, "3.11", *requirements)
    _download(wheels / "py38", "3.8", "pyyaml")
    shutil.copytree(wheels, context / "wheels")  # the third-party wheels, kept between runs; ours built fresh:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(context / "wheels"),
                            str(CORE), str(PLUGIN)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    shutil.copytree(prefix, context / "python3.8", symlinks=True,
                    ignore=shutil.ignore_patterns("test", "tests", "idlelib", "tkinter", "turtledemo", "*.a"))
    shutil.copytree(FAKE_SDK / "ymir_exc", context / "ymir_exc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(APPS / "demo", context / "app", ignore=shutil.ignore_patterns("__pycache__", "img-man"))
    shutil.copytree(APPS / "demo" / "img-man", context / "img-man")
    (context / "Dockerfile").write_text(DOCKERFILE)
    (context / "start.sh").write_text(START_SH)
    docker("rmi", "--force", TAG)  # an earlier run's, left by a run stopped before its clean-up
    done = docker("build", "--network", "none", "--build-arg", f"BASE_IMAGE={BASE}", "-t", TAG, str(context),
                  timeout=1800)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    yield TAG
    docker("rmi", "--force", TAG)


def work_tree(root: pathlib.Path, **template: object) -> pathlib.Path:
    """A training tree (sandbox --container-paths) holding the image's own template keys."""
    from ymir_runner.testing import voc_text, write_png

    source = root / "voc"
    for index in range(4):
        write_png(str(source / f"{index}.png"), 40, 30)
        (source / f"{index}.xml").write_text(voc_text(f"{index}.png", (40, 30), [(index % 2, 5, 5, 20, 20)],
                                                      ["cat", "dog"]))
    sets = [item for key, value in template.items() for item in ("--set", f"{key}={value}")]
    done = host_cli("sandbox", str(source), "--out", str(root / "work"), "--container-paths", "--force",
                    "--template", str(APPS / "demo" / "img-man" / "training-template.yaml"), *sets)
    assert done.returncode == 0, done.stderr
    for folder in (root / "work" / "out", root / "work" / "out" / "tensorboard"):
        folder.mkdir(exist_ok=True)
        os.chmod(folder, 0o777)  # the platform's, writable by the task's uid
    return root / "work"


def platform_run(work: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "run", "--rm", "-v", f"{work}/in:/in:ro", "-v", f"{work}/out:/out", "--user",
                           f"{UID}:{GID}", "--shm-size=1g", TAG], capture_output=True, text=True, timeout=600)


def test_the_platform_runs_an_unchanged_legacy_app_under_sdk_run(image, tmp_path):
    work = work_tree(tmp_path)
    done = platform_run(work)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "demo: Python 3.8" in done.stderr  # the image's own interpreter ran its app
    verified = host_cli("verify", str(work / "out"), "--env", str(work / "in" / "env.yaml"), "--root", str(work))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    result = yaml.safe_load((work / "out" / "models" / "result.yaml").read_text())
    assert set(result["model_stages"]) == {"epoch_1", "epoch_2"}


def test_a_crash_in_the_image_is_reported_with_its_exception(image, tmp_path):
    work = work_tree(tmp_path, crash="training")
    done = platform_run(work)
    assert done.returncode == 1
    last = [line for line in done.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("ymir-runner: error 160004: RuntimeError: demo crash after epoch 1"), last
    monitor = (work / "out" / "monitor.txt").read_text().split("\t")
    assert (monitor[3], monitor[4].strip()) == ("4", "160004")
