"""Image headers: the size and EXIF orientation of each source image, read once with PIL by the rules
``ymir-runner run`` reads images with (:func:`ymir_runner.protocol.images.open_image`), cached for the source
readers (YOLO's relative boxes, clipping) and the EXIF checks (:mod:`.exif`)."""

from __future__ import annotations

from typing import Any, NamedTuple

from ..protocol.images import ImageProblem, open_image

#: The EXIF Orientation tag, and the orientations that turn an image by a quarter (width and height swap).
EXIF_ORIENTATION = 0x0112
QUARTER_TURNS = frozenset({5, 6, 7, 8})


class ImageHeader(NamedTuple):
    """What PIL reads from an image's header: the STORED size and the EXIF orientation (1 when there is none)."""

    width: int
    height: int
    orientation: int = 1

    @property
    def stored(self) -> tuple[int, int]:
        """``(width, height)`` of the pixels as stored in the file."""
        return self.width, self.height

    @property
    def rotated(self) -> tuple[int, int]:
        """The size once the EXIF orientation is applied: orientations 5 to 8 swap width and height."""
        return (self.height, self.width) if self.orientation in QUARTER_TURNS else self.stored


class ImageSizes:
    """Image headers read with PIL, cached: YOLO conversion, clipping and the EXIF checks all need them.

    ``exif_transpose``: the sandbox stores the EXIF-rotated pixels of every image with an orientation, so YOLO's
    normalised boxes are scaled by the rotated size.
    """

    def __init__(self, exif_transpose: bool = False) -> None:
        self.exif_transpose = exif_transpose
        self._headers: dict[str, ImageHeader | None] = {}

    def header(self, path: str) -> ImageHeader | None:
        """The image's header, or None when PIL cannot open the file."""
        if path not in self._headers:
            self._headers[path] = _read_header(path)
        return self._headers[path]

    def __call__(self, path: str) -> tuple[int, int] | None:
        """``(width, height)`` of the pixels the asset will hold, or None when PIL cannot open the file."""
        header = self.header(path)
        if header is None:
            return None
        return header.rotated if self.exif_transpose else header.stored


def _read_header(path: str) -> ImageHeader | None:
    """The header by the rules ``ymir-runner run`` reads images with (no PIL pixel limit, ours instead)."""
    try:
        with open_image(path) as image:
            width, height = image.size
            orientation = _orientation(image)
    except ImageProblem:
        return None
    return ImageHeader(width, height, orientation)


def _orientation(image: Any) -> int:
    """The EXIF orientation (1 to 8); 1 when absent, invalid or in unreadable EXIF data."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - broken EXIF blocks raise anything; the pixels are still usable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1
