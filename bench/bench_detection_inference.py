"""Inference throughput of the detection plugin, and its ratio to the model's bare forward pass.

    python bench/bench_detection_inference.py [--images 200] [--img-size 320] [--batch 16] [--model nano]
                                              [--workers N]

Generates candidate images and an inference task on them, then measures in one run: (1) the inference task's loop,
``ymir_runner.inference.infer_candidates`` with the plugin's letterbox and predictor (decode by content on the
core's threads ahead of the model, letterbox, forward, peak extraction + NMS, mapping back to the image, writing
the infer-result entries), over the candidates, and (2) the bare forward pass of the same network on the same
letterboxed batches, already in memory. The ratio says what the pipeline around the network costs (target: at
most 1.25, the pipeline at 80 % of the forward pass's speed). The model is randomly initialised: speed does not
depend on the weights, except for NMS, which here sees the maximum number of boxes (a pessimistic case:
conf_threshold 0.01, 100 boxes per image).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from ymir_runner.cpus import configure_openmp

configure_openmp()  # as `ymir-runner run` does before torch starts: idle OpenMP threads sleep, sized to the CPUs

import torch  # noqa: E402
import yaml  # noqa: E402

from ymir_runner import decode_image, run  # noqa: E402
from ymir_runner_detection import inference  # noqa: E402
from ymir_runner_detection.checkpoint import save_checkpoint  # noqa: E402
from ymir_runner_detection.demo import write_generated_task  # noqa: E402
from ymir_runner_detection.engine import build_model  # noqa: E402
from ymir_runner_detection.predict import decode_side, letterboxed, to_input  # noqa: E402
from ymir_runner_detection.templates import INFER_DEFAULTS, TRAINING_DEFAULTS  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    # The plugin's template defaults: the size models are trained at and the batch inference uses.
    parser.add_argument("--img-size", type=int, default=TRAINING_DEFAULTS["img_size"])
    parser.add_argument("--batch", type=int, default=INFER_DEFAULTS["batch_size_per_gpu"])
    parser.add_argument("--workers", default="auto", help="config key num_workers_per_gpu: the threads decoding "
                        "ahead of the model (auto: the core's choice from the CPUs)")
    parser.add_argument("--model", default=TRAINING_DEFAULTS["model"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        config = {"img_size": args.img_size, "batch_size_per_gpu": args.batch, "conf_threshold": 0.01,
                  "num_workers_per_gpu": args.workers if args.workers == "auto" else int(args.workers)}
        env_file, data = write_generated_task(root, kinds=("infer",), config=config, n_train=0, n_val=0,
                                              n_candidates=args.images, seed=0)
        model = build_model(args.model, len(data.class_names)).eval()
        checkpoint = save_checkpoint(model, os.path.join(root, "in", "models", "model.pt"),
                                     class_names=data.class_names, img_size=args.img_size, epoch=0)
        config_file = os.path.join(root, "in", "config.yaml")
        with open(config_file, encoding="utf-8") as stream:
            task_config = yaml.safe_load(stream)
        task_config["model_params_path"] = [checkpoint]
        with open(config_file, "w", encoding="utf-8") as stream:
            yaml.safe_dump(task_config, stream)

        loop = inference.infer_candidates
        timings: list[tuple[float, int]] = []

        def timed(*args: object, **kwargs: object) -> int:  # the task's loop alone, not loading the model
            start = time.perf_counter()
            boxes = loop(*args, **kwargs)  # type: ignore[arg-type]
            timings.append((time.perf_counter() - start, boxes))
            return boxes

        inference.infer_candidates = timed  # type: ignore[assignment]
        for _ in range(2):  # the first run warms up: thread start, first-call allocations
            if timings:
                os.remove(os.path.join(root, "out", "infer-result.json"))
            if run(env_file) != 0:
                raise SystemExit("the inference task failed")
        pipeline, boxes = timings[-1]

        paths = [str(path) for path in data.candidate_paths]
        inputs = [letterboxed(decode_image(path, decode_side(args.img_size)), args.img_size).image for path in paths]
        batches = [to_input(inputs[start:start + args.batch], "cpu")
                   for start in range(0, len(inputs), args.batch)]
        with torch.inference_mode():
            model.predict_maps(batches[0])
            start = time.perf_counter()
            for batch in batches:
                model.predict_maps(batch)
            bare = time.perf_counter() - start
    print(f"{args.images} images, img_size {args.img_size}, batch {args.batch}, model {args.model}, "
          f"{torch.get_num_threads()} threads, num_workers_per_gpu {args.workers}, {boxes} boxes")
    print(f"plugin inference : {pipeline:.2f} s = {args.images / pipeline:.1f} images/s")
    print(f"bare forward     : {bare:.2f} s = {args.images / bare:.1f} images/s")
    print(f"ratio            : {pipeline / bare:.2f}x the bare forward pass")


if __name__ == "__main__":
    main()
