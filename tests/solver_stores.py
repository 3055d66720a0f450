"""Kernel stores written directly from dense matrices, for the solver's tests.

The arrays follow the store layout of docs/architecture.md (``X`` (d, n), kernels
(n, n), square chunks, the ``implicit_rmt`` attribute) and are written through
``implicit_rmt.store``'s own layout functions, then marked complete. The content is
whatever dense matrix the test chooses: legitimate test data for a solver that
must work on any symmetric array.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from implicit_rmt.store import PointSpec, Records, prepare_store, write_record


def sphere_data(d: int, n: int, seed: int) -> npt.NDArray[np.float64]:
    """Return (d, n) float64 data with unit-norm Gaussian-direction columns."""
    g = np.random.default_rng(seed).standard_normal((d, n))
    unit: npt.NDArray[np.float64] = g / np.linalg.norm(g, axis=0)
    return unit


def write_store(
    path: Path,
    data: npt.NDArray[np.float64],
    kernels: dict[str, npt.NDArray[np.float64]],
    tile: int,
    coefficients: dict[str, dict[str, float]] | None = None,
    dtype: str = "float64",
) -> Path:
    """Write a complete store at ``path`` holding ``data`` and ``kernels``."""
    d, n = data.shape
    spec = PointSpec(n=n, d=d, seed=0, kernels=tuple(kernels), tile=tile, dtype=dtype)
    coefficients = coefficients or {
        name: {"alpha": 0.0, "beta": 0.0, "mu": 0.0} for name in kernels
    }
    group = prepare_store(path, spec, spec.to_attrs(1.0, coefficients))
    group["X"][...] = data
    for name, matrix in kernels.items():
        group[name][...] = matrix
    write_record(Records(path).complete_path, {"verified": True})
    return path
