"""The executor image as the platform sees it: its size, registration, and a training task's first signs of life.

    python bench/bench_image.py [--tag ymir-runner:cpu] [--images 64] [--epochs 2] [--out /tmp/bench-image]

The image must exist (``docker/build.sh``, see README "The image"). Prints the image's size, the wall seconds of
``docker run --rm IMAGE cat /img-man/manifest.yaml`` (what registration runs, once per file), then runs one
training task on generated YOLO-labelled pictures (``ymir-runner sandbox --container-paths``) as the platform
does (``docker run --rm -v in:/in:ro -v out:/out --user 1000:1000 --shm-size=1g IMAGE``, no command) and prints
the wall seconds from ``docker run`` to: /out/monitor.txt's first write, its first progress above 0, the first
saved stage (models/result.yaml), and the container's exit. Polled every 10 ms.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import shutil
import subprocess
import sys
import time

from PIL import Image, ImageDraw

CLASSES = ["box", "disc"]


def shapes(folder: pathlib.Path, images: int, size: int) -> None:
    """YOLO-labelled pictures of one or two boxes and discs on a grey background, ``classes.txt``."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    for index in range(images):
        picture = Image.new("RGB", (size, size), (rng.randint(0, 90),) * 3)
        draw, labels = ImageDraw.Draw(picture), []
        for _ in range(rng.randint(1, 2)):
            side = rng.randint(size // 5, size // 2)
            x, y, kind = rng.randint(0, size - side), rng.randint(0, size - side), rng.randint(0, 1)
            shape = draw.rectangle if kind == 0 else draw.ellipse
            shape([x, y, x + side - 1, y + side - 1], fill=(230, 60 + 150 * kind, 40))
            centre_x, centre_y, width = (x + side / 2) / size, (y + side / 2) / size, side / size
            labels.append(f"{kind} {centre_x:.5f} {centre_y:.5f} {width:.5f} {width:.5f}")
        picture.save(folder / f"shape_{index:03d}.jpg", quality=90)
        (folder / f"shape_{index:03d}.txt").write_text("\n".join(labels) + "\n")
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")


def first_progress(monitor: pathlib.Path) -> float:
    try:
        fields = monitor.read_text().splitlines()[0].split("\t")
    except (OSError, IndexError):
        return -1.0
    return float(fields[2]) if len(fields) > 2 else -1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tag", default="ymir-runner:cpu")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="/tmp/bench-image")
    args = parser.parse_args()

    size = subprocess.run(["docker", "image", "inspect", "--format", "{{.Size}}", args.tag], capture_output=True,
                          text=True)
    if size.returncode != 0:
        sys.exit(f"no image {args.tag}: build it with docker/build.sh (README, The image)")
    print(f"image {args.tag}: {int(size.stdout) / 1e6:.0f} MB")
    start = time.perf_counter()
    subprocess.run(["docker", "run", "--rm", args.tag, "cat", "/img-man/manifest.yaml"], check=True,
                   capture_output=True)
    print(f"docker run --rm IMAGE cat /img-man/manifest.yaml: {time.perf_counter() - start:.2f} s")

    root = pathlib.Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    shapes(root / "shapes", args.images, args.img_size)
    work = root / "work"
    config = {"epochs": args.epochs, "save_period": 1, "img_size": args.img_size}
    sets = [item for key, value in config.items() for item in ("--set", f"{key}={value}")]
    subprocess.run([sys.executable, "-m", "ymir_runner", "sandbox", str(root / "shapes"), "--out", str(work),
                    "--container-paths", *sets], check=True, capture_output=True)
    for folder in (work / "out", work / "out" / "tensorboard"):
        os.chmod(folder, 0o777)  # the platform's folders, writable by the task's uid
    monitor, result = work / "out" / "monitor.txt", work / "out" / "models" / "result.yaml"
    seen: dict[str, float] = {}
    start = time.perf_counter()
    running = subprocess.Popen(["docker", "run", "--rm", "-v", f"{work}/in:/in:ro", "-v", f"{work}/out:/out",
                                "--user", "1000:1000", "--shm-size=1g", args.tag], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    while running.poll() is None:
        now = time.perf_counter() - start
        if "monitor" not in seen and monitor.exists():
            seen["monitor"] = now
        if "progress" not in seen and first_progress(monitor) > 0:
            seen["progress"] = now
        if "stage" not in seen and result.exists():
            seen["stage"] = now
        time.sleep(0.01)
    seen["exit"] = time.perf_counter() - start
    if running.returncode != 0:
        sys.exit(f"the training task failed ({running.returncode}): {running.stderr.read()[-2000:]}")
    print(f"training task, {args.images} images of {args.img_size} px, {args.epochs} epochs, from `docker run`:")
    for key, label in [("monitor", "monitor.txt first written"), ("progress", "first progress > 0"),
                       ("stage", "first stage saved"), ("exit", "container exited (rc 0)")]:
        print(f"  {label:28s} {seen[key]:6.2f} s" if key in seen else f"  {label:28s}   (not seen)")


if __name__ == "__main__":
    main()
