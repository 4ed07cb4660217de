"""A real short training on a sandbox of the user's own folder names the user's damaged files, not only assets:
a truncated JPEG (seen from its header) and a PNG whose data breaks off inside (found only when decoding it)."""

from __future__ import annotations

import random
import struct

from helpers import registry, run
from PIL import Image

from ymir_runner.sandbox import build_sandbox

SHORT = {"epochs": 2, "min_steps": 0, "img_size": 64, "batch_size_per_gpu": 4, "num_workers_per_gpu": 0,
         "save_period": 1}


def labelled(folder, name, index, size=(96, 80)):
    picture = Image.new("RGB", size, (index * 30 % 256, 90, 140))
    picture.paste((250, 20, 20), (10 + index, 12, 42 + index, 44))
    picture.save(folder / "JPEGImages" / name)
    (folder / "Annotations" / (name.rsplit(".", 1)[0] + ".xml")).write_text(
        f"<annotation><filename>{name}</filename><object><name>red</name><bndbox><xmin>{10 + index}</xmin>"
        f"<ymin>12</ymin><xmax>{41 + index}</xmax><ymax>43</ymax></bndbox></object></annotation>")


def corrupt_inside(path) -> None:
    """Flip bytes in the middle of a PNG's pixel data: the file still ends as a PNG does."""
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT")
    length = struct.unpack(">I", data[start - 4:start])[0]
    for at in range(start + 4 + length // 2, start + 4 + length // 2 + 40):
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_short_training_names_the_users_damaged_files(tmp_path, capsys):
    folder = tmp_path / "voc"
    (folder / "JPEGImages").mkdir(parents=True)
    (folder / "Annotations").mkdir()
    for index in range(6):
        labelled(folder, f"img_{index:04d}.jpg", index)
    noisy = Image.new("RGB", (96, 80))
    rng = random.Random(1)
    noisy.putdata([(rng.randrange(256),) * 3 for _ in range(96 * 80)])  # noise: the pixel data spans the file
    noisy.save(folder / "JPEGImages" / "noisy.png")
    (folder / "Annotations" / "noisy.xml").write_text(
        "<annotation><filename>noisy.png</filename><object><name>red</name><bndbox><xmin>5</xmin><ymin>5</ymin>"
        "<xmax>30</xmax><ymax>30</ymax></bndbox></object></annotation>")
    corrupt_inside(folder / "JPEGImages" / "noisy.png")
    jpeg = (folder / "JPEGImages" / "img_0003.jpg").read_bytes()
    (folder / "JPEGImages" / "img_0003.jpg").write_bytes(jpeg[:len(jpeg) * 2 // 3])

    summary = build_sandbox(str(folder), str(tmp_path / "work"), registry=registry(), overrides=SHORT)
    assert "JPEGImages/img_0003.jpg: truncated image, as " in summary.render()
    capsys.readouterr()
    assert run(summary.env_file) == 0
    err = capsys.readouterr().err
    assert "jpg (JPEGImages/img_0003.jpg): decoded as far as its data goes" in err
    assert "png (JPEGImages/noisy.png): found when decoding it: used as far as its data goes" in err
    summary_line = [line for line in err.splitlines() if "WARNING ymir_runner: training: " in line][-1]
    assert summary_line.endswith("training: repaired 1 corrupt image data (JPEGImages/noisy.png), "
                                 "1 truncated image (JPEGImages/img_0003.jpg)")
