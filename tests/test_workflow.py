"""The Snakemake workflow end to end: lint, dry run, a tiny sweep, resume, bad configs.

Every Snakemake or ``implicit-rmt sweep`` call runs in its own process group under
a timeout that kills the whole group (:func:`_support.run_killable`), so a hung
run fails its test instead of hanging the suite.

The tiny sweep is checked against an independent recomputation: each point's
kernels are read back densely from its store, the equivalent K̄ and the matched
explicit kernel Σ are formed from the store's data and coefficients, and
‖K* − K̄‖₂ is taken by LAPACK (``numpy.linalg.norm(ord=2)``, an SVD).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import yaml
import zarr
from _support import run_killable, tree_digest, venv_env
from scipy import stats
from test_plots import assert_real_png

from implicit_rmt.cli import main
from implicit_rmt.equivalents import (
    equivalent_coefficients,
    explicit_entries,
    match_quadratic,
)
from implicit_rmt.kernels import ImplicitKernel

PROJECT = Path(__file__).resolve().parents[1]
IMPLICIT_RMT = [sys.executable, "-m", "implicit_rmt"]
SNAKEMAKE = [
    sys.executable,
    "-m",
    "snakemake",
    "--snakefile",
    str(PROJECT / "Snakefile"),
]

TINY = {
    "sweep": "tiny",
    "sweeps": {
        "tiny": {
            "n": [32, 48, 64],
            "ratio": 0.5,
            "seeds": [0, 1],
            "tile": 16,
            "spectra": True,
            "explicit": True,
        }
    },
    "resources": {"point": {"threads": 1}},
}
POINTS = [f"n{n}_d{n // 2}_seed{s}" for n in (32, 48, 64) for s in (0, 1)]
# numbers of metrics.json that depend on the data and the solver only (not on
# timing); two runs of the same point must agree on them to the last bit
COMPARED = (
    "alpha",
    "beta",
    "mu",
    "error_opnorm",
    "error_opnorm_bound",
    "opnorm",
    "relative_error",
    "lambda_max",
    "lambda_min",
    "explicit_error_opnorm",
    "converged",
)


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sweep(
    workdir: Path, *extra: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run `implicit-rmt sweep` on the tiny config in ``workdir``."""
    config = write_config(workdir, TINY)
    return run_killable(
        [
            *IMPLICIT_RMT,
            "sweep",
            "--config",
            str(config),
            "--workdir",
            str(workdir),
            *extra,
        ],
        cwd=workdir,
        timeout=timeout,
    )


def jobs_run(output: str) -> list[str]:
    """Points whose `point` job Snakemake started, from its printed job headers."""
    return sorted(set(re.findall(r"points/(n\d+_d\d+_seed\d+)/kernels\.zarr", output)))


def job_counts(output: str) -> dict[str, int]:
    """Snakemake's "Job stats" table as {rule: count}."""
    table = output.split("Job stats:")[1].split("total")[0]
    return {
        match[0]: int(match[1])
        for match in re.findall(r"^(\w+)\s+(\d+)\s*$", table, flags=re.MULTILINE)
    }


def metrics_numbers(sweep_dir: Path) -> dict[str, dict[str, Any]]:
    result = {}
    for point in POINTS:
        metrics = json.loads(
            (sweep_dir / "points" / point / "metrics.json").read_text()
        )
        result[point] = {
            kernel: {key: entry[key] for key in COMPARED}
            for kernel, entry in metrics["kernels"].items()
        }
    return result


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One uninterrupted tiny sweep: its sweep directory and the command's output."""
    workdir = tmp_path_factory.mktemp("uninterrupted")
    result = sweep(workdir, "--cores", "2", "--report")
    assert result.returncode == 0, result.stdout[-4000:]
    return workdir / "results" / "tiny", result.stdout


def test_lint_is_clean() -> None:
    result = run_killable([*SNAKEMAKE, "--lint"], cwd=PROJECT, timeout=120)
    assert result.returncode == 0, result.stdout[-4000:]
    assert "Congratulations, your workflow is in a good condition!" in result.stdout


def test_dry_run_of_the_default_sweep_lists_its_jobs(tmp_path: Path) -> None:
    result = run_killable(
        [*IMPLICIT_RMT, "sweep", "--dry-run", "--workdir", str(tmp_path)],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert job_counts(result.stdout) == {
        "point": 12,
        "sweep_manifest": 1,
        "aggregate": 1,
    }
    expected = [
        f"n{n}_d{n // 2}_seed{s}" for n in (256, 512, 1024, 2048) for s in (0, 1, 2)
    ]
    assert jobs_run(result.stdout) == sorted(expected)
    # n = 2048: 1024 + 40 * 4.194304 MB and 10 + 2 * 4.194304 minutes
    assert "mem_mb=1191" in result.stdout and "runtime=18" in result.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        ("gpu", ["--backend cupy --cluster cuda", "gpu=1"]),
        ("slurm", ["slurm_partition=debug", "--backend numpy --cluster local"]),
    ],
)
def test_profiles_plan_their_jobs(
    profile: str, expected: list[str], tmp_path: Path
) -> None:
    config = write_config(tmp_path, TINY)
    result = run_killable(
        [
            *IMPLICIT_RMT,
            "sweep",
            "--config",
            str(config),
            "--workdir",
            str(tmp_path),
            "--profile",
            profile,
            "--dry-run",
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert job_counts(result.stdout)["point"] == len(POINTS)
    for text in expected:
        assert text in result.stdout, text


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_profile_matches_the_cpu_sweep(
    tiny_run: tuple[Path, str], tmp_path: Path
) -> None:
    # CuPy tiles and the CUDA cluster give the same numbers as NumPy up to the
    # solver's relative tolerance 1e-10 and rounding of the entry maps (~1e-13)
    result = sweep(tmp_path, "--profile", "gpu", "--cores", "2")
    assert result.returncode == 0, result.stdout[-4000:]
    gpu, cpu = (
        metrics_numbers(tmp_path / "results" / "tiny"),
        metrics_numbers(tiny_run[0]),
    )
    for point, kernels in cpu.items():
        for kernel, numbers in kernels.items():
            for key in ("error_opnorm", "opnorm", "explicit_error_opnorm"):
                assert gpu[point][kernel][key] == pytest.approx(numbers[key], rel=1e-9)


@pytest.mark.slow
def test_tiny_sweep_matches_dense_recomputation(tiny_run: tuple[Path, str]) -> None:
    sweep_dir, output = tiny_run
    assert jobs_run(output) == POINTS
    table = pd.read_csv(sweep_dir / "convergence.csv")
    dataset = xr.load_dataset(sweep_dir / "convergence.nc")
    assert set(dataset.status.values.ravel()) == {"ok"}

    # recompute every point's errors densely from its store
    recomputed: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for point in POINTS:
        group = zarr.open_group(sweep_dir / "points" / point / "kernels.zarr", mode="r")
        attrs = group.attrs["implicit_rmt"]
        data = np.asarray(group["X"][...])
        gram = data.T @ data
        n, d = gram.shape[0], int(attrs["d"])
        kernel = ImplicitKernel(
            activation=attrs["activation"],
            sigma_a2=attrs["sigma_a2"],
            sigma_b2=attrs["sigma_b2"],
        )
        for name in ("ck", "ntk"):
            stored = np.asarray(group[name][...])
            coefficients = equivalent_coefficients(kernel, name, d)
            alpha, beta, mu = coefficients.alpha, coefficients.beta, coefficients.mu
            recorded = attrs["coefficients"][name]
            assert (recorded["alpha"], recorded["beta"], recorded["mu"]) == (
                alpha,
                beta,
                mu,
            )
            equivalent = alpha * np.ones((n, n)) + beta * gram + mu * np.eye(n)
            explicit = explicit_entries(match_quadratic(coefficients), name, gram)
            error = np.linalg.norm(stored - equivalent, ord=2)
            relative = error / np.linalg.norm(stored, ord=2)
            explicit_error = np.linalg.norm(stored - explicit, ord=2)
            recomputed.setdefault((name, n), []).append(
                (error, relative, explicit_error)
            )

    # Lanczos stops at a relative half-width of 1e-10 (the config's tolerance);
    # LAPACK's SVD of a 64 x 64 matrix of norm ~10 is good to ~64 eps * 10 ~ 1e-13,
    # i.e. ~1e-11 relative to errors ~0.05: 1e-9 relative covers both.
    for row in table.itertuples():
        values = np.array(recomputed[row.kernel, row.n])
        assert row.error_opnorm_mean == pytest.approx(values[:, 0].mean(), rel=1e-9)
        assert row.error_opnorm_std == pytest.approx(values[:, 0].std(ddof=1), rel=1e-6)
        assert row.relative_error_mean == pytest.approx(values[:, 1].mean(), rel=1e-9)
        assert row.explicit_error_opnorm_mean == pytest.approx(
            values[:, 2].mean(), rel=1e-9
        )
        assert row.status == "ok" and row.seeds_ok == 2

    # the fitted exponent is least squares over all seeds of the recomputed errors
    for name in ("ck", "ntk"):
        ns = [n for (kernel, n), v in recomputed.items() if kernel == name for _ in v]
        errors = [
            e[0] for (kernel, _), v in recomputed.items() if kernel == name for e in v
        ]
        reference = stats.linregress(np.log(ns), np.log(errors))
        fitted = float(dataset.exponent.sel(kernel=name))
        assert fitted == pytest.approx(reference.slope, rel=1e-7)

    # logs and benchmarks of every job, the figures, the report
    for point in POINTS:
        assert (sweep_dir / "logs" / "point" / f"{point}.log").stat().st_size > 0
        assert (sweep_dir / "benchmarks" / "point" / f"{point}.tsv").exists()
    figures = sorted(path.name for path in (sweep_dir / "plots").glob("*.png"))
    assert figures == [
        "error_opnorm.png",
        "explicit_error_opnorm.png",
        "relative_error.png",
        "spectra_ck.png",
        "spectra_ntk.png",
    ]
    for figure in figures:
        assert_real_png(sweep_dir / "plots" / figure)
    report = sweep_dir / "report.html"
    assert report.stat().st_size > 10_000
    html = report.read_text(encoding="utf-8")
    assert "Figures of sweep tiny" in html and "Convergence table of sweep tiny" in html
    assert f"report:            {report}" in output
    assert "| ck | 64 | 32 | 2/2 | ok |" in output


@pytest.mark.slow
def test_resume_after_sigkill_runs_only_unfinished_points(
    tiny_run: tuple[Path, str], tmp_path: Path
) -> None:
    config = write_config(tmp_path, TINY)
    command = [
        *IMPLICIT_RMT,
        "sweep",
        "--config",
        str(config),
        "--workdir",
        str(tmp_path),
    ]
    process = subprocess.Popen(
        [*command, "--cores", "1"],
        cwd=tmp_path,
        env=venv_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    points_dir = tmp_path / "results" / "tiny" / "points"
    logs = tmp_path / "results" / "tiny" / "logs" / "point"
    try:
        # With one core the points run one after another, and Snakemake starts a
        # point (creating its log) only after recording the previous one as
        # finished. Kill the whole group once two points are done and a later
        # point has started: those two are recorded finished, one runs.
        deadline = time.monotonic() + 180
        started_before: set[Path] | None = None
        while True:
            assert process.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "the sweep did not finish two points"
            started = set(logs.glob("*.log"))
            if started_before is None:
                if len(list(points_dir.glob("*/metrics.json"))) >= 2:
                    started_before = started
            elif started - started_before:
                break
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finished = sorted(path.parent.name for path in points_dir.glob("*/metrics.json"))
    assert 2 <= len(finished) < len(POINTS), finished
    before = {
        name: tree_digest(tmp_path / "results" / "tiny" / "points" / name)
        for name in finished
    }

    # the rerun removes the stale lock, then runs exactly the other points
    result = run_killable(
        [*command, "--cores", "2", "--unlock"], cwd=tmp_path, timeout=240
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert jobs_run(result.stdout) == sorted(set(POINTS) - set(finished))
    for name in finished:
        assert (
            tree_digest(tmp_path / "results" / "tiny" / "points" / name) == before[name]
        )

    # the results equal those of the uninterrupted run, to the last bit
    reference_dir, _ = tiny_run
    resumed_dir = tmp_path / "results" / "tiny"
    assert metrics_numbers(resumed_dir) == metrics_numbers(reference_dir)
    for point in POINTS:
        for member in ("X", "ck", "ntk"):
            resumed = zarr.open_group(
                resumed_dir / "points" / point / "kernels.zarr", mode="r"
            )
            reference = zarr.open_group(
                reference_dir / "points" / point / "kernels.zarr", mode="r"
            )
            np.testing.assert_array_equal(resumed[member][...], reference[member][...])
    assert (resumed_dir / "convergence.csv").read_bytes() == (
        reference_dir / "convergence.csv"
    ).read_bytes()


BAD_CONFIGS = [
    ("misspelled key", {"sedes": [0]}, "sweeps.tiny.sedes"),
    ("invalid value", {"activation": "relux"}, "sweeps.tiny.activation"),
    ("n < 2", {"n": [32, 1]}, "sweeps.tiny.n[1]"),
    ("d < 1", {"ratio": None, "d": [16, 0, 32]}, "sweeps.tiny.d[1]"),
    ("ratio giving d = 0", {"ratio": 0.01}, "sweeps.tiny.ratio"),
    ("no fixed point", {"sigma_a2": 2.5}, "sweeps.tiny.sigma_a2"),
]


def bad_config(changes: dict[str, Any]) -> dict[str, Any]:
    config = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        if value is None:
            del config["sweeps"]["tiny"][key]
        else:
            config["sweeps"]["tiny"][key] = value
    return config


def existing_results(workdir: Path) -> Path:
    """A results tree with files in it, as an earlier sweep leaves behind."""
    results = workdir / "results" / "tiny"
    (results / "points" / "n32_d16_seed0").mkdir(parents=True)
    (results / "points" / "n32_d16_seed0" / "metrics.json").write_text('{"format": 1}')
    (results / "convergence.csv").write_text("kernel,n\nck,32\n")
    return workdir / "results"


@pytest.mark.parametrize(
    ("case", "changes", "key"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS]
)
def test_bad_config_is_rejected_by_the_sweep_command(
    case: str,
    changes: dict[str, Any],
    key: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = existing_results(tmp_path)
    config = write_config(tmp_path / "config", bad_config(changes))
    before = tree_digest(results)
    status = main(["sweep", "--config", str(config), "--workdir", str(tmp_path)])
    error = capsys.readouterr().err
    assert status == 2
    assert error.startswith(f"implicit-rmt sweep: error: {key}="), error
    assert tree_digest(results) == before
    assert not (tmp_path / ".snakemake").exists()


def test_bad_options_are_rejected_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, TINY)
    base = ["sweep", "--config", str(config), "--workdir", str(tmp_path)]
    cases = [
        (["--cores", "0"], "--cores=0"),
        (["--sweep", "nope"], "--sweep='nope'"),
        (["--workdir", str(tmp_path / "absent")], "--workdir="),
    ]
    for extra, named in cases:
        assert main([*base, *extra]) == 2
        assert named in capsys.readouterr().err
    assert main(["sweep", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "cannot be read" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


@pytest.mark.parametrize(
    ("case", "changes", "key"),
    [BAD_CONFIGS[0], BAD_CONFIGS[-1]],
    ids=["misspelled", "no-fixed-point"],
)
def test_bad_config_stops_plain_snakemake_before_any_job(
    case: str, changes: dict[str, Any], key: str, tmp_path: Path
) -> None:
    results = existing_results(tmp_path)
    before = tree_digest(results)
    config = write_config(tmp_path / "config", bad_config(changes))
    result = run_killable(
        [
            *SNAKEMAKE,
            "--directory",
            str(tmp_path),
            "--configfile",
            str(config),
            "--replace-workflow-config",
            "--cores",
            "1",
        ],
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode != 0
    assert f"{key}=" in result.stdout, result.stdout[-4000:]
    assert "rule point" not in result.stdout
    assert tree_digest(results) == before


@pytest.mark.slow
def test_failed_points_still_give_a_table(tmp_path: Path) -> None:
    # Points whose Dask scheduler cannot be reached fail (after the 1 s connect
    # timeout set here); the sweep command reports Snakemake's failure, then
    # aggregates: every point is in the table, marked failed.
    config = json.loads(json.dumps(TINY))
    config["sweeps"]["tiny"] |= {
        "n": [32, 48],
        "seeds": [0],
        "cluster": "address",
        "scheduler_address": "tcp://127.0.0.1:9",
    }
    path = write_config(tmp_path, config)
    result = run_killable(
        [*IMPLICIT_RMT, "sweep", "--config", str(path), "--workdir", str(tmp_path)],
        cwd=tmp_path,
        timeout=180,
        env=venv_env({"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}),
    )
    assert result.returncode == 1, result.stdout[-4000:]
    assert "Snakemake exited with status 1" in result.stdout
    assert "aggregating the points that finished" in result.stdout
    assert "| ck | 32 | 16 | 0/1 | 1 failed |" in result.stdout
    dataset = xr.load_dataset(tmp_path / "results" / "tiny" / "convergence.nc")
    assert set(dataset.status.values.ravel()) == {"failed"}
    assert np.isnan(dataset.exponent.values).all()
    for figure in ("error_opnorm.png", "relative_error.png"):
        assert (tmp_path / "results" / "tiny" / "plots" / figure).stat().st_size > 0


@pytest.mark.slow
def test_aggregate_command_on_a_partial_copy(
    tiny_run: tuple[Path, str], tmp_path: Path
) -> None:
    # a copy of the finished sweep with one point's metrics gone: the table
    # keeps the point as missing and the command still succeeds
    reference_dir, _ = tiny_run
    copy = tmp_path / "tiny"
    shutil.copytree(reference_dir, copy, ignore=shutil.ignore_patterns("kernels.zarr"))
    (copy / "points" / "n48_d24_seed1" / "metrics.json").unlink()
    shutil.rmtree(copy / "logs")
    result = run_killable(
        [*IMPLICIT_RMT, "aggregate", str(copy)], cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stdout[-4000:]
    assert "| ck | 48 | 24 | 1/2 | 1 ok, 1 missing |" in result.stdout
    dataset = xr.load_dataset(copy / "convergence.nc")
    assert dataset.status.sel(n=48, seed=1, kernel="ntk").item() == "missing"
