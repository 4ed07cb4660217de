"""``ymir-runner img-man`` for several object types, resolved as the platform's image inspector resolves it.

:func:`inspect_image` is a port of the platform's resolution rules (IndustryEssentials/ymir 694446846,
``backend/src/ymir_controller/controller/invoker/invoker_cmd_inspect_image.py`` lines 36-65, with the folder and
file names of ``controller/config/common_task.py``), reading files where the platform runs
``docker run --rm IMAGE cat /img-man/<file>``; segmentation.md section 1 states the same rules.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest
import toy_plugin
import yaml

import ymir_runner
from ymir_runner import ExecutorSpec, Param, TaskKind
from ymir_runner.cli import main
from ymir_runner.imgman import OBJECT_TYPE_FOLDERS, write_img_man
from ymir_runner.protocol.config import parse_config
from ymir_runner.testing import dockerfile_instructions

REPO = pathlib.Path(__file__).resolve().parents[1]

# --- the platform's rules (ported) ---------------------------------------------------------------------------

#: ``IMAGE_CONFIG_DIR_NAMES`` (mir_command_pb2.ObjectType: OT_DET_BOX 2, OT_SEG 3, OT_INS_SEG 4, OT_MULTI_MODAL 50).
PLATFORM_DIR_NAMES = {2: "det", 3: "semantic-seg", 4: "instance-seg", 50: "multi-modal"}
#: ``IMAGE_CONFIG_FILE_NAMES``, by the task type's name.
PLATFORM_FILE_NAMES = {"training": "training-template.yaml", "mining": "mining-template.yaml",
                       "infer": "infer-template.yaml"}


class ImageRefused(Exception):
    """``CTLResponseCode.DOCKER_IMAGE_ERROR``."""


def _cat(root: pathlib.Path, container_path: str) -> str | None:
    """``_inspect_file_in_docker_image``: the file's YAML as a mapping (JSON text), None when it is missing or is
    not a mapping."""
    path = root / os.path.relpath(container_path, "/img-man")
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return json.dumps(loaded) if isinstance(loaded, dict) else None


def inspect_image(root: pathlib.Path) -> dict[int, dict[str, dict]]:
    """object type -> task -> template, as the platform registers an image whose ``/img-man`` is ``root``."""
    serialized = _cat(root, "/img-man/manifest.yaml")
    manifest = json.loads(serialized) if serialized else {}
    types = manifest.get("object_type", 2)
    if isinstance(types, list):
        type_dirs = [(kind, os.path.join("/img-man", PLATFORM_DIR_NAMES[kind])) for kind in types]  # KeyError
    elif isinstance(types, int):
        type_dirs = [(types, "/img-man")]
    else:
        raise ImageRefused(f"invalid object types: {types}")
    found: dict[int, dict[str, dict]] = {}
    for kind, folder in type_dirs:
        for task, file_name in PLATFORM_FILE_NAMES.items():
            template = _cat(root, os.path.join(folder, file_name))
            if template:
                found.setdefault(kind, {})[task] = json.loads(template)
    if not found:
        raise ImageRefused("does not match any configuration")
    return found


def test_the_port_follows_the_platform_on_made_trees(tmp_path):
    (tmp_path / "manifest.yaml").write_text("object_type: [2, 3]\n")
    (tmp_path / "training-template.yaml").write_text("a: 1\n")  # ignored with a list
    (tmp_path / "semantic-seg").mkdir()
    (tmp_path / "semantic-seg" / "infer-template.yaml").write_text("b: 2\n")
    assert inspect_image(tmp_path) == {3: {"infer": {"b": 2}}}  # det/ has no template: type 2 dropped
    (tmp_path / "manifest.yaml").write_text("object_type: [2, 7]\n")
    with pytest.raises(KeyError):
        inspect_image(tmp_path)
    (tmp_path / "manifest.yaml").write_text("object_type: [2]\n")
    with pytest.raises(ImageRefused, match="any configuration"):
        inspect_image(tmp_path)
    (tmp_path / "manifest.yaml").unlink()  # no manifest: detection, root templates
    assert inspect_image(tmp_path) == {2: {"training": {"a": 1}}}


# --- executors of several object types -----------------------------------------------------------------------


class Segmenter:
    """Executors of types 3 and 4 with their own keys; ``annotation_formats`` left at its detection default on
    the semantic one (its training template must still ask for seg-coco)."""

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        every = {TaskKind.TRAINING, TaskKind.MINING, TaskKind.INFER}
        return [
            ExecutorSpec(name="semantic", tasks=every, object_types={3},
                         templates={TaskKind.TRAINING: (Param("crop_size", 512, "training crop side"),)}),
            ExecutorSpec(name="instance", tasks={TaskKind.TRAINING, TaskKind.INFER}, object_types={4},
                         annotation_formats=("seg-coco",),
                         templates={TaskKind.TRAINING: (Param("mask_head", "fcn", "mask head"),)}),
        ]

    @ymir_runner.hookimpl
    def ymir_runner_train(self, context):
        raise NotImplementedError

    @ymir_runner.hookimpl
    def ymir_runner_mine(self, context):
        raise NotImplementedError

    @ymir_runner.hookimpl
    def ymir_runner_infer(self, context):
        raise NotImplementedError


class Both:
    """One executor serving detection and semantic segmentation."""

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ExecutorSpec(name="both", tasks={TaskKind.TRAINING}, object_types={2, 3},
                             annotation_formats=("seg-coco", "det-voc"),
                             templates={TaskKind.TRAINING: (Param("epochs", 5, "passes"),)})]

    @ymir_runner.hookimpl
    def ymir_runner_train(self, context):
        raise NotImplementedError


def test_several_object_types_write_the_manifest_list_and_one_folder_per_type(ymir_registry, tmp_path):
    ymir_registry.register(toy_plugin, "toy")
    ymir_registry.register(Segmenter(), "seg")
    written = write_img_man(str(tmp_path), ymir_registry)
    manifest_text = (tmp_path / "manifest.yaml").read_text()
    assert "object_type: [2, 3, 4]" in manifest_text
    assert yaml.safe_load(manifest_text)["object_type"] == [2, 3, 4]
    assert not list(tmp_path.glob("*-template.yaml")), "root templates are ignored with a list: none written"
    assert sorted(os.path.relpath(path, tmp_path) for path in written) == [
        "det/infer-template.yaml", "det/mining-template.yaml", "det/training-template.yaml",
        "instance-seg/infer-template.yaml", "instance-seg/training-template.yaml",
        "manifest.yaml",
        "semantic-seg/infer-template.yaml", "semantic-seg/mining-template.yaml",
        "semantic-seg/training-template.yaml"]

    platform = inspect_image(tmp_path)
    assert {kind: sorted(tasks) for kind, tasks in platform.items()} == {
        2: ["infer", "mining", "training"], 3: ["infer", "mining", "training"], 4: ["infer", "training"]}
    assert platform[2]["training"]["export_format"] == "ark:raw" and platform[2]["training"]["epochs"] == 2
    assert platform[3]["training"]["export_format"] == "seg-coco:raw"  # the executor declared det formats only
    assert platform[4]["training"]["export_format"] == "seg-coco:raw"
    assert platform[3]["training"]["crop_size"] == 512 and "epochs" not in platform[3]["training"]
    assert platform[4]["training"]["mask_head"] == "fcn" and "crop_size" not in platform[4]["training"]
    assert "plugin" not in platform[3]["training"]  # one executor per type here: nothing to choose
    header = (tmp_path / "instance-seg" / "infer-template.yaml").read_text().splitlines()[0]
    assert header.startswith("# infer hyper-parameters for object_type 4 (instance segmentation) (written by")


def test_each_types_template_reads_back_as_its_executors_config(ymir_registry, tmp_path):
    ymir_registry.register(toy_plugin, "toy")
    ymir_registry.register(Segmenter(), "seg")
    write_img_man(str(tmp_path), ymir_registry)
    platform = inspect_image(tmp_path)
    for executor in ymir_registry.executors():
        for kind in executor.spec.object_types:
            for task in executor.spec.tasks:
                template = platform[kind][str(task)]
                config = parse_config(template, executor.spec.defaults(task))
                assert dict(config.hyper) == executor.spec.defaults(task)


def test_one_executor_of_two_types_gets_each_types_format(ymir_registry, tmp_path):
    ymir_registry.register(Both(), "both")
    write_img_man(str(tmp_path), ymir_registry)
    platform = inspect_image(tmp_path)
    assert platform[2]["training"]["export_format"] == "voc:raw"
    assert platform[3]["training"]["export_format"] == "seg-coco:raw"
    assert platform[2]["training"]["epochs"] == platform[3]["training"]["epochs"] == 5
    comment = (tmp_path / "semantic-seg" / "training-template.yaml").read_text()
    assert "seg-coco:raw" in comment and "voc:raw" not in comment  # a format without masks is never offered


def test_one_object_type_is_unchanged_and_stale_trees_are_cleaned(ymir_registry, tmp_path):
    ymir_registry.register(toy_plugin, "toy")
    ymir_registry.register(Segmenter(), "seg")
    write_img_man(str(tmp_path), ymir_registry)  # folders
    (tmp_path / "semantic-seg" / "notes.txt").write_text("mine\n")  # not a template: kept
    write_img_man(str(tmp_path), ymir_registry, object_type=2)
    manifest = yaml.safe_load((tmp_path / "manifest.yaml").read_text())
    assert manifest == {"object_type": 2, "enable_livecode": False}
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "infer-template.yaml", "manifest.yaml", "mining-template.yaml", "semantic-seg", "training-template.yaml"]
    assert os.listdir(tmp_path / "semantic-seg") == ["notes.txt"]
    assert sorted(inspect_image(tmp_path)[2]) == ["infer", "mining", "training"]

    write_img_man(str(tmp_path), ymir_registry)  # back to the list: the root templates go
    assert not list(tmp_path.glob("*-template.yaml"))
    assert sorted(inspect_image(tmp_path)) == [2, 3, 4]


def test_a_segmentation_only_image_uses_root_templates_with_seg_coco(ymir_registry, tmp_path):
    ymir_registry.register(Segmenter(), "seg")
    write_img_man(str(tmp_path), ymir_registry, object_type=4)
    platform = inspect_image(tmp_path)
    assert sorted(platform) == [4] and platform[4]["training"]["export_format"] == "seg-coco:raw"
    assert yaml.safe_load((tmp_path / "manifest.yaml").read_text())["object_type"] == 4


def test_the_cli_prints_every_file_of_the_tree(ymir_registry, tmp_path, capsys):
    ymir_registry.register(toy_plugin, "toy")
    ymir_registry.register(Segmenter(), "seg")
    from ymir_runner.cli import build_parser

    args = build_parser(ymir_registry).parse_args(["img-man", "--out", str(tmp_path)])
    assert args.handler(args) == 0
    printed = capsys.readouterr().out.split()
    assert str(tmp_path / "instance-seg" / "training-template.yaml") in printed and len(printed) == 9
    assert main(["img-man", "--out", str(tmp_path / "x"), "--object-type", "9"]) == 2
    assert "object_type 9" in capsys.readouterr().err


def test_the_folder_names_are_the_platforms():
    assert {kind: PLATFORM_DIR_NAMES[kind] for kind in OBJECT_TYPE_FOLDERS} == OBJECT_TYPE_FOLDERS


@pytest.mark.parametrize("dockerfile", sorted(path.name for path in (REPO / "docker").glob("Dockerfile*")))
def test_every_image_gets_the_whole_img_man_tree(dockerfile):
    """A COPY of some files (``img-man/*.yaml``) would leave a list manifest's folders out of the image."""
    steps = dockerfile_instructions(str(REPO / "docker" / dockerfile))
    copies = [args.split() for name, args in steps if name == "COPY" and "img-man" in args]
    writes = [args for name, args in steps if name == "RUN" and "ymir-runner img-man --out /img-man" in args]
    assert copies or writes, f"{dockerfile} puts no /img-man in the image"
    assert all(parts[-2:] == ["img-man/", "/img-man/"] for parts in copies), copies


def test_an_object_type_the_platform_has_no_folder_for_is_refused(ymir_registry, tmp_path):
    class Odd:
        @ymir_runner.hookimpl
        def ymir_runner_register_executors(self):
            return [ExecutorSpec(name="odd", tasks={TaskKind.INFER}, object_types={2, 7})]

        @ymir_runner.hookimpl
        def ymir_runner_infer(self, context):
            raise NotImplementedError

    ymir_registry.register(Odd(), "odd")
    with pytest.raises(ymir_runner.ConfigError, match=r"object types \[7\]"):  # the platform raises on it
        write_img_man(str(tmp_path), ymir_registry)
    assert not (tmp_path / "manifest.yaml").exists()
