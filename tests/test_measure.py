"""measure_store on stores written from dense matrices, against dense LAPACK.

The store holds a kernel-like matrix K (entries exp(t) − 1 + small quadratic, t the
Gram matrix of unit-norm data) with chosen coefficients α, β, μ; the references
are dense norms of K and K − (α11ᵀ + βXᵀX + μI). A dense reference is exact for a
matrix within eps·n·‖A‖ of A, so that slack is added to each certificate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from distributed import Client, LocalCluster
from solver_stores import sphere_data, write_store

from implicit_rmt.errors import ParameterError, StoreError
from implicit_rmt.measure import MeasureOptions, measure_store

EPS = float(np.finfo(np.float64).eps)
N, D, TILE = 150, 60, 32
COEFFICIENTS = {
    "ck": {"alpha": 0.02, "beta": 0.9, "mu": 0.15},
    "ntk": {"alpha": 0.05, "beta": 1.4, "mu": 0.3},
}
KERNEL_KEYS = {
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
    "passes",
    "seconds",
    "converged",
}


@pytest.fixture(scope="module")
def point(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, npt.NDArray[np.float64]]]:
    x = sphere_data(D, N, seed=3)
    t = x.T @ x
    kernels = {"ck": np.exp(t) - 1 + 0.1 * t**2, "ntk": 2 * np.exp(t) + t - 1.5}
    path = tmp_path_factory.mktemp("measure") / "kernels.zarr"
    write_store(path, x, kernels, TILE, COEFFICIENTS)
    return path, {"X": x, **kernels}


def dense_references(
    arrays: dict[str, npt.NDArray[np.float64]], name: str
) -> dict[str, float]:
    x = arrays["X"]
    c = COEFFICIENTS[name]
    equivalent = c["alpha"] + c["beta"] * x.T @ x + c["mu"] * np.eye(N)
    eigenvalues = np.linalg.eigvalsh(arrays[name])
    return {
        "opnorm": float(np.linalg.norm(arrays[name], 2)),
        "error_opnorm": float(np.linalg.norm(arrays[name] - equivalent, 2)),
        "lambda_max": float(eigenvalues[-1]),
        "lambda_min": float(eigenvalues[0]),
    }


def check_metrics(
    metrics: dict[str, Any], arrays: dict[str, npt.NDArray[np.float64]]
) -> None:
    assert metrics["format"] == 1
    assert metrics["tolerance"] == 1e-10
    assert metrics["point"]["n"] == N and metrics["point"]["d"] == D
    assert set(metrics["kernels"]) == {"ck", "ntk"}
    for name, entry in metrics["kernels"].items():
        reference = dense_references(arrays, name)
        slack = EPS * N * reference["opnorm"]
        assert entry["converged"] is True
        assert entry["passes"] >= 2
        for key in ("opnorm", "error_opnorm"):
            assert abs(entry[key] - reference[key]) <= entry[key + "_bound"] + slack
            assert entry[key + "_bound"] <= 1e-10 * entry[key]
        assert entry["relative_error"] == entry["error_opnorm"] / entry["opnorm"]
        assert (
            abs(entry["lambda_max"] - reference["lambda_max"])
            <= 1e-10 * (reference["opnorm"])
        )
        assert entry["lambda_min"] >= reference["lambda_min"] - slack
        assert {k: entry[k] for k in ("alpha", "beta", "mu")} == COEFFICIENTS[name]


def test_metrics_against_dense(
    point: tuple[Path, dict[str, npt.NDArray[np.float64]]], tmp_path: Path
) -> None:
    path, arrays = point
    out = tmp_path / "metrics.json"
    metrics = measure_store(path, out)
    assert json.loads(out.read_text()) == metrics
    for entry in metrics["kernels"].values():
        assert set(entry) == KERNEL_KEYS
    check_metrics(metrics, arrays)
    assert not list(tmp_path.glob(".*tmp"))


def test_metrics_on_a_dask_cluster(
    point: tuple[Path, dict[str, npt.NDArray[np.float64]]], tmp_path: Path
) -> None:
    path, arrays = point
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False) as cluster,
        Client(cluster) as client,
    ):
        metrics = measure_store(path, tmp_path / "metrics.json", client=client)
    check_metrics(metrics, arrays)


@pytest.mark.parametrize("kind", ["dense", "slq"])
def test_spectra_written_next_to_metrics(
    point: tuple[Path, dict[str, npt.NDArray[np.float64]]], tmp_path: Path, kind: str
) -> None:
    path, arrays = point
    options = MeasureOptions(spectra=kind, slq_steps=30, slq_probes=8)
    metrics = measure_store(path, tmp_path / "m" / "metrics.json", options)
    record = metrics["kernels"]["ck"]["spectrum"]
    assert record == {
        "kind": "eigenvalues" if kind == "dense" else "density",
        "path": "spectrum_ck.npz",
    }
    with np.load(tmp_path / "m" / record["path"]) as saved:
        assert saved["mp_density"].shape == saved["mp_grid"].shape
        assert float(saved["outlier"]) == pytest.approx(0.02 * N + 0.9 + 0.15)
        if kind == "dense":
            reference = np.linalg.eigvalsh(arrays["ck"])
            assert np.max(np.abs(saved["eigenvalues"] - reference)) <= (
                EPS * N * reference[-1]
            )
        else:
            widths = np.diff(saved["edges"])
            assert np.sum(saved["density"] * widths) == pytest.approx(1.0)


def test_pass_limit_records_unconverged_point(
    point: tuple[Path, dict[str, npt.NDArray[np.float64]]], tmp_path: Path
) -> None:
    path, arrays = point
    with pytest.warns(RuntimeWarning, match="max_passes=1"):
        metrics = measure_store(
            path, tmp_path / "metrics.json", MeasureOptions(max_passes=1)
        )
    entry = metrics["kernels"]["ck"]
    assert entry["converged"] is False
    assert entry["passes"] == 2
    assert entry["opnorm"] <= dense_references(arrays, "ck")["opnorm"] * (1 + 1e-12)


def test_bad_input_refused_before_work_and_old_metrics_kept(
    point: tuple[Path, dict[str, npt.NDArray[np.float64]]], tmp_path: Path
) -> None:
    path, _ = point
    out = tmp_path / "metrics.json"
    out.write_text('{"previous": true}\n')
    with pytest.raises(ParameterError, match="tol=0"):
        measure_store(path, out, MeasureOptions(tol=0))
    with pytest.raises(ParameterError, match="spectra='all'"):
        MeasureOptions(spectra="all")
    with pytest.raises(ParameterError, match="out="):
        measure_store(path, tmp_path)
    with pytest.raises(StoreError, match="not a kernel store"):
        measure_store(tmp_path / "missing.zarr", out)
    assert json.loads(out.read_text()) == {"previous": True}


def test_incomplete_store_is_refused(tmp_path: Path) -> None:
    x = sphere_data(4, 10, 0)
    path = write_store(tmp_path / "k.zarr", x, {"ck": np.eye(10)}, 4)
    (path / "_build" / "complete").unlink()
    with pytest.raises(StoreError, match="incomplete"):
        measure_store(path, tmp_path / "metrics.json")
    assert not (tmp_path / "metrics.json").exists()
