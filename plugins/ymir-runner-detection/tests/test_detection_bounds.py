"""Unbounded values (issue 24): every number that sizes memory or time has a declared bound, checked by the core
before the task starts; a checkpoint whose recorded architecture is implausible is 300004 naming the file; torch's
allocator failing is an out-of-memory error naming what it could not allocate.

Runs that would exhaust memory if a check were missing run in a process of their own under an address-space cap."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest
import torch
import yaml
from helpers import FAST, last_line, run

from ymir_runner import ReturnCode
from ymir_runner.errors import classify, one_line
from ymir_runner_detection.checkpoint import load_checkpoint, save_checkpoint
from ymir_runner_detection.demo import write_task
from ymir_runner_detection.engine.model import build_model
from ymir_runner_detection.templates import INFER, TRAINING

CAP = 3 << 30


@pytest.mark.parametrize("key, value, bound", [
    ("batch_size_per_gpu", 100000, "not an integer from 1 to 512"),
    ("img_size", 32000, "not a multiple of 32 from 32 to 2048"),
    ("epochs", 10**9, "not an integer from 1 to 10000 or auto"),
    ("num_workers_per_gpu", 1000, "not an integer from 0 to 64 or auto"),
    ("max_detections", 10**7, "not an integer from 1 to 10000 or auto"),
    ("min_steps", 10**12, "not an integer from 0 to 1000000"),
    ("learning_rate", 5, "not a number above 0 and at most 1"),
    ("seed", -1, "not an integer from 0 to 4294967295"),
    ("mosaic", 1.5, "not a number from 0 to 1"),
])
def test_an_unbounded_training_value_is_300001_naming_the_key_and_its_bound(tmp_path, capsys, key, value, bound):
    env_file = write_task(str(tmp_path), config=dict(FAST, **{key: value}), n_train=4, n_val=2)
    assert run(env_file) == 1
    line = last_line(capsys)
    assert line == f"ymir-runner: error {int(ReturnCode.CONFIG)}: config key {key!r}: {value} is {bound}"
    assert not os.path.exists(tmp_path / "out" / "models" / "result.yaml")  # refused before training


@pytest.mark.parametrize("key, value", [("img_size", 32000), ("batch_size_per_gpu", 100000),
                                        ("max_detections", 10**7), ("num_workers_per_gpu", 1000)])
def test_an_unbounded_inference_value_is_300001_naming_the_key(tmp_path, capsys, key, value):
    env_file = write_task(str(tmp_path), kinds=("infer",), config={key: value}, n_train=0, n_val=0, n_candidates=2)
    assert run(env_file) == 1
    line = last_line(capsys)
    assert line.startswith(f"ymir-runner: error {int(ReturnCode.CONFIG)}: config key {key!r}: {value} is not ")


def test_every_numeric_key_of_the_templates_is_bounded():
    for param in (*TRAINING, *INFER):
        numeric = param.auto or (isinstance(param.default, (int, float)) and not isinstance(param.default, bool))
        if numeric:
            lower = param.minimum if param.minimum is not None else param.exclusive_minimum
            upper = param.maximum if param.maximum is not None else param.exclusive_maximum
            assert lower is not None and upper is not None, param.name


# --- checkpoints whose recorded architecture is implausible -----------------------------------------------------

def infer_task(tmp_path, tamper) -> tuple[str, str]:
    """An inference task whose model is a nano checkpoint of the task's classes, changed by ``tamper(dict)``."""
    env_file = write_task(str(tmp_path), kinds=("infer",), config={"num_workers_per_gpu": 0}, n_train=0, n_val=0,
                          n_candidates=2)
    config_file = tmp_path / "in" / "config.yaml"
    config = yaml.safe_load(config_file.read_text())
    path = str(tmp_path / "in" / "models" / "model.pt")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_checkpoint(build_model("nano", len(config["class_names"])), path, class_names=config["class_names"],
                    img_size=192, epoch=1)
    data = torch.load(path, weights_only=True)
    tamper(data)
    torch.save(data, path)
    config["model_params_path"] = [path]
    config_file.write_text(yaml.safe_dump(config))
    return env_file, path


def set_width(data):
    spec = data["model_config"]["spec"]
    spec["widths"] = (*spec["widths"][:-1], 200000)


def set_img_size(data):
    data["img_size"] = 320000


def grow_neck(data):  # plausible numbers, but not the architecture of its weights
    data["model_config"]["spec"]["neck_width"] = 1024


@pytest.mark.parametrize("tamper, says", [
    (set_width, "records an implausible architecture: widths [16, 32, 64, 96, 200000, 48, 48] (at most 4096)"),
    (set_img_size, "records img_size 320000: this plugin trains at multiples of 32 from 32 to 2048"),
    (grow_neck, "its weights do not fit its recorded architecture"),
])
def test_an_implausible_checkpoint_is_300004_naming_the_file(tmp_path, tamper, says):
    """In a process of its own under a 3 GiB cap: before, width 200000 and img_size 320000 exhausted memory."""
    env_file, model = infer_task(tmp_path, tamper)
    done = subprocess.run([sys.executable, "-m", "ymir_runner", "run", "--env", env_file], capture_output=True,
                          text=True, timeout=300, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP)))
    assert done.returncode == 1, done.stderr[-3000:]
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"ymir-runner: error {int(ReturnCode.MODEL)}: model file {model}"), line
    assert says in line
    with pytest.raises(Exception, match="model file"):
        load_checkpoint(model)


def test_the_checkpoints_this_plugin_writes_pass_the_check(tmp_path):
    for size in ("nano", "small", "resnet18"):
        path = str(tmp_path / f"{size}.pt")
        save_checkpoint(build_model(size, 3), path, class_names=["a", "b", "c"], img_size=320, epoch=1)
        assert load_checkpoint(path).model_config["size"] == size


# --- torch's allocator ----------------------------------------------------------------------------------------

def test_torchs_allocation_failure_is_out_of_memory_naming_the_size():
    code = ("import resource, torch\n"
            f"resource.setrlimit(resource.RLIMIT_AS, ({CAP}, {CAP}))\n"
            "try:\n    torch.empty(2**36)\nexcept RuntimeError as error:\n    print(error)\n")
    message = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.strip()
    assert "allocate" in message, message  # torch's own words, whatever its build
    error = RuntimeError(message)
    assert classify(error) is ReturnCode.OUT_OF_MEMORY
    assert one_line(error).startswith("out of memory: torch's DefaultCPUAllocator could not get 256.0 GiB "
                                      "(274877906944 bytes) for one tensor")
