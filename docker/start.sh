#!/usr/bin/env bash
# The image's default command (`CMD ["bash", "/usr/bin/start.sh"]`): runs the task /in/env.yaml describes.
#
# The platform starts the container with no command and no extra environment, possibly as any uid, with a
# read-only /in and no usable $HOME: every cache and config folder the libraries might write (torch,
# matplotlib, pip, XDG) goes to a fresh temporary folder. Arguments are passed on to `ymir-runner run`
# (e.g. `--env` or `--root` when the script is tried outside a container).
set -euo pipefail

scratch="$(mktemp -d "${TMPDIR:-/tmp}/ymir-runner.XXXXXX")"
export HOME="$scratch/home"
export XDG_CACHE_HOME="$scratch/cache" XDG_CONFIG_HOME="$scratch/config"
export TORCH_HOME="$scratch/torch" TORCHINDUCTOR_CACHE_DIR="$scratch/inductor" TRITON_CACHE_DIR="$scratch/triton"
export MPLCONFIGDIR="$scratch/matplotlib" PIP_CACHE_DIR="$scratch/pip"
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
mkdir -p "$HOME"

# exec: the platform's SIGTERM (task cancelled) reaches ymir-runner, which reports it and exits 143.
exec ymir-runner run "$@"
