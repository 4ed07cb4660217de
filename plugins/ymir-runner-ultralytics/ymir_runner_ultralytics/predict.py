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
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from ymir_runner import DecodedImage, Prediction

if TYPE_CHECKING:
    from ymir_runner import InstanceMask

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

    def _suppressed(self, fitted: Sequence[Fitted], *, conf: float, iou: float, max_det: int) -> tuple[list, Any]:
        """The network on the letterboxed images and ultralytics' NMS: per image ``[N, 6 + extra]`` (x1, y1, x2, y2
        in input pixels, score, class, then a segmentation model's mask coefficients), and the batch's mask
        prototypes ``[B, nm, S/4, S/4]`` (None for a detection model)."""
        import importlib

        import torch
        from ultralytics.utils import nms

        # ultralytics' NMS calls torchvision's compiled nms only when torchvision is imported ("torchvision" in
        # sys.modules, utils/nms.py), else a Python loop: up to 4x the forward pass with many boxes, and boxes of equal
        # score in another order than after a training (which imports it) in the same process.
        importlib.import_module("torchvision")

        batch = self._tensor(fitted)
        head = self.network.model[-1]
        saved_max_det = getattr(head, "max_det", None)
        if self.end2end and saved_max_det is not None:
            head.max_det = max_det  # the end-to-end head keeps its top max_det boxes itself
        try:
            with torch.inference_mode():
                raw = self.network(batch)
                protos = None
                if isinstance(raw, (tuple, list)) and isinstance(raw[0], (tuple, list)):  # ((outputs, protos), ...)
                    raw, protos = raw[0][0], raw[0][1]
                outputs = nms.non_max_suppression(raw, conf, iou, max_det=max_det, nc=int(head.nc),
                                                  end2end=self.end2end)
        finally:
            if self.end2end and saved_max_det is not None:
                head.max_det = saved_max_det
        return outputs, protos

    def predict(self, fitted: Sequence[Fitted], *, conf: float, iou: float, max_det: int) -> list[Prediction]:
        """Per letterboxed image, the boxes scoring at least ``conf`` after NMS at ``iou``, at most ``max_det``, in
        the pixels of the image that was letterboxed."""
        if not fitted:
            return []
        outputs, _ = self._suppressed(fitted, conf=conf, iou=iou, max_det=max_det)
        found = []
        for output, image in zip(outputs, fitted):
            output = output.float().cpu().numpy()
            found.append(Prediction(image.fit.to_image(output[:, :4]), output[:, 4], output[:, 5]))
        return found

    def predict_instances(self, fitted: Sequence[Fitted], *, conf: float, iou: float,
                          max_det: int) -> list[Instances]:
        """A segmentation model's instances on each letterboxed image (see :meth:`predict`): boxes, scores,
        classes and each instance's mask logits at the prototypes' resolution, from which :class:`Instances` makes
        masks in any image's pixels without a full-size ``N x H x W`` array."""
        import torch

        if not fitted:
            return []
        outputs, protos = self._suppressed(fitted, conf=conf, iou=iou, max_det=max_det)
        if protos is None:
            raise RuntimeError("the network has no mask prototypes: not a segmentation model")
        found = []
        with torch.inference_mode():
            for output, proto, image in zip(outputs, protos, fitted):
                channels, rows, columns = proto.shape
                coefficients = output[:, 6:6 + channels].float()
                logits = (coefficients @ proto.float().reshape(channels, -1)).reshape(-1, rows, columns)
                output = output.float().cpu().numpy()
                found.append(Instances(output[:, :4].astype(np.float64), output[:, 4].astype(np.float64),
                                       output[:, 5].astype(np.int64), logits.cpu().numpy(), image.fit,
                                       self.img_size))
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
                scores = _inference_output(output)[:, 4:4 + head.nc]
                maps = scores[:, :, :side * side].reshape(len(images), head.nc, side, side).float()
                per_view.append((maps.flip(3) if mirrored else maps).cpu().numpy())
        return [[plain, mirror] for plain, mirror in zip(*per_view)]


def _inference_output(output: Any) -> Any:
    """The decoded ``[B, 4 + classes (+ extra), anchors]`` tensor of a network's eval-mode output: a detection model
    returns ``(y, raw)``, a segmentation model ``((y, prototypes), raw)``."""
    while isinstance(output, (tuple, list)):
        output = output[0]
    return output


#: Mask pixels sampled at a time (:func:`instance_region`): the temporaries stay a few MB whatever the image's size.
MASK_PIXEL_BLOCK = 1 << 20


def _axis(start: int, stop: int, factor: float, ratio: float, pad: int, img_size: int,
          side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear sampling of one axis (align_corners False, edges clamped, as ``F.interpolate``): for the target pixels
    ``start..stop-1`` (their centres, divided by ``factor`` into the letterboxed image's pixels, then through the
    letterbox onto the prototype grid of ``side`` cells over ``img_size`` input pixels), the two source cells and the
    weight of the second."""
    centres = (np.arange(start, stop, dtype=np.float64) + 0.5) / factor
    source = (centres * ratio + pad) * side / img_size - 0.5
    low = np.floor(source)
    weight = (source - low).astype(np.float32)
    low = low.astype(np.int64)
    return np.clip(low, 0, side - 1), np.clip(low + 1, 0, side - 1), weight


def instance_region(logits: np.ndarray, box: np.ndarray, fit: Letterbox, img_size: int, factor: float, width: int,
                    height: int) -> tuple[np.ndarray, int, int]:
    """One instance's mask in the pixels of a ``width`` x ``height`` image whose letterbox (of its decode, ``factor``
    times smaller) the network saw: ``(mask [h, w] bool, x, y)``, the region of the pixels whose centres lie in the
    instance's box (``box`` x1, y1, x2, y2 in input pixels: ultralytics crops a mask to its box), each pixel the
    logit bilinearly sampled from the prototype-resolution ``logits [mh, mw]`` and thresholded at 0 (ultralytics'
    ``process_mask``, but sampled straight at the target pixels: no input-size or full-image array)."""
    stored = fit.to_image(box)[0] * factor
    x0, x1 = (int(np.clip(np.ceil(value - 0.5), 0, width)) for value in (stored[0], stored[2]))
    y0, y1 = (int(np.clip(np.ceil(value - 0.5), 0, height)) for value in (stored[1], stored[3]))
    mask = np.zeros((max(y1 - y0, 0), max(x1 - x0, 0)), np.bool_)
    if not mask.size:
        return mask, x0, y0
    rows_, columns = logits.shape
    low_y, high_y, weight_y = _axis(y0, y1, factor, fit.ratio_y, fit.pad_y, img_size, rows_)
    low_x, high_x, weight_x = _axis(x0, x1, factor, fit.ratio_x, fit.pad_x, img_size, columns)
    logits = logits.astype(np.float32, copy=False)
    step = max(1, MASK_PIXEL_BLOCK // mask.shape[1])
    for start in range(0, mask.shape[0], step):
        stop = min(start + step, mask.shape[0])
        weight = weight_y[start:stop, None]
        lines = logits[low_y[start:stop]] * (1 - weight) + logits[high_y[start:stop]] * weight  # [rows, mw]
        mask[start:stop] = (lines[:, low_x] * (1 - weight_x) + lines[:, high_x] * weight_x) > 0
    return mask, x0, y0


@dataclasses.dataclass
class Instances:
    """A segmentation model's instances on one letterboxed image: ``boxes [N,4]`` in input pixels, ``scores [N]``,
    ``classes [N]``, ``logits [N, mh, mw]`` (each instance's mask logits on the prototype grid), the letterbox
    ``fit`` and the input size."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    logits: np.ndarray
    fit: Letterbox
    img_size: int

    def __len__(self) -> int:
        return len(self.scores)

    def regions(self, width: int, height: int, factor: float = 1) -> Iterator[tuple[int, np.ndarray, int, int]]:
        """``(index, mask, x, y)`` of each instance whose mask is not empty, in the pixels of the ``width`` x
        ``height`` image (``factor`` times the decoded image the letterbox was made of), one at a time."""
        for index in range(len(self)):
            mask, x, y = instance_region(self.logits[index], self.boxes[index:index + 1], self.fit, self.img_size,
                                         factor, width, height)
            if mask.any():  # ultralytics keeps only predictions with a mask
                yield index, mask, x, y

    def instance_masks(self, width: int, height: int, factor: float = 1) -> Iterator[InstanceMask]:
        """What ``context.seg_infer_result.add`` takes: each non-empty instance as its box-sized mask with its
        origin in STORED pixels (``width`` x ``height``; ``factor``: the decode's reduction), made one at a time
        (a generator: 100 large instances of a 6000 x 4000 image are never in memory together)."""
        from ymir_runner import InstanceMask

        for index, mask, x, y in self.regions(width, height, factor):
            yield InstanceMask(mask, float(self.scores[index]), int(self.classes[index]), origin=(x, y))

    def prediction(self, width: int, height: int) -> Prediction:
        """The box-based mining record (:func:`ymir_runner.mining.instance_prediction`) of the non-empty instances in
        the pixels of the ``width`` x ``height`` image the letterbox was made of, one full-size mask alive at a
        time."""
        from ymir_runner.mining import instance_prediction

        kept = list(self.regions(width, height))

        def full_masks() -> Iterator[np.ndarray]:
            for _index, mask, x, y in kept:
                full = np.zeros((height, width), np.bool_)
                full[y:y + mask.shape[0], x:x + mask.shape[1]] = mask
                yield full

        index = np.array([entry[0] for entry in kept], np.int64)
        return instance_prediction(full_masks(), self.scores[index], self.classes[index])
