"""Data points on the unit sphere, drawn column by column from a counter-based RNG.

Column :math:`j` of the data matrix :math:`X \\in \\mathbb{R}^{d \\times n}` is

.. math::

    x_j = g_j / \\lVert g_j \\rVert_2, \\qquad
    g_j \\sim \\mathcal{N}(0, I_d),

uniform on the unit sphere :math:`S^{d-1}`, where :math:`g_j` is read from a Philox
generator whose 128-bit key is ``(seed, j)``. Column :math:`j` is therefore a function
of ``(seed, j, d)`` alone: the :math:`X` of ``(n, d, seed)`` is the first :math:`n`
columns of the :math:`X` of ``(n' > n, d, seed)``, whatever the block sizes used to
generate it and whoever generates it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from implicit_rmt.errors import ParameterError

SEED_LIMIT = 2**64
"""Seeds are integers in ``[0, SEED_LIMIT)``; they fill one 64-bit word of the key."""

_DTYPES = ("float64", "float32")


def check_seed(seed: object, parameter: str = "seed") -> int:
    """Return ``seed`` if it is an integer in ``[0, 2**64)``; raise otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ParameterError(parameter, seed, "an integer in [0, 2**64)")
    if not 0 <= int(seed) < SEED_LIMIT:
        raise ParameterError(parameter, seed, "an integer in [0, 2**64)")
    return int(seed)


def sphere_column(seed: int, column: int, d: int) -> npt.NDArray[np.float64]:
    """Return column ``column`` of the data matrix, uniform on :math:`S^{d-1}`.

    Parameters
    ----------
    seed
        Seed of the data set, in ``[0, 2**64)``.
    column
        Column index :math:`j \\ge 0`.
    d
        Dimension of the ambient space.

    Returns
    -------
    numpy.ndarray
        Shape ``(d,)``, float64, unit Euclidean norm.
    """
    generator = np.random.Generator(
        np.random.Philox(key=np.array([seed, column], dtype=np.uint64))
    )
    gaussian = generator.standard_normal(d)
    norm = float(np.sqrt(np.dot(gaussian, gaussian)))
    return gaussian / norm


def sphere_columns(
    seed: int,
    d: int,
    start: int,
    stop: int,
    dtype: str = "float64",
) -> npt.NDArray[np.floating]:
    """Return columns ``start:stop`` of the data matrix :math:`X`.

    Parameters
    ----------
    seed
        Seed of the data set, in ``[0, 2**64)``.
    d
        Dimension of the ambient space (number of rows of :math:`X`).
    start, stop
        Column range, ``0 <= start <= stop``.
    dtype
        ``"float64"`` or ``"float32"``. Columns are always drawn and normalised in
        float64; float32 is the rounding of the float64 columns.

    Returns
    -------
    numpy.ndarray
        Shape ``(d, stop - start)``, of the requested dtype, C order; every column
        has unit norm (to the rounding of ``dtype``).
    """
    seed = check_seed(seed)
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ParameterError("d", d, "a positive integer")
    if not 0 <= start <= stop:
        raise ParameterError("start, stop", (start, stop), "0 <= start <= stop")
    if dtype not in _DTYPES:
        raise ParameterError("dtype", dtype, "'float64' or 'float32'")

    block = np.empty((d, stop - start), dtype=np.float64)
    for offset, column in enumerate(range(start, stop)):
        block[:, offset] = sphere_column(seed, column, d)
    return block.astype(dtype, copy=False)
