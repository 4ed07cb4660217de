"""The whole build: SOURCE read and checked, then ``<out>/in`` written, env.yaml last; and its summary."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import logging
import os
import shlex
import tempfile
from typing import Any, Mapping

import yaml

from ..errors import ConfigError
from ..origins import ORIGINS_FILE, SANDBOX_TASK_PREFIX, write_origins
from ..protocol.atomic import atomic_write_text
from ..protocol.config import DETECTION
from ..protocol.dataset import SkipLog
from ..protocol.env import TaskKind, model_object_type
from ..protocol.outlock import hold_output_lock
from .assets import assign_boxes, assign_masks, collect_assets, find_damage, write_assets, write_seg_annotations
from .classes import class_lookup, resolve_class_names, trained_class_names
from .config import (
    annotation_format_of,
    build_config,
    check_overrides,
    choose_executors,
    env_yaml,
    read_templates,
    template_config,
)
from .exif import EXIF_HINT_REASONS, Notices, exif_plan
from .models import install_model, model_files, read_model_source
from .options import SandboxOptions, check_options, task_kinds
from .sources import FILE_REASONS, no_usable_box, read_source
from .splits import TrainVal, check_split_request, split_assets
from .worktree import WorkTree, check_work_dir, prepare_work_dir, write_lines

log = logging.getLogger("ymir_runner.sandbox")


@dataclasses.dataclass
class SandboxSummary:
    """What was built; ``render()`` is what the command prints."""

    work_dir: str
    env_file: str
    tasks: tuple[str, ...]
    source_format: str
    annotation_format: str | None
    class_names: tuple[str, ...]
    images: int
    train: int
    val: int
    candidates: int
    duplicates: int
    unreadable_images: int
    boxes_per_class: dict[str, int]
    skipped: dict[str, int]
    model_files: tuple[str, ...]
    container_paths: bool
    #: The task's object type (2 detection; 3 and 4: masks in one coco-annotations.json).
    object_type: int = 2
    #: Boxes and images used after a fix (a clipped box, pixels turned by --exif-transpose), by reason.
    repaired: dict[str, int] = dataclasses.field(default_factory=dict)
    #: Images used as they are but warned about (boxes that may not match the stored pixels), by reason.
    warned: dict[str, int] = dataclasses.field(default_factory=dict)
    #: How train and val were chosen (training): SOURCE's own split kept, or at random; '' for mining/infer.
    split: str = ""
    #: The map of where each asset came from (``in/sandbox-origins.tsv``).
    origins_file: str = ""
    #: Images stored as they are but damaged or unreadable: ``(file below SOURCE, why, asset path)``.
    damaged: tuple[tuple[str, str, str], ...] = ()

    @property
    def boxes(self) -> int:
        """Boxes written, all classes together."""
        return sum(self.boxes_per_class.values())

    @property
    def next_command(self) -> str:
        """The command that runs an executor on the tree."""
        if self.container_paths:
            return f"ymir-runner run --env {shlex.quote(self.env_file)} --root {shlex.quote(self.work_dir)}"
        return f"ymir-runner run --env {shlex.quote(self.env_file)}"

    def render(self) -> str:
        """The lines the command prints."""
        layout = "container paths /in, /out" if self.container_paths else "host paths"
        splits = (f"train {self.train}, val {self.val}" if "training" in self.tasks
                  else f"candidates {self.candidates}")
        lines = [f"sandbox {self.work_dir}: {' + '.join(self.tasks)} from {self.source_format} data ({layout})",
                 f"  images: {self.images} ({splits})"
                 + (f", {self.duplicates} duplicate(s) stored once" if self.duplicates else "")
                 + (f", {self.unreadable_images} PIL cannot open (copied anyway)" if self.unreadable_images else "")]
        if self.split:
            lines.append(f"  split: {self.split}")
        if self.annotation_format:
            per_class = ", ".join(f"{name} {count}" for name, count in self.boxes_per_class.items())
            objects = "masks" if self.annotation_format == "seg-coco" else "boxes"
            lines.append(f"  {objects}: {self.boxes} as {self.annotation_format} ({per_class})")
        lines.append(f"  classes: {', '.join(self.class_names) or '(none)'}")
        for label, counts in (("skipped", self.skipped), ("repaired", self.repaired), ("warnings", self.warned)):
            if counts:
                lines.append(f"  {label}: {_counts_line(counts)}")
        if EXIF_HINT_REASONS.intersection(self.warned):
            lines.append("  (--exif-transpose stores the EXIF-rotated pixels, so that such boxes match them)")
        if self.damaged:
            lines.append("  damaged images, stored as they are (the platform imports them; a run reads what it can):")
            lines += [f"    {original}: {why}, as {asset}" for original, why, asset in self.damaged[:SHOWN_DAMAGED]]
            if len(self.damaged) > SHOWN_DAMAGED:
                lines.append(f"    ... and {len(self.damaged) - SHOWN_DAMAGED} more (the warnings above name them)")
        if self.origins_file:
            lines.append(f"  origins: {self.origins_file} (each asset and the file of SOURCE it came from)")
        if self.model_files:
            lines.append(f"  model: {', '.join(self.model_files)}")
        lines.append(f"next: {self.next_command}")
        return "\n".join(lines)


#: Damaged images the summary names; the warnings name the first ten of each kind.
SHOWN_DAMAGED = 10


def _counts_line(counts: Mapping[str, int]) -> str:
    """``3 (2 degenerate box, 1 box outside image)``: the total, then each reason."""
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(counts.items()))
    return f"{sum(counts.values())} ({reasons})"


class _CountOnly(SkipLog):
    """Counts without warning: a mining or inference sandbox ignores the labels the readers still parse (files
    not read at all, :data:`~.sources.FILE_REASONS`, are still warned about and summed up)."""

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        if reason in FILE_REASONS:
            super().skip(reason, where, detail)
            return
        self.counts[reason] += 1

    def repair(self, reason: str, where: str, detail: str = "") -> None:
        self.repairs[reason] += 1


def write_index_files(chosen: TrainVal, work: WorkTree, annotation_format: str) -> None:
    """train-index.tsv and val-index.tsv: ``<image>\t<annotation>`` per line (:func:`.splits.split_assets`)."""
    for name, part in (("/in/train-index.tsv", chosen.train), ("/in/val-index.tsv", chosen.val)):
        write_lines(work.local(name), (f"{work.shown(asset.path)}\t"
                                       f"{work.shown(asset.annotation_path(annotation_format))}" for asset in part))


def check_training_part(chosen: TrainVal, source_format: str, notices: Notices) -> None:
    """Warn (counted in the summary's warnings) about a split whose validation metrics would mislead: val empty,
    an image in both parts (a one-image source), or every box in val, as a tiny or lopsided source can leave it
    (the tree is what the platform would export, but ``ymir-runner run`` stops on a training set without a box,
    300002, so the sandbox says so first, with what to change)."""
    shared = {asset.sha1 for asset in chosen.train} & {asset.sha1 for asset in chosen.val}
    if shared:  # one image only: it serves both parts
        notices.warn("image in both train and val",
                     f"{len(shared)} image(s) in both train and val (SOURCE has too few images to hold one out): "
                     f"validation metrics are measured on training images and are optimistic")
    if not chosen.val:
        notices.warn("empty val", "val is empty (--val-ratio 0, or SOURCE's split has no val part): stages have no "
                                  "held-out images to be measured on; the built-in detector then measures them on "
                                  "the training images (optimistic)")
    if source_format == "images" or any(asset.boxes or asset.masks for asset in chosen.train):
        return
    boxed = sum(1 for asset in chosen.val if asset.boxes or asset.masks)
    notices.warn("train split without a box",
                 f"the split ({chosen.description}) puts all {boxed} image(s) with boxes in val and none in train: "
                 f"`ymir-runner run` will stop, there is nothing to learn; change --seed or --val-ratio, or label "
                 f"more images")


def task_object_type(opts: SandboxOptions, model: Any) -> int:
    """The tree's ``object_type``: ``--object-type``, else the one the model (``--model``, ``--pretrained``) was
    trained for (:func:`~ymir_runner.protocol.env.model_object_type`), else detection. ``--model`` of another
    type than ``--object-type`` is refused (ConfigError): a run would stop on it with 300005, as the platform
    refuses it."""
    recorded = model_object_type(model.folder) if model is not None else None
    if opts.object_type is None:
        if recorded is not None and recorded != DETECTION:
            log.info("object_type %d: the one the model in %s was trained for", recorded, model.folder)
        return recorded or DETECTION
    if recorded is not None and recorded != opts.object_type and opts.model:
        raise ConfigError(f"--object-type {opts.object_type}: the model in {model.folder} was trained for "
                          f"object_type {recorded}; a run would stop with 300005 (object types mismatch): leave "
                          f"--object-type out, or pass --object-type {recorded}")
    return int(opts.object_type)


def no_usable_mask(source: str, source_format: str, data: Any, skips: SkipLog) -> str:
    """Why a segmentation training tree would hold no mask, said so the user can act on it."""
    found = sum(len(image.masks) for image in data.images)
    if not found:
        return (f"SOURCE {source} ({source_format}) holds no mask: a segmentation tree (--object-type 3 or 4) "
                f"needs COCO segmentations (RLE or polygons) or label-map PNGs (SegmentationClass/, masks/)")
    reasons = ", ".join(f"{count} {reason}" for reason, count in sorted(skips.counts.items()))
    return f"none of the {found} mask(s) of SOURCE {source} is usable ({reasons}): see the warnings above"


def build_sandbox(source: str, out: str, *, registry: Any = None, **options: Any) -> SandboxSummary:
    """Build ``<out>/in`` (and an empty ``<out>/out``) from SOURCE; see :class:`SandboxOptions` for options.

    ``registry``: the plugin registry whose executors' templates fill config.yaml (default: the installed
    plugins). Everything is read and checked before the work folder is touched; the tree is written holding the
    lock a run holds (:mod:`ymir_runner.protocol.outlock`), so ``--force`` never replaces ``in/`` under a running
    task. Raises :class:`~ymir_runner.errors.ConfigError` for a bad request, unusable SOURCE or a tree in use,
    :class:`~ymir_runner.errors.DatasetError` for unreadable data, :class:`~ymir_runner.errors.ModelError` for
    a bad model folder.
    """
    with contextlib.ExitStack() as writing:
        return _build(source, out, registry, writing, **options)


def _build(source: str, out: str, registry: Any, writing: contextlib.ExitStack, **options: Any) -> SandboxSummary:
    """:func:`build_sandbox`; the lock on ``<out>/out`` is entered on ``writing`` just before the first write."""
    opts = SandboxOptions(**options)
    kinds = task_kinds(opts.tasks)
    check_options(opts, kinds)
    training = TaskKind.TRAINING in kinds
    work = WorkTree(os.path.abspath(out), opts.container_paths)
    source = os.path.abspath(source)
    model_dir = opts.model or opts.pretrained
    check_work_dir(work, [source, os.path.abspath(model_dir) if model_dir else ""], opts.force)
    if registry is None:
        from ..plugins import build_plugin_manager

        registry = build_plugin_manager()

    # read and check everything before the work folder is touched
    skips = SkipLog(log) if training else _CountOnly(log)  # labels do not matter to mining and inference
    tree, source_format, data = read_source(source, opts.format, exclude=work.root, skips=skips, training=training,
                                            exif_transpose=opts.exif_transpose)
    if training:
        check_split_request(data.split, opts)
    model = read_model_source(model_dir, "--model" if opts.model else "--pretrained") if model_dir else None
    if opts.object_type is None or model is not None:
        opts = dataclasses.replace(opts, object_type=task_object_type(opts, model))
        check_options(opts, kinds)
    object_type = int(opts.object_type or DETECTION)
    class_names = resolve_class_names(data, opts, training, trained_class_names(model.folder) if model else None)
    files = model_files(model, opts.all_stages) if model else []
    task_id = SANDBOX_TASK_PREFIX + hashlib.sha1(f"{source}|{'+'.join(kinds)}".encode()).hexdigest()[:12]
    if opts.templates:  # an image's own templates (sdk-run): the installed executors' keys do not apply
        executors: dict[TaskKind, Any] = {}
        template = read_templates(opts.templates)
        log.info("config.yaml: the keys of %s (not the installed executors' templates)", ", ".join(opts.templates))
    else:
        executors = choose_executors(registry, kinds, opts.plugin, object_type)
        check_overrides(opts.overrides, executors, opts.force)
        template = template_config(registry, executors, object_type)
    config = build_config(template, kinds, task_id, class_names, opts)
    annotation_format = annotation_format_of(config) if training else None
    notices = Notices()
    transpose = exif_plan(data.images, tree.sizes, transpose=opts.exif_transpose, training=training, notices=notices)
    with tempfile.TemporaryDirectory(prefix="ymir-sandbox-") as scratch:  # EXIF-transposed images, until copied
        assets, duplicates = collect_assets(data.images, tree.sizes, transpose=transpose, scratch=scratch,
                                            skips=skips)
        unreadable = [asset for asset in assets if asset.size is None]
        for asset in unreadable[:10]:
            log.warning("PIL cannot open %s: copied anyway, as the platform would", asset.source)
        for asset in find_damage(assets):
            notices.warn(asset.damage, f"{asset.source}: {asset.damage}: stored as it is (the platform imports it "
                                       f"too); a run reads it as far as its data goes")
        if training and annotation_format == "seg-coco":
            assign_masks(assets, class_lookup(data, class_names), skips)
            if not any(asset.masks for asset in assets):
                raise ConfigError(no_usable_mask(source, source_format, data, skips))
        elif training:
            assign_boxes(assets, class_lookup(data, class_names), skips)
            if source_format != "images" and not any(asset.boxes for asset in assets):  # every box dropped
                raise ConfigError(no_usable_box(tree, source_format, data, skips, work.root))
            if source_format == "images":
                log.warning("--format images: a training tree without a single box (to label elsewhere, or to "
                            "check what a platform does with one); `ymir-runner run` stops on it with 300002, there "
                            "is nothing to learn")

        chosen = split_assets(assets, data.split, opts) if annotation_format else TrainVal([], [], "")
        if annotation_format:
            check_training_part(chosen, source_format, notices)

        # a task running on this tree: refused (a tree where none ever ran has no lock file, and gets none)
        writing.enter_context(hold_output_lock(work.local("/out"), create=False))
        prepare_work_dir(work)
        write_assets(assets, work, annotation_format, class_names)
        if annotation_format == "seg-coco":
            write_seg_annotations(assets, work, class_names)
    if annotation_format:
        write_index_files(chosen, work, annotation_format)
    if not training:
        write_lines(work.local("/in/candidate-index.tsv"),
                    (work.shown(asset.path) for asset in sorted(assets, key=lambda asset: asset.sha1)))
    origins_file = work.local("/in/" + ORIGINS_FILE)
    write_origins(origins_file, tree.root, ((work.shown(asset.path), tree.relative(path))
                                            for asset in assets for path in asset.sources))
    model_paths = install_model(model, files, work) if model else []
    if model_paths:
        config = build_config(template, kinds, task_id, class_names, opts, model_files=model_paths)
    atomic_write_text(work.local("/in/config.yaml"), yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    env_file = work.local("/in/env.yaml")
    atomic_write_text(env_file, yaml.safe_dump(env_yaml(work, str(config.get("task_id", task_id)), kinds),
                                               sort_keys=False))

    per_class = collections.Counter([box[0] for asset in assets for box in asset.boxes]
                                    + [obj.class_id for asset in assets for obj in asset.masks])
    return SandboxSummary(
        work_dir=work.root, env_file=env_file, tasks=tuple(str(kind) for kind in kinds),
        source_format=source_format, annotation_format=annotation_format, class_names=class_names,
        images=len(assets), train=len(chosen.train), val=len(chosen.val), candidates=0 if training else len(assets),
        duplicates=duplicates, unreadable_images=len(unreadable),
        boxes_per_class={name: per_class.get(index, 0) for index, name in enumerate(class_names)},
        skipped={reason: count for reason, count in skips.counts.items() if training or reason in FILE_REASONS},
        model_files=tuple(model_paths),
        container_paths=opts.container_paths, object_type=object_type, repaired=dict(skips.repairs),
        warned=dict(notices.counts),
        split=chosen.description, origins_file=origins_file,
        damaged=tuple((tree.relative(asset.source), asset.damage or "PIL cannot open it", work.shown(asset.path))
                      for asset in assets if asset.damage or asset.size is None))
