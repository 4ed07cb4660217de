"""Inference throughput of the ultralytics plugin, and its ratio to the model's bare forward pass: the figure
bench/bench_detection_inference.py gives for the built-in detector.

    .venv-ultralytics/bin/python bench/bench_ultralytics_inference.py [--images 200] [--img-size 256] [--batch 16]
        [--model yolo26n] [--repeat 3] [--no-boxes]

Generates candidate JPEGs (seeded, 256-416 px a side, as the built-in detector's bench), writes an untrained
checkpoint of ``--model`` as the plugin writes its stages, and measures in one run: (1) the plugin's inference
task loop (the core's ``infer_candidates`` around the plugin's model: decode by content, letterbox on the loop's
threads, forward, ultralytics' NMS / top-k, boxes to stored pixels, infer-result.json entries), from the loop's
start to its end (loading the model is not counted), and (2) the bare forward pass of the same network on the same
letterboxed batches, already in memory; after a warm-up of each, ``--repeat`` times each, interleaved, the fastest
of each compared (other work on shared CPUs only ever slows a run down). The ratio says what the pipeline around
the network costs (target: close to 1). The weights are random, with class scores about 0.5 (:func:`write_model`):
every image keeps ``max_detections`` boxes, a pessimistic case for what follows the forward pass (``--no-boxes``:
none, what decoding and letterboxing add alone).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time

from ymir_runner import cpus

cpus.configure_openmp()  # as `ymir-runner run` does first: before numpy and torch start OpenMP (passive wait)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ymir_runner import decode_image, inference, run  # noqa: E402
from ymir_runner.testing import plugin_registry, write_task_files  # noqa: E402

CLASS_NAMES = ["cat", "dog", "bird"]


def write_candidates(folder: str, count: int, seed: int = 0) -> list[str]:
    """``count`` JPEGs of random sizes (256-416 px a side): a smooth background with a few rectangles."""
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for index in range(count):
        width, height = (int(side) for side in rng.integers(256, 417, 2))
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 90)], -1).astype(np.uint8)
        for _ in range(int(rng.integers(1, 6))):
            x1, y1 = int(rng.integers(0, width - 24)), int(rng.integers(0, height - 24))
            side = int(rng.integers(24, 96))
            pixels[y1:y1 + side, x1:x1 + side] = rng.integers(0, 256, 3)
        path = os.path.join(folder, f"{index:05d}.jpg")
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def write_model(path: str, model: str, img_size: int, boxes: bool = True) -> None:
    """An untrained ``model`` checkpoint with the plugin's metadata (class names, img_size). With ``boxes`` its class
    scores are made about 0.5 everywhere (the heads' class biases 0 instead of ultralytics' prior of 1e-4): every
    anchor is above the threshold, the most work for NMS, and each image keeps ``max_detections`` boxes; without,
    no box scores 0.01 (what remains is decoding, letterboxing and the forward pass)."""
    from ultralytics.nn.tasks import DetectionModel
    from ymir_runner_ultralytics.weights import METADATA_KEY

    torch.manual_seed(0)  # the same network in every run
    network = DetectionModel(f"{model}.yaml", nc=len(CLASS_NAMES), verbose=False)
    head = network.model[-1]
    for branch in ("cv3", "one2one_cv3") if boxes else ():
        for layers in getattr(head, branch, ()):
            torch.nn.init.zeros_(layers[-1].bias)
    torch.save({"model": copy.deepcopy(network).half(), "train_args": {"imgsz": img_size, "task": "detect"},
                METADATA_KEY: {"class_names": CLASS_NAMES, "img_size": img_size}}, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--img-size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--model", default="yolo26n")
    parser.add_argument("--no-boxes", action="store_true",
                        help="keep ultralytics' initial class scores (about 1e-4): no box, no NMS work")
    parser.add_argument("--repeat", type=int, default=3,
                        help="measurements of each, interleaved; the fastest of each is compared (CPUs shared with "
                             "other work slow some runs down, never speed one up)")
    args = parser.parse_args()

    from ymir_runner_ultralytics import EXECUTOR_NAME, environment, plugin, weights
    from ymir_runner_ultralytics.predict import letterbox

    with tempfile.TemporaryDirectory() as root:
        environment.prepare(root)
        images = write_candidates(os.path.join(root, "in", "assets"), args.images)
        model_file = os.path.join(root, "in", "models", "epoch_1", "last.pt")
        os.makedirs(os.path.dirname(model_file))
        write_model(model_file, args.model, args.img_size, boxes=not args.no_boxes)
        with open(os.path.join(root, "in", "candidate-index.tsv"), "w", encoding="utf-8") as stream:
            stream.write("".join(f"{path}\n" for path in images))
        env_file = write_task_files(root, ["infer"], {
            "class_names": CLASS_NAMES, "model_params_path": [model_file], "gpu_id": "", "img_size": args.img_size,
            "batch_size_per_gpu": args.batch, "conf_threshold": 0.01})

        loop = inference.infer_candidates
        timings: list[float] = []

        def timed(*call_args, **call_kwargs):  # the task loop only: the model is loaded before it
            start = time.perf_counter()
            try:
                return loop(*call_args, **call_kwargs)
            finally:
                timings.append(time.perf_counter() - start)

        inference.infer_candidates = timed
        registry = plugin_registry({EXECUTOR_NAME: plugin})

        def task() -> float:
            if run(env_file, registry=registry) != 0:
                raise SystemExit("the inference task failed (see its log above)")
            return timings[-1]

        network, _ = weights.load_checkpoint(model_file, "model_params_path")
        network = network.fuse(verbose=False).eval()
        canvases = [letterbox(decode_image(path, args.img_size).pixels, args.img_size)[0] for path in images]
        batches = [torch.from_numpy(np.stack(canvases[start:start + args.batch])).permute(0, 3, 1, 2).float()
                   .div_(255.0) for start in range(0, len(canvases), args.batch)]

        def forward() -> float:
            with torch.inference_mode():
                start = time.perf_counter()
                for batch in batches:
                    network(batch)
                return time.perf_counter() - start

        task(), forward()  # warm-up: first-call allocations, thread start
        pairs = [(task(), forward()) for _ in range(args.repeat)]
        inference.infer_candidates = loop
        with open(os.path.join(root, "out", "infer-result.json"), encoding="utf-8") as stream:
            boxes = sum(len(entry["boxes"]) for entry in json.load(stream)["detection"].values())
    pipeline, bare = min(p for p, _ in pairs), min(b for _, b in pairs)
    print(f"{args.images} images, img_size {args.img_size}, batch {args.batch}, model {args.model}, "
          f"{torch.get_num_threads()} threads, {boxes} boxes; seconds per run (plugin, bare): "
          + ", ".join(f"({p:.2f}, {b:.2f})" for p, b in pairs))
    print(f"plugin inference : {pipeline:.2f} s = {args.images / pipeline:.1f} images/s")
    print(f"bare forward     : {bare:.2f} s = {args.images / bare:.1f} images/s")
    print(f"ratio            : {pipeline / bare:.2f}x the bare forward pass")


if __name__ == "__main__":
    main()
