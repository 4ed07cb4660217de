"""The images of /in/assets, read the way the platform imported them (protocol.md section 2).

The platform's importer opens each asset with PIL, truncated-image loading on, keeps JPEG, PNG and BMP of any
bit depth or mode, and records the STORED size (no EXIF rotation, never decoding the pixels, no pixel limit).
Every image this project decodes follows the same rules, in one place:

- **by content**: the format comes from the file's bytes; the extension is not reliable.
- **stored pixels**: EXIF orientation is NOT applied, so pixels and boxes share the coordinates the platform
  recorded.
- **bit depth**: 16-bit images are scaled to 8 bit by the full 16-bit range, keeping the high byte:
  ``v8 = v16 >> 8`` (``floor(v16 / 256)``: 0 -> 0, 20000 -> 78, 60000 -> 234, 65535 -> 255). PIL already reads
  16-bit RGB PNGs this way; 16-bit grey (and 32-bit integer grey, clipped to [0, 255] after the shift) gets the
  same rule here. Float images are clipped to [0, 255]; every other mode (palette, grey with alpha, RGBA, CMYK,
  1-bit) goes through PIL's own conversion to RGB.
- **damage**: an image whose data ends early (``truncated image``) or breaks off inside (``corrupt image
  data``) is decoded as far as it goes (PIL fills the rest: grey for JPEG, black for PNG and BMP) and reported;
  it is used in every task, because it is what the platform imported and showed for labelling.
- **size limit**: at most :data:`MAX_IMAGE_PIXELS` stored pixels (a larger image is a ``image too large``
  skip, never decoded). Below it, large images are decoded straight to a reduced size (JPEG DCT scaling,
  otherwise PIL's box reduce) by a power-of-two factor, so memory stays near what the caller needs.

Nothing here imports numpy or torch: callers convert the RGB ``PIL.Image`` themselves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Iterator, NamedTuple

from PIL import Image, ImageFile

#: The largest image decoded, in stored pixels (width x height). Aerial and satellite tiles of tens of
#: thousands of pixels a side are routine (a 14000 x 13000 orthophoto is 182 Mpx); a header claiming more than
#: a gigapixel is refused as a decompression bomb (a tiny PNG can claim 100k x 100k).
MAX_IMAGE_PIXELS = 1 << 30
#: Reduction factors tried on decode, largest first (JPEG's DCT scaling offers exactly these).
REDUCE_FACTORS = (8, 4, 2)

_MAGIC = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"BM", "bmp"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)
#: How a complete file of each format ends: a mismatch is checked by a strict decode (trailing data such as a
#: phone's motion-photo video after the JPEG end marker is not truncation).
_ENDINGS = {"jpeg": b"\xff\xd9", "png": b"IEND\xaeB`\x82"}
#: PIL's format names -> the names of :func:`sniff_image_format` (MPO: a JPEG with extra frames, from cameras).
_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "BMP": "bmp", "DIB": "bmp", "GIF": "gif", "TIFF": "tiff",
            "WEBP": "webp"}
_SIXTEEN_BIT_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})


class ImageProblem(ValueError):
    """An image that cannot be used; ``reason`` is the skip reason (``missing image``, ``unreadable image``,
    ``image too large``), the message says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


#: Damage an image is used with, decoded as far as it goes: its data ends early, or breaks off inside.
TRUNCATED = "truncated image"
CORRUPT = "corrupt image data"


class ImageInfo(NamedTuple):
    """What the header (and the file's end) say: stored ``width`` x ``height`` in pixels, the format by content
    (``jpeg``, ``png``, ...), PIL's mode, and ``damage``: '' or :data:`TRUNCATED` / :data:`CORRUPT`."""

    width: int
    height: int
    format: str
    mode: str
    damage: str = ""


@dataclasses.dataclass(frozen=True)
class DecodedImage:
    """An 8-bit RGB image decoded by the project's rules.

    ``image`` is ``width // factor`` (rounded up) wide: a box corner at stored pixel edge ``x`` lies at
    ``x / factor`` in it. ``width`` / ``height`` are the STORED size, the coordinates of the annotations.
    ``damage``: '' or :data:`TRUNCATED` / :data:`CORRUPT` when the data broke off and the rest was filled.
    """

    image: Image.Image
    width: int
    height: int
    factor: int
    damage: str = ""


def sniff_image_format(path: str) -> str | None:
    """The image format from the file's first bytes (YMIR's extensions are unreliable), or None."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(16)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


@contextlib.contextmanager
def _pil_rules(load_truncated: bool) -> Iterator[None]:
    """PIL's two process-wide switches, set to this module's rules for the duration of one open/decode.

    PIL's own pixel limit is switched off (it warns from 89 Mpx and refuses from 179 Mpx): the limit is
    :data:`MAX_IMAGE_PIXELS`, checked by :func:`_check_size` on the header before anything is decoded.
    """
    saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, load_truncated
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


@contextlib.contextmanager
def open_image(path: str, *, load_truncated: bool = True) -> Iterator[Image.Image]:
    """PIL's lazy open (the header only) under this module's rules: the size limit is checked before anything
    is decoded, and a later ``load()`` reads a truncated file as far as it goes (``load_truncated``).

    Raises :class:`ImageProblem` for a missing, unidentifiable or too large image.
    """
    with _pil_rules(load_truncated):
        try:
            image = Image.open(path)
        except FileNotFoundError:
            raise ImageProblem("missing image", f"{path} does not exist") from None
        except Exception as error:  # PIL raises many types (UnidentifiedImageError, SyntaxError, ValueError...)
            raise ImageProblem("unreadable image", f"{path}: {error}") from None
        with image:
            _check_size(path, image)
            yield image


def _check_size(path: str, image: Image.Image) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise ImageProblem("unreadable image", f"{path}: size {width}x{height}")
    if width * height > MAX_IMAGE_PIXELS:  # PIL's own check allows up to its limit; ours is exact
        raise ImageProblem("image too large", f"{path}: {width}x{height} is more than {MAX_IMAGE_PIXELS} pixels "
                                              f"(ymir_runner.protocol.images.MAX_IMAGE_PIXELS)")


def probe_image(path: str) -> ImageInfo:
    """Read an image's header (and its last bytes): size, format, mode, damage. Decodes nothing, except the
    rare file whose ending does not look complete, which is decoded once to tell damage apart from trailing
    data. (Data broken in the middle of a file that ends properly is only found by :func:`decode_image`.)

    Raises :class:`ImageProblem` for a missing, unreadable or too large image.
    """
    with open_image(path, load_truncated=False) as image:
        format_ = _FORMATS.get(image.format or "", (image.format or "unknown").lower())
        info = ImageInfo(image.width, image.height, format_, image.mode)
        complete = _ends_completely(getattr(image, "fp", None), format_)  # an ImageFile's open stream
    return info if complete else info._replace(damage=_damage(path))


def _ends_completely(stream: Any, format_: str) -> bool:
    """Whether the open file ends as a complete file of its format does (read from PIL's own file object)."""
    try:
        if format_ == "bmp":  # the header states the file size (bytes 2-5; 0 when the writer left it out)
            stream.seek(2)
            declared = int.from_bytes(stream.read(4), "little")
            return declared == 0 or stream.seek(0, os.SEEK_END) >= declared
        ending = _ENDINGS.get(format_)
        if ending is None:
            return True  # formats the platform never imports: a truncation shows up when decoding
        stream.seek(-len(ending), os.SEEK_END)
        return stream.read() == ending
    except (OSError, ValueError):
        return False


def _damage(path: str) -> str:
    """'' when the image decodes to its end, else why not (:data:`TRUNCATED` or :data:`CORRUPT`).
    JPEGs are decoded at 1/8 (DCT scaling reads every byte of the data at a 64th of the pixels)."""
    with _pil_rules(load_truncated=False):
        try:
            with Image.open(path) as image:
                image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
                image.load()
        except Exception as error:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError... for bad data
            return _damage_of(error)
    return ""


def _damage_of(error: BaseException) -> str:
    return TRUNCATED if isinstance(error, OSError) and "truncated" in str(error) else CORRUPT


def reduce_factor(width: int, height: int, min_side: int | None) -> int:
    """The largest of :data:`REDUCE_FACTORS` that keeps the image's LONG side at least ``min_side`` pixels
    (1 when ``min_side`` is None or the image is already small)."""
    if not min_side:
        return 1
    long_side = max(width, height)
    return next((factor for factor in REDUCE_FACTORS if long_side / factor >= min_side), 1)


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of a loaded image, by the bit-depth rule of this module."""
    if image.mode in _SIXTEEN_BIT_MODES:
        # I;16 must become I (32-bit) before point(); PIL's I -> L conversion floors and clips to [0, 255].
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    elif image.mode == "F":
        image = image.convert("L")  # clips to [0, 255]
    return image if image.mode == "RGB" else image.convert("RGB")


def _reduce(image: Image.Image, factor: int) -> Image.Image:
    """PIL's box reduce (each output pixel is the mean of ``factor`` x ``factor``). Modes it does not take are
    converted first: 1-bit to 8-bit grey (a third of RGB's memory), palette and 16-bit to RGB."""
    if image.mode == "1":
        image = image.convert("L")
    try:
        return image.reduce(factor)
    except ValueError:
        return to_rgb(image).reduce(factor)


def decode_image(path: str, min_side: int | None = None) -> DecodedImage:
    """Decode ``path`` into 8-bit RGB by the rules of this module.

    ``min_side``: the long side the caller needs; the image is reduced on decode by the largest power of two
    (at most 8) that keeps its long side at least this long. JPEG reduces inside the decoder (DCT scaling),
    so a 14000 x 13000 photo needs about 1/64 of its full-size memory; PNG and BMP are decoded whole, then
    reduced. None keeps the stored size. Data that breaks off is decoded again as far as it goes, and the result
    says why (``damage``): a good image is decoded once.

    Raises :class:`ImageProblem` for a missing, unreadable or too large image.
    """
    try:
        return _decode(path, min_side, load_truncated=False)
    except ImageProblem:
        raise
    except Exception as error:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError... for bad data
        damage = _damage_of(error)
    try:
        return dataclasses.replace(_decode(path, min_side, load_truncated=True), damage=damage)
    except ImageProblem:
        raise
    except Exception as error:  # noqa: BLE001
        raise ImageProblem("unreadable image", f"{path}: {error}") from None


def _decode(path: str, min_side: int | None, load_truncated: bool) -> DecodedImage:
    with open_image(path, load_truncated=load_truncated) as image:
        width, height = image.size
        factor = reduce_factor(width, height, min_side)
        if factor > 1 and image.format == "JPEG":
            mode = "L" if image.mode == "L" else "RGB"
            drafted = image.draft(mode, (max(1, width // factor), max(1, height // factor)))
            if drafted is not None:  # draft may pick a smaller factor than asked: read the one it chose
                factor = round(width / drafted[1][2])
        image.load()
        if factor > 1 and image.size == (width, height):
            image = _reduce(image, factor)
        return DecodedImage(to_rgb(image), width, height, factor)
