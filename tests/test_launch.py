"""ymir_runner.launch (ymir_runner/distributed.py): ranks, their environment, their results, their failures;
no rank outlives the call."""

import glob
import os
import subprocess
import sys

import launch_ranks
import pytest

from ymir_runner import RankError, launch
from ymir_runner.testing import is_running


def test_one_rank_runs_here_without_environment():
    (result,) = launch(launch_ranks.describe, 1, (10,), local_kwargs={"local": "here"})
    assert result["pid"] == os.getpid() and result["local"] == "here" and result["RANK"] is None


def test_three_ranks_each_with_its_environment_and_result():
    before = os.environ.get("RANK")
    results = launch(launch_ranks.describe, 3, (10,), local_kwargs={"local": "rank 0 only"},
                     environment={"OMP_NUM_THREADS": "1"})
    assert [r["rank"] for r in results] == [10, 11, 12]
    assert [r["RANK"] for r in results] == ["0", "1", "2"] and {r["WORLD_SIZE"] for r in results} == {"3"}
    assert [r["local"] for r in results] == ["rank 0 only", None, None]
    assert results[0]["pid"] == os.getpid() and len({r["pid"] for r in results}) == 3
    assert {r["OMP_NUM_THREADS"] for r in results} == {"1"} and {r["MASTER_ADDR"] for r in results} == {"127.0.0.1"}
    assert os.environ.get("RANK") == before  # rank 0's variables do not stay behind


def test_a_failing_rank_is_named_with_its_error():
    with pytest.raises(RankError, match="rank 1 failed: ValueError: rank one has bad data"):
        launch(launch_ranks.fail_on_rank_one, 2)
    with pytest.raises(RankError, match="rank 1 failed: exit code 3"):
        launch(launch_ranks.exit_on_rank_one, 3)


def test_rank_zero_failing_stops_the_others(tmp_path):
    marker = str(tmp_path / "pids" / "pid")
    os.makedirs(os.path.dirname(marker))
    with pytest.raises(KeyError, match="rank zero failed"):
        launch(launch_ranks.rank_zero_fails_while_others_wait, 3, (marker,))
    pids = []
    for path in sorted(glob.glob(marker + ".[0-9]")):
        with open(path) as stream:
            pids.append(int(stream.read()))
    assert len(pids) == 2 and not any(is_running(pid) for pid in pids)


def test_stopped_ranks_clean_up_so_nothing_follows_the_error_line(tmp_path):
    """A rank terminated without clean-up leaves semaphores the resource tracker reports on stderr at exit,
    after the task's error line (the platform shows the last 5 lines)."""
    script = (
        "import sys, launch_ranks\n"
        "from ymir_runner import launch\n"
        "if __name__ == '__main__':\n"
        "    try:\n"
        f"        launch(launch_ranks.rank_zero_fails_while_others_hold_a_queue, 2, ({str(tmp_path / 'up')!r},))\n"
        "    except KeyError:\n"
        "        print('THE ERROR LINE', file=sys.stderr)\n")
    (tmp_path / "main.py").write_text(script)
    done = subprocess.run([sys.executable, str(tmp_path / "main.py")], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": os.path.dirname(launch_ranks.__file__)})
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "THE ERROR LINE", done.stderr
