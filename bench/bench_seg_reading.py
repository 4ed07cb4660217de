"""Read a generated seg-coco:raw training set as an instance-segmentation task: wall time and peak RSS.

    python bench/bench_seg_reading.py [--images 10000] [--objects-per-image 10] [--repeat 3]

Issue 26's target: a 10,000-image / 100,000-object seg-coco (about 52 MB) read in <= 3 s wall with a peak RSS
<= 500 MB on the 2-core machine, no mask decoded while reading. The file holds compressed RLE strings of
ellipses at 640 x 480 (a few hundred distinct masks, reused) and 10 % polygons; every image is a real 640 x 480
JPEG (its header is read, as in any task). Each timed read runs in a fresh child process (the RSS is the
reading's own: the interpreter and imports included); the best wall time of ``--repeat`` runs is printed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

CLASSES = ("cat", "dog", "person", "car")
WIDTH, HEIGHT = 640, 480


def generate(root: str, images: int, per_image: int, seed: int = 0) -> tuple[str, int]:
    import numpy as np
    from PIL import Image

    from ymir_runner.protocol.masks import encode_mask, mask_bbox

    rng = random.Random(seed)
    yy, xx = np.mgrid[:HEIGHT, :WIDTH]
    shapes = []
    for _ in range(300):
        cx, cy = rng.randint(20, WIDTH - 20), rng.randint(20, HEIGHT - 20)
        rx, ry = rng.randint(8, 200), rng.randint(8, 150)
        mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        shapes.append((encode_mask(mask), mask_bbox(mask), int(mask.sum())))
    assets = os.path.join(root, "assets")
    os.makedirs(assets)
    os.makedirs(os.path.join(root, "annotations"))
    buffer = io.BytesIO()
    Image.new("RGB", (WIDTH, HEIGHT), (120, 110, 100)).save(buffer, "JPEG")
    jpeg = buffer.getvalue()
    coco_images, annotations, lines = [], [], []
    coco_file = os.path.join(root, "annotations", "coco-annotations.json")
    for index in range(images):
        name = f"{index:040x}.jpg"
        with open(os.path.join(assets, name), "wb") as stream:
            stream.write(jpeg)
        coco_images.append({"id": index + 1, "file_name": name, "width": WIDTH, "height": HEIGHT})
        lines.append(f"{os.path.join(assets, name)}\t{coco_file}\n")
        for _ in range(per_image):
            rle, bbox, area = rng.choice(shapes)
            if rng.random() < 0.1:
                x, y, w, h = bbox
                segmentation = [[x, y, x + w, y, x + w, y + h, x + w // 2, y + h + 0, x, y + h]]
            else:
                segmentation = rle
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1,
                                "category_id": rng.randrange(len(CLASSES)), "iscrowd": 0, "bbox": bbox,
                                "confidence": -1.0, "area": area, "segmentation": segmentation})
    categories = [{"id": index, "name": name} for index, name in enumerate(CLASSES)]
    with open(coco_file, "w") as stream:
        json.dump({"images": coco_images, "categories": categories, "annotations": annotations}, stream)
    index_file = os.path.join(root, "train-index.tsv")
    with open(index_file, "w") as stream:
        stream.writelines(lines)
    return index_file, os.path.getsize(coco_file)


def read_once(index_file: str, object_type: int) -> None:
    """In a child: read the set as a training task of ``object_type``; print wall seconds, objects, peak RSS."""
    import time

    from ymir_runner.protocol.dataset import AnnotationReader, DatasetReader, SkipLog

    start = time.perf_counter()
    skips = SkipLog()
    annotations = AnnotationReader(CLASSES, "seg-coco", skips, object_type=object_type)
    reader = DatasetReader(index_file, annotations=annotations, skips=skips, name="training")
    items = list(reader)
    wall = time.perf_counter() - start
    objects = sum(len(item.boxes) for item in items)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "images": len(items), "objects": objects, "peak_rss_mb": rss,
                      "skipped": skips.total}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--objects-per-image", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--read", help=argparse.SUPPRESS)
    parser.add_argument("--object-type", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        read_once(args.read, args.object_type)
        return
    with tempfile.TemporaryDirectory() as root:
        index_file, size = generate(root, args.images, args.objects_per_image)
        print(f"seg-coco: {args.images} images, {args.images * args.objects_per_image} objects, "
              f"{size / 1e6:.1f} MB")
        runs: dict[int, list[dict]] = {4: [], 2: []}
        for _ in range(args.repeat):  # alternated, so both see the same machine load
            for object_type, found in runs.items():
                out = subprocess.run([sys.executable, __file__, "--read", index_file, "--object-type",
                                      str(object_type)], check=True, capture_output=True, text=True).stdout
                found.append(json.loads(out.strip().splitlines()[-1]))
        for object_type, found in runs.items():
            best = min(found, key=lambda run: run["wall_s"])
            task = "instance segmentation (masks checked)" if object_type == 4 else "detection (boxes only)"
            print(f"read as {task}: {best['wall_s']:.2f} s wall (best of {args.repeat}), peak RSS "
                  f"{max(run['peak_rss_mb'] for run in found):.0f} MB, {best['images']} images, {best['objects']} "
                  f"objects, {best['skipped']} skipped")


if __name__ == "__main__":
    main()
