"""``ymir-runner results``: a mining task's result.tsv and an inference task's infer-result.json, readable.

Both files name assets as the platform does (``<sha1>.jpg``); with the map ``ymir-runner sandbox`` writes
(:mod:`.origins`) each row names the user's own file too. The command only reads what the run wrote and the map,
never an image; the files themselves are left as they are. A file that is not what the protocol says is one error
line and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from typing import Any, Sequence

from .errors import YmirError
from .origins import ORIGINS_FILE, Origins, load_origins, read_origins
from .protocol.env import load_env
from .protocol.files import UnreadableFile, read_text

#: The protocol's names of the two files, in the task's /out.
MINING_FILE = "result.tsv"
INFER_FILE = "infer-result.json"
#: A larger result file is not read.
MAX_BYTES = 1 << 30


class ResultsError(Exception):
    """A result file that cannot be read or is not what the protocol says: one line, exit code 2."""


@dataclasses.dataclass(frozen=True)
class Ranked:
    """One line of result.tsv: its rank (line order: the platform takes the first top-k), the image path as
    written, its score and the user's files it came from."""

    rank: int
    image: str
    score: float
    files: tuple[str, ...]

    @property
    def asset(self) -> str:
        return os.path.basename(self.image)


@dataclasses.dataclass(frozen=True)
class Found:
    """One predicted box of infer-result.json."""

    class_name: str
    score: float
    x: int
    y: int
    w: int
    h: int


@dataclasses.dataclass(frozen=True)
class Predicted:
    """One image of infer-result.json (keyed by the asset's file name) with its boxes, best score first."""

    asset: str
    files: tuple[str, ...]
    boxes: tuple[Found, ...]


def _read_text(path: str) -> str:
    """A regular file's text (never a FIFO or a device: reading one could block forever), read by the core's one
    bounded reader (:func:`~ymir_runner.protocol.files.read_text`); ResultsError naming the file if not."""
    try:
        return read_text(path, limit=MAX_BYTES)
    except UnreadableFile as error:  # not a regular file, too large, not UTF-8, a NUL byte in the path
        problem = str(error)
        raise ResultsError(f"{path} is {problem}" if problem.startswith(("not ", "larger "))
                           else f"cannot read {path}: {problem}") from None
    except OSError as error:
        raise ResultsError(f"cannot read {path}: {error.strerror or error}") from None


def _files(origins: Origins | None, asset: str) -> tuple[str, ...]:
    return origins.of(asset) if origins is not None else ()


def read_mining(path: str, origins: Origins | None) -> list[Ranked]:
    """result.tsv as ranked rows: ``<image>\\t<score>`` per line, in file order."""
    rows: list[Ranked] = []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        try:
            if len(fields) != 2 or not fields[0]:
                raise ValueError
            score = float(fields[1])
        except ValueError:
            raise ResultsError(f"{path}:{number}: expected '<image>\\t<score>', got {line[:120]!r}") from None
        rows.append(Ranked(len(rows) + 1, fields[0], score, _files(origins, fields[0])))
    return rows


def read_infer(path: str, origins: Origins | None) -> list[Predicted]:
    """infer-result.json as images with their boxes (``boxes``, or ``annotations`` of protocol < 1.0.0)."""
    try:
        document = json.loads(_read_text(path))
    except json.JSONDecodeError as error:
        raise ResultsError(f"{path} is not JSON: {error}") from None
    detection = document.get("detection") if isinstance(document, dict) else None
    if not isinstance(detection, dict):
        raise ResultsError(f"{path}: expected {{\"detection\": {{<image>: {{\"boxes\": [...]}}}}}}")
    images = []
    for asset, entry in detection.items():
        listed = entry.get("boxes", entry.get("annotations")) if isinstance(entry, dict) else None
        if not isinstance(listed, list):
            raise ResultsError(f"{path}: detection[{asset!r}] has no 'boxes' list")
        boxes = [_box(path, asset, number, item) for number, item in enumerate(listed)]
        images.append(Predicted(asset, _files(origins, asset),
                                tuple(sorted(boxes, key=lambda box: -box.score))))
    return images


def _box(path: str, asset: str, number: int, item: Any) -> Found:
    where = f"{path}: detection[{asset!r}].boxes[{number}]"
    rect = item.get("box") if isinstance(item, dict) else None
    if not isinstance(rect, dict):
        raise ResultsError(f"{where} has no 'box' mapping")
    values = [rect.get(key) for key in ("x", "y", "w", "h")]
    score = item.get("score", math.nan)
    if not all(isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
               for value in [*values, score]):
        raise ResultsError(f"{where}: x, y, w, h and score must be numbers, got {json.dumps(item)[:160]}")
    x, y, w, h = (int(value) for value in values if isinstance(value, (int, float)))
    return Found(str(item.get("class_name", "")), float(score), x, y, w, h)


# --- the views -------------------------------------------------------------------------------------------------

def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int], indent: str = "") -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows)]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.rjust(width) if index in right else cell.ljust(width)
                  for index, (cell, width) in enumerate(zip(cells, widths))]
        return (indent + "  ".join(padded)).rstrip()

    return [line(header), *(line(row) for row in rows)]


def _names(files: Sequence[str]) -> str:
    return ", ".join(files) if files else "(not in the map)"


def mining_text(path: str, rows: Sequence[Ranked], origins: Origins | None) -> list[str]:
    lines = [f"{path}: {len(rows)} images, highest score first (the platform selects the first top-k)"]
    header = ["rank", "score", "asset"] + (["your file"] if origins is not None else [])
    cells = [[str(row.rank), f"{row.score:.4g}", row.asset] + ([_names(row.files)] if origins is not None else [])
             for row in rows]
    return lines + _table(header, cells, right={0, 1}, indent="  ")


def infer_text(path: str, images: Sequence[Predicted], origins: Origins | None) -> list[str]:
    count = sum(len(image.boxes) for image in images)
    lines = [f"{path}: {len(images)} images, {count} boxes"]
    ordered = sorted(images, key=lambda image: (image.files[:1] or ("\uffff",), image.asset))
    for image in ordered:
        name = f"{_names(image.files)} ({image.asset})" if origins is not None else image.asset
        found = f"{len(image.boxes)} box{'es' if len(image.boxes) != 1 else ''}" if image.boxes else "no boxes"
        lines.append(f"  {name}: {found}")
        if image.boxes:
            cells = [[box.class_name, f"{box.score:.3f}", str(box.x), str(box.y), str(box.w), str(box.h)]
                     for box in image.boxes]
            lines += _table(["class", "score", "x", "y", "w", "h"], cells, right={1, 2, 3, 4, 5}, indent="    ")
    return lines


def results_json(origins: Origins | None, mining: Sequence[Ranked] | None,
                 infer: Sequence[Predicted] | None) -> dict[str, Any]:
    """The ``--json`` document: null for a file the task did not write."""
    return {
        "source": origins.source if origins is not None else None,
        "origins_file": origins.path if origins is not None else None,
        "mining": None if mining is None else [
            {"rank": row.rank, "image": row.image, "asset": row.asset, "score": row.score, "files": list(row.files)}
            for row in mining],
        "infer": None if infer is None else [
            {"asset": image.asset, "files": list(image.files),
             "boxes": [dataclasses.asdict(box) for box in image.boxes]} for image in infer],
    }


# --- the command -----------------------------------------------------------------------------------------------

def _origins(args: argparse.Namespace) -> Origins | None:
    """The sandbox's map: from env.yaml's input folder with ``--env``, else beside OUT (``OUT/../in``)."""
    if args.env:
        try:
            return load_origins(load_env(args.env, root=args.root))
        except YmirError as error:
            raise ResultsError(str(error)) from None
    return read_origins(os.path.join(os.path.dirname(os.path.abspath(args.out_dir)), "in", ORIGINS_FILE))


def _cmd_results(args: argparse.Namespace) -> int:
    try:
        if args.root and not args.env:
            raise ResultsError("--root re-roots the container paths of --env ENV_YAML: it cannot apply without it")
        if not os.path.isdir(args.out_dir):
            raise ResultsError(f"OUT {args.out_dir} is not a folder")
        paths = [os.path.join(args.out_dir, name) for name in (MINING_FILE, INFER_FILE)]
        if not any(os.path.lexists(path) for path in paths):
            raise ResultsError(f"{args.out_dir} holds neither {MINING_FILE} (mining) nor {INFER_FILE} (inference): "
                               "OUT is a mining or inference task's /out folder")
        origins = _origins(args)
        mining = read_mining(paths[0], origins) if os.path.lexists(paths[0]) else None
        infer = read_infer(paths[1], origins) if os.path.lexists(paths[1]) else None
    except ResultsError as error:
        print(f"ymir-runner results: error: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results_json(origins, mining, infer), indent=2))
        return 0
    lines = [f"your files: below {origins.source or '(SOURCE)'} (map {origins.path})" if origins is not None
             else "no sandbox map (in/" + ORIGINS_FILE + "): assets are named by id only"]
    if mining is not None:
        lines += mining_text(paths[0], mining, origins)
    if infer is not None:
        lines += infer_text(paths[1], infer, origins)
    print("\n".join(lines))
    return 0


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add ``ymir-runner results`` to the command line."""
    parser = commands.add_parser(
        "results", help="show a mining / inference task's result.tsv and infer-result.json, naming your own files",
        description="Print result.tsv (rank, score, asset, your file) and infer-result.json (per image: your file, "
                    "boxes with class, score, x, y, w, h) of a task's /out folder. With the map `ymir-runner "
                    f"sandbox` writes (WORK/in/{ORIGINS_FILE}) every asset is named by the file it came from. "
                    "Exit 2 when a file cannot be read.")
    parser.add_argument("out_dir", metavar="OUT", help="the task's /out folder (WORK/out of a sandbox)")
    parser.add_argument("--env", metavar="ENV_YAML",
                        help=f"the task's env.yaml: the map is read from its input folder (default: OUT/../in/"
                             f"{ORIGINS_FILE})")
    parser.add_argument("--root", metavar="DIR",
                        help="a local folder standing in for '/' for the container paths of --env (as `run --root`)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(handler=_cmd_results)
