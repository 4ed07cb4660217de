"""The core's face for a supervised executor (the ``sdk`` plugin's ``sdk-run``): the return code a log line names
(``classify_text``), the env.yaml a subprocess reads (``write_sdk_env``), a command that names its executor
(``run(executor=...)``) and executors chosen only by name (``ExecutorSpec.named_only``) that read config.yaml
themselves (``ExecutorSpec.reads_own_config``)."""

from __future__ import annotations

import os

import pytest
import yaml

import ymir_runner
from ymir_runner import ExecutorSpec, ReturnCode, TaskKind, classify_text, write_sdk_env
from ymir_runner.imgman import template_defaults
from ymir_runner.protocol.env import load_env
from ymir_runner.testing import TaskTree, plugin_registry


@pytest.mark.parametrize(("line", "code"), [
    ("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total capacity)",
     ReturnCode.OUT_OF_MEMORY),
    ("torch.cuda.OutOfMemoryError: CUDA error", ReturnCode.OUT_OF_MEMORY),
    ("MemoryError", ReturnCode.OUT_OF_MEMORY),
    ("RuntimeError: CUDA error: invalid device ordinal", ReturnCode.GPU_MISMATCH),
    ("RuntimeError: No CUDA GPUs are available", ReturnCode.NO_GPU),
    ("requests.exceptions.ConnectionError: HTTPSConnectionPool(host='github.com', port=443)", ReturnCode.NETWORK),
    ("urllib.error.URLError: <urlopen error [Errno -2] Name or service not known>", ReturnCode.NETWORK),
    ("socket.gaierror: [Errno -3] Temporary failure in name resolution", ReturnCode.NETWORK),
])
def test_classify_text_names_the_code_of_a_known_failure(line, code):
    assert classify_text(line) == code


@pytest.mark.parametrize("line", [
    "ValueError: could not convert string to float: 'x'",
    "subprocess.CalledProcessError: Command '['python']' returned non-zero exit status 1.",
    ""])
def test_classify_text_names_nothing_for_other_failures(line):
    assert classify_text(line) is None


def test_write_sdk_env_stages_outputs_and_reroots_the_index_files(tmp_path):
    tree = TaskTree(str(tmp_path / "t"), kinds=("mining", "infer"))
    env = load_env(tree.env_file, root=tree.root)
    folder = tmp_path / "scratch"
    folder.mkdir()
    staged = os.path.join(env.output.root_dir, ".monitor.txt")
    path = write_sdk_env(env, str(folder), output={"monitor_file": staged})
    document = yaml.safe_load(open(path))
    assert document["output"]["monitor_file"] == staged
    assert document["output"]["infer_result_file"] == env.output.infer_result_file  # the others as they were
    index = document["input"]["candidate_index_file"]
    assert os.path.dirname(index) == str(folder)
    assert [line.strip() for line in open(index)] == [tree.local(image) for image in tree.images]
    with pytest.raises(ValueError, match="no output keys"):
        write_sdk_env(env, str(folder), output={"monitor": staged})


class _Named:
    """An executor chosen only by name, reading config.yaml itself."""

    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ExecutorSpec("named", {TaskKind.TRAINING}, named_only=True, reads_own_config=True)]

    @ymir_runner.hookimpl
    def ymir_runner_train(self, context):
        folder = context.training_result.stage_dir("only")
        open(os.path.join(folder, "model.bin"), "w").write("weights")
        context.training_result.add_stage("only", ["model.bin"], {"mAP": 0.5})


class _Ordinary:
    @ymir_runner.hookimpl
    def ymir_runner_register_executors(self):
        return [ExecutorSpec("ordinary", {TaskKind.TRAINING}, templates={TaskKind.TRAINING: (
            ymir_runner.Param("epochs", 1),)})]

    @ymir_runner.hookimpl
    def ymir_runner_train(self, context):
        raise AssertionError("the command named another executor")


def test_a_named_only_executor_changes_nothing_for_the_others(tmp_path):
    registry = plugin_registry({"named": _Named(), "ordinary": _Ordinary()})
    chosen = registry.select(TaskKind.TRAINING, 2, None)
    assert chosen.spec.name == "ordinary"  # never the "only candidate" beside it, never "several candidates"
    assert "plugin" not in template_defaults(registry, TaskKind.TRAINING)
    assert registry.select(TaskKind.TRAINING, 2, "named").spec.name == "named"


def test_run_with_an_executor_named_by_the_command(tmp_path):
    registry = plugin_registry({"named": _Named(), "ordinary": _Ordinary()})
    tree = TaskTree(str(tmp_path / "t"), config={"its_own_key": 3, "plugin": "ordinary"})
    import contextlib
    import io

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = ymir_runner.run(tree.env_file, root=tree.root, registry=registry, executor="named")
    assert code == 0, stderr.getvalue()
    log = stderr.getvalue()
    assert "config key 'plugin' names 'ordinary', but this command runs executor 'named'" in log
    assert "its_own_key" not in log  # the executor reads config.yaml itself: no "not a template key" warning


def test_sandbox_templates_merge_first_value_first_and_refuse_a_plugin_beside_them(tmp_path):
    from ymir_runner.errors import ConfigError
    from ymir_runner.sandbox.config import read_templates
    from ymir_runner.sandbox.options import SandboxOptions, check_options

    mining, infer = tmp_path / "mining-template.yaml", tmp_path / "infer-template.yaml"
    mining.write_text("batch_size: 8\nconf: 0.1\n")
    infer.write_text("conf: 0.5\nsave_images: false\n")
    assert read_templates([str(mining), str(infer)]) == {"batch_size": 8, "conf": 0.1, "save_images": False}
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match="list.yaml must hold a YAML mapping"):
        read_templates([str(tmp_path / "list.yaml")])
    with pytest.raises(ConfigError, match="--template and --plugin"):
        check_options(SandboxOptions(templates=[str(mining)], plugin="sdk"), [TaskKind.MINING])
