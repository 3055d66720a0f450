"""The ``implicit-rmt build`` subcommand: build (or finish) the kernel store of a point.

``implicit-rmt point`` shares these options: it calls :func:`add_build_arguments`
on its own parser, then :func:`spec_from_args` and :func:`cluster_from_args`.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from implicit_rmt.errors import ParameterError

logger = logging.getLogger(__name__)

# PointSpec and ClusterSpec field -> the command-line flag that sets it, so that
# a validation error names what the user typed.
_POINT_FLAGS = {
    "n": "--n",
    "d": "--dim",
    "seed": "--seed",
    "kernels": "--kernels",
    "activation": "--activation",
    "activation_params": "--activation-param",
    "sigma_a2": "--sigma-a2",
    "sigma_b2": "--sigma-b2",
    "tile": "--tile",
    "dtype": "--dtype",
}
_CLUSTER_FLAGS = {
    "cluster.kind": "--cluster",
    "cluster.workers": "--workers",
    "cluster.threads_per_worker": "--threads-per-worker",
    "cluster.memory_limit": "--memory-limit",
    "cluster.address": "--scheduler-address",
    "cluster.walltime": "--slurm-walltime",
    "cluster.cores": "--slurm-cores",
    "cluster.memory": "--slurm-memory",
    "cluster.job_extra": "--slurm-job-extra",
}


def register(subparsers: Any) -> None:
    """Add the ``build`` parser."""
    parser = subparsers.add_parser(
        "build",
        help="build the kernel store of one point (resumes an interrupted build)",
        description=(
            "Build X, G* (ck) and Θ* (ntk) of one point tile by tile on a Dask "
            "cluster into a Zarr store. Rerunning the same command resumes an "
            "interrupted build; a store of other parameters is refused."
        ),
    )
    add_build_arguments(parser)
    parser.set_defaults(func=_run)


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of a build (point, theory, cluster, backend, ``--out``)."""
    point = parser.add_argument_group("point")
    point.add_argument("--n", type=int, required=True, help="number of data points")
    point.add_argument(
        "--dim", type=int, required=True, help="dimension d of the data points"
    )
    point.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    point.add_argument(
        "--kernels",
        default="ck,ntk",
        help="comma-separated kernels among ck, ntk (default ck,ntk)",
    )
    point.add_argument(
        "--tile", type=int, default=1024, help="tile (Zarr chunk) side (default 1024)"
    )
    point.add_argument(
        "--dtype", choices=("float64", "float32"), default="float64", help="precision"
    )
    point.add_argument(
        "--out", required=True, help="directory of the store, e.g. DIR/kernels.zarr"
    )

    theory = parser.add_argument_group("theory")
    theory.add_argument("--activation", default="relu", help="activation (relu)")
    theory.add_argument(
        "--activation-param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="activation parameter, e.g. slope=0.1 (repeatable)",
    )
    theory.add_argument("--sigma-a2", type=float, default=0.2, help="σ_a² (0.2)")
    theory.add_argument("--sigma-b2", type=float, default=0.8, help="σ_b² (0.8)")

    run = add_cluster_arguments(parser)
    run.add_argument(
        "--backend",
        choices=("numpy", "cupy"),
        default="numpy",
        help="tile arithmetic on the CPU (numpy) or the GPU (cupy)",
    )
    run.add_argument(
        "--progress",
        choices=("auto", "bar", "log", "none"),
        default="auto",
        help="progress display (auto: a bar on a terminal, log lines otherwise)",
    )
    run.add_argument(
        "--no-verify",
        action="store_true",
        help="trust the records of a resumed build instead of re-reading its tiles",
    )


def add_cluster_arguments(
    parser: argparse.ArgumentParser, *, in_process: bool = False
) -> Any:
    """Add the Dask cluster options read by :func:`cluster_from_args`.

    Parameters
    ----------
    parser
        Parser of ``build``, ``measure`` or ``point``.
    in_process
        Offer ``--cluster none`` and make it the default: the work runs in this
        process without Dask (``measure`` reads tiles this way).

    Returns
    -------
    argparse._ArgumentGroup
        The "execution" group, for command-specific options.
    """
    kinds = ("local", "cuda", "slurm", "address")
    run = parser.add_argument_group("execution")
    run.add_argument(
        "--cluster",
        choices=("none", *kinds) if in_process else kinds,
        default="none" if in_process else "local",
        help=(
            "Dask cluster whose workers read the tiles (default none: this process)"
            if in_process
            else "Dask cluster to run on (default local)"
        ),
    )
    run.add_argument("--workers", type=int, help="workers (slurm: jobs)")
    run.add_argument("--threads-per-worker", type=int, help="threads per worker")
    run.add_argument("--memory-limit", help="memory per worker, e.g. 4GiB")
    run.add_argument(
        "--threads",
        action="store_true",
        help="local cluster: workers as threads of this process (fast start-up)",
    )
    run.add_argument("--scheduler-address", help="address of a running scheduler")
    run.add_argument("--slurm-queue", help="SLURM partition")
    run.add_argument("--slurm-account", help="SLURM account")
    run.add_argument(
        "--slurm-walltime", default="01:00:00", help="SLURM time limit per job"
    )
    run.add_argument("--slurm-cores", type=int, help="cores per SLURM job")
    run.add_argument("--slurm-memory", help="memory per SLURM job, e.g. 16GiB")
    run.add_argument(
        "--slurm-job-extra",
        action="append",
        default=[],
        metavar="DIRECTIVE",
        help="extra #SBATCH directive, e.g. --gres=gpu:1 (repeatable)",
    )
    return run


def show_progress_logs(args: argparse.Namespace) -> None:
    """Show the build's INFO progress lines without ``-v`` when they are wanted.

    With ``--progress auto`` a terminal gets a bar and other outputs (a job's log
    file) get log lines; ``--progress log`` always asks for the lines.
    """
    if args.progress in ("auto", "log") and args.verbose == 0:
        for name in ("implicit_rmt.build", __name__):
            logging.getLogger(name).setLevel(logging.INFO)


def spec_from_args(args: argparse.Namespace) -> Any:
    """Return the ``PointSpec`` the parsed options describe.

    Raises
    ------
    ParameterError
        Naming the command-line flag of the first invalid value.
    """
    from implicit_rmt.store import PointSpec

    params: dict[str, float] = {}
    for item in args.activation_param:
        name, sep, value = item.partition("=")
        try:
            params[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ParameterError(
                "--activation-param", item, "NAME=VALUE with a numeric VALUE"
            )
    kernels = tuple(name.strip() for name in args.kernels.split(",") if name.strip())
    try:
        return PointSpec(
            n=args.n,
            d=args.dim,
            seed=args.seed,
            kernels=kernels,
            activation=args.activation,
            activation_params=params,
            sigma_a2=args.sigma_a2,
            sigma_b2=args.sigma_b2,
            tile=args.tile,
            dtype=args.dtype,
        )
    except ParameterError as error:
        raise _renamed(error, _POINT_FLAGS) from error


def cluster_from_args(args: argparse.Namespace) -> Any:
    """Return the ``ClusterSpec`` the parsed options describe.

    Raises
    ------
    ParameterError
        Naming the command-line flag of the first invalid value.
    """
    from implicit_rmt.cluster import ClusterSpec

    slurm = args.cluster == "slurm"
    try:
        return ClusterSpec(
            kind=args.cluster,
            workers=args.workers,
            threads_per_worker=args.threads_per_worker,
            memory_limit=args.memory_limit,
            processes=not args.threads,
            address=args.scheduler_address,
            queue=args.slurm_queue if slurm else None,
            account=args.slurm_account if slurm else None,
            walltime=args.slurm_walltime,
            cores=args.slurm_cores if slurm else None,
            memory=args.slurm_memory if slurm else None,
            job_extra=tuple(args.slurm_job_extra),
        )
    except ParameterError as error:
        raise _renamed(error, _CLUSTER_FLAGS) from error


def _renamed(error: ParameterError, flags: dict[str, str]) -> ParameterError:
    """The same error, naming the command-line flag instead of the field."""
    parameter = error.parameter
    for field, flag in flags.items():
        if parameter == field or parameter.startswith(field + "."):
            parameter = flag + parameter[len(field) :]
            break
    return type(error)(parameter, error.value, error.expected, error.fix)


def _run(args: argparse.Namespace) -> int:
    from implicit_rmt.build import build_store, store_attrs

    spec = spec_from_args(args)
    cluster = cluster_from_args(args)
    try:
        store_attrs(spec)  # theory parameters, checked before anything starts
    except ParameterError as error:
        raise _renamed(error, _POINT_FLAGS) from error
    show_progress_logs(args)
    report = build_store(
        spec,
        args.out,
        client=cluster,
        backend=args.backend,
        progress=args.progress,
        verify=not args.no_verify,
    )
    logger.info(
        "%s: %d of %d tiles written (%d repaired), %d verified, in %.1f s",
        report.path,
        report.tiles_recomputed,
        report.tiles_total,
        report.tiles_repaired,
        report.tiles_skipped,
        report.seconds,
    )
    return 0
