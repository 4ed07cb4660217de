"""The templates are the one home of the defaults: the README's tables must say what templates.py holds."""

from __future__ import annotations

import pathlib
import re

import yaml

from ymir_runner_detection import templates

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def table_rows(heading: str) -> dict[str, list[str]]:
    """``key -> the other cells`` of the first table after ``heading`` in the README."""
    section = README.split(heading, 1)[1]
    rows = re.findall(r"^\| `(\w+)` \|(.*)\|$", section.split("\n\n|", 1)[1].split("\n\n", 1)[0], re.M)
    return {key: [cell.strip() for cell in cells.split("|")] for key, cells in rows}


def value(cell: str) -> object:
    return yaml.safe_load(cell.strip("`"))


def test_the_training_table_lists_every_training_default():
    rows = table_rows("## Training template")
    assert {key: value(cells[0]) for key, cells in rows.items()} == dict(templates.TRAINING_DEFAULTS)


def test_the_inference_and_mining_table_lists_their_defaults():
    rows = table_rows("## Inference and mining")
    for column, params in ((0, templates.INFER), (1, templates.MINING)):
        listed = {key: value(cells[column]) for key, cells in rows.items() if cells[column] != "–"}
        assert {param.name: listed.get(param.name) for param in params} == {p.name: p.default for p in params}
