#!/usr/bin/env bash
# Builds the executor image with no network in the build (YMIR is often deployed air-gapped):
#
#   docker/build.sh [--cuda] [--wheelhouse DIR] [--base IMAGE] [--tag TAG] [--download-only] [--refresh]
#
# 1. The wheelhouse DIR (default ~/.cache/ymir-runner/wheelhouse-cpu or -cuda; $YMIR_RUNNER_CACHE moves the
#    cache) gets every third-party wheel the core and the first-party plugins need, for the base image's Python,
#    with `pip download`: the CPU image's torch is the build its Dockerfile pins (PyTorch's CPU index, or a local
#    wheel pip's find-links name); the CUDA image's wheelhouse has no torch (the base's is kept). A wheelhouse
#    already filled for the same requirements is used as it is, with no network (--refresh downloads again).
# 2. `docker build --network none` in a build context of its own (the sources docker/Dockerfile* copy, plus the
#    wheels as docker/wheelhouse/): pip installs from the wheels only (docker/install.sh).
#
# Air-gapped: run `docker/build.sh --download-only --wheelhouse DIR` where PyPI is reachable, carry DIR and the
# repository over, then `docker/build.sh --wheelhouse DIR` (with the base image loaded: `docker load`, or
# docker/base.sh's Debian base, --base ymir-runner-base:bookworm). --cuda: docker/Dockerfile.cuda, tag
# ymir-runner:cuda (default ymir-runner:cpu). $PYTHON: the interpreter whose pip downloads (default python3).
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${YMIR_RUNNER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ymir-runner}"
python="${PYTHON:-python3}"
kind=cpu base="" tag="" wheelhouse="" download_only=0 refresh=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cuda) kind=cuda; shift ;;
        --wheelhouse) wheelhouse="$2"; shift 2 ;;
        --base) base="$2"; shift 2 ;;
        --tag) tag="$2"; shift 2 ;;
        --download-only) download_only=1; shift ;;
        --refresh) refresh=1; shift ;;
        -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "build.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
dockerfile="$repo/docker/Dockerfile"
if [ "$kind" = cuda ]; then dockerfile="$repo/docker/Dockerfile.cuda"; fi
say() { echo "build.sh: $*" >&2; }
# Every folder this script writes into is made first (a machine that never built has no cache folder): the
# wheelhouse here (its new copy is made beside it), the cache folder before the build context goes there.
make_folder() {  # FOLDER, what it is, what to do when it cannot be made
    local error
    error="$(mkdir -p "$1" 2>&1)" || { say "cannot create $2 $1 (${error##*: }): $3"; exit 1; }
}
make_folder "${wheelhouse:-$cache/wheelhouse-$kind}" "the wheelhouse" \
    "give --wheelhouse a writable folder, or set YMIR_RUNNER_CACHE to one"
wheelhouse="$(cd "${wheelhouse:-$cache/wheelhouse-$kind}" && pwd)"
tag="${tag:-ymir-runner:$kind}"
# The base: --base, else the Dockerfile's default.
base="${base:-$(sed -n 's/^ARG BASE_IMAGE=//p' "$dockerfile")}"
seconds() { echo $(( $(date +%s) - $1 )); }

# The base's Python decides which wheels fit it.
if ! docker image inspect "$base" >/dev/null 2>&1; then
    say "pulling $base"
    docker pull "$base" >&2 || {
        say "cannot pull $base: load it (docker load), or make a Debian base with docker/base.sh and pass --base"
        exit 1
    }
fi
target_python="$(docker run --rm --network none --entrypoint python3 "$base" -c \
    'import sys; print("%d.%d" % sys.version_info[:2])')"
host_python="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"

# The requirements: every install_requires of the core and the plugins, less the first-party ones (built from
# the sources in the image) and, for CUDA, torch; plus the build backend the sources need (pyproject.toml).
requirements="$("$python" - "$repo" "$kind" <<'PY'
import configparser, pathlib, re, sys
repo, kind = pathlib.Path(sys.argv[1]), sys.argv[2]
projects = [repo] + sorted(setup.parent for setup in (repo / "plugins").glob("*/setup.cfg"))
wanted = set()
for project in projects:
    config = configparser.ConfigParser()
    config.read(project / "setup.cfg")
    wanted.update(line.strip() for line in config.get("options", "install_requires", fallback="").splitlines())
    build = re.search(r"^requires\s*=\s*\[(.*?)\]", (project / "pyproject.toml").read_text(), re.M | re.S)
    wanted.update(re.findall(r"""["']([^"']+)["']""", build.group(1)) if build else ())
skip = {"ymir-runner"} | {path.name for path in projects} | ({"torch"} if kind == "cuda" else set())
name = lambda requirement: re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
print("\n".join(sorted(r for r in wanted if r and name(r) not in skip)))
PY
)"
torch=""
if [ "$kind" = cpu ]; then
    torch="$(grep -o 'torch==[^ ]*' "$dockerfile" | head -n 1)"
    torch_index="$(grep -o -- '--index-url [^ ]*' "$dockerfile" | head -n 1 | cut -d' ' -f2)"
fi
stamp="$(printf 'python %s\n%s\n%s\n' "$target_python" "$torch" "$requirements" | sed '/^$/d')"

# Up to date: filled for every line of the stamp (a CPU wheelhouse also serves a CUDA build: it has torch more).
if [ "$refresh" = 0 ] && [ -f "$wheelhouse/.requirements" ] \
        && [ -z "$(comm -23 <(echo "$stamp" | sort -u) <(sort -u "$wheelhouse/.requirements"))" ]; then
    say "wheelhouse $wheelhouse is up to date ($(ls "$wheelhouse"/*.whl | wc -l) wheels)"
else
    started=$(date +%s)
    say "filling the wheelhouse $wheelhouse for Python $target_python"
    fresh="$(mktemp -d "$wheelhouse.new.XXXXXX")"
    trap 'rm -rf "$fresh"' EXIT
    pip=("$python" -m pip download --disable-pip-version-check --dest "$fresh" --find-links "$wheelhouse")
    if [ "$target_python" != "$host_python" ]; then pip+=(--python-version "$target_python" --only-binary=:all:); fi
    constraints="$fresh/.constraints"
    : > "$constraints"
    if [ -n "$torch" ]; then
        # The pinned CPU build alone first, then pinned to exactly that file's version (e.g. 2.13.0+cpu):
        # PyPI's torch of the same version is a CUDA build.
        "${pip[@]}" --no-deps --index-url "$torch_index" "$torch" >&2
        torch_wheel="$(cd "$fresh" && ls torch-*.whl | head -n 1)"
        echo "torch==$(echo "$torch_wheel" | cut -d- -f2)" > "$constraints"
        requirements="$(printf '%s\n%s' "$requirements" "$torch")"
    fi
    echo "$requirements" > "$fresh/.wanted"
    "${pip[@]}" --constraint "$constraints" --requirement "$fresh/.wanted" >&2
    rm -f "$fresh/.wanted" "$fresh/.constraints"
    echo "$stamp" > "$fresh/.requirements"
    rm -rf "$wheelhouse"
    mv "$fresh" "$wheelhouse"
    trap - EXIT
    say "wheelhouse filled in $(seconds "$started") s: $(ls "$wheelhouse"/*.whl | wc -l) wheels, $(du -sh "$wheelhouse" | cut -f1)"
fi
if [ "$download_only" = 1 ]; then exit 0; fi

# The build context: what the Dockerfiles copy, and the wheels (hard links where the file system allows).
started=$(date +%s)
make_folder "$cache" "the cache folder" "the build context goes there; set YMIR_RUNNER_CACHE to a writable folder"
context="$(mktemp -d "$cache/context.XXXXXX")"
trap 'rm -rf "$context"' EXIT
tar -C "$repo" --exclude=__pycache__ --exclude='*.egg-info' --exclude=.pytest_cache --exclude=.venv -cf - \
    setup.cfg pyproject.toml README.md ymir_runner plugins img-man docker/start.sh docker/install.sh docker/Dockerfile* \
    | tar -C "$context" -xf -
mkdir -p "$context/docker/wheelhouse"
cp -l "$wheelhouse"/*.whl "$context/docker/wheelhouse/" 2>/dev/null || cp "$wheelhouse"/*.whl "$context/docker/wheelhouse/"
say "building $tag from $base (${dockerfile#"$repo"/}, no network)"
docker build --network none --build-arg "BASE_IMAGE=$base" -f "$context/docker/$(basename "$dockerfile")" -t "$tag" "$context" >&2
# The legacy builder (no BuildKit) keeps the venv stage's image untagged: over 1 GB per build, never used again
# (rebuilding reruns the stage whenever the sources changed). Only images with the stage's label are removed.
docker image prune --force --filter "label=org.ymir-runner.build-stage=venv" >/dev/null || true
say "built $tag in $(seconds "$started") s, $(docker image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1 / 1e6}')"
echo "$tag"
