"""ymir_runner.cpus: the CPUs a task may use (affinity, cgroup quota) and how they are shared."""

import os

import pytest

from ymir_runner import cpus
from ymir_runner.cpus import CpuLimits, cgroup_cpu_quota, configure_openmp, share_cpus


def _tree(tmp_path, cgroup_line: str, files: dict[str, str]):
    proc = tmp_path / "proc"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(cgroup_line + "\n")
    root = tmp_path / "cgroup"
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    root.mkdir(exist_ok=True)
    return str(root), str(proc)


def test_cgroup_v2_quota_of_a_container_and_of_a_parent_slice(tmp_path):
    # docker run --cpus 2.5 with its own cgroup namespace: the process is at "/".
    root, proc = _tree(tmp_path / "a", "0::/", {"cpu.max": "250000 100000"})
    assert cgroup_cpu_quota(root, proc) == pytest.approx(2.5)
    # Host view: the tightest limit on the way up counts (a 1.5-CPU slice above an unlimited service).
    root, proc = _tree(tmp_path / "b", "0::/slice/job.service",
                       {"slice/cpu.max": "150000 100000", "slice/job.service/cpu.max": "max 100000"})
    assert cgroup_cpu_quota(root, proc) == pytest.approx(1.5)
    root, proc = _tree(tmp_path / "c", "0::/", {"cpu.max": "max 100000"})
    assert cgroup_cpu_quota(root, proc) is None


def test_cgroup_v1_quota_and_missing_or_broken_files(tmp_path):
    root, proc = _tree(tmp_path / "a", "4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc",
                       {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000",
                        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"})
    assert cgroup_cpu_quota(root, proc) == pytest.approx(3.0)
    root, proc = _tree(tmp_path / "b", "4:cpu,cpuacct:/", {"cpu,cpuacct/cpu.cfs_quota_us": "-1",
                                                           "cpu,cpuacct/cpu.cfs_period_us": "100000"})
    assert cgroup_cpu_quota(root, proc) is None
    root, proc = _tree(tmp_path / "c", "0::/", {"cpu.max": "garbage"})
    assert cgroup_cpu_quota(root, proc) is None
    assert cgroup_cpu_quota(str(tmp_path / "none"), str(tmp_path / "none")) is None


def test_the_cpu_count_is_the_affinity_capped_by_the_quota_rounded_down():
    assert CpuLimits(affinity=64, quota=2.5).count == 2  # docker --cpus 2.5 on a 64-core host
    assert CpuLimits(affinity=2, quota=8.0).count == 2  # --cpuset-cpus 0,1 under a loose quota
    assert CpuLimits(affinity=4, quota=0.5).count == 1
    assert CpuLimits(affinity=3, quota=None).count == 3
    assert CpuLimits(affinity=64, quota=2.5).describe() == "2 CPUs (affinity 64, cgroup quota 2.5)"
    assert cpus.available_cpus() == min(len(os.sched_getaffinity(0)), cpus.cpu_limits().count)


def test_workers_and_compute_threads_never_share_a_cpu():
    share = share_cpus(workers=2, cpus=2)  # CPU training on 2 CPUs: load in the main process, 2 threads
    assert (share.threads, share.workers) == (2, 0)
    assert "config asked for 2 workers" in share.describe()
    assert (share_cpus(2, cpus=8).threads, share_cpus(2, cpus=8).workers) == (6, 2)
    assert (share_cpus(2, cpus=4).threads, share_cpus(2, cpus=4).workers) == (3, 1)
    assert (share_cpus(4, ranks=2, cpus=8).threads, share_cpus(4, ranks=2, cpus=8).workers) == (3, 1)
    gpu = share_cpus(2, cpus=2, accelerator=True)  # the GPU computes: workers keep the model fed
    assert (gpu.threads, gpu.workers) == (1, 1)
    assert share_cpus(8, ranks=2, cpus=16, accelerator=True).workers == 7
    for total in range(1, 9):
        for workers in range(0, 5):
            for accelerator in (False, True):
                share = share_cpus(workers, cpus=total, accelerator=accelerator)
                assert share.threads >= 1 and share.threads + share.workers <= total
    with pytest.raises(ValueError):
        share_cpus(-1)


def test_openmp_is_configured_for_the_available_cpus_without_overriding_the_user():
    environ = {"OMP_NUM_THREADS": "3"}
    applied = configure_openmp(environ, cpus=2)
    assert environ == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2",
                       "OMP_WAIT_POLICY": "PASSIVE"}
    assert "OMP_NUM_THREADS" not in applied
    assert cpus.openmp_settings(environ) == "OMP_NUM_THREADS=3 OMP_WAIT_POLICY=PASSIVE"


def test_an_explicit_cpu_count_replaces_detection_and_a_bad_one_is_a_config_error():
    from ymir_runner import ConfigError

    limits = cpus.cpu_limits(environ={"YMIR_RUNNER_CPUS": "6"})
    assert limits.count == 6 and limits.describe().endswith(", set by YMIR_RUNNER_CPUS)")
    for bad in ("0", "two", "-1", "1.5"):
        with pytest.raises(ConfigError, match="environment variable YMIR_RUNNER_CPUS"):
            cpus.cpu_limits(environ={"YMIR_RUNNER_CPUS": bad})
