"""EXIF orientation: the sandbox stores the STORED pixels, as the platform does.

The platform measures and ``ymir-runner run`` decodes an image's stored pixels (no EXIF rotation), so boxes
drawn on the EXIF-rotated picture (what a photo viewer shows) miss their objects. This module decides which
images ``--exif-transpose`` turns (:func:`exif_plan`), warns about the others (:class:`Notices`) and writes the
turned pixels (:func:`write_transposed`); :mod:`.headers` reads the sizes and orientations it goes by.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Sequence

from ..protocol.dataset import MAX_WARNINGS_PER_REASON
from ..protocol.images import open_image
from .headers import ImageHeader, ImageSizes
from .sources.base import SourceImage

log = logging.getLogger("ymir_runner.sandbox")

#: Warning reasons that ``--exif-transpose`` answers (the summary then names the option).
EXIF_HINT_REASONS = frozenset({"labelled on EXIF-rotated pixels", "boxes may be on EXIF-rotated pixels"})


class Notices:
    """Images used as they are but worth a warning, counted by reason; the first few of each reason are logged
    (the summary gives the totals), as :class:`~ymir_runner.protocol.dataset.SkipLog` does for skips."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()

    def warn(self, reason: str, message: str) -> None:
        """Count ``reason``; log ``message`` for its first :data:`MAX_WARNINGS_PER_REASON` occurrences."""
        self.counts[reason] += 1
        if self.counts[reason] <= MAX_WARNINGS_PER_REASON:
            log.warning("%s", message)
            if self.counts[reason] == MAX_WARNINGS_PER_REASON:
                log.warning("further '%s' are only counted", reason)


def labelled_on(image: SourceImage, header: ImageHeader) -> str | None:
    """``stored`` or ``rotated``: the pixels whose size the annotation records; None when that cannot tell
    (no recorded size, a square image, an orientation that keeps the size, or a size matching neither)."""
    if image.size is None or header.stored == header.rotated:
        return None
    return {header.stored: "stored", header.rotated: "rotated"}.get(image.size)


def exif_plan(images: Sequence[SourceImage], sizes: ImageSizes, *, transpose: bool, training: bool,
              notices: Notices) -> set[str]:
    """The images whose EXIF-rotated pixels are stored (``--exif-transpose``: every image with an orientation,
    except one whose annotation records the stored size: its boxes were drawn on the stored pixels).

    The platform measures and ``ymir-runner run`` decodes the STORED pixels, so in training every image with an
    EXIF orientation and boxes that may refer to the rotated pixels is warned about.
    """
    chosen = set()
    for image in images:
        header = sizes.header(image.path)
        if header is None or header.orientation == 1:
            continue
        labelled = labelled_on(image, header) if training and image.boxes else None
        if transpose and labelled != "stored":
            chosen.add(image.path)
        elif training and image.boxes:
            _warn_orientation(image.path, header, labelled, transpose, notices)
    return chosen


def _warn_orientation(path: str, header: ImageHeader, labelled: str | None, transpose: bool,
                      notices: Notices) -> None:
    sizes = (f"EXIF orientation {header.orientation}, stored {header.width}x{header.height}, "
             f"rotated {header.rotated[0]}x{header.rotated[1]}")
    if transpose:  # the annotation records the stored size
        notices.warn("labelled on stored pixels (not transposed)",
                     f"{path}: {sizes}; its annotation records the stored size, so --exif-transpose leaves it as "
                     f"stored")
    elif labelled == "rotated":
        notices.warn("labelled on EXIF-rotated pixels",
                     f"{path}: labelled on EXIF-rotated pixels ({sizes}; the annotation records the rotated "
                     f"size), but the platform uses the stored pixels: its boxes miss their objects; pass "
                     f"--exif-transpose to store the rotated pixels")
    elif labelled is None:
        notices.warn("boxes may be on EXIF-rotated pixels",
                     f"{path}: {sizes}; its size cannot tell whether the boxes were drawn on the stored pixels "
                     f"(which the platform uses) or on the rotated ones; if on the rotated ones, pass "
                     f"--exif-transpose")


def write_transposed(source: str, target: str) -> tuple[int, int] | None:
    """Save ``source`` with its EXIF orientation applied to the pixels (the tag removed), in its own format:
    JPEG keeps its quantisation tables and chroma subsampling, so its quality stays as it was.

    Returns the new ``(width, height)``, or None (warned) when PIL cannot decode or write the image.
    """
    from PIL import ImageOps

    try:
        with open_image(source) as image:
            format_ = "JPEG" if image.format == "MPO" else image.format  # a phone's JPEG with a depth map
            options = _save_options(image, format_)
            turned = ImageOps.exif_transpose(image)
            exif = turned.getexif()
            if exif:
                options["exif"] = exif
            turned.save(target, format_, **options)
            return turned.size
    except Exception as error:  # PIL raises many types for broken data; the original is stored instead
        log.warning("cannot apply the EXIF orientation of %s (%s): stored as it is", source, error)
        return None


def _save_options(image: Any, format_: str | None) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if image.info.get("icc_profile"):
        options["icc_profile"] = image.info["icc_profile"]
    if format_ == "JPEG":
        from PIL import JpegImagePlugin

        options["qtables"] = image.quantization
        sampling = JpegImagePlugin.get_sampling(image)
        if sampling != -1:  # -1: not YCbCr (grey, CMYK); the encoder's default is right then
            options["subsampling"] = sampling
    return options
