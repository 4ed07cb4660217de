"""The checkpoint file of a model stage: weights + class names + model config + img_size, in one .pt file.

Checkpoints are loaded with ``weights_only=True``: a file from elsewhere can never run code here.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Sequence

import torch

from ymir_runner import ModelError, atomic_path

if TYPE_CHECKING:
    from ymir_runner import TaskContext

FORMAT = "ymir-runner-detection/1"
CHECKPOINT_NAME = "model.pt"
ONNX_NAME = "model.onnx"


@dataclasses.dataclass
class Checkpoint:
    model_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    class_names: list[str]
    img_size: int
    epoch: int = 0
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    path: str = ""
    #: The F1-optimal score threshold on the validation set of its training (None: older checkpoints).
    score_threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "model_config": self.model_config, "state_dict": self.state_dict,
                "class_names": list(self.class_names), "img_size": int(self.img_size), "epoch": int(self.epoch),
                "metrics": {key: float(value) for key, value in self.metrics.items()},
                "score_threshold": None if self.score_threshold is None else float(self.score_threshold)}

    @property
    def task(self) -> str:
        """What the model does: ``detection`` (object type 2; checkpoints before segmentation record no task) or
        ``semantic`` (object type 3)."""
        return str(self.model_config.get("task", "detection"))

    def build_model(self) -> Any:
        """The network (a CenterNetDetector or a SemanticFPN, by :attr:`task`) with the checkpoint's weights."""
        model = build_network(self.model_config)
        model.load_state_dict(self.state_dict)
        return model


def build_network(config: dict[str, Any]) -> Any:
    """The network a checkpoint's ``model_config`` describes, by its ``task`` (untrained)."""
    if config.get("task", "detection") == "semantic":
        from .engine.semantic import build_semantic_model_from_config

        return build_semantic_model_from_config(config)
    from .engine.model import build_model_from_config

    return build_model_from_config(config)


def save_checkpoint(model: torch.nn.Module, path: str, *, class_names: Sequence[str], img_size: int,
                    epoch: int, metrics: dict[str, float] | None = None, score_threshold: float | None = None) -> str:
    """Write the checkpoint atomically (temp file + rename): a stage's file is complete or absent, and a
    failed write (a full disk: ``OutputError`` naming ``path``) leaves no partial file behind."""
    network: Any = getattr(model, "module", model)  # unwrap DDP
    state = {key: value.detach().cpu() for key, value in network.state_dict().items()}
    checkpoint = Checkpoint(network.config(), state, list(class_names), img_size, epoch, dict(metrics or {}),
                            score_threshold=score_threshold)
    with atomic_path(path) as tmp:
        torch.save(checkpoint.to_dict(), tmp)
    return path


def load_checkpoint(path: str) -> Checkpoint:
    """Load a checkpoint of this plugin; anything else is a ModelError (300004) naming the file."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"model file {path} does not exist") from None
    except Exception as error:
        raise ModelError(f"model file {path} is not a ymir-runner-detection checkpoint (cannot be read: "
                         f"{type(error).__name__})") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"model file {path} is not a ymir-runner-detection checkpoint (format "
                         f"{data.get('format') if isinstance(data, dict) else type(data).__name__!r})")
    try:
        checkpoint = Checkpoint(data["model_config"], data["state_dict"], list(data["class_names"]),
                                int(data["img_size"]), int(data.get("epoch", 0)), dict(data.get("metrics", {})), path,
                                _optional_float(data.get("score_threshold")))
    except (KeyError, TypeError, ValueError) as error:
        raise ModelError(f"model file {path} is an incomplete checkpoint ({error})") from error
    check_architecture(checkpoint)
    return checkpoint


#: The most channels and residual blocks a recorded architecture may claim: this plugin's largest model has 512
#: channels and 6 blocks a stage; a claim far beyond (width 200000) would exhaust memory building the network.
MAX_WIDTH, MAX_DEPTH = 4096, 64


def check_architecture(checkpoint: Checkpoint) -> None:
    """ModelError (300004) naming the file when the architecture a checkpoint records is implausible: an img_size
    outside the template's bounds, sizes beyond :data:`MAX_WIDTH` / :data:`MAX_DEPTH`, a class count that is not its
    class list's, or weights that do not have the shapes of the architecture (built on torch's meta device: no
    memory). Checked before anything is allocated: such a file would otherwise exhaust memory with a message naming
    neither the model nor the key."""
    from .templates import MAX_IMG_SIZE

    path, config = checkpoint.path, checkpoint.model_config
    if not (32 <= checkpoint.img_size <= MAX_IMG_SIZE and checkpoint.img_size % 32 == 0):
        raise ModelError(f"model file {path} records img_size {checkpoint.img_size}: this plugin trains at multiples "
                         f"of 32 from 32 to {MAX_IMG_SIZE} (config key 'img_size'); the file is damaged or not one "
                         f"it wrote")
    try:
        spec, classes = dict(config["spec"]), config["num_classes"]
        sizes = {"widths": [*spec["widths"], spec["neck_width"], spec["head_width"]], "depths": list(spec["depths"])}
    except (KeyError, TypeError) as error:
        raise ModelError(f"model file {path} records no complete architecture (model_config: {error!r})") from None
    for name, values, most in (("widths", sizes["widths"], MAX_WIDTH), ("depths", sizes["depths"], MAX_DEPTH)):
        if not all(isinstance(value, int) and 0 <= value <= most for value in values):
            raise ModelError(f"model file {path} records an implausible architecture: {name} {values} (at most "
                             f"{most}); the file is damaged or not one this plugin wrote")
    if classes != len(checkpoint.class_names):
        raise ModelError(f"model file {path} records {classes!r} classes for {len(checkpoint.class_names)} class "
                         f"names")
    try:
        with torch.device("meta"):
            expected = build_network(config).state_dict()
    except Exception as error:  # noqa: BLE001 - any field the constructor refuses
        raise ModelError(f"model file {path} records an architecture that cannot be built ({type(error).__name__}: "
                         f"{error})") from None
    for key, tensor in expected.items():
        found = checkpoint.state_dict.get(key)
        if not isinstance(found, torch.Tensor) or found.shape != tensor.shape:
            shape = list(found.shape) if isinstance(found, torch.Tensor) else "missing"
            raise ModelError(f"model file {path}: its weights do not fit its recorded architecture ({key} is "
                             f"{shape}, the architecture needs {list(tensor.shape)})")


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


#: The run cache key of the mining/inference checkpoint: a run doing both loads it once.
TASK_CHECKPOINT_KEY = "ymir_runner_detection.checkpoint"


def task_checkpoint(context: TaskContext) -> Checkpoint:
    """The checkpoint a mining or inference task starts from (``context.model_file(".pt")``: the best stage's when
    several are given), loaded once per run. Raises ``ModelError`` (300004) naming the file when it was trained on
    other classes than config key ``class_names``."""
    cached = context.run_cache.get(TASK_CHECKPOINT_KEY)
    if cached is not None:
        return cached
    path = context.model_file(".pt")
    checkpoint = load_checkpoint(path)
    if list(checkpoint.class_names) != list(context.class_names):
        raise ModelError(f"the model {path} was trained on classes {checkpoint.class_names} but config key "
                         f"'class_names' is {list(context.class_names)}")
    context.logger.info("model %s: %s, %d classes, img_size %d, epoch %d", path,
                        checkpoint.model_config.get("size"), len(checkpoint.class_names), checkpoint.img_size,
                        checkpoint.epoch)
    context.run_cache[TASK_CHECKPOINT_KEY] = checkpoint
    return checkpoint
