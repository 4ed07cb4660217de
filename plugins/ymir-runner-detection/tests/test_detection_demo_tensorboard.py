"""What `ymir-runner demo` says about its tensorboard logs: the command that shows them and, where the viewer is not
installed (the core writes with tensorboardX, which has none), exactly how to install it."""

import configparser
import importlib.util
import os

import pytest

from ymir_runner_detection.demo import tensorboard_hint

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def test_without_the_viewer_the_demo_says_how_to_install_it():
    assert tensorboard_hint("/w/demo-run/out/tensorboard", installed=False).splitlines() == [
        "  tensorboard     : tensorboard --logdir /w/demo-run/out/tensorboard",
        "                    (the viewer is not installed: `pip install tensorboard` in this environment, or "
        'ymir-runner\'s extra, `pip install -e ".[tensorboard]"` in its checkout)']


def test_with_the_viewer_only_the_command_and_by_default_whatever_this_environment_has():
    assert tensorboard_hint("/w/tb", installed=True) == "  tensorboard     : tensorboard --logdir /w/tb"
    installed = importlib.util.find_spec("tensorboard") is not None
    assert tensorboard_hint("/w/tb") == tensorboard_hint("/w/tb", installed=installed)


def test_the_extra_the_message_names_is_the_cores():
    setup = os.path.join(REPO, "setup.cfg")
    if not os.path.isfile(setup):
        pytest.skip("not in a ymir-runner checkout")
    config = configparser.ConfigParser()
    config.read(setup, encoding="utf-8")
    assert config["metadata"]["name"] == "ymir-runner"
    assert config["options.extras_require"]["tensorboard"].split() == ["tensorboard>=2.14"]
