"""Tiled operators over Zarr stores against dense products.

Every product is compared with the same product done densely in float64; both sum
at most n terms of size ‖A‖·‖v‖, so they agree to ``eps · n · ‖A‖ · ‖V‖`` (the
bound used below).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from distributed import Client, LocalCluster
from solver_stores import sphere_data, write_store

from implicit_rmt.errors import ParameterError
from implicit_rmt.operators import (
    DenseOperator,
    ExplicitTiles,
    LowRankShift,
    StoredTiles,
    TiledOperator,
)

EPS = float(np.finfo(np.float64).eps)
N, D, TILE = 103, 17, 16  # 7 tiles per side, the last one partial


def quadratic(
    t: npt.NDArray[np.float64], a0: float, a2: float
) -> npt.NDArray[np.float64]:
    return a0 + a2 * t**2


@pytest.fixture(scope="module")
def store(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, npt.NDArray[np.float64]]]:
    x = sphere_data(D, N, seed=1)
    t = x.T @ x
    ck = np.exp(t)
    ntk = np.cosh(t) + t
    path = write_store(
        tmp_path_factory.mktemp("ops") / "kernels.zarr", x, {"ck": ck, "ntk": ntk}, TILE
    )
    return path, {"X": x, "ck": ck, "ntk": ntk}


def close(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], scale: float) -> bool:
    return bool(np.max(np.abs(a - b)) <= EPS * N * scale)


def test_stored_product_matches_dense(
    store: tuple[Path, dict[str, npt.NDArray[np.float64]]],
) -> None:
    path, arrays = store
    block = np.random.default_rng(0).standard_normal((N, 5))
    for name in ("ck", "ntk"):
        op = TiledOperator(N, TILE, [(1.0, StoredTiles(str(path), name))])
        scale = np.abs(arrays[name]).max() * np.abs(block).max() * 4
        assert close(op.matmat(block), arrays[name] @ block, scale)
    assert op.passes == 1


def test_only_upper_tiles_are_used(tmp_path: Path) -> None:
    # A non-symmetric array: the operator is its upper triangle mirrored.
    matrix = np.random.default_rng(2).standard_normal((N, N))
    path = write_store(tmp_path / "k.zarr", sphere_data(D, N, 0), {"ck": matrix}, TILE)
    op = TiledOperator(N, TILE, [(1.0, StoredTiles(str(path), "ck"))])
    mirrored = np.triu(matrix) + np.triu(matrix, 1).T
    block = np.eye(N)
    assert close(op.matmat(block), mirrored, 4 * np.abs(matrix).max())
    assert close(
        DenseOperator(matrix).matmat(block), mirrored, 4 * np.abs(matrix).max()
    )


def test_weighted_sum_of_stored_terms(
    store: tuple[Path, dict[str, npt.NDArray[np.float64]]],
) -> None:
    # Coefficients other than ±1 take the scaled-accumulation branch; a second
    # pass checks that accumulating in place did not alter anything reused.
    path, arrays = store
    ck, ntk = StoredTiles(str(path), "ck"), StoredTiles(str(path), "ntk")
    terms = [(2.5, ck), (-0.75, ntk)]
    op = TiledOperator(N, TILE, terms)
    combined = 2.5 * arrays["ck"] - 0.75 * arrays["ntk"]
    block = np.random.default_rng(4).standard_normal((N, 3))
    scale = 4 * np.abs(combined).max() * np.abs(block).max()
    first = op.matmat(block)
    assert close(first, combined @ block, scale)
    assert np.array_equal(op.matmat(block), first)


@pytest.mark.parametrize("cache_bytes", [0, 1 << 20])  # blockwise, then cached X
def test_difference_with_equivalent(
    store: tuple[Path, dict[str, npt.NDArray[np.float64]]], cache_bytes: int
) -> None:
    path, arrays = store
    alpha, beta, mu = 0.7, 1.3, -0.4
    x = arrays["X"]
    equivalent = alpha * np.ones((N, N)) + beta * x.T @ x + mu * np.eye(N)
    low_rank = LowRankShift(alpha, beta, mu, str(path), cache_bytes=cache_bytes)
    block = np.random.default_rng(3).standard_normal((N, 4))
    scale = (
        8 * np.abs(block).max() * (np.abs(arrays["ck"]).max() + alpha + beta + abs(mu))
    )
    assert close(low_rank.apply(block), equivalent @ block, scale)
    op = TiledOperator(
        N, TILE, [(1.0, StoredTiles(str(path), "ck"))], low_rank=low_rank
    )
    assert close(op.matmat(block), (arrays["ck"] - equivalent) @ block, scale)
    assert bool(low_rank._cache) == (cache_bytes > 8 * D * N)


def test_explicit_tiles_computed_from_data(
    store: tuple[Path, dict[str, npt.NDArray[np.float64]]],
) -> None:
    path, arrays = store
    x = arrays["X"]
    entries = functools.partial(quadratic, a0=0.5, a2=2.0)
    sigma = quadratic(x.T @ x, 0.5, 2.0)
    op = TiledOperator(
        N,
        TILE,
        [(1.0, StoredTiles(str(path), "ck")), (-1.0, ExplicitTiles(entries))],
        data_path=str(path),
    )
    block = np.random.default_rng(4).standard_normal((N, 3))
    assert close(
        op.matmat(block), (arrays["ck"] - sigma) @ block, 16 * np.abs(block).max()
    )


# X kept in the workers' memory (1 MiB is ample), then read by each task.
@pytest.mark.parametrize("cache_bytes", [1 << 20, 0])
def test_distributed_pass_equals_sequential(
    store: tuple[Path, dict[str, npt.NDArray[np.float64]]], cache_bytes: int
) -> None:
    path, arrays = store
    block = np.random.default_rng(5).standard_normal((N, 6))
    terms = [(1.0, StoredTiles(str(path), "ntk"))]
    low_rank = LowRankShift(0.1, 0.2, 0.3, str(path), cache_bytes=cache_bytes)
    sequential = TiledOperator(N, TILE, terms, low_rank=low_rank).matmat(block)
    x = arrays["X"]
    reference = arrays["ntk"] @ block - (0.1 * np.ones((N, N)) + 0.2 * x.T @ x) @ block
    reference -= 0.3 * block
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False) as cluster,
        Client(cluster) as client,
    ):
        op = TiledOperator(N, TILE, terms, low_rank=low_rank, client=client)
        distributed = op.matmat(block)
        # Sums run in a fixed order, so a repeated pass is bitwise the same.
        assert np.array_equal(op.matmat(block), distributed)
        assert op.passes == 2
    scale = 8 * np.abs(arrays["ntk"]).max() * np.abs(block).max()
    assert close(distributed, sequential, scale)
    assert close(distributed, reference, scale)


def test_bad_block_shape_names_the_shape(
    store: tuple[Path, dict[str, npt.NDArray[np.float64]]],
) -> None:
    path, _ = store
    op = TiledOperator(N, TILE, [(1.0, StoredTiles(str(path), "ck"))])
    with pytest.raises(ParameterError, match=r"\(103, b\)"):
        op.matmat(np.ones((N + 1, 2)))
    assert op.passes == 0


def test_bad_construction_is_refused() -> None:
    with pytest.raises(ParameterError, match="tile"):
        TiledOperator(10, 0, [(1.0, StoredTiles("x", "ck"))])
    with pytest.raises(ParameterError, match="terms"):
        TiledOperator(10, 4, [])
    with pytest.raises(ParameterError, match="matrix"):
        DenseOperator(np.ones((3, 4)))


def test_tile_terms_survive_pickling(
    store: tuple[Path, dict[str, npt.NDArray[np.float64]]],
) -> None:
    # Worker processes receive the terms pickled; the product must not change.
    import pickle

    path, _ = store
    entries = functools.partial(quadratic, a0=0.5, a2=2.0)
    terms = [(1.0, StoredTiles(str(path), "ck")), (-1.0, ExplicitTiles(entries))]
    copied = pickle.loads(pickle.dumps(terms))
    block = np.random.default_rng(6).standard_normal((N, 2))
    first = TiledOperator(N, TILE, terms, data_path=str(path)).matmat(block)
    second = TiledOperator(N, TILE, copied, data_path=str(path)).matmat(block)
    assert np.array_equal(first, second)
