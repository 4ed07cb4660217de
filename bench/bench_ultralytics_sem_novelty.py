"""Which semantic mining score finds a class absent from training? (issue 27) The ultralytics-sem executor's softmax
maps (``SemanticPredictor.softmax_maps``: the classes renormalised, or the whole C + 1 softmax) of a two-square model
(a models folder written by bench_ultralytics_sem_overfit.py, its deployed stage), scored with the core's
``mining.semantic_entropy_score`` and ``mining.semantic_aldd_score``, on 6 candidates like the training images (a red
and a green square on grey, at new places) and 6 whose green square shows something no class has. Prints, per kind of
unseen content, distribution and views, the share of (absent, familiar) pairs ranked absent-first (ties half: 0.5
is chance, 1.0 all absent-class candidates first) and the score ranges.

    .venv-ultralytics/bin/python bench/bench_ultralytics_sem_novelty.py --models OUT/seed1/out/models

Views (aldd: the K maps of one image): the image and its mirror (the executor's), the image at a second scale (the
model's 160 px input at 128 and 192 px, its map resized to the same grid), or all four.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import yaml

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "plugins", "ymir-runner-ultralytics",
                                "tests"))
from test_ultralytics_semantic import two_squares  # noqa: E402  (the overfit run's scene: one definition)

from ymir_runner import mining  # noqa: E402
from ymir_runner.testing import TaskTree  # noqa: E402

SIZE = 160
RED, GREEN, BLUE = (np.array(colour, np.uint8) for colour in TaskTree.COLORS[:3])
KINDS = ("blue", "blue noise", "noise", "red-green checker", "yellow", "blue-white stripes")
VIEWS = (("image", "mirror"), ("image", "128 px"), ("image", "192 px"), ("image", "mirror", "128 px", "192 px"))


def candidate(index: int, unseen: str | None) -> np.ndarray:
    """A grey 160 x 160 image with the overfit scene's red and green squares (``two_squares(100 + index)``), the
    green one repainted with ``unseen`` content."""
    image = np.full((SIZE, SIZE, 3), 128, np.uint8)
    (_, x1, y1, x2, y2), (_, a1, b1, a2, b2) = two_squares(100 + index, SIZE, SIZE)
    image[y1:y2 + 1, x1:x2 + 1] = RED
    image[b1:b2 + 1, a1:a2 + 1] = GREEN
    rng = np.random.default_rng(index)
    height, width = b2 - b1 + 1, a2 - a1 + 1
    rows, columns = np.mgrid[:height, :width]
    patch = {
        None: lambda: GREEN,
        "blue": lambda: BLUE,
        "blue noise": lambda: np.clip(BLUE + rng.normal(0, 40, (height, width, 3)), 0, 255),
        "noise": lambda: rng.integers(0, 256, (height, width, 3)),
        "red-green checker": lambda: np.where(((rows // 6 + columns // 6) % 2 == 1)[..., None], RED, GREEN),
        "yellow": lambda: (RED.astype(int) + GREEN) // 2,
        "blue-white stripes": lambda: np.where(((columns // 4) % 2 == 1)[..., None], BLUE, np.uint8(230)),
    }[unseen]()
    image[b1:b2 + 1, a1:a2 + 1] = np.asarray(patch).astype(np.uint8)
    return image


class Maps:
    """The deployed stage's network: per image and view, the softmax over the classes (renormalised) or over the
    classes and background (whole), on the 160 px letterbox's grid."""

    def __init__(self, models: str) -> None:
        import torch
        from ymir_runner_ultralytics import weights
        from ymir_runner_ultralytics.semantic import SemanticPredictor

        with open(os.path.join(models, "result.yaml"), encoding="utf-8") as stream:
            self.stage = yaml.safe_load(stream)["best_stage_name"]
        network, _ = weights.load_checkpoint(os.path.join(models, self.stage, "last.pt"), "model", "semantic")
        self.network = network.fuse(verbose=False).eval()
        self.predictors = {size: SemanticPredictor(self.network, torch.device("cpu"), size, 2, True)
                           for size in (SIZE, 128, 192)}

    def __call__(self, image: np.ndarray, view: str, whole: bool) -> np.ndarray:
        import cv2
        import torch

        size = SIZE if view in ("image", "mirror") else int(view.split()[0])
        predictor = self.predictors[size]
        scaled = image if size == SIZE else cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        logits = predictor.logits([predictor.fit(scaled)], mirrored=view == "mirror")[0]
        if size != SIZE:
            cells = SIZE // 8
            logits = torch.nn.functional.interpolate(torch.from_numpy(logits)[None], size=(cells, cells),
                                                     mode="bilinear", align_corners=False)[0].numpy()
        probabilities = np.exp(logits - logits.max(0))
        probabilities /= probabilities.sum(0)
        if not whole:
            probabilities = probabilities[:2] / probabilities[:2].sum(0)
        return probabilities.astype(np.float32)


def absent_first_share(absent: list[float], familiar: list[float]) -> float:
    return sum((a > f) + 0.5 * (a == f) for a in absent for f in familiar) / (len(absent) * len(familiar))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="a models folder of bench_ultralytics_sem_overfit.py")
    args = parser.parse_args()
    maps = Maps(args.models)
    print(f"model {args.models}, deployed stage {maps.stage}")
    familiar = [candidate(index, None) for index in range(0, 12, 2)]
    for kind in KINDS:
        absent = [candidate(index, kind) for index in range(1, 12, 2)]
        for whole in (False, True):
            distribution = "whole C + 1" if whole else "renormalised"
            scores = {}
            for name, images in (("absent", absent), ("familiar", familiar)):
                scores[name] = [mining.semantic_entropy_score([maps(image, "image", whole)]) for image in images]
            print(f"{kind:20} {distribution:12} entropy             share {absent_first_share(**scores):.3f}  "
                  f"absent {min(scores['absent']):.4f}-{max(scores['absent']):.4f}  "
                  f"familiar {min(scores['familiar']):.4f}-{max(scores['familiar']):.4f}", flush=True)
            for views in VIEWS:
                scores = {name: [mining.semantic_aldd_score([maps(image, view, whole) for view in views])
                                 for image in images] for name, images in (("absent", absent), ("familiar", familiar))}
                print(f"{kind:20} {distribution:12} aldd {'+'.join(views):14} share {absent_first_share(**scores):.3f}"
                      f"  absent {min(scores['absent']):.4f}-{max(scores['absent']):.4f}  "
                      f"familiar {min(scores['familiar']):.4f}-{max(scores['familiar']):.4f}", flush=True)


if __name__ == "__main__":
    main()
