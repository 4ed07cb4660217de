"""``ymir-runner sandbox``: a YMIR work tree built from a user's own images, exactly as the platform exports it.

``ymir-runner run --env <work>/in/env.yaml`` then runs an executor on it without a docker engine or a YMIR
server, so a plugin can be tried on real data before the image is ever registered. Everything the
platform would write is written the way protocol.md section 2 describes it:

- assets at ``in/assets/<last 2 hex>/<sha1 of the content>.<jpg|png|bmp|unknown>``, one per content;
- one annotation file per training image (det-ark ``.txt`` or det-voc ``.xml``, empty without boxes),
  inclusive integer corners clipped to the image;
- images in their STORED pixels, as the platform measures them and ``ymir-runner run`` decodes them (no EXIF
  rotation): boxes labelled on EXIF-rotated photos are warned about, and ``--exif-transpose`` writes the
  rotated pixels into the asset instead;
- ``train-index.tsv`` / ``val-index.tsv`` (training): the train/val split SOURCE comes with, kept
  (``--split keep``, the default; images in neither part are split at random), or a seeded random split
  (``--split random``, or a SOURCE without a split); ``candidate-index.tsv`` (mining, inference);
- ``config.yaml``: the installed executors' template (``--plugin X``: X's own) plus the keys the platform
  fills in;
- ``models/<stage>/<files>`` + ``models/ymir-info.yaml`` from a previous training's ``/out/models``;
- ``env.yaml``, written last: a tree is only runnable once it is complete.

The package: :mod:`.sources` holds the source readers, one module per format (VOC, YOLO, COCO, plain images)
on top of :mod:`ymir_runner.protocol.annotations`; each returns the same neutral
:class:`~.sources.SourceData` (image paths with named boxes in inclusive pixel corners, and the source's own
split, if any), and the rest is shared: :mod:`.exif` (image headers, EXIF orientation), :mod:`.assets`
(stored images and their annotation files), :mod:`.classes`, :mod:`.splits` (the index files' train/val),
:mod:`.models`, :mod:`.config` (config.yaml, env.yaml), :mod:`.worktree`, :mod:`.options`, :mod:`.build`
(:func:`build_sandbox` and its summary) and :mod:`.cli` (the subcommand).
"""

from .assets import ASSET_EXTENSIONS, Asset, assign_boxes, collect_assets, file_sha1, pixel_box, write_assets
from .build import SandboxSummary, build_sandbox, log
from .classes import class_lookup, resolve_class_names
from .cli import add_command, parse_override
from .config import build_config, check_overrides, choose_executors, env_yaml, template_config, web_ui_value
from .exif import ImageHeader, ImageSizes, exif_plan, write_transposed
from .models import LEGACY_STAGE, ModelSource, install_model, model_files, read_model_source
from .options import DEFAULT_VAL_RATIO, SPLIT_MODES, SandboxOptions, check_options, task_kinds
from .sources import (
    IMAGE_EXTENSIONS,
    READERS,
    SOURCE_FORMATS,
    SourceBox,
    SourceData,
    SourceImage,
    SourceSplit,
    SourceTree,
    detect_format,
    read_source,
    scan_source,
)
from .splits import TrainVal, split, split_assets
from .worktree import WorkTree

__all__ = [
    "ASSET_EXTENSIONS", "DEFAULT_VAL_RATIO", "IMAGE_EXTENSIONS", "LEGACY_STAGE",
    "READERS", "SOURCE_FORMATS", "SPLIT_MODES", "Asset", "ImageHeader",
    "ImageSizes", "ModelSource", "SandboxOptions", "SandboxSummary", "SourceBox", "SourceData", "SourceImage",
    "SourceSplit", "SourceTree", "TrainVal", "WorkTree", "add_command", "assign_boxes", "build_config",
    "build_sandbox", "check_options", "check_overrides", "choose_executors",
    "class_lookup", "collect_assets", "detect_format", "env_yaml", "exif_plan",
    "file_sha1", "install_model", "log", "model_files", "parse_override", "pixel_box", "read_model_source",
    "read_source", "resolve_class_names", "scan_source", "split", "split_assets", "task_kinds", "template_config",
    "web_ui_value", "write_assets", "write_transposed",
]
