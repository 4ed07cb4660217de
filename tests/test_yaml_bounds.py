"""Every YAML file the project reads is read within bounds (size, nesting, alias expansion): an alias bomb, 20,000
levels of nesting or a 50 MB file is a 300001 naming the file and the bound, in bounded time and memory; a key
written twice is a warning; a message shows a bounded excerpt of a value, never its whole repr."""

import json
import logging
import os
import resource
import subprocess
import sys
import textwrap

import pytest
import toy_plugin
import yaml

from ymir_runner import ReturnCode, best_stage_name, excerpt
from ymir_runner.errors import ConfigError
from ymir_runner.protocol.coerce import to_list
from ymir_runner.protocol.config import parse_config
from ymir_runner.protocol.env import env_document
from ymir_runner.protocol.paths import reroot
from ymir_runner.protocol.yaml_file import (
    MAX_ALIAS_NODES,
    MAX_YAML_BYTES,
    MAX_YAML_DEPTH,
    YamlLimitError,
    parse_yaml,
    read_yaml,
    salvage_scalars,
)
from ymir_runner.sandbox.models import read_model_source

#: The memory a process reading a hostile YAML file may take (a bomb reached 3.7 GB before the bounds).
MEMORY_CAP = 1 << 30
TIMEOUT = 120


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Billion laughs: ``width ** levels`` strings from a few hundred bytes; ``*l8`` names the whole bomb."""
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    lines += [f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * width) + "]" for level in range(1, levels)]
    return "\n".join(lines) + "\n"


#: Each kind of hostile YAML, as text to append to a file (after its own keys), and what the message says.
DEEP = "deep: " + "[" * 20000 + "]" * 20000 + "\n"
BOMBS = {
    "alias bomb": (alias_bomb() + "lol: *l8\n", f"more than {MAX_ALIAS_NODES} alias expansions"),
    "deep nesting": (DEEP, f"nested more than {MAX_YAML_DEPTH} levels deep"),
}
LARGE_MESSAGE = f"larger than {MAX_YAML_BYTES >> 20} MiB"
REGULAR_ONLY = f"YAML is read from a regular file of at most {MAX_YAML_BYTES >> 20} MiB"


def write_large_yaml(path, size: int = 50 << 20) -> None:
    """A YAML file of ``size`` bytes of short keys (the shape that is slowest to load)."""
    line = "key_{:09d}: 1\n"
    with open(path, "w", encoding="utf-8") as stream:
        stream.write("".join(line.format(index) for index in range(size // len(line.format(0)) + 1)))
        stream.truncate(size)


def _memory_cap() -> None:  # in the child
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def capped(args, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``args`` run under :data:`MEMORY_CAP` of address space and a timeout."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, preexec_fn=_memory_cap)


def last_line(stderr: str) -> str:
    return [line for line in stderr.splitlines() if line.strip()][-1]


def monitor_fields(path) -> list[str]:
    with open(path, encoding="utf-8") as stream:
        return stream.read().split()


# --- the reader ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_hostile_yaml_file_is_refused_naming_the_file_and_the_bound(tmp_path, kind):
    text, message = BOMBS[kind]
    path = tmp_path / "config.yaml"
    path.write_text("task_id: t\n" + text)
    with pytest.raises(YamlLimitError) as refused:
        read_yaml(str(path), "config file")
    assert str(refused.value).startswith(f"config file {path}: {message}")
    assert refused.value.code == ReturnCode.CONFIG


def test_a_file_over_the_size_bound_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "config.yaml"
    write_large_yaml(path)
    with pytest.raises(YamlLimitError) as refused:
        read_yaml(str(path), "config file")
    assert str(refused.value) == f"cannot read config file {path}: {LARGE_MESSAGE} ({50 << 20} bytes); {REGULAR_ONLY}"


def test_nesting_and_recursion_through_aliases_are_bounded(tmp_path):
    half = MAX_YAML_DEPTH // 2 + 5
    deep_alias = f"a: &a {'[' * half}1{']' * half}\nb: {'[' * half}*a{']' * half}\n"  # each half fits, not both
    with pytest.raises(YamlLimitError, match=f"nested more than {MAX_YAML_DEPTH} levels deep once its aliases"):
        parse_yaml(deep_alias, "the value")
    with pytest.raises(YamlLimitError, match=r"alias \*a on line 1 is inside the collection it names"):
        parse_yaml("a: &a [1, *a]\n", "the value")
    shared = parse_yaml("base: &base {lr: 0.1, flip: true}\nstage: {<<: *base, lr: 0.2}\n", "the value")
    assert shared["stage"] == {"lr": 0.2, "flip": True}  # merge keys overriding are no duplicates


@pytest.mark.parametrize("kind", ["a FIFO", "a folder"])
def test_only_a_regular_file_is_read_and_a_fifo_never_blocks(tmp_path, kind):
    path = tmp_path / "env.yaml"
    os.mkfifo(path) if kind == "a FIFO" else path.mkdir()
    script = ("import sys; from ymir_runner.protocol.yaml_file import read_yaml\n"
              "try: read_yaml(sys.argv[1], 'env file')\nexcept Exception as error: print(error)")
    done = capped([sys.executable, "-c", script, str(path)], timeout=30)
    assert done.stdout.strip() == f"cannot read env file {path}: not a regular file ({kind}); {REGULAR_ONLY}"


def test_a_key_written_twice_is_a_warning_and_the_last_value_is_used(tmp_path, caplog):
    path = tmp_path / "config.yaml"
    path.write_text("class_names: [cat, dog]\nepochs: 3\nclass_names: [dog, cat]\n")
    with caplog.at_level(logging.WARNING, logger="ymir_runner"):
        assert read_yaml(str(path), "config file")["class_names"] == ["dog", "cat"]
    assert caplog.messages == [f"config file {path}: key 'class_names' on line 3 is also on line 1: the value of "
                               "line 3 is used (the last, as the platform's YAML loader reads it)"]


def test_values_python_refuses_are_invalid_yaml_not_a_crash(tmp_path):
    for text in ("epochs: " + "1" * 5000 + "\n", "day: 2022-13-45\n"):
        path = tmp_path / "config.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=f"^config file {path} is not valid YAML: "):
            read_yaml(str(path), "config file")


def test_the_pure_python_loader_keeps_the_same_bounds(tmp_path):
    """Without libyaml: the same messages, no RecursionError (PyYAML's own composer recurses per level)."""
    for index, (text, _) in enumerate(BOMBS.values()):
        (tmp_path / f"{index}.yaml").write_text(text)
    script = textwrap.dedent("""
        import sys, yaml
        del yaml.CSafeLoader  # as where PyYAML was built without libyaml
        from ymir_runner.protocol import yaml_file
        assert yaml_file._BASE_LOADER is yaml.SafeLoader
        for path in sys.argv[1:]:
            try:
                yaml_file.read_yaml(path, "config file")
            except yaml_file.YamlLimitError as error:
                print(error)
    """)
    done = capped([sys.executable, "-c", script, *(str(tmp_path / f"{i}.yaml") for i in range(len(BOMBS)))])
    assert done.returncode == 0, done.stderr
    assert [line.split(": ", 1)[1] for line in done.stdout.splitlines()] == [
        f"more than {MAX_ALIAS_NODES} alias expansions (nodes repeated through aliases, at line 6): a YAML alias "
        "bomb?", f"nested more than {MAX_YAML_DEPTH} levels deep (line 1)"]


def test_salvage_reads_scalars_of_a_file_that_cannot_be_loaded(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text(alias_bomb() + "task_id: t9\n? [a, complex, key]\n: 1\ninput: {list: [{monitor_file: no}]}\n"
                    "output:\n  models_dir: /o/models\n  monitor_file: /o/monitor.txt\nbroken: [\n")
    assert salvage_scalars(str(path), [("output", "monitor_file"), ("task_id",), ("input", "monitor_file")]) == {
        ("output", "monitor_file"): "/o/monitor.txt", ("task_id",): "t9"}


# --- messages -----------------------------------------------------------------------------------------------------


def test_an_excerpt_is_bounded_and_says_how_long_the_value_was():
    assert excerpt("x" * 1_000_000) == repr("x" * 79)[:80] + "... (1000000 characters)"
    assert excerpt(list(range(10 ** 6))).endswith("... (1000000 items)")
    assert excerpt({"a": 1, "b": [1, (2,)]}) == "{'a': 1, 'b': [1, (2,)]}"
    assert excerpt(10 ** 5000) == "<an integer of 16610 bits>"
    nested = []
    for _ in range(100_000):  # deeper than any recursive repr could go
        nested = [nested]
    assert excerpt(nested) == "[" * 80 + "... (1 item)"


def test_a_config_value_in_a_message_is_an_excerpt():
    with pytest.raises(ConfigError) as refused:
        parse_config({"epochs": "9" * 1_000_000 + "x"}, {"epochs": 2})
    assert len(str(refused.value)) < 250
    assert "... (1000001 characters) is not a valid integer" in str(refused.value)


def test_a_web_ui_string_holding_an_alias_bomb_is_refused_naming_the_key():
    bomb = "[" + ", ".join(["&a [" + ", ".join(["x"] * 10) + "]"] + ["*a"] * 20_000) + "]"
    with pytest.raises(ValueError, match=f"expected a list; the value: more than {MAX_ALIAS_NODES} alias"):
        to_list(bomb)
    with pytest.raises(ConfigError, match=f"^config key 'gpu_id': .*more than {MAX_ALIAS_NODES} alias expansions"):
        parse_config({"gpu_id": bomb})


def test_class_names_differing_only_by_case_are_refused_as_duplicates():
    with pytest.raises(ConfigError, match="^config key 'class_names': .*class names 'cat' and 'Cat' differ only by "
                                          "case"):
        parse_config({"class_names": ["cat", "dog", "Cat"]})
    assert parse_config({"class_names": ["cat", "dog"]}).class_names == ("cat", "dog")


# --- every reader: run, verify, ymir-info.yaml, sandbox ---------------------------------------------------------------


def bombed_run(tree, file_name: str, text: str) -> subprocess.CompletedProcess:
    with open(tree.local(f"/in/{file_name}"), "a", encoding="utf-8") as stream:
        stream.write(text)
    return capped(tree.command())


@pytest.mark.parametrize("kind", sorted(BOMBS))
@pytest.mark.parametrize("file_name", ["config.yaml", "env.yaml"])
def test_a_run_on_a_hostile_yaml_file_fails_300001_naming_it_with_state_4(ymir_task, file_name, kind):
    tree = ymir_task()
    text, message = BOMBS[kind]
    done = bombed_run(tree, file_name, text)
    what = "config file" if file_name == "config.yaml" else "env file"
    assert done.returncode == 1, done.stderr
    assert last_line(done.stderr).startswith(f"ymir-runner: error 300001: {what} {tree.local('/in/' + file_name)}: "
                                             f"{message}")
    assert monitor_fields(tree.local("/out/monitor.txt"))[3:] == ["4", "300001"]


@pytest.mark.parametrize("key", ["class_names", "epochs"])
def test_a_bomb_as_the_value_of_a_typed_key_is_refused_before_any_repr(ymir_task, key):
    tree = ymir_task()
    config = yaml.safe_dump({k: v for k, v in tree.config.items() if k != key}, sort_keys=False)
    with open(tree.local("/in/config.yaml"), "w", encoding="utf-8") as stream:
        stream.write(config + alias_bomb() + f"{key}: *l8\n")
    done = capped(tree.command())
    assert last_line(done.stderr).startswith(f"ymir-runner: error 300001: config file {tree.local('/in/config.yaml')}"
                                             f": more than {MAX_ALIAS_NODES} alias expansions")
    assert monitor_fields(tree.local("/out/monitor.txt"))[3:] == ["4", "300001"]


def test_a_config_file_over_the_size_bound_fails_naming_it(ymir_task):
    tree = ymir_task()
    write_large_yaml(tree.local("/in/config.yaml"))
    done = capped(tree.command())
    config = tree.local("/in/config.yaml")
    assert last_line(done.stderr) == (f"ymir-runner: error 300001: cannot read config file {config}: {LARGE_MESSAGE} "
                                      f"({50 << 20} bytes); {REGULAR_ONLY}")
    assert monitor_fields(tree.local("/out/monitor.txt"))[3:] == ["4", "300001"]


def test_a_bombed_env_yaml_naming_its_own_monitor_file_gets_state_4_there(tmp_path):
    """An env.yaml with host paths (a sandbox tree without --container-paths) that cannot be loaded: where its
    monitor.txt goes is still read from it, without expanding anything."""
    root = tmp_path / "work"
    (root / "out").mkdir(parents=True)
    env = env_document("t-host", ["training"], path=lambda container: reroot(container, str(root)))
    env_file = root / "in" / "env.yaml"
    env_file.parent.mkdir()
    env_file.write_text(alias_bomb() + "lol: *l8\n" + yaml.safe_dump(env, sort_keys=False))
    done = capped([sys.executable, "-m", "ymir_runner", "run", "--env", str(env_file)])
    assert last_line(done.stderr).startswith(f"ymir-runner: error 300001: env file {env_file}: more than")
    fields = monitor_fields(root / "out" / "monitor.txt")
    assert (fields[0], fields[3:]) == ("t-host", ["4", "300001"])


def test_a_bombed_env_yaml_run_with_root_writes_nothing_outside_the_tree(tmp_path):
    root, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    for folder in (root / "in", root / "out", elsewhere):
        folder.mkdir(parents=True)
    env = env_document("t-host", ["training"], path=lambda container: reroot(container, str(root)))
    env["output"]["monitor_file"] = str(elsewhere / "monitor.txt")
    (root / "in" / "env.yaml").write_text(yaml.safe_dump(env, sort_keys=False) + alias_bomb() + "lol: *l8\n")
    done = capped([sys.executable, "-m", "ymir_runner", "run", "--env", str(root / "in" / "env.yaml"), "--root",
                   str(root)])
    assert "error 300001" in last_line(done.stderr)
    assert os.listdir(elsewhere) == []
    assert monitor_fields(root / "out" / "monitor.txt")[3:] == ["4", "300001"]


def test_a_key_written_twice_in_config_yaml_is_warned_and_the_last_value_runs(ymir_task, ymir_registry):
    ymir_registry.register(toy_plugin, "toy")
    tree = ymir_task()
    with open(tree.local("/in/config.yaml"), "a", encoding="utf-8") as stream:
        stream.write("epochs: 1\nepochs: 2\n")
    outcome = tree.run(ymir_registry)
    assert outcome.exit_code == 0, outcome.stderr
    assert "key 'epochs' on line" in outcome.stderr and "the value of line" in outcome.stderr
    assert set(outcome.result_yaml()["model_stages"]) == {"epoch_1", "epoch_2"}


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_verify_reports_a_hostile_result_yaml_as_one_finding(tmp_path, kind):
    out = tmp_path / "out"
    (out / "models").mkdir(parents=True)
    (out / "monitor.txt").write_text("t\t1700000000\t1.0\t2\t0\n")
    text, message = BOMBS[kind]
    (out / "models" / "result.yaml").write_text("best_stage_name: a\n" + text)
    done = capped([sys.executable, "-m", "ymir_runner", "verify", str(out), "--task", "training", "--json"])
    findings = json.loads(done.stdout)["findings"]
    assert [(finding["rule"], finding["message"].split(" (")[0]) for finding in findings] == [
        ("result-yaml.bounds", message + (": a YAML alias bomb?" if kind == "alias bomb" else ""))]
    assert done.returncode == 1


def test_verify_reports_a_result_yaml_over_the_size_bound(tmp_path):
    out = tmp_path / "out"
    (out / "models").mkdir(parents=True)
    (out / "monitor.txt").write_text("t\t1700000000\t1.0\t2\t0\n")
    write_large_yaml(out / "models" / "result.yaml")
    done = capped([sys.executable, "-m", "ymir_runner", "verify", str(out), "--task", "training", "--json"])
    assert [finding["rule"] for finding in json.loads(done.stdout)["findings"]] == ["result-yaml.bounds"]


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_hostile_ymir_info_yaml_is_300001_naming_it(tmp_path, kind):
    text, message = BOMBS[kind]
    (tmp_path / "ymir-info.yaml").write_text("best_stage_name: epoch_1\n" + text)
    with pytest.raises(YamlLimitError, match=f"^model info file {tmp_path}/ymir-info.yaml: {message}"):
        best_stage_name(str(tmp_path))


@pytest.mark.parametrize("content", [b"best_stage_name: \xff\xfe\n", b"best_stage_name: [\n",
                                     b"model_stages: [epoch_1]\n", b"- epoch_1\n", b"best_stage_name: [a]\n"])
def test_an_unreadable_or_malformed_ymir_info_yaml_names_no_stage(tmp_path, content):
    (tmp_path / "ymir-info.yaml").write_bytes(content)
    assert best_stage_name(str(tmp_path)) is None
    (tmp_path / "ymir-info.yaml").write_text("model_stages: {best_stage_name: epoch_2}\n")
    assert best_stage_name(str(tmp_path)) == "epoch_2"


@pytest.mark.parametrize("kind", sorted(BOMBS))
def test_a_sandbox_model_folder_with_a_hostile_result_yaml_is_300001_naming_it(tmp_path, kind):
    text, message = BOMBS[kind]
    (tmp_path / "result.yaml").write_text("best_stage_name: epoch_1\n" + text)
    with pytest.raises(YamlLimitError, match=f"^model result file {tmp_path}/result.yaml: {message}"):
        read_model_source(str(tmp_path), "--model")
