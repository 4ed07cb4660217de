"""Stage evaluation and the one deployed-stage rule of the core (ymir_runner.stages, issue 25): what result.yaml
says after a training task's stages, whatever engine evaluated them."""

import logging
import os
import sys
import types

import numpy as np
import pytest
import yaml
from easydict import EasyDict
from PIL import Image
from test_optional_outputs import scalar_tags

import ymir_runner
from ymir_runner import ExecutorSpec, Param, TaskKind, stages
from ymir_runner.mining import Prediction
from ymir_runner.protocol.results import TrainingResult
from ymir_runner.stages import StageEvaluator, evaluation_params, fitness, stage_epochs

# --- the deployed-stage rule ------------------------------------------------------------------------------------


def write_stage(result, name, metrics):
    folder = result.stage_dir(name)
    with open(os.path.join(folder, "model.bin"), "wb") as stream:
        stream.write(b"weights")
    result.add_stage(name, ["model.bin"], metrics)


def deployed(tmp_path, metrics_per_stage):
    """best_stage_name of result.yaml after stages epoch_1, epoch_2, ... with these metrics."""
    models = tmp_path / "models"
    result = TrainingResult(str(models), str(models / "result.yaml"))
    for epoch, metrics in enumerate(metrics_per_stage, 1):
        write_stage(result, f"epoch_{epoch}", metrics)
    with open(models / "result.yaml", encoding="utf-8") as stream:
        return yaml.safe_load(stream)["best_stage_name"]


def test_fitness_is_ultralytics_blend_of_map_and_map50_95_else_the_main_metric():
    assert fitness({"mAP": 0.8, "mAP50_95": 0.4}) == pytest.approx(0.1 * 0.8 + 0.9 * 0.4)
    assert fitness({"mAP": 0.8}) == 0.8  # an engine that measures no mAP50_95
    assert fitness({"mAP": 0.8, "mAP50_95": 0.4, "mIoU": 0.3}, main_metric="mIoU") == 0.3


def test_the_deployed_stage_has_the_highest_fitness_not_the_highest_map(tmp_path):
    assert deployed(tmp_path, [{"mAP": 0.50, "mAP50_95": 0.35},   # 0.365
                               {"mAP": 0.90, "mAP50_95": 0.30},   # 0.360: the best mAP, looser boxes
                               {"mAP": 0.40, "mAP50_95": 0.20}]) == "epoch_1"


def test_the_deployed_stage_is_the_single_best_stage_not_a_window_of_stages(tmp_path):
    # fitness 0.50, 0.50, 0.30, 0.52, 0.30: the mean of 3 stages (the detection plugin's former rule) would pick
    # epoch_2 (0.50 against 0.44 for epoch_4); the core's rule deploys the best stage itself.
    values = [0.50, 0.50, 0.30, 0.52, 0.30]
    assert deployed(tmp_path, [{"mAP": value, "mAP50_95": value} for value in values]) == "epoch_4"


def test_of_equal_fitness_the_later_stage_is_deployed(tmp_path):
    same = {"mAP": 0.6, "mAP50_95": 0.3}
    assert deployed(tmp_path, [{"mAP": 0.2, "mAP50_95": 0.1}, same, dict(same), {"mAP": 0.1, "mAP50_95": 0.1}]) \
        == "epoch_3"


def test_add_stage_takes_no_fitness_of_an_engine_s_own(tmp_path):
    result = TrainingResult(str(tmp_path), str(tmp_path / "result.yaml"))
    (open(os.path.join(result.stage_dir("epoch_1"), "model.bin"), "wb")).close()
    with pytest.raises(TypeError, match="fitness"):
        result.add_stage("epoch_1", ["model.bin"], {"mAP": 0.5}, fitness=0.9)  # type: ignore[call-arg]


# --- when stages are written -------------------------------------------------------------------------------------

@pytest.mark.parametrize("epochs, save_period, expected", [
    (100, 0, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]),
    (25, 0, [3, 5, 8, 10, 13, 15, 18, 20, 23, 25]),  # ceil(25 k / 10)
    (7, 0, [1, 2, 3, 4, 5, 6, 7]),                   # a run of at most 10 epochs: every epoch
    (1, 0, [1]),
    (10, 3, [3, 6, 9, 10]),                          # the last epoch always
    (9, 3, [3, 6, 9]),
    (5, 10, [5]),                                    # a period longer than the run: the last epoch
])
def test_stage_epochs(epochs, save_period, expected):
    assert stage_epochs(epochs, save_period) == expected


@pytest.mark.parametrize("epochs, save_period", [(0, 0), (10, -1)])
def test_stage_epochs_refuses_impossible_runs(epochs, save_period):
    with pytest.raises(ValueError, match="epochs must be at least 1 and save_period at least 0"):
        stage_epochs(epochs, save_period)


# --- the template keys the core adds --------------------------------------------------------------------------

KEYS = ["save_period", "conf_threshold", "map_iou_threshold", "max_detections"]


def test_stage_evaluation_adds_the_evaluation_keys_to_the_training_template_only():
    own = (Param("epochs", 10, "passes"),)
    spec = ExecutorSpec(name="engine", tasks={TaskKind.TRAINING, TaskKind.INFER}, stage_evaluation=True,
                        templates={TaskKind.TRAINING: own, TaskKind.INFER: (Param("conf_threshold", 0.25, "score"),)})
    assert [param.name for param in spec.template(TaskKind.TRAINING)] == ["epochs", *KEYS]
    assert spec.defaults(TaskKind.TRAINING) == {"epochs": 10, "save_period": 0, "conf_threshold": 0.0,
                                                "map_iou_threshold": 0.5, "max_detections": Param.AUTO}
    assert [param.name for param in spec.template(TaskKind.INFER)] == ["conf_threshold"]
    assert ExecutorSpec(name="engine", tasks={TaskKind.TRAINING}).template(TaskKind.TRAINING) == ()
    params = {param.name: param for param in evaluation_params()}
    assert params["map_iou_threshold"].exclusive_minimum == 0.0 and params["map_iou_threshold"].exclusive_maximum == 1
    assert params["max_detections"].auto is int and params["max_detections"].bounds == (1, 10_000)
    assert all(param.help for param in params.values())


def test_a_key_the_plugin_declares_itself_is_kept_and_not_repeated():
    mine = Param("max_detections", 300, "most boxes per validation image", minimum=1, maximum=300)
    spec = ExecutorSpec(name="engine", tasks={TaskKind.TRAINING}, stage_evaluation=True,
                        templates={TaskKind.TRAINING: (mine,)})
    names = [param.name for param in spec.template(TaskKind.TRAINING)]
    assert sorted(names) == sorted(KEYS) and names[0] == "max_detections"
    assert spec.defaults(TaskKind.TRAINING)["max_detections"] == 300


def test_each_object_type_gets_the_evaluation_keys_its_stages_read():
    def keys(object_types):
        spec = ExecutorSpec(name="engine", tasks={TaskKind.TRAINING}, stage_evaluation=True,
                            object_types=object_types)
        return [param.name for param in spec.template(TaskKind.TRAINING)]

    assert keys({2}) == KEYS
    assert keys({3}) == ["save_period"]  # a semantic stage has no score threshold, match IoU or box count
    assert keys({4}) == ["save_period", "conf_threshold", "map_iou_threshold"]
    assert keys({2, 3}) == KEYS and keys({3, 4}) == keys({4})
    assert [param.name for param in evaluation_params({3})] == ["save_period"]


def test_stage_evaluation_without_training_is_refused():
    with pytest.raises(ValueError, match="'engine' declares stage_evaluation but does not handle training"):
        ExecutorSpec(name="engine", tasks={TaskKind.INFER}, stage_evaluation=True)


# --- StageEvaluator on a training task ------------------------------------------------------------------------

def truths_of(items):
    return [(np.array([[box.x1, box.y1, box.x2, box.y2] for box in item.boxes], np.float64).reshape(-1, 4),
             np.array([box.class_id for box in item.boxes], np.int64)) for item in items]


class ShiftingEngine:
    """An engine on the core's stage evaluation whose 'model' finds every validation box shifted right by the
    epoch's ``shifts`` (pixels of a 16-pixel box: 0 exact, 2 IoU 0.78, 6 IoU 0.45), each at score 0.9."""

    def __init__(self, shifts):
        self.shifts = shifts

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ExecutorSpec(name="shifting", tasks={TaskKind.TRAINING}, stage_evaluation=True)]

    @ymir_runner.hookimpl
    def ymir_runner_train(self, context):
        items = list(context.validation_set)
        truths = truths_of(items)
        evaluator = StageEvaluator(context, truths, [(item.width, item.height) for item in items],
                                   [item.image for item in items])
        for epoch in stage_epochs(len(self.shifts), context.hyper.save_period):
            shift = self.shifts[epoch - 1]
            predictions = [Prediction(boxes + [shift, 0, shift, 0], np.full(len(classes), 0.9), classes)
                           for boxes, classes in truths]
            result = evaluator.evaluate(epoch, predictions)
            name = f"epoch_{epoch}"
            with open(os.path.join(context.training_result.stage_dir(name), "model.bin"), "wb") as stream:
                stream.write(b"weights")
            context.logger.info("epoch %d: %s", epoch, evaluator.add_stage(name, ["model.bin"], result))


class FakeFigures:
    """What ymir_runner.pictures.stage_figures returns (its real drawing is tested with the pictures module)."""

    def __init__(self, call, names):
        self.call, self.names = call, names

    def to_tensorboard(self, writer, step):
        writer.add_scalar("pictures/drawn", float(self.call), step)

    def save(self, folder):
        os.makedirs(folder, exist_ok=True)
        paths = [os.path.join(folder, name) for name in self.names]
        for path in paths:
            with open(path, "w", encoding="utf-8") as stream:
                stream.write(f"call {self.call}")
        return paths


@pytest.fixture
def pictures(monkeypatch):
    """A stand-in ymir_runner.pictures recording its calls; the first call's figures include a val_1.jpg that
    later ones do not."""
    calls = []

    def stage_figures(ground_truths, predictions, *, class_names, score_threshold, iou_threshold, images=(),
                      count=4):
        calls.append(dict(ground_truths=ground_truths, predictions=predictions, class_names=class_names,
                          score_threshold=score_threshold, iou_threshold=iou_threshold, images=images))
        names = ["pr_curve.png", "val_0.jpg"] + (["val_1.jpg"] if len(calls) == 1 else [])
        return FakeFigures(len(calls), names)

    module = types.ModuleType("ymir_runner.pictures")
    module.stage_figures = stage_figures
    stand_in(monkeypatch, module)
    return calls


def stand_in(monkeypatch, module):
    """``ymir_runner.pictures`` is ``module`` for one test (None: it cannot be imported)."""
    # The attribute first: reading the old one imports the real module, which must be what comes back afterwards.
    if module is None:
        monkeypatch.delattr(ymir_runner, "pictures", raising=False)
    else:
        monkeypatch.setattr(ymir_runner, "pictures", module, raising=False)
    monkeypatch.setitem(sys.modules, "ymir_runner.pictures", module)


def run_engine(ymir_registry, ymir_task, shifts, **options):
    ymir_registry.register(ShiftingEngine(shifts), "shifting")
    tree = ymir_task(images=6, **options)
    return tree, tree.run(ymir_registry)


def test_stages_are_evaluated_written_and_the_deployed_stage_s_pictures_attached(ymir_registry, ymir_task,
                                                                                   pictures):
    tree, outcome = run_engine(ymir_registry, ymir_task, [6, 0, 2])
    assert outcome.exit_code == 0, outcome.stderr
    document = outcome.result_yaml()
    assert document["best_stage_name"] == "epoch_2"
    stages_written = document["model_stages"]
    assert {key: stages_written["epoch_1"][key] for key in ("mAP", "mAP50_95", "tp", "fp", "fn", "conf_thr")} == \
        {"mAP": 0.0, "mAP50_95": 0.0, "tp": 0, "fp": 3, "fn": 3, "conf_thr": 0.25}  # no true positive: the default
    assert {key: stages_written["epoch_2"][key] for key in ("mAP", "mAR", "mAP50_95", "tp", "fp", "fn", "conf_thr")} \
        == {"mAP": 1.0, "mAR": 1.0, "mAP50_95": 1.0, "tp": 3, "fp": 0, "fn": 0, "conf_thr": 0.9}
    assert stages_written["epoch_3"]["mAP"] == 1.0 and stages_written["epoch_3"]["mAP50_95"] < 1.0
    assert document["evaluate_config"] == {"iou_thr": 0.5, "conf_thr": 0.9}
    # the deployed stage's pictures, the second call's; epoch_1's val_1.jpg is gone with it
    assert document["attachments"] == {"images": ["pr_curve.png", "val_0.jpg"]}
    attached = os.path.join(outcome.out_dir, "models", "attachments", "images")
    assert sorted(os.listdir(attached)) == ["pr_curve.png", "val_0.jpg"]
    with open(os.path.join(attached, "pr_curve.png"), encoding="utf-8") as stream:
        assert stream.read() == "call 2"
    first = pictures[0]
    assert first["class_names"] == ["cat", "dog"] and first["iou_threshold"] == 0.5
    assert first["score_threshold"] == 0.25 and pictures[1]["score_threshold"] == 0.9
    assert [os.path.basename(image) for image in first["images"]] == \
        [os.path.basename(image) for image in tree.images[3:]]  # the validation half of the 6 images
    assert "epoch 2: mAP@0.50 1.000 mAP50-95 1.000 tp/fp/fn 3/0/0 at score 0.900 -> epoch_2" in outcome.stderr
    assert "max_detections auto: 100 per validation image (at least 100; the densest validation image has 1 " \
           "objects)" in outcome.stderr
    tags = scalar_tags(outcome.out_dir)
    assert tags.count("val/mAP") == 3 and tags.count("pictures/drawn") == 3
    assert outcome.verify().ok, outcome.verify().to_text()


def test_config_keys_steer_the_evaluation(ymir_registry, ymir_task, pictures):
    _, outcome = run_engine(ymir_registry, ymir_task, [6, 0, 2, 2],
                            config={"save_period": 3, "conf_threshold": 0.95, "map_iou_threshold": 0.8})
    assert outcome.exit_code == 0, outcome.stderr
    document = outcome.result_yaml()
    assert list(document["model_stages"]) == ["epoch_3", "epoch_4"]
    # at IoU 0.8 a 2-pixel shift (IoU 0.78) finds nothing; no box scores 0.95
    assert document["model_stages"]["epoch_3"]["mAP"] == 0.0
    assert document["model_stages"]["epoch_3"]["conf_thr"] == 0.95
    assert document["evaluate_config"] == {"iou_thr": 0.8, "conf_thr": 0.95}
    assert document["best_stage_name"] == "epoch_4"  # equal fitness: the later stage


@pytest.mark.parametrize("broken", ["raises", "missing"])
def test_a_picture_failure_does_not_fail_the_stage(ymir_registry, ymir_task, monkeypatch, broken):
    if broken == "raises":
        def stage_figures(*args, **kwargs):
            raise ValueError("a figure that cannot be drawn")
        module = types.ModuleType("ymir_runner.pictures")
        module.stage_figures = stage_figures
    else:  # the module cannot be imported at all
        module = None
    stand_in(monkeypatch, module)
    _, outcome = run_engine(ymir_registry, ymir_task, [6, 0, 2])
    assert outcome.exit_code == 0, outcome.stderr
    document = outcome.result_yaml()
    assert document["best_stage_name"] == "epoch_2" and len(document["model_stages"]) == 3
    assert "attachments" not in document
    assert outcome.stderr.count("stage pictures failed, the task goes on without it") == 1
    assert "training: optional outputs failed: 3 stage pictures" in outcome.stderr
    assert "val/mAP" in scalar_tags(outcome.out_dir)


# --- StageEvaluator's settings ---------------------------------------------------------------------------------

def evaluator_for(hyper, objects_per_image, caplog):
    caplog.set_level(logging.INFO, logger="test-stages")
    context = types.SimpleNamespace(class_names=("cat",), hyper=EasyDict(hyper),
                                    logger=logging.getLogger("test-stages"))
    truths = [(np.tile([[0, 0, 10, 10]], (count, 1)), np.zeros(count, np.int64)) for count in objects_per_image]
    return StageEvaluator(context, truths, [(64, 48)] * len(truths))


def test_max_detections_auto_is_the_densest_image_when_it_has_more_than_100(caplog):
    evaluator = evaluator_for({"max_detections": "auto"}, [3, 150, 20], caplog)
    assert evaluator.max_detections == 150
    assert "max_detections auto: 150 per validation image (at least 100; the densest validation image has 150 " \
           "objects)" in caplog.text
    assert evaluator_for({}, [3], caplog).max_detections == 100  # the key's default: auto
    assert evaluator.iou_threshold == 0.5 and evaluator.score_threshold is None and evaluator.SCORE_FLOOR == 0.001


def test_a_max_detections_below_the_densest_image_is_warned_about(caplog):
    evaluator = evaluator_for({"max_detections": 5, "conf_threshold": 0.3}, [8, 2], caplog)
    assert evaluator.max_detections == 5 and evaluator.score_threshold == 0.3
    (warning,) = [record for record in caplog.records if record.levelno == logging.WARNING]
    assert warning.getMessage() == ("config key 'max_detections' 5: the densest validation image has 8 objects, so no "
                                    "stage can find them all there (max_detections: auto would keep 100)")


def test_one_ground_truth_and_size_per_validation_image(caplog):
    context = types.SimpleNamespace(class_names=("cat",), hyper=EasyDict(), logger=logging.getLogger("test-stages"))
    with pytest.raises(ValueError, match="2 ground truths, 1 image sizes and 0 image paths"):
        StageEvaluator(context, [(np.zeros((0, 4)), np.zeros(0))] * 2, [(64, 48)])


def test_the_public_names():
    assert ymir_runner.stages is stages
    assert stages.EVAL_COST == 0.35
    assert stages.fitness is fitness and stages.evaluation_params is evaluation_params


def test_the_deployed_stage_s_real_pictures_are_attached(ymir_registry, ymir_task):
    _, outcome = run_engine(ymir_registry, ymir_task, [6, 0, 2])
    assert outcome.exit_code == 0, outcome.stderr
    assert "optional outputs failed" not in outcome.stderr
    names = ["pr_curve.png", "confusion_matrix.png", "val_0.jpg", "val_1.jpg", "val_2.jpg"]
    assert outcome.result_yaml()["attachments"] == {"images": names}
    attached = os.path.join(outcome.out_dir, "models", "attachments", "images")
    assert sorted(os.listdir(attached)) == sorted(names)
    for name in names:
        with Image.open(os.path.join(attached, name)) as picture:
            assert picture.format == ("PNG" if name.endswith(".png") else "JPEG") and min(picture.size) > 0
    assert outcome.verify().ok, outcome.verify().to_text()


def test_replacing_a_section_s_attachments_lists_and_keeps_only_the_new_files(tmp_path):
    models = tmp_path / "models"
    result = TrainingResult(str(models), str(models / "result.yaml"))
    write_stage(result, "epoch_1", {"mAP": 0.5})
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for name in ("pr_curve.png", "val_0.jpg", "val_1.jpg"):
        (pictures / name).write_text(name)
    result.add_attachment("reports", str(pictures / "val_0.jpg"))  # another section is left alone
    assert result.replace_attachments("images", [str(pictures / "pr_curve.png"), str(pictures / "val_1.jpg")]) == \
        ["pr_curve.png", "val_1.jpg"]
    assert result.replace_attachments("images", [str(pictures / "val_0.jpg")]) == ["val_0.jpg"]
    with open(models / "result.yaml", encoding="utf-8") as stream:
        assert yaml.safe_load(stream)["attachments"] == {"reports": ["val_0.jpg"], "images": ["val_0.jpg"]}
    assert os.listdir(models / "attachments" / "images") == ["val_0.jpg"]
    assert result.replace_attachments("images", []) == []
    with open(models / "result.yaml", encoding="utf-8") as stream:
        assert yaml.safe_load(stream)["attachments"] == {"reports": ["val_0.jpg"]}
    assert os.listdir(models / "attachments" / "images") == []
