"""Fine-tuning from a model of the detection plugin trained on another dataset, against training from scratch.

    python bench/bench_finetune.py [--pretrain-steps 400] [--steps 150] [--cache bench/.cache]

1. Pretraining: the product trains on generated shapes (3 classes: circle, rectangle, triangle; 160 images of
   256-416 px, the synthetic "hard" scene) for ``--pretrain-steps`` optimizer steps at img_size 256.
2. Fine-tuning: the real tree-crown set of ``bench_real_data.py`` (1 class) starts from that run's best stage
   through ``pretrained_model_params``: the class head is re-initialised, the backbone, neck and box head are
   kept, as a platform task that chooses a pretrained model does. Same config as the from-scratch run of
   ``bench_real_data.py`` (``--steps`` optimizer steps: the fewest epochs with that many, img_size 416, seed 0).
3. Both are evaluated on the validation tiles as ``bench_real_data.py`` does; the from-scratch run is trained
   here too, with the same seed, so the two differ only in their start.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_real_data  # noqa: E402
import real_dataset  # noqa: E402

from ymir_runner_detection.demo import write_task  # noqa: E402
from ymir_runner_detection.recipe import epochs_for_steps  # noqa: E402
from ymir_runner_detection.synthetic import SceneConfig  # noqa: E402
from ymir_runner_detection.templates import TRAINING_DEFAULTS  # noqa: E402

#: Generated training images of the pretraining run (10 optimizer steps per epoch at the template's batch).
PRETRAIN_IMAGES = 160
#: Input size of the tree runs, px.
IMG_SIZE = 416


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pretrain-steps", type=int, default=400)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--cache", default=str(HERE / ".cache"))
    args = parser.parse_args()
    cache = Path(args.cache).resolve()
    truth = bench_real_data.ground_truth(real_dataset.prepare(cache))

    shapes = cache / "finetune_shapes"
    shutil.rmtree(shapes, ignore_errors=True)
    epochs = epochs_for_steps(PRETRAIN_IMAGES, TRAINING_DEFAULTS["batch_size_per_gpu"], args.pretrain_steps)
    env_file = write_task(str(shapes), config={"img_size": 256, "epochs": epochs, "export_onnx": False},
                          n_train=PRETRAIN_IMAGES, n_val=40, n_candidates=0, scene=SceneConfig())
    cpu, _ = bench_real_data.run_task(env_file, shapes / "run.log")
    result = yaml.safe_load((shapes / "out" / "models" / "result.yaml").read_text())
    pretrained = shapes / "out" / "models" / result["best_stage_name"] / "model.pt"
    print(f"pretrained on shapes: {args.pretrain_steps} steps, {cpu:.0f} CPU s, best stage "
          f"{result['best_stage_name']} mAP50-95 {result['model_stages'][result['best_stage_name']]['mAP50_95']:.3f}")

    tree_epochs = epochs_for_steps(len(truth["train"]), TRAINING_DEFAULTS["batch_size_per_gpu"], args.steps)
    print(f"{'trees, ' + str(args.steps) + ' steps':24} {'CPU s':>6} {'deployed mAP50':>15} {'mAP50-95':>9} "
          f"{'last mAP50':>11} {'mAP50-95':>9}")
    for start in ("from scratch", "fine-tuned"):
        root = cache / f"finetune_trees_{start.replace(' ', '_')}"
        shutil.rmtree(root, ignore_errors=True)
        start_from = {"pretrained_model_params": [str(pretrained)]} if start == "fine-tuned" else {}
        config = bench_real_data.task_config(IMG_SIZE, tree_epochs, 0, start_from)
        env_file = bench_real_data.write_tree(root, truth, config)
        cpu, _ = bench_real_data.run_task(env_file, root / "run.log")
        deployed, last = bench_real_data.evaluate_stages(root, truth["val"], IMG_SIZE)
        print(f"{start:24} {cpu:6.0f} {deployed[0]:15.3f} {deployed[1]:9.3f} {last[0]:11.3f} {last[1]:9.3f}",
              flush=True)


if __name__ == "__main__":
    main()
