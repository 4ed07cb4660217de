"""End-to-end runs through the dispatcher with the toy plugin: outputs, monitor states, codes, messages."""

import glob
import os

import pytest
import toy_plugin
import yaml

import ymir_runner
from ymir_runner import ReturnCode
from ymir_runner.dispatcher import phase_spans
from ymir_runner.protocol.env import TaskKind


@pytest.fixture
def registry(ymir_registry):
    ymir_registry.register(toy_plugin, "toy")
    return ymir_registry


def test_training_success_writes_final_monitor_and_result(registry, ymir_task):
    outcome = ymir_task(config={"epochs": "3", "use_flip": "True"}).run(registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.monitor_fields[0] == "t-test"
    assert (outcome.percent, outcome.state, outcome.return_code) == (1.0, 2, 0)
    result = outcome.result_yaml()
    assert result["best_stage_name"] == "epoch_3"
    assert set(result["model_stages"]) == {"epoch_1", "epoch_2", "epoch_3"}
    for name, stage in result["model_stages"].items():
        assert os.path.isfile(os.path.join(outcome.out_dir, "models", name, "model.json"))
        assert isinstance(stage["timestamp"], int)
    assert glob.glob(os.path.join(outcome.out_dir, "tensorboard", "events.out.tfevents.*"))


def tensorboard_texts(out_dir):
    """``(tag, text)`` of every text summary in the run's tensorboard event file."""
    from tensorboardX.event_file_writer import EventFileWriter  # noqa: F401  (imported for its side effects)
    from tensorboardX.proto import event_pb2  # tensorboardX ships the protobuf definitions

    (events_file,) = glob.glob(os.path.join(out_dir, "tensorboard", "events.out.tfevents.*"))
    texts = []
    with open(events_file, "rb") as stream:
        data = stream.read()
    offset = 0
    while offset < len(data):  # TFRecord framing: length, crc, payload, crc
        length = int.from_bytes(data[offset:offset + 8], "little")
        event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
        offset += 16 + length
        for value in event.summary.value:
            texts.append((value.tag, b"".join(value.tensor.string_val).decode()))
    return texts


def test_plugins_and_versions_recorded_in_tensorboard(registry, ymir_task):
    outcome = ymir_task().run(registry)
    texts = tensorboard_texts(outcome.out_dir)
    assert any(tag.startswith("ymir-runner/plugins") and "toy" in text for tag, text in texts)


def test_training_starts_with_the_dataset_report_read_once(registry, ymir_task):
    tree = ymir_task(images=6)
    box = tree.boxes_of(0)[0]
    with open(tree.local(tree.annotations[0]), "a") as stream:  # the image's one box, written twice more
        stream.write(f"{box[0]}, {box[1]}, {box[2]}, {box[3]}, {box[4]}\n" * 2)
    outcome = tree.run(registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert "dataset: training: 3 usable images of 3 index lines; skipped 2 duplicate box" in outcome.stderr
    assert "dataset: boxes per class (training / validation): cat 2 / 1, dog 1 / 2" in outcome.stderr
    # The toy plugin reads the training set again: nothing is read or counted twice.
    assert outcome.stderr.count("skipped (duplicate box)") == 2
    assert "training: skipped 2 duplicate box" in outcome.stderr
    texts = dict(tensorboard_texts(outcome.out_dir))
    assert "training: 3 usable images of 3 index lines" in next(
        text for tag, text in texts.items() if tag.startswith("ymir-runner/dataset"))


def test_mining_then_infer_share_progress_and_model_cache(registry, ymir_task):
    seen = {}

    class Observer:
        @ymir_runner.hookimpl
        def ymir_runner_after_task(self, context):
            seen[context.kind.value] = (context.progress.start, context.progress.end,
                                        context.progress.monitor.percent, dict(context.run_cache))

    registry.register(Observer(), "observer")
    outcome = ymir_task(kinds=["mining", "infer"]).run(registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert seen["mining"][:3] == (0.0, 0.5, 0.5)
    assert seen["infer"][:3] == (0.5, 1.0, 1.0)
    assert seen["infer"][3]["model_loads"] == 1
    assert len(outcome.result_tsv()) == 4
    detection = outcome.infer_result()["detection"]
    assert len(detection) == 4  # the image the toy plugin skipped still has an (empty) entry
    assert sorted(len(entry["boxes"]) for entry in detection.values()) == [0, 1, 1, 1]
    box = next(entry["boxes"][0] for entry in detection.values() if entry["boxes"])
    assert box == {"box": {"x": 0, "y": 3, "w": 30, "h": 45}, "class_name": "cat", "score": 0.9}


def test_phase_spans():
    assert phase_spans([TaskKind.TRAINING]) == [(0.0, 1.0)]
    assert phase_spans([TaskKind.MINING, TaskKind.INFER]) == [(0.0, 0.5), (0.5, 1.0)]


def test_legacy_protocol_infer_uses_annotations_key(registry, ymir_task):
    outcome = ymir_task(kinds=["infer"], protocol_version=None).run(registry)
    assert outcome.exit_code == 0, outcome.stderr
    entries = outcome.infer_result()["detection"].values()
    assert all(set(entry) == {"annotations"} for entry in entries)


@pytest.mark.parametrize("fail_with, code, message", [
    ("config", ReturnCode.CONFIG, "config key 'fail_with' asked for a config error"),
    ("nan", ReturnCode.NAN, "loss became NaN at step 3"),
    ("oom", ReturnCode.OUT_OF_MEMORY, "MemoryError: CUDA out of memory"),
    ("bug", ReturnCode.GENERIC, "KeyError: 'surprise'"),
])
def test_plugin_errors_become_state_4_with_code_and_last_stderr_line(registry, ymir_task, fail_with, code,
                                                                      message):
    outcome = ymir_task(config={"fail_with": fail_with}).run(registry)
    assert outcome.exit_code != 0
    assert (outcome.state, outcome.return_code) == (4, code)
    assert outcome.last_stderr_line.startswith(f"ymir-runner: error {int(code)}: ")
    assert message in outcome.last_stderr_line


def test_unexpected_error_keeps_its_traceback_before_the_one_line_reason(registry, ymir_task):
    outcome = ymir_task(config={"fail_with": "bug"}).run(registry)
    assert "Traceback" in outcome.stderr and "toy_plugin.py" in outcome.stderr
    assert outcome.stderr.index("Traceback") < outcome.stderr.index(outcome.last_stderr_line)


def test_on_task_error_hook_sees_the_error_and_cannot_replace_it(registry, ymir_task):
    seen = []

    class Observer:
        @ymir_runner.hookimpl
        def ymir_runner_on_task_error(self, context, error):
            seen.append((context.kind.value, type(error).__name__))
            raise RuntimeError("observer broke too")

    registry.register(Observer(), "observer")
    outcome = ymir_task(config={"fail_with": "nan"}).run(registry)
    assert seen == [("training", "NonFiniteError")]
    assert outcome.return_code == ReturnCode.NAN


@pytest.mark.parametrize("config, fragment", [
    ({"epochs": "many"}, "config key 'epochs': 'many' is not a valid integer"),
    ({"learning_rate": "fast"}, "config key 'learning_rate': 'fast' is not a valid number"),
    ({"use_flip": "maybe"}, "config key 'use_flip': 'maybe' is not a valid boolean"),
    ({"optimizer": "lion"}, "config key 'optimizer': 'lion' is not one of 'sgd', 'adamw'"),
    ({"gpu_id": "zero"}, "config key 'gpu_id'"),
    ({"export_format": "ark"}, "config key 'export_format'"),
])
def test_bad_config_values_stop_with_300001_naming_the_key(registry, ymir_task, config, fragment):
    outcome = ymir_task(config=config).run(registry)
    assert outcome.exit_code != 0
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.CONFIG)
    assert fragment in outcome.last_stderr_line


def test_web_ui_strings_are_coerced_for_the_plugin(registry, ymir_task):
    seen = {}

    class Observer:
        @ymir_runner.hookimpl
        def ymir_runner_before_task(self, context):
            seen.update(context.hyper)

    registry.register(Observer(), "observer")
    outcome = ymir_task(config={"epochs": "1", "learning_rate": "0.5", "use_flip": "False",
                                "unknown_key": "kept"}).run(registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert (seen["epochs"], seen["learning_rate"], seen["use_flip"]) == (1, 0.5, False)
    assert seen["unknown_key"] == "kept" and seen["optimizer"] == "sgd"


def test_empty_training_index_is_a_config_error_naming_export_format(registry, ymir_task):
    tree = ymir_task(export_format="weird:raw")
    open(tree.local("/in/train-index.tsv"), "w").close()  # what the platform exports for an unknown format
    outcome = tree.run(registry)
    assert outcome.return_code == ReturnCode.CONFIG
    assert "export_format" in outcome.last_stderr_line and "weird:raw" in outcome.last_stderr_line


def test_unreadable_config_file_is_a_config_error(registry, ymir_task):
    tree = ymir_task()
    with open(tree.local("/in/config.yaml"), "w") as stream:
        stream.write("epochs: [1,\n")
    outcome = tree.run(registry)
    assert outcome.return_code == ReturnCode.CONFIG
    assert "is not valid YAML" in outcome.last_stderr_line


def test_missing_env_file_fails_without_a_monitor(registry, tmp_path):
    from ymir_runner.dispatcher import run

    code = run(str(tmp_path / "nope" / "env.yaml"), registry=registry)
    assert code != 0
    assert not os.path.exists(tmp_path / "nope" / "monitor.txt")


def test_env_with_no_task_is_a_config_error(registry, ymir_task):
    tree = ymir_task()
    tree.kinds = []
    tree.write_env()
    outcome = tree.run(registry)
    assert outcome.return_code == ReturnCode.CONFIG
    assert "nothing to do" in outcome.last_stderr_line


def test_training_that_saves_no_stage_fails(registry, ymir_task):
    outcome = ymir_task(config={"epochs": 0}).run(registry)
    assert outcome.exit_code != 0 and outcome.state == 4
    assert "without saving a model stage" in outcome.last_stderr_line


def test_skipped_items_are_counted_in_the_log(registry, ymir_task):
    tree = ymir_task(images=6)
    with open(tree.local("/in/train-index.tsv"), "a") as stream:
        stream.write("/in/assets/missing.png\t/in/annotations/missing.txt\n")
    with open(tree.local(tree.annotations[0]), "a") as stream:
        stream.write("7, 1, 1, 5, 5, -1, 0\nnot, a, box, at, all\n")
    outcome = tree.run(registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert "train-index.tsv:4" in outcome.stderr  # file and line of the missing image
    assert "skipped 1 class id outside class_names, 1 missing image, 1 non-numeric field" in outcome.stderr


def test_sdk_code_inside_a_plugin_sees_the_same_task_and_writes_through_ymir_runner(ymir_registry, ymir_task):
    from ymir_exc import dataset_reader, env, monitor, result_writer, settings

    seen = {}

    class SdkPlugin:
        @ymir_runner.hookimpl
        def ymir_runner_register_executors(self):
            return [ymir_runner.ExecutorSpec(name="sdk", tasks={ymir_runner.TaskKind.MINING})]

        @ymir_runner.hookimpl
        def ymir_runner_mine(self, context):
            current = env.get_current_env()
            seen["task_id"] = current.task_id
            seen["paths"] = [path for path, _ in dataset_reader.item_paths(dataset_reader.DatasetType.CANDIDATE)]
            seen["ours"] = context.candidates.paths()
            monitor.write_monitor_logger(0.25)
            seen["percent"] = context.progress.monitor.percent
            result_writer.write_mining_result([(path, index) for index, path in enumerate(seen["paths"])])

    before = settings.DEFAULT_ENV_FILE_PATH
    ymir_registry.register(SdkPlugin(), "sdk")
    outcome = ymir_task(kinds=["mining"]).run(ymir_registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert seen["task_id"] == "t-test"
    assert seen["paths"] == seen["ours"] and len(seen["paths"]) == 4
    assert seen["percent"] == 0.25
    rows = outcome.result_tsv()
    assert [score for _, score in rows] == [3.0, 2.0, 1.0, 0.0]  # sorted, TAB-separated, by ymir-runner
    assert settings.DEFAULT_ENV_FILE_PATH == before


def test_run_with_root_env_var(registry, ymir_task, monkeypatch):
    from ymir_runner.dispatcher import run

    tree = ymir_task()
    monkeypatch.setenv("YMIR_RUNNER_ROOT", tree.root)
    assert run(tree.env_file, registry=registry) == 0
    with open(os.path.join(tree.out_dir, "models", "result.yaml")) as stream:
        assert yaml.safe_load(stream)["best_stage_name"]


class PartialMiner:
    """Scores only the first ``scored`` candidates (none: the plugin forgot to report)."""

    def __init__(self, scored):
        self.scored = scored

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ymir_runner.ExecutorSpec(name="partial", tasks={TaskKind.MINING})]

    @ymir_runner.hookimpl
    def ymir_runner_mine(self, context):
        for item in list(context.candidates)[:self.scored]:
            context.mining_result.add(item.image, 0.5)


def test_mining_candidates_left_without_a_score_are_counted_and_named(ymir_registry, ymir_task):
    ymir_registry.register(PartialMiner(scored=1), "partial")
    tree = ymir_task(kinds=["mining"])
    outcome = tree.run(ymir_registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.result_tsv() == [(tree.images[0], 0.5)]  # the index's container paths, not local ones
    assert f"mining: 3 candidates have no score and are left out of {tree.out_dir}/result.tsv (never selected), " \
           f"e.g. {tree.local(tree.images[1])}" in outcome.stderr


def test_mining_that_scores_nothing_fails(ymir_registry, ymir_task):
    ymir_registry.register(PartialMiner(scored=0), "partial")
    outcome = ymir_task(kinds=["mining"]).run(ymir_registry)
    assert (outcome.state, outcome.return_code) == (4, ReturnCode.GENERIC)
    assert outcome.last_stderr_line.endswith("executor 'partial' finished mining without scoring any candidate")
    assert not os.path.exists(os.path.join(outcome.out_dir, "result.tsv"))


def test_a_non_finite_mining_score_is_refused_when_added(tmp_path):
    from ymir_runner.protocol.results import MiningResult

    result = MiningResult(str(tmp_path / "result.tsv"))
    with pytest.raises(ValueError, match="not finite"):
        result.add("/in/assets/a.jpg", float("nan"))
    result.add("/in/assets/b.jpg", 0.2)
    result.add("/in/assets/c.jpg", 0.9)
    assert result.write() == 2
    assert (tmp_path / "result.tsv").read_text() == "/in/assets/c.jpg\t0.9\n/in/assets/b.jpg\t0.2\n"


def test_model_files_are_the_tasks_models_as_local_paths(ymir_registry, ymir_task):
    seen = {}

    class Recorder(PartialMiner):
        @ymir_runner.hookimpl
        def ymir_runner_mine(self, context):
            seen["files"] = context.model_files
            super().ymir_runner_mine(context)

    ymir_registry.register(Recorder(scored=4), "partial")
    tree = ymir_task(kinds=["mining"])
    assert tree.run(ymir_registry).exit_code == 0
    assert seen["files"] == (tree.local("/in/models/epoch_1/model.bin"),)


def test_a_task_tree_can_start_from_a_trained_model(registry, ymir_task):
    trained = ymir_task(kinds=["training"]).run(registry)
    models = os.path.join(trained.out_dir, "models")
    best = trained.result_yaml()["best_stage_name"]

    infer = ymir_task(kinds=["infer"], models_from=models)
    assert infer.config["model_params_path"] == [f"/in/models/{best}/model.json"]
    assert os.path.isfile(infer.local(f"/in/models/{best}/model.json"))
    with open(infer.local("/in/models/ymir-info.yaml"), encoding="utf-8") as stream:
        assert yaml.safe_load(stream) == {"best_stage_name": best}
    assert infer.run(registry).exit_code == 0

    finetune = ymir_task(kinds=["training"], models_from=models, stages=["epoch_1"])
    assert finetune.config["pretrained_model_params"] == ["/in/models/epoch_1/model.json"]


def test_run_outcome_verify_checks_what_the_run_was_asked(registry, ymir_task):
    training = ymir_task().run(registry)
    report = training.verify()
    assert report.ok, report.to_text()
    assert report.tasks == ("training",)
    models = training.out_dir + "/models"
    tree = ymir_task(kinds=("mining", "infer"), models_from=models)
    both = tree.run(registry)
    report = both.verify()
    assert report.ok and report.tasks == ("mining", "infer"), report.to_text()
    # a candidate left out of result.tsv is what verify exists to catch
    with open(tree.local("/out/result.tsv"), encoding="utf-8") as stream:
        lines = stream.readlines()
    with open(tree.local("/out/result.tsv"), "w", encoding="utf-8") as stream:
        stream.writelines(lines[1:])
    assert not both.verify().ok
    failed = ymir_task(config={"fail_with": "config"}).run(registry)
    assert failed.exit_code and failed.verify().ok  # a failure that monitor.txt reports is what the platform expects


def test_plugin_registry_and_monitor_writes_from_the_testing_kit(ymir_task):
    from ymir_runner.testing import monitor_writes, plugin_registry

    registry = plugin_registry({"toy": toy_plugin})
    with monitor_writes() as writes:
        outcome = ymir_task(config={"epochs": 3}).run(registry)
    assert outcome.exit_code == 0, outcome.stderr
    percents = [float(text.split("\t")[2]) for text in writes]
    assert len(percents) >= 3 and percents == sorted(percents) and percents[-1] == 1.0
    assert writes[-1].split("\n")[0].split("\t")[3] == "2"
    with pytest.raises(ValueError):
        plugin_registry({"a": toy_plugin, "b": toy_plugin})
