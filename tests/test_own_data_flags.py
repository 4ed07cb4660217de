"""Own data, first hour: flags and files that point the wrong way are refused before anything is written, with
a message that points the right way; `inspect` stops on what `run` stops on; misspelt config keys are named."""

from __future__ import annotations

import os
import shutil

import pytest
import toy_plugin
import yaml

from ymir_runner import ConfigError, plugins, sandbox
from ymir_runner.cli import main
from ymir_runner.dispatcher import run
from ymir_runner.sandbox import build_sandbox
from ymir_runner.testing import TaskTree, plugin_registry, write_png

NOT_A_CONTAINER = not os.path.isdir("/in") and not os.path.isdir("/out")


@pytest.fixture
def registry(monkeypatch):
    """The toy executor, for `run` and for the commands that build their own registry (`inspect`, `sandbox`)."""
    registry = plugin_registry({"toy": toy_plugin})
    monkeypatch.setattr(plugins, "build_plugin_manager", lambda **_: registry)
    monkeypatch.setattr(sandbox.log, "handlers", [])  # the handler a CLI call adds leaves with the test
    monkeypatch.setattr(sandbox.log, "propagate", True)
    return registry


def yolo_folder(folder) -> str:
    """A YOLO dataset a user would have: images, one label file each, classes.txt."""
    os.makedirs(folder)
    for index in range(6):
        write_png(os.path.join(folder, f"img_{index:04d}.png"), 40, 30, color=(20 * index, 90, 160))
        with open(os.path.join(folder, f"img_{index:04d}.txt"), "w") as stream:
            stream.write(f"{index % 2} 0.5 0.5 0.4 0.4\n")
    with open(os.path.join(folder, "classes.txt"), "w") as stream:
        stream.write("cat\ndog\n")
    return str(folder)


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def tree_files(folder) -> dict[str, bytes]:
    found = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as stream:
                found[os.path.relpath(path, folder)] = stream.read()
    return found


# --- --root and container paths ------------------------------------------------------------------------------

@pytest.mark.skipif(not NOT_A_CONTAINER, reason="this machine has /in or /out: it may be a container")
def test_a_container_path_tree_run_without_root_is_refused_before_anything_is_written(tmp_path, registry, capfd):
    """`sandbox --container-paths` then `run` without --root once wrote /out/monitor.txt at the host's root and
    blamed /in/config.yaml."""
    work = tmp_path / "work"
    summary = build_sandbox(yolo_folder(tmp_path / "data"), str(work), registry=registry, container_paths=True)
    assert run(summary.env_file, registry=registry) == 1
    err = capfd.readouterr().err
    assert last_line(err) == (f"ymir-runner: error 300001: env.yaml names container paths under /in and /out, "
                              f"which do not exist here: this is not the platform's container; to run a local tree "
                              f"written with container paths, pass --root {work}")
    assert not os.path.exists("/out") and not os.path.exists("/in")
    assert not os.listdir(work / "out" / "tensorboard")
    assert run(summary.env_file, root=str(work), registry=registry) == 0  # what the message says works


def test_root_on_a_host_path_tree_is_an_error_and_the_original_stays_untouched(tmp_path, registry, capfd):
    """`run --root COPY` on a sandbox tree (host paths) once ignored --root and overwrote the ORIGINAL tree."""
    work = tmp_path / "work"
    summary = build_sandbox(yolo_folder(tmp_path / "data"), str(work), registry=registry)
    assert run(summary.env_file, registry=registry) == 0
    before = tree_files(work / "out")
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    assert main(["run", "--env", str(copy / "in" / "env.yaml"), "--root", str(copy)]) == 1
    err = capfd.readouterr().err
    assert "ymir-runner: error 300001: --root" in last_line(err)
    assert "cannot apply to this env.yaml" in last_line(err) and "--container-paths" in last_line(err)
    assert tree_files(work / "out") == before  # not one byte of the original changed
    assert tree_files(copy / "out") == before  # nor of the copy: nothing was written anywhere


def test_verify_root_means_what_run_root_means(tmp_path, registry, capsys):
    data = yolo_folder(tmp_path / "data")
    host = build_sandbox(data, str(tmp_path / "host"), registry=registry)
    container = build_sandbox(data, str(tmp_path / "cont"), registry=registry, container_paths=True)
    assert run(host.env_file, registry=registry) == 0
    assert run(container.env_file, root=container.work_dir, registry=registry) == 0
    capsys.readouterr()
    # README: `ymir-runner verify WORK/out --env WORK/in/env.yaml --root WORK` for a --container-paths tree
    assert main(["verify", f"{container.work_dir}/out", "--env", container.env_file,
                 "--root", container.work_dir]) == 0
    assert main(["verify", f"{host.work_dir}/out", "--env", host.env_file]) == 0
    capsys.readouterr()
    assert main(["verify", f"{host.work_dir}/out", "--env", host.env_file, "--root", host.work_dir]) == 2
    err = capsys.readouterr().err
    assert "--root cannot apply; leave it out" in err and "input.root_dir" in err
    assert main(["inspect", "--env", host.env_file, "--root", host.work_dir]) == 2
    assert "cannot apply to this env.yaml" in capsys.readouterr().err


# --- the wrong file as --env --------------------------------------------------------------------------------------

def test_config_yaml_given_as_env_says_so_in_run_inspect_and_verify(tmp_path, registry, capfd):
    summary = build_sandbox(yolo_folder(tmp_path / "data"), str(tmp_path / "work"), registry=registry)
    config_file = os.path.join(summary.work_dir, "in", "config.yaml")
    assert run(config_file, registry=registry) == 1
    line = last_line(capfd.readouterr().err)
    assert line.startswith(f"ymir-runner: error 300001: {config_file} is a config.yaml (it holds ")
    assert line.endswith(f"not an env.yaml: --env takes the task's env.yaml, which names config.yaml; pass --env "
                         f"{summary.env_file}")
    assert not os.path.exists(os.path.join(summary.work_dir, "out", "monitor.txt"))
    assert main(["inspect", "--env", config_file]) == 2
    assert "is a config.yaml" in capfd.readouterr().err
    assert main(["verify", os.path.join(summary.work_dir, "out"), "--env", config_file]) == 2
    assert "is a config.yaml" in capfd.readouterr().err


# --- inspect stops on what run stops on ------------------------------------------------------------------------------

def test_inspect_reports_what_run_would_stop_on_with_the_same_message(tmp_path, registry, capfd):
    tree = TaskTree(str(tmp_path / "t"))
    tree.config.pop("class_names")
    tree.write_config()
    outcome = tree.run(registry)
    assert outcome.exit_code == 1
    run_line = outcome.last_stderr_line
    assert run_line == "ymir-runner: error 300001: config key 'class_names' is empty: a training task needs classes"
    assert main(["inspect", "--env", tree.env_file, "--root", tree.root]) == 1
    err = capfd.readouterr().err
    assert run_line.replace("ymir-runner:", "ymir-runner inspect:") in err.splitlines()
    assert last_line(err) == "ymir-runner inspect: `ymir-runner run` would stop on 1 problem(s) above"


def test_inspect_lists_every_problem_not_only_the_first(tmp_path, registry, capfd):
    tree = TaskTree(str(tmp_path / "t"), config={"epochs": "many", "optimizer": "lion"})
    tree.config.pop("class_names")
    tree.write_config()
    assert main(["inspect", "--env", tree.env_file, "--root", tree.root]) == 1
    errors = [line for line in capfd.readouterr().err.splitlines() if "error 300001" in line]
    assert len(errors) == 2
    assert "config key 'epochs': 'many' is not a valid integer" in errors[0]
    assert "config key 'class_names' is empty" in errors[1]
    tree.config["epochs"] = 3
    tree.config["class_names"] = ["cat", "dog"]
    tree.write_config()
    assert main(["inspect", "--env", tree.env_file, "--root", tree.root]) == 1
    errors = [line for line in capfd.readouterr().err.splitlines() if "error 300001" in line]
    assert len(errors) == 1 and "'optimizer': 'lion' is not one of 'sgd', 'adamw'" in errors[0]


# --- misspelt config keys ------------------------------------------------------------------------------------------

def test_a_misspelt_key_is_named_with_the_closest_in_run_and_inspect_but_never_stops_a_task(tmp_path, registry,
                                                                                            capfd):
    tree = TaskTree(str(tmp_path / "t"), config={"epoch": 5, "platform_future_key": True})
    warning = ("config key 'epoch' is not a template key of executor 'toy' nor one the platform writes: the "
               "executor does not read it (did you mean 'epochs'?)")
    outcome = tree.run(registry)
    assert outcome.exit_code == 0
    err = outcome.stderr
    assert warning in err
    assert "'platform_future_key' is not a template key of executor 'toy'" in err
    assert "did you mean" not in err.split("platform_future_key")[1].splitlines()[0]
    assert sorted(outcome.result_yaml()["model_stages"]) == ["epoch_1", "epoch_2"]  # epochs stayed 2
    assert main(["inspect", "--env", tree.env_file, "--root", tree.root]) == 0
    assert f"warning: {warning}" in capfd.readouterr().out


def test_sandbox_set_on_the_command_line_refuses_a_misspelt_key(tmp_path, registry, capsys):
    data = yolo_folder(tmp_path / "data")
    work = str(tmp_path / "work")
    assert main(["sandbox", data, "--out", work, "--set", "epoch=5"]) == 2
    assert "did you mean 'epochs'?); pass --force to write it anyway" in capsys.readouterr().err
    assert not os.path.exists(work)
    assert main(["sandbox", data, "--out", work, "--set", "epochs=5"]) == 0
    with open(os.path.join(work, "in", "config.yaml")) as stream:
        assert yaml.safe_load(stream)["epochs"] == 5


def test_a_training_set_without_a_single_box_stops_with_300002_in_run_and_inspect(tmp_path, registry, capfd):
    """Every annotation file empty (a folder of unlabelled photos built with --format images, labels lost in an
    export): stages of mAP 0 would look like a trained model. Images without boxes beside labelled ones are
    negatives and train as before."""
    tree = TaskTree(str(tmp_path / "t"))
    for annotation in tree.annotations:
        with open(tree.local(annotation), "w"):
            pass
    outcome = tree.run(registry)
    assert outcome.exit_code == 1 and (outcome.state, outcome.return_code) == (4, 300002)
    assert outcome.last_stderr_line == ("ymir-runner: error 300002: none of the 2 usable training images has a box: "
                                        "there is nothing to learn; check the annotations and config key "
                                        "'export_format' (got 'ark:raw')")
    assert main(["inspect", "--env", tree.env_file, "--root", tree.root]) == 1
    captured = capfd.readouterr()
    assert "training: 2 usable images of 2 index lines" in captured.out
    assert "error 300002: none of the 2 usable training images has a box" in captured.err
    negatives = TaskTree(str(tmp_path / "n"))
    with open(negatives.local(negatives.annotations[0]), "w"):
        pass
    assert negatives.run(registry).exit_code == 0


def test_a_split_that_leaves_every_box_in_val_is_warned_about_before_the_run_stops_on_it(tmp_path, registry,
                                                                                          capsys):
    data = tmp_path / "data"
    for part, labelled in (("train", False), ("val", True)):
        os.makedirs(data / "images" / part)
        os.makedirs(data / "labels" / part)
        write_png(str(data / "images" / part / f"{part}.png"), 40, 30, color=(10, 200 if labelled else 20, 30))
        (data / "labels" / part / f"{part}.txt").write_text("0 0.5 0.5 0.4 0.4\n" if labelled else "")
    (data / "classes.txt").write_text("cat\n")
    work = str(tmp_path / "work")
    assert main(["sandbox", str(data), "--out", work]) == 0
    captured = capsys.readouterr()
    assert ("puts all 1 image(s) with boxes in val and none in train: `ymir-runner run` will stop, there is nothing "
            "to learn; change --seed or --val-ratio, or label more images") in captured.err
    assert "warnings: 1 (1 train split without a box)" in captured.out
    assert main(["run", "--env", os.path.join(work, "in", "env.yaml")]) == 1
    assert "error 300002: none of the 1 usable training images has a box" in last_line(capsys.readouterr().err)


def test_an_empty_validation_set_is_warned_about_in_inspect_and_run(tmp_path, registry, capfd):
    """`sandbox --val-ratio 0` (or a platform task without validation images): stage metrics would come from the
    training images, which inspect and the run's dataset report must say."""
    tree = TaskTree(str(tmp_path / "t"))
    with open(tree.local("/in/val-index.tsv"), "w"):
        pass
    warning = "the validation set is empty: a plugin has no held-out data to measure stages on"
    assert main(["inspect", "--env", tree.env_file, "--root", tree.root]) == 0
    assert warning in capfd.readouterr().out
    outcome = tree.run(registry)
    assert outcome.exit_code == 0 and f"dataset: {warning}" in outcome.stderr


def test_a_copied_host_path_tree_is_refused_before_it_touches_the_original(tmp_path, registry, capfd):
    """`cp -a work copy; ymir-runner run --env copy/in/env.yaml` once read the original's config and moved the
    original's results aside."""
    work = tmp_path / "work"
    summary = build_sandbox(yolo_folder(tmp_path / "data"), str(work), registry=registry)
    assert run(summary.env_file, registry=registry) == 0
    before = tree_files(work / "out")
    shutil.copytree(work, tmp_path / "copy")
    assert run(str(tmp_path / "copy" / "in" / "env.yaml"), registry=registry) == 1
    line = last_line(capfd.readouterr().err)
    assert line.startswith(f"ymir-runner: error 300001: {tmp_path}/copy/in/env.yaml names the config file "
                           f"{work}/in/config.yaml, not the config.yaml beside it: a copy of a work tree written "
                           f"with host paths still points at the original (its outputs would go to {work}/out)")
    assert tree_files(work / "out") == before


def test_a_mining_config_yaml_as_env_is_named_in_every_command(tmp_path, registry, capfd):
    """A mining + inference config.yaml holds run_mining and run_infer as env.yaml does: still a config.yaml."""
    trained = TaskTree(str(tmp_path / "trained"))
    assert trained.run(registry).exit_code == 0
    tree = TaskTree(str(tmp_path / "t"), kinds=["mining", "infer"], config={"run_mining": True, "run_infer": True},
                    models_from=trained.local("/out/models"))
    assert tree.run(registry).exit_code == 0
    config_file = tree.local("/in/config.yaml")
    for command in (["run", "--env", config_file], ["inspect", "--env", config_file],
                    ["results", tree.local("/out"), "--env", config_file],
                    ["verify", tree.local("/out"), "--env", config_file]):
        assert main(command) != 0
        assert "is a config.yaml (it holds class_names" in capfd.readouterr().err, command


def test_verify_on_a_container_path_tree_without_root_names_the_root_to_pass(tmp_path, registry, capsys):
    tree = TaskTree(str(tmp_path / "t"))
    assert tree.run(registry).exit_code == 0
    capsys.readouterr()
    assert main(["verify", tree.local("/out"), "--env", tree.env_file]) == 2
    assert f"pass --root {tree.root} (the folder holding in/ and out/)" in capsys.readouterr().err
    assert main(["verify", tree.local("/out"), "--env", tree.env_file, "--root", tree.root]) == 0


def test_sandbox_force_never_replaces_the_tree_of_a_running_task(tmp_path, registry):
    """`sandbox --force` under a training still running once deleted its images (the run then failed with 'none of
    the 15 training images can be decoded'): it takes the lock a run holds."""
    from ymir_runner.protocol.outlock import hold_output_lock

    data = yolo_folder(tmp_path / "data")
    work = tmp_path / "work"
    build_sandbox(data, str(work), registry=registry)
    assert not (work / "out" / ".ymir-runner.lock").exists()  # no file of the sandbox's uid for a run of another
    before = tree_files(work / "in")
    with hold_output_lock(str(work / "out")):  # a run of this tree, still going
        with pytest.raises(ConfigError, match=r"is in use by another ymir-runner run .* Nothing was written"):
            build_sandbox(data, str(work), registry=registry, force=True, seed=3)
    assert tree_files(work / "in") == before
    build_sandbox(data, str(work), registry=registry, force=True, seed=3)  # once it has ended


def test_a_mining_sandbox_takes_the_classes_the_model_was_trained_with(tmp_path, registry, capsys):
    """README's `--classes person,car` on a model trained on cat, dog built a tree whose run stopped with 300004:
    the classes of the training tree the model comes from are used, and other --classes are refused."""
    trained = build_sandbox(yolo_folder(tmp_path / "data"), str(tmp_path / "work"), registry=registry)
    assert run(trained.env_file, registry=registry) == 0
    new = tmp_path / "new"
    new.mkdir()
    write_png(str(new / "a.png"), 40, 30)
    models = str(tmp_path / "work" / "out" / "models")
    capsys.readouterr()
    assert main(["sandbox", str(new), "--out", str(tmp_path / "refused"), "--task", "mining,infer", "--model",
                 models, "--classes", "person,car"]) == 2
    assert (f"--classes person,car is not the class list the model was trained with (cat,dog, in "
            f"{tmp_path}/work/in/config.yaml)") in capsys.readouterr().err
    mining = build_sandbox(str(new), str(tmp_path / "mine"), registry=registry, tasks=["mining", "infer"],
                           model=models)
    assert mining.class_names == ("cat", "dog")
    assert run(mining.env_file, registry=registry) == 0


def test_a_folder_of_several_datasets_is_refused_naming_each_format(tmp_path, registry, capsys):
    """`sandbox data` on a folder holding voc/, yolo/ and coco/ once silently took the COCO json and dropped the
    rest: several annotation formats need --format."""
    data = tmp_path / "data"
    yolo_folder(data / "yolo")
    os.makedirs(data / "voc")
    write_png(str(data / "voc" / "a.png"), 40, 30)
    (data / "voc" / "a.xml").write_text("<annotation><filename>a.png</filename><object><name>cat</name><bndbox>"
                                        "<xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>"
                                        "</annotation>")
    assert main(["sandbox", str(data), "--out", str(tmp_path / "work")]) == 2
    err = capsys.readouterr().err
    assert "holds annotations of several formats (voc: 1 file(s), e.g. voc/a.xml; yolo: 1 file(s), e.g. " in err
    assert "pass --format voc or --format yolo, or point SOURCE at one dataset's folder" in err
    assert not (tmp_path / "work").exists()
    assert main(["sandbox", str(data), "--out", str(tmp_path / "work"), "--format", "yolo"]) == 0


def test_an_image_no_coco_json_lists_is_counted_and_named(tmp_path, registry, capsys):
    import json

    data = tmp_path / "coco"
    os.makedirs(data / "images")
    for name in ("a.png", "b.png", "extra.png"):
        write_png(str(data / "images" / name), 40, 30)
    (data / "instances.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 30},
                   {"id": 2, "file_name": "b.png", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10]},
                        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [2, 2, 10, 10]}],
        "categories": [{"id": 1, "name": "cat"}]}))
    assert main(["sandbox", str(data), "--out", str(tmp_path / "work")]) == 0
    captured = capsys.readouterr()
    assert "skipped: 1 (1 image not in the COCO json)" in captured.out
    assert f"skipped (image not in the COCO json) at {data}/images/extra.png" in captured.err


def test_identical_images_in_both_parts_of_a_kept_split_stay_in_val_with_a_warning(tmp_path, registry, capsys):
    data = tmp_path / "data"
    for part in ("train", "val"):
        for index in range(3):
            os.makedirs(data / "images" / part, exist_ok=True)
            os.makedirs(data / "labels" / part, exist_ok=True)
            write_png(str(data / "images" / part / f"{part}{index}.png"), 40, 30,
                      color=(40 * index, 90 if part == "train" else 180, 30))
            (data / "labels" / part / f"{part}{index}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    shutil.copyfile(data / "images" / "val" / "val0.png", data / "images" / "train" / "copy_of_val0.png")
    (data / "labels" / "train" / "copy_of_val0.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    (data / "classes.txt").write_text("cat\n")
    work = tmp_path / "work"
    assert main(["sandbox", str(data), "--out", str(work)]) == 0
    captured = capsys.readouterr()
    assert "split: kept from SOURCE" in captured.out and "train 3, val 3" in captured.out
    assert "identical images in both parts of SOURCE's split" in captured.err and "copy_of_val0.png" in captured.err


@pytest.mark.parametrize("count, ratio, warning", [
    (1, "0.2", "1 image(s) in both train and val (SOURCE has too few images to hold one out)"),
    (6, "0", "val is empty (--val-ratio 0, or SOURCE's split has no val part)"),
])
def test_a_split_whose_validation_would_mislead_is_warned_about(tmp_path, registry, capsys, count, ratio, warning):
    data = yolo_folder(tmp_path / "data")
    for index in range(count, 6):  # keep the first `count` images
        for suffix in (".png", ".txt"):
            os.remove(os.path.join(data, f"img_{index:04d}{suffix}"))
    assert main(["sandbox", data, "--out", str(tmp_path / "work"), "--val-ratio", ratio]) == 0
    captured = capsys.readouterr()
    assert warning in captured.err
    assert "warnings: 1 (1 " in captured.out


def test_sandbox_gpu_count_without_gpu_id_says_the_task_runs_on_the_cpu(tmp_path, registry, capsys):
    assert main(["sandbox", yolo_folder(tmp_path / "data"), "--out", str(tmp_path / "work"), "--set",
                 "gpu_count=2"]) == 0
    assert ("--set gpu_count=2 without gpu_id: the platform writes gpu_id with the GPUs it allocated; with gpu_id '' "
            "the task runs on the CPU; pass --set gpu_id=0,1") in capsys.readouterr().err


def test_an_unknown_option_is_told_by_its_subcommand_with_the_closest_option(tmp_path, registry, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["sandbox", str(tmp_path), "--out", str(tmp_path / "work"), "--val_ratio", "0.3"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "usage: ymir-runner sandbox" in err
    assert err.strip().splitlines()[-1] == ("ymir-runner sandbox: error: unrecognized arguments: --val_ratio 0.3 "
                                            "(--val_ratio: did you mean --val-ratio?)")
