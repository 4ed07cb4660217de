"""Parse a generated det-ark training index with its annotation files: ymir-runner's reader vs a bare read.

    python bench/bench_parse_index.py [--images 100000] [--repeat 3]

The reader also reads every image's header (size for clipping, a decompression-bomb check, a truncation check
on the file's last bytes), so the bare read it is compared with reads the index, every annotation file and
each image's first kilobyte and last two bytes. Prints both wall times and their ratio. Both are measured in
the same run on the same warm page cache; the best of ``--repeat`` runs is kept for each.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ymir_runner.protocol.dataset import AnnotationReader, DatasetReader, SkipLog  # noqa: E402

CLASSES = ("cat", "dog", "person", "car")


def generate(root: str, count: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    assets, annotations = os.path.join(root, "assets"), os.path.join(root, "annotations")
    os.makedirs(assets)
    os.makedirs(annotations)
    lines = []
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (120, 110, 100)).save(buffer, "JPEG")  # a real header, a few kB
    jpeg = buffer.getvalue()
    for index in range(count):
        name = f"{index:040x}"
        image = os.path.join(assets, name + ".jpg")
        with open(image, "wb") as stream:
            stream.write(jpeg)
        annotation = os.path.join(annotations, name + ".txt")
        with open(annotation, "w") as stream:
            for _ in range(rng.randint(0, 6)):
                x, y = rng.randint(0, 500), rng.randint(0, 400)
                stream.write(f"{rng.randrange(len(CLASSES))}, {x}, {y}, {x + rng.randint(1, 100)}, "
                             f"{y + rng.randint(1, 100)}, {rng.random():.3f}, 0\n")
        lines.append(f"{image}\t{annotation}\n")
    index_file = os.path.join(root, "train-index.tsv")
    with open(index_file, "w") as stream:
        stream.writelines(lines)
    return index_file


def bare_read(index_file: str) -> int:
    """The floor: read the index, each image's first kilobyte and last two bytes, every annotation file's lines."""
    lines = 0
    with open(index_file) as index:
        for line in index:
            image, annotation = line.rstrip("\n").split("\t")
            with open(image, "rb") as stream:
                stream.read(1024)
                stream.seek(-2, os.SEEK_END)
                stream.read()
            with open(annotation) as stream:
                lines += len(stream.readlines())
    return lines


def reader_read(index_file: str) -> int:
    skips = SkipLog()
    reader = DatasetReader(index_file, annotations=AnnotationReader(CLASSES, "det-ark", skips), skips=skips,
                           name="training")
    return sum(len(item.boxes) for item in reader)


def best_of(function, argument, repeat: int) -> tuple[float, int]:
    times, result = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        result = function(argument)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("ymir_runner.dataset").setLevel(logging.ERROR)  # boxes past the bottom edge are clipped
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        index_file = generate(root, args.images)
        print(f"generated {args.images} images + annotations in {time.perf_counter() - start:.1f} s")
        bare_read(index_file)  # warm the page cache for both
        bare, lines = best_of(bare_read, index_file, args.repeat)
        ours, boxes = best_of(reader_read, index_file, args.repeat)
    assert lines == boxes, (lines, boxes)
    print(f"bare python read : {bare:.2f} s ({args.images / bare:,.0f} images/s)")
    print(f"ymir-runner read : {ours:.2f} s ({args.images / ours:,.0f} images/s, {boxes} boxes)")
    print(f"ratio            : {ours / bare:.2f}x")


if __name__ == "__main__":
    main()
