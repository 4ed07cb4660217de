"""The same images give the identical infer-result.json: today's inference against the file the plugin wrote
before SDK 0.3 (inputs: ``reference_inference.py``, regenerated here; the file:
``data/reference-infer-result.json``, written by the plugin at commit d2a2b14).

The batch size (5) keeps every batch at two images or more before and after: an image alone in a batch runs
another oneDNN convolution kernel than two or more (scores differ by 1.5e-7; measured, torch 2.13 CPU), and the
plugin used to fill a skipped image's place in a batch with a replacement image, so with batch 4 the truncated
JPEG was predicted beside one before and alone after (its scores moved by 1e-7, its boxes did not)."""

from __future__ import annotations

import json

from helpers import run
from reference_inference import REFERENCE, input_digest, write_reference_task

#: The digest of the reference's inputs when the file was written (Pillow 13, torch 2.13 CPU): a different digest means
#: the inputs changed (another Pillow encodes another JPEG), not the inference.
INPUT_DIGEST = "2d67df082e4ed9188befeb7b9ff895ac9fc5056dc7bb111c7dd02f2e39f4123a"


def test_infer_result_is_identical_to_the_reference(tmp_path, capsys):
    env_file = write_reference_task(str(tmp_path))
    assert input_digest(str(tmp_path)) == INPUT_DIGEST, "the reference's inputs are not the ones it was written from"
    assert run(env_file) == 0
    written = json.loads((tmp_path / "out" / "infer-result.json").read_text())
    with open(REFERENCE, encoding="utf-8") as stream:
        expected = json.load(stream)
    # Every entry to the bit (boxes, classes, scores as float64 reprs); the order of the entries in the document is
    # not compared: the core writes a skipped candidate's empty entry when its batch is done, the plugin wrote all in
    # candidate order, and a JSON object's keys are a mapping.
    differ = [name for name in expected["detection"] if written["detection"].get(name) != expected["detection"][name]]
    assert not differ and written == expected, f"infer-result.json differs from the reference on {differ}"
    err = capsys.readouterr().err
    assert "skipped 2 unreadable image" in err  # broken.png by the reader, garbled.png when decoding it
