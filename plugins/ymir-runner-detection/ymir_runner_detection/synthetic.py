"""Deterministic synthetic detection dataset in YMIR's ``/in`` layout (for the demo, tests and benchmarks; the
engine only sees the ``(path, boxes, classes)`` items it describes).

Coloured shapes (circle, rectangle, triangle) of various sizes, aspect ratios
and rotations on noisy, low-frequency textured backgrounds with clutter lines;
several objects per image, limited occlusion. Box annotations are the tight
bounding boxes of each shape's rendered pixels (before occlusion).

Layout written under ``<out_dir>/in``::

    assets/<last 2 hex of sha1>/<sha1>.<jpg|png>   sha1 of the file content; a few
                                                   files carry a misleading extension
    annotations/<sha1>.txt                         det-ark: "cls, xmin, ymin, xmax, ymax, quality, angle"
                                                   (inclusive integer xmax/ymax)
    annotations-det-voc/<sha1>.xml                 det-voc (when requested as a second format)
    train-index.tsv, val-index.tsv                 "<abs image path>\\t<abs annotation path>"
    candidate-index.tsv                            "<abs image path>"

The primary annotation format (first of ``annotation_formats``) goes to
``annotations/`` and is referenced by the index files.

:func:`generate_segmentation` writes the same scenes for segmentation (object types 3 and 4) as the platform
exports ``seg-coco:raw``: one ``annotations/coco-annotations.json`` named on every train and val index line, each
shape's mask as it is SEEN (the pixels no later shape covers: the last shape pasted wins), so the semantic label
map the platform paints from it is exactly the picture's.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from ymir_runner import IGNORE_LABEL, SegCocoImage, annotation_suffix, annotation_text, seg_object, write_seg_coco

CLASS_NAMES = ("circle", "rectangle", "triangle")
#: The annotation formats the generator writes.
WRITABLE_FORMATS = ("det-ark", "det-voc")


@dataclass(frozen=True)
class SceneConfig:
    """How hard the images are. The defaults include tiny objects, occlusion and clutter."""

    objects_range: tuple[int, int] = (2, 7)  # objects per image (inclusive)
    min_object_size: float = 12.0  # pixels, shape size before aspect distortion
    max_object_fraction: float = 0.45  # largest shape size as a fraction of the image's short side
    max_occlusion: float = 0.3  # max fraction of an earlier object's box a later one may cover
    max_clutter_lines: int = 3  # random lines drawn on the background
    noise_std_range: tuple[float, float] = (2.0, 14.0)  # per-pixel Gaussian noise


#: Shapes from 24 px, no occlusion, no clutter: the demo's scene and the training benchmark's reference.
PLAIN_SCENE = SceneConfig(min_object_size=24.0, max_occlusion=0.0, max_clutter_lines=0)


@dataclass
class SyntheticDataset:
    """What :func:`generate` wrote. Items hold engine-convention boxes (x2 exclusive floats)."""

    root: Path
    class_names: list[str]
    train_index: Path
    val_index: Path
    candidate_index: Path
    train_items: list[tuple[Path, np.ndarray, np.ndarray]] = field(default_factory=list)
    val_items: list[tuple[Path, np.ndarray, np.ndarray]] = field(default_factory=list)
    candidate_paths: list[Path] = field(default_factory=list)
    annotation_paths: dict[str, list[Path]] = field(default_factory=dict)  # format -> train+val annotation files
    corrupt_paths: list[Path] = field(default_factory=list)


def _background(rng: np.random.Generator, width: int, height: int, max_lines: int) -> Image.Image:
    """Low-frequency colour texture plus a few clutter lines."""
    grid = rng.integers(0, 256, size=(int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3), dtype=np.uint8)
    texture = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(texture)
    for _ in range(int(rng.integers(0, max_lines + 1))):
        points = [tuple(int(v) for v in rng.integers(0, (width, height))) for _ in range(2)]
        draw.line(points, fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 4)))
    return texture


def _shape_polygon(class_name: str, rng: np.random.Generator, width: float,
                   height: float) -> list[tuple[float, float]] | None:
    """Polygon (relative to the box centre) for rectangles/triangles; None for circles (drawn as ellipse)."""
    if class_name == "circle":
        return None
    if class_name == "rectangle":
        corners = [(-width / 2, -height / 2), (width / 2, -height / 2), (width / 2, height / 2),
                   (-width / 2, height / 2)]
        angle = rng.uniform(0, math.pi / 2) if rng.random() < 0.3 else 0.0
    else:
        start = rng.uniform(0, 2 * math.pi)
        steps = np.cumsum([0.0, rng.uniform(1.8, 2.4), rng.uniform(1.8, 2.4)])
        corners = [(math.cos(start + s) * width / 2, math.sin(start + s) * height / 2) for s in steps]
        angle = 0.0
    cos_a, sin_a = math.cos(angle), math.sin(angle)
    return [(x * cos_a - y * sin_a, x * sin_a + y * cos_a) for x, y in corners]


def _render_shape(class_name: str, rng: np.random.Generator, size: float) -> Image.Image:
    """A binary 'L' mask containing the shape, cropped to its tight bounding box."""
    aspect = 1.0 if class_name == "circle" else math.exp(rng.uniform(-0.6, 0.6))
    width, height = size * math.sqrt(aspect), size / math.sqrt(aspect)
    canvas = int(math.ceil(max(width, height) * 1.5)) + 4
    mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    centre = canvas / 2
    polygon = _shape_polygon(class_name, rng, width, height)
    if polygon is None:
        radius = size / 2
        low, high = round(centre - radius), round(centre + radius) - 1
        draw.ellipse([low, low, high, high], fill=255)
    else:
        draw.polygon([(round(centre + x), round(centre + y)) for x, y in polygon], fill=255)
    return mask.crop(mask.getbbox())


def _covered_fraction(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Fraction of each of ``others``' area that ``box`` covers."""
    top_left = np.maximum(others[:, :2], box[:2])
    bottom_right = np.minimum(others[:, 2:], box[2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=1)
    return inter / np.maximum((others[:, 2:] - others[:, :2]).prod(axis=1), 1)


@dataclass
class RenderedScene:
    """One generated image and what was pasted on it, in paste order: ``shapes[i]`` is ``(class id, x, y, mask)``,
    the binary ``bool`` mask of the shape's own box at ``(x, y)`` (before occlusion: a later shape pastes over
    it)."""

    pixels: np.ndarray  # [H, W, 3] uint8
    boxes: np.ndarray  # [N, 4] float32, x2 exclusive: each shape's box before occlusion
    classes: np.ndarray  # [N] int64
    shapes: list[tuple[int, int, int, np.ndarray]]

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    def label_map(self) -> np.ndarray:
        """The exact semantic ground truth: a ``uint8`` ``[H, W]`` map of class ids, each pixel the class of the
        LAST shape pasted over it (the one seen), 255 (``ymir_runner.protocol.masks.IGNORE_LABEL``) where no
        shape is."""
        labels = np.full((self.height, self.width), IGNORE_LABEL, dtype=np.uint8)
        for cls, x, y, mask in self.shapes:
            labels[y:y + mask.shape[0], x:x + mask.shape[1]][mask] = cls
        return labels

    def visible_masks(self) -> list[tuple[int, np.ndarray]]:
        """``(class id, mask)`` of each shape as it is seen (the pixels no later shape covers), full-size ``bool``
        ``[H, W]``, in paste order; shapes covered entirely are left out. Painted in order they make
        :meth:`label_map`; they are also the shapes' instance masks."""
        covered = np.zeros((self.height, self.width), dtype=bool)
        visible: list[tuple[int, np.ndarray]] = []
        for cls, x, y, mask in reversed(self.shapes):
            full = np.zeros_like(covered)
            full[y:y + mask.shape[0], x:x + mask.shape[1]] = mask
            seen = full & ~covered
            covered |= full
            if seen.any():
                visible.append((cls, seen))
        return visible[::-1]


def render_scene(rng: np.random.Generator, size_range: tuple[int, int],
                 scene: SceneConfig = SceneConfig()) -> RenderedScene:
    """One synthetic image with its shapes (:class:`RenderedScene`)."""
    width, height = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
    image = _background(rng, width, height, scene.max_clutter_lines)
    boxes: list[np.ndarray] = []
    classes: list[int] = []
    shapes: list[tuple[int, int, int, np.ndarray]] = []
    min_side = min(width, height)
    for _ in range(int(rng.integers(scene.objects_range[0], scene.objects_range[1] + 1))):
        cls = int(rng.integers(len(CLASS_NAMES)))
        # Log-uniform sizes: many small objects, some large ones.
        largest = max(scene.max_object_fraction * min_side, scene.min_object_size)
        size = math.exp(rng.uniform(math.log(scene.min_object_size), math.log(largest)))
        mask = _render_shape(CLASS_NAMES[cls], rng, size)
        mask_w, mask_h = mask.size
        if mask_w >= width or mask_h >= height:
            continue
        for _attempt in range(20):
            x0, y0 = int(rng.integers(0, width - mask_w + 1)), int(rng.integers(0, height - mask_h + 1))
            box = np.array([x0, y0, x0 + mask_w, y0 + mask_h], dtype=np.float32)
            if not boxes or _covered_fraction(box, np.array(boxes)).max() <= scene.max_occlusion:
                break
        else:
            continue
        left, top, right, bottom = (int(v) for v in box)
        region = np.asarray(image.crop((left, top, right, bottom)), dtype=np.float32).reshape(-1, 3).mean(axis=0)
        colour = rng.integers(0, 256, 3)
        while np.abs(colour - region).sum() < 120:  # keep shapes visible against the local background
            colour = rng.integers(0, 256, 3)
        # The mask is binary (0 or 255, drawn without anti-aliasing): the paste replaces exactly its pixels.
        image.paste(tuple(int(v) for v in colour), (x0, y0), mask)
        boxes.append(box)
        classes.append(cls)
        shapes.append((cls, x0, y0, np.asarray(mask) > 0))
    pixels = np.asarray(image, dtype=np.float32)
    pixels += rng.standard_normal(pixels.shape, dtype=np.float32) * float(rng.uniform(*scene.noise_std_range))
    box_array = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    return RenderedScene(np.clip(pixels, 0, 255).astype(np.uint8), box_array, np.array(classes, dtype=np.int64),
                         shapes)


def render_image(
    rng: np.random.Generator, size_range: tuple[int, int], scene: SceneConfig = SceneConfig()
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One synthetic image (HxWx3 uint8), its boxes [N,4] (x2 exclusive) and class ids [N]."""
    rendered = render_scene(rng, size_range, scene)
    return rendered.pixels, rendered.boxes, rendered.classes


def _encode(image: np.ndarray, image_format: str) -> bytes:
    buffer = io.BytesIO()
    if image_format == "PNG":
        Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    else:
        Image.fromarray(image).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def inclusive_corners(boxes: np.ndarray, classes: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """``(class, xmin, ymin, xmax, ymax)`` inclusive integer corners, as YMIR's annotation files hold them, from
    float pixel-edge boxes ``[N, 4]`` (x2 exclusive) and their class ids ``[N]``."""
    return [(int(cls), int(round(x1)), int(round(y1)), int(round(x2)) - 1, int(round(y2)) - 1)
            for (x1, y1, x2, y2), cls in zip(np.asarray(boxes).reshape(-1, 4), classes)]


def _write_asset(root: Path, data: bytes, extension: str) -> tuple[Path, str]:
    sha1 = hashlib.sha1(data).hexdigest()
    path = root / "assets" / sha1[-2:] / f"{sha1}{extension}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path.resolve(), sha1


def _choose_encoding(rng: np.random.Generator, misleading_extension_rate: float) -> tuple[str, str]:
    image_format = "PNG" if rng.random() < 0.5 else "JPEG"
    true_extension = ".png" if image_format == "PNG" else ".jpg"
    if rng.random() < misleading_extension_rate:
        return image_format, ".jpg" if image_format == "PNG" else ".png"
    return image_format, true_extension


def generate(
    out_dir: str | Path,
    n_train: int = 200,
    n_val: int = 50,
    n_candidates: int = 20,
    img_size_range: tuple[int, int] = (256, 416),
    seed: int = 0,
    *,
    objects_range: tuple[int, int] | None = None,
    scene: SceneConfig | None = None,
    annotation_formats: Sequence[str] = ("det-ark", "det-voc"),
    misleading_extension_rate: float = 0.05,
    n_corrupt_train: int = 0,
) -> SyntheticDataset:
    """Write a seeded synthetic dataset under ``<out_dir>/in`` and describe it.

    ``scene`` sets the difficulty (``objects_range`` is a shortcut overriding
    its field). ``n_corrupt_train`` extra train entries point at files no
    decoder can identify (annotated as empty) to exercise unreadable-image handling.
    """
    scene = scene or SceneConfig()
    if objects_range is not None:
        scene = replace(scene, objects_range=(int(objects_range[0]), int(objects_range[1])))
    unknown = set(annotation_formats) - set(WRITABLE_FORMATS)
    if not annotation_formats or unknown:
        raise ValueError(f"annotation_formats must be a non-empty subset of {sorted(WRITABLE_FORMATS)}")
    root = Path(out_dir) / "in"
    rng = np.random.default_rng(seed)
    result = SyntheticDataset(
        root=root.resolve(),
        class_names=list(CLASS_NAMES),
        train_index=(root / "train-index.tsv").resolve(),
        val_index=(root / "val-index.tsv").resolve(),
        candidate_index=(root / "candidate-index.tsv").resolve(),
        annotation_paths={fmt: [] for fmt in annotation_formats},
    )
    index_lines: dict[str, list[str]] = {"train": [], "val": []}
    for split, count in (("train", n_train), ("val", n_val)):
        for _ in range(count):
            image, boxes, classes = render_image(rng, img_size_range, scene)
            image_format, extension = _choose_encoding(rng, misleading_extension_rate)
            path, sha1 = _write_asset(root, _encode(image, image_format), extension)
            annotation = _write_annotations(root, sha1, path.name, image.shape, boxes, classes, annotation_formats,
                                            result)
            index_lines[split].append(f"{path}\t{annotation}")
            getattr(result, f"{split}_items").append((path, boxes, classes))
    for _ in range(n_corrupt_train):
        image, _, _ = render_image(rng, img_size_range, scene)
        data = _encode(image, "JPEG")
        # A JPEG start-of-image marker and then garbage: no decoder can identify it.
        path, sha1 = _write_asset(root, data[:2] + b"not an image" + data[-64:], ".jpg")
        empty = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        annotation = _write_annotations(root, sha1, path.name, image.shape, *empty, annotation_formats, result)
        index_lines["train"].append(f"{path}\t{annotation}")
        result.train_items.append((path, *empty))
        result.corrupt_paths.append(path)
    for _ in range(n_candidates):
        image, _, _ = render_image(rng, img_size_range, scene)
        image_format, extension = _choose_encoding(rng, misleading_extension_rate)
        result.candidate_paths.append(_write_asset(root, _encode(image, image_format), extension)[0])
    result.train_index.write_text("".join(line + "\n" for line in index_lines["train"]))
    result.val_index.write_text("".join(line + "\n" for line in index_lines["val"]))
    result.candidate_index.write_text("".join(f"{path}\n" for path in result.candidate_paths))
    return result


def _write_annotations(root, sha1, filename, shape, boxes, classes, formats, result) -> Path:
    """Write every requested format; return the primary one's path."""
    primary: Path | None = None
    for position, fmt in enumerate(formats):
        folder = root / ("annotations" if position == 0 else f"annotations-{fmt}")
        folder.mkdir(parents=True, exist_ok=True)
        path = (folder / f"{sha1}{annotation_suffix(fmt)}").resolve()
        path.write_text(annotation_text(fmt, inclusive_corners(boxes, classes), filename=filename,
                                        size=(shape[1], shape[0]), class_names=CLASS_NAMES))
        result.annotation_paths[fmt].append(path)
        primary = primary or path
    assert primary is not None, "formats is never empty"
    return primary


#: The one annotation file of a segmentation dataset, under ``<out_dir>/in`` (the platform's
#: ``/in/annotations/coco-annotations.json``).
SEG_COCO_NAME = "annotations/coco-annotations.json"


@dataclass
class SegmentationDataset:
    """What :func:`generate_segmentation` wrote. Items hold each image's path and its exact semantic label map
    (``uint8`` ``[H, W]`` class ids, :data:`ymir_runner.IGNORE_LABEL` where no shape is)."""

    root: Path
    class_names: list[str]
    train_index: Path
    val_index: Path
    candidate_index: Path
    annotation_file: Path
    train_items: list[tuple[Path, np.ndarray]] = field(default_factory=list)
    val_items: list[tuple[Path, np.ndarray]] = field(default_factory=list)
    candidate_paths: list[Path] = field(default_factory=list)


def generate_segmentation(
    out_dir: str | Path,
    n_train: int = 240,
    n_val: int = 60,
    n_candidates: int = 20,
    img_size_range: tuple[int, int] = (160, 160),
    seed: int = 0,
    *,
    scene: SceneConfig | None = None,
    misleading_extension_rate: float = 0.05,
) -> SegmentationDataset:
    """Write a seeded synthetic segmentation dataset under ``<out_dir>/in`` as the platform exports
    ``seg-coco:raw`` (module docstring) and describe it. ``scene`` sets the difficulty (default: tiny objects,
    occlusion up to 30 % of a box, clutter). Objects are listed in paste order, each with its visible mask as a
    compressed RLE (tight int box, pixel area); a shape covered entirely is not listed."""
    scene = scene or SceneConfig()
    root = Path(out_dir) / "in"
    rng = np.random.default_rng(seed)
    annotation_file = (root / SEG_COCO_NAME).resolve()
    result = SegmentationDataset(
        root=root.resolve(),
        class_names=list(CLASS_NAMES),
        train_index=(root / "train-index.tsv").resolve(),
        val_index=(root / "val-index.tsv").resolve(),
        candidate_index=(root / "candidate-index.tsv").resolve(),
        annotation_file=annotation_file,
    )
    exported: list[SegCocoImage] = []
    index_lines: dict[str, list[str]] = {"train": [], "val": []}
    for split, count in (("train", n_train), ("val", n_val)):
        for _ in range(count):
            rendered = render_scene(rng, img_size_range, scene)
            image_format, extension = _choose_encoding(rng, misleading_extension_rate)
            path, _ = _write_asset(root, _encode(rendered.pixels, image_format), extension)
            objects = [seg_object(cls, mask, rendered.height, rendered.width)
                       for cls, mask in rendered.visible_masks()]
            exported.append(SegCocoImage(path.name, rendered.width, rendered.height, objects))
            index_lines[split].append(f"{path}\t{annotation_file}")
            getattr(result, f"{split}_items").append((path, rendered.label_map()))
    for _ in range(n_candidates):
        rendered = render_scene(rng, img_size_range, scene)
        image_format, extension = _choose_encoding(rng, misleading_extension_rate)
        result.candidate_paths.append(_write_asset(root, _encode(rendered.pixels, image_format), extension)[0])
    annotation_file.parent.mkdir(parents=True, exist_ok=True)
    write_seg_coco(str(annotation_file), exported, CLASS_NAMES)
    result.train_index.write_text("".join(line + "\n" for line in index_lines["train"]))
    result.val_index.write_text("".join(line + "\n" for line in index_lines["val"]))
    result.candidate_index.write_text("".join(f"{path}\n" for path in result.candidate_paths))
    return result
