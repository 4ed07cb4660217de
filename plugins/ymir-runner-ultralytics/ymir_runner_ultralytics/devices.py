"""The task's device: ultralytics' device string from config key ``gpu_id``, the torch device, and out-of-memory
errors as the protocol's code naming the key to lower."""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

from ymir_runner import ConfigError, GpuMismatchError, NoGpuError, OutOfMemoryError


def select_device(gpu_ids: Sequence[int]) -> str:
    """ultralytics' device string: ``'cpu'`` for ``gpu_id`` '', ``'<id>'`` for one GPU.

    Several ids are refused (ConfigError naming ``gpu_id``): ultralytics trains on several GPUs by re-launching the
    trainer in a subprocess (DDP) where this plugin's callbacks (progress, stages, metrics) do not exist.
    Raises NoGpuError (ids but no usable CUDA) and GpuMismatchError (an id the container does not see)."""
    if not gpu_ids:
        return "cpu"
    if len(gpu_ids) > 1:
        raise ConfigError(f"config key 'gpu_id': {','.join(map(str, gpu_ids))} names several GPUs; the ultralytics "
                          "executor runs on one GPU (ultralytics' multi-GPU training re-launches the trainer in a "
                          "subprocess without this executor's progress and stages): give one id")
    import torch

    if not torch.cuda.is_available():
        raise NoGpuError(f"config key 'gpu_id' asks for GPU {gpu_ids[0]} but no CUDA GPU is usable in this container")
    count = torch.cuda.device_count()
    if not 0 <= gpu_ids[0] < count:
        raise GpuMismatchError(f"config key 'gpu_id' names GPU {gpu_ids[0]} but the container sees {count} GPU(s)")
    return str(gpu_ids[0])


def torch_device(device: str) -> str:
    """The torch device of an ultralytics device string."""
    return "cpu" if device == "cpu" else f"cuda:{device}"


@contextlib.contextmanager
def out_of_memory_as_error(key: str = "batch_size_per_gpu") -> Iterator[None]:
    """A CUDA out-of-memory error becomes the protocol's OutOfMemoryError naming the config key to lower."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError as error:
        raise OutOfMemoryError(f"the GPU ran out of memory: lower config key {key!r} or 'img_size' "
                               f"({str(error).splitlines()[0]})") from error
    except RuntimeError as error:
        if "out of memory" not in str(error).lower():
            raise
        raise OutOfMemoryError(f"out of memory: lower config key {key!r} or 'img_size' "
                               f"({str(error).splitlines()[0]})") from error
