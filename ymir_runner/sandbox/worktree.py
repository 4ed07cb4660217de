"""The work folder ``<root>/in`` + ``<root>/out``, and how its files name their paths."""

from __future__ import annotations

import dataclasses
import os
import shutil
from typing import Iterable

from ..errors import ConfigError
from ..protocol.atomic import atomic_write_text
from ..protocol.paths import reroot


@dataclasses.dataclass(frozen=True)
class WorkTree:
    """``<root>/in`` and ``<root>/out``; files name their paths as container or absolute host paths."""

    root: str
    container_paths: bool

    def local(self, container_path: str) -> str:
        """Where ``/in/...`` or ``/out/...`` lies on this machine."""
        return reroot(container_path, self.root)

    def shown(self, container_path: str) -> str:
        """The path written into env.yaml, config.yaml and the index files."""
        return container_path if self.container_paths or not container_path else self.local(container_path)


def check_work_dir(work: WorkTree, protected: Iterable[str], force: bool) -> None:
    """Refuse a work folder that is a file, or whose ``in/`` is not empty (unless ``force``) or holds one of
    the ``protected`` paths (SOURCE, the model folder), which ``--force`` would delete: ConfigError."""
    in_dir = work.local("/in")
    if os.path.exists(work.root) and not os.path.isdir(work.root):
        raise ConfigError(f"--out {work.root} is a file, not a folder")
    if os.path.isdir(in_dir) and os.listdir(in_dir):
        if not force:
            raise ConfigError(f"{in_dir} is not empty: pass --force to replace it")
        for path in protected:  # --force deletes in/: never with the user's data inside
            if path and (path == in_dir or path.startswith(in_dir + os.sep)):
                raise ConfigError(f"{path} lies inside {in_dir}, which --force would delete")


def prepare_work_dir(work: WorkTree) -> None:
    """An empty ``in/`` with its folders, and ``out/tensorboard``."""
    if os.path.isdir(work.local("/in")):  # non-empty only with --force (checked before anything was read)
        shutil.rmtree(work.local("/in"))
    for folder in ("/in/assets", "/in/annotations", "/in/models", "/out/tensorboard"):
        os.makedirs(work.local(folder), exist_ok=True)


def write_lines(path: str, lines: Iterable[str]) -> None:
    """A text file of ``lines``, each ended by a newline, written atomically."""
    atomic_write_text(path, "".join(f"{line}\n" for line in lines))
