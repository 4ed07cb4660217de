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
- **memory budget**: decoding one image needs at most :data:`DECODE_MEMORY_BUDGET` besides its result (4 bytes
  a pixel of the reduced size). A reduced PNG (non-interlaced) or uncompressed BMP is decoded in strips of rows,
  each reduced before the next is read: a 32767 x 32767 PNG peaks at about 130 MB instead of 4.2 GB. Formats that
  can only be decoded whole (interlaced PNG, run-length BMP, GIF, TIFF, WebP: 4 bytes a stored pixel; a
  progressive JPEG: its DCT coefficients, about 3 bytes a pixel) are an ``image too large`` skip when that is
  over the budget (64 Mpx), saying so.

Nothing here imports torch; numpy only when a caller asks for ``DecodedImage.pixels``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import math
import os
import struct
import zlib
from typing import TYPE_CHECKING, Any, Iterator, NamedTuple

from PIL import Image, ImageFile

if TYPE_CHECKING:
    import numpy as np

#: The largest image decoded, in stored pixels (width x height). Aerial and satellite tiles of tens of
#: thousands of pixels a side are routine (a 14000 x 13000 orthophoto is 182 Mpx); a header claiming more than
#: a gigapixel is refused as a decompression bomb (a tiny PNG can claim 100k x 100k).
MAX_IMAGE_PIXELS = 1 << 30
#: Reduction factors tried on decode, largest first (JPEG's DCT scaling offers exactly these).
REDUCE_FACTORS = (8, 4, 2)
#: The most memory decoding one image may take besides its result (which is 4 bytes a pixel of the reduced
#: size, the caller's choice through ``min_side``). Several data-loader processes decode at once, so a few of
#: these must fit beside a training. Reduced PNG and BMP are decoded in strips of rows to stay within it; an
#: image of a format that can only be decoded whole is refused (``image too large``) when it needs more.
DECODE_MEMORY_BUDGET = 256 << 20
#: Pixels of one strip of rows (PNG, BMP), in bytes at 4 bytes a pixel: the strip decoders hold a few copies.
_STRIP_BYTES = 8 << 20

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

    @functools.cached_property
    def pixels(self) -> np.ndarray:
        """``image`` as a numpy array ``[H,W,3]`` uint8 RGB (H, W: the decoded, possibly reduced size), made once
        and shared: it is read-only (copy it to change it). Imports numpy on first use."""
        import numpy as np

        return np.asarray(self.image)


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


def _mib(size: int) -> str:
    return f"{math.ceil(size / (1 << 20))} MiB"


def _check_budget(path: str, image: Image.Image) -> None:
    """Refuse an image that can only be decoded whole when that takes more than :data:`DECODE_MEMORY_BUDGET`."""
    whole = _whole_decode(image)
    if whole is not None and whole[0] > DECODE_MEMORY_BUDGET:
        raise ImageProblem("image too large", f"{path}: {image.width}x{image.height} {whole[1]}: it can only be "
                                              f"decoded whole, which takes about {_mib(whole[0])}, more than the "
                                              f"decode memory budget of {_mib(DECODE_MEMORY_BUDGET)} (ymir_runner."
                                              f"protocol.images.DECODE_MEMORY_BUDGET)")


def _whole_decode(image: Image.Image) -> tuple[int, str] | None:
    """What decoding ``image`` whole takes when it can only be decoded whole: (bytes, what it is); None when it
    is decoded within the budget at any size (baseline JPEG by DCT scaling, PNG and BMP by strips)."""
    pixels = image.width * image.height
    if image.format in ("JPEG", "MPO"):
        if not image.info.get("progressive"):
            return None
        # libjpeg keeps every DCT coefficient of a progressive file (2 bytes each), whatever the scale asked.
        layers = getattr(image, "layer", None) or [(None, 1, 1, None)] * len(image.getbands())
        most_h, most_v = max(layer[1] for layer in layers), max(layer[2] for layer in layers)
        blocks = sum(math.ceil(image.width * layer[1] / most_h / 8) * math.ceil(image.height * layer[2] / most_v / 8)
                     for layer in layers)
        return blocks * 64 * 2, "progressive JPEG"
    if _strip_reader(image) is not None:
        return None
    what = {"PNG": "interlaced PNG" if image.info.get("interlace") else "PNG",
            "BMP": "run-length BMP"}.get(image.format or "", str(image.format))
    return pixels * 4, what  # PIL holds the decoded image at up to 4 bytes a pixel (RGB is RGBX)


def probe_image(path: str) -> ImageInfo:
    """Read an image's header (and its last bytes): size, format, mode, damage. Decodes nothing, except the
    rare file whose ending does not look complete, which is decoded once to tell damage apart from trailing
    data. (Data broken in the middle of a file that ends properly is only found by :func:`decode_image`.)

    Raises :class:`ImageProblem` for a missing, unreadable or too large image (over :data:`MAX_IMAGE_PIXELS`, or
    of a format decoded whole and needing more than :data:`DECODE_MEMORY_BUDGET`).
    """
    with open_image(path, load_truncated=False) as image:
        _check_budget(path, image)
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


def _reduce(image: Image.Image, factor: int, box: tuple[int, int, int, int] | None = None) -> Image.Image:
    """PIL's box reduce (each output pixel is the mean of ``factor`` x ``factor``) of ``box`` (the whole image
    when None). Modes it does not take are converted first: 1-bit to 8-bit grey (a third of RGB's memory),
    palette and 16-bit to RGB."""
    if image.mode == "1":
        image = image.convert("L")
    try:
        return image.reduce(factor, box)
    except ValueError:
        return to_rgb(image).reduce(factor, box)


def decode_image(path: str, min_side: int | None = None) -> DecodedImage:
    """Decode ``path`` into 8-bit RGB by the rules of this module.

    ``min_side``: the long side the caller needs; the image is reduced on decode by the largest power of two
    (at most 8) that keeps its long side at least this long. JPEG reduces inside the decoder (DCT scaling),
    so a 14000 x 13000 photo needs about 1/64 of its full-size memory; a reduced PNG (non-interlaced) or
    uncompressed BMP is decoded in strips of rows, each reduced before the next is read. None keeps the stored
    size. Decoding takes at most :data:`DECODE_MEMORY_BUDGET` besides the result. Data that breaks off is decoded
    again as far as it goes, and the result says why (``damage``): a good image is decoded once.

    Raises :class:`ImageProblem` for a missing, unreadable or too large image, and ``MemoryError`` naming the
    image and what it needs when even that much memory cannot be had.
    """
    try:
        return _decode(path, min_side, load_truncated=False)
    except (ImageProblem, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ValueError... for bad data
        damage = _damage_of(error)
    try:
        return dataclasses.replace(_decode(path, min_side, load_truncated=True), damage=damage)
    except (ImageProblem, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001
        raise ImageProblem("unreadable image", f"{path}: {error}") from None


def _decode(path: str, min_side: int | None, load_truncated: bool) -> DecodedImage:
    with open_image(path, load_truncated=load_truncated) as image:
        _check_budget(path, image)
        width, height = image.size
        factor = reduce_factor(width, height, min_side)
        try:
            strips = _strip_reader(image) if factor > 1 else None
            if strips is not None:
                return DecodedImage(_decode_strips(path, image, strips, factor, load_truncated), width, height, factor)
            if factor > 1 and image.format == "JPEG":
                mode = "L" if image.mode == "L" else "RGB"
                drafted = image.draft(mode, (max(1, width // factor), max(1, height // factor)))
                if drafted is not None:  # draft may pick a smaller factor than asked: read the one it chose
                    factor = round(width / drafted[1][2])
            image.load()
            if factor > 1 and image.size == (width, height):
                image = _reduce(image, factor)
            return DecodedImage(to_rgb(image), width, height, factor)
        except MemoryError:
            result = math.ceil(width / factor) * math.ceil(height / factor) * 4
            raise MemoryError(f"out of memory decoding {path} ({width}x{height} {image.format}, reduced {factor} "
                              f"times: {_mib(result)} for the image and up to {_mib(DECODE_MEMORY_BUDGET)} to decode "
                              f"it)") from None


# --- decoding in strips of rows ---------------------------------------------------------------------------------
# A reduced PNG or BMP is read a strip of rows at a time; each strip is reduced (box filter, strips a multiple of
# the factor high, so the result is the whole image's reduce exactly) and pasted into the result.

#: Bits a pixel of the PNG raw modes PIL decodes (PngImagePlugin._MODES): a PNG row is ceil(width * bits / 8)
#: bytes after its filter byte, and its filters work on whole pixels (bytes, below 8 bits).
_PNG_BITS = {"1": 1, "L;2": 2, "L;4": 4, "L": 8, "I;16B": 16, "RGB": 24, "RGB;16B": 48, "P;1": 1, "P;2": 2,
             "P;4": 4, "P": 8, "LA": 16, "LA;16B": 32, "RGBA": 32, "RGBA;16B": 64}
#: PNG (colour type, bit depth) whose decoded pixels are the row's bytes unchanged, per bytes a pixel: the
#: filters are undone by PIL's own decoder on these, which gives the raw rows back.
_BYTE_VIEWS = {1: (0, 8), 2: (4, 8), 3: (2, 8), 4: (6, 8), 6: (2, 16), 8: (6, 16)}


class _Strips(NamedTuple):
    """How to read ``image``'s rows: ``kind`` png or bmp, PIL's raw mode, the data's offset in the file, the
    bytes of a row (without PNG's filter byte), and for BMP the row order (-1: bottom-up)."""

    kind: str
    rawmode: str
    offset: int
    row_bytes: int
    order: int = 1


def _strip_reader(image: Image.Image) -> _Strips | None:
    """How to decode ``image`` in strips of rows, or None when it can only be decoded whole."""
    tiles = getattr(image, "tile", None) or []
    if len(tiles) != 1:
        return None
    codec, extents, offset, args = tiles[0][:4]
    if tuple(extents) != (0, 0, image.width, image.height):
        return None
    if image.format == "PNG" and codec == "zip" and not image.info.get("interlace") and args in _PNG_BITS:
        return _Strips("png", args, offset, (image.width * _PNG_BITS[args] + 7) // 8)
    if (image.format in ("BMP", "DIB") and codec == "raw" and isinstance(args, tuple) and len(args) == 3
            and args[1] > 0 and args[2] in (1, -1)):
        return _Strips("bmp", args[0], offset, args[1], args[2])
    return None


def _rows_a_strip(width: int, factor: int) -> int:
    """Rows of one strip: a multiple of ``factor``, about :data:`_STRIP_BYTES` of pixels."""
    return max(1, _STRIP_BYTES // (4 * width * factor)) * factor


def _decode_strips(path: str, image: Image.Image, strips: _Strips, factor: int, load_truncated: bool) -> Image.Image:
    """``image`` reduced ``factor`` times and in RGB, decoded a strip of rows at a time. Data that ends early or
    breaks off raises ``OSError`` (as PIL's decoder does), or with ``load_truncated`` leaves the rest black."""
    width, height = image.size
    rows = _rows_a_strip(width, factor)
    working = rows * max(4 * width, strips.row_bytes + 1) * 8  # what the strip decoders hold at once, at most
    if working > DECODE_MEMORY_BUDGET:
        raise ImageProblem("image too large", f"{path}: {width}x{height}: {factor} rows of {width} pixels take "
                                              f"about {_mib(working)} to decode, more than the decode memory budget "
                                              f"of {_mib(DECODE_MEMORY_BUDGET)} (ymir_runner.protocol.images."
                                              f"DECODE_MEMORY_BUDGET)")
    result = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    with open(path, "rb") as stream:
        reader = _PngRows(stream, strips, image) if strips.kind == "png" else _BmpRows(stream, strips, image)
        for top in range(0, height, rows):
            strip, box, problem = reader.read(top, min(rows, height - top))
            if problem and not load_truncated:
                raise OSError("image file is truncated" if problem == TRUNCATED else
                              "broken data stream when reading image file")
            result.paste(to_rgb(_reduce(strip, factor, box)), (0, top // factor))
    return result


def _strip_image(image: Image.Image, strips: _Strips, count: int, data: bytes) -> Image.Image:
    """``count`` rows of ``image`` from their raw bytes (rows missing at the end of ``data`` are zeros: black)."""
    args = (strips.row_bytes, strips.order) if strips.kind == "bmp" else ()
    strip = Image.frombytes(image.mode, (image.width, count), data.ljust(count * strips.row_bytes, b"\0"), "raw",
                            strips.rawmode, *args)
    if image.palette is not None and strip.mode == "P":
        strip.putpalette(image.palette)
    return strip


class _BmpRows:
    """The rows of an uncompressed BMP, read from the file as asked (rows past the file's end are missing)."""

    def __init__(self, stream: Any, strips: _Strips, image: Image.Image) -> None:
        self.stream, self.strips, self.image = stream, strips, image

    def read(self, top: int, count: int) -> tuple[Image.Image, None, str]:
        """Rows ``top`` to ``top + count`` as far as the file holds them, and :data:`TRUNCATED` when it holds
        fewer (a bottom-up BMP's file ends with its top rows)."""
        first = top if self.strips.order > 0 else self.image.height - top - count
        self.stream.seek(self.strips.offset + first * self.strips.row_bytes)
        data = self.stream.read(count * self.strips.row_bytes)
        whole = len(data) // self.strips.row_bytes * self.strips.row_bytes  # a partial row is not decoded
        problem = TRUNCATED if whole < count * self.strips.row_bytes else ""
        return _strip_image(self.image, self.strips, count, data[:whole]), None, problem


#: Pieces of inflated data, at most the size of a stored deflate block.
_PIECE = 0xFFFF


class _PngRows:
    """The rows of a non-interlaced PNG, inflated from its IDAT chunks as they are asked for and unfiltered by
    PIL's own PNG decoder: each strip becomes a small PNG of its own, of stored (uncompressed) deflate blocks,
    whose first row is the previous strip's last, unfiltered (PNG's filters look one row up)."""

    def __init__(self, stream: Any, strips: _Strips, image: Image.Image) -> None:
        self.strips, self.image = strips, image
        self.bytes_a_pixel = max(1, _PNG_BITS[strips.rawmode] // 8)  # what PNG's filters step by
        self.above = bytes(strips.row_bytes)  # the row above the first: zeros, by PNG's rule
        self.chunks = self._idat(stream, strips.offset)
        self.inflater = zlib.decompressobj()
        self.problem = ""

    @staticmethod
    def _idat(stream: Any, offset: int) -> Iterator[bytes]:
        """The image data of the IDAT chunks from ``offset`` (PIL's: the first chunk's data), a MiB at most at a
        time, until another chunk or the file's end."""
        stream.seek(offset - 8)
        while True:
            head = stream.read(8)
            if len(head) < 8 or head[4:] != b"IDAT":
                return
            left = struct.unpack(">I", head[:4])[0]
            while left:
                piece = stream.read(min(left, 1 << 20))
                if not piece:
                    return
                left -= len(piece)
                yield piece
            stream.read(4)  # the CRC: PIL does not check it either

    def _inflate(self, size: int) -> list[bytes]:
        """Up to ``size`` bytes of filtered rows in pieces of at most :data:`_PIECE`; fewer when the data ends or
        breaks (then ``self.problem`` says which)."""
        pieces, got = [], 0
        while got < size and not self.problem:
            source = self.inflater.unconsumed_tail or (b"" if self.inflater.eof else next(self.chunks, b""))
            if not source:
                self.problem = TRUNCATED
                break
            try:
                piece = self.inflater.decompress(source, min(size - got, _PIECE))
            except zlib.error:
                self.problem = CORRUPT
                break
            if piece:
                pieces.append(piece)
                got += len(piece)
        return pieces

    def read(self, top: int, count: int) -> tuple[Image.Image, tuple[int, int, int, int] | None, str]:
        """The next ``count`` rows and the box of the image that holds them; what broke off, if anything."""
        stride, width = self.strips.row_bytes + 1, self.image.width
        pieces = self._inflate(count * stride) if not self.problem else []
        rows, broken = _whole_rows(pieces, stride)
        if rows < count and not self.problem:
            self.problem = CORRUPT if broken else TRUNCATED
        if not rows:
            return _strip_image(self.image, self.strips, count, b""), None, self.problem
        pieces.insert(0, b"\0" + self.above)
        view = self._unfilter(pieces, rows + 1)
        if rows == count and self.strips.rawmode == view.mode:  # the bytes are the pixels: no copy
            self.above = view.crop((0, rows, width, rows + 1)).tobytes()
            return view, (0, 1, width, rows + 1), ""
        data = self._raw(view, pieces)[self.strips.row_bytes:]
        self.above = data[-self.strips.row_bytes:]
        return _strip_image(self.image, self.strips, count, data), None, self.problem if rows < count else ""

    def _unfilter(self, pieces: list[bytes], rows: int, swap: bool = False) -> Image.Image:
        """PIL's decode of ``rows`` filtered rows (each a filter byte, then the row) as a PNG whose pixels are the
        row's bytes: 8-bit grey, grey + alpha, RGB or RGBA by the bytes a pixel; 16-bit RGB(A) gives the high
        byte of each sample, or with ``swap`` the low one (the filters treat every byte of a pixel alike)."""
        kind, depth = _BYTE_VIEWS[self.bytes_a_pixel]
        if swap:
            pieces = [_swap_samples(b"".join(pieces), self.strips.row_bytes + 1)]
        blocks = [b"\x78\x01"]  # a zlib stream of stored blocks; PIL stops at the last row, before any checksum
        for piece in pieces:
            for start in range(0, len(piece), _PIECE):
                block = piece[start:start + _PIECE]
                blocks += [struct.pack("<BHH", 0, len(block), len(block) ^ 0xFFFF), block]
        crc = zlib.crc32(b"IDAT")
        for block in blocks:
            crc = zlib.crc32(block, crc)
        header = struct.pack(">IIBBBBB", self.strips.row_bytes // self.bytes_a_pixel, rows, depth, kind, 0, 0, 0)
        png = b"".join([b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", header),
                        struct.pack(">I", sum(map(len, blocks))), b"IDAT", *blocks, struct.pack(">I", crc),
                        _png_chunk(b"IEND", b"")])
        view = Image.open(io.BytesIO(png))
        view.load()
        return view

    def _raw(self, view: Image.Image, pieces: list[bytes]) -> bytes:
        """The rows' bytes as the PNG holds them, unfiltered (``view``: :meth:`_unfilter` of ``pieces``)."""
        high = view.tobytes()
        if _BYTE_VIEWS[self.bytes_a_pixel][1] == 8:
            return high
        raw = bytearray(2 * len(high))
        raw[0::2] = high
        raw[1::2] = self._unfilter(pieces, view.height, swap=True).tobytes()
        return bytes(raw)


def _whole_rows(pieces: list[bytes], stride: int) -> tuple[int, bool]:
    """How many whole rows ``pieces`` hold, up to the first whose filter type is not one of PNG's five (then
    True: the data is corrupt there); ``pieces`` is cut after them."""
    total = sum(map(len, pieces))
    rows, start, broken = total // stride, 0, False
    for piece in pieces:
        bad = next((position for position in range(-start % stride, min(len(piece), rows * stride - start), stride)
                    if piece[position] > 4), None)
        if bad is not None:
            rows, broken = (start + bad) // stride, True
            break
        start += len(piece)
    cut = total - rows * stride
    while cut:
        last = pieces.pop()
        if len(last) > cut:
            pieces.append(last[:-cut])
        cut -= min(cut, len(last))
    return rows, broken


def _swap_samples(filtered: bytes, stride: int) -> bytes:
    """Each row's 16-bit samples with their two bytes swapped (a row's first byte is its filter type)."""
    swapped = bytearray(filtered)
    for start in range(1, len(filtered), stride):
        swapped[start:start + stride - 1:2] = filtered[start + 1:start + stride:2]
        swapped[start + 1:start + stride:2] = filtered[start:start + stride - 1:2]
    return bytes(swapped)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
