"""Library-level training loop (no framework imports; progress is reported through callbacks).

Features: AdamW or SGD, linear warmup + cosine decay, gradient clipping, AMP
on CUDA, weight EMA, an optional time budget (wall clock or a given clock), NaN/inf detection
(:class:`NonFiniteLossError`), and torch.distributed DDP when a process group
is initialised (only rank 0 runs the callbacks).
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .loss import DetectionLoss

#: Decay of the weights' moving average (the EMA model is what is evaluated and saved).
EMA_DECAY = 0.998

StepCallback = Callable[[int, int, dict], None]
EpochCallback = Callable[[int, dict, nn.Module], None]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite (diverged run, bad data or too high a learning rate)."""

    def __init__(self, step: int, losses: dict[str, float]):
        super().__init__(f"non-finite loss at step {step}: {losses}")
        self.step = step
        self.losses = losses


@dataclass
class TrainResult:
    """Summary of a finished run; the trained (EMA) weights are loaded into the model passed to :func:`train`."""

    steps: int
    epochs_completed: int
    images_seen: int
    train_seconds: float
    images_per_second: float
    data_wait_share: float  # fraction of wall time spent waiting for the DataLoader
    stopped_by_time_budget: bool
    history: list[dict] = field(default_factory=list)  # per-epoch metrics
    #: Dataset index -> why it could not be decoded, for the images skipped, over all ranks.
    unreadable: dict[int, str] = field(default_factory=dict)
    #: Dataset index -> why its data broke off, for images used as far as they decode, over all ranks.
    damaged: dict[int, str] = field(default_factory=dict)

    @property
    def corrupt_images(self) -> int:
        """How many images could not be decoded."""
        return len(self.unreadable)


def is_distributed() -> bool:
    """True when a torch.distributed process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """Rank 0, or the only process."""
    return not is_distributed() or dist.get_rank() == 0


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class ModelEMA:
    """Exponential moving average of weights and BN buffers, with a warm-up ramp of the decay.

    The ramp (decay * (1 - exp(-updates / ramp_steps))) lets early, fast-moving
    weights through instead of averaging in the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = EMA_DECAY, ramp_steps: int = 100):
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)
        self.decay = decay
        self.ramp_steps = ramp_steps
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = self.decay * (1.0 - math.exp(-self.updates / self.ramp_steps))
        current = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(decay).add_(current[name].detach(), alpha=1.0 - decay)
            else:
                value.copy_(current[name])


def build_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9):
    """AdamW or SGD(nesterov); biases and norm weights get no weight decay."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)
    raise ValueError(f"unknown optimizer {name!r}, expected 'adamw' or 'sgd'")


def learning_rate(progress: float, step: int, base_lr: float, warmup_steps: int, min_lr_ratio: float) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio * base_lr`` at progress 1."""
    cosine = min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    warmup = min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0
    return base_lr * cosine * warmup


def _to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    non_blocking = device.type == "cuda"
    images = batch["images"].to(device, non_blocking=non_blocking).float().div_(255.0)
    images = images.contiguous(memory_format=torch.channels_last)
    targets = {key: value.to(device, non_blocking=non_blocking) for key, value in batch["targets"].items()}
    return images, targets


def _synchronise_flags(nonfinite: bool, progress: float, device: torch.device) -> tuple[bool, float]:
    """Make the non-finite flag and training progress identical on every rank (one MAX all-reduce)."""
    if not is_distributed():
        return nonfinite, progress
    flags = torch.tensor([float(nonfinite), progress], device=device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0].item()), float(flags[1].item())


def _gather(local: Any) -> list[Any]:
    """``local`` of every rank (just ``[local]`` without a process group)."""
    if not is_distributed():
        return [local]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return gathered


def train(
    model: nn.Module,
    train_loader,
    *,
    epochs: int,
    lr: float,
    optimizer: str,
    weight_decay: float,
    warmup_steps: int,
    momentum: float = 0.9,
    min_lr_ratio: float = 0.02,
    grad_clip: float | None = 10.0,
    ema_decay: float | None = EMA_DECAY,
    device: str | torch.device | None = None,
    amp: bool | None = None,
    seed: int = 0,
    time_budget_s: float | None = None,
    budget_clock: Callable[[], float] | None = None,
    loss_fn: nn.Module | None = None,
    on_step: StepCallback | None = None,
    on_epoch_end: EpochCallback | None = None,
) -> TrainResult:
    """Train a model on batches of ``images`` (uint8 NCHW) and ``targets`` (a dict of tensors):
    :func:`~.data.collate_detection`'s for a detector (``loss_fn`` :class:`~.loss.DetectionLoss` by default), label
    maps for a segmentation model (``loss_fn`` :class:`~.semantic.SemanticLoss`). ``loss_fn(outputs, targets)``
    returns the loss and a dict of its parts (floats), summed per epoch; its ``PARTS`` are always in an epoch's
    metrics.

    * The schedule runs over ``progress`` in [0, 1]: steps / (epochs * batches),
      or, with ``time_budget_s``, the larger of that and elapsed / budget (the
      run stops when progress reaches 1; it is then not bit-reproducible).
    * The recipe (``lr``, ``optimizer``, ``weight_decay``, warm-up) has no default here: the plugin's training
      template (``ymir_runner_detection/templates.py``) is its one home. Its learning rate, 6e-3 with AdamW
      and batch 16, measured best for ``nano`` from scratch (4e-3: -2.6, 1e-2: -2.4 points mAP50-95 on the
      synthetic benchmark, mosaic 0.5; ``experiments/README.md``).
    * ``warmup_steps``: linear warm-up length in optimizer steps (0: none).
    * Wall time of callbacks (e.g. evaluations in ``on_epoch_end``) counts
      against ``time_budget_s`` and into ``TrainResult.train_seconds``.
    * ``budget_clock`` (seconds, default ``time.perf_counter``) measures the
      budget; e.g. the process tree's CPU seconds / cores makes a budget robust
      to other programs sharing the machine.
    * ``amp=None`` enables mixed precision only on CUDA.
    * ``on_step(step, total_steps, info)``: ``info`` has loss parts, ``lr`` and ``progress``.
    * ``on_epoch_end(epoch, metrics, eval_model)``: ``eval_model`` is the EMA
      model (or the model itself without EMA), ready to be evaluated or saved.
    * Under DDP only rank 0 calls the callbacks; the loader should use a
      ``DistributedSampler`` (see :func:`~.data.build_dataloader`).
    * Raises :class:`NonFiniteLossError` (on every rank) when the loss is NaN/inf.
    """
    seed_everything(seed)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    use_amp = device.type == "cuda" if amp is None else amp
    model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    base_model = model
    if is_distributed():
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            base_model = model
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = loss_fn or DetectionLoss.for_model(base_model)
    # the parts an epoch's metrics always hold (a loss returns them as its second value)
    loss_parts = tuple(getattr(loss_fn, "PARTS", ()))
    opt = build_optimizer(base_model, optimizer, lr, weight_decay, momentum)
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    ema = ModelEMA(base_model, ema_decay) if ema_decay else None
    total_steps = max(1, epochs * len(train_loader))
    world_size = dist.get_world_size() if is_distributed() else 1

    step, images_seen, data_wait, epochs_done = 0, 0, 0.0, 0
    corrupt: dict[int, str] = {}
    damaged: dict[int, str] = {}
    history: list[dict] = []
    stopped_by_time = False
    clock = budget_clock or time.perf_counter
    start, budget_start = time.perf_counter(), clock()
    for epoch in range(epochs):
        if hasattr(getattr(train_loader, "sampler", None), "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        model.train()
        sums = dict.fromkeys(("loss", *loss_parts), 0.0)
        epoch_steps, epoch_start, epoch_wait = 0, time.perf_counter(), 0.0
        wait_start = time.perf_counter()
        for batch in train_loader:
            epoch_wait += time.perf_counter() - wait_start
            corrupt.update(batch["corrupt"])
            damaged.update(batch.get("damaged", {}))
            images, targets = _to_device(batch, device)
            with torch.autocast(device.type, enabled=use_amp):
                outputs = model(images)
            loss, parts = loss_fn({k: v.float() for k, v in outputs.items()}, targets)
            progress = step / total_steps
            if time_budget_s:
                progress = max(progress, (clock() - budget_start) / time_budget_s)
            nonfinite, progress = _synchronise_flags(not math.isfinite(loss.item()), progress, device)
            if nonfinite:
                raise NonFiniteLossError(step, {"loss": loss.item(), **parts})
            current_lr = learning_rate(progress, step, lr, warmup_steps, min_lr_ratio)
            for group in opt.param_groups:
                group["lr"] = current_lr
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(base_model.parameters(), grad_clip)
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update(base_model)

            step += 1
            epoch_steps += 1
            images_seen += images.shape[0] * world_size
            sums["loss"] += loss.item()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + value
            if on_step is not None and is_main_process():
                on_step(step, total_steps, {"loss": loss.item(), **parts, "lr": current_lr, "progress": progress})
            if time_budget_s and progress >= 1.0:
                stopped_by_time = True
                break
            wait_start = time.perf_counter()

        epochs_done = epoch + 1
        data_wait += epoch_wait
        epoch_seconds = time.perf_counter() - epoch_start
        metrics = {key: value / max(epoch_steps, 1) for key, value in sums.items()}
        metrics.update(
            lr=current_lr if epoch_steps else lr,
            steps=epoch_steps,
            seconds=epoch_seconds,
            images_per_second=epoch_steps * train_loader.batch_size * world_size / max(epoch_seconds, 1e-9),
            data_wait_share=epoch_wait / max(epoch_seconds, 1e-9),
        )
        history.append({"epoch": epoch, **metrics})
        if on_epoch_end is not None and is_main_process():
            on_epoch_end(epoch, metrics, ema.module if ema is not None else base_model)
        if stopped_by_time:
            break

    if ema is not None:
        base_model.load_state_dict(ema.module.state_dict())
    seconds = time.perf_counter() - start
    unreadable = {index: reason for part in _gather(corrupt) for index, reason in part.items()}
    damaged = {index: reason for part in _gather(damaged) for index, reason in part.items()}
    return TrainResult(
        steps=step,
        epochs_completed=epochs_done,
        images_seen=images_seen,
        train_seconds=seconds,
        images_per_second=images_seen / max(seconds, 1e-9),
        data_wait_share=data_wait / max(seconds, 1e-9),
        stopped_by_time_budget=stopped_by_time,
        history=history,
        unreadable=unreadable,
        damaged=damaged,
    )
