"""The ``implicit-rmt aggregate`` subcommand: tables and plots from a sweep's points."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``aggregate`` parser."""
    parser = subparsers.add_parser(
        "aggregate",
        help="rebuild a sweep's convergence tables and plots from its points",
        description=(
            "Collect the metrics.json of every point under SWEEP_DIR/points "
            "(missing, failed and unconverged points are kept, marked in a status "
            "column) into convergence.nc, convergence.csv, convergence.md and "
            "plots/*.png."
        ),
    )
    parser.add_argument(
        "sweep_dir", metavar="SWEEP_DIR", type=Path, help="results/<sweep> directory"
    )
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from implicit_rmt.aggregate import aggregate
    from implicit_rmt.metrics import check_sweep_metrics

    # A damaged metrics.json stops the command before any table is rewritten.
    check_sweep_metrics(args.sweep_dir)
    outputs = aggregate(args.sweep_dir, plots=not args.no_plots)
    print(outputs.markdown.read_text(encoding="utf-8"))
    print(f"tables: {outputs.netcdf}, {outputs.csv}, {outputs.markdown}")
    if outputs.plots:
        print(f"plots: {outputs.plots[0].parent}/ ({len(outputs.plots)} figures)")
    return 0
