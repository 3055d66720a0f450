"""A real SLURM cluster: sweeps through the slurm profile, scancel, dask-jobqueue.

Every test here is marked ``slurm`` and skips with the reason when no controller
answers (tests/conftest.py). CI starts a one-node cluster on loopback with
``scripts/slurm-ci.sh start`` first. SLURM jobs run as the user of the tests, on
this machine and this file system, and inherit this environment (``sbatch``
exports it), so they run the same interpreter and the same ``implicit-rmt``.

Every command runs in its own process group under a timeout that kills the
group (:func:`_support.run_killable`), so a hung Snakemake fails the test rather
than CI.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from _support import run_killable, tree_digest, venv_env

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

IMPLICIT_RMT = [sys.executable, "-m", "implicit_rmt"]

# Four points, two at a time on a two-core node: each point job asks one core.
SWEEP = "slurmci"
NS = [32, 48, 64, 96]
# The numbers the measurement computes from the store. Both runs start from
# this process's environment (same interpreter, same BLAS threads), build
# bitwise-identical stores (implicit_rmt.build) and run the same solver, so
# they must agree to the last bit; wall-clock "seconds" is left out.
COMPARED = (
    "alpha",
    "beta",
    "mu",
    "error_opnorm",
    "error_opnorm_bound",
    "opnorm",
    "opnorm_bound",
    "relative_error",
    "lambda_max",
    "lambda_min",
    "converged",
)


def _write_config(directory: Path) -> Path:
    config = {
        "sweep": SWEEP,
        "results": "results",
        "sweeps": {
            SWEEP: {
                "n": NS,
                "ratio": 0.5,
                "seeds": [0],
                "kernels": ["ck", "ntk"],
                "tile": 16,
            }
        },
        "resources": {
            "point": {
                "threads": 1,
                "mem_mb_base": 1024,
                "mem_mb_per_mentry": 40,
                "runtime_base": 10,
                "runtime_per_mentry": 2,
            },
            "aggregate": {"threads": 1, "mem_mb": 1024, "runtime": 10},
        },
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _sweep(
    workdir: Path, profile: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    config = _write_config(workdir)
    return run_killable(
        [
            *IMPLICIT_RMT,
            "sweep",
            "--config",
            str(config),
            "--profile",
            profile,
            "--workdir",
            str(workdir),
            "--cores",
            "2",
        ],
        cwd=workdir,
        timeout=timeout,
    )


def _point_metrics(workdir: Path) -> dict[str, dict[str, Any]]:
    """``{point name: metrics}`` of every point that has a metrics.json."""
    points = workdir / "results" / SWEEP / "points"
    return {
        path.parent.name: json.loads(path.read_text())
        for path in sorted(points.glob("*/metrics.json"))
    }


def _assert_same_measurements(
    left: dict[str, dict[str, Any]], right: dict[str, dict[str, Any]]
) -> None:
    assert sorted(left) == sorted(right)
    for name in left:
        assert left[name]["point"] == right[name]["point"], name
        for kernel in ("ck", "ntk"):
            a, b = left[name]["kernels"][kernel], right[name]["kernels"][kernel]
            for key in COMPARED:
                assert a[key] == b[key] or (
                    isinstance(a[key], float)
                    and math.isnan(a[key])
                    and math.isnan(b[key])
                ), f"{name} {kernel} {key}: {a[key]!r} != {b[key]!r}"


def _squeue(*columns: str) -> list[list[str]]:
    """Rows of ``squeue`` (jobs of every state still known to the controller)."""
    result = subprocess.run(
        ["squeue", "--noheader", "--states=all", "--format=" + "|".join(columns)],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return [line.split("|") for line in result.stdout.splitlines() if line]


@pytest.fixture(autouse=True)
def _cancel_jobs_left_behind() -> Iterator[None]:
    """Cancel the SLURM jobs a test submitted and left pending or running."""
    before = {row[0] for row in _squeue("%i")}
    yield
    left = [
        job_id
        for job_id, state in _squeue("%i", "%T")
        if job_id not in before and state in ("PENDING", "RUNNING", "CONFIGURING")
    ]
    if left:
        subprocess.run(["scancel", *left], check=False, timeout=10)


def test_sweep_through_slurm_matches_local_run(tmp_path: Path) -> None:
    """Four points as SLURM jobs give the numbers of the same sweep run locally."""
    local = _sweep(tmp_path / "local", "local")
    assert local.returncode == 0, local.stdout[-4000:]
    on_slurm = _sweep(tmp_path / "slurm", "slurm")
    assert on_slurm.returncode == 0, on_slurm.stdout[-4000:]

    local_metrics = _point_metrics(tmp_path / "local")
    slurm_metrics = _point_metrics(tmp_path / "slurm")
    assert len(slurm_metrics) == len(NS)
    _assert_same_measurements(local_metrics, slurm_metrics)

    # The points really went through SLURM, one job each.
    submitted = [
        line
        for line in on_slurm.stdout.splitlines()
        if "has been submitted with SLURM jobid" in line and "rule_point" in line
    ]
    assert len(submitted) == len(NS), on_slurm.stdout[-4000:]
    # And the aggregated tables agree too.
    local_csv = (tmp_path / "local" / "results" / SWEEP / "convergence.csv").read_text()
    slurm_csv = (tmp_path / "slurm" / "results" / SWEEP / "convergence.csv").read_text()
    assert local_csv == slurm_csv


def test_cancelled_point_fails_and_rerun_completes_only_it(tmp_path: Path) -> None:
    """A point job cancelled while running: reported failed; the rerun does the rest."""
    workdir = tmp_path / "sweep"
    workdir.mkdir()
    config = _write_config(workdir)
    command = [
        *IMPLICIT_RMT,
        "sweep",
        "--config",
        str(config),
        "--profile",
        "slurm",
        "--workdir",
        str(workdir),
        "--cores",
        "2",
    ]
    victim = f"n{NS[-1]}_d{NS[-1] // 2}_seed0"
    # The SLURM executor puts the rule and the wildcard values in the comment.
    victim_comment = f"rule_point_wildcards_{SWEEP}_{NS[-1]}_{NS[-1] // 2}_0"

    # Start the sweep, wait until the victim's job runs, cancel it.
    process = subprocess.Popen(
        command,
        cwd=workdir,
        env=venv_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    cancelled = None
    try:
        deadline = time.monotonic() + 120
        while cancelled is None and time.monotonic() < deadline:
            for job_id, state, comment in _squeue("%i", "%T", "%k"):
                if state == "RUNNING" and comment == victim_comment:
                    subprocess.run(["scancel", job_id], check=True, timeout=10)
                    cancelled = job_id
                    break
            time.sleep(0.1)
        assert cancelled is not None, "the victim's job never ran"
        output, _ = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()

    assert process.returncode != 0, output[-4000:]
    assert "CANCELLED" in output, output[-4000:]
    finished = _point_metrics(workdir)
    assert victim not in finished
    assert len(finished) == len(NS) - 1
    table = (workdir / "results" / SWEEP / "convergence.csv").read_text()
    assert "failed" in table

    # The rerun completes the cancelled point and touches no other.
    points = workdir / "results" / SWEEP / "points"
    before = {name: tree_digest(points / name) for name in finished}
    rerun = run_killable(command, cwd=workdir, timeout=240)
    assert rerun.returncode == 0, rerun.stdout[-4000:]
    rerun_points = sorted(_point_metrics(workdir))
    assert rerun_points == sorted([*finished, victim]), rerun.stdout[-6000:]
    for name, digest in before.items():
        assert tree_digest(points / name) == digest, f"{name} was rebuilt"
    assert rerun.stdout.count("rule point:") == 1, rerun.stdout[-4000:]


def test_build_on_slurm_dask_cluster_equals_local_build(tmp_path: Path) -> None:
    """A store built by dask-jobqueue workers (SLURM jobs) equals a local build."""
    from implicit_rmt.store import open_store

    options = [
        "--n",
        "80",
        "--dim",
        "40",
        "--seed",
        "5",
        "--tile",
        "16",
        "--progress",
        "none",
    ]
    local = run_killable(
        [
            *IMPLICIT_RMT,
            "build",
            *options,
            "--cluster",
            "local",
            "--threads",
            "--out",
            str(tmp_path / "local.zarr"),
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert local.returncode == 0, local.stdout[-4000:]
    on_slurm = run_killable(
        [
            *IMPLICIT_RMT,
            "build",
            *options,
            "--cluster",
            "slurm",
            "--workers",
            "1",
            "--slurm-cores",
            "1",
            "--slurm-memory",
            "2GiB",
            "--slurm-walltime",
            "00:10:00",
            "--out",
            str(tmp_path / "slurm.zarr"),
        ],
        cwd=tmp_path,
        timeout=180,
    )
    assert on_slurm.returncode == 0, on_slurm.stdout[-4000:]
    # dask-jobqueue's worker job wrote its SLURM log in the working directory.
    assert list(tmp_path.glob("slurm-*.out")), "no SLURM job ran a Dask worker"

    reference, built = (
        open_store(tmp_path / "local.zarr"),
        open_store(tmp_path / "slurm.zarr"),
    )
    assert reference.attrs == built.attrs
    for name in ("X", "ck", "ntk"):
        np.testing.assert_array_equal(built[name][...], reference[name][...])
