"""Pascal VOC sources: one ``.xml`` per image, parsed by :mod:`ymir_runner.protocol.annotations`; the split
is ``ImageSets/Main/train.txt`` + ``val.txt`` (one image stem a line)."""

from __future__ import annotations

import collections
import os
import xml.etree.ElementTree as ElementTree
from typing import Mapping

from ...protocol.annotations import BadBox, parse_voc_object, parse_xml, voc_size
from ...protocol.dataset import SkipLog
from ...protocol.files import read_bytes
from .base import SourceBox, SourceData, SourceImage, SourceSplit, SourceTree, source_split

#: Where a VOC dataset lists its split, below SOURCE.
IMAGE_SETS = os.path.join("ImageSets", "Main")


def read_voc(tree: SourceTree) -> SourceData:
    """Pascal VOC: one ``.xml`` per image, found beside it, by ``<filename>``, or by stem anywhere in SOURCE.

    VOC corners are already inclusive pixel indexes; they are kept as they are. Each file is decoded in the
    encoding its declaration names (labelling tools on Chinese Windows write ``encoding="gbk"``). An object
    without a name, or whose ``<bndbox>`` misses a corner or holds a non-number, is skipped as ``malformed box``;
    a file that cannot be read or parsed as ``unreadable annotation``. The split is the ``ImageSets/Main``
    lists, when SOURCE has both ``train.txt`` and ``val.txt``.
    """
    images = tree.images
    by_stem: dict[str, list[str]] = collections.defaultdict(list)
    for path in images:
        by_stem[os.path.splitext(os.path.basename(path))[0]].append(path)
    by_name = tree.by_basename()
    boxes: dict[str, list[SourceBox]] = collections.defaultdict(list)
    sizes: dict[str, tuple[int, int] | None] = {}
    names: set[str] = set()
    for xml_file in tree.with_suffix(".xml"):
        root = _read_xml(xml_file, tree.skips)
        if root is None:
            continue
        if root.tag != "annotation":
            continue  # some other XML file next to the data
        image = _voc_image(xml_file, root, by_stem, by_name)
        if image is None:
            tree.skips.skip("annotation without image", xml_file)
            continue
        sizes[image] = voc_size(root)
        for number, obj in enumerate(root.iter("object"), 1):
            try:
                parsed = parse_voc_object(obj)
            except BadBox:
                parsed = None
            if parsed is None or not parsed.name:
                tree.skips.skip("malformed box", f"{xml_file}:object {number}")
                continue
            names.add(parsed.name)
            boxes[image].append(SourceBox(parsed.name, parsed.xmin, parsed.ymin, parsed.xmax, parsed.ymax))
    return SourceData([SourceImage(path, tuple(boxes.get(path, ())), sizes.get(path)) for path in images],
                      sorted(names), split=_voc_split(tree, by_stem))


def _read_xml(path: str, skips: SkipLog) -> ElementTree.Element | None:
    """The parsed file, or None (skipped and counted) when it cannot be read, decoded or parsed."""
    try:
        return parse_xml(read_bytes(path))
    except OSError as error:
        skips.skip("unreadable annotation", path, error.strerror or str(error))
        return None
    except (ValueError, ElementTree.ParseError) as error:  # ValueError: not in its declared encoding
        skips.skip("unreadable annotation", path, str(error))
        return None


def _voc_image(xml_file: str, root: ElementTree.Element, by_stem: Mapping[str, list[str]],
               by_name: Mapping[str, list[str]]) -> str | None:
    stem = os.path.splitext(os.path.basename(xml_file))[0]
    folder = os.path.dirname(xml_file)
    beside = [path for path in by_stem.get(stem, ()) if os.path.dirname(path) == folder]
    named = by_name.get(os.path.basename((root.findtext("filename") or "").strip()), [])
    for candidates in (beside, named, by_stem.get(stem, [])):
        if len(candidates) == 1:
            return candidates[0]
    return None


def _voc_split(tree: SourceTree, by_stem: Mapping[str, list[str]]) -> SourceSplit | None:
    """The shallowest ``ImageSets/Main`` holding both ``train.txt`` and ``val.txt``: their stems' images."""
    files = set(tree.files)
    folders = [os.path.dirname(path) for path in files
               if path.endswith(os.sep + os.path.join(IMAGE_SETS, "train.txt"))
               and os.path.join(os.path.dirname(path), "val.txt") in files]
    if not folders:
        return None
    folder = min(folders, key=lambda path: (path.count(os.sep), path))
    parts = []
    for name in ("train.txt", "val.txt"):
        stems = tree.read_list(os.path.join(folder, name))
        if stems is None:
            return None
        parts.append([image for line in stems for image in by_stem.get(line.split()[0], ())])
    return source_split(parts[0], parts[1], f"{tree.relative(os.path.join(folder, 'train.txt'))} + val.txt")
