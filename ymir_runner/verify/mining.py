"""result.tsv, the mining result: ``<path><TAB><score>`` per line, highest score first, each candidate
exactly once (rules ``mining.*``)."""

from __future__ import annotations

import os
from typing import Sequence

from .findings import Collector
from .helpers import map_container_path, parse_float, read_text


def asset_id(path: str) -> str:
    """What the platform keys a mining line by: the file name without extension."""
    return os.path.splitext(os.path.basename(path))[0]


def check_mining(collector: Collector, path: str, *, candidates: Sequence[str] | None,
                 root: str | None = None) -> None:
    """``<path>\\t<score>`` per line, highest first: the platform takes the first top-k lines in file order."""
    text = read_text(collector, path, "mining")
    if text is None:
        return
    rows = _mining_rows(collector, path, text)
    if not rows and not candidates:
        collector.warning("mining.empty", path, "no lines: nothing will be mined")
    _check_coverage(collector, path, rows, candidates, root)


def _mining_rows(collector: Collector, path: str, text: str) -> list[tuple[int, str]]:
    """Check each line's fields and the score order; returns (line number, image path) of readable lines. The
    platform strips each line, skips blank ones and reads the text before the first TAB as the path: it never
    reads the score, so a missing, extra or unreadable field is a warning, and only what changes the path (spaces
    for the TAB) or the order is an error."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    rows: list[tuple[int, str]] = []
    previous: tuple[int, float] | None = None
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip()
        if not line.strip():
            collector.warning("mining.blank-line", path, "blank line", number)
            continue
        if not line.split("\t", 1)[0].strip():
            collector.error("mining.path", path, "empty image path (the platform strips the line and reads the "
                            "score as the path)", number)
            continue
        line = line.lstrip()
        fields = line.split("\t")
        if len(fields) == 1:
            words = line.rsplit(None, 1)
            if len(words) == 2 and parse_float(words[1]) is not None:
                collector.error("mining.tabs", path, "separate path and score with a TAB, not spaces (the "
                                f"platform reads the whole line as the path): {line!r}", number)
                continue
            collector.warning("mining.fields", path, f"no TAB and no score: the platform reads {line!r} as the "
                              "path, in file order", number)
            rows.append((number, line))
            continue
        if len(fields) > 2:
            collector.warning("mining.fields", path, f"{len(fields) - 1} TABs, expected one between path and score: "
                              "the platform reads the first field as the path and ignores the rest", number)
        image, score_text = fields[0], fields[1]
        rows.append((number, image))
        score = parse_float(score_text)
        if score is None:
            collector.warning("mining.score", path, f"score {score_text!r} is not a finite float: the platform "
                              "never reads it (it takes lines in file order), so the order cannot be checked",
                              number)
            continue
        if previous is not None and score > previous[1]:
            collector.error("mining.order", path, f"score {score_text} is higher than line {previous[0]}'s "
                            f"{previous[1]}: lines must be sorted highest first (the platform takes the first "
                            "top-k lines)", number)
        previous = (number, score)
    return rows


def _check_coverage(collector: Collector, path: str, rows: list[tuple[int, str]],
                    candidates: Sequence[str] | None, root: str | None) -> None:
    """Each candidate exactly once, nothing else. Paths are compared as written (or re-rooted under ``root``,
    as a local run sees them), then by asset id (what the platform really uses)."""
    by_path = {alias: candidate for candidate in candidates or ()
               for alias in (candidate, map_container_path(candidate, "/out", root))}
    by_id = {asset_id(candidate): candidate for candidate in candidates or ()}
    first_line: dict[str, int] = {}
    for number, image in rows:
        key = by_path.get(image, image)
        if candidates is not None and image not in by_path:
            if asset_id(image) not in by_id:
                collector.error("mining.unknown-path", path, f"{image!r} is not a candidate", number)
                continue
            key = by_id[asset_id(image)]
            collector.warning("mining.path-differs", path, f"{image!r} is not the candidate path {key!r} "
                              "(same asset id, which is all the platform uses)", number)
        if key in first_line:
            collector.error("mining.duplicate", path, f"{image!r} again (first at line {first_line[key]})", number)
            continue
        first_line[key] = number
    for candidate in dict.fromkeys(candidates or ()):
        if candidate not in first_line:
            collector.error("mining.missing-candidate", path, f"candidate {candidate!r} has no line")
