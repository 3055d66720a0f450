"""Dask clusters for kernel builds and solvers: describe one, then connect to it.

A :class:`ClusterSpec` names the kind of cluster and its sizes; :func:`connect`
validates the spec, starts what it describes (or attaches to a running scheduler)
and yields a :class:`distributed.Client`, closing everything it started on exit.

Kinds
-----
``local``
    :class:`distributed.LocalCluster` on this machine, the embedded default. With
    ``processes=False`` the workers are threads of the calling process: start-up
    takes milliseconds instead of seconds and nothing is pickled, which is the
    better choice for small problems and for tests. NumPy's GEMM releases the GIL,
    so threads still use several cores.
``cuda``
    ``dask_cuda.LocalCUDACluster``, one worker per visible GPU (needs the ``gpu``
    extra: ``pip install 'implicit-rmt[gpu]'``).
``slurm``
    ``dask_jobqueue.SLURMCluster``; ``workers`` is the number of SLURM jobs, each
    job running one worker process with ``cores`` threads and ``memory`` bytes.
``address``
    :class:`distributed.Client` connected to a scheduler that is already running at
    ``address``; nothing is started and only the client is closed on exit.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from implicit_rmt.errors import ParameterError

logger = logging.getLogger(__name__)

ClusterKind = Literal["local", "cuda", "slurm", "address"]
CLUSTER_KINDS: tuple[str, ...] = get_args(ClusterKind)


@dataclass(frozen=True)
class ClusterSpec:
    """Description of the Dask cluster a command runs on.

    Parameters
    ----------
    kind
        ``"local"``, ``"cuda"``, ``"slurm"`` or ``"address"`` (see the module
        docstring).
    workers
        Number of workers (``local``; for ``slurm`` the number of jobs, each
        one worker). ``None``: one per core for ``local`` with processes, one
        for ``local`` with threads, one per GPU for ``cuda``, one job for
        ``slurm``.
    threads_per_worker
        Threads per worker (``local``, ``cuda``). ``None`` lets Dask choose.
    memory_limit
        Memory limit per worker, e.g. ``"4GiB"`` or ``"auto"`` (``local``,
        ``cuda``). ``None``: Dask's default.
    processes
        ``local`` only: workers in separate processes (``True``) or as threads
        of this process (``False``, fastest start-up, see the module docstring).
    address
        Scheduler address such as ``"tcp://10.0.0.1:8786"``; required for
        ``address`` and forbidden otherwise.
    queue
        SLURM partition (``slurm``).
    account
        SLURM account to charge (``slurm``).
    walltime
        SLURM wall-clock limit ``"HH:MM:SS"`` or ``"D-HH:MM:SS"`` (``slurm``).
    cores
        Cores per SLURM job (``slurm``; default 1).
    memory
        Memory per SLURM job, e.g. ``"16GiB"`` (``slurm``; default ``"4GiB"``).
    job_extra
        Extra ``#SBATCH`` directives, e.g. ``("--gres=gpu:1",)`` (``slurm``).
    dashboard
        Serve the Dask dashboard on port 8787 (``local``, ``cuda``).
    """

    kind: ClusterKind = "local"
    workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | None = None
    processes: bool = True
    address: str | None = None
    queue: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    cores: int | None = None
    memory: str | None = None
    job_extra: tuple[str, ...] = field(default_factory=tuple)
    dashboard: bool = False

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every field; raise :class:`ParameterError` naming the first bad one."""
        if self.kind not in CLUSTER_KINDS:
            raise ParameterError(
                "cluster.kind", self.kind, f"one of {', '.join(CLUSTER_KINDS)}"
            )
        for name in ("workers", "threads_per_worker", "cores"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ParameterError(f"cluster.{name}", value, "a positive integer")
        if not isinstance(self.processes, bool):
            raise ParameterError("cluster.processes", self.processes, "true or false")
        for name in ("memory_limit", "memory"):
            value = getattr(self, name)
            if value is not None and not (name == "memory_limit" and value == "auto"):
                _check_bytes(f"cluster.{name}", value)
        if self.kind == "address":
            if not isinstance(self.address, str) or "://" not in self.address:
                raise ParameterError(
                    "cluster.address",
                    self.address,
                    "a scheduler address such as 'tcp://host:8786'",
                    "Give the address printed by `dask scheduler`.",
                )
        elif self.address is not None:
            raise ParameterError(
                "cluster.address",
                self.address,
                "no address unless cluster.kind is 'address'",
            )
        for name in ("queue", "account"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ParameterError(f"cluster.{name}", value, "a non-empty string")
        if self.kind == "slurm":
            _check_walltime(self.walltime)
        if not isinstance(self.job_extra, tuple) or not all(
            isinstance(item, str) for item in self.job_extra
        ):
            raise ParameterError(
                "cluster.job_extra", self.job_extra, "a tuple of strings"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> ClusterSpec:
        """Build a spec from a configuration mapping, refusing unknown keys.

        Parameters
        ----------
        mapping
            Keys are the field names of :class:`ClusterSpec`; ``job_extra`` may
            be a list.
        """
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise ParameterError(
                f"cluster.{unknown[0]}",
                mapping[unknown[0]],
                f"a known key ({', '.join(sorted(known))})",
                "Check the spelling of the key.",
            )
        values = dict(mapping)
        if isinstance(values.get("job_extra"), list):
            values["job_extra"] = tuple(values["job_extra"])
        return cls(**values)


def _check_bytes(parameter: str, value: object) -> None:
    """Raise ParameterError unless ``value`` is a byte size Dask understands."""
    from dask.utils import parse_bytes

    if not isinstance(value, str):
        raise ParameterError(parameter, value, "a byte size such as '4GiB'")
    try:
        size = parse_bytes(value)
    except ValueError:
        size = 0
    if size <= 0:
        raise ParameterError(parameter, value, "a byte size such as '4GiB'")


def _check_walltime(value: object) -> None:
    """Raise ParameterError unless ``value`` reads as SLURM's [D-]HH:MM:SS."""
    expected = "a SLURM time limit 'HH:MM:SS' or 'D-HH:MM:SS'"
    if not isinstance(value, str):
        raise ParameterError("cluster.walltime", value, expected)
    days, _, clock = value.rpartition("-")
    parts = clock.split(":")
    if (
        (days and not days.isdigit())
        or len(parts) != 3
        or not all(part.isdigit() and len(part) == 2 for part in parts)
        or int(parts[1]) >= 60
        or int(parts[2]) >= 60
    ):
        raise ParameterError("cluster.walltime", value, expected)


WORKER_ENVIRONMENT = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(128 * 2**20),
}
"""Environment of the worker processes that :func:`connect` starts.

Both settings keep tile-sized temporaries (8 MiB at tile 1024) in glibc's heap,
where freed memory is reused, instead of mapping fresh pages for every tile:

* ``MALLOC_MMAP_THRESHOLD_``: by default glibc serves allocations above 128 KiB
  with ``mmap``, so each tile was page-faulted in and unmapped again. A build of
  the ``ck`` tiles of n = 8192, d = 4096 on one worker spent as much system time
  as it computed (8 s user, 8 s system); with glibc's largest threshold, 32 MiB,
  2.4 s system time and 40% less wall time.
* ``MALLOC_TRIM_THRESHOLD_``: Dask's nannies set it to 64 KiB, which returns the
  top of the heap to the system at every free, so the next tile faults its pages
  in again. One solver pass over the ck tiles of n = 16 384 took 2.3–2.6 s that
  way and 0.82–0.99 s with 128 MiB (single-threaded BLAS, benchmarks/lanczos.py);
  at most 128 MiB of freed memory then lingers per worker before it is returned.
"""


@contextmanager
def _worker_environment() -> Iterator[None]:
    """Add :data:`WORKER_ENVIRONMENT` to what nannies set before spawning workers."""
    import dask

    with dask.config.set(
        {
            f"distributed.nanny.pre-spawn-environ.{name}": value
            for name, value in WORKER_ENVIRONMENT.items()
        }
    ):
        yield


@contextmanager
def connect(spec: ClusterSpec | None = None) -> Iterator[Any]:
    """Start (or attach to) the cluster ``spec`` describes and yield a client.

    Parameters
    ----------
    spec
        The cluster; ``None`` means ``ClusterSpec()`` (a local cluster).

    Yields
    ------
    distributed.Client
        A client of the cluster. On exit the client is closed, and so is the
        cluster if this call started it; a scheduler reached by ``address`` is
        left running.

    Raises
    ------
    ParameterError
        The spec is invalid, or the ``cuda`` kind is asked for without
        dask-cuda installed. Raised before anything starts.
    """
    spec = ClusterSpec() if spec is None else spec
    spec.validate()
    from distributed import Client

    with ExitStack() as stack:
        if spec.kind == "address":
            logger.info("connecting to the Dask scheduler at %s", spec.address)
            client = stack.enter_context(Client(spec.address))  # type: ignore[no-untyped-call]
        else:
            cluster = stack.enter_context(_start_cluster(spec))
            client = stack.enter_context(Client(cluster))  # type: ignore[no-untyped-call]
        logger.info("Dask client ready: %s", client)
        yield client


@contextmanager
def _start_cluster(spec: ClusterSpec) -> Iterator[Any]:
    """Start a ``local``, ``cuda`` or ``slurm`` cluster; close it on exit."""
    # Without a dashboard the scheduler still serves HTTP (health, metrics): on a
    # free port, so that several clusters on one machine do not collide.
    dashboard = ":8787" if spec.dashboard else ":0"
    worker_options: dict[str, Any] = {}
    if spec.memory_limit is not None:
        worker_options["memory_limit"] = spec.memory_limit

    if spec.kind == "local":
        from distributed import LocalCluster

        workers = spec.workers
        if workers is None:
            workers = (os.cpu_count() or 1) if spec.processes else 1
        logger.info(
            "starting a local Dask cluster: %d worker(s) as %s",
            workers,
            "processes" if spec.processes else "threads",
        )
        with _worker_environment():
            cluster: Any = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=workers,
                threads_per_worker=spec.threads_per_worker,
                processes=spec.processes,
                dashboard_address=dashboard,
                **worker_options,
            )
    elif spec.kind == "cuda":
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as error:
            raise ParameterError(
                "cluster",
                "cuda",
                "dask-cuda to be installed",
                "Install the GPU extra: pip install 'implicit-rmt[gpu]'.",
            ) from error
        logger.info("starting a local CUDA cluster (one worker per GPU)")
        with _worker_environment():
            cluster = LocalCUDACluster(
                n_workers=spec.workers,
                threads_per_worker=spec.threads_per_worker or 1,
                dashboard_address=dashboard,
                **worker_options,
            )
    else:
        jobs = spec.workers or 1
        cluster = slurm_cluster(spec)
        logger.info("submitting %d SLURM job(s) for Dask workers", jobs)
        cluster.scale(jobs=jobs)
    try:
        yield cluster
    finally:
        cluster.close()


def slurm_cluster(spec: ClusterSpec) -> Any:
    """Return the ``dask_jobqueue.SLURMCluster`` of a ``slurm`` spec, no job submitted.

    Each job runs one worker process with ``cores`` threads and ``memory`` bytes;
    ``cluster.job_script()`` shows the batch script the jobs will run. The caller
    scales it (``cluster.scale(jobs=...)``) and closes it.
    """
    if spec.kind != "slurm":
        raise ParameterError("cluster.kind", spec.kind, "'slurm' for a SLURM cluster")
    from dask_jobqueue.slurm import SLURMCluster

    return SLURMCluster(
        queue=spec.queue,
        account=spec.account,
        walltime=spec.walltime,
        cores=spec.cores or 1,
        memory=spec.memory or "4GiB",
        processes=1,
        job_extra_directives=list(spec.job_extra),
        job_script_prologue=[
            f"export {name}={value}" for name, value in WORKER_ENVIRONMENT.items()
        ],
        scheduler_options={"dashboard_address": ":8787" if spec.dashboard else ":0"},
    )
