"""The model part of every task: letterbox an image, run the network, turn its maps into :class:`Prediction` records.

Used by stage evaluation (training), inference and mining; the core's loops own everything around it (decoding,
threads ahead of the model, skips, progress, writing). Boxes are ``x1, y1, x2, y2`` in pixel-edge coordinates (``x2``
exclusive) throughout.

The network sees a letterboxed square (:func:`.engine.augment.letterbox_image`: the long side resized to
``img_size`` with Pillow, the rest padded). Its maps are decoded on the device as a batch: CenterNet peaks (a 3x3
max-pool), the ``top_k`` best per image, the score threshold, and optionally class-aware NMS
(:func:`.engine.decode.decode_maps`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ymir_runner import Param, Prediction, decode_image

from .devices import select_devices
from .engine import LetterboxInfo, decode_maps
from .engine.augment import letterbox_image
from .engine.data import DECODE_MARGIN
from .engine.decode import boxes_to_original

if TYPE_CHECKING:
    from ymir_runner import DecodedImage, TaskContext

    from .checkpoint import Checkpoint


@dataclasses.dataclass(frozen=True)
class Letterboxed:
    """A decoded image as the network takes it: ``image [S,S,3]`` uint8 RGB; ``info`` maps its pixels to the
    STORED image's (``x_input = x_stored * scale_x + pad_x``); ``factor`` is the decode's reduce factor (a power of
    two: decoded pixel ``x`` is stored pixel ``x * factor``)."""

    image: np.ndarray
    info: LetterboxInfo
    factor: int


def decode_side(img_size: int) -> int:
    """The ``min_side`` candidates and validation images are decoded with (``context.decode``): a large image is
    reduced on decode only as far as its long side stays at least twice ``img_size``, as training reads it
    (``.engine.data.DECODE_MARGIN``), so inference sees what validation measured the model's threshold on."""
    return img_size * DECODE_MARGIN


def letterboxed(decoded: DecodedImage, img_size: int) -> Letterboxed:
    """``decoded`` (``ymir_runner.DecodedImage``) letterboxed to ``img_size`` with Pillow (thread-safe; Pillow
    releases the GIL while it resizes, so the core's prefetch threads overlap it with the forward pass)."""
    image, info = letterbox_image(decoded.image, img_size)
    if decoded.factor > 1:  # boxes map back to the STORED pixels the annotations and results use
        info = LetterboxInfo(info.scale_x / decoded.factor, info.scale_y / decoded.factor, info.pad_x, info.pad_y,
                             decoded.width, decoded.height)
    return Letterboxed(image, info, decoded.factor)


def to_input(images: Sequence[np.ndarray], device: torch.device | str) -> torch.Tensor:
    """``[B,3,S,S]`` float in [0, 1] (channels_last) on ``device`` from ``B`` uint8 ``[S,S,3]`` images: stacked once,
    converted to float once per batch, on the device."""
    batch = torch.from_numpy(np.stack(images)).to(device)
    return batch.permute(0, 3, 1, 2).float().div_(255.0).contiguous(memory_format=torch.channels_last)


class Predictor:
    """A network in eval mode on ``device`` and what its maps become.

    ``model`` is a :class:`.engine.CenterNetDetector` (``predict_maps`` gives per-class scores ``[B,C,H,W]`` after
    the sigmoid and per-cell boxes ``[B,4,H,W]`` in input pixels). Call it under ``torch.inference_mode()``.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device | str) -> None:
        self.model = model
        self.device = device

    def maps(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(scores [B,C,H,W], boxes [B,4,H,W])`` of ``B`` letterboxed uint8 images, as float32."""
        scores, boxes = self.model.predict_maps(to_input(images, self.device))  # type: ignore[operator]
        return scores.float(), boxes.float()

    def input_pixels(self, images: Sequence[np.ndarray], *, score_threshold: float, top_k: int,
                     nms_iou: float | None) -> list[Prediction]:
        """Per image: the peaks scoring at least ``score_threshold`` (at most ``top_k``, best first, after
        class-aware NMS at ``nms_iou`` when given), boxes in the pixels of the letterboxed images given (mining)."""
        scores, boxes = self.maps(images)
        return [Prediction(b.cpu().numpy(), s.cpu().numpy(), c.cpu().numpy())
                for b, s, c in decode_maps(scores, boxes, top_k, score_threshold, nms_iou=nms_iou)]

    def stored_pixels(self, inputs: Sequence[Letterboxed], *, score_threshold: float, top_k: int,
                      nms_iou: float | None) -> list[np.ndarray]:
        """As :meth:`input_pixels` for letterboxed decoded images, as ``[N,6]`` float32 rows ``x1, y1, x2, y2,
        score, class`` with the boxes in STORED pixels, clipped to the image (float32, as the plugin always
        computed them)."""
        scores, boxes = self.maps([entry.image for entry in inputs])
        rows = []
        for (b, s, c), entry in zip(decode_maps(scores, boxes, top_k, score_threshold, nms_iou=nms_iou), inputs):
            stored = boxes_to_original(b.cpu().numpy(), entry.info)
            rows.append(np.concatenate([stored, s.cpu().numpy()[:, None], c.cpu().numpy()[:, None]], axis=1))
        return rows

    def decoded_pixels(self, inputs: Sequence[Letterboxed], *, score_threshold: float, top_k: int,
                       nms_iou: float | None) -> list[Prediction]:
        """Inference's ``predict``: boxes in the pixels of each DECODED image (what the core's loop scales by the
        decode factor). They are computed in stored pixels and divided by the factor, a power of two, which is
        exact: the core's scaling gives back the stored-pixel boxes to the bit."""
        rows = self.stored_pixels(inputs, score_threshold=score_threshold, top_k=top_k, nms_iou=nms_iou)
        return [Prediction(row[:, :4] / entry.factor, row[:, 4], row[:, 5]) for row, entry in zip(rows, inputs)]

    def for_evaluation(self, inputs: Sequence[Letterboxed], *, score_floor: float, top_k: int) -> list[Prediction]:
        """Stage evaluation's predictions: every peak down to ``score_floor`` (no NMS: the peaks are the
        detector's own suppression), at most ``top_k`` per image, in STORED pixels; boxes that clipping to the
        image left without area are dropped (they could match nothing)."""
        return [_with_area(row) for row in self.stored_pixels(inputs, score_threshold=score_floor, top_k=top_k,
                                                               nms_iou=None)]

    def probability_maps(self, images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        """ALDD's K = 2 maps per class and image (``[C,H,W]`` each): the image's heatmap and its mirror's, mirrored
        back onto the same grid."""
        inputs = to_input(images, self.device)
        scores, _ = self.model.predict_maps(inputs)  # type: ignore[operator]
        mirrored, _ = self.model.predict_maps(inputs.flip(3))  # type: ignore[operator]
        return [[s.float().cpu().numpy(), m.flip(2).float().cpu().numpy()] for s, m in zip(scores, mirrored)]


#: The run cache key of the network mining and inference share (one load for a run doing both).
NETWORK_KEY = "ymir_runner_detection.network"


def task_predictor(context: TaskContext, checkpoint: Checkpoint) -> Predictor:
    """The predictor of a mining or inference task, built once per run: ``checkpoint``'s network on the task's
    device. The core's candidate loop is one process, so several GPUs in config key ``gpu_id`` use the first
    (logged); training alone spreads over several."""
    cached = context.run_cache.get(NETWORK_KEY)
    if cached is not None:
        return cached
    device = task_device(context)
    predictor = Predictor(checkpoint.build_model().to(device).eval(), device)
    context.run_cache[NETWORK_KEY] = predictor
    return predictor


def task_device(context: TaskContext) -> str:
    """The device a mining or inference task predicts on: the first of config key ``gpu_id`` (the core's
    candidate loop is one process; several GPUs named: the first, logged), else ``cpu``."""
    devices = select_devices(context.config.gpu_ids)
    if len(devices) > 1:
        context.logger.info("%s on %s: the candidates are predicted in one process (config key 'gpu_id' names %d "
                            "devices)", context.kind.value, devices[0], len(devices))
    return devices[0]


def prefetch_workers(context: TaskContext) -> int | None:
    """The threads that decode and letterbox ahead of the model (config key ``num_workers_per_gpu``): a number is
    exactly that many; ``auto`` (None) lets the core size them from the task's CPUs."""
    workers = context.hyper.num_workers_per_gpu
    return None if workers == Param.AUTO else int(workers)


def predict_images(model: torch.nn.Module, paths: Sequence[str], img_size: int, *, score_threshold: float,
                   top_k: int, nms_iou: float | None = None, batch_size: int = 16) -> list[Prediction]:
    """Stand-alone prediction (the demo's picture, benchmarks, experiments, engine tests; a task goes through the
    core's loops instead): each image file decoded by the project's rules (``ymir_runner.decode_image``, reduced as
    a task decodes it), letterboxed to ``img_size`` and predicted by ``model`` (put in eval mode) on its device, as
    :meth:`Predictor.for_evaluation` with ``score_threshold`` and ``top_k``, plus class-aware NMS at ``nms_iou`` when
    given. Boxes in STORED pixels. Raises ``ymir_runner.ImageProblem`` for an image that cannot be used."""
    predictor = Predictor(model.eval(), next(model.parameters()).device)
    predictions: list[Prediction] = []
    with torch.inference_mode():
        for start in range(0, len(paths), batch_size):
            inputs = [letterboxed(decode_image(path, decode_side(img_size)), img_size)
                      for path in paths[start:start + batch_size]]
            predictions += [_with_area(row) for row in predictor.stored_pixels(
                inputs, score_threshold=score_threshold, top_k=top_k, nms_iou=nms_iou)]
    return predictions


def _with_area(row: np.ndarray) -> Prediction:
    """The ``[N,6]`` rows of :meth:`Predictor.stored_pixels` whose box kept an area after clipping, as a record."""
    row = row[(row[:, 2] > row[:, 0]) & (row[:, 3] > row[:, 1])]
    return Prediction(row[:, :4], row[:, 4], row[:, 5])
