"""One call to run a function on several ranks (CPU processes or GPUs), rank 0 in the calling process.

The core does not import torch: :func:`launch` starts the processes, gives each the environment that
``torch.distributed.init_process_group(backend, init_method="env://")`` reads (``MASTER_ADDR``,
``MASTER_PORT``, ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``), collects what each rank returns and makes sure no
rank outlives the call. The function itself joins the process group (gloo on the CPU, nccl on GPUs).

Rank 0 runs in the calling process, so it keeps the task's context: its progress, log, tensorboard and the
core's stop-signal handling. The other ranks are fresh interpreters (``spawn``); they get only what pickles,
and should write no protocol output (the context does not pickle, on purpose).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import traceback
from typing import Any, Callable, Iterator, Mapping, Sequence

__all__ = ["launch", "RankError", "JOIN_SECONDS"]

#: Seconds a stopped rank gets to clean up (SIGTERM) before it is killed.
STOP_SECONDS = 10.0
#: Seconds a spawned rank gets to exit once it sent its result, before it is terminated.
JOIN_SECONDS = 60.0


class RankError(RuntimeError):
    """A spawned rank failed: ``rank``, its exit ``code`` and the ``traceback`` text it reported (if any)."""

    def __init__(self, rank: int, code: int | None, traceback_text: str = "") -> None:
        detail = traceback_text.strip().splitlines()[-1] if traceback_text.strip() else f"exit code {code}"
        super().__init__(f"rank {rank} failed: {detail}")
        self.rank, self.code, self.traceback = rank, code, traceback_text


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for ``MASTER_PORT``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rank_environment(rank: int, world_size: int, port: int) -> dict[str, str]:
    """The variables ``init_method="env://"`` reads, for one rank on this machine."""
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size)}


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _stop_rank(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _spawned_rank(fn: Callable[..., Any], rank: int, world_size: int, args: tuple, connection: Any) -> None:
    # Stopped by the launcher (rank 0 failed, the task was stopped): exit through Python's clean-up, so what the
    # rank created (queues and DataLoader workers, whose semaphores the shared resource tracker would otherwise
    # report as leaked on stderr after the task's error line) is released.
    signal.signal(signal.SIGTERM, _stop_rank)
    try:
        result = fn(rank, world_size, *args)
    except SystemExit:
        raise
    except BaseException:
        connection.send(("error", traceback.format_exc()))
        raise
    connection.send(("result", result))


def launch(fn: Callable[..., Any], world_size: int, args: Sequence[Any] = (), *,
           local_kwargs: Mapping[str, Any] | None = None, environment: Mapping[str, str] | None = None) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ranks 0..world_size-1 and return their results in rank order.

    * ``world_size == 1``: ``fn(0, 1, *args, **local_kwargs)`` runs here, no process is started and no
      variable is set.
    * Otherwise ranks 1..N-1 are spawned processes (``fn`` must be a module-level function and ``args`` must
      pickle; so must each rank's result); rank 0 runs here with ``local_kwargs`` (which need not pickle: a
      progress callback, a model already loaded). Each rank sees :func:`rank_environment` in ``os.environ``
      (rank 0's is restored afterwards), plus ``environment`` (e.g. ``OMP_NUM_THREADS`` for CPU ranks sharing
      the cores), set before its interpreter starts.

    Errors: an exception of rank 0 (a stop signal turned into an exception included) terminates the spawned
    ranks and propagates. A spawned rank that fails raises :class:`RankError` naming the rank and the last line
    of its traceback (the whole traceback is on its stderr). No rank outlives the call.
    """
    local_kwargs = dict(local_kwargs or {})
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    if world_size == 1:
        return [fn(0, 1, *args, **local_kwargs)]
    port = free_port()
    context = multiprocessing.get_context("spawn")
    processes, connections = [], []
    try:
        for rank in range(1, world_size):
            receiver, sender = context.Pipe(duplex=False)
            # Not daemonic: a rank may start DataLoader workers of its own.
            process = context.Process(target=_spawned_rank, args=(fn, rank, world_size, tuple(args), sender),
                                      name=f"rank-{rank}", daemon=False)
            with _environment({**(environment or {}), **rank_environment(rank, world_size, port)}):
                process.start()
            sender.close()
            processes.append(process)
            connections.append(receiver)
        with _environment({**(environment or {}), **rank_environment(0, world_size, port)}):
            results = [fn(0, world_size, *args, **local_kwargs)]
        for rank, (process, connection) in enumerate(zip(processes, connections), 1):
            results.append(_result_of(rank, process, connection))
        return results
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
            process.join(STOP_SECONDS)
            if process.is_alive():  # stuck where Python cannot run its clean-up (a collective, native code)
                process.kill()
                process.join()
        for connection in connections:
            connection.close()


def _result_of(rank: int, process: Any, connection: Any) -> Any:
    """What rank ``rank`` sent, waiting as long as it runs (its share may take longer than rank 0's)."""
    while not connection.poll(1.0):
        if not process.is_alive() and not connection.poll(0):
            raise RankError(rank, process.exitcode)
    try:
        kind, value = connection.recv()
    except EOFError:
        process.join(JOIN_SECONDS)
        raise RankError(rank, process.exitcode) from None
    process.join(JOIN_SECONDS)
    if kind != "result":
        raise RankError(rank, process.exitcode, value)
    return value
