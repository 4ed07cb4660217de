"""The dataset report: what a task's training and validation sets (or candidates) hold and what is wrong with them,
as the readers a task uses saw them.

The report is built from the same readers a training task uses (``DatasetReader``: image headers by the rules
of :mod:`.protocol.images`, boxes clipped to their image, exact duplicates removed), so it can never disagree
with what trains. The dispatcher logs it at the start of every training task and writes it to tensorboard as
text; ``ymir-runner inspect`` (:mod:`.inspection`) prints it for any task without running one.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Iterable, Sequence

from .protocol import masks
from .protocol.dataset import DatasetReader, FileNames, Item

#: A box whose short side is under this fraction of its image's long side: after letterboxing to 640 px it
#: is under 6.4 px, about where detectors with a stride-4 (or coarser) output stop finding objects.
TINY_BOX_FRACTION = 0.01
#: A box covering more than this fraction of its image's area.
HUGE_BOX_FRACTION = 0.9
#: Paths named per warning (the count is always complete).
EXAMPLES = 3
#: Images whose masks are measured (mask pixels per class, unlabelled share), evenly spread over a larger split:
#: COCO's RLE union costs about half a millisecond an image, so a 100,000-object set would wait seconds.
MASK_PIXEL_IMAGES = 1000


@dataclasses.dataclass
class MaskFacts:
    """A segmentation split's masks: objects and mask pixels (the sum of the objects' areas) per class id, crowd
    objects, and the pixels of its images in all and in no mask (unlabelled: ignored by semantic scoring), the
    pixels on ``measured`` images."""

    objects: list[int]
    mask_pixels: list[int]
    crowd: int
    pixels: int
    unlabelled: int
    #: The images ``mask_pixels``, ``pixels`` and ``unlabelled`` were measured on (all, or an even sample).
    measured: int


@dataclasses.dataclass
class SplitReport:
    """One index file as the readers saw it: its usable items and what was skipped or repaired in it."""

    name: str
    index_file: str
    lines: int
    items: list[Item]
    skipped: collections.Counter[str]
    repaired: collections.Counter[str]
    _mask_facts: MaskFacts | None = dataclasses.field(default=None, repr=False)

    @property
    def annotated(self) -> bool:
        return bool(self.items) and bool(self.items[0].annotation)

    def boxes_per_class(self, num_classes: int) -> list[int]:
        counts = [0] * num_classes
        for item in self.items:
            for box in item.boxes:
                counts[box.class_id] += 1
        return counts

    @property
    def with_masks(self) -> bool:
        """Read by a segmentation task: its objects are masks (:attr:`Item.segments`)."""
        return any(item.segments for item in self.items)

    def mask_facts(self, num_classes: int) -> MaskFacts:
        """Objects per class and crowd objects of every image; mask pixels per class and unlabelled pixels of at
        most :data:`MASK_PIXEL_IMAGES` images evenly spread (COCO's RLE arithmetic, no full-size array made).
        Computed once."""
        if self._mask_facts is None:
            step = max(1, -(-len(self.items) // MASK_PIXEL_IMAGES))
            facts = MaskFacts([0] * num_classes, [0] * num_classes, 0, 0, 0, len(self.items[::step]))
            for item in self.items:
                for segment in item.segments:
                    facts.objects[segment.class_id] += 1
                    facts.crowd += segment.iscrowd
            for item in self.items[::step]:
                areas, union = masks.mask_areas([segment.segmentation for segment in item.segments], item.height,
                                                item.width)
                for segment, area in zip(item.segments, areas):
                    facts.mask_pixels[segment.class_id] += area
                facts.pixels += item.width * item.height
                facts.unlabelled += item.width * item.height - union
            self._mask_facts = facts
        return self._mask_facts

    def densest(self) -> Item | None:
        return max(self.items, key=lambda item: len(item.boxes), default=None)

    def asset_ids(self) -> dict[str, str]:
        """Asset id (the file name without extension, as the platform names assets) -> image path."""
        return {os.path.splitext(os.path.basename(item.image))[0]: item.image for item in self.items}


def read_split(reader: DatasetReader) -> SplitReport:
    """Read ``reader`` (once: annotated readers keep their items) and note what it skipped and repaired."""
    skipped, repaired = collections.Counter(reader.skips.counts), collections.Counter(reader.skips.repairs)
    items = list(reader)
    return SplitReport(reader.name, reader.index_file, len(reader), items,
                       reader.skips.counts - skipped, reader.skips.repairs - repaired)


def _counts(counter: collections.Counter[str]) -> str:
    return ", ".join(f"{count} {reason}" for reason, count in sorted(counter.items()))


def _images(count: int) -> str:
    return "1 image is" if count == 1 else f"{count} images are"


def _examples(paths: Sequence[str]) -> str:
    shown = ", ".join(paths[:EXAMPLES])
    return shown + (f" and {len(paths) - EXAMPLES} more" if len(paths) > EXAMPLES else "")


@dataclasses.dataclass
class DatasetReport:
    """What a task's data holds; ``lines()`` are facts, ``warnings()`` the problems, each saying what to do."""

    class_names: tuple[str, ...]
    splits: list[SplitReport]
    #: A sandbox's map of where each asset came from: image paths are shown with the user's file names.
    names: FileNames | None = None

    def shown(self, path: str) -> str:
        """An image path, followed by the user's own file name when the sandbox's map knows it."""
        return self.names.annotate(path) if self.names is not None else path

    def split(self, name: str) -> SplitReport | None:
        return next((split for split in self.splits if split.name == name), None)

    def lines(self) -> list[str]:
        lines = []
        for split in self.splits:
            line = f"{split.name}: {len(split.items)} usable images of {split.lines} index lines"
            if split.skipped:
                line += f"; skipped {_counts(split.skipped)}"
            if split.repaired:
                line += f"; repaired {_counts(split.repaired)}"
            lines.append(line)
        sizes = [(item.width, item.height) for split in self.splits for item in split.items]
        if sizes:
            smallest, largest = min(sizes, key=lambda s: s[0] * s[1]), max(sizes, key=lambda s: s[0] * s[1])
            lines.append(f"image sizes: {smallest[0]}x{smallest[1]} to {largest[0]}x{largest[1]} px")
        annotated = [split for split in self.splits if split.annotated]
        if annotated:
            per_split = [split.boxes_per_class(len(self.class_names)) for split in annotated]
            names = " / ".join(split.name for split in annotated)
            per_class = ", ".join(f"{name} {' / '.join(str(counts[c]) for counts in per_split)}"
                                  for c, name in enumerate(self.class_names))
            lines.append(f"boxes per class ({names}): {per_class}")
            lines += self._mask_lines([split for split in annotated if split.with_masks])
            for split in annotated:
                densest = split.densest()
                empty = sum(1 for item in split.items if not item.boxes)
                if densest is not None:
                    lines.append(f"{split.name} boxes per image: at most {len(densest.boxes)} "
                                 f"({self.shown(densest.image)}); "
                                 f"{empty} images without boxes")
        return lines

    def _mask_lines(self, splits: Sequence[SplitReport]) -> list[str]:
        """Segmentation facts: masks and mask pixels per class, crowd objects, the unlabelled pixel share."""
        if not splits:
            return []
        facts = [split.mask_facts(len(self.class_names)) for split in splits]
        names = " / ".join(split.name for split in splits)
        sampled = [f"{split.name} on {fact.measured} of {len(split.items)} images" for split, fact in zip(splits, facts)
                   if fact.measured < len(split.items)]
        measured = f"; {', '.join(sampled)}" if sampled else ""
        lines = [f"masks per class ({names}): " + ", ".join(
                     f"{name} {' / '.join(str(fact.objects[c]) for fact in facts)}"
                     for c, name in enumerate(self.class_names)),
                 f"mask pixels per class ({names}; sum of the objects' areas{measured}): " + ", ".join(
                     f"{name} {' / '.join(str(fact.mask_pixels[c]) for fact in facts)}"
                     for c, name in enumerate(self.class_names))]
        for split, fact in zip(splits, facts):
            share = fact.unlabelled / fact.pixels if fact.pixels else 0.0
            on = f" of {fact.measured} images" if fact.measured < len(split.items) else ""
            lines.append(f"{split.name} masks: {fact.crowd} crowd objects; {share:.1%} of the pixels{on} in no mask "
                         f"(unlabelled: ignored by semantic scoring)")
        return lines

    def warnings(self) -> list[str]:
        warnings = []
        training, validation = self.split("training"), self.split("validation")
        if training is not None and training.annotated:
            missing = [name for name, count in zip(self.class_names, training.boxes_per_class(len(self.class_names)))
                       if count == 0]
            if missing:
                warnings.append(f"classes with no training box: {', '.join(missing)}: the model cannot learn them; "
                                "add annotated images or remove them from class_names")
        if training is not None and (validation is None or not validation.lines):
            warnings.append("the validation set is empty: a plugin has no held-out data to measure stages on (the "
                            "built-in detector then measures them on the TRAINING set: optimistic); give the task "
                            "validation images (ymir-runner sandbox: --val-ratio above 0)")
        elif validation is not None and validation.lines and not validation.items:
            warnings.append(f"the validation set has no usable image ({validation.lines} index lines, all skipped): "
                            "no stage can be measured on held-out data; fix the images named above")
        elif validation is not None and validation.lines and not any(item.boxes for item in validation.items):
            warnings.append("the validation set has no box at all: every stage's mAP, mAR and tp/fp/fn will be 0 "
                            "and mean nothing; choose a validation dataset with annotations")
        elif validation is not None and validation.items and training is not None:
            absent = [name for name, count in zip(self.class_names, validation.boxes_per_class(len(self.class_names)))
                      if count == 0]
            if absent and validation.with_masks:  # the platform's seg scores average over every evaluated class
                warnings.append(f"classes with no validation object: {', '.join(absent)}: instance segmentation counts "
                                "their maskAP as 0; semantic segmentation leaves them out of mIoU unless a stage "
                                "predicts them (then their IoU is 0)")
            elif absent:
                warnings.append(f"classes with no validation box: {', '.join(absent)}: their AP is undefined and "
                                "left out of mAP")
        if training is not None and validation is not None:
            validation_ids = validation.asset_ids()
            shared = sorted(self.shown(path) for asset, path in training.asset_ids().items()
                            if asset in validation_ids)
            if shared:
                warnings.append(f"{_images(len(shared))} in both the training and the validation set (same asset: "
                                f"{_examples(shared)}): validation metrics are optimistic; split the data without "
                                "overlap")
        for split in self.splits:
            warnings += self._box_warnings(split)
        return warnings

    def _box_warnings(self, split: SplitReport) -> list[str]:
        tiny: list[str] = []
        huge: list[str] = []
        count_tiny = count_huge = 0
        for item in split.items:
            long_side, area = max(item.width, item.height), item.width * item.height
            for box in item.boxes:
                if min(box.width, box.height) < TINY_BOX_FRACTION * long_side:
                    count_tiny += 1
                    tiny.append(self.shown(item.image))
                elif box.width * box.height > HUGE_BOX_FRACTION * area:
                    count_huge += 1
                    huge.append(self.shown(item.image))
        warnings = []
        if count_tiny:
            warnings.append(f"{split.name}: {count_tiny} tiny boxes (short side under {TINY_BOX_FRACTION:.0%} of "
                            f"the image's long side, e.g. in {_examples(sorted(set(tiny)))}): they shrink below a "
                            "few pixels at the network's input size; raise img_size or crop the images into tiles")
        if count_huge:
            warnings.append(f"{split.name}: {count_huge} boxes cover over {HUGE_BOX_FRACTION:.0%} of their image "
                            f"(e.g. in {_examples(sorted(set(huge)))}): check they are not whole-image labels")
        for reason, advice in (("box clipped to image", "check the annotation tool's image size"),
                               ("box outside image", "these objects are not in the image: fix or drop the boxes"),
                               ("duplicate box", "an object annotated twice would count as a miss forever"),
                               ("duplicate image", "an image listed twice would count twice"),
                               ("truncated image", "re-upload complete copies of these images"),
                               ("corrupt image data", "re-upload intact copies of these images"),
                               (masks.NO_MASK, "a segmentation task learns from masks: annotate these objects' "
                                               "masks, or train a detection task"),
                               (masks.SIZE_DIFFERS, "the mask was made for another image size: the platform would "
                                                    "crash or mis-score on it; re-export the annotations"),
                               (masks.BAD_POLYGON, "fix the polygons (at least 3 points, x y pairs)"),
                               (masks.MALFORMED_MASK, "the segmentation is neither COCO RLE nor polygons")):
            count = split.repaired[reason] + split.skipped[reason]
            damaged = sorted(self.shown(item.image) for item in split.items if item.damage == reason)
            if count:
                where = f"e.g. {_examples(damaged)}" if damaged else "the first ones are named in the warnings above"
                warnings.append(f"{split.name}: {count} {reason}: {advice} ({where})")
        return warnings

    def text(self) -> str:
        """The report as plain text (what ``ymir-runner inspect`` prints)."""
        body = [f"  {line}" for line in self.lines()]
        warnings = self.warnings()
        body += (["warnings:", *(f"  ! {warning}" for warning in warnings)] if warnings else ["no warnings"])
        return "\n".join(["dataset report:", *body])

    def markdown(self) -> str:
        """The report as markdown (tensorboard's text plugin)."""
        lines = [f"- {line}" for line in self.lines()]
        lines += [f"- **warning**: {warning}" for warning in self.warnings()]
        return "\n".join(lines)


def report_readers(readers: Iterable[DatasetReader], class_names: Sequence[str]) -> DatasetReport:
    readers = list(readers)
    names = next((reader.skips.names for reader in readers if reader.skips.names is not None), None)
    return DatasetReport(tuple(class_names), [read_split(reader) for reader in readers if reader.index_file], names)
