"""The ``implicit-rmt sweep`` subcommand: validate a config, run Snakemake, report."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

PROFILES = ("local", "gpu", "slurm")


def register(subparsers: Any) -> None:
    """Add the ``sweep`` parser."""
    parser = subparsers.add_parser(
        "sweep",
        help="run a sweep of (n, d, seed) points with Snakemake",
        description=(
            "Validate the config (nothing runs when a key is wrong), run the "
            "sweep's points with Snakemake, then print the convergence table and "
            "where the plots and the report are. A killed sweep resumes where it "
            "stopped when run again."
        ),
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="configuration file (default: config/config.yaml of the project)",
    )
    parser.add_argument(
        "--sweep", default=None, help="sweep to run (default: the config's `sweep`)"
    )
    parser.add_argument(
        "--profile", choices=PROFILES, default="local", help="workflow profile"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path.cwd(),
        help="directory in which results/ is written (default: current directory)",
    )
    parser.add_argument(
        "--cores",
        type=int,
        default=None,
        help="cores Snakemake may use (default: the profile's, all for local)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the jobs that would run, run nothing",
    )
    parser.add_argument(
        "--report",
        action="store_true",
        help="then build Snakemake's HTML report, results/<sweep>/report.html",
    )
    parser.add_argument(
        "--unlock",
        action="store_true",
        help="first remove the lock a killed Snakemake left in the workdir",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from implicit_rmt.aggregate import aggregate
    from implicit_rmt.config import load_config, select_sweep, sweep_points
    from implicit_rmt.errors import ParameterError
    from implicit_rmt.metrics import check_sweep_metrics
    from implicit_rmt.sweep import PROJECT_ROOT, run_snakemake, snakemake_command

    # validate everything before anything runs or is written
    if args.cores is not None and args.cores < 1:
        raise ParameterError("--cores", args.cores, "a positive integer")
    if not args.workdir.is_dir():
        raise ParameterError(
            "--workdir",
            str(args.workdir),
            "an existing directory",
            "Create it first, or run from the directory results/ should go in.",
        )
    config_file = args.config or PROJECT_ROOT / "config" / "config.yaml"
    config = select_sweep(load_config(config_file), args.sweep)
    name = config["sweep"]
    workdir = args.workdir.resolve()
    sweep_dir = workdir / config["results"] / name
    # Every point's metrics.json is a target of its own: tables written from a
    # partial sweep (below, after a failure) must not make the next run believe
    # the sweep is complete, so a point without metrics always runs again.
    results = Path(config["results"]) / name
    targets = [
        *(
            str(results / "points" / point.name / "metrics.json")
            for point in sweep_points(config["sweeps"][name])
        ),
        str(results / "convergence.nc"),
    ]

    def command(*extra: str, dry_run: bool = False) -> list[str]:
        return snakemake_command(
            config_file,
            args.profile,
            workdir,
            cores=args.cores,
            dry_run=dry_run,
            extra=[*extra, *targets],
        )

    if args.unlock:
        run_snakemake(command("--unlock"))
    status = run_snakemake(command(dry_run=args.dry_run))
    if args.dry_run:
        return status

    if status != 0:
        # partial results are still worth a table: missing and failed points
        # appear in it as such
        print(f"implicit-rmt sweep: Snakemake exited with status {status}")
        if not sweep_dir.is_dir():
            return status
        print("aggregating the points that finished:")
        check_sweep_metrics(sweep_dir)  # a damaged metrics.json rewrites nothing
        aggregate(sweep_dir)
    outputs_md = sweep_dir / "convergence.md"
    print(outputs_md.read_text(encoding="utf-8"))
    print(f"convergence table: {outputs_md}")
    print(f"                   {sweep_dir / 'convergence.csv'}")
    print(f"                   {sweep_dir / 'convergence.nc'}")
    print(f"plots:             {sweep_dir / 'plots'}{os.sep}")
    report = sweep_dir / "report.html"
    if args.report and status == 0:
        status = run_snakemake(command(f"--report={report}"))
    if report.exists():
        print(f"report:            {report}")
    else:
        print(
            "report:            not built; run `implicit-rmt sweep --report` "
            f"to write {report}"
        )
    return status
