"""The input side of the core's task loops: the next batches are prepared on threads while the model works.

Decoding (Pillow's decoders) and resizing (Pillow, OpenCV, numpy) release the GIL, so a few threads overlap them
with a forward pass that keeps its own compute threads. :class:`Prefetch` prepares batch n+1 and n+2 while the
caller's model runs on batch n, hands batches back in their order, and never holds more than
:data:`AHEAD` prepared batches besides the caller's. Anchor: the prefetching of torch's ``DataLoader``
(``prefetch_factor``), with threads instead of processes: a task loop's inputs go to the model in the process
that holds it, and nothing has to be pickled.

Private to the core: the loops (:func:`ymir_runner.inference.infer_candidates`,
:func:`ymir_runner.mining.mine_candidates`) are the public face.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import itertools
from typing import TYPE_CHECKING, Callable, Deque, Generic, Iterator, Sequence, TypeVar

from .cpus import available_cpus

if TYPE_CHECKING:
    from .context import TaskContext
    from .protocol.dataset import Item
    from .protocol.images import DecodedImage

__all__ = ["AHEAD", "MAX_WORKERS", "Prefetch", "Prepared", "candidate_batches", "prefetch_workers"]

#: Batches prepared ahead of the one the model works on: memory stays at three batches of model inputs.
AHEAD = 2
#: The most threads :func:`prefetch_workers` gives by default: beyond this, threads mostly wait for the GIL
#: (Python code between the C calls that release it).
MAX_WORKERS = 8

_Item = TypeVar("_Item")
_Prepared = TypeVar("_Prepared")
_Input = TypeVar("_Input")


def prefetch_workers(workers: int | None = None, cpus: int | None = None) -> int:
    """The threads that prepare inputs: ``workers`` when given (0: prepare in the caller's thread, nothing
    ahead), else one fewer than the task's CPUs (``ymir_runner.cpus.available_cpus()``, or ``cpus``), at least 1
    and at most :data:`MAX_WORKERS`: the model's forward pass keeps a CPU of its own.

    Raises ``ValueError`` for a ``workers`` that is not an integer >= 0.
    """
    if workers is None:
        return min(MAX_WORKERS, max(1, (available_cpus() if cpus is None else cpus) - 1))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ValueError(f"workers must be an integer >= 0, got {workers!r}")
    return workers


class Prefetch(Generic[_Item, _Prepared]):
    """``prepare(item)`` for every one of ``items`` on ``workers`` threads, ahead of the caller, in batches of
    ``batch_size``::

        with Prefetch(prepare, items, batch_size=16, workers=3) as batches:
            for chunk, prepared in batches:  # chunk: the items of a batch, prepared: prepare(item) of each
                model(prepared)

    Batches come in the order of ``items`` and each batch in its items' order, whatever order the threads finish
    in. While the caller holds batch n, at most ``ahead`` more (n+1, n+2) are submitted; the next is submitted
    when the caller asks for batch n+1. Asking for a batch, the caller prepares its items that no thread has
    started yet itself rather than wait (so the first batch is prepared by every thread and the caller's). An
    exception raised by ``prepare`` is raised to the caller when it asks for that item's batch, whichever thread
    ran it. Leaving the ``with`` block (normally, by an exception in the model, by
    ``KeyboardInterrupt`` or a stop signal) cancels what has not started and returns at once: a thread that is
    inside ``prepare`` finishes that one item on its own. With ``workers`` 0, each batch is prepared in the
    caller's thread when asked for.

    ``prepare`` runs on several threads at once: what it touches must be thread-safe
    (``TaskContext.decode`` is).
    """

    def __init__(self, prepare: Callable[[_Item], _Prepared], items: Sequence[_Item], *, batch_size: int,
                 workers: int, ahead: int = AHEAD) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if ahead < 1:
            raise ValueError(f"ahead must be >= 1, got {ahead}")
        self.prepare = prepare
        self.batches = [list(items[start:start + batch_size]) for start in range(0, len(items), batch_size)]
        self.workers = prefetch_workers(workers)
        self.ahead = ahead
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: Deque[tuple[list[_Item], list[concurrent.futures.Future[_Prepared]]]] = collections.deque()

    def __enter__(self) -> Prefetch[_Item, _Prepared]:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[tuple[list[_Item], list[_Prepared]]]:
        if not self.workers:
            for chunk in self.batches:
                yield chunk, [self.prepare(item) for item in chunk]
            return
        if self._pool is not None:
            raise RuntimeError("a Prefetch is iterated once")
        self._pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="ymir-runner-prefetch")
        chunks = iter(self.batches)
        for chunk in itertools.islice(chunks, self.ahead):
            self._submit(chunk)
        while self._pending:
            chunk, futures = self._pending.popleft()
            following = next(chunks, None)
            if following is not None:  # submitted before waiting: the threads never idle at a batch boundary
                self._submit(following)
            yield chunk, self._collect(chunk, futures)

    def _collect(self, chunk: list[_Item], futures: list[concurrent.futures.Future[_Prepared]]) -> list[_Prepared]:
        """The batch's results in order. An item no thread has started yet is prepared here, in the caller's
        thread, instead of waiting for one: the caller helps whenever it would otherwise wait (the first batch,
        or decoding falling behind the model), and never waits while work is queued."""
        for index, future in enumerate(futures):
            if future.cancel():
                done: concurrent.futures.Future[_Prepared] = concurrent.futures.Future()
                try:  # a stop (KeyboardInterrupt, TaskTerminated) is not an Exception: it leaves at once
                    done.set_result(self.prepare(chunk[index]))
                except Exception as error:  # raised below, in the item's order, as a thread's would be
                    done.set_exception(error)
                futures[index] = done
        return [future.result() for future in futures]

    def _submit(self, chunk: list[_Item]) -> None:
        assert self._pool is not None
        self._pending.append((chunk, [self._pool.submit(self.prepare, item) for item in chunk]))

    def close(self) -> None:
        """Cancel every item not started and let the threads end after the item each is on, without waiting
        for them (a stop must not wait for decoding)."""
        for _, futures in self._pending:
            for future in futures:
                future.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


# --- the candidates of a task, decoded by the context and preprocessed by the plugin ---------------------------

@dataclasses.dataclass(frozen=True)
class Prepared(Generic[_Input]):
    """A candidate ready for the model: its ``item``, the model ``input`` (what ``preprocess`` made of the decoded
    image), the image's STORED ``width`` x ``height`` and the decode ``factor`` (boxes in the decoded image's pixels
    times ``factor`` are stored pixels)."""

    item: Item
    input: _Input
    width: int
    height: int
    factor: int


def candidate_batches(context: TaskContext, items: Sequence[Item], preprocess: Callable[[DecodedImage], _Input], *,
                      batch_size: int, min_side: int | None, workers: int | None,
                      task: str) -> Prefetch[Item, Prepared[_Input] | None]:
    """``items`` decoded (``context.decode``: a skip is counted there and gives None) and preprocessed on
    ``workers`` threads (:func:`prefetch_workers`) ahead of the model, in batches of ``batch_size``; the thread
    count is logged once, as ``task`` (``inference``, ``mining``). Use it as a context manager (:class:`Prefetch`).
    """
    count = prefetch_workers(workers)
    where = f"{count} thread{'s' if count != 1 else ''} ahead of the model" if count else "the model's thread"
    how = "" if workers is not None else f", {available_cpus()} CPUs for the task"
    context.logger.info("%s: %d candidates in batches of %d, decoded on %s%s", task, len(items), batch_size, where,
                        how)

    def prepare(item: Item) -> Prepared[_Input] | None:
        decoded = context.decode(item, min_side=min_side)
        if decoded is None:
            return None
        return Prepared(item, preprocess(decoded), decoded.width, decoded.height, decoded.factor)

    return Prefetch(prepare, items, batch_size=batch_size, workers=count)
