"""``/img-man``: the manifest and task templates the platform reads when an image is registered.

The platform runs ``docker run --rm IMAGE cat /img-man/<file>`` for ``manifest.yaml`` and the three
templates; each must be a YAML mapping, and a missing template disables that task. ``ymir-runner img-man
--out DIR`` writes them from the installed plugins' declared defaults (``ExecutorSpec.templates``).

Where the templates lie follows the object types the installed executors handle (``ExecutorSpec.object_types``),
as the platform's image inspector resolves them (segmentation.md section 1,
``invoker_cmd_inspect_image.py``): one type -> ``object_type: N`` and the templates at the root of ``/img-man``;
several (or ``--object-type`` naming one) -> for several, ``object_type: [2, 3, 4]`` and one folder per type,
``det/``, ``semantic-seg/``, ``instance-seg/`` (:data:`OBJECT_TYPE_FOLDERS`), the root templates then being
ignored by the platform (and removed here). A type's templates hold the keys of the executors handling that
type only; a segmentation training template asks for ``export_format: seg-coco:raw`` (the web UI offers no
other choice, and any other format exports no masks). Each template holds:

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
from .protocol.annotations import MASK_FORMATS, export_format_of
from .protocol.atomic import atomic_write_text
from .protocol.config import DEFAULT_SHM_SIZE, OBJECT_TYPES, PLATFORM_FILLED_KEYS, SEGMENTATION
from .protocol.env import MANIFEST_FILE, TEMPLATE_FILES, TaskKind

#: The folder of each object type's templates when ``manifest.yaml`` lists several types (the platform's
#: ``IMAGE_CONFIG_DIR_NAMES``, ymir ``backend/src/ymir_controller/controller/config/common_task.py``).
OBJECT_TYPE_FOLDERS = {2: "det", 3: "semantic-seg", 4: "instance-seg"}


@dataclasses.dataclass(frozen=True)
class TemplateEntry:
    """One key of a template file, with the comment lines written above it."""

    key: str
    value: Any
    comment: tuple[str, ...] = ()


def _executors_for(registry: Any, kind: TaskKind, object_type: int | None) -> list[Any]:
    executors = [executor for executor in registry.executors()
                 if kind in executor.spec.tasks and not executor.spec.named_only]
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
        formats = _training_formats(executors[0].spec.annotation_formats, object_type)
        export = export_format_of(formats[0])
        readable = ", ".join(export_format_of(name) for name in formats)
        entries.append(TemplateEntry("export_format", export,
                                     (f"annotation and image format the platform exports: {readable}",)))
    return entries


def _training_formats(declared: Sequence[str], object_type: int | None) -> list[str]:
    """The annotation formats a training template offers, the default first: for a segmentation type those
    carrying masks (seg-coco when the executor declares none: no other format exports a mask), else those
    that do not."""
    if object_type in SEGMENTATION:
        return [name for name in declared if name in MASK_FORMATS] or list(MASK_FORMATS)
    return [name for name in declared if name not in MASK_FORMATS] or ["det-ark"]


def template_defaults(registry: Any, kind: TaskKind, *, gpu_count: int = 0, object_type: int | None = None,
                      executor_name: str | None = None) -> dict[str, Any]:
    """The template of ``kind`` as a plain mapping (what ``config.yaml`` holds before the platform's keys)."""
    return {entry.key: entry.value for entry in template_entries(registry, kind, gpu_count=gpu_count,
                                                                 object_type=object_type,
                                                                 executor_name=executor_name)}


def render_template(kind: TaskKind, entries: Sequence[TemplateEntry], object_type: int | None = None) -> str:
    """YAML text with a comment above every key; values are dumped by PyYAML so quoting is always right.
    ``object_type``: named in the first line (a template of a type's folder)."""
    for_type = f" for object_type {object_type} ({OBJECT_TYPES[object_type]})" if object_type is not None else ""
    lines = [
        f"# {TaskKind(kind).value} hyper-parameters{for_type} (written by `ymir-runner img-man`).",
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
    """The object types the image serves: every type an installed executor handles, or ``object_type`` alone
    (ConfigError when no executor handles it)."""
    found = sorted({kind for executor in registry.executors() for kind in executor.spec.object_types})
    if object_type is not None:
        if object_type not in found:
            raise ConfigError(f"no installed executor handles object_type {object_type} (installed: {found})")
        return [object_type]
    return found


def render_manifest(object_type: int | Sequence[int]) -> str:
    """manifest.yaml: ``object_type`` an int (templates at the root) or a list (one folder per type)."""
    value: int | list[int] = object_type if isinstance(object_type, int) else list(object_type)
    where = ("templates in " + ", ".join(f"{OBJECT_TYPE_FOLDERS[kind]}/" for kind in value) + "\n"
             if isinstance(value, list) else "")
    return ("# Read by the platform when the image is registered (written by `ymir-runner img-man`).\n"
            "# object_type: " + ", ".join(f"{kind} {name}" for kind, name in OBJECT_TYPES.items()) + ".\n"
            + (f"# Several object types: {where}" if where else "")
            + f"object_type: {value}\n"  # an int, or a flow list of ints: the same text in YAML and Python
            + yaml.safe_dump({"enable_livecode": False}))


def _write_templates(folder: str, registry: Any, object_type: int, gpu_count: int, *, named: bool) -> list[str]:
    """The templates of the tasks some executor of ``object_type`` handles, in ``folder``; a stale template
    (a task no executor handles) is removed, as it would enable that task."""
    os.makedirs(folder, exist_ok=True)
    written = []
    for kind, file_name in TEMPLATE_FILES.items():
        path = os.path.join(folder, file_name)
        entries = template_entries(registry, kind, gpu_count=gpu_count, object_type=object_type)
        if entries:
            atomic_write_text(path, render_template(kind, entries, object_type if named else None))
            written.append(path)
        elif os.path.exists(path):
            os.remove(path)
    return written


def _remove_templates(folder: str) -> None:
    """Templates the platform would not read for this manifest (left by an earlier run): removed, so that the
    folder copied into the image is what the platform resolves. Only the template files are touched."""
    for file_name in TEMPLATE_FILES.values():
        path = os.path.join(folder, file_name)
        if os.path.isfile(path):
            os.remove(path)
    if os.path.isdir(folder) and not os.listdir(folder):
        os.rmdir(folder)


def write_img_man(out_dir: str, registry: Any, *, gpu_count: int = 0, object_type: int | None = None) -> list[str]:
    """Write manifest.yaml and one template per task some executor handles (one folder per object type when
    the executors handle several: module docstring); returns the files written."""
    types = object_types(registry, object_type)
    if not types:
        raise ConfigError("no executor installed: nothing to write (see `ymir-runner plugins`)")
    unknown = [kind for kind in types if kind not in OBJECT_TYPE_FOLDERS]
    if unknown:
        raise ConfigError(f"object types {unknown}: the platform serves {sorted(OBJECT_TYPE_FOLDERS)}")
    os.makedirs(out_dir, exist_ok=True)
    written = [os.path.join(out_dir, MANIFEST_FILE)]
    if len(types) == 1:
        atomic_write_text(written[0], render_manifest(types[0]))
        written += _write_templates(out_dir, registry, types[0], gpu_count, named=False)
        for folder in OBJECT_TYPE_FOLDERS.values():
            _remove_templates(os.path.join(out_dir, folder))
        return written
    atomic_write_text(written[0], render_manifest(types))
    _remove_templates(out_dir)  # ignored by the platform with a list: never shipped
    for kind, folder in OBJECT_TYPE_FOLDERS.items():
        if kind in types:
            written += _write_templates(os.path.join(out_dir, folder), registry, kind, gpu_count, named=True)
        else:
            _remove_templates(os.path.join(out_dir, folder))
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
                        help="serve this object type only (default: every type the installed executors handle; "
                             "several are written as one template folder per type)")
    parser.set_defaults(handler=_cmd_img_man)

