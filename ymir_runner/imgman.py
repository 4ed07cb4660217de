"""``/img-man``: the manifest and task templates the platform reads when an image is registered.

The platform runs ``docker run --rm IMAGE cat /img-man/<file>`` for ``manifest.yaml`` and the three
templates; each must be a YAML mapping, and a missing template disables that task. ``ymir-runner img-man
--out DIR`` writes them from the installed plugins' declared defaults (``ExecutorSpec.templates``):

- the keys of every executor that handles the task, in declaration order, each preceded by its help text
  as a comment, then its legal values (``legal values: an integer from 1 to 512``, the text of the error a value
  outside them gets); when executors disagree on a default, the first executor's wins and the comment says so;
- ``plugin: <name>`` when several executors handle the task (the dispatcher picks the executor by it);
- the keys the platform itself reads from a template: ``gpu_count`` and ``shm_size`` for every task, and a
  non-empty ``export_format`` for training;
- the reserved keys the platform fills in, listed in the header comment only (declaring them would let the
  web UI show values the platform overwrites).

The web UI sends every non-numeric value back as a string; the config reader coerces it to the type of the
default written here, so every value survives the round trip (``tests/test_imgman.py`` checks it).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from typing import Any, Sequence

import yaml

from .errors import ConfigError
from .protocol.annotations import export_format_of
from .protocol.atomic import atomic_write_text
from .protocol.config import DEFAULT_SHM_SIZE, OBJECT_TYPES, PLATFORM_FILLED_KEYS
from .protocol.env import MANIFEST_FILE, TEMPLATE_FILES, TaskKind


@dataclasses.dataclass(frozen=True)
class TemplateEntry:
    """One key of a template file, with the comment lines written above it."""

    key: str
    value: Any
    comment: tuple[str, ...] = ()


def _executors_for(registry: Any, kind: TaskKind, object_type: int | None) -> list[Any]:
    executors = [executor for executor in registry.executors() if kind in executor.spec.tasks]
    if object_type is not None:
        executors = [executor for executor in executors if object_type in executor.spec.object_types]
    return sorted(executors, key=lambda executor: executor.spec.name)


def template_entries(registry: Any, kind: TaskKind, *, gpu_count: int = 0, object_type: int | None = None,
                     executor_name: str | None = None) -> list[TemplateEntry]:
    """The merged template of every installed executor handling ``kind`` (with ``executor_name``, that
    executor's own template, as ``ymir-runner sandbox --plugin`` writes it); empty when none does."""
    executors = [found for found in _executors_for(registry, TaskKind(kind), object_type)
                 if executor_name is None or found.spec.name == executor_name]
    if not executors:
        return []
    entries: list[TemplateEntry] = []
    names = [executor.spec.name for executor in executors]
    if len(executors) > 1:
        entries.append(TemplateEntry("plugin", names[0], (f"executor that runs the task: one of {', '.join(names)}",)))

    declared: dict[str, tuple[Any, list[str]]] = {}  # key -> (value written, comment lines)
    for executor in executors:
        for param in executor.spec.template(kind):
            if param.name in declared:
                value, comment = declared[param.name]
                if param.default != value:
                    comment.append(f"(executor {executor.spec.name}: default {param.default!r})")
                continue
            comment = [param.help] if param.help else []
            if param.values.declared:  # the text of the error a value outside them gets
                comment.append(f"legal values: {param.values.describe()}")
            if len(executors) > 1:
                comment.append(f"(read by executor {executor.spec.name})")
            declared[param.name] = (param.default, comment)
    entries += [TemplateEntry(key, value, tuple(comment)) for key, (value, comment) in declared.items()]

    entries.append(TemplateEntry("gpu_count", gpu_count,
                                 ("GPUs the platform allocates; 0 runs on the CPU (gpu_id is then '')",)))
    entries.append(TemplateEntry("shm_size", DEFAULT_SHM_SIZE,
                                 ("shared memory of the container (DataLoader workers pass batches through it)",)))
    if kind is TaskKind.TRAINING:
        formats = executors[0].spec.annotation_formats
        export = export_format_of(formats[0] if formats else "det-ark")
        readable = ", ".join(export_format_of(name) for name in formats)
        entries.append(TemplateEntry("export_format", export,
                                     (f"annotation and image format the platform exports: {readable}",)))
    return entries


def template_defaults(registry: Any, kind: TaskKind, *, gpu_count: int = 0, object_type: int | None = None,
                      executor_name: str | None = None) -> dict[str, Any]:
    """The template of ``kind`` as a plain mapping (what ``config.yaml`` holds before the platform's keys)."""
    return {entry.key: entry.value for entry in template_entries(registry, kind, gpu_count=gpu_count,
                                                                 object_type=object_type,
                                                                 executor_name=executor_name)}


def render_template(kind: TaskKind, entries: Sequence[TemplateEntry]) -> str:
    """YAML text with a comment above every key; values are dumped by PyYAML so quoting is always right."""
    lines = [
        f"# {TaskKind(kind).value} hyper-parameters (written by `ymir-runner img-man`).",
        "# The web UI sends non-numeric values back as strings; ymir-runner converts them to these types.",
        "# Filled in by the platform, never declared here: " + ", ".join(PLATFORM_FILLED_KEYS) + ".",
    ]
    for entry in entries:
        lines.append("")
        lines += [f"# {line}" for line in entry.comment]
        lines.append(yaml.safe_dump({entry.key: entry.value}, default_flow_style=True, width=1 << 16,
                                    allow_unicode=True).strip()[1:-1])
    return "\n".join(lines) + "\n"


def object_types(registry: Any, object_type: int | None = None) -> list[int]:
    found = sorted({kind for executor in registry.executors() for kind in executor.spec.object_types})
    if object_type is not None:
        if object_type not in found:
            raise ConfigError(f"no installed executor handles object_type {object_type} (installed: {found})")
        return [object_type]
    return found


def render_manifest(object_type: int) -> str:
    return ("# Read by the platform when the image is registered (written by `ymir-runner img-man`).\n"
            "# object_type: " + ", ".join(f"{value} {name}" for value, name in OBJECT_TYPES.items()) + ".\n"
            + yaml.safe_dump({"object_type": object_type, "enable_livecode": False}, sort_keys=False))


def write_img_man(out_dir: str, registry: Any, *, gpu_count: int = 0, object_type: int | None = None) -> list[str]:
    """Write manifest.yaml and one template per task some executor handles; returns the files written."""
    types = object_types(registry, object_type)
    if not types:
        raise ConfigError("no executor installed: nothing to write (see `ymir-runner plugins`)")
    if len(types) > 1:
        raise ConfigError(f"the installed executors handle object types {types}; an image serves one: "
                          f"choose it with --object-type")
    os.makedirs(out_dir, exist_ok=True)
    written = [os.path.join(out_dir, MANIFEST_FILE)]
    atomic_write_text(written[0], render_manifest(types[0]))
    for kind, file_name in TEMPLATE_FILES.items():
        path = os.path.join(out_dir, file_name)
        entries = template_entries(registry, kind, gpu_count=gpu_count, object_type=types[0])
        if entries:
            atomic_write_text(path, render_template(kind, entries))
            written.append(path)
        elif os.path.exists(path):  # a stale template would enable a task no executor handles
            os.remove(path)
    return written


def _cmd_img_man(args: argparse.Namespace) -> int:
    for path in write_img_man(args.out, args.registry, gpu_count=args.gpu_count, object_type=args.object_type):
        print(path)
    return 0


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``ymir-runner img-man`` to the command line."""
    parser = commands.add_parser("img-man", help="write manifest.yaml and the task templates of the installed plugins")
    parser.add_argument("--out", required=True, help="folder to write (the image copies it to /img-man)")
    parser.add_argument("--gpu-count", type=int, default=0,
                        help="gpu_count written in the templates (0: CPU image; 1 for a CUDA image)")
    parser.add_argument("--object-type", type=int, default=None,
                        help="object type to serve when the installed executors handle several")
    parser.set_defaults(handler=_cmd_img_man)

