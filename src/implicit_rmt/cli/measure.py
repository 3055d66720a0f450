"""The ``implicit-rmt measure`` subcommand: certified norms of a finished store.

``implicit-rmt point`` shares the solver options: it calls
:func:`add_measure_arguments` on its own parser and :func:`options_from_args`.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from implicit_rmt.errors import ParameterError

logger = logging.getLogger(__name__)

# MeasureOptions field -> the command-line flag that sets it.
_MEASURE_FLAGS = {
    "tol": "--tol",
    "block_size": "--block-size",
    "max_passes": "--max-passes",
    "seed": "--solver-seed",
    "spectra": "--spectra",
    "dense_max": "--dense-max",
    "slq_probes": "--slq-probes",
    "slq_steps": "--slq-steps",
    "slq_bins": "--slq-bins",
}


def register(subparsers: Any) -> None:
    """Add the ``measure`` parser."""
    from implicit_rmt.cli.build import add_cluster_arguments

    parser = subparsers.add_parser(
        "measure",
        help="certified ‖K* − K̄‖₂, ‖K*‖₂ and spectra of a kernel store",
        description=(
            "Measure every kernel of a finished store with the certified block "
            "Lanczos solver (docs/solver.md) and write metrics.json atomically."
        ),
    )
    parser.add_argument(
        "--store", required=True, help="directory of a finished kernel store"
    )
    parser.add_argument(
        "--out", required=True, help="metrics file to write, e.g. DIR/metrics.json"
    )
    add_measure_arguments(parser)
    add_cluster_arguments(parser, in_process=True)
    parser.set_defaults(func=_run)


def add_measure_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the solver and spectra options (shared with ``point``)."""
    solver = parser.add_argument_group("solver")
    solver.add_argument(
        "--tol", type=float, default=1e-10, help="relative tolerance (1e-10)"
    )
    solver.add_argument(
        "--block-size", type=int, default=16, help="vectors per pass (16)"
    )
    solver.add_argument(
        "--max-passes",
        type=int,
        default=200,
        help="pass limit per solve; beyond it the point is recorded unconverged",
    )
    solver.add_argument(
        "--solver-seed", type=int, default=0, help="seed of the start blocks (0)"
    )
    solver.add_argument(
        "--spectra",
        default="none",
        help="none, dense (all eigenvalues), slq (density), auto (dense up to "
        "--dense-max, slq beyond); default none",
    )
    solver.add_argument(
        "--dense-max", type=int, default=4096, help="largest n for dense spectra"
    )
    solver.add_argument("--slq-probes", type=int, default=16, help="SLQ probes")
    solver.add_argument("--slq-steps", type=int, default=80, help="SLQ steps")
    solver.add_argument("--slq-bins", type=int, default=200, help="histogram bins")
    solver.add_argument(
        "--explicit",
        action="store_true",
        help="also measure ‖K* − Σ‖₂ for the matched explicit (quadratic) network",
    )


def options_from_args(args: argparse.Namespace) -> Any:
    """Return the ``MeasureOptions`` of the parsed flags.

    Raises
    ------
    ParameterError
        Naming the command-line flag of the first invalid value.
    """
    from implicit_rmt.measure import MeasureOptions

    try:
        return MeasureOptions(
            tol=args.tol,
            block_size=args.block_size,
            max_passes=args.max_passes,
            seed=args.solver_seed,
            spectra=args.spectra,
            dense_max=args.dense_max,
            slq_probes=args.slq_probes,
            slq_steps=args.slq_steps,
            slq_bins=args.slq_bins,
            explicit=args.explicit,
        )
    except ParameterError as error:
        flag = _MEASURE_FLAGS.get(error.parameter, error.parameter)
        raise type(error)(flag, error.value, error.expected, error.fix) from error


def report(metrics: dict[str, Any]) -> None:
    """Print one line per kernel: the certified error norm and its context."""
    for name, entry in metrics["kernels"].items():
        state = "" if entry["converged"] else " (NOT converged)"
        print(
            f"{name}: ‖K* − K̄‖₂ = {entry['error_opnorm']:.12g} "
            f"± {entry['error_opnorm_bound']:.2g}, ‖K*‖₂ = {entry['opnorm']:.12g}, "
            f"relative {entry['relative_error']:.6g}, {entry['passes']} passes, "
            f"{entry['seconds']:.1f} s{state}"
        )


def _run(args: argparse.Namespace) -> int:
    from implicit_rmt.cli.build import cluster_from_args
    from implicit_rmt.measure import check_output_path, measure_store

    options = options_from_args(args)
    check_output_path(args.out, "--out")
    cluster = None if args.cluster == "none" else cluster_from_args(args)
    metrics = measure_store(args.store, args.out, options, client=cluster)
    report(metrics)
    # An unconverged solve is recorded ("converged": false) and warned about, not
    # an error: a sweep keeps its other points and the table marks this one.
    return 0
