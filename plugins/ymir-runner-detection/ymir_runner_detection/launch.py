"""Devices and processes: which devices a task runs on, and one function run on all of them at once.

``gpu_id`` '' is the CPU (or N CPU processes with ``YMIR_RUNNER_DETECTION_CPU_PROCESSES=N``, how the
multi-process path is tested without GPUs); one id is that GPU; several ids are one process per GPU. The
processes come from the core's :func:`ymir_runner.launch`: rank 0 is the calling process, so it keeps the
task's progress, log, tensorboard and the core's stop-signal handling; the other ranks are spawned and write
nothing of their own.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.distributed as dist

import ymir_runner
from ymir_runner import GpuMismatchError, NoGpuError

#: Tests and multi-core CPU servers: run on the CPU with this many processes (training: DDP over gloo).
CPU_WORLD_SIZE_ENV_VAR = "YMIR_RUNNER_DETECTION_CPU_PROCESSES"
#: How long a collective of the process group waits for the other ranks before failing.
GROUP_TIMEOUT = datetime.timedelta(minutes=30)


def select_devices(gpu_ids: Sequence[int]) -> list[str]:
    """The devices of a task, one per rank: ``'cpu'`` (``gpu_id`` '': once, or ``$YMIR_RUNNER_DETECTION_CPU_PROCESSES``
    times) or ``'cuda:<id>'`` per id of ``gpu_id``. Raises ``NoGpuError`` (ids but no usable CUDA) and
    ``GpuMismatchError`` (an id the container does not see)."""
    if not gpu_ids:
        processes = int(os.environ.get(CPU_WORLD_SIZE_ENV_VAR, "1") or 1)
        return ["cpu"] * max(processes, 1)
    if not torch.cuda.is_available():
        raise NoGpuError(f"config key 'gpu_id' asks for GPU {','.join(map(str, gpu_ids))} but no CUDA GPU is "
                         "usable in this container")
    count = torch.cuda.device_count()
    missing = [gpu for gpu in gpu_ids if not 0 <= gpu < count]
    if missing:
        raise GpuMismatchError(f"config key 'gpu_id' names GPU {missing} but the container sees {count} GPU(s)")
    return [f"cuda:{gpu}" for gpu in gpu_ids]


def run_on_devices(fn: Callable[..., Any], devices: Sequence[str], *args: Any, process_group: bool = False,
                   local_kwargs: Mapping[str, Any] | None = None) -> list[Any]:
    """Run ``fn(rank, world_size, device, *args)`` once per device (``device = devices[rank]``) and return what
    each rank returned, in rank order.

    * One device: ``fn`` runs here, nothing else happens.
    * Several: :func:`ymir_runner.launch` runs rank 0 here with ``local_kwargs`` (need not pickle: progress
      callbacks, a network already on ``devices[0]``) and spawns the others (``fn`` must be a module-level
      function; ``args`` and the results must pickle). Each rank first selects its GPU, or, on the CPU, takes
      ``os.cpu_count() // N`` torch threads (this process's count is restored afterwards). With
      ``process_group`` the ranks join one ``torch.distributed`` group (nccl on GPUs, gloo on the CPU) around
      ``fn``, as DDP needs.

    Errors: an exception of rank 0 (a stop signal turned into one included) stops the other ranks and
    propagates; a spawned rank that fails raises ``ymir_runner.RankError`` naming it. No rank outlives the call.
    """
    if len(devices) == 1:
        return [fn(0, 1, devices[0], *args, **(local_kwargs or {}))]
    return ymir_runner.launch(_on_device, len(devices), (fn, list(devices), process_group, args),
                              local_kwargs=local_kwargs)


def _on_device(rank: int, world_size: int, fn: Callable[..., Any], devices: list[str], process_group: bool,
               args: tuple, **local_kwargs: Any) -> Any:
    """One rank of :func:`run_on_devices` (several devices), in this process (rank 0) or a spawned one."""
    device = devices[rank]
    threads = torch.get_num_threads()
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    try:
        if not process_group:
            return fn(rank, world_size, device, *args, **local_kwargs)
        # MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE come from ymir_runner.launch.
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", init_method="env://",
                                timeout=GROUP_TIMEOUT)
        try:
            return fn(rank, world_size, device, *args, **local_kwargs)
        finally:
            dist.destroy_process_group()
    finally:
        torch.set_num_threads(threads)
