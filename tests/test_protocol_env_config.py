"""env.yaml and config.yaml as the platform writes them (docs/protocol.md section 2)."""

import os

import pytest
import yaml

from ymir_runner.errors import ConfigError, ReturnCode
from ymir_runner.protocol import env as env_module
from ymir_runner.protocol.config import RESERVED_KEYS, ExportFormat, parse_config, read_config_file
from ymir_runner.protocol.env import (
    LEGACY_PROTOCOL_VERSION,
    ROOT_ENV_VAR,
    EnvError,
    InputPaths,
    OutputPaths,
    TaskKind,
    load_env,
)
from ymir_runner.protocol.paths import reroot

FULL_ENV = {
    "task_id": "t0000002000002abc",
    "protocol_version": "1.1.0",
    "run_training": True,
    "run_mining": False,
    "run_infer": False,
    "manifest_file": "/img-man/manifest.yaml",
    "input": {
        "root_dir": "/in", "assets_dir": "/in/assets", "annotations_dir": "/in/annotations",
        "models_dir": "/in/models", "training_index_file": "/in/train-index.tsv",
        "val_index_file": "/in/val-index.tsv", "candidate_index_file": "", "config_file": "/in/config.yaml",
    },
    "output": {
        "root_dir": "/out", "models_dir": "/out/models", "tensorboard_dir": "/out/tensorboard",
        "training_result_file": "/out/models/result.yaml", "mining_result_file": "/out/result.tsv",
        "infer_result_file": "/out/infer-result.json", "monitor_file": "/out/monitor.txt",
        "executor_log_file": "/out/ymir-executor-out.log",
    },
}


@pytest.fixture(autouse=True)
def container_out(tmp_path, monkeypatch):
    """A stand-in for the container's /out: an env.yaml without an output section writes there."""
    folder = tmp_path / "container-out"
    folder.mkdir()
    monkeypatch.setattr(env_module, "CONTAINER_OUT_DIR", str(folder))
    return folder


@pytest.fixture(autouse=True)
def _no_root_from_outside(monkeypatch):
    monkeypatch.delenv(ROOT_ENV_VAR, raising=False)


def write_env(folder, content, name="env.yaml"):
    path = folder / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content), encoding="utf-8")
    return str(path)


def env_with(**changes):
    data = yaml.safe_load(yaml.safe_dump(FULL_ENV))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def assert_config_error(excinfo, *needles):
    assert excinfo.value.code == ReturnCode.CONFIG == 300001
    message = excinfo.value.message
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


# --- env.yaml ----------------------------------------------------------------------------------------------

def test_env_every_field_is_typed(tmp_path):
    env = load_env(write_env(tmp_path, FULL_ENV))
    assert env.task_id == "t0000002000002abc"
    assert env.protocol_version == "1.1.0" and env.protocol == (1, 1, 0)
    assert (env.run_training, env.run_mining, env.run_infer) == (True, False, False)
    assert all(isinstance(flag, bool) for flag in (env.run_training, env.run_mining, env.run_infer))
    assert env.manifest_file == "/img-man/manifest.yaml"
    assert env.input == InputPaths(**FULL_ENV["input"])
    assert env.output == OutputPaths(**FULL_ENV["output"])
    assert env.input.candidate_index_file == ""
    assert env.root is None
    assert env.env_file == str(tmp_path / "env.yaml")


def test_env_without_protocol_version_is_legacy(tmp_path):
    env = load_env(write_env(tmp_path, env_with(protocol_version=None)))
    assert env.protocol_version == LEGACY_PROTOCOL_VERSION == "0.0.1"
    assert env.protocol < (1, 0, 0)


def test_env_protocol_version_written_as_a_yaml_float(tmp_path):
    env = load_env(write_env(tmp_path, "protocol_version: 1.1\nrun_training: true\n"))
    assert env.protocol == (1, 1)
    assert env.protocol > (1, 0, 0)


@pytest.mark.parametrize("version", ["1.x.0", "latest", "1..0", "v1.1.0"])
def test_env_bad_protocol_version(tmp_path, version):
    with pytest.raises(ConfigError) as excinfo:
        load_env(write_env(tmp_path, env_with(protocol_version=version)))
    assert_config_error(excinfo, "protocol_version", version)


def test_env_missing_sections_take_container_defaults(tmp_path):
    env = load_env(write_env(tmp_path, "task_id: t1\nrun_mining: true\n"))
    assert env.input == InputPaths() and env.output == OutputPaths()
    assert env.output.monitor_file == "/out/monitor.txt"
    assert env.input.training_index_file == ""


def test_env_rerooted_with_root_argument(tmp_path):
    root = tmp_path / "tree"
    (root / "in").mkdir(parents=True)
    write_env(root / "in", FULL_ENV)
    env = load_env("/in/env.yaml", root=str(root))  # container path: found under the root
    assert env.root == str(root)
    assert env.env_file == str(root / "in" / "env.yaml")
    assert env.input.training_index_file == str(root / "in" / "train-index.tsv")
    assert env.input.config_file == str(root / "in" / "config.yaml")
    assert env.output.monitor_file == str(root / "out" / "monitor.txt")
    assert env.output.root_dir == str(root / "out")
    assert env.input.candidate_index_file == ""  # unused paths stay ''
    assert env.manifest_file == "/img-man/manifest.yaml"  # only /in and /out move
    dumped = env.to_yaml_dict()
    assert "root" not in dumped and "env_file" not in dumped
    assert dumped["input"]["training_index_file"] == str(root / "in" / "train-index.tsv")


def test_env_rerooted_with_environment_variable(tmp_path, monkeypatch):
    root = tmp_path / "tree"
    (root / "in").mkdir(parents=True)
    write_env(root / "in", env_with(output={"monitor_file": "/out/monitor.txt"}))
    monkeypatch.setenv(ROOT_ENV_VAR, str(root))
    env = load_env("/in/env.yaml")
    assert env.root == str(root)
    assert env.output.monitor_file == str(root / "out" / "monitor.txt")
    # keys absent from the section take the default, re-rooted too
    assert env.output.models_dir == str(root / "out" / "models")
    assert env.input.assets_dir == str(root / "in" / "assets")


def test_env_reroot_leaves_lookalike_paths_alone(tmp_path):
    root = str(tmp_path / "r")
    assert reroot("/inside/assets", root) == "/inside/assets"
    assert reroot("/in", root) == str(tmp_path / "r" / "in")
    assert reroot("/out/models/result.yaml", root) == str(tmp_path / "r" / "out" / "models" / "result.yaml")


@pytest.mark.parametrize("path", ["/inside/assets", "/home/user/work/in/assets", "relative/assets"])
def test_env_root_that_cannot_apply_is_an_error_and_writes_nothing(tmp_path, path):
    """--root re-roots container paths; an env.yaml naming a host path (a sandbox tree without
    --container-paths, copied elsewhere) would write outside the tree --root names: refused, naming the key."""
    env_file = write_env(tmp_path, env_with(input={"assets_dir": path, "models_dir": "/in/models"}))
    with pytest.raises(EnvError) as excinfo:
        load_env(env_file, root=str(tmp_path / "r"))
    assert_config_error(excinfo, "--root", "input.assets_dir", path, "cannot apply", "--container-paths")
    assert excinfo.value.monitor_file is None


@pytest.mark.parametrize("flags, expected", [
    ({"run_training": True}, (TaskKind.TRAINING,)),
    ({"run_training": True, "run_mining": True, "run_infer": True}, (TaskKind.TRAINING,)),
    ({"run_mining": True}, (TaskKind.MINING,)),
    ({"run_infer": True}, (TaskKind.INFER,)),
    ({"run_mining": True, "run_infer": True}, (TaskKind.MINING, TaskKind.INFER)),
    ({}, ()),
])
def test_env_tasks_order(tmp_path, flags, expected):
    data = env_with(run_training=False, run_mining=False, run_infer=False)
    data.update(flags)
    assert load_env(write_env(tmp_path, data)).tasks == expected


def test_env_string_booleans(tmp_path):
    text = "task_id: t1\nrun_training: 'False'\nrun_mining: 'true'\nrun_infer: 'True'\n"
    env = load_env(write_env(tmp_path, text))
    assert (env.run_training, env.run_mining, env.run_infer) == (False, True, True)
    assert env.tasks == (TaskKind.MINING, TaskKind.INFER)


def test_env_bad_boolean(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load_env(write_env(tmp_path, "run_training: maybe\n"))
    assert_config_error(excinfo, "run_training", "maybe")


@pytest.mark.parametrize("content, needle", [
    ("task_id: [unclosed\n", "not valid YAML"),
    ("- a\n- b\n", "must hold a YAML mapping"),
    ("just a string\n", "must hold a YAML mapping"),
    ("", "must hold a YAML mapping"),
    ("input: [a, b]\n", "input must be a mapping"),
])
def test_env_malformed(tmp_path, content, needle):
    path = write_env(tmp_path, content)
    with pytest.raises(ConfigError) as excinfo:
        load_env(path)
    assert_config_error(excinfo, needle)


def test_env_missing_file(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load_env(str(tmp_path / "nope.yaml"))
    assert_config_error(excinfo, "cannot read env file", "nope.yaml")


def test_env_unreadable_file(tmp_path):
    folder = tmp_path / "env.yaml"
    folder.mkdir()  # a directory cannot be read as a file, whatever the uid
    with pytest.raises(ConfigError) as excinfo:
        load_env(str(folder))
    assert_config_error(excinfo, "cannot read env file")


def test_env_not_utf8(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_bytes(b"task_id: \xff\xfe\n")
    with pytest.raises(ConfigError) as excinfo:
        load_env(str(path))
    assert_config_error(excinfo, str(path))


# --- config.yaml: reserved keys ----------------------------------------------------------------------------

BASE = {"task_id": "t1", "class_names": ["cat", "dog"], "gpu_id": "0,1", "gpu_count": 2, "object_type": 2,
        "shm_size": "32G", "export_format": "ark:raw"}


def test_config_reserved_keys_typed():
    config = parse_config(BASE)
    assert config.task_id == "t1"
    assert config.class_names == ("cat", "dog")
    assert config.gpu_ids == (0, 1)
    assert config.gpu_count == 2 and isinstance(config.gpu_count, int)
    assert config.object_type == 2
    assert config.shm_size == "32G"
    assert config.pretrained_model_params == ()  # key absent: no pretrained model chosen
    assert config.model_params_path == ()
    assert config.export_format == ExportFormat("det-ark", "raw", "ark:raw")
    assert config.plugin is None


@pytest.mark.parametrize("gpu_id, expected", [
    ("", ()), ("0,1", (0, 1)), ("0, 1", (0, 1)), (0, (0,)), (3, (3,)), ("5", (5,)), ([0, 2], (0, 2)),
])
def test_config_gpu_id(gpu_id, expected):
    config = parse_config({**BASE, "gpu_id": gpu_id})
    assert config.gpu_ids == expected


def test_config_gpu_id_absent_is_cpu():
    assert parse_config({"task_id": "t"}).gpu_ids == ()


@pytest.mark.parametrize("key, value, expected", [
    ("gpu_id", "0,x", "comma-separated list of GPU ids"),
    ("gpu_count", "two", "an integer"),
    ("object_type", "detection", "an integer"),
    ("class_names", ["cat", "cat"], "duplicate"),
    ("class_names", ["cat", ""], "empty class name"),
])
def test_config_bad_reserved_value(key, value, expected):
    with pytest.raises(ConfigError) as excinfo:
        parse_config({**BASE, key: value})
    assert_config_error(excinfo, repr(key), repr(value), expected)


def test_config_gpu_count_string_and_class_names_string():
    config = parse_config({**BASE, "gpu_count": "1", "class_names": "cat, dog"})
    assert config.gpu_count == 1
    assert config.class_names == ("cat", "dog")


def test_config_model_paths_rerooted():
    raw = {**BASE, "pretrained_model_params": ["/in/models/epoch_3/best.pt", "/in/models/epoch_3/best.onnx"],
           "model_params_path": ["/in/models/e/m.bin"]}
    config = parse_config(raw, root="/tmp/tree")
    assert config.pretrained_model_params == ("/tmp/tree/in/models/epoch_3/best.pt",
                                              "/tmp/tree/in/models/epoch_3/best.onnx")
    assert config.model_params_path == ("/tmp/tree/in/models/e/m.bin",)
    assert parse_config(raw).pretrained_model_params[0] == "/in/models/epoch_3/best.pt"


@pytest.mark.parametrize("text, annotation, asset", [
    ("ark:raw", "det-ark", "raw"),
    ("det-ark:raw", "det-ark", "raw"),
    ("voc:raw", "det-voc", "raw"),
    ("det-voc:raw", "det-voc", "raw"),
    ("seg-coco:raw", "seg-coco", "raw"),
    ("ARK:RAW", "det-ark", "raw"),
    ("", "det-voc", "raw"),
])
def test_export_format(text, annotation, asset):
    export = parse_config({**BASE, "export_format": text}).export_format
    assert (export.annotation, export.asset) == (annotation, asset)
    assert export.known
    assert export.raw == text


def test_export_format_unknown_annotation_is_kept_but_not_known():
    export = ExportFormat.parse("yolo:raw")
    assert export.annotation == "yolo" and not export.known


@pytest.mark.parametrize("text", ["a:b:c", "ark", "ark;raw"])
def test_export_format_needs_exactly_one_colon(text):
    with pytest.raises(ConfigError) as excinfo:
        parse_config({**BASE, "export_format": text})
    assert_config_error(excinfo, "export_format", text)


def test_export_format_absent_is_none():
    raw = dict(BASE)
    del raw["export_format"]
    assert parse_config(raw).export_format is None


# --- config.yaml: hyper-parameters -------------------------------------------------------------------------

DEFAULTS = {"epochs": 10, "batch_size": 16, "learning_rate": 0.01, "use_amp": True, "model": "yolov5s",
            "augment": False, "image_size": [640, 640], "extra": None}


def test_hyper_defaults_merged_as_easydict():
    config = parse_config({**BASE, "epochs": 3}, DEFAULTS)
    assert config.hyper.epochs == 3  # attribute access: an EasyDict
    assert config.hyper["batch_size"] == 16
    assert config.hyper.learning_rate == 0.01
    assert config.hyper.image_size == [640, 640]
    assert set(config.hyper) == set(DEFAULTS)


@pytest.mark.parametrize("key, value, expected", [
    ("use_amp", "true", True),
    ("use_amp", "False", False),
    ("use_amp", "false", False),
    ("use_amp", "True", True),
    ("use_amp", "1", True),
    ("use_amp", "0", False),
    ("augment", 1, True),
    ("learning_rate", "0.5", 0.5),
    ("learning_rate", "1e-3", 0.001),
    ("learning_rate", 1, 1.0),
    ("batch_size", "16", 16),
    ("batch_size", "16.0", 16),
    ("batch_size", 8.0, 8),
    ("model", "yolov5m", "yolov5m"),
    ("model", 5, "5"),
    ("image_size", "[320, 320]", [320, 320]),
    ("extra", "anything", "anything"),
])
def test_hyper_web_ui_strings_coerced_by_default_type(key, value, expected):
    hyper = parse_config({**BASE, key: value}, DEFAULTS).hyper
    assert hyper[key] == expected
    assert type(hyper[key]) is type(expected)


@pytest.mark.parametrize("key, value, type_name", [
    ("batch_size", "sixteen", "integer"),
    ("batch_size", "16.5", "integer"),
    ("batch_size", True, "integer"),
    ("learning_rate", "fast", "number"),
    ("learning_rate", "nan", "number"),
    ("use_amp", "maybe", "boolean"),
    ("use_amp", 2, "boolean"),
    ("image_size", {"w": 1}, "list"),
])
def test_hyper_value_that_cannot_be_coerced(key, value, type_name):
    with pytest.raises(ConfigError) as excinfo:
        parse_config({**BASE, key: value}, DEFAULTS)
    assert_config_error(excinfo, repr(key), repr(value), type_name)


def test_hyper_choices():
    choices = {"model": ["yolov5s", "yolov5m"], "batch_size": [8, 16]}
    assert parse_config({**BASE, "model": "yolov5m", "batch_size": "8"}, DEFAULTS, choices).hyper.batch_size == 8
    with pytest.raises(ConfigError) as excinfo:
        parse_config({**BASE, "model": "yolov9"}, DEFAULTS, choices)
    assert_config_error(excinfo, "'model'", "'yolov9'", "yolov5s", "yolov5m")
    with pytest.raises(ConfigError) as excinfo:
        parse_config({**BASE, "batch_size": "32"}, DEFAULTS, choices)
    assert_config_error(excinfo, "'batch_size'", "32")


def test_hyper_unknown_keys_kept_unchanged():
    hyper = parse_config({**BASE, "my_flag": "False", "ratio": "0.5", "nested": {"a": 1}}, DEFAULTS).hyper
    assert hyper.my_flag == "False"  # no default: no type to coerce to
    assert hyper.ratio == "0.5"
    assert hyper.nested.a == 1


def test_hyper_keys_dropped_by_web_ui_take_the_default():
    raw = {**BASE, "epochs": "5"}  # the UI dropped every other key (their value was '')
    hyper = parse_config(raw, DEFAULTS).hyper
    assert hyper.epochs == 5
    assert hyper.model == "yolov5s" and hyper.use_amp is True and hyper.batch_size == 16


def test_reserved_keys_never_in_hyper():
    raw = {**BASE, "pretrained_model_params": ["/in/models/a/b.pt"], "model_params_path": ["/in/models/a/b.pt"],
           "run_infer": True, "run_mining": "false", "openpai_enable": False, "plugin": "yolo", "epochs": 2}
    config = parse_config(raw, {**DEFAULTS, "gpu_count": 0, "export_format": "voc:raw"})
    assert not RESERVED_KEYS & set(config.hyper), sorted(RESERVED_KEYS & set(config.hyper))
    assert config.hyper.epochs == 2
    assert config.plugin == "yolo"
    assert config.raw["run_infer"] is True  # still visible in the raw mapping


def test_reserved_keys_are_not_coerced_as_hyper():
    # gpu_id '' must not be turned into a hyper-parameter error, even with an int default elsewhere
    config = parse_config({**BASE, "gpu_id": "", "gpu_count": 0}, DEFAULTS)
    assert config.gpu_ids == () and config.gpu_count == 0


# --- config.yaml: the file ---------------------------------------------------------------------------------

def test_read_config_file(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**BASE, "epochs": "3"}), encoding="utf-8")
    raw = read_config_file(str(path))
    assert raw["class_names"] == ["cat", "dog"]
    assert parse_config(raw, DEFAULTS).hyper.epochs == 3


def test_read_config_file_empty_is_empty_mapping(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("", encoding="utf-8")
    assert read_config_file(str(path)) == {}


@pytest.mark.parametrize("content, needle", [
    ("epochs: [1,\n", "not valid YAML"),
    ("- 1\n- 2\n", "must hold a YAML mapping, got list"),
])
def test_read_config_file_malformed(tmp_path, content, needle):
    path = tmp_path / "config.yaml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as excinfo:
        read_config_file(str(path))
    assert_config_error(excinfo, needle, str(path))


def test_read_config_file_missing_or_binary(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        read_config_file(str(tmp_path / "missing.yaml"))
    assert_config_error(excinfo, "cannot read config file", "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"epochs: \xff\n")
    with pytest.raises(ConfigError) as excinfo:
        read_config_file(str(binary))
    assert_config_error(excinfo, str(binary))


def test_env_and_config_from_task_tree(tmp_path):
    from ymir_runner.testing import TaskTree

    tree = TaskTree(str(tmp_path / "t"), kinds=("mining", "infer"), config={"batch_size": "4"})
    env = load_env(tree.env_file, root=tree.root)
    assert env.tasks == (TaskKind.MINING, TaskKind.INFER)
    assert os.path.isfile(env.input.candidate_index_file)
    config = parse_config(read_config_file(env.input.config_file), {"batch_size": 16}, root=env.root)
    assert config.hyper.batch_size == 4
    assert config.model_params_path == (tree.local("/in/models/epoch_1/model.bin"),)
    assert config.export_format is None
