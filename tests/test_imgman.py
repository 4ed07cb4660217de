"""``ymir-runner img-man`` and the repository's ``img-man/`` folder (what the platform reads at registration)."""

from __future__ import annotations

import configparser
import importlib
import os
import pathlib

import pytest
import toy_plugin
import yaml

import ymir_runner
from ymir_runner import ExecutorSpec, Param, TaskKind
from ymir_runner.cli import main
from ymir_runner.imgman import template_entries, write_img_man
from ymir_runner.plugins import DISABLE_ENV_VAR
from ymir_runner.protocol.config import PLATFORM_FILLED_KEYS, parse_config
from ymir_runner.protocol.env import TEMPLATE_FILES
from ymir_runner.testing import plugin_registry

REPO = pathlib.Path(__file__).resolve().parents[1]
IMG_MAN = REPO / "img-man"


def first_party_plugins() -> list[tuple[str, str]]:
    """(entry-point name, module) of every distribution under plugins/, read from its setup.cfg."""
    found = []
    for setup_cfg in sorted(REPO.glob("plugins/*/setup.cfg")):
        parser = configparser.ConfigParser()
        parser.read(setup_cfg)
        for line in parser.get("options.entry_points", "ymir_runner", fallback="").splitlines():
            if "=" in line:
                name, module = (part.strip() for part in line.split("=", 1))
                found.append((name, module))
    return found


@pytest.fixture
def first_party_registry(monkeypatch):
    monkeypatch.delenv(DISABLE_ENV_VAR, raising=False)  # conftest blocks installed plugins for the core tests
    plugins = {}
    for name, module in first_party_plugins():
        try:
            plugins[name] = importlib.import_module(module)
        except ImportError as error:  # a core-only checkout: the plugin is not installed
            pytest.skip(f"first-party plugin {module} is not installed: {error}")
    return plugin_registry(plugins)


def web_ui_round_trip(template: dict, bool_text=str.lower) -> dict:
    """What config.yaml holds after the web UI: non-numeric values become strings, '' values are dropped."""
    sent = {}
    for key, value in template.items():
        if isinstance(value, bool):
            sent[key] = bool_text(str(value))
        elif isinstance(value, (int, float)):
            sent[key] = value
        elif value != "":
            sent[key] = str(value)
    return sent


def files_under(folder: pathlib.Path) -> list[str]:
    """Every file under ``folder``, as paths relative to it (the type folders of a multi-type img-man included)."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def test_repository_img_man_is_the_output_for_the_first_party_plugins(first_party_registry, tmp_path):
    write_img_man(str(tmp_path), first_party_registry)
    expected = files_under(tmp_path)
    assert files_under(IMG_MAN) == expected, "regenerate: ymir-runner img-man --out img-man"
    for name in expected:
        assert (IMG_MAN / name).read_text() == (tmp_path / name).read_text(), (
            f"img-man/{name} is out of date: run `ymir-runner img-man --out img-man`")


#: The Apache image's object types and where the platform reads their templates (``object_type: [2, 3]``: one
#: folder per type, segmentation.md section 1): the built-in detector (2) and its Semantic FPN (3).
IMG_MAN_TYPES = {2: "det", 3: "semantic-seg"}


def test_repository_img_man_files_are_what_the_platform_expects():
    manifest = yaml.safe_load((IMG_MAN / "manifest.yaml").read_text())
    assert manifest["object_type"] == sorted(IMG_MAN_TYPES)
    assert not [name for name in TEMPLATE_FILES.values() if (IMG_MAN / name).exists()], (
        "a manifest listing several types makes the platform ignore root templates: none is shipped")
    for object_type, folder in IMG_MAN_TYPES.items():
        training = yaml.safe_load((IMG_MAN / folder / "training-template.yaml").read_text())
        assert training["export_format"].count(":") == 1 and training["export_format"].split(":")[0]
        assert training["export_format"] == ("seg-coco:raw" if object_type == 3 else "ark:raw")
        for file_name in TEMPLATE_FILES.values():
            template = yaml.safe_load((IMG_MAN / folder / file_name).read_text())
            assert isinstance(template, dict) and template
            assert not set(PLATFORM_FILLED_KEYS) & set(template), "reserved keys go in comments only"
            assert template["gpu_count"] == 0 and isinstance(template["shm_size"], str)
            text = (IMG_MAN / folder / file_name).read_text()
            assert all(key in text for key in PLATFORM_FILLED_KEYS)  # listed in the header comment
    semantic_mining = yaml.safe_load((IMG_MAN / "semantic-seg" / "mining-template.yaml").read_text())
    assert semantic_mining["mining_algorithm"] == "entropy"
    assert "legal values: one of 'entropy', 'aldd', 'random'" in (IMG_MAN / "semantic-seg" / "mining-template.yaml"
                                                                  ).read_text()  # no cald: it needs boxes


@pytest.mark.parametrize("bool_text", [str.lower, str, lambda text: "1" if text == "True" else "0"])
def test_every_template_value_survives_the_web_ui(first_party_registry, bool_text):
    for executor in first_party_registry.executors():
        if executor.spec.named_only:  # not in img-man: an image that runs it keeps its own templates (sdk-run)
            continue
        (object_type,) = executor.spec.object_types
        for kind in executor.spec.tasks:
            template = yaml.safe_load((IMG_MAN / IMG_MAN_TYPES[object_type] / TEMPLATE_FILES[kind]).read_text())
            defaults = executor.spec.defaults(kind)
            choices = {param.name: param.choices for param in executor.spec.template(kind)}
            auto = {param.name: param.auto for param in executor.spec.template(kind) if param.auto}
            config = parse_config(web_ui_round_trip(template, bool_text), defaults, choices, auto=auto)
            assert dict(config.hyper) == {key: template[key] for key in defaults}
            assert {key: type(value) for key, value in config.hyper.items()} == {
                key: type(value) for key, value in defaults.items()}


def test_templates_comment_every_key_with_its_help(ymir_registry, tmp_path):
    ymir_registry.register(toy_plugin, "toy")
    write_img_man(str(tmp_path), ymir_registry)
    lines = (tmp_path / "training-template.yaml").read_text().splitlines()
    assert lines[lines.index("epochs: 2") - 1] == "# passes over the training set"
    assert lines[lines.index("optimizer: sgd") - 1] == "# legal values: one of 'sgd', 'adamw'"
    assert "fail_with: ''" in lines
    assert yaml.safe_load((tmp_path / "training-template.yaml").read_text())["export_format"] == "ark:raw"
    assert "export_format" not in yaml.safe_load((tmp_path / "mining-template.yaml").read_text())


class Other:
    """A second executor: handles training only, shares a key with the toy executor, reads det-voc."""

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ExecutorSpec(name="other", tasks={TaskKind.TRAINING}, annotation_formats=("det-voc",),
                             templates={TaskKind.TRAINING: (Param("epochs", 50, "epochs of other"),
                                                            Param("depth", 3, "layers"))})]

    @ymir_runner.hookimpl
    def ymir_runner_train(self, context):
        raise NotImplementedError


def test_several_executors_merge_into_one_template_with_a_plugin_key(ymir_registry, tmp_path):
    ymir_registry.register(toy_plugin, "toy")
    ymir_registry.register(Other(), "other")
    entries = {entry.key: entry for entry in template_entries(ymir_registry, TaskKind.TRAINING)}
    assert list(entries)[0] == "plugin" and entries["plugin"].value == "other"
    assert "one of other, toy" in entries["plugin"].comment[0]
    assert entries["epochs"].value == 50 and "(executor toy: default 2)" in entries["epochs"].comment
    assert {"depth", "use_flip", "export_format"} <= set(entries)
    assert entries["export_format"].value == "voc:raw"  # the first executor's annotation format
    mining = {entry.key for entry in template_entries(ymir_registry, TaskKind.MINING)}
    assert "plugin" not in mining and "depth" not in mining


def test_cli_writes_the_files_and_removes_a_stale_template(ymir_registry, tmp_path, capsys):
    class TrainingOnly:
        @ymir_runner.hookimpl
        def ymir_runner_register_executors(self):
            return [ExecutorSpec(name="only", tasks={TaskKind.TRAINING})]

        @ymir_runner.hookimpl
        def ymir_runner_train(self, context):
            raise NotImplementedError

    (tmp_path / "mining-template.yaml").write_text("stale: 1\n")
    ymir_registry.register(TrainingOnly(), "only")
    from ymir_runner.cli import build_parser

    args = build_parser(ymir_registry).parse_args(["img-man", "--out", str(tmp_path), "--gpu-count", "1"])
    assert args.handler(args) == 0
    assert sorted(os.listdir(tmp_path)) == ["manifest.yaml", "training-template.yaml"]
    assert yaml.safe_load((tmp_path / "training-template.yaml").read_text())["gpu_count"] == 1
    assert str(tmp_path / "manifest.yaml") in capsys.readouterr().out


def test_cli_without_plugins_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("ymir_runner.plugins._entry_points", lambda: [])
    assert main(["img-man", "--out", str(tmp_path)]) == 2
    assert "no executor installed" in capsys.readouterr().err


def test_object_type_option_serves_one_of_several(ymir_registry, tmp_path):
    class Segmenter:
        @ymir_runner.hookimpl
        def ymir_runner_register_executors(self):
            return [ExecutorSpec(name="seg", tasks={TaskKind.INFER}, object_types={3})]

        @ymir_runner.hookimpl
        def ymir_runner_infer(self, context):
            raise NotImplementedError

    ymir_registry.register(toy_plugin, "toy")
    ymir_registry.register(Segmenter(), "seg")
    write_img_man(str(tmp_path), ymir_registry)  # both types: one folder each (tests/test_seg_imgman.py)
    write_img_man(str(tmp_path), ymir_registry, object_type=3)  # the folders of the list are removed
    assert yaml.safe_load((tmp_path / "manifest.yaml").read_text())["object_type"] == 3
    assert sorted(os.listdir(tmp_path)) == ["infer-template.yaml", "manifest.yaml"]
