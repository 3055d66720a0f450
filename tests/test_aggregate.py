"""Convergence tables from metrics.json files written by hand after the contract.

The metrics files here follow docs/architecture.md field by field; their numbers
come from an exact power law with known exponent, or from a seeded random
perturbation of one, so every fitted number has an independent reference
(a closed form, or scipy.stats.linregress).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from implicit_rmt.aggregate import (
    aggregate,
    collect,
    convergence_table,
    fit_power_law,
)
from implicit_rmt.config import Point
from implicit_rmt.errors import ConfigError
from implicit_rmt.sweep import manifest, point_dir, point_log, write_json_atomic

KERNELS = ("ck", "ntk")
SWEEP = {
    "n": [64, 128, 256, 512],
    "ratio": 0.5,
    "seeds": [0, 1, 2],
    "kernels": list(KERNELS),
    "activation": "relu",
    "activation_params": {},
    "sigma_a2": 0.2,
    "sigma_b2": 0.8,
    "tile": 64,
    "dtype": "float64",
    "backend": "numpy",
    "cluster": "local",
    "workers": 1,
    "tolerance": 1e-10,
    "spectra": False,
    "explicit": False,
}


def kernel_entry(error: float, opnorm: float = 10.0, converged: bool = True) -> dict:
    """One kernel's block of metrics.json, as docs/architecture.md lays it out."""
    return {
        "alpha": 0.1,
        "beta": 0.3,
        "mu": 0.5,
        "error_opnorm": error,
        "error_opnorm_bound": error * 1e-9,
        "opnorm": opnorm,
        "opnorm_bound": opnorm * 1e-9,
        "relative_error": error / opnorm,
        "lambda_max": error,
        "lambda_min": -error / 2,
        "passes": 12,
        "seconds": 0.5,
        "converged": converged,
    }


def write_metrics(sweep_dir: Path, point: Point, kernels: dict[str, dict]) -> None:
    """Write metrics.json for ``point`` with the given kernel blocks."""
    directory = point_dir(sweep_dir, point)
    data = {
        "format": 1,
        "version": "0.1.0",
        "point": {
            "n": point.n,
            "d": point.d,
            "seed": point.seed,
            "activation": "relu",
            "activation_params": {},
            "sigma_a2": 0.2,
            "sigma_b2": 0.8,
            "tile": 64,
            "dtype": "float64",
        },
        "store": str(directory / "kernels.zarr"),
        "tolerance": 1e-10,
        "kernels": kernels,
    }
    write_json_atomic(directory / "metrics.json", data)


def exact_error(kernel: str, n: int, seed: int) -> float:
    """An exact power law, the same for every seed: 3 n^-1/2 (ck), 5 n^-1 (ntk)."""
    prefactor, exponent = (3.0, -0.5) if kernel == "ck" else (5.0, -1.0)
    return prefactor * n**exponent


@pytest.fixture
def sweep_dir(tmp_path: Path) -> Path:
    """A complete sweep whose errors follow exact power laws."""
    directory = tmp_path / "results" / "demo"
    write_json_atomic(directory / "sweep.json", manifest("demo", SWEEP))
    for n in SWEEP["n"]:
        for seed in SWEEP["seeds"]:
            point = Point(n, n // 2, seed)
            write_metrics(
                directory,
                point,
                {k: kernel_entry(exact_error(k, n, seed)) for k in KERNELS},
            )
    return directory


def test_exact_power_law_gives_exact_exponent(sweep_dir: Path) -> None:
    dataset = collect(sweep_dir)
    assert dict(dataset.sizes) == {"n": 4, "seed": 3, "kernel": 2}
    assert list(dataset.d.values) == [32, 64, 128, 256]
    # An exact power law fits with zero residual: the exponent is exact to
    # rounding (log of ~1e-2 numbers, 12 points: a few ulp of log values ~ 1e-14).
    assert float(dataset.exponent.sel(kernel="ck")) == pytest.approx(-0.5, abs=1e-12)
    assert float(dataset.exponent.sel(kernel="ntk")) == pytest.approx(-1.0, abs=1e-12)
    assert float(dataset.prefactor.sel(kernel="ck")) == pytest.approx(3.0, rel=1e-12)
    width = float(
        dataset.exponent_high.sel(kernel="ck") - dataset.exponent_low.sel(kernel="ck")
    )
    assert 0 <= width < 1e-10
    assert set(dataset.status.values.ravel()) == {"ok"}
    assert dataset.error_opnorm.attrs["description"]


def test_fit_matches_scipy_linregress_and_t_interval() -> None:
    rng = np.random.default_rng(7)
    n = np.repeat([100, 200, 400, 800, 1600], 3)
    values = 2.0 * n**-0.45 * np.exp(0.1 * rng.standard_normal(n.size))
    fit = fit_power_law(n, values)
    assert fit is not None
    reference = stats.linregress(np.log(n), np.log(values))
    t = stats.t.ppf(0.975, n.size - 2)
    # Both compute the same closed-form least squares in float64 on 15 points:
    # agreement to ~1e-12 relative.
    assert fit.exponent == pytest.approx(reference.slope, rel=1e-12)
    assert fit.prefactor == pytest.approx(math.exp(reference.intercept), rel=1e-12)
    assert fit.exponent_low == pytest.approx(
        reference.slope - t * reference.stderr, rel=1e-12
    )
    assert fit.exponent_high == pytest.approx(
        reference.slope + t * reference.stderr, rel=1e-12
    )
    # the band at the mean of log n has half-width t s / sqrt(m)
    low, high = fit.band(np.exp(np.log(n).mean()))
    s = math.sqrt(fit.residual_variance)
    assert math.log(high / low) / 2 == pytest.approx(
        t * s / math.sqrt(n.size), rel=1e-12
    )


def test_fit_needs_two_distinct_n() -> None:
    assert fit_power_law([100, 100], [1.0, 2.0]) is None
    assert fit_power_law([100, 200], [1.0, math.nan]) is None
    two = fit_power_law([100, 400], [1.0, 0.5])
    assert two is not None
    assert two.exponent == pytest.approx(-0.5)
    assert math.isnan(two.exponent_low)


def test_table_means_and_spreads_over_seeds(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    write_json_atomic(directory / "sweep.json", manifest("demo", SWEEP))
    rng = np.random.default_rng(3)
    errors = {}
    for n in SWEEP["n"]:
        for seed in SWEEP["seeds"]:
            errors[n, seed] = {k: float(rng.uniform(0.01, 0.1)) for k in KERNELS}
            write_metrics(
                directory,
                Point(n, n // 2, seed),
                {k: kernel_entry(errors[n, seed][k]) for k in KERNELS},
            )
    table = convergence_table(collect(directory))
    assert len(table) == 8
    for row in table.itertuples():
        values = np.array([errors[row.n, s][row.kernel] for s in SWEEP["seeds"]])
        assert row.error_opnorm_mean == pytest.approx(values.mean(), rel=1e-14)
        assert row.error_opnorm_std == pytest.approx(values.std(ddof=1), rel=1e-12)
        assert row.relative_error_mean == pytest.approx(values.mean() / 10, rel=1e-14)
        assert row.status == "ok"
        assert (row.seeds_ok, row.seeds) == (3, 3)
        assert row.error_opnorm_bound_max == pytest.approx(
            values.max() * 1e-9, rel=1e-14
        )
        assert math.isnan(row.explicit_error_opnorm_mean)


def test_missing_failed_and_unconverged_points_are_kept(sweep_dir: Path) -> None:
    # n=512 seed 2: job never ran; n=256 seed 1: job ran and failed (log, no
    # metrics); n=128 seed 0: the ntk measurement did not converge; n=64 seed 0:
    # metrics file truncated by a crash.
    (point_dir(sweep_dir, Point(512, 256, 2)) / "metrics.json").unlink()
    failed = Point(256, 128, 1)
    (point_dir(sweep_dir, failed) / "metrics.json").unlink()
    point_log(sweep_dir, failed).parent.mkdir(parents=True)
    point_log(sweep_dir, failed).write_text("Traceback ...\n")
    write_metrics(
        sweep_dir,
        Point(128, 64, 0),
        {
            "ck": kernel_entry(exact_error("ck", 128, 0)),
            "ntk": kernel_entry(0.123, converged=False),
        },
    )
    (point_dir(sweep_dir, Point(64, 32, 0)) / "metrics.json").write_text(
        '{"format": 1, "ker'
    )

    outputs = aggregate(sweep_dir)
    dataset = xr.load_dataset(outputs.netcdf)
    status = dataset.status
    assert status.sel(n=512, seed=2).values.tolist() == ["missing", "missing"]
    assert status.sel(n=256, seed=1).values.tolist() == ["failed", "failed"]
    assert status.sel(n=128, seed=0, kernel="ntk").item() == "not_converged"
    assert status.sel(n=128, seed=0, kernel="ck").item() == "ok"
    assert status.sel(n=64, seed=0).values.tolist() == ["failed", "failed"]
    assert np.isnan(dataset.error_opnorm.sel(n=512, seed=2)).all()
    # the unconverged value is kept in the dataset but left out of the table
    assert dataset.error_opnorm.sel(n=128, seed=0, kernel="ntk").item() == 0.123

    table = convergence_table(dataset)
    row = table[(table.kernel == "ntk") & (table.n == 128)].iloc[0]
    assert row.status == "2 ok, 1 not_converged"
    assert row.error_opnorm_mean == pytest.approx(exact_error("ntk", 128, 0))
    row = table[(table.kernel == "ck") & (table.n == 512)].iloc[0]
    assert (row.seeds_ok, row.seeds, row.status) == (2, 3, "2 ok, 1 missing")
    # the exact power law still fits exactly on the remaining points
    assert float(dataset.exponent.sel(kernel="ntk")) == pytest.approx(-1.0, abs=1e-12)

    csv = outputs.csv.read_text()
    assert "1 missing" in csv and "1 failed" in csv
    markdown = outputs.markdown.read_text()
    assert "| ntk | 128 | 64 | 2/3 | 2 ok, 1 not_converged |" in markdown


def test_points_without_manifest_are_found_from_directories(sweep_dir: Path) -> None:
    (sweep_dir / "sweep.json").unlink()
    extra = Point(1024, 512, 0)
    write_metrics(sweep_dir, extra, {"ck": kernel_entry(3.0 / 32)})
    dataset = collect(sweep_dir)
    assert 1024 in dataset.n.values
    # the extra point has no ntk block and seeds 1, 2 were never asked for at 1024
    assert dataset.status.sel(n=1024, seed=0, kernel="ntk").item() == "missing"
    assert dataset.status.sel(n=1024, seed=1, kernel="ck").item() == "not_in_sweep"


def test_outputs_written_and_round_trip(sweep_dir: Path) -> None:
    outputs = aggregate(sweep_dir, plots=False)
    dataset = xr.load_dataset(outputs.netcdf)
    assert dataset.error_opnorm.attrs["units"] == "1"
    assert json.loads(dataset.attrs["parameters"])["sigma_a2"] == 0.2
    expected = exact_error("ntk", 256, 1)
    assert dataset.error_opnorm.sel(n=256, seed=1, kernel="ntk").item() == expected
    assert not list(sweep_dir.glob(".*tmp*"))


def test_interrupted_write_keeps_previous_outputs(
    sweep_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = aggregate(sweep_dir, plots=False)
    before = first.csv.read_bytes(), first.netcdf.read_bytes()
    (point_dir(sweep_dir, Point(64, 32, 0)) / "metrics.json").unlink()

    def crash(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("pandas.DataFrame.to_csv", crash)
    with pytest.raises(KeyboardInterrupt):
        aggregate(sweep_dir, plots=False)
    # the netCDF file was replaced (complete, new), the CSV kept whole and old
    assert first.csv.read_bytes() == before[0]
    assert first.netcdf.read_bytes() != before[1]
    assert not list(sweep_dir.glob(".*tmp*"))


def test_not_a_sweep_directory_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        aggregate(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"no sweep\.json and no point"):
        aggregate(tmp_path / "empty")
