"""``implicit-rmt point`` and ``implicit-rmt measure`` end to end on a tiny point.

The metrics of a real build (relu network, theory coefficients from the store) are
checked against dense norms of the stored arrays; a dense reference is exact for a
matrix within eps·n·‖A‖, which is added to each certificate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from implicit_rmt.cli import main
from implicit_rmt.equivalents import (
    equivalent_coefficients,
    explicit_entries,
    match_quadratic,
)
from implicit_rmt.kernels import ImplicitKernel
from implicit_rmt.store import open_store

EPS = float(np.finfo(np.float64).eps)
N, D = 200, 100
POINT = ["--n", str(N), "--dim", str(D), "--tile", "64", "--threads", "--workers", "1"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("point")
    store, metrics = root / "kernels.zarr", root / "metrics.json"
    outputs = ["--out", str(store), "--metrics", str(metrics)]
    code = main(["point", *POINT, *outputs, "--explicit", "--progress", "none"])
    assert code == 0
    return store, json.loads(metrics.read_text())


def test_point_metrics_against_dense(built: tuple[Path, dict[str, Any]]) -> None:
    store, metrics = built
    group = open_store(store).group
    x = group["X"][...]
    kernel = ImplicitKernel()
    assert metrics["point"]["n"] == N and metrics["store"] == str(store)
    for name in ("ck", "ntk"):
        entry = metrics["kernels"][name]
        stored = group[name][...]
        stored = np.triu(stored) + np.triu(stored, 1).T
        c = equivalent_coefficients(kernel, name, D)
        assert entry["alpha"] == pytest.approx(c.alpha, rel=1e-12)
        equivalent = c.alpha + c.beta * x.T @ x + c.mu * np.eye(N)
        sigma = explicit_entries(match_quadratic(c), name, x.T @ x)
        for key, matrix in (
            ("opnorm", stored),
            ("error_opnorm", stored - equivalent),
            ("explicit_error_opnorm", stored - sigma),
        ):
            reference = np.linalg.norm(matrix, 2)
            slack = EPS * N * np.linalg.norm(stored, 2)
            assert abs(entry[key] - reference) <= entry[key + "_bound"] + slack
            assert entry[key + "_bound"] <= 1e-10 * entry[key]
        assert entry["converged"] is True


def test_measure_command_with_spectra(
    built: tuple[Path, dict[str, Any]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, point_metrics = built
    out = tmp_path / "metrics.json"
    code = main(
        ["measure", "--store", str(store), "--out", str(out), "--spectra", "auto"]
    )
    assert code == 0
    assert "ck: ‖K* − K̄‖₂ =" in capsys.readouterr().out
    metrics = json.loads(out.read_text())
    for name in ("ck", "ntk"):
        entry, earlier = metrics["kernels"][name], point_metrics["kernels"][name]
        assert abs(entry["error_opnorm"] - earlier["error_opnorm"]) <= (
            entry["error_opnorm_bound"] + earlier["error_opnorm_bound"]
        )
        assert (tmp_path / entry["spectrum"]["path"]).is_file()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tol", "0"], "--tol=0.0 is invalid"),
        (["--block-size", "0"], "--block-size=0 is invalid"),
        (["--spectra", "all"], "--spectra='all' is invalid"),
        (["--n", "0"], "--n=0 is invalid"),
    ],
)
def test_point_refuses_bad_input_before_building(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    store, metrics = tmp_path / "kernels.zarr", tmp_path / "metrics.json"
    argv = ["point", *POINT, "--out", str(store), "--metrics", str(metrics), *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not store.exists() and not metrics.exists()


def test_point_refuses_a_directory_as_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "kernels.zarr"
    argv = ["point", *POINT, "--out", str(store), "--metrics", str(tmp_path)]
    assert main(argv) == 2
    assert "--metrics=" in capsys.readouterr().err
    assert not store.exists()


def test_measure_refuses_a_missing_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "metrics.json"
    assert (
        main(["measure", "--store", str(tmp_path / "no.zarr"), "--out", str(out)]) == 2
    )
    assert "not a kernel store" in capsys.readouterr().err
    assert not out.exists()
