"""The ``implicit-rmt point`` subcommand: build a point's store, then measure it.

Takes every option of ``implicit-rmt build`` (``--out`` is the store), the
solver options of ``implicit-rmt measure`` and ``--metrics``. Everything is
validated before the cluster starts; build and measurement share one cluster.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

from implicit_rmt.errors import ParameterError

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``point`` parser."""
    from implicit_rmt.cli.build import add_build_arguments
    from implicit_rmt.cli.measure import add_measure_arguments

    parser = subparsers.add_parser(
        "point",
        help="build the kernel store of one point, then measure it",
        description=(
            "Build (or finish building) the store of one point like "
            "`implicit-rmt build`, then measure it like `implicit-rmt measure`, "
            "on one Dask cluster."
        ),
    )
    add_build_arguments(parser)
    parser.add_argument(
        "--metrics",
        required=True,
        help="metrics file to write, e.g. DIR/metrics.json",
    )
    add_measure_arguments(parser)
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from implicit_rmt.build import build_store, store_attrs
    from implicit_rmt.cli.build import (
        cluster_from_args,
        show_progress_logs,
        spec_from_args,
    )
    from implicit_rmt.cli.measure import options_from_args, report
    from implicit_rmt.cluster import connect
    from implicit_rmt.measure import (
        check_output_path,
        explicit_entry_maps,
        measure_store,
    )
    from implicit_rmt.store import check_existing

    ## Validate everything before the cluster starts.
    spec = spec_from_args(args)
    cluster = cluster_from_args(args)
    options = options_from_args(args)
    check_output_path(args.metrics, "--metrics")
    attrs = store_attrs(spec)  # theory parameters and equivalent coefficients
    if options.explicit:
        explicit_entry_maps(attrs)
    check_existing(_as_path(args.out), spec)

    ## Build, then measure, on one cluster.
    show_progress_logs(args)
    with connect(cluster) as client:
        build_store(
            spec,
            args.out,
            client=client,
            backend=args.backend,
            progress=args.progress,
            verify=not args.no_verify,
        )
        metrics = measure_store(args.out, args.metrics, options, client=client)
    report(metrics)
    return 0


def _as_path(value: str) -> Any:
    from pathlib import Path

    if not value:
        raise ParameterError("--out", value, "a directory path for the store")
    return Path(value)
