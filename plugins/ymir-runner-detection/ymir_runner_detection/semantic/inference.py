"""The semantic segmentation inference task: the core's loop (``ymir_runner.inference.infer_seg_candidates``)
around a Semantic FPN.

The core reads the candidates, decodes them (reduced on decode by a power of two while the long side stays at least
twice the input size, as training's validation reads them) and letterboxes them on threads ahead of the model
(:func:`..predict.letterboxed`), then writes infer-result.json with ``context.seg_infer_result``. This module runs
the batched forward pass to the cell logits (stride 4) and answers, per image, a :class:`SemanticPrediction`: the
label map and its top-1 probability in the candidate's STORED pixels, computed strip by strip by
:func:`..engine.semantic.stored_label_map` (letterbox and reduce-on-decode undone in one bilinear resampling of
the logits), so no ``K x H x W`` array of the stored size ever exists. Each class present becomes one annotation
whose ``confidence`` is the mean top-1 probability over its pixels (segmentation.md section 4).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ymir_runner import ModelError, TaskContext
from ymir_runner.inference import LabelMap, infer_seg_candidates

from ..checkpoint import task_checkpoint
from ..engine.augment import LetterboxInfo
from ..engine.semantic import SemanticFPN, stored_label_map
from ..predict import Letterboxed, decode_side, letterboxed, prefetch_workers, task_device, to_input

if TYPE_CHECKING:
    from ..checkpoint import Checkpoint


@dataclasses.dataclass(frozen=True)
class SemanticPrediction:
    """One image's answer to the core (a ``ymir_runner.inference.SegPrediction``): its cell logits ``[K, h, w]``
    (float32, on the CPU, at the model's output ``stride``) and how the letterbox placed the STORED image
    (``info``: ``x_input = x_stored * scale_x + pad_x``, the decode's reduce factor included). ``background``:
    the last channel is the implicit background class, whose pixels are unlabelled (255)."""

    logits: torch.Tensor
    info: LetterboxInfo
    stride: int
    background: bool

    def __call__(self, width: int, height: int, factor: int) -> LabelMap:
        """The label map ``[height, width]`` uint8 (class ids, 255 unlabelled) and its top-1 probability
        ``[height, width]`` float32 in the candidate's STORED pixels. ``factor`` is already in ``info`` (the
        letterbox was computed on the reduced image and scaled back); the stored size must be the one ``info``
        was made for, else ValueError."""
        info = self.info
        if (width, height) != (info.orig_width, info.orig_height):
            raise ValueError(f"asked for a {width}x{height} label map of an image letterboxed from "
                             f"{info.orig_width}x{info.orig_height} stored pixels (decode factor {factor})")
        return LabelMap(*stored_label_map(self.logits, stride=self.stride, scale_x=info.scale_x,
                                          scale_y=info.scale_y, pad_x=info.pad_x, pad_y=info.pad_y, width=width,
                                          height=height, background=self.background))


def cell_logits(model: SemanticFPN, images: Sequence[np.ndarray], device: torch.device | str) -> torch.Tensor:
    """The batched forward pass: ``[B, K, S/4, S/4]`` float32 cell logits on the CPU of ``B`` letterboxed uint8
    ``[S, S, 3]`` RGB images (``model`` in eval mode; call under ``torch.inference_mode()``). Row-major: the input
    is channels_last, and the label maps' gathers along rows and columns of a channels_last map measured about
    40 % slower (1 thread, 256 px)."""
    return model.cell_logits(to_input(images, device)).float().cpu().contiguous()


def semantic_predictions(model: SemanticFPN, inputs: Sequence[Letterboxed],
                         device: torch.device | str) -> list[SemanticPrediction]:
    """One :class:`SemanticPrediction` per letterboxed image, from one batched forward pass."""
    with torch.inference_mode():
        logits = cell_logits(model, [entry.image for entry in inputs], device)
    return [SemanticPrediction(cells, entry.info, model.stride, model.background)
            for cells, entry in zip(logits, inputs)]


#: The run cache key of the segmentation network mining and inference share (one load for a run doing both).
SEMANTIC_NETWORK_KEY = "ymir_runner_detection.semantic_network"


def semantic_checkpoint(context: TaskContext) -> Checkpoint:
    """The task's checkpoint (:func:`..checkpoint.task_checkpoint`), which must be a segmentation model of this
    plugin: a detection model is refused with ``ModelError`` naming the file and the config key."""
    checkpoint = task_checkpoint(context)
    if checkpoint.task != "semantic":
        raise ModelError(f"config key '{context.model_key}': {checkpoint.path} is a {checkpoint.task} model; "
                         f"executor {context.executor.name} mines and infers with its own semantic models")
    return checkpoint


def task_network(context: TaskContext, checkpoint: Checkpoint) -> tuple[SemanticFPN, str]:
    """``(model in eval mode, device)`` of a mining or inference task, built once per run on the task's first
    device (the core's candidate loop is one process; several GPUs in config key ``gpu_id``: the first, logged)."""
    cached = context.run_cache.get(SEMANTIC_NETWORK_KEY)
    if cached is not None:
        return cached
    device = task_device(context)
    network = (checkpoint.build_model().to(device).eval(), device)
    context.run_cache[SEMANTIC_NETWORK_KEY] = network
    return network


def task_img_size(context: TaskContext, checkpoint: Checkpoint) -> int:
    """The input size of a mining or inference task: config key ``img_size``, 0 (or absent) the model's own."""
    return int(context.hyper.get("img_size", 0) or checkpoint.img_size)


def infer(context: TaskContext) -> None:
    """The label map of every candidate in its stored pixels, one annotation per class present (module
    docstring)."""
    checkpoint = semantic_checkpoint(context)
    img_size = task_img_size(context, checkpoint)
    model, device = task_network(context, checkpoint)
    context.logger.info("infer: label maps of %s at %d px%s", ", ".join(checkpoint.class_names), img_size,
                        "; pixels whose most probable channel is the background are unlabelled"
                        if model.background else "")

    def predict(batch: list[Letterboxed]) -> list[SemanticPrediction]:
        return semantic_predictions(model, batch, device)

    infer_seg_candidates(context, predict, preprocess=functools.partial(letterboxed, img_size=img_size),
                         batch_size=context.hyper.batch_size_per_gpu, min_side=decode_side(img_size),
                         workers=prefetch_workers(context))
