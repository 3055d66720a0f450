"""Cluster specs are validated before anything starts, and connect() cleans up."""

from __future__ import annotations

import pytest

from implicit_rmt.cluster import ClusterSpec, connect, slurm_cluster
from implicit_rmt.errors import ParameterError


@pytest.mark.parametrize(
    ("values", "parameter"),
    [
        ({"kind": "kubernetes"}, "cluster.kind"),
        ({"workers": 0}, "cluster.workers"),
        ({"threads_per_worker": -1}, "cluster.threads_per_worker"),
        ({"memory_limit": "lots"}, "cluster.memory_limit"),
        ({"kind": "address"}, "cluster.address"),
        ({"kind": "address", "address": "localhost"}, "cluster.address"),
        ({"address": "tcp://h:1"}, "cluster.address"),
        ({"kind": "slurm", "walltime": "1h"}, "cluster.walltime"),
        ({"kind": "slurm", "memory": "0B"}, "cluster.memory"),
        ({"job_extra": ["--gres=gpu:1"]}, "cluster.job_extra"),
        ({"kind": "slurm", "queue": ""}, "cluster.queue"),
        ({"kind": "slurm", "account": 7}, "cluster.account"),
    ],
)
def test_bad_spec_names_the_field(values: dict[str, object], parameter: str) -> None:
    with pytest.raises(ParameterError) as info:
        ClusterSpec(**values)  # type: ignore[arg-type]
    assert info.value.parameter == parameter


def test_from_mapping_refuses_unknown_keys() -> None:
    with pytest.raises(ParameterError, match=r"cluster\.wokers"):
        ClusterSpec.from_mapping({"wokers": 2})
    spec = ClusterSpec.from_mapping(
        {"kind": "slurm", "job_extra": ["--gres=gpu:1"], "walltime": "1-02:00:00"}
    )
    assert spec.job_extra == ("--gres=gpu:1",)


def test_cuda_without_dask_cuda_is_a_clear_error() -> None:
    pytest.importorskip("dask")
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        with (
            pytest.raises(ParameterError, match="dask-cuda"),
            connect(ClusterSpec(kind="cuda")),
        ):
            pass
    else:
        pytest.skip("dask-cuda is installed; the missing-package error cannot occur")


def test_local_threads_then_address_and_everything_closes() -> None:
    spec = ClusterSpec(workers=2, threads_per_worker=1, processes=False)
    with connect(spec) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        assert client.submit(sum, [1, 2, 3]).result() == 6
        address = client.scheduler.address
        with connect(ClusterSpec(kind="address", address=address)) as second:
            assert second.submit(lambda: 7).result() == 7
        # the attached client left the scheduler running
        assert client.submit(lambda: 8).result() == 8
    assert client.status == "closed"


def test_slurm_job_script_carries_every_option() -> None:
    pytest.importorskip("dask_jobqueue")
    spec = ClusterSpec(
        kind="slurm",
        workers=3,
        queue="short",
        account="rmt",
        walltime="02:30:00",
        cores=4,
        memory="16GiB",
        job_extra=("--gres=gpu:1",),
    )
    cluster = slurm_cluster(spec)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in (
        "#SBATCH -p short",
        "#SBATCH -A rmt",
        "#SBATCH -t 02:30:00",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --gres=gpu:1",
        "--nthreads 4",
        "export MALLOC_MMAP_THRESHOLD_=33554432",
    ):
        assert line in script, (line, script)
    with pytest.raises(ParameterError, match=r"cluster\.kind"):
        slurm_cluster(ClusterSpec())


def _environment(names: tuple[str, ...]) -> dict[str, str | None]:
    import os

    return {name: os.environ.get(name) for name in names}


def test_local_worker_processes_get_the_worker_environment() -> None:
    names = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "OPENBLAS_NUM_THREADS")
    with connect(ClusterSpec(workers=1, threads_per_worker=1)) as client:
        seen = client.submit(_environment, names).result()
    # ours (the trim threshold replacing Dask's 64 KiB), next to the BLAS
    # threads Dask's nannies set by default
    assert seen == {
        "MALLOC_MMAP_THRESHOLD_": "33554432",
        "MALLOC_TRIM_THRESHOLD_": "134217728",
        "OPENBLAS_NUM_THREADS": "1",
    }
