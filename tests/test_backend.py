"""Tile arithmetic written once against the array API: numpy, array-api-strict, CuPy."""

from __future__ import annotations

import numpy as np
import pytest

from implicit_rmt import backend
from implicit_rmt.backend import check_backend, tile_entries, to_device, to_host
from implicit_rmt.data import sphere_columns
from implicit_rmt.errors import ParameterError
from implicit_rmt.kernels import ImplicitKernel

EPS = np.finfo(np.float64).eps
D = 24


@pytest.fixture(scope="module")
def kernel() -> ImplicitKernel:
    return ImplicitKernel("relu", sigma_a2=0.2, sigma_b2=0.8).prepare()


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return sphere_columns(5, D, 0, 40)


def test_off_diagonal_tile_is_the_maps_of_the_inner_products(
    kernel: ImplicitKernel, data: np.ndarray
) -> None:
    tile = tile_entries(
        kernel, data[:, :16], data[:, 16:], ("ck", "ntk"), diagonal=False
    )
    exact = kernel.exact(data[:, :16].T @ data[:, 16:])
    for name in ("ck", "ntk"):
        assert tile[name].shape == (16, 24)
        assert tile[name].dtype == np.float64
        # ImplicitKernel.entries promises 1e-13 * max|f| of the exact maps (or its
        # certified error, if larger); the GEMM is the same one on both sides
        scale = np.abs(exact[name]).max()
        bound = max(1e-13, kernel.map_errors[name]) * scale
        assert np.abs(tile[name] - exact[name]).max() <= bound


@pytest.mark.parametrize("slab", [1, 37, 10**6])
def test_slabs_give_the_whole_tile_bit_for_bit(
    kernel: ImplicitKernel, data: np.ndarray, slab: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # entries are mapped one by one, so any slab size (one row, ragged slabs of
    # 37 // 24 = 1 row, or the whole tile) gives the same bits as one call
    monkeypatch.setattr(backend, "SLAB_ENTRIES", slab)
    tile = tile_entries(
        kernel, data[:, :16], data[:, 16:], ("ck", "ntk"), diagonal=False
    )
    whole = kernel.entries(data[:, :16].T @ data[:, 16:], ("ck", "ntk"))
    for name in ("ck", "ntk"):
        assert np.array_equal(tile[name], whole[name])


def test_diagonal_tile_is_exactly_symmetric_with_unit_inner_products(
    kernel: ImplicitKernel, data: np.ndarray
) -> None:
    tile = tile_entries(kernel, data, data, ("ck", "ntk"), diagonal=True)
    at_one = kernel.entries(np.ones(1), ("ck", "ntk"))
    for name in ("ck", "ntk"):
        assert np.array_equal(tile[name], tile[name].T)
        assert np.array_equal(np.diag(tile[name]), np.full(40, at_one[name][0]))


def test_duplicate_points_off_the_diagonal_stay_finite(
    kernel: ImplicitKernel, data: np.ndarray
) -> None:
    # x_i^T x_i computed by a GEMM is 1 up to ~D ulps, on either side of 1. The
    # relu NTK has a square-root cusp at t = 1, so f(1 - δ) - f(1) ~ sqrt(δ):
    # the entries must be finite and within a few sqrt(D eps) of f(1).
    tile = tile_entries(kernel, data, data, ("ck", "ntk"), diagonal=False)
    at_one = kernel.entries(np.ones(1), ("ck", "ntk"))
    for name in ("ck", "ntk"):
        assert np.isfinite(tile[name]).all()
        gap = np.abs(np.diag(tile[name]) - at_one[name][0]).max()
        assert gap <= 4 * np.sqrt(D * EPS) * abs(at_one[name][0])


def test_array_api_strict_gives_the_numpy_result(
    kernel: ImplicitKernel, data: np.ndarray
) -> None:
    xp = pytest.importorskip("array_api_strict")
    for diagonal, columns in ((False, data[:, 20:]), (True, data[:, :20])):
        reference = tile_entries(
            kernel, data[:, :20], columns, ("ck", "ntk"), diagonal=diagonal
        )
        strict = tile_entries(
            kernel,
            xp.asarray(data[:, :20]),
            xp.asarray(columns),
            ("ck", "ntk"),
            diagonal=diagonal,
        )
        for name in ("ck", "ntk"):
            assert type(strict[name]).__module__.startswith("array_api_strict")
            assert np.array_equal(np.asarray(strict[name]), reference[name])


def test_float32_stays_float32(kernel: ImplicitKernel, data: np.ndarray) -> None:
    single = data.astype(np.float32)
    tile = tile_entries(kernel, single[:, :8], single[:, 8:], ("ck",), diagonal=False)
    assert tile["ck"].dtype == np.float32
    reference = tile_entries(kernel, data[:, :8], data[:, 8:], ("ck",), diagonal=False)
    # float32 inputs: entries agree to a few float32 ulps of the rounded data, times
    # the map's Lipschitz constant (< 1 for the relu CK away from t = 1)
    assert np.abs(tile["ck"] - reference["ck"]).max() < D * np.finfo(np.float32).eps


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ParameterError, match="backend='jax'"):
        check_backend("jax")
    check_backend("numpy")


def test_cupy_without_a_gpu_is_a_clear_error() -> None:
    try:
        import cupy

        count = cupy.cuda.runtime.getDeviceCount()
    except (ImportError, RuntimeError):  # no CuPy, or no usable CUDA runtime
        count = 0
    if count:
        pytest.skip("a CUDA device is present; the missing-GPU error cannot occur")
    with pytest.raises(ParameterError, match="backend='cupy'"):
        check_backend("cupy")


@pytest.mark.gpu
def test_cupy_tiles_match_numpy(kernel: ImplicitKernel, data: np.ndarray) -> None:
    check_backend("cupy")
    rows, columns = to_device(data[:, :16], "cupy"), to_device(data[:, 16:], "cupy")
    tile = tile_entries(kernel, rows, columns, ("ck", "ntk"), diagonal=False)
    reference = tile_entries(
        kernel, data[:, :16], data[:, 16:], ("ck", "ntk"), diagonal=False
    )
    for name in ("ck", "ntk"):
        host = to_host(tile[name])
        assert isinstance(host, np.ndarray)
        # cuBLAS and the host BLAS sum the d = 24 products in different orders:
        # |Δt| <= D eps, moved through the map (Lipschitz < 2 off the diagonal)
        scale = np.abs(reference[name]).max()
        assert np.abs(host - reference[name]).max() <= 2 * D * EPS * scale + (
            kernel.map_errors[name] * scale
        )
