"""Plain images, without annotations: what mining and inference need."""

from __future__ import annotations

from .base import SourceData, SourceImage, SourceTree


def read_images(tree: SourceTree) -> SourceData:
    """Every image of SOURCE, without boxes, in path order; no class names and no split."""
    return SourceData([SourceImage(path) for path in tree.images], [])
