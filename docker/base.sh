#!/usr/bin/env bash
# A minimal Debian base image for docker/Dockerfile* where no container registry can be reached
# (`FROM python:3.11-slim` cannot be pulled): debootstrap's minbase of Debian bookworm with python3 (3.11) and
# python3-venv, `docker import`ed. Needs root, `debootstrap` and a Debian mirror (apt's own is enough).
#
#   docker/base.sh [--tag ymir-runner-base:bookworm] [--suite bookworm] [--mirror URL] [--force]
#   docker/build.sh --base ymir-runner-base:bookworm
#
# Cached: an image that already exists is kept (--force rebuilds it), and the root file system is kept as a
# tarball under the cache folder ($YMIR_RUNNER_CACHE, default ~/.cache/ymir-runner), so the image comes back
# without network after `docker image rm` or a pruned engine. Prints the image's tag.
set -euo pipefail

tag=ymir-runner-base:bookworm
suite=bookworm
mirror="${YMIR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
force=0
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag="$2"; shift 2 ;;
        --suite) suite="$2"; shift 2 ;;
        --mirror) mirror="$2"; shift 2 ;;
        --force) force=1; shift ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "base.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

cache="${YMIR_RUNNER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ymir-runner}"
tarball="$cache/base-$suite.tar"

if [ "$force" = 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi

if [ "$force" = 1 ] || [ ! -s "$tarball" ]; then
    if [ "$(id -u)" != 0 ]; then echo "base.sh: debootstrap needs root" >&2; exit 1; fi
    if ! command -v debootstrap >/dev/null; then
        echo "base.sh: debootstrap is missing (apt-get install -y debootstrap)" >&2; exit 1
    fi
    mkdir -p "$cache"
    rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
    # --one-file-system: never follows a mount left inside a failed debootstrap's tree (/proc, /sys, /dev)
    trap 'rm -rf --one-file-system "$rootfs" "$tarball.part"' EXIT
    echo "base.sh: debootstrap $suite from $mirror (about a minute)" >&2
    if ! debootstrap --variant=minbase --include=python3,python3-venv "$suite" "$rootfs" "$mirror" \
            > "$cache/debootstrap.log" 2>&1; then
        tail -n 20 "$cache/debootstrap.log" >&2
        echo "base.sh: debootstrap failed (log: $cache/debootstrap.log)" >&2
        exit 1
    fi
    # What a container never needs: apt's package cache and lists, documentation, translations.
    rm -rf "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/var/log/*.log
    find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'C.*' ! -name locale.alias -exec rm -rf {} +
    tar --numeric-owner -C "$rootfs" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
fi

docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' \
    --message "debootstrap --variant=minbase --include=python3,python3-venv $suite" "$tarball" "$tag" >/dev/null
echo "$tag"
