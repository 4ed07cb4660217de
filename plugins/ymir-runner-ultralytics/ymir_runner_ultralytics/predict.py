"""The model part of every task: images letterboxed, run through a YOLO network and decoded by ultralytics' own
NMS (YOLO26 is end-to-end: its top-k needs none), for the stage evaluation, inference and mining alike. The images
are the core's decodes (``context.decode``: stored pixels, no EXIF rotation, possibly reduced); the boxes come back
as :class:`ymir_runner.Prediction` in the pixels of the images given, and the core's loops scale them to stored
pixels.

The network gets RGB in [0, 1], what ultralytics' predictor makes of the BGR arrays it is given (it flips them):
the flip is skipped, not the colour order changed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from ymir_runner import DecodedImage, Prediction

#: The grey ultralytics pads letterboxed images with.
PAD_VALUE = 114


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the square input: scaled by ``ratio_x``, ``ratio_y`` (equal but for the rounding
    of the new size to whole pixels), then shifted by ``pad_x``, ``pad_y``."""

    ratio_x: float
    ratio_y: float
    pad_x: int
    pad_y: int

    def to_image(self, boxes: np.ndarray) -> np.ndarray:
        """Input-pixel boxes ``[N,4]`` → the image's pixels (pixel-edge coordinates)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - self.pad_x) / self.ratio_x
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - self.pad_y) / self.ratio_y
        return boxes


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """``image [H,W,3]`` uint8 scaled to fit ``size`` x ``size`` (aspect kept, up or down as ultralytics does) and
    centred on grey."""
    import cv2

    height, width = image.shape[:2]
    ratio = min(size / height, size / width)
    new_w, new_h = max(1, round(width * ratio)), max(1, round(height * ratio))
    if (new_w, new_h) != (width, height):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    pad_x, pad_y = (size - new_w) // 2, (size - new_h) // 2
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = image
    return canvas, Letterbox(new_w / width, new_h / height, pad_x, pad_y)


@dataclasses.dataclass(frozen=True)
class Fitted:
    """An image letterboxed for the network: ``canvas [S,S,3]`` uint8 RGB and how it was fitted."""

    canvas: np.ndarray
    fit: Letterbox


class Predictor:
    """A YOLO network (an ultralytics ``DetectionModel``, e.g. the trainer's EMA model) on ``device``, in eval mode
    and never switched out of it, fed ``img_size`` letterboxes."""

    def __init__(self, network: Any, device: str, img_size: int) -> None:
        self.network = network
        self.device = device
        self.img_size = img_size
        self.end2end = bool(getattr(network, "end2end", False))
        self.dtype = next(network.parameters()).dtype

    def fit(self, image: np.ndarray) -> Fitted:
        """``image [H,W,3]`` uint8 RGB letterboxed to ``img_size``."""
        return Fitted(*letterbox(image, self.img_size))

    def preprocess(self, decoded: DecodedImage) -> Fitted:
        """The decode side of inference (the core's loop runs it on its threads, ahead of the model): the decoded
        image letterboxed."""
        return self.fit(decoded.pixels)

    def canvas(self, decoded: DecodedImage) -> np.ndarray:
        """The decode side of mining: the letterboxed ``[S,S,3]`` image, which the network sees unchanged
        (letterboxing it again is the identity)."""
        return self.fit(decoded.pixels).canvas

    def _tensor(self, fitted: Sequence[Fitted]) -> Any:
        import torch

        batch = torch.from_numpy(np.stack([image.canvas for image in fitted])).to(self.device)
        return batch.permute(0, 3, 1, 2).to(self.dtype).div_(255.0)

    def predict(self, fitted: Sequence[Fitted], *, conf: float, iou: float, max_det: int) -> list[Prediction]:
        """Per letterboxed image, the boxes scoring at least ``conf`` after NMS at ``iou``, at most ``max_det``, in
        the pixels of the image that was letterboxed."""
        import importlib

        import torch
        from ultralytics.utils import nms

        # ultralytics' NMS calls torchvision's compiled nms only when torchvision is imported ("torchvision" in
        # sys.modules, utils/nms.py), else a Python loop: up to 4x the forward pass with many boxes, and boxes of equal
        # score in another order than after a training (which imports it) in the same process.
        importlib.import_module("torchvision")

        if not fitted:
            return []
        batch = self._tensor(fitted)
        head = self.network.model[-1]
        saved_max_det = getattr(head, "max_det", None)
        if self.end2end and saved_max_det is not None:
            head.max_det = max_det  # the end-to-end head keeps its top max_det boxes itself
        try:
            with torch.inference_mode():
                outputs = nms.non_max_suppression(self.network(batch), conf, iou, max_det=max_det,
                                                  end2end=self.end2end)
        finally:
            if self.end2end and saved_max_det is not None:
                head.max_det = saved_max_det
        found = []
        for output, image in zip(outputs, fitted):
            output = output.float().cpu().numpy()
            found.append(Prediction(image.fit.to_image(output[:, :4]), output[:, 4], output[:, 5]))
        return found

    def __call__(self, images: Sequence[np.ndarray], *, conf: float, iou: float, max_det: int) -> list[Prediction]:
        """:meth:`predict` of ``images`` (``[H,W,3]`` uint8 RGB), boxes in their pixels."""
        return self.predict([self.fit(image) for image in images], conf=conf, iou=iou, max_det=max_det)

    def class_maps(self, images: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        """ALDD's probability maps: per image, K = 2 maps ``[C, S/s, S/s]`` of the class scores on the finest
        grid of the head (stride ``s``, 8 for the P3-P5 models), one for the letterboxed image and one for its
        mirror image, mirrored back onto the same grid. The scores are the one-to-many head's, before NMS."""
        import torch

        if not images:
            return []
        batch = self._tensor([self.fit(image) for image in images])
        head = self.network.model[-1]
        side = self.img_size // int(head.stride[0])
        per_view = []
        with torch.inference_mode():
            for mirrored in (False, True):
                output = self.network(batch.flip(3) if mirrored else batch)
                scores = (output[0] if isinstance(output, (tuple, list)) else output)[:, 4:4 + head.nc]
                maps = scores[:, :, :side * side].reshape(len(images), head.nc, side, side).float()
                per_view.append((maps.flip(3) if mirrored else maps).cpu().numpy())
        return [[plain, mirror] for plain, mirror in zip(*per_view)]
