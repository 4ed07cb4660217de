"""The inputs of the inference reference (``data/reference-infer-result.json``), regenerated deterministically.

The reference was written by the plugin's inference before SDK 0.3 moved it onto the core's loop
(``ymir_runner.inference.infer_candidates``); ``test_detection_reference_inference.py`` runs the same inputs
through today's code and expects the identical file. The inputs cover what the loop does around the model:
batches with a short last one, images of several sizes and formats, two large JPEGs reduced on decode (boxes
mapped back through the decode factor), an unreadable candidate (an empty entry) and a model whose scores are
spread out (no ties), at a low threshold so that NMS and top-k both cut.

    python tests/reference_inference.py OUT_FOLDER   # writes the task there, runs it, prints infer-result.json's path
"""

from __future__ import annotations

import os
import sys

import numpy as np
import yaml

REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "reference-infer-result.json")
CONFIG = {"img_size": 256, "batch_size_per_gpu": 5, "num_workers_per_gpu": 0, "conf_threshold": 0.1,
          "iou_threshold": 0.5, "max_detections": 12}


def reference_model(path: str, class_names: list[str]) -> str:
    """A nano network with seeded random weights, its prediction layers spread so that scores differ per cell."""
    import torch

    from ymir_runner_detection.checkpoint import save_checkpoint
    from ymir_runner_detection.engine import build_model

    torch.manual_seed(0)
    model = build_model("nano", len(class_names))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):  # fresh BatchNorm is the identity: make it not
                module.running_mean.normal_(0.0, 0.1)
                module.running_var.uniform_(0.5, 1.5)
        model.heatmap_head.predict.weight.normal_(0.0, 4.0)
        model.heatmap_head.predict.bias.fill_(-1.0)
        model.box_head.predict.weight.normal_(0.0, 1.5)
    return save_checkpoint(model.eval(), path, class_names=class_names, img_size=320, epoch=1)


def write_reference_task(root: str) -> str:
    """The task under ``root`` (returns env.yaml's path): 10 generated candidates, 2 large JPEGs, a truncated
    JPEG, 2 unreadable files."""
    from PIL import Image

    from ymir_runner_detection.demo import write_generated_task

    env_file, dataset = write_generated_task(root, kinds=("infer",), config=CONFIG, n_train=0, n_val=0,
                                             n_candidates=10, seed=11)
    folder = os.path.join(root, "in", "extra")
    os.makedirs(folder)
    extra = []
    for index, size in enumerate(((1500, 1000), (900, 1300))):
        path = os.path.join(folder, f"large_{index}.jpg")
        source = Image.open(dataset.candidate_paths[index]).convert("RGB")
        source.resize(size, Image.BILINEAR).save(path, quality=90)
        extra.append(path)
    with open(extra[1], "rb") as stream:
        data = stream.read()
    with open(dataset.candidate_paths[2], "rb") as stream:
        png = stream.read()
    damaged = {
        "truncated.jpg": data[: len(data) * 2 // 5],  # decodes as far as its data goes: used, counted as a repair
        "garbled.png": png[:120] + bytes(byte ^ 0x5A for byte in png[120:]),  # header fine, data not: skipped
        "broken.png": b"\x89PNG\r\n\x1a\n not an image",  # no header: skipped by the core's reader
    }
    for name, content in damaged.items():
        extra.append(os.path.join(folder, name))
        with open(extra[-1], "wb") as stream:
            stream.write(content)
    with open(os.path.join(root, "in", "candidate-index.tsv"), "a", encoding="utf-8") as stream:
        stream.writelines(f"{path}\n" for path in extra)
    model = reference_model(os.path.join(root, "in", "models", "model.pt"), list(dataset.class_names))
    config_file = os.path.join(root, "in", "config.yaml")
    with open(config_file, encoding="utf-8") as stream:
        config = yaml.safe_load(stream)
    config["model_params_path"] = [model]
    with open(config_file, "w", encoding="utf-8") as stream:
        yaml.safe_dump(config, stream, sort_keys=False)
    return env_file


def input_digest(root: str) -> str:
    """A digest of the candidate files and the model's weights: tells a change of inputs from a change of code."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    with open(os.path.join(root, "in", "candidate-index.tsv"), encoding="utf-8") as stream:
        for line in stream:
            with open(line.strip(), "rb") as image:
                digest.update(image.read())
    state = torch.load(os.path.join(root, "in", "models", "model.pt"), weights_only=True)["state_dict"]
    for key in sorted(state):
        digest.update(np.ascontiguousarray(state[key].numpy()).tobytes())
    return digest.hexdigest()


if __name__ == "__main__":
    from ymir_runner import run

    target = os.path.abspath(sys.argv[1])
    env = write_reference_task(target)
    print("inputs", input_digest(target))
    sys.exit(run(env))
