"""Semantic inference (object type 3, issue 27) on the candidates the core decodes its own way: a JPEG whose EXIF
says rotate 90 (never applied: the map is at the stored W x H, W != H), a truncated JPEG (decoded as far as its data
goes and counted as a repair), a 16-bit PNG and a JPEG reduced on decode. Each candidate's class masks decode at its
STORED H x W and, the model having no background channel, partition its pixels: no pixel in two classes, none in
none."""

import os

import numpy as np
import pytest

pytest.importorskip("ultralytics", reason="the ultralytics plugin's tests run in .venv-ultralytics (see conftest.py)")
pytest.importorskip("ymir_runner_ultralytics", reason="ymir-runner-ultralytics is not installed")

from helpers import FAST, registry  # noqa: E402
from test_ultralytics_instances import add_odd_candidates  # noqa: E402
from test_ultralytics_semantic import two_square_tree  # noqa: E402

from ymir_runner.protocol.masks import decode_rle  # noqa: E402
from ymir_runner.testing import TaskTree  # noqa: E402

#: The generated candidates beside the odd ones: stored 150 x 100.
PLAIN = (150, 100)


#: 15 epochs of 12 two-square images (6 for training) at 64 px, batches of 2: about 11 s on 2 busy CPUs. The
#: model's two logits then differ by about -0.108 to -0.083, by the cell's place on the letterboxed grid and not yet by
#: content, so class 0 wins everywhere; see :func:`split_the_classes`.
TRAINING = {**FAST, "epochs": 15, "save_period": 15, "batch_size_per_gpu": 2, "mosaic": 0.0, "export_onnx": False,
            "unlabelled_pixels": "ignore"}


def split_the_classes(checkpoint_path, images):
    """Shift the class-1 bias of the checkpoint's classifier by the midpoint of the class-1 minus class-0 logit over
    the grid cells of ``images`` (as inference letterboxes them), so that both classes win somewhere: a map of one
    class everywhere would pass the no-overlap check whatever the mapping to stored pixels. The rest of the network
    is untouched; returns the shift."""
    import torch
    from ymir_runner_ultralytics import semantic, weights

    from ymir_runner.protocol.images import decode_image

    network, _ = weights.load_checkpoint(checkpoint_path, "model_params_path", semantic.TASK)
    predictor = semantic.SemanticPredictor(network.fuse(verbose=False), torch.device("cpu"), 64, 2, False)
    differences = np.concatenate([np.ravel(np.diff(predictor.logits([predictor.preprocess(decode_image(image, 64))])[0],
                                                   axis=0)) for image in images])
    shift = float(differences.min() + differences.max()) / 2
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    for key in ("model", "ema"):
        if checkpoint.get(key) is not None:
            bias = checkpoint[key].model[-1].classifier[1].bias
            with torch.no_grad():
                bias[1] -= shift
    torch.save(checkpoint, checkpoint_path)
    return shift


@pytest.fixture(scope="module")
def sem_inferred(tmp_path_factory):
    """A two-class yolo26n-sem from yaml trained briefly at 64 px with unlabelled pixels ignored (one channel per
    class, no background: every pixel of a map gets a class), its classes split (:func:`split_the_classes`), then an
    inference task at 64 px on 2 generated candidates and the odd ones; returns the inference's outcome and each
    candidate's stored (width, height) by file name and the task tree."""
    root = tmp_path_factory.mktemp("sem-candidates")
    training = two_square_tree(str(root / "train"), config=TRAINING)
    outcome = training.run(registry())
    assert outcome.exit_code == 0, outcome.stderr[-4000:]
    models = os.path.join(outcome.out_dir, "models")
    tree = TaskTree(str(root / "infer"), kinds=("infer",), images=2, size=PLAIN, object_type=3, models_from=models,
                    config={"img_size": 64})
    sizes = {os.path.basename(image): PLAIN for image in tree.images}
    sizes.update(add_odd_candidates(tree))
    split_the_classes(tree.local("/in/models/epoch_15/last.pt"), [tree.local(image) for image in tree.images])
    return tree.run(registry()), sizes, tree


def test_the_odd_candidates_are_what_they_claim_to_be(sem_inferred):
    """The stored sizes the test checks against are not the sizes a viewer shows (EXIF) or the decode's."""
    from PIL import Image

    from ymir_runner.protocol.images import decode_image

    outcome, sizes, _ = sem_inferred
    assets = os.path.join(os.path.dirname(outcome.out_dir), "in", "assets", "od")
    with Image.open(os.path.join(assets, "rotated.jpg")) as image:
        assert image.getexif()[0x0112] == 6 and sizes["rotated.jpg"] == (200, 120)  # displayed 120 x 200
    with Image.open(os.path.join(assets, "deep.png")) as image:
        assert image.mode.startswith("I")  # 16-bit
    assert decode_image(os.path.join(assets, "big.jpg"), 64).factor > 1  # reduced on decode at img_size 64
    assert decode_image(os.path.join(assets, "cut.jpg")).damage == "truncated image"


def test_each_candidate_class_masks_partition_its_stored_pixels(sem_inferred):
    outcome, sizes, _ = sem_inferred
    assert outcome.exit_code == 0, outcome.stderr[-4000:]
    report = outcome.verify()
    assert report.ok, report.to_text()
    document = outcome.infer_result()
    listed = {image["file_name"]: (image["width"], image["height"]) for image in document["images"]}
    assert listed == sizes  # every candidate, at its STORED size
    names = {image["id"]: image["file_name"] for image in document["images"]}
    coverage = {name: np.zeros((height, width), np.uint8) for name, (width, height) in sizes.items()}
    classes: dict[str, list[int]] = {name: [] for name in sizes}
    for annotation in document["annotations"]:
        name = names[annotation["image_id"]]
        width, height = sizes[name]
        mask = decode_rle(annotation["segmentation"])
        assert mask.shape == (height, width), (name, mask.shape)
        assert mask.any(), name  # a class is written only where it is predicted
        coverage[name] += mask
        classes[name].append(annotation["category_id"])
    for name, covered in coverage.items():
        assert sorted(classes[name]) == [0, 1], name  # one annotation per class, both present (split_the_classes)
        assert covered.max() == 1, f"{name}: class masks overlap"
        assert covered.min() == 1, f"{name}: pixels without a class (the model has no background channel)"
    print("classes per candidate:", classes)


def test_the_truncated_candidate_is_counted_as_a_repair(sem_inferred):
    outcome, _, _ = sem_inferred
    assert "infer: repaired 1 truncated image" in outcome.stderr
    assert "repaired (truncated image) at" in outcome.stderr and "cut.jpg" in outcome.stderr


def test_the_written_maps_are_the_model_maps_of_the_decoded_candidates(sem_inferred):
    """Each candidate's written class masks are, pixel for pixel, the plugin's label map of the image as the core
    decodes it (stored pixels, EXIF not applied, reduced by the decode's factor) mapped to the stored size: a rotated
    or transposed map, or one of the unreduced image scaled differently, would differ along the class boundaries."""
    import torch
    from ymir_runner_ultralytics import semantic, weights

    from ymir_runner.protocol.images import decode_image

    outcome, sizes, tree = sem_inferred
    network, _ = weights.load_checkpoint(tree.local("/in/models/epoch_15/last.pt"), "model_params_path",
                                         semantic.TASK)
    predictor = semantic.SemanticPredictor(network.fuse(verbose=False), torch.device("cpu"), 64, 2, False)
    document = outcome.infer_result()
    names = {image["id"]: image["file_name"] for image in document["images"]}
    written = {name: np.full((height, width), 255, np.uint8) for name, (width, height) in sizes.items()}
    for annotation in document["annotations"]:
        written[names[annotation["image_id"]]][decode_rle(annotation["segmentation"])] = annotation["category_id"]
    for image in tree.images:
        name = os.path.basename(image)
        decoded = decode_image(tree.local(image), 64)
        (logits,) = predictor.predict([predictor.preprocess(decoded)])
        expected = logits.label_map(*sizes[name], decoded.factor).labels
        assert np.array_equal(written[name], expected), (name, int((written[name] != expected).sum()))
