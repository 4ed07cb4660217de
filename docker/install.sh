#!/bin/sh
# The first stage of docker/Dockerfile and docker/Dockerfile.cuda: the virtual environment /app/venv with the
# core and every first-party plugin (plugins/*/setup.cfg) from /src/ymir-runner, and /app/pip-freeze.txt, the
# pinned version of everything it holds (`docker run --rm IMAGE cat /app/pip-freeze.txt`).
#
#   sh install.sh [--system-site-packages] [REQUIREMENT PIP_OPTIONS...]
#
# Wheels in /wheelhouse (docker/build.sh puts them there): pip reads them only and never an index, so the build
# needs no network (air-gapped sites, `docker build --network none`). No wheels: pip installs from PyPI, after
# REQUIREMENT with PIP_OPTIONS (the CPU image: torch's CPU build from PyTorch's index, so that the plugins'
# `torch>=2.13` is already satisfied and pip pulls no CUDA build). --system-site-packages: the venv sees the
# base image's packages (the CUDA image keeps its base's torch).
set -eu

venv_options=""
if [ "${1:-}" = --system-site-packages ]; then venv_options="$1"; shift; fi
python3 -m venv $venv_options /app/venv
. /app/venv/bin/activate

if ls /wheelhouse/*.whl >/dev/null 2>&1; then
    echo "install.sh: from /wheelhouse only ($(ls /wheelhouse/*.whl | wc -l) wheels), no index"
    export PIP_NO_INDEX=1 PIP_FIND_LINKS=/wheelhouse
elif [ $# -gt 0 ]; then
    pip install "$@"
fi

projects=/src/ymir-runner
for setup in /src/ymir-runner/plugins/*/setup.cfg; do projects="$projects $(dirname "$setup")"; done
pip install $projects
pip list --format=freeze > /app/pip-freeze.txt
chmod -R a+rX /app
