"""Inference throughput of the detection plugin, and its ratio to the model's bare forward pass.

    python bench/bench_detection_inference.py [--images 200] [--img-size 320] [--batch 16] [--model nano]

Generates candidate images, then measures in one run: (1) the plugin's inference path (decode by content,
letterbox, forward, peak extraction + NMS, mapping back to the image, building infer-result entries) over
the candidates and (2) the bare forward pass of the same network on the same letterboxed batches, already
in memory. The ratio says what the pipeline around the network costs (target: close to 1).
The model is randomly initialised: speed does not depend on the weights, except for NMS, which here sees
the maximum number of boxes (a pessimistic case).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from ymir_runner_detection.checkpoint import save_checkpoint
from ymir_runner_detection.engine import DetectionDataset, build_dataloader, build_model
from ymir_runner_detection.inference import Job, run_job
from ymir_runner_detection.synthetic import generate
from ymir_runner_detection.templates import AUTO_WORKERS, INFER_DEFAULTS, TRAINING_DEFAULTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    # The plugin's template defaults: the size models are trained at, the batch inference uses, and the workers
    # num_workers_per_gpu: auto asks for (before the cap to the CPUs: here they are not capped).
    parser.add_argument("--img-size", type=int, default=TRAINING_DEFAULTS["img_size"])
    parser.add_argument("--batch", type=int, default=INFER_DEFAULTS["batch_size_per_gpu"])
    parser.add_argument("--workers", type=int, default=AUTO_WORKERS)
    parser.add_argument("--model", default=TRAINING_DEFAULTS["model"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        data = generate(root, n_train=0, n_val=0, n_candidates=args.images, seed=0)
        model = build_model(args.model, len(data.class_names)).eval()
        checkpoint = save_checkpoint(model, f"{root}/model.pt", class_names=data.class_names,
                                     img_size=args.img_size, epoch=0)
        images = [str(path) for path in data.candidate_paths]
        hyper = dict(INFER_DEFAULTS, conf_threshold=0.01)  # nearly every peak: the most NMS work
        job = Job("infer", checkpoint, images, args.img_size, args.batch, args.workers, torch.get_num_threads(), hyper,
                  ["cpu"])

        run_job(job, model=model)  # warm-up: worker start, first-call allocations
        start = time.perf_counter()
        results, _ = run_job(job, model=model)
        pipeline = time.perf_counter() - start

        loader = build_dataloader(DetectionDataset([(p, [], []) for p in images], args.img_size), args.batch,
                                  shuffle=False)
        batches = [batch["images"].float().div(255).contiguous(memory_format=torch.channels_last)
                   for batch in loader]
        with torch.inference_mode():
            model.predict_maps(batches[0])
            start = time.perf_counter()
            for batch in batches:
                model.predict_maps(batch)
            bare = time.perf_counter() - start
    boxes = sum(len(result[1]) for result in results.values())
    print(f"{args.images} images, img_size {args.img_size}, batch {args.batch}, model {args.model}, "
          f"{torch.get_num_threads()} threads, {boxes} boxes")
    print(f"plugin inference : {pipeline:.2f} s = {args.images / pipeline:.1f} images/s")
    print(f"bare forward     : {bare:.2f} s = {args.images / bare:.1f} images/s")
    print(f"ratio            : {pipeline / bare:.2f}x the bare forward pass")


if __name__ == "__main__":
    main()
