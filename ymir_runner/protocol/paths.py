"""Container paths and the local tree standing in for them: the platform mounts /in and /out into the container,
and ``--root DIR`` (or ``$YMIR_RUNNER_ROOT``) runs the same task on ``DIR/in`` and ``DIR/out``. Every file that
names a container path (env.yaml, config.yaml's model files, index files) is read through :func:`reroot`; what
is written for the platform goes back through :func:`unroot`."""

from __future__ import annotations

import os

#: The output folder the platform mounts into the container.
CONTAINER_OUT_DIR = "/out"
#: The folders the platform mounts into the container: env.yaml's paths under them are container paths, which
#: ``--root`` re-roots onto a local tree. A machine where one of them is not a folder is not the container.
CONTAINER_DIRS = ("/in", CONTAINER_OUT_DIR)


def container_top(path: str) -> str | None:
    """``/in`` or ``/out`` when ``path`` is a container path under it (:data:`CONTAINER_DIRS`), else None."""
    for top in CONTAINER_DIRS:
        if path == top or path.startswith(top + "/"):
            return top
    return None


def reroot(path: str, root: str | None) -> str:
    """Map an absolute container path under /in or /out into ``root``; other paths are left alone."""
    if not root or not path or not container_top(path):
        return path
    return os.path.join(root, path.lstrip("/"))


def unroot(path: str, root: str | None) -> str:
    """The container path of a re-rooted local path (``reroot``'s inverse); other paths are left alone."""
    if not root or not path:
        return path
    for top in ("in", "out"):
        local = os.path.join(root, top)
        if path == local or path.startswith(local + os.sep):
            return "/" + top + path[len(local):].replace(os.sep, "/")
    return path
