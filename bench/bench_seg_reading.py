"""Read a generated seg-coco:raw training set as an instance-segmentation task: wall time and peak RSS.

    python bench/bench_seg_reading.py [--images 10000] [--objects-per-image 10] [--repeat 3]

Issue 26's target: a 10,000-image / 100,000-object seg-coco (about 52 MB) read in <= 3 s wall with a peak RSS
<= 500 MB on the 2-core machine, no mask decoded while reading. The file holds compressed RLE strings of
ellipses at 640 x 480 (a few hundred distinct masks, reused) and 10 % polygons; every image is a real 640 x 480
JPEG (its header is read, as in any task). Each timed read runs in a fresh child process (the RSS is the
reading's own: the interpreter and imports included); the best wall time of ``--repeat`` runs is printed, with the
read's CPU seconds (user + system: what a loaded machine does not inflate much) and the number of masks decoded
or rasterised while reading (every decoding and rasterising function of COCO's mask API is counted: it must be 0).

``--phases`` prints where the time of one read goes instead (wall seconds per phase, measured in one child by
wrapping the reader's functions: the json parse, the COCO index, the image headers, the mask checks).
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


#: COCO's mask API functions that decode or rasterise a mask (faster-coco-eval's module and its C++ core).
DECODERS = ("decode", "rleDecode", "frPyObjects", "frPoly", "rleFrPoly", "segmToRle", "merge", "frBbox",
            "rleFrBbox", "toBoundary", "erode_3x3")


def count_decodes() -> dict[str, int]:
    """Wrap every mask-decoding function of COCO's mask API with a counter; returns the live counts."""
    import faster_coco_eval.mask_api_new_cpp as cpp
    from faster_coco_eval.core import mask as coco_mask

    from ymir_runner.protocol import masks

    calls: dict[str, int] = {}

    def counted(name: str, function):
        def wrapper(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return function(*args, **kwargs)
        return wrapper

    for module in (cpp, coco_mask, masks):
        for name in DECODERS + ("decode_rle", "decode_segmentation", "reduce_mask"):
            if callable(getattr(module, name, None)):
                setattr(module, name, counted(f"{module.__name__}.{name}", getattr(module, name)))
    return calls


def timed_phases() -> dict[str, float]:
    """Wrap the reader's phases with wall-time accumulators; returns the live totals."""
    import time

    from ymir_runner.protocol import annotations, dataset, masks

    totals: dict[str, float] = {}

    def timed(name: str, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
        return wrapper

    annotations.read_text = timed("read_text (the 55 MB file, within read_coco)", annotations.read_text)
    json.loads = timed("json.loads (within read_coco)", json.loads)
    dataset.read_coco = timed("read_coco (file, json parse, structure)", dataset.read_coco)
    dataset.AnnotationReader._load_coco = timed("_load_coco (read_coco + one record per object)",
                                                dataset.AnnotationReader._load_coco)
    dataset.coco_box = timed("coco_box (within _load_coco)", dataset.coco_box)
    dataset.probe_image = timed("probe_image (10,000 JPEG headers)", dataset.probe_image)
    dataset.fit_segments = timed("fit_segments (masks checked, boxes clipped)", dataset.fit_segments)
    masks.check_segmentations = timed("check_segmentations (within fit_segments)", masks.check_segmentations)
    masks._coco_cpp.toUncompressedRLE = timed("COCO toUncompressedRLE (within check_segmentations)",
                                              masks._coco_cpp.toUncompressedRLE)
    return totals


def read_once(index_file: str, object_type: int, phases: bool = False) -> None:
    """In a child: read the set as a training task of ``object_type``; print wall and CPU seconds, objects, peak
    RSS, the masks decoded while reading (and with ``phases`` the wall seconds of each phase)."""
    import time

    start_imports = time.perf_counter()
    from ymir_runner.protocol.dataset import AnnotationReader, DatasetReader, SkipLog
    imports = time.perf_counter() - start_imports

    decodes = count_decodes()
    totals = timed_phases() if phases else {}
    cpu_start = time.process_time()
    start = time.perf_counter()
    skips = SkipLog()
    annotations = AnnotationReader(CLASSES, "seg-coco", skips, object_type=object_type)
    reader = DatasetReader(index_file, annotations=annotations, skips=skips, name="training")
    items = list(reader)
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    objects = sum(len(item.boxes) for item in items)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "imports_s": imports, "images": len(items), "objects": objects,
                      "peak_rss_mb": rss, "skipped": skips.total, "masks_decoded": sum(decodes.values()),
                      "decoders_called": decodes, "phases": totals}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--objects-per-image", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--phases", action="store_true", help="print where the time of one read goes")
    parser.add_argument("--read", help=argparse.SUPPRESS)
    parser.add_argument("--object-type", type=int, default=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        read_once(args.read, args.object_type, args.phases)
        return
    with tempfile.TemporaryDirectory() as root:
        index_file, size = generate(root, args.images, args.objects_per_image)
        print(f"seg-coco: {args.images} images, {args.images * args.objects_per_image} objects, "
              f"{size / 1e6:.1f} MB")
        if args.phases:
            for object_type in (4, 2):
                out = subprocess.run([sys.executable, __file__, "--read", index_file, "--object-type",
                                      str(object_type), "--phases"], check=True, capture_output=True, text=True).stdout
                found = json.loads(out.strip().splitlines()[-1])
                print(f"object_type {object_type}: {found['wall_s']:.2f} s wall with the timers "
                      f"({found['imports_s']:.2f} s of imports before it)")
                for phase, seconds in found["phases"].items():
                    print(f"  {seconds:6.2f} s  {phase}")
            return
        runs: dict[int, list[dict]] = {4: [], 2: []}
        for _ in range(args.repeat):  # alternated, so both see the same machine load
            for object_type, found in runs.items():
                out = subprocess.run([sys.executable, __file__, "--read", index_file, "--object-type",
                                      str(object_type)], check=True, capture_output=True, text=True).stdout
                found.append(json.loads(out.strip().splitlines()[-1]))
        for object_type, found in runs.items():
            best = min(found, key=lambda run: run["wall_s"])
            task = "instance segmentation (masks checked)" if object_type == 4 else "detection (boxes only)"
            print(f"read as {task}: {best['wall_s']:.2f} s wall (best of {args.repeat}; "
                  f"{min(run['cpu_s'] for run in found):.2f} CPU s), peak RSS "
                  f"{max(run['peak_rss_mb'] for run in found):.0f} MB, {best['images']} images, {best['objects']} "
                  f"objects, {best['skipped']} skipped, {max(run['masks_decoded'] for run in found)} masks decoded "
                  f"while reading")
            if any(run["masks_decoded"] for run in found):
                raise SystemExit(f"masks were decoded while reading: {best['decoders_called']}")


if __name__ == "__main__":
    main()
