"""Why a training SOURCE yields images but not one usable box, said so that the user can act on it.

A training tree without a single box has nothing to learn (``ymir-runner run`` stops on it with 300002), so the
sandbox refuses one unless ``--format images`` asks for it on purpose. The message names SOURCE, what the reader
looked for and what it found, and where the annotations seem to be when they lie beside SOURCE (a VOC
``JPEGImages/`` given instead of the folder that also holds ``Annotations/``, a YOLO ``images/`` without its
``labels/``).
"""

from __future__ import annotations

import collections
import os
from typing import Sequence

from ...protocol.dataset import SkipLog
from .base import SourceData, SourceTree
from .yolo import YOLO_NAME_FILES

#: What each reader looks for.
LOOKED_FOR = {
    "voc": "VOC .xml files (one per image: beside it, naming it in <filename>, or of the same stem below SOURCE)",
    "yolo": "YOLO label .txt files (beside each image, or in labels/ mirroring images/)",
    "coco": "COCO .json annotations",
    "label-maps": "label-map PNGs (class indexes) named as the images, in SegmentationClass/ or masks/",
}
#: The annotation files each format reads, by suffix.
SUFFIXES = {"voc": (".xml",), "yolo": (".txt",), "coco": (".json",)}
#: Files looked at beside SOURCE before giving up (a parent folder may be a whole disk).
MAX_SCANNED = 20000
#: How far below SOURCE's parent annotations are looked for (``Annotations/x.xml``: 2, ``labels/train/x.txt``: 3).
MAX_DEPTH = 3

TO_ROOT = ("point SOURCE at the dataset's root, the folder holding both the images and their annotations "
           "(JPEGImages/ and Annotations/, images/ and labels/, or the COCO .json)")
ON_PURPOSE = ("or pass --format images to build a training tree without boxes on purpose (a run on it stops: "
              "nothing to learn)")


def _annotation_files(paths: Sequence[str], suffixes: Sequence[str]) -> list[str]:
    return [path for path in paths if path.lower().endswith(tuple(suffixes))
            and os.path.basename(path) not in YOLO_NAME_FILES]


def beside_source(tree: SourceTree, exclude: str) -> str:
    """Where annotations seem to lie next to SOURCE (below its parent, not below SOURCE itself):
    ``'.../VOC2012/Annotations (17 .xml): point SOURCE at .../VOC2012, the folder holding both'``; '' if nowhere."""
    parent = os.path.dirname(tree.root)
    if not parent or parent == tree.root:
        return ""
    found: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    scanned = 0
    for folder, dirs, names in os.walk(parent):
        depth = os.path.relpath(folder, parent).count(os.sep) + (folder != parent)
        dirs[:] = sorted(name for name in dirs if not name.startswith(".") and depth < MAX_DEPTH
                         and os.path.join(folder, name) not in (tree.root, exclude))
        for name in names:
            scanned += 1
            suffix = os.path.splitext(name)[1].lower()
            if suffix in (".xml", ".txt", ".json") and name not in YOLO_NAME_FILES:
                top = os.path.relpath(folder, parent).split(os.sep)[0]
                found[os.path.join(parent, top) if top != "." else parent][suffix] += 1
        if scanned > MAX_SCANNED:
            break
    if not found:
        return ""
    folder, counts = max(found.items(), key=lambda item: (sum(item[1].values()), item[0]))
    what = ", ".join(f"{count} {suffix}" for suffix, count in counts.most_common())
    return f"annotations seem to lie beside SOURCE, in {folder} ({what}): point SOURCE at {parent}, the folder " \
           f"holding both"


def no_annotations(tree: SourceTree, exclude: str) -> str:
    """A training SOURCE in which auto-detection found no annotation files at all."""
    advice = beside_source(tree, exclude) or TO_ROOT
    return (f"SOURCE {tree.root}: found no annotations for its {len(tree.images)} images (looked for VOC .xml, "
            f"YOLO label .txt and COCO .json anywhere below it), and a training task needs them: {advice}; "
            f"{ON_PURPOSE}")


def no_usable_box(tree: SourceTree, source_format: str, data: SourceData, skips: SkipLog, exclude: str) -> str:
    """A training SOURCE read as ``source_format`` whose images hold not one usable box."""
    files = _annotation_files(tree.files, SUFFIXES.get(source_format, ()))
    read = sum(len(image.boxes) for image in data.images)
    start = f"SOURCE {tree.root}: {len(data.images)} images and not one usable box as {source_format}"
    if not files:
        advice = beside_source(tree, exclude) or TO_ROOT
        return (f"{start} (looked for {LOOKED_FOR.get(source_format, 'annotations')}, found none), and a training "
                f"task needs them: {advice}; {ON_PURPOSE}")
    skipped = f"; skipped {skips.summary()}" if skips.counts else ""
    kind = os.path.splitext(files[0])[1].lower()
    found = f"{len(files)} {kind} files, {read} boxes in them{skipped}"
    if read and skips.counts.get("class not in --classes") == read:
        return f"{start} ({found}): every box is of a class not in --classes; add the classes to --classes"
    return (f"{start} ({found}): fix the annotations the warnings above name (or check they belong to these "
            f"images), or point SOURCE at the folder whose annotations do")
