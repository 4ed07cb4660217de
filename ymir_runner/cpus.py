"""The CPUs a task may really use, and how a plugin shares them between compute threads and data workers.

``os.cpu_count()`` counts the host's CPUs. Inside a container limited to 2 CPUs on a 64-core host it says 64,
and a torch or numpy run with 64 OpenMP threads then fights itself for 2 CPUs. What counts here:

* the CPU affinity mask (``taskset``, ``docker run --cpuset-cpus``);
* the cgroup CPU quota (``docker run --cpus``, a Kubernetes CPU limit), cgroup v2 ``cpu.max`` or cgroup v1
  ``cpu.cfs_quota_us / cpu.cfs_period_us``, rounded down and at least 1, as Go's ``automaxprocs`` does:
  rounding up makes the kernel throttle the whole process every period;
* ``$YMIR_RUNNER_CPUS``, when set, replaces both (for runtimes that hide the quota from the container).

OpenMP's default wait policy lets an idle thread spin on its core for a while before it sleeps. On a machine
with spare cores this hides a few microseconds of wake-up; whenever DataLoader workers or another program
need the same cores, the spinning threads burn the CPU time the work needs. Measured on 2 cores with the
detection plugin's training loop (``bench/bench_cpu_threads.py``, 3 epochs, the old settings against
:func:`configure_openmp` + :func:`share_cpus`): with two other busy processes on the machine, 9.2 against 5.4
CPU s and 8.7 against 5.8 s wall per epoch; on a quiet machine 5.7 against 4.9 CPU s, 2.8 against 3.1 s wall.
Hence :func:`configure_openmp`,
which ``ymir-runner`` calls before any plugin is imported (the OpenMP runtime reads these variables once,
when torch or numpy loads it).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Mapping, MutableMapping

from .errors import ConfigError

__all__ = ["CpuLimits", "CpuShare", "available_cpus", "cpu_limits", "cgroup_cpu_quota", "configure_openmp",
           "openmp_settings", "share_cpus", "CPUS_ENV_VAR", "THREAD_COUNT_VARIABLES", "WAIT_POLICY"]

#: Variables the OpenMP runtimes (libgomp, Intel's) and the BLAS libraries read for their thread count.
THREAD_COUNT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: What :func:`configure_openmp` sets unless the user set it: idle OpenMP threads sleep instead of spinning.
WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")
#: An explicit CPU count for the task, for runtimes that hide the quota from the container (a positive integer).
CPUS_ENV_VAR = "YMIR_RUNNER_CPUS"


@dataclasses.dataclass(frozen=True)
class CpuLimits:
    """Where the task's CPU count comes from: ``affinity`` CPUs in the mask, the cgroup ``quota`` in CPUs
    (None: no limit), an ``override`` from ``$YMIR_RUNNER_CPUS``, and ``count``, the CPUs the task may use:
    the override if set, else min of affinity and quota, the quota rounded down, at least 1."""

    affinity: int
    quota: float | None
    override: int | None = None

    @property
    def count(self) -> int:
        if self.override is not None:
            return self.override
        if self.quota is None:
            return self.affinity
        return max(1, min(self.affinity, math.floor(self.quota)))

    def describe(self) -> str:
        """E.g. ``2 CPUs (affinity 64, cgroup quota 2.5)``."""
        quota = "none" if self.quota is None else f"{self.quota:g}"
        text = f"{self.count} CPU{'s' if self.count != 1 else ''} (affinity {self.affinity}, cgroup quota {quota}"
        return text + (f", set by {CPUS_ENV_VAR})" if self.override is not None else ")")


def cpu_limits(cgroup_root: str = "/sys/fs/cgroup", proc_self: str = "/proc/self",
               environ: Mapping[str, str] | None = None) -> CpuLimits:
    """The affinity mask and the cgroup CPU quota of this process, and ``$YMIR_RUNNER_CPUS`` (``cgroup_root``,
    ``proc_self`` and ``environ`` are parameters for tests). A quota file that is missing or unreadable means no
    quota. Raises ConfigError (300001) when ``$YMIR_RUNNER_CPUS`` is set but not a positive integer."""
    if hasattr(os, "sched_getaffinity"):
        affinity = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS, Windows
        affinity = os.cpu_count() or 1
    setting = (os.environ if environ is None else environ).get(CPUS_ENV_VAR, "").strip()
    override = None
    if setting:
        if not setting.isdigit() or int(setting) < 1:
            raise ConfigError(f"environment variable {CPUS_ENV_VAR}: {setting!r} must be a positive integer")
        override = int(setting)
    return CpuLimits(affinity=max(affinity, 1), quota=cgroup_cpu_quota(cgroup_root, proc_self), override=override)


def available_cpus() -> int:
    """How many CPUs this process may use: the affinity mask capped by the cgroup quota (see the module)."""
    return cpu_limits().count


def cgroup_cpu_quota(cgroup_root: str = "/sys/fs/cgroup", proc_self: str = "/proc/self") -> float | None:
    """The tightest CPU quota, in CPUs, of this process's cgroup and its ancestors; None when there is none.

    cgroup v2: ``cpu.max`` holds ``"<quota_us> <period_us>"`` or ``"max <period_us>"``. cgroup v1:
    ``cpu.cfs_quota_us`` (-1: none) and ``cpu.cfs_period_us`` under the ``cpu`` controller. The process's
    cgroup comes from ``/proc/self/cgroup``; in a container with its own cgroup namespace that is ``/``.
    """
    quotas = []
    for controllers, path in _cgroup_paths(proc_self):
        if controllers == "":  # v2 unified hierarchy
            for folder in _ancestors(cgroup_root, path):
                quotas.append(_v2_quota(os.path.join(folder, "cpu.max")))
        elif "cpu" in controllers.split(","):
            for mount in ("cpu,cpuacct", "cpu", "cpuacct,cpu"):
                base = os.path.join(cgroup_root, mount)
                if os.path.isdir(base):
                    for folder in _ancestors(base, path):
                        quotas.append(_v1_quota(folder))
                    break
    found = [quota for quota in quotas if quota is not None]
    return min(found) if found else None


def _cgroup_paths(proc_self: str) -> list[tuple[str, str]]:
    """``(controllers, path)`` per line of /proc/self/cgroup (``hierarchy:controllers:path``)."""
    try:
        with open(os.path.join(proc_self, "cgroup"), encoding="utf-8") as stream:
            lines = stream.read().splitlines()
    except OSError:
        return [("", "/")]
    entries = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            entries.append((parts[1], parts[2] or "/"))
    return entries


def _ancestors(root: str, path: str) -> list[str]:
    """``root/a/b``, ``root/a``, ``root`` for path ``/a/b``: folders that exist (a container sees only its own)."""
    parts = [part for part in path.split("/") if part and part != ".."]
    folders = [os.path.join(root, *parts[:depth]) for depth in range(len(parts), -1, -1)]
    return [folder for folder in folders if os.path.isdir(folder)]


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read().strip()
    except OSError:
        return None


def _v2_quota(path: str) -> float | None:
    fields = (_read(path) or "").split()
    if len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(folder: str) -> float | None:
    try:
        quota = int(_read(os.path.join(folder, "cpu.cfs_quota_us")) or "-1")
        period = int(_read(os.path.join(folder, "cpu.cfs_period_us")) or "0")
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def configure_openmp(environ: MutableMapping[str, str] | None = None, cpus: int | None = None) -> dict[str, str]:
    """Set the OpenMP / BLAS thread count to the available CPUs and the passive wait policy, in ``environ``
    (default ``os.environ``), for every variable the user has not set. Returns what it set.

    Must run before torch or numpy is imported to take effect (their OpenMP runtime reads the variables once);
    ``ymir-runner`` calls it first thing. Child processes (DataLoader workers, ranks) inherit the variables.
    """
    environ = os.environ if environ is None else environ
    count = str(available_cpus() if cpus is None else cpus)
    wanted = {**{name: count for name in THREAD_COUNT_VARIABLES}, WAIT_POLICY[0]: WAIT_POLICY[1]}
    applied = {name: value for name, value in wanted.items() if not environ.get(name)}
    environ.update(applied)
    return applied


def openmp_settings(environ: Mapping[str, str] | None = None) -> str:
    """``OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE``: the values in effect, for the log."""
    environ = os.environ if environ is None else environ
    return " ".join(f"{name}={environ.get(name, 'unset')}" for name in ("OMP_NUM_THREADS", WAIT_POLICY[0]))


@dataclasses.dataclass(frozen=True)
class CpuShare:
    """How one rank uses its CPUs: ``threads`` intra-op (OpenMP) threads for the model and ``workers``
    data-loading processes (0: the main process loads), with ``threads + workers <= cpus``;
    ``requested_workers`` is what the config asked for."""

    cpus: int
    threads: int
    workers: int
    requested_workers: int

    def describe(self) -> str:
        """E.g. ``2 compute threads + 0 DataLoader workers on 2 CPUs (config asked for 2 workers: ...)``."""
        text = (f"{self.threads} compute thread{'s' if self.threads != 1 else ''} + {self.workers} DataLoader "
                f"worker{'s' if self.workers != 1 else ''} on {self.cpus} CPU{'s' if self.cpus != 1 else ''}")
        if self.workers != self.requested_workers:
            text += f" (config asked for {self.requested_workers} workers: capped so that no CPU is shared)"
        return text


def share_cpus(workers: int, ranks: int = 1, cpus: int | None = None, *, accelerator: bool = False) -> CpuShare:
    """Split the CPUs of one rank (``available_cpus() // ranks``, at least 1) between data workers and compute
    threads so that they never share a CPU: ``threads + workers <= cpus``.

    * ``accelerator`` (the model runs on a GPU): ``min(workers, cpus - 1)`` workers, the other CPUs (at least
      one) drive the GPU.
    * CPU training and inference: the model's threads are the work, data loading is a fraction of it (a
      tenth to a fifth of a step for the detection plugin), so ``min(workers, cpus // 4)`` workers and the rest
      compute threads. On 2 CPUs that is no worker: images are loaded in the main process while the compute
      threads sleep (with the passive wait policy they do not spin).

    Measured on 2 CPUs with one other busy program on the machine, 3 epochs of the detection plugin's training
    loop: 2 threads and no worker 10 s wall / 15 CPU s, 1 thread + 1 worker 13 s / 14 CPU s, 2 threads + 2
    workers 17 s / 18 CPU s.
    """
    if workers < 0 or ranks < 1:
        raise ValueError(f"workers must be >= 0 and ranks >= 1, got {workers} and {ranks}")
    total = available_cpus() if cpus is None else cpus
    per_rank = max(1, total // ranks)
    used_workers = min(workers, per_rank - 1 if accelerator else per_rank // 4)
    return CpuShare(cpus=per_rank, threads=max(1, per_rank - used_workers), workers=used_workers,
                    requested_workers=workers)
