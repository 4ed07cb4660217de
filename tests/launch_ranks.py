"""Module-level rank functions for tests/test_launch.py (spawned ranks import them by name)."""

import os


def describe(rank, world_size, offset, *, local=None):
    keys = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "OMP_NUM_THREADS")
    return {"rank": rank + offset, "world_size": world_size, "pid": os.getpid(), "local": local,
            **{key: os.environ.get(key) for key in keys}}


def fail_on_rank_one(rank, world_size):
    if rank == 1:
        raise ValueError("rank one has bad data")
    return rank


def exit_on_rank_one(rank, world_size):
    if rank == 1:
        os._exit(3)
    return rank


def rank_zero_fails_while_others_wait(rank, world_size, marker):
    """Rank 0 fails once every other rank is running (and has written its pid); the others would wait 60 s."""
    import time

    if rank == 0:
        deadline = time.monotonic() + 30
        def written():
            return [name for name in os.listdir(os.path.dirname(marker)) if not name.endswith(".tmp")]

        while len(written()) < world_size - 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        raise KeyError("rank zero failed")
    with open(f"{marker}.{rank}.tmp", "w") as stream:
        stream.write(str(os.getpid()))
    os.replace(f"{marker}.{rank}.tmp", f"{marker}.{rank}")
    time.sleep(60)


def rank_zero_fails_while_others_hold_a_queue(rank, world_size, marker):
    """Rank 1 holds a multiprocessing queue (semaphores, as a DataLoader does) when rank 0 fails."""
    import multiprocessing
    import time

    if rank == 0:
        deadline = time.monotonic() + 30
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        raise KeyError("rank zero failed")
    queue = multiprocessing.get_context("spawn").Queue()
    queue.put(1)
    open(marker, "w").close()
    time.sleep(60)
