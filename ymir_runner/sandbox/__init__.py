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
split, if any), and the rest is shared: :mod:`.headers` (image sizes and orientations, read once),
:mod:`.exif` (what EXIF orientation means for the boxes), :mod:`.assets`
(stored images and their annotation files), :mod:`.classes`, :mod:`.splits` (the index files' train/val),
:mod:`.models`, :mod:`.config` (config.yaml, env.yaml), :mod:`.worktree`, :mod:`.options`, :mod:`.build`
(:func:`build_sandbox` and its summary) and :mod:`.cli` (the subcommand).

The face below is the package's API: :func:`build_sandbox` with its options and summary, the subcommand, and
the sandbox's logger; everything else is imported from its own module.
"""

from .build import SandboxSummary, build_sandbox, log
from .cli import add_command
from .options import SandboxOptions

__all__ = ["SandboxOptions", "SandboxSummary", "add_command", "build_sandbox", "log"]
