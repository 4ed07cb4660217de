"""The semantic segmentation mining task: the core's loop (``ymir_runner.mining.mine_candidates``) scores the
candidates from this model's softmax maps (``softmax_maps``); the core decodes and letterboxes them on threads
ahead of the model, ranks them and writes result.tsv.

Per image the model gives its softmax map ``[channels, S/4, S/4]`` at its output stride (the map the 1x1 head
computes, before the bilinear x4 upsampling: the scores are means over the image's area, the same at any
resolution, docs/mining.md). ``entropy`` scores its pixel entropy (one forward pass); ``aldd`` the disagreement
(Aghdam et al., ICCV 2019, as the core computes it) of K = 2 maps, the letterboxed image's and its horizontal
mirror's, mirrored back;
``random`` needs no model. ``cald`` needs boxes: the core refuses it for object type 3 (config key
``mining_algorithm`` named). The letterbox's grey padding is cut away first: only the image's own cells are scored.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ymir_runner import TaskContext, mining

from ..predict import decode_side, letterboxed, prefetch_workers, to_input
from .inference import semantic_checkpoint, task_img_size, task_network


def image_cells(image: np.ndarray, stride: int, fill: int = 114) -> tuple[slice, slice]:
    """The rows and columns of the cell grid (``stride`` input pixels per cell) that hold the letterboxed image
    rather than its grey ``fill`` padding: the letterbox centres the image, so the padding is whole rows or
    columns of ``fill`` at both ends; every cell touching an image pixel is kept."""
    height, width = image.shape[:2]
    padded_rows = np.all(image == fill, axis=(1, 2))
    padded_columns = np.all(image == fill, axis=(0, 2))

    def span(padded: np.ndarray, size: int) -> slice:
        inside = np.flatnonzero(~padded)
        if not len(inside):
            return slice(0, math.ceil(size / stride))
        return slice(int(inside[0]) // stride, math.ceil((int(inside[-1]) + 1) / stride))

    return span(padded_rows, height), span(padded_columns, width)


def mine(context: TaskContext) -> None:
    """Score every candidate by config key ``mining_algorithm`` (module docstring)."""
    checkpoint = semantic_checkpoint(context)
    img_size = task_img_size(context, checkpoint)
    mirror = mining.MiningSettings.from_context(context).algorithm == "aldd"

    def softmax_maps(images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        model, device = task_network(context, checkpoint)  # built on first use: random needs no network
        with torch.inference_mode():
            inputs = to_input(images, device)
            views = [torch.softmax(model.cell_logits(inputs).float(), dim=1).cpu().numpy()]
            if mirror:
                mirrored = model.cell_logits(inputs.flip(3)).float().flip(3)
                views.append(torch.softmax(mirrored, dim=1).cpu().numpy())
        maps = []
        for index, image in enumerate(images):
            rows, columns = image_cells(image, model.stride)
            maps.append([view[index][:, rows, columns] for view in views])
        return maps

    mining.mine_candidates(context, softmax_maps=softmax_maps,
                           preprocess=lambda decoded: letterboxed(decoded, img_size).image,
                           batch_size=context.hyper.batch_size_per_gpu, min_side=decode_side(img_size),
                           workers=prefetch_workers(context))
