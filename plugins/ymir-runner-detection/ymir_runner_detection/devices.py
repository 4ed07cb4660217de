"""Devices and processes: which devices a task runs on, and one function run on all of them at once (training;
mining and inference run in the core's one-process loop on the first device).

``gpu_id`` '' is the CPU (or N CPU processes with ``YMIR_RUNNER_DETECTION_CPU_PROCESSES=N``, how the
multi-process path is tested without GPUs); one id is that GPU; several ids are one process per GPU. The
processes come from the core's :func:`ymir_runner.launch`: rank 0 is the calling process, so it keeps the
task's progress, log, tensorboard and the core's stop-signal handling; the other ranks are spawned and write
nothing of their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import logging
import os
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.distributed as dist

import ymir_runner
from ymir_runner import GpuMismatchError, NoGpuError, Param
from ymir_runner.cpus import CpuShare, share_cpus

from .templates import AUTO_WORKERS

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


def cpu_share(devices: Sequence[str], workers: int | str, logger: logging.Logger) -> CpuShare:
    """Compute threads and DataLoader workers of each rank (config key ``num_workers_per_gpu``): the CPUs available
    to the task (affinity and cgroup quota, not ``os.cpu_count()``) split evenly over the ranks, then between
    workers and threads. ``auto``: ``AUTO_WORKERS`` workers, fewer when they would share a CPU with the compute
    threads (``ymir_runner.cpus.share_cpus``; logged); a number is exactly the workers, with a warning when they
    leave no CPU to the compute threads."""
    accelerator = devices[0].startswith("cuda")
    if workers == Param.AUTO:
        share = share_cpus(AUTO_WORKERS, ranks=len(devices), accelerator=accelerator)
        cpus = f"{share.cpus} CPU{'' if share.cpus == 1 else 's'}"
        why = (f"{cpus} per rank" if share.workers == AUTO_WORKERS else
               f"{AUTO_WORKERS}, capped at the rank's {cpus} less one that drives the GPU" if accelerator else
               f"{AUTO_WORKERS}, capped at a quarter of the rank's {cpus}: the model computes on them")
        logger.info("num_workers_per_gpu auto: %d DataLoader worker%s per rank (%s)", share.workers,
                    "" if share.workers == 1 else "s", why)
        return dataclasses.replace(share, requested_workers=share.workers)
    share = share_cpus(0, ranks=len(devices), accelerator=accelerator)
    exact = dataclasses.replace(share, workers=int(workers), threads=max(1, share.cpus - int(workers)),
                                requested_workers=int(workers))
    if exact.workers + exact.threads > exact.cpus:
        logger.warning("config key 'num_workers_per_gpu' %d: %d DataLoader workers + %d compute thread per rank on "
                       "%d CPU%s: they share CPUs and slow each other down (num_workers_per_gpu: auto would use %d)",
                       exact.workers,
                       exact.workers, exact.threads, exact.cpus, "" if exact.cpus == 1 else "s",
                       share_cpus(AUTO_WORKERS, ranks=len(devices), accelerator=accelerator).workers)
    return exact


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """``torch.set_num_threads(count)`` for the block; the previous count is restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, count))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_on_devices(fn: Callable[..., Any], devices: Sequence[str], *args: Any, threads: int,
                   process_group: bool = False, local_kwargs: Mapping[str, Any] | None = None) -> list[Any]:
    """Run ``fn(rank, world_size, device, *args)`` once per device (``device = devices[rank]``) with ``threads``
    torch intra-op threads (see :func:`cpu_share`), and return what each rank returned, in rank order.

    * One device: ``fn`` runs here, nothing else happens.
    * Several: :func:`ymir_runner.launch` runs rank 0 here with ``local_kwargs`` (need not pickle: progress
      callbacks, a network already on ``devices[0]``) and spawns the others (``fn`` must be a module-level
      function; ``args`` and the results must pickle). Each rank first selects its GPU. With
      ``process_group`` the ranks join one ``torch.distributed`` group (nccl on GPUs, gloo on the CPU) around
      ``fn``, as DDP needs.

    This process's torch thread count is restored afterwards.

    Errors: an exception of rank 0 (a stop signal turned into one included) stops the other ranks and
    propagates; a spawned rank that fails raises ``ymir_runner.RankError`` naming it. No rank outlives the call.
    """
    if len(devices) == 1:
        with torch_threads(threads):
            return [fn(0, 1, devices[0], *args, **(local_kwargs or {}))]
    return ymir_runner.launch(_on_device, len(devices), (fn, list(devices), threads, process_group, args),
                              local_kwargs=local_kwargs, environment={"OMP_NUM_THREADS": str(threads)})


def _on_device(rank: int, world_size: int, fn: Callable[..., Any], devices: list[str], threads: int,
               process_group: bool, args: tuple, **local_kwargs: Any) -> Any:
    """One rank of :func:`run_on_devices` (several devices), in this process (rank 0) or a spawned one."""
    device = devices[rank]
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    with torch_threads(threads):
        if not process_group:
            return fn(rank, world_size, device, *args, **local_kwargs)
        # MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE come from ymir_runner.launch.
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo", init_method="env://",
                                timeout=GROUP_TIMEOUT)
        try:
            return fn(rank, world_size, device, *args, **local_kwargs)
        finally:
            dist.destroy_process_group()
