"""The resnet backbone takes torchvision's ImageNet weights as published: same keys, same shapes, same outputs.

``tests/data/torchvision_resnet18.json`` was written with torchvision 0.28 (``torchvision.models.resnet18``):
its state_dict keys and shapes, and its layer1..layer4 outputs on a seeded input for the seeded weights that
``_weights`` below makes (the same function ran there). Nothing here needs torchvision.
"""

import json
from pathlib import Path

import pytest
import torch

from ymir_runner_detection.engine import build_model, load_backbone_weights

FIXTURE = json.loads((Path(__file__).parent.parent / "data" / "torchvision_resnet18.json").read_text())


def _weights(keys_shapes):
    generator = torch.Generator().manual_seed(0)
    out = {}
    for key, shape in keys_shapes:
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            scale = 0.1 if key.endswith("weight") and len(shape) == 4 else 0.5
            out[key] = torch.randn(shape, generator=generator) * scale
    return out


def test_torchvision_resnet18_weights_load_and_give_torchvisions_features():
    model = build_model("resnet18", num_classes=2).eval()
    weights = _weights(FIXTURE["keys"])
    assert "fc.weight" in weights  # the published file has the classifier: it is dropped
    assert load_backbone_weights(model, weights) == len(FIXTURE["keys"]) - 2
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = model.backbone(x)
    for feature, expected in zip(features, FIXTURE["outputs"]):
        assert list(feature.shape) == expected["shape"]
        assert float(feature.double().sum()) == pytest.approx(expected["sum"], rel=1e-4)
        assert float(feature.double().abs().sum()) == pytest.approx(expected["abs_sum"], rel=1e-4)
        assert feature.flatten()[:8].tolist() == pytest.approx(expected["first"], rel=1e-3, abs=1e-5)
    scores, boxes = model.predict_maps(torch.rand(1, 3, 128, 128))  # inputs stay RGB in [0, 1]
    assert scores.shape == (1, 2, 16, 16) and boxes.shape == (1, 4, 16, 16)


def test_weights_of_another_architecture_never_load_partially():
    weights = {f"module.{key}": value for key, value in _weights(FIXTURE["keys"]).items()}  # DataParallel's prefix
    assert load_backbone_weights(build_model("resnet18", 1), weights) == 120
    with pytest.raises(ValueError, match="not resnet34 weights of torchvision's layout .missing: layer1.2"):
        load_backbone_weights(build_model("resnet34", 1), weights)
    with pytest.raises(ValueError, match="has no ResNet backbone"):
        load_backbone_weights(build_model("nano", 1), weights)
    weights["module.conv1.weight"] = torch.zeros(64, 3, 3, 3)
    with pytest.raises(ValueError, match="other shape: conv1.weight"):
        load_backbone_weights(build_model("resnet18", 1), weights)
