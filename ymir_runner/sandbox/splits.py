"""train-index.tsv / val-index.tsv: the train/val split SOURCE comes with, kept, or a seeded random split.

``--split keep`` (the default): an image SOURCE puts in train goes to train-index.tsv, one it puts in val to
val-index.tsv; the images in neither part (a ``test`` folder, images no list names) are shared out at random
with ``--val-ratio`` and ``--seed``, as every image is without a split. ``--split random``, or a SOURCE without
a split: every image is split at random, as before. ``--val-ratio`` given with a split detected and no
``--split`` is refused (ConfigError): a ratio given alone asks for a random split, which would silently not be
made; ``--split keep --val-ratio R`` shares out the images in neither part with R.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Sequence

from ..errors import ConfigError
from .assets import Asset
from .options import SandboxOptions
from .sources import SourceSplit

log = logging.getLogger("ymir_runner.sandbox")


@dataclasses.dataclass(frozen=True)
class TrainVal:
    """The assets of train-index.tsv and val-index.tsv (each sorted by sha1), and how they were chosen, as the
    summary states it."""

    train: list[Asset]
    val: list[Asset]
    description: str


def _shuffled(assets: Sequence[Asset], seed: int) -> list[Asset]:
    ordered = sorted(assets, key=_sha1)
    random.Random(seed).shuffle(ordered)
    return ordered


def _sha1(asset: Asset) -> str:
    return asset.sha1


def split(assets: Sequence[Asset], val_ratio: float, seed: int) -> tuple[list[Asset], list[Asset]]:
    """A seeded shuffle of the assets sorted by sha1: the split depends on the content, not on file names.

    At least one image on each side when there are two or more; a single image serves both sides.
    """
    ordered = _shuffled(assets, seed)
    if len(ordered) < 2:
        return list(ordered), list(ordered)
    val_count = min(max(round(len(ordered) * val_ratio), 1 if val_ratio > 0 else 0), len(ordered) - 1)
    return sorted(ordered[val_count:], key=_sha1), sorted(ordered[:val_count], key=_sha1)


def check_split_request(source_split: SourceSplit | None, options: SandboxOptions) -> None:
    """Refuse ``--val-ratio`` without ``--split`` when SOURCE has its own split (ConfigError)."""
    if source_split is not None and options.split is None and options.val_ratio is not None:
        raise ConfigError(
            f"--val-ratio {options.val_ratio}: SOURCE comes with its own train/val split ({source_split.origin}), "
            f"kept by default; pass --split random to re-split every image at random, or --split keep to keep it "
            f"(--val-ratio then shares out only the images in neither part)")


def split_assets(assets: Sequence[Asset], source_split: SourceSplit | None, options: SandboxOptions) -> TrainVal:
    """Train and val assets by ``options.split`` (module docstring). An asset takes the part of the image it
    was stored from (the first of duplicates), but val when any of its identical source images is in val (warned:
    one content in both parts would otherwise be trained on and evaluated on); when that leaves a part empty, the
    split is made at random (warned)."""
    at_random = f"--val-ratio {options.ratio}, --seed {options.seed}"
    if source_split is None or options.split == "random":
        train, val = split(assets, options.ratio, options.seed)
        if source_split is None:
            return TrainVal(train, val, f"at random ({at_random})")
        return TrainVal(train, val, f"at random (--split random, {at_random}); SOURCE's own split "
                                    f"({source_split.origin}) not used")
    parts: dict[str | None, list[Asset]] = {"train": [], "val": [], None: []}
    across = []
    for asset in assets:
        subsets = {source_split.subsets.get(path) for path in asset.sources}
        if {"train", "val"} <= subsets:  # one content in both parts: evaluated on, never trained on
            across.append(asset)
        parts["val" if "val" in subsets else source_split.subsets.get(asset.source)].append(asset)
    for asset in across[:10]:
        log.warning("identical images in both parts of SOURCE's split (%s): stored once, in val (evaluated on, "
                    "never trained on)", ", ".join(asset.sources))
    empty = [name for name in ("train", "val") if not parts[name]]
    if empty:
        log.warning("SOURCE's own split (%s) leaves %s empty once duplicate images are stored once: "
                    "split at random instead", source_split.origin, empty[0])
        train, val = split(assets, options.ratio, options.seed)
        return TrainVal(train, val, f"at random ({at_random}): SOURCE's own split ({source_split.origin}) "
                                    f"leaves {empty[0]} empty")
    description = f"kept from SOURCE ({source_split.origin}): train {len(parts['train'])}, val {len(parts['val'])}"
    if parts[None]:
        rest = _shuffled(parts[None], options.seed)
        count = round(len(rest) * options.ratio)
        parts["train"] += rest[count:]
        parts["val"] += rest[:count]
        description += (f"; {len(rest)} in neither part shared at random ({at_random}): "
                        f"train {len(rest) - count}, val {count}")
    return TrainVal(sorted(parts["train"], key=_sha1), sorted(parts["val"], key=_sha1), description)
