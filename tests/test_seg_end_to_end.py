"""Issue 26 "done when": a torch-free segmentation plugin (tests/seg_toy_plugin.py, which "predicts" perturbed ground
truth) trains (``ymir-runner run`` in a process of its own, the plugin installed as a distribution), mines and infers
(the same run in this process) for object types 3 and 4 on seg-coco work trees; ``verify`` passes on every output;
each stage's metrics equal ``ymir-runner evaluate`` on the plugin's own inference output for the validation set
with that stage's model; the model's object type goes with it, and a model of another object type is refused
(300005) before any image is read. Also the segmentation path of :class:`ymir_runner.stages.StageEvaluator`."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import types

import numpy as np
import pytest
import seg_toy_plugin
import yaml
from easydict import EasyDict
from PIL import Image

from ymir_runner import MODEL_INFO_FILE, ConfigError, ReturnCode
from ymir_runner.cli import main
from ymir_runner.protocol.config import SEGMENTATION
from ymir_runner.protocol.masks import encode_mask, rle_area, rle_bbox
from ymir_runner.protocol.results import EncodedMask, InstanceMask
from ymir_runner.seg_evaluation import SegObject, coco_rle
from ymir_runner.stages import StageEvaluator
from ymir_runner.testing import TaskTree, make_fake_distribution

CLASSES = ["cat", "dog", "person"]
COCO = "/in/annotations/coco-annotations.json"
SIZE = (64, 48)  # width, height
IMAGES = 8


def _ellipse(height, width, cx, cy, rx, ry):
    rows, columns = np.ogrid[:height, :width]
    return ((columns - cx) / rx) ** 2 + ((rows - cy) / ry) ** 2 <= 1.0


def generated_objects(index, object_type):
    """Image ``index``'s objects: ``(class_id, segmentation, iscrowd)``, deterministic. Ellipses as RLE strings, one
    float polygon on odd images (the platform truncates its points), one crowd object on image 5 (instance)."""
    width, height = SIZE
    rng = np.random.default_rng(1000 + index)
    objects = []
    for _ in range(2 + index % 2):
        cx, cy = rng.uniform(10, width - 10), rng.uniform(10, height - 10)
        mask = _ellipse(height, width, cx, cy, rng.uniform(4, 12), rng.uniform(4, 10))
        objects.append((int(rng.integers(len(CLASSES))), encode_mask(mask), 0))
    if index % 2:
        x, y = rng.uniform(2, width - 20), rng.uniform(2, height - 16)
        polygon = [x, y, x + 15.6, y + 1.3, x + 12.2, y + 13.7, x + 0.4, y + 9.9]
        objects.append((int(rng.integers(len(CLASSES))), [[round(value, 2) for value in polygon]], 0))
    if index == 5 and object_type == 4:
        objects[0] = (objects[0][0], objects[0][1], 1)
    return objects


def write_seg_tree(root, kinds, object_type, *, models_from=None, stages=None):
    """A work tree exported as the platform exports seg-coco:raw: IMAGES PNGs painted with their objects
    (seg_toy_plugin.paint), one COCO file named on every index line; the first half trains, the second half is the
    validation set and the candidates."""
    width, height = SIZE
    tree = TaskTree(str(root), kinds=kinds, class_names=CLASSES, images=0, export_format="seg-coco:raw",
                    config={"object_type": object_type}, models_from=models_from, stages=stages)
    document = {"images": [], "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES)], "annotations": []}
    for index in range(IMAGES):
        name = f"{index + 1:040x}"
        image = f"/in/assets/{name[-2:]}/{name}.png"
        painted = []
        document["images"].append({"id": index + 1, "file_name": f"{name}.png", "width": width, "height": height})
        for class_id, segmentation, iscrowd in generated_objects(index, object_type):
            rle = coco_rle(segmentation, height, width)  # what the platform decodes
            painted.append((class_id, _decoded(rle)))
            document["annotations"].append({
                "id": len(document["annotations"]) + 1, "image_id": index + 1, "category_id": class_id,
                "iscrowd": iscrowd, "bbox": rle_bbox(rle), "area": rle_area(rle), "confidence": -1,
                "segmentation": segmentation})
        os.makedirs(os.path.dirname(tree.local(image)), exist_ok=True)
        Image.fromarray(seg_toy_plugin.paint(height, width, painted)).save(tree.local(image))
        tree.images.append(image)
    os.makedirs(os.path.dirname(tree.local(COCO)), exist_ok=True)
    with open(tree.local(COCO), "w", encoding="utf-8") as stream:
        json.dump(document, stream)
    half = IMAGES // 2
    for index_file, lines in (("/in/train-index.tsv", [f"{i}\t{COCO}\n" for i in tree.images[:half]]),
                              ("/in/val-index.tsv", [f"{i}\t{COCO}\n" for i in tree.images[half:]]),
                              ("/in/candidate-index.tsv", [f"{i}\n" for i in tree.images[half:]])):
        with open(tree.local(index_file), "w", encoding="utf-8") as stream:
            stream.write("".join(lines))
    return tree


def _decoded(rle):
    from ymir_runner.protocol.masks import decode_rle

    return np.ascontiguousarray(decode_rle(rle))


@pytest.fixture
def seg_registry(ymir_registry):
    ymir_registry.register(seg_toy_plugin, seg_toy_plugin.NAME)
    seg_toy_plugin.CALLS.clear()
    return ymir_registry


def evaluate(tree, predictions, object_type, iou_thr, conf_thr, capsys):
    """``ymir-runner evaluate --json`` of ``predictions`` against the tree's validation set (an index of it)."""
    index = os.path.join(tree.root, "val-index-local.tsv")
    with open(index, "w", encoding="utf-8") as stream:
        stream.write("".join(f"{tree.local(image)}\t{tree.local(COCO)}\n" for image in tree.images[IMAGES // 2:]))
    capsys.readouterr()
    argv = ["evaluate", "--object-type", str(object_type), "--ground-truth", index, "--predictions", predictions,
            "--class-names", ",".join(CLASSES), "--json"]
    if object_type == 4:
        argv += ["--iou-thr", iou_thr, "--conf-thr", str(conf_thr)]
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def run_command(tree, tmp_path):
    """``ymir-runner run --env ... --root ...`` in a process of its own, the toy plugin installed as a distribution
    (its ``ymir_runner`` entry point found as pip's would be)."""
    site = str(tmp_path / "site")
    make_fake_distribution(site, dist_name="ymir-segtoy", module="seg_toy_plugin_copy", entry_point="segtoy",
                           source=open(seg_toy_plugin.__file__, encoding="utf-8").read())
    path = os.pathsep.join(part for part in (site, os.environ.get("PYTHONPATH", "")) if part)
    done = subprocess.run(tree.command(), capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=path))
    return tree.outcome(done.returncode, done.stderr)


KEYS = {3: ["mIoU", "mAcc", "aAcc"], 4: ["maskAP", "boxAP", "maskAP50_95", "tp", "fp", "fn"]}


@pytest.mark.parametrize("object_type", SEGMENTATION)
def test_training_mining_and_inference_end_to_end(seg_registry, tmp_path, capsys, object_type):
    trained = run_command(write_seg_tree(tmp_path / "train", ["training"], object_type), tmp_path)
    assert trained.exit_code == 0, trained.stderr
    report = trained.verify()
    assert report.ok, report.to_text()
    document = trained.result_yaml()
    stages = document["model_stages"]
    assert list(stages) == ["epoch_1", "epoch_2", "epoch_3"]
    main_metric = "mIoU" if object_type == 3 else "maskAP"
    assert document["best_stage_name"] == max(stages, key=lambda name: (stages[name][main_metric], name))
    for stage in stages.values():
        assert all(0.0 <= stage[key] <= 1.0 for key in KEYS[object_type][:3])
    assert document["best_stage_name"] == "epoch_2"  # the exact model; epoch_3 shifts less than epoch_1
    assert stages["epoch_2"][main_metric] > stages["epoch_3"][main_metric] > stages["epoch_1"][main_metric]
    if object_type == 4:
        assert document["evaluate_config"] == {"iou_thr": 0.5, "conf_thr": 0.0}
        assert stages["epoch_3"]["fp"] >= stages["epoch_2"]["fp"] + 4  # epoch_3's false positive in every image
        assert "maskAP@0.5 " in trained.stderr and "tp/fp/fn" in trained.stderr
    else:
        assert "evaluate_config" not in document
        assert "mIoU " in trained.stderr and " aAcc " in trained.stderr
    models = os.path.join(trained.out_dir, "models")
    with open(os.path.join(models, MODEL_INFO_FILE), encoding="utf-8") as stream:
        assert yaml.safe_load(stream) == {"object_type": object_type}  # the model's object type goes with it

    for name, stage in stages.items():  # each stage's model, inferred on the validation set
        tree = write_seg_tree(tmp_path / f"infer-{name}", ["infer"], object_type, models_from=models, stages=[name])
        inferred = tree.run(seg_registry)
        assert inferred.exit_code == 0, inferred.stderr
        report = inferred.verify()
        assert report.ok, report.to_text()
        scores = evaluate(tree, os.path.join(inferred.out_dir, "infer-result.json"), object_type, "0.5", 0.0, capsys)
        assert {key: scores[key] for key in KEYS[object_type]} == {key: stage[key] for key in KEYS[object_type]}, name

    mining = write_seg_tree(tmp_path / "mine", ["mining"], object_type, models_from=models).run(seg_registry)
    assert mining.exit_code == 0, mining.stderr
    report = mining.verify()
    assert report.ok, report.to_text()
    assert len(mining.result_tsv()) == IMAGES // 2


@pytest.mark.parametrize("trained_for, task_type, kind", [
    (3, 4, "infer"), (4, 3, "mining"), (2, 3, "infer"), (3, 2, "mining")])
def test_a_model_of_another_object_type_is_refused_before_any_image_is_read(seg_registry, ymir_registry, tmp_path,
                                                                             monkeypatch, trained_for, task_type,
                                                                             kind):
    models = tmp_path / "models"
    (models / "epoch_1").mkdir(parents=True)
    (models / "epoch_1" / "model.json").write_text(json.dumps({"shift": 0, "false_positive": False}))
    (models / "result.yaml").write_text(yaml.safe_dump({"best_stage_name": "epoch_1", "model_stages": {
        "epoch_1": {"stage_name": "epoch_1", "files": ["model.json"], "timestamp": 1, "mAP": 0.5}}}))
    if trained_for != 2:  # a detection training records nothing: a model without object_type is detection
        (models / MODEL_INFO_FILE).write_text(yaml.safe_dump({"object_type": trained_for}))
    if task_type == 2:
        import toy_plugin

        ymir_registry.register(toy_plugin, "toy")
        tree = TaskTree(str(tmp_path / "task"), kinds=[kind], models_from=str(models))
    else:
        tree = write_seg_tree(tmp_path / "task", [kind], task_type, models_from=str(models))
    with open(tree.local(f"/in/models/{MODEL_INFO_FILE}"), encoding="utf-8") as stream:
        assert yaml.safe_load(stream).get("object_type", 2) == trained_for

    def no_image(*args, **kwargs):
        raise AssertionError("an image was read")

    monkeypatch.setattr("ymir_runner.context.decode_image", no_image)
    outcome = tree.run(ymir_registry)
    assert outcome.exit_code != 0 and outcome.return_code == ReturnCode.OBJECT_TYPE == 300005
    assert outcome.last_stderr_line.endswith(
        f"object types mismatch: the model in {tree.local('/in/models')} was trained for object_type {trained_for} "
        f"({ {2: 'detection', 3: 'semantic segmentation', 4: 'instance segmentation'}[trained_for]}; "
        f"{MODEL_INFO_FILE}), this {kind} task is object_type {task_type} "
        f"({ {2: 'detection', 3: 'semantic segmentation', 4: 'instance segmentation'}[task_type]}): give it a model "
        f"of its object type")
    assert seg_toy_plugin.CALLS == []
    assert outcome.verify().ok, outcome.verify().to_text()


# --- StageEvaluator's segmentation path ----------------------------------------------------------------------------

def seg_context(object_type, hyper=None):
    logger = logging.getLogger("test-seg-stages")
    writer = types.SimpleNamespace(add_scalar=lambda *args: None)
    return types.SimpleNamespace(class_names=tuple(CLASSES), hyper=EasyDict(hyper or {}), logger=logger,
                                 config=types.SimpleNamespace(object_type=object_type), tensorboard=writer,
                                 optional_output=lambda kind: _nothing())


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _truth(height=20, width=30):
    first = np.zeros((height, width), bool)
    first[2:10, 3:12] = True
    second = np.zeros((height, width), bool)
    second[8:18, 15:28] = True
    return [SegObject.from_mask(0, first), SegObject.from_mask(2, second)], first, second


def test_semantic_stage_of_a_perfect_label_map_scores_1_and_of_nothing_0():
    truth, first, second = _truth()
    evaluator = StageEvaluator(seg_context(3), [truth], [(30, 20)], ["/in/assets/ab/abc.png"])
    labels = np.full((20, 30), 255, np.uint8)
    labels[first], labels[second] = 0, 2
    perfect = evaluator.evaluate(1, [labels])
    assert perfect.stage_metrics() == {"mIoU": 1.0, "mAcc": 1.0, "aAcc": 1.0}
    nothing = evaluator.evaluate(2, [np.full((20, 30), 255, np.uint8)])
    assert nothing.stage_metrics() == {"mIoU": 0.0, "mAcc": 0.0, "aAcc": 0.0}  # never NaN or -1


def test_instance_stage_takes_masks_encoded_masks_and_seg_objects_alike():
    truth, first, second = _truth()
    evaluator = StageEvaluator(seg_context(4, {"map_iou_threshold": 0.5, "conf_threshold": 0.5}), [truth],
                               [(30, 20)])
    as_masks = evaluator.evaluate(1, [[InstanceMask(first, 0.9, 0), InstanceMask(second, 0.8, 2),
                                       InstanceMask(second, 0.4, 1)]])  # below conf_threshold: left out
    as_encoded = evaluator.evaluate(1, [[EncodedMask(encode_mask(first), 0.9, 0),
                                         EncodedMask(encode_mask(second), 0.8, 2)]])
    as_objects = evaluator.evaluate(1, [[SegObject.from_mask(0, first, 0.9), SegObject.from_mask(2, second, 0.8)]])
    assert as_masks.to_dict() == as_encoded.to_dict() == as_objects.to_dict()
    # class 1 has no ground truth: it counts 0 in the mean over every class, as the platform counts it
    assert (as_masks.maskAP, as_masks.tp, as_masks.fp, as_masks.fn) == (pytest.approx(2 / 3), 2, 0, 0)
    empty = evaluator.evaluate(2, [[]])
    # never -1 or NaN; no prediction counts no fn, as the platform's accumulate skips an image class without any
    assert empty.stage_metrics() == {"maskAP": 0.0, "boxAP": 0.0, "maskAP50_95": 0.0}
    assert (empty.tp, empty.fp, empty.fn) == (0, 0, 0)


def test_a_segmentation_stage_refuses_what_the_writer_refuses():
    truth, first, _ = _truth()
    evaluator = StageEvaluator(seg_context(4), [truth], [(30, 20)])
    with pytest.raises(ValueError, match="one each"):
        evaluator.evaluate(1, [[], []])
    with pytest.raises(ValueError, match="label map, InstanceMask objects, or EncodedMask"):
        evaluator.evaluate(1, [[InstanceMask(first, 0.9, 0), EncodedMask(encode_mask(first), 0.9, 0)]])
    with pytest.raises(ValueError, match="mask"):
        evaluator.evaluate(1, [[InstanceMask(first[:10], 0.9, 0)]])  # not the stored size
    with pytest.raises(ValueError, match="same name"):
        StageEvaluator(seg_context(3), [truth, truth], [(30, 20)] * 2, ["/a/x.png", "/b/x.png"])


def test_the_sandbox_installs_a_model_with_its_object_type(tmp_path, ymir_registry):
    """``ymir-runner sandbox --model`` copies the object type a segmentation training recorded: a semantic model
    given to a detection mining task is refused as the platform refuses it."""
    import toy_plugin
    from test_sandbox import fake_models, quiet_run, voc_source

    from ymir_runner.sandbox import build_sandbox

    ymir_registry.register(toy_plugin, "toy")
    models = fake_models(tmp_path)
    (models / MODEL_INFO_FILE).write_text(yaml.safe_dump({"object_type": 3}))
    source, _ = voc_source(tmp_path, [("cat", 1, 1, 5, 5)])
    summary = build_sandbox(str(source), str(tmp_path / "work"), registry=ymir_registry, tasks=["mining"],
                            model=str(models), classes=["cat"])
    with open(tmp_path / "work" / "in" / "models" / MODEL_INFO_FILE, encoding="utf-8") as stream:
        info = yaml.safe_load(stream)
    assert (info["best_stage_name"], info["object_type"]) == ("epoch_2", 3)
    assert quiet_run(summary.env_file, ymir_registry) == 1
    with open(tmp_path / "work" / "out" / "monitor.txt", encoding="utf-8") as stream:
        assert stream.readline().split("\t")[3:] == ["4", "300005\n"]


def test_semantic_stages_of_more_classes_than_a_label_map_holds_are_refused_up_front():
    context = seg_context(3)
    context.class_names = tuple(f"c{index}" for index in range(255))
    with pytest.raises(ConfigError, match="config key 'class_names': 255 classes, and the platform scores semantic "
                                          "segmentation on a uint8 label map of at most 254 classes"):
        StageEvaluator(context, [[]], [(30, 20)])
