"""Dataset of semantic segmentation samples: ``(image path, label map source)`` items -> letterboxed image and
label map, flipped together in training (the prototype's one augmentation, issue 28).

A label map source is a callable ``label_map(factor) -> uint8 [ceil(H / factor), ceil(W / factor)]`` (class ids,
:data:`~.semantic.UNLABELLED` where no class is): the plugin passes ``Item.label_map``, so label maps are painted
when a sample is made, never all held at once. Images are decoded by ymir-runner's rules
(:func:`ymir_runner.decode_image`, reduced on decode while their long side stays at least ``img_size``) and the
label map is asked for at the same reduce factor. An unreadable image is replaced by the next readable one and
reported in the sample's ``corrupt`` mapping, as :class:`~.data.DetectionDataset` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ymir_runner import decode_image

from .augment import letterbox, letterbox_placement
from .data import first_readable
from .semantic import UNLABELLED

#: A label map source: ``label_map(factor)``.
LabelMapSource = Callable[[int], np.ndarray]
SemanticItem = tuple["str | Path", LabelMapSource]


def letterbox_label_map(label_map: np.ndarray, img_size: int) -> np.ndarray:
    """``label_map`` ``[H, W]`` placed as :func:`~.augment.letterbox` places its image: resized (nearest, so
    labels stay labels) to the letterbox's size and padded with :data:`~.semantic.UNLABELLED`."""
    height, width = label_map.shape
    new_w, new_h, pad_x, pad_y = letterbox_placement(width, height, img_size)
    resized = label_map if (new_w, new_h) == (width, height) else np.asarray(
        Image.fromarray(label_map).resize((new_w, new_h), Image.Resampling.NEAREST))
    canvas = np.full((img_size, img_size), UNLABELLED, dtype=np.uint8)
    canvas[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
    return canvas


def fit_label_map(label_map: np.ndarray, width: int, height: int) -> np.ndarray:
    """``label_map`` at exactly ``width`` x ``height`` (nearest), for a decode whose size differs from the reduced
    label map's by a rounding."""
    label_map = np.asarray(label_map, dtype=np.uint8)
    if label_map.shape == (height, width):
        return label_map
    return np.asarray(Image.fromarray(label_map).resize((width, height), Image.Resampling.NEAREST))


class SemanticDataset(Dataset):
    """Samples ``{"image": uint8 [S, S, 3], "labels": uint8 [S, S], "index", "corrupt", "damaged"}``: the image
    and its label map letterboxed to ``img_size``, mirrored together with probability ``flip_prob`` when
    ``train``."""

    def __init__(self, items: Sequence[SemanticItem], img_size: int, *, train: bool = False, flip_prob: float = 0.5,
                 role: str | None = None):
        if not items:
            raise ValueError("SemanticDataset needs at least one item")
        self.paths = [str(path) for path, _ in items]
        self.sources = [source for _, source in items]
        self.img_size = img_size
        self.train = train
        self.flip_prob = flip_prob if train else 0.0
        self.role = role or ("training" if train else "validation")
        self.corrupt_indices: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def _load_readable(self, index: int) -> tuple[np.ndarray, np.ndarray, int, str, dict[int, str]]:
        """Image, label map (same size), the index used, its damage and the unreadable indices met."""
        (image, labels, damage), used, corrupt = first_readable(index, self.paths, self.corrupt_indices, self._read,
                                                                self.role)
        return image, labels, used, damage, corrupt

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Image ``index`` decoded (reduced on decode to about ``img_size``), its label map at the same size and
        its damage."""
        decoded = decode_image(self.paths[index], self.img_size)
        image = np.asarray(decoded.image)
        return image, fit_label_map(self.sources[index](decoded.factor), image.shape[1], image.shape[0]), decoded.damage

    def __getitem__(self, index: int) -> dict:
        image, labels, used, damage, corrupt = self._load_readable(index)
        image = letterbox(image, self.img_size)[0]
        labels = letterbox_label_map(labels, self.img_size)
        if self.flip_prob and torch.rand(()).item() < self.flip_prob:  # torch's RNG: follows worker seeding
            image, labels = image[:, ::-1], labels[:, ::-1]
        return {"image": torch.from_numpy(np.ascontiguousarray(image)),
                "labels": torch.from_numpy(np.ascontiguousarray(labels)),
                "index": used, "corrupt": corrupt, "damaged": {used: damage} if damage else {}}


def collate_semantic(samples: list[dict]) -> dict:
    """Batch samples: ``images`` uint8 ``[B, 3, S, S]`` (channels_last strides), ``targets["labels"]`` uint8
    ``[B, S, S]``, the indices used and the unreadable and damaged images met."""
    return {
        "images": torch.stack([sample["image"] for sample in samples]).permute(0, 3, 1, 2),
        "targets": {"labels": torch.stack([sample["labels"] for sample in samples])},
        "indices": [sample["index"] for sample in samples],
        "corrupt": {i: reason for sample in samples for i, reason in sample["corrupt"].items()},
        "damaged": {i: reason for sample in samples for i, reason in sample["damaged"].items()},
    }
