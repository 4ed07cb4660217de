"""``ymir-runner sandbox`` on the command line: flags to :class:`~.options.SandboxOptions`, the summary printed."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..errors import ConfigError
from ..protocol.annotations import WRITABLE_FORMATS
from ..protocol.config import OBJECT_TYPES
from ..protocol.env import TaskKind
from ..protocol.yaml_file import excerpt, parse_yaml
from .build import build_sandbox
from .options import DEFAULT_VAL_RATIO, SPLIT_MODES
from .sources import SOURCE_FORMATS

log = logging.getLogger("ymir_runner.sandbox")


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with a YAML-parsed value (``epochs=3`` → 3, ``use_flip=true`` → True, ``x=`` → '').

    Raises :class:`~ymir_runner.errors.ConfigError` without ``=`` or a key, or for a value that is not YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {excerpt(text)}: expected KEY=VALUE")
    return key.strip(), parse_yaml(value, f"--set {excerpt(text)}: the value") if value.strip() else ""


def _task_list(text: str) -> list[str]:
    """``--task mining,infer``: one value, so SOURCE after the flag is never taken for a task."""
    tasks = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [task for task in tasks if task not in {str(kind) for kind in TaskKind}]
    if unknown or not tasks:
        raise argparse.ArgumentTypeError(f"{text!r}: tasks are training, mining and infer")
    return tasks


def _log_to_stderr() -> None:
    if not any(getattr(handler, "_sandbox", False) for handler in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        handler._sandbox = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.propagate = False


def _cmd_sandbox(args: argparse.Namespace) -> int:
    _log_to_stderr()
    summary = build_sandbox(
        args.source, args.out, registry=args.registry, tasks=args.task or ["training"], format=args.format,
        classes=[name for name in args.classes.split(",")] if args.classes is not None else None,
        ignore_other_classes=args.ignore_other_classes, split=args.split, val_ratio=args.val_ratio, seed=args.seed,
        annotation_format=args.annotation_format, model=args.model, pretrained=args.pretrained,
        all_stages=args.all_stages, web_ui_strings=args.web_ui_strings,
        overrides=dict(parse_override(text) for text in args.set or []), container_paths=args.container_paths,
        plugin=args.plugin, force=args.force, exif_transpose=args.exif_transpose, object_type=args.object_type,
        templates=args.template or ())
    print(summary.render())
    return 0


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``ymir-runner sandbox`` to the command line."""
    parser = commands.add_parser(
        "sandbox", help="build a YMIR work tree (in/, out/) from your own images, as the platform exports it",
        description="Build WORK/in exactly as the YMIR platform exports a dataset, so that "
                    "`ymir-runner run --env WORK/in/env.yaml` runs on it locally.")
    parser.add_argument("source", metavar="SOURCE",
                        help="a folder of images with VOC .xml, YOLO .txt, a COCO .json or label-map PNGs; or a "
                             "COCO .json file")
    parser.add_argument("--out", required=True, metavar="WORK", help="the work folder to create (WORK/in, WORK/out)")
    parser.add_argument("--format", default="auto", choices=SOURCE_FORMATS,
                        help="annotation format of SOURCE (default: auto-detect; 'images': no annotations)")
    parser.add_argument("--classes", default=None, metavar="A,B,C",
                        help="class names in class-index order (default: from the data)")
    parser.add_argument("--ignore-other-classes", action="store_true",
                        help="drop boxes of classes not in --classes instead of refusing")
    parser.add_argument("--task", action="extend", type=_task_list, metavar="TASK[,TASK]",
                        help="training (default), mining, infer, or mining,infer (repeatable)")
    parser.add_argument("--split", choices=SPLIT_MODES, default=None,
                        help="keep (default): the train/val split SOURCE comes with (YOLO images/train + images/val "
                             "or data.yaml, VOC ImageSets/Main/train.txt + val.txt, COCO train + val json), "
                             "images in neither part split at random; random: split every image at random")
    parser.add_argument("--val-ratio", type=float, default=None,
                        help=f"share of the images split at random that go to val-index.tsv ({DEFAULT_VAL_RATIO}); "
                             f"with a split in SOURCE, pass --split too")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random train/val split (0)")
    parser.add_argument("--annotation-format", choices=[*WRITABLE_FORMATS, "seg-coco"], default=None,
                        help="annotation files to write (default: the template's export_format, else det-ark; "
                             "seg-coco with --object-type 3 or 4)")
    parser.add_argument("--object-type", type=int, choices=sorted(OBJECT_TYPES), default=None,
                        help="2 detection (default, or the type --model / --pretrained was trained for); 3 semantic "
                             "or 4 instance segmentation: masks of a COCO source "
                             "(RLE or polygons) or label-map PNGs, written as the platform exports seg-coco:raw "
                             "(one in/annotations/coco-annotations.json)")
    parser.add_argument("--model", metavar="DIR", help="mining/infer: a previous training's /out/models folder")
    parser.add_argument("--pretrained", metavar="DIR", help="training: a previous training's /out/models folder")
    parser.add_argument("--all-stages", action="store_true", help="copy every model stage, not only the best")
    parser.add_argument("--web-ui-strings", action="store_true",
                        help="write non-numeric template values as strings and drop '' values, as the web UI does")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a config.yaml value (YAML-parsed; repeatable)")
    parser.add_argument("--container-paths", action="store_true",
                        help="write /in/... and /out/... paths (for docker -v or `ymir-runner run --root WORK`)")
    parser.add_argument("--plugin", metavar="NAME",
                        help="the executor that runs the task: config.yaml gets its template only, and `plugin: NAME`")
    parser.add_argument("--template", action="append", metavar="FILE",
                        help="write this template's keys into config.yaml instead of the installed executors' "
                             "templates (an image's own /img-man/training-template.yaml, for `ymir-runner sdk-run`); "
                             "repeatable (mining + infer: both files, the first one's value first)")
    parser.add_argument("--exif-transpose", action="store_true",
                        help="store the EXIF-rotated pixels of photos with an EXIF orientation (for boxes drawn on "
                             "the rotated image); by default assets keep their stored pixels, as the platform's")
    parser.add_argument("--force", action="store_true", help="replace a non-empty WORK/in")
    parser.set_defaults(handler=_cmd_sandbox)
