"""Seconds and peak memory to write a segmentation infer-result.json (``SegInferResult``), issue 26's targets:
1,000 images x 10 masks <= 10 s (2 CPUs); a 6000 x 4000 candidate with 100 instances never holds an N x H x W
array.

    python bench/bench_seg_writing.py [--images 1000] [--masks 10] [--big-instances 100]

Instance: each image's masks are random ellipses (10 to 80 px radii) at 640 x 480, full-size bool arrays handed
over one at a time (a generator, as an engine pastes each instance); the time covers encoding (compressed RLE,
bbox, area from the RLE) and writing the file. Semantic: a label map of the same ellipses painted in order, with a
top-1 probability map, one annotation per class present. Large: ``--big-instances`` box-sized masks (``origin``)
on a 6000 x 4000 candidate; the peak traced memory is given in full-size masks (N x H x W would be N of them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ymir_runner.protocol.results import InstanceMask, SegInferResult  # noqa: E402

HEIGHT, WIDTH = 480, 640
CLASSES = [f"class{index}" for index in range(5)]


def _ellipses(rng: np.random.Generator, count: int) -> list[tuple[int, np.ndarray]]:
    shapes = []
    for _ in range(count):
        mask = np.zeros((HEIGHT, WIDTH), bool)
        cy, cx = rng.uniform(0, HEIGHT), rng.uniform(0, WIDTH)
        ry, rx = rng.uniform(10, 80), rng.uniform(10, 80)
        y, x = np.ogrid[:HEIGHT, :WIDTH]
        mask[((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1] = True
        mask[min(int(cy), HEIGHT - 1), min(int(cx), WIDTH - 1)] = True
        shapes.append((int(rng.integers(len(CLASSES))), mask))
    return shapes


def instance_seconds(folder: str, images: int, shapes: list[tuple[int, np.ndarray]]) -> float:
    writer = SegInferResult(os.path.join(folder, "instance.json"), CLASSES, 4)
    start = time.perf_counter()
    for image in range(images):
        writer.add(f"/in/assets/{image:040d}.jpg", (InstanceMask(mask, (index + 1) / (len(shapes) + 1), class_id)
                                                     for index, (class_id, mask) in enumerate(shapes)),
                   WIDTH, HEIGHT)
    writer.write()
    return time.perf_counter() - start


def semantic_seconds(folder: str, images: int, shapes: list[tuple[int, np.ndarray]]) -> float:
    labels = np.full((HEIGHT, WIDTH), 255, np.uint8)
    for class_id, mask in shapes:
        labels[mask] = class_id
    probability = np.random.default_rng(1).uniform(0.3, 1.0, (HEIGHT, WIDTH))
    writer = SegInferResult(os.path.join(folder, "semantic.json"), CLASSES, 3)
    start = time.perf_counter()
    for image in range(images):
        writer.add_label_map(f"/in/assets/{image:040d}.jpg", labels, WIDTH, HEIGHT, probability=probability)
    writer.write()
    return time.perf_counter() - start


def large_candidate(folder: str, instances: int) -> tuple[float, float]:
    height, width = 4000, 6000
    writer = SegInferResult(os.path.join(folder, "large.json"), CLASSES, 4)

    def masks():  # box-sized masks at their origins, as a Mask R-CNN head pastes them
        for index in range(instances):
            yield InstanceMask(np.ones((40, 60), bool), 0.5, index % len(CLASSES),
                               origin=(59 * index % (width - 60), 39 * index % (height - 40)))

    tracemalloc.start()
    start = time.perf_counter()
    try:
        writer.add("/in/assets/large.jpg", masks(), width, height)
        writer.write()
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return seconds, peak / (height * width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--masks", type=int, default=10)
    parser.add_argument("--big-instances", type=int, default=100)
    args = parser.parse_args()
    shapes = _ellipses(np.random.default_rng(0), args.masks)
    with tempfile.TemporaryDirectory() as folder:
        instance = instance_seconds(folder, args.images, shapes)
        semantic = semantic_seconds(folder, args.images, shapes)
        large, masks_alive = large_candidate(folder, args.big_instances)
    print(json.dumps({"images": args.images, "masks_per_image": args.masks, "size": [HEIGHT, WIDTH],
                      "cpus": len(os.sched_getaffinity(0)), "instance_seconds": round(instance, 2),
                      "semantic_seconds": round(semantic, 2),
                      "large_6000x4000": {"instances": args.big_instances, "seconds": round(large, 2),
                                          "peak_full_size_masks": round(masks_alive, 2)}}, indent=2))


if __name__ == "__main__":
    main()
