"""ymir_runner.inference.infer_seg_candidates, the segmentation twin of infer_candidates: the engine's per-image
result is asked for stored pixels with the decode factor, written by context.seg_infer_result, in candidate order,
unusable candidates listed without objects; what the writer leaves out is logged; wrong results are refused."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from test_seg_end_to_end import CLASSES, write_seg_tree

import ymir_runner
from ymir_runner import ExecutorSpec, InstanceMask, Param, TaskKind, inference
from ymir_runner.inference import LabelMap
from ymir_runner.protocol.masks import decode_rle

WIDTH, HEIGHT = 1000, 600  # the large candidate: reduced on decode by 4 for min_side 250


class LoopPlugin:
    """A segmentation executor whose inference runs ``body(context)``."""

    def __init__(self, body):
        self.body = body

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ExecutorSpec(name="segloop", tasks={TaskKind.INFER}, object_types={3, 4},
                             annotation_formats=("seg-coco",),
                             templates={TaskKind.INFER: (Param("conf_threshold", 0.0, "unused"),)})]

    @ymir_runner.hookimpl
    def ymir_runner_infer(self, context):
        self.body(context)


def _tree(tmp_path, object_type):
    tree = write_seg_tree(tmp_path, ["infer"], object_type)
    large = "/in/assets/ff/" + "f" * 40 + ".png"
    os.makedirs(os.path.dirname(tree.local(large)), exist_ok=True)
    Image.new("RGB", (WIDTH, HEIGHT), (90, 60, 30)).save(tree.local(large))
    missing = "/in/assets/ee/" + "e" * 40 + ".png"
    with open(tree.local("/in/candidate-index.tsv"), "a", encoding="utf-8") as stream:
        stream.write(f"{large}\n{missing}\n")
    return tree, large, missing


def _run(registry, tree, body):
    registry.register(LoopPlugin(body), "segloop")
    try:
        return tree.run(registry)
    finally:
        registry.unregister("segloop")


def _document(outcome):
    with open(os.path.join(outcome.out_dir, "infer-result.json"), encoding="utf-8") as stream:
        return json.load(stream)


@pytest.mark.parametrize("object_type", [3, 4])
def test_results_are_asked_for_stored_pixels_and_written_in_candidate_order(ymir_registry, tmp_path, object_type):
    tree, large, missing = _tree(tmp_path, object_type)
    asked = []

    def render_for(pixels):
        def render(width, height, factor):
            asked.append((pixels.shape[1], pixels.shape[0], width, height, factor))
            if object_type == 3:  # the left half class 1, the right half unlabelled
                labels = np.full((height, width), 255, np.uint8)
                labels[:, :width // 2] = 1
                return LabelMap(labels, np.full((height, width), 0.8, np.float32))
            mask = np.ones((4, 6), bool)  # a box-sized mask at stored (3, 2)
            return iter([InstanceMask(mask, 0.7, 2, origin=(3, 2)), InstanceMask(np.zeros((2, 2), bool), 0.9, 0,
                                                                                  origin=(0, 0))])
        return render

    batches = []

    def body(context):
        def predict(batch):
            batches.append(len(batch))
            return [render_for(pixels) for pixels in batch]

        inference.infer_seg_candidates(context, predict, batch_size=2, min_side=250, workers=1)

    outcome = _run(ymir_registry, tree, body)
    assert outcome.exit_code == 0, outcome.stderr
    # the large candidate was decoded 4x smaller and its result asked for at the stored size with factor 4
    assert (250, 150, WIDTH, HEIGHT, 4) in asked
    assert all(factor == 1 for *_, factor in asked if _[2] != WIDTH)
    document = _document(outcome)
    names = [os.path.basename(line.strip()) for line in open(tree.local("/in/candidate-index.tsv"))]
    assert [image["file_name"] for image in document["images"]] == names  # every candidate, in index order
    by_name = {image["file_name"]: image["id"] for image in document["images"]}
    assert not [a for a in document["annotations"] if a["image_id"] == by_name[os.path.basename(missing)]]
    found = [a for a in document["annotations"] if a["image_id"] == by_name[os.path.basename(large)]]
    if object_type == 3:
        assert [(a["category_id"], a["area"], round(a["confidence"], 3)) for a in found] == [
            (1, WIDTH // 2 * HEIGHT, 0.8)]
        assert decode_rle(found[0]["segmentation"]).shape == (HEIGHT, WIDTH)
    else:
        assert [(a["category_id"], a["bbox"], a["area"]) for a in found] == [(2, [3, 2, 6, 4], 24)]
        assert f"{len(names) - 1} left out (empty mask)" in outcome.stderr  # one per usable candidate
    assert "missing image" in outcome.stderr
    what = "class regions" if object_type == 3 else "instances"
    assert f"inference: {len(found) * (len(names) - 1)} {what} on {len(names)} images (1 unusable)" in outcome.stderr
    assert sum(batches) == len(names) - 1  # the missing candidate is never predicted


@pytest.mark.parametrize("object_type, wrong, message", [
    (3, lambda width, height, factor: np.zeros((height, width), np.uint8), "must be a LabelMap"),
    (4, lambda width, height, factor: LabelMap(np.zeros((height, width), np.uint8)), "not a LabelMap"),
    (3, lambda width, height, factor: LabelMap(np.zeros((height // 2, width), np.uint8)), "give the map at the "
                                                                                         "stored size"),
])
def test_a_result_of_the_wrong_kind_or_size_fails_the_task_saying_why(ymir_registry, tmp_path, object_type, wrong,
                                                                      message):
    tree, _, _ = _tree(tmp_path, object_type)

    def body(context):
        inference.infer_seg_candidates(context, lambda batch: [wrong for _ in batch], workers=0)

    outcome = _run(ymir_registry, tree, body)
    assert outcome.exit_code != 0
    assert message in outcome.stderr


def test_predict_must_answer_every_image(ymir_registry, tmp_path):
    tree, _, _ = _tree(tmp_path, 4)

    def body(context):
        inference.infer_seg_candidates(context, lambda batch: [], workers=0)

    outcome = _run(ymir_registry, tree, body)
    assert outcome.exit_code != 0
    assert "predict returned 0 predictions for" in outcome.stderr


def test_classes_are_those_of_the_task(ymir_registry, tmp_path):
    tree, _, _ = _tree(tmp_path, 3)

    def body(context):
        assert list(context.class_names) == CLASSES
        inference.infer_seg_candidates(
            context, lambda batch: [lambda w, h, f: LabelMap(np.full((h, w), 2, np.uint8)) for _ in batch])

    outcome = _run(ymir_registry, tree, body)
    assert outcome.exit_code == 0, outcome.stderr
    assert {a["category_id"] for a in _document(outcome)["annotations"]} == {2}
