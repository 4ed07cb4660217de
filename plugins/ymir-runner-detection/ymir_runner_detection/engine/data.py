"""Dataset / DataLoader over ``(image_path, boxes [N,4], classes [N])`` items.

Images are decoded by ymir-runner's rules (:func:`ymir_runner.decode_image`: by content,
stored pixels without EXIF rotation, 16-bit scaled by the full range, truncated files as far as they go, large
images reduced on decode). Boxes are in STORED-pixel coordinates; an image reduced on decode has its boxes
scaled with it, and evaluation letterbox infos map predictions back to the stored size. An unreadable image
never crashes training: the sample is replaced by the next readable one and the bad index is reported, with why
it does not decode (:func:`decode_failure`), in the sample's ``"corrupt"`` mapping, so consumers can count and
name bad files even when decoding happens in DataLoader worker processes.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler
from torch.utils.data.distributed import DistributedSampler

from ymir_runner import decode_image

from .augment import AugmentConfig, LetterboxInfo, TrainAugmentation, letterbox
from .targets import TargetConfig, encode_targets

if TYPE_CHECKING:
    from .semantic_data import SemanticDataset

logger = logging.getLogger(__name__)
T = TypeVar("T")

Item = tuple[str | Path, np.ndarray, np.ndarray]

#: Images are decoded with their long side at least this many times the network input (room for the scale
#: augmentation, which enlarges up to 1.4x): a 14000 x 13000 aerial JPEG at img_size 320 decodes at 1/8.
DECODE_MARGIN = 2


def load_image(path: str | Path) -> np.ndarray:
    """Decode an image file by ymir-runner's rules into an HxWx3 uint8 RGB array of its stored size.
    Raises ``ymir_runner.ImageProblem`` when it cannot be used."""
    return np.asarray(decode_image(str(path)).image)


class Decoded(NamedTuple):
    """A dataset image as decoded: ``image`` HxWx3 uint8, reduced ``factor`` times from the stored
    ``width`` x ``height`` (stored pixel edge ``x`` lies at ``x / factor``); ``damage`` '' or why its data
    broke off (decoded as far as it goes)."""

    image: np.ndarray
    factor: int
    width: int
    height: int
    damage: str


class NoReadableImageError(RuntimeError):
    """Every image of a dataset failed to decode.

    Raised in a DataLoader worker, it reaches the main process re-created with the worker's traceback in
    its message: :func:`no_readable_image_message` gets the one-line message back."""


_NO_READABLE = re.compile(r"none of the \d+ \w+ images can be decoded[^\n]*")


def no_readable_image_message(error: BaseException) -> str:
    """The one-line message of a :class:`NoReadableImageError`, from a worker or not."""
    match = _NO_READABLE.search(str(error))
    return match.group(0) if match else str(error)


def decode_failure(error: BaseException) -> str:
    """Why an image does not decode, in one line for the task's warnings: the core's own reason (an ImageProblem
    names it: ``image too large``, the decode memory budget), or the exception, a MemoryError said as such."""
    detail = " ".join(str(error).split())
    if isinstance(error, MemoryError):
        return f"out of memory while decoding it{': ' + detail if detail else ''}"
    return detail or type(error).__name__


def first_readable(index: int, paths: Sequence[str], corrupt_indices: dict[int, str], read: Callable[[int], T],
                   role: str) -> tuple[T, int, dict[int, str]]:
    """``(read(i), i, unreadable met)`` for the first ``i`` of ``index, index + 1, ...`` (wrapping round the
    ``len(paths)`` images) that reads: a dataset's "skip an unreadable image, take the next". ``corrupt_indices``
    (index -> why, shared by the dataset's samples) is skipped and gains every image whose ``read`` raised (the
    reason from :func:`decode_failure`); the returned dict holds the unreadable ones met on the way, for the caller
    to count and name. Raises :class:`NoReadableImageError` when no image of the ``role`` set reads."""
    corrupt: dict[int, str] = {}
    for attempt in range(len(paths)):
        candidate = (index + attempt) % len(paths)
        if candidate in corrupt_indices:
            corrupt[candidate] = corrupt_indices[candidate]
            continue
        try:
            return read(candidate), candidate, corrupt
        except Exception as error:  # ImageProblem, MemoryError, or anything a broken file makes PIL raise
            logger.debug("skipping unreadable image %s: %s", paths[candidate], error)  # named by the caller
            corrupt[candidate] = corrupt_indices[candidate] = decode_failure(error)
    raise NoReadableImageError(f"none of the {len(paths)} {role} images can be decoded (the first is {paths[0]})")


class DetectionDataset(Dataset):
    """Detection samples, augmented (``train=True``) or letterboxed only.

    Each sample is a dict: ``image`` (uint8 HxWx3 tensor), ``boxes`` /
    ``classes`` in network-input pixels, ``index`` (the item actually used),
    ``letterbox`` (:class:`LetterboxInfo`, eval only), ``corrupt`` (indices
    found unreadable while producing it), ``damaged`` (index -> why its data
    broke off, for images used as far as they decode) and, with a
    ``target_config``, ``targets`` (see :func:`~.targets.encode_targets`).
    """

    def __init__(
        self,
        items: Sequence[Item],
        img_size: int,
        *,
        train: bool = False,
        augment: AugmentConfig | None = None,
        target_config: TargetConfig | None = None,
        cache_images: bool = False,
        role: str | None = None,
    ):
        if not items:
            raise ValueError("DetectionDataset needs at least one item")
        self.paths = [str(path) for path, _, _ in items]
        #: What the images are, for messages: training, validation, candidate.
        self.role = role or ("training" if train else "validation")
        self.boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 4) for _, b, _ in items]
        self.classes = [np.asarray(c, dtype=np.int64).reshape(-1) for _, _, c in items]
        self.img_size = img_size
        self.train = train
        self.augmentation = TrainAugmentation(img_size, augment) if train else None
        self.target_config = target_config
        self.cache_images = cache_images
        self.min_side = img_size * DECODE_MARGIN
        self._cache: dict[int, Decoded] = {}
        # Per-process view (index -> why it does not decode); with workers, merge the samples' "corrupt" instead.
        self.corrupt_indices: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def _read(self, index: int) -> Decoded:
        if index in self._cache:
            return self._cache[index]
        image = decode_image(self.paths[index], self.min_side)
        decoded = Decoded(np.asarray(image.image), image.factor, image.width, image.height, image.damage)
        if self.cache_images:
            self._cache[index] = decoded
        return decoded

    def load_readable(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, dict[int, str]]:
        """Image, boxes, classes of ``index`` or of the next readable item; plus that item's index and the bad ones
        (index -> why it does not decode).

        Boxes are in the pixels of the returned image (stored pixels divided by the decode's reduce factor)."""
        decoded, boxes, used, corrupt = self._load_readable(index)
        return decoded.image, boxes, self.classes[used], used, corrupt

    def _load_readable(self, index: int) -> tuple[Decoded, np.ndarray, int, dict[int, str]]:
        decoded, used, corrupt = first_readable(index, self.paths, self.corrupt_indices, self._read, self.role)
        boxes = self.boxes[used]
        return decoded, boxes if decoded.factor == 1 else boxes / np.float32(decoded.factor), used, corrupt

    def __getitem__(self, index: int) -> dict:
        decoded, boxes, used_index, corrupt = self._load_readable(index)
        image, classes = decoded.image, self.classes[used_index]
        damaged = {used_index: decoded.damage} if decoded.damage else {}
        info = None
        if self.augmentation is not None:
            # Seeding from torch's RNG makes augmentation follow DataLoader worker seeding (reproducible).
            rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))

            def draw_extra_sample():
                extra, extra_boxes, extra_index, extra_corrupt = self._load_readable(int(rng.integers(len(self))))
                corrupt.update(extra_corrupt)
                if extra.damage:
                    damaged[extra_index] = extra.damage
                return extra.image, extra_boxes, self.classes[extra_index]

            image, boxes, classes = self.augmentation(image, boxes, classes, rng, draw_extra_sample)
        else:
            image, boxes, info = letterbox(image, self.img_size, boxes)
            if decoded.factor > 1:  # map predictions back to the STORED pixels the annotations use
                info = LetterboxInfo(info.scale_x / decoded.factor, info.scale_y / decoded.factor, info.pad_x,
                                     info.pad_y, decoded.width, decoded.height)
        sample = {
            "image": torch.from_numpy(np.ascontiguousarray(image)),
            "boxes": torch.from_numpy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "classes": torch.from_numpy(np.asarray(classes, dtype=np.int64).reshape(-1)),
            "index": used_index,
            "letterbox": info,
            "corrupt": corrupt,
            "damaged": damaged,
        }
        if self.target_config is not None:
            sample["targets"] = encode_targets(boxes, classes, image.shape[:2], self.target_config)
        return sample


def collate_detection(samples: list[dict]) -> dict:
    """Batch samples: ``images`` uint8 [B,3,H,W] (channels_last strides), per-image lists, stacked targets."""
    batch = {
        # Stacking HWC images and permuting gives a channels_last tensor without a copy.
        "images": torch.stack([s["image"] for s in samples]).permute(0, 3, 1, 2),
        "boxes": [s["boxes"] for s in samples],
        "classes": [s["classes"] for s in samples],
        "indices": [s["index"] for s in samples],
        "letterbox": [s["letterbox"] for s in samples],
        "corrupt": {i: reason for s in samples for i, reason in s["corrupt"].items()},
        "damaged": {i: reason for s in samples for i, reason in s["damaged"].items()},
    }
    if "targets" in samples[0]:
        batch["targets"] = {
            key: torch.from_numpy(np.stack([s["targets"][key] for s in samples])) for key in samples[0]["targets"]
        }
    return batch


def build_dataloader(
    dataset: DetectionDataset | SemanticDataset,
    batch_size: int,
    *,
    shuffle: bool,
    num_workers: int = 0,
    drop_last: bool = False,
    seed: int = 0,
    distributed: bool | None = None,
    worker_nice: int = 0,
    prefetch_factor: int = 4,
    full_batches: bool = False,
    collate_fn: Callable[[list[dict]], dict] = collate_detection,
) -> DataLoader:
    """DataLoader with :func:`collate_detection` (or ``collate_fn``, e.g. :func:`~.semantic_data.collate_semantic`
    for a :class:`~.semantic_data.SemanticDataset`); uses a ``DistributedSampler`` when a process group is up.

    ``full_batches`` (training): each epoch shows every image at least once in ``ceil(N / batch_size)``
    batches that are all full: a shuffled sampler draws that many batches' worth of indices from back-to-back
    permutations, so no image is left out (as ``drop_last`` would) and no step sees a short batch. Under DDP
    the ``DistributedSampler`` pads its shards by repeating images, and the last batch of a shard may be short.

    ``distributed=None`` auto-detects an initialised ``torch.distributed``
    process group. Workers are persistent (keeps per-worker image caches).
    ``worker_nice`` > 0 lowers the workers' CPU priority: on machines with few
    cores the training threads then keep their cores and the workers fill the gaps.
    ``prefetch_factor`` batches are queued per worker (measured with 1 worker on 2 busy cores: the data
    wait was the same with 2 and 4; the benchmark figures in experiments/README.md were taken with 4).
    """
    if distributed is None:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    generator = torch.Generator().manual_seed(seed)
    if full_batches:
        drop_last = False  # the sampler below draws whole batches; a DistributedSampler pads instead of dropping
    sampler: Any = None
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
    elif full_batches:
        draws = math.ceil(len(dataset) / batch_size) * batch_size
        sampler = RandomSampler(dataset, num_samples=draws, generator=generator)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        generator=generator,
        persistent_workers=num_workers > 0,
        prefetch_factor=prefetch_factor if num_workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=functools.partial(_lower_worker_priority, worker_nice) if worker_nice > 0 else None,
    )


def _lower_worker_priority(increment: int, _worker_id: int) -> None:
    os.nice(increment)
