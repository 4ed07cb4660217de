"""The same images give the identical infer-result.json: today's inference against the file the plugin wrote
before SDK 0.3 (inputs: ``reference_inference.py``, regenerated here; the file:
``data/reference-infer-result.json``)."""

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
    written = (tmp_path / "out" / "infer-result.json").read_bytes()
    with open(REFERENCE, "rb") as stream:
        expected = stream.read()
    if written != expected:  # say where, not only that
        ours, theirs = json.loads(written)["detection"], json.loads(expected)["detection"]
        differ = [name for name in theirs if ours.get(name) != theirs[name]]
        raise AssertionError(f"infer-result.json differs from the reference on {differ or 'its bytes'}")
    err = capsys.readouterr().err
    assert "skipped 2 unreadable image" in err  # broken.png by the reader, garbled.png when decoding it
