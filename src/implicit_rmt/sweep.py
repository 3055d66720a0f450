"""Sweeps on disk and their runs: the results layout, the manifest, Snakemake.

A sweep's results live under ``<results>/<sweep>/``::

    sweep.json                              the manifest: grid and parameters
    points/n<n>_d<d>_seed<s>/kernels.zarr   one kernel store per point
    points/n<n>_d<d>_seed<s>/metrics.json   its measurements
    logs/, benchmarks/                      one file per Snakemake job
    convergence.nc, convergence.csv, convergence.md, plots/

The manifest records which points the sweep asked for, so that aggregation can
report the points that are missing or failed instead of silently dropping them.
:func:`run_snakemake` runs the workflow for the ``implicit-rmt sweep`` command.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from implicit_rmt.config import Point, sweep_points
from implicit_rmt.errors import ConfigError

logger = logging.getLogger(__name__)

MANIFEST_NAME = "sweep.json"
MANIFEST_FORMAT = 1

#: The project root: the directory holding the Snakefile and config/.
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def point_dir(sweep_dir: str | Path, point: Point) -> Path:
    """Return the directory of one point, ``<sweep_dir>/points/<point.name>``."""
    return Path(sweep_dir) / "points" / point.name


def point_log(sweep_dir: str | Path, point: Point) -> Path:
    """Return the log file the Snakemake ``point`` job writes for ``point``."""
    return Path(sweep_dir) / "logs" / "point" / f"{point.name}.log"


def manifest(name: str, sweep: Mapping[str, Any]) -> dict[str, Any]:
    """Return the manifest of a validated sweep (JSON-serialisable)."""
    return {
        "format": MANIFEST_FORMAT,
        "sweep": name,
        "kernels": list(sweep["kernels"]),
        "points": [
            {"n": p.n, "d": p.d, "seed": p.seed, "name": p.name}
            for p in sweep_points(sweep)
        ],
        "parameters": dict(sweep),
    }


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write ``data`` as JSON to a temporary file beside ``path``, then rename it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, path)


def write_manifest(path: str | Path, data: dict[str, Any], log: str | Path) -> None:
    """Write a sweep manifest atomically and note it in the job's log file."""
    write_json_atomic(path, data)
    Path(log).write_text(f"wrote {path}: {len(data['points'])} points\n")


def read_manifest(sweep_dir: str | Path) -> dict[str, Any] | None:
    """Return the manifest of a sweep directory, or None when it has none.

    Raises
    ------
    ConfigError
        The manifest exists but cannot be parsed.
    """
    path = Path(sweep_dir) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(
            f"sweep manifest {str(path)!r} is unreadable: {error}"
        ) from None
    if data.get("format") != MANIFEST_FORMAT:
        raise ConfigError(
            f"sweep manifest {str(path)!r} has format={data.get('format')!r}: "
            f"expected {MANIFEST_FORMAT}"
        )
    return data


def snakemake_command(
    config_file: str | Path,
    profile: str,
    workdir: str | Path,
    cores: int | None = None,
    dry_run: bool = False,
    extra: Sequence[str] = (),
) -> list[str]:
    """Return the Snakemake command line for ``config_file`` with ``profile``.

    Snakemake runs as ``python -m snakemake`` from the interpreter running this
    code, so it sees the same environment and the same ``implicit-rmt``. The
    config file replaces the project's default one instead of being merged into
    it, so sweeps of the default file do not leak into the user's. ``extra`` ends
    the command line: options, then targets (a sweep's ``convergence.nc``
    selects that sweep).
    """
    profile_dir = PROJECT_ROOT / "workflow" / "profiles" / profile
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(PROJECT_ROOT / "Snakefile"),
        "--directory",
        str(Path(workdir).resolve()),
        "--workflow-profile",
        str(profile_dir),
        "--configfile",
        str(Path(config_file).resolve()),
        "--replace-workflow-config",
    ]
    if cores is not None:
        command += ["--cores", str(cores)]
    if dry_run:
        command.append("--dry-run")
    return command + list(extra)


def run_snakemake(command: Sequence[str]) -> int:
    """Run a Snakemake command line in this process group; return its status.

    Snakemake stays in the caller's process group, so Ctrl-C in a terminal
    reaches it directly (it then stops its jobs and marks their outputs
    incomplete for the next run) and killing the group kills it too. A SIGTERM
    sent to this process alone is passed on to Snakemake.
    """
    logger.info("running %s", " ".join(command))
    process = subprocess.Popen(list(command))

    def forward(signum: int, frame: object) -> None:
        process.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, forward)
    try:
        return process.wait()
    except KeyboardInterrupt:
        # Snakemake received the same SIGINT; let it finish cleaning up
        process.wait()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
