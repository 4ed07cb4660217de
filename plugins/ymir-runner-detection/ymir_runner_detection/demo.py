"""``ymir-runner demo``: a real, short training run on generated data, in a YMIR /in + /out tree.

The tree is exactly what the platform would mount (env.yaml, config.yaml, index files, assets,
annotations); the run goes through the same dispatcher as ``ymir-runner run``.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Mapping

import yaml

from . import EXECUTOR_NAME
from .templates import TRAINING_DEFAULTS

#: The demo's changes to the training template (a short run on small images).
DEMO_CONFIG = {"epochs": 12, "min_steps": 0, "save_period": 4, "img_size": 256}


def write_task(root: str, *, kinds: tuple[str, ...] = ("training",), config: Mapping[str, Any] | None = None,
               n_train: int = 160, n_val: int = 40, n_candidates: int = 20, seed: int = 0,
               annotation_format: str = "det-ark", n_corrupt_train: int = 0, scene: Any = None) -> str:
    """Generate the synthetic dataset under ``root/in`` and write env.yaml + config.yaml; return env.yaml.
    ``scene`` (a :class:`~.synthetic.SceneConfig`) sets how hard the images are."""
    from ymir_runner.testing import write_task_files  # not at import: `ymir-runner --help` must not load pytest

    from .synthetic import generate

    formats = (annotation_format, "det-voc" if annotation_format == "det-ark" else "det-ark")
    dataset = generate(root, n_train=n_train, n_val=n_val, n_candidates=n_candidates, seed=seed,
                       annotation_formats=formats, n_corrupt_train=n_corrupt_train, scene=scene)
    # The generator wrote the index files where env.yaml names them: <root>/in/{train,val,candidate}-index.tsv.
    task_config: dict[str, Any] = {
        "class_names": list(dataset.class_names), "gpu_id": "", "gpu_count": 0, "object_type": 2,
        "shm_size": "16G", "plugin": EXECUTOR_NAME,
        "num_workers_per_gpu": min(TRAINING_DEFAULTS["num_workers_per_gpu"], os.cpu_count() or 1),
        **(config or {})}
    return write_task_files(root, kinds, task_config, task_id="demo", annotation_format=annotation_format)


def run_demo(args: argparse.Namespace) -> int:
    from ymir_runner import run

    config = dict(DEMO_CONFIG, epochs=args.epochs, save_period=max(1, args.epochs // 3))
    if args.model:
        config["model"] = args.model
    print(f"writing a synthetic YMIR task under {os.path.abspath(args.folder)} ...", flush=True)
    env_file = write_task(args.folder, config=config, n_train=args.images, n_val=max(args.images // 4, 8))
    code = run(env_file, registry=args.registry)
    out_dir = os.path.join(os.path.abspath(args.folder), "out")
    result_file = os.path.join(out_dir, "models", "result.yaml")
    if code != 0 or not os.path.exists(result_file):
        print(f"the demo run failed (exit code {code}); see {os.path.join(out_dir, 'monitor.txt')}")
        return code or 1
    with open(result_file, encoding="utf-8") as stream:
        result = yaml.safe_load(stream)
    best = result["model_stages"][result["best_stage_name"]]
    iou = result.get("evaluate_config", {}).get("iou_thr", 0.5)
    print("\nymir-runner demo finished")
    print(f"  best stage      : {best['stage_name']}: mAP@{iou:g} {best['mAP']:.3f}, mAP50-95 {best['mAP50_95']:.3f}, "
          f"mAR@{iou:g} {best['mAR']:.3f}")
    print(f"  weights         : {os.path.join(out_dir, 'models', best['stage_name'])}/ ({', '.join(best['files'])})")
    print(f"  result.yaml     : {result_file}")
    print(f"  monitor.txt     : {os.path.join(out_dir, 'monitor.txt')}")
    print(f"  tensorboard     : tensorboard --logdir {os.path.join(out_dir, 'tensorboard')}")
    print(f"  run it yourself : ymir-runner run --env {env_file}")
    return 0


def add_demo_command(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="train the detection plugin on generated data (a real, short run)")
    parser.add_argument("folder", nargs="?", default="demo-run",
                        help="where to build /in and /out (default ./demo-run)")
    parser.add_argument("--epochs", type=int, default=DEMO_CONFIG["epochs"],
                        help="training epochs (default %(default)s)")
    parser.add_argument("--images", type=int, default=160, help="training images to generate (default %(default)s)")
    parser.add_argument("--model", default="", help="model size (default: the template's)")
    parser.set_defaults(handler=run_demo)
