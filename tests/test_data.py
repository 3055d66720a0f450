"""The data matrix: counter-based columns on the unit sphere."""

from __future__ import annotations

import numpy as np
import pytest

from implicit_rmt.data import sphere_column, sphere_columns
from implicit_rmt.errors import ParameterError


def test_columns_are_a_prefix_whatever_the_blocks() -> None:
    # Column j depends on (seed, j, d) only: a smaller n is a prefix of a larger
    # one, and any split into blocks gives the same matrix bit for bit.
    whole = sphere_columns(7, 13, 0, 50)
    assert np.array_equal(sphere_columns(7, 13, 0, 20), whole[:, :20])
    pieces = [
        sphere_columns(7, 13, start, min(start + 9, 50)) for start in range(0, 50, 9)
    ]
    assert np.array_equal(np.concatenate(pieces, axis=1), whole)
    assert np.array_equal(sphere_column(7, 31, 13), whole[:, 31])


def test_seeds_and_columns_differ() -> None:
    block = sphere_columns(0, 8, 0, 4)
    assert not np.array_equal(block, sphere_columns(1, 8, 0, 4))
    assert len({tuple(column) for column in block.T}) == 4


def test_unit_norm_and_float32_is_the_rounding_of_float64() -> None:
    block = sphere_columns(3, 100, 0, 64)
    # norm of a normalised d-vector: a few ulps of rounding, d = 100 terms
    assert np.abs(np.linalg.norm(block, axis=0) - 1).max() < 100 * np.finfo(float).eps
    single = sphere_columns(3, 100, 0, 64, dtype="float32")
    assert single.dtype == np.float32
    assert np.array_equal(single, block.astype(np.float32))


def test_uniform_on_the_sphere_monte_carlo() -> None:
    # For x uniform on S^{d-1}: E x = 0 and E x x^T = I/d. With n samples each
    # entry of the empirical mean has standard deviation sqrt(1/(d n)), and each
    # entry of the empirical second moment at most sqrt(3/(d(d+2)) / n)
    # (E x_k^4 = 3/(d(d+2))); 5 standard deviations bound both.
    d, n = 4, 20_000
    block = sphere_columns(11, d, 0, n)
    assert np.abs(block.mean(axis=1)).max() < 5 * np.sqrt(1 / (d * n))
    second = block @ block.T / n
    bound = 5 * np.sqrt(3 / (d * (d + 2)) / n)
    assert np.abs(second - np.eye(d) / d).max() < bound


@pytest.mark.parametrize(
    ("args", "parameter"),
    [
        ((-1, 3, 0, 1), "seed"),
        ((2**64, 3, 0, 1), "seed"),
        ((1.5, 3, 0, 1), "seed"),
        ((0, 0, 0, 1), "d"),
        ((0, 3, 2, 1), "start, stop"),
    ],
)
def test_bad_arguments_are_named(args: tuple[object, ...], parameter: str) -> None:
    with pytest.raises(ParameterError) as info:
        sphere_columns(*args)  # type: ignore[arg-type]
    assert info.value.parameter == parameter


def test_bad_dtype_is_named() -> None:
    with pytest.raises(ParameterError, match="dtype='float16'"):
        sphere_columns(0, 3, 0, 1, dtype="float16")
