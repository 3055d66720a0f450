"""Symmetric linear operators that multiply a block of vectors per pass.

The solver (:mod:`implicit_rmt.lanczos`) needs only ``shape``, ``dtype``,
``matmat(V)`` and a count of passes. Three kinds are provided:

* :class:`DenseOperator` — an in-memory symmetric matrix (tests, references);
* :class:`TiledOperator` — a sum of tiled n×n terms, each tile read from a Zarr
  array (:class:`StoredTiles`) or computed on the fly from the data
  (:class:`ExplicitTiles`), plus optionally the implicit equivalent
  :class:`LowRankShift` ``α 1(1ᵀV) + β Xᵀ(XV) + μV``. The difference
  ``(K* − K̄)V`` is one such sum, applied in one pass over the tiles.

Symmetry and I/O: a pass reads only the tiles on and above the diagonal
(``I ≤ J``) and uses each off-diagonal tile twice, ``Y_I += A_IJ V_J`` and
``Y_J += A_IJᵀ V_I``; the strict lower triangle of a diagonal tile is replaced
by its upper triangle. The operator applied is therefore exactly symmetric (the
upper triangle of the stored array mirrored), and a pass reads half the array.

Distribution: the upper tiles are split into contiguous groups of near-equal
count, one Dask task per group. ``V`` is scattered (broadcast) once per pass, each
task reads its tiles and returns its partial ``(n, b)`` product, the client sums
them in a fixed order. The low-rank part runs on the workers too, as two task
stages ahead of the tiles (``XV`` over column groups of ``X``, then ``Xᵀ(XV)``),
with the groups of ``X`` kept in the workers' memory when ``X`` fits
:attr:`LowRankShift.cache_bytes` and read by each task otherwise. Without a client
everything runs in this process, in order. Memory is ``O(n·b)`` per task plus one
tile, never ``O(n²)``.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from implicit_rmt.errors import ParameterError, StoreError

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
EntryMap = Callable[[FloatArray], FloatArray]


class SymmetricOperator(Protocol):
    """What the solver needs from a symmetric n×n linear operator."""

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        ...

    @property
    def passes(self) -> int:
        """Number of calls to :meth:`matmat` so far (passes over the matrix)."""
        ...

    def matmat(self, block: FloatArray) -> FloatArray:
        """Return ``A @ block`` for ``block`` of shape (n, b), float64."""
        ...


def _check_block(block: FloatArray, n: int) -> FloatArray:
    """Return ``block`` as float64 (n, b), or raise naming the shape received."""
    block = np.asarray(block, dtype=np.float64)
    if block.ndim != 2 or block.shape[0] != n:
        raise ParameterError(
            "block", f"array of shape {block.shape}", f"an array of shape ({n}, b)"
        )
    return block


class DenseOperator:
    """An in-memory symmetric matrix as an operator.

    Parameters
    ----------
    matrix
        Array of shape (n, n), any real dtype (used as float64). It must be
        symmetric to rounding; only its upper triangle is used, mirrored, so the
        operator is exactly symmetric (the same convention as
        :class:`TiledOperator`).
    """

    def __init__(self, matrix: npt.ArrayLike) -> None:
        array = np.asarray(matrix, dtype=np.float64)
        if array.ndim != 2 or array.shape[0] != array.shape[1]:
            raise ParameterError(
                "matrix", f"array of shape {array.shape}", "a square (n, n) array"
            )
        self._matrix = np.triu(array) + np.triu(array, 1).T
        self._passes = 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        n = self._matrix.shape[0]
        return (n, n)

    @property
    def passes(self) -> int:
        """Number of products computed so far."""
        return self._passes

    def matmat(self, block: FloatArray) -> FloatArray:
        """Return ``A @ block``; ``block`` has shape (n, b), float64."""
        block = _check_block(block, self.shape[0])
        self._passes += 1
        return self._matrix @ block


# -- tile sources ---------------------------------------------------------------


def _writable(values: FloatArray) -> FloatArray:
    """``values`` itself if it may be modified in place, else a copy."""
    return values if values.flags.writeable else values.copy()


@functools.lru_cache(maxsize=64)
def _open_array(path: str, name: str) -> Any:
    """Open member ``name`` of the Zarr group at ``path`` for reading (cached)."""
    import zarr

    # Open the array itself: opening the group would list its members, among
    # them the store's ``_build`` records, which zarr warns about.
    return zarr.open_array(store=os.path.join(path, name), mode="r", zarr_format=3)


@dataclass(frozen=True)
class StoredTiles:
    """Tiles of an n×n array stored in a Zarr group.

    Parameters
    ----------
    path
        Directory of the Zarr group.
    name
        Member holding the (n, n) array (``ck`` or ``ntk``).
    """

    path: str
    name: str

    def tile(self, rows: slice, columns: slice, data: _DataBlocks) -> FloatArray:
        """Return the block ``A[rows, columns]`` as a new writable float64 array."""
        del data
        array = _open_array(self.path, self.name)
        return _writable(np.asarray(array[rows, columns], dtype=np.float64))


@dataclass(frozen=True)
class ExplicitTiles:
    """Tiles ``f(X_Iᵀ X_J)`` computed on the fly from the data, never stored.

    Parameters
    ----------
    entries
        Entry map ``t ↦ Σ(t)`` applied elementwise to Gram entries ``t = x_iᵀx_j``
        (for instance ``functools.partial(explicit_entries, match, "ck")``); must
        be picklable to travel to Dask workers.
    """

    entries: EntryMap

    def tile(self, rows: slice, columns: slice, data: _DataBlocks) -> FloatArray:
        """Return ``f(X[:, rows]ᵀ X[:, columns])`` as a new writable float64 array."""
        gram = data.columns(rows).T @ data.columns(columns)
        return _writable(np.asarray(self.entries(gram), dtype=np.float64))


TileSource = StoredTiles | ExplicitTiles


@dataclass
class _DataBlocks:
    """Column blocks of the data ``X`` (d, n) read once per task, when needed."""

    path: str | None
    cache: dict[tuple[int, int], FloatArray] = field(default_factory=dict)

    def columns(self, span: slice) -> FloatArray:
        if self.path is None:
            raise StoreError("an explicit tile source needs the data X of the store")
        key = (int(span.start), int(span.stop))
        if key not in self.cache:
            array = _open_array(self.path, "X")
            self.cache[key] = np.asarray(array[:, span], dtype=np.float64)
        return self.cache[key]


# -- one task: a group of upper tiles ---------------------------------------------


def _combined_tile(
    terms: Sequence[tuple[float, TileSource]],
    rows: slice,
    columns: slice,
    data: _DataBlocks,
) -> FloatArray:
    """Return ``Σ c_k source_k[rows, columns]``, built in the first tile's memory.

    Each source returns a fresh float64 array, so the sum is accumulated in place
    into the first one: no zero-filled buffer and no scaled copies, which on an
    8 MiB tile cost more than reading it (5 ms against 2 ms, benchmarks/lanczos.py).
    """
    (first_coefficient, first), *rest = terms
    values = first.tile(rows, columns, data)
    if first_coefficient != 1.0:
        values *= first_coefficient
    for coefficient, source in rest:
        addend = source.tile(rows, columns, data)
        if coefficient == 1.0:
            values += addend
        elif coefficient == -1.0:
            values -= addend
        else:
            addend *= coefficient
            values += addend
    return values


@functools.lru_cache(maxsize=4)
def _strict_lower_mask(size: int) -> npt.NDArray[np.bool_]:
    """Boolean mask of the strict lower triangle of a ``size × size`` tile."""
    return np.tril(np.ones((size, size), dtype=bool), -1)


def _symmetric_tile_product(values: FloatArray, block: FloatArray) -> FloatArray:
    """Return ``S @ block`` for ``S`` the upper triangle of ``values`` mirrored.

    Zeroes the strict lower triangle of ``values`` in place (leaving ``U``) and uses
    ``S = U + Uᵀ − diag(U)``: two products with the same tile, no mirrored copy.
    """
    np.putmask(values, _strict_lower_mask(values.shape[0]), 0.0)
    product: FloatArray = values @ block
    product += values.T @ block
    product -= np.diag(values)[:, None] * block
    return product


def _tile_group_product(
    tiles: Sequence[tuple[int, int]],
    terms: Sequence[tuple[float, TileSource]],
    data_path: str | None,
    tile: int,
    block: FloatArray,
) -> FloatArray:
    """Return the contribution of upper tiles ``tiles`` to ``A @ block``.

    Parameters
    ----------
    tiles
        Tile indices ``(I, J)`` with ``I ≤ J``.
    terms
        ``(coefficient, source)`` pairs, at least one; the tile used is
        ``Σ c_k source_k``.
    data_path
        Zarr group holding ``X`` (for explicit sources), or None.
    tile
        Tile edge length.
    block
        Array of shape (n, b), float64.

    Returns
    -------
    numpy.ndarray
        Shape (n, b), float64: the partial product.
    """
    n = block.shape[0]
    out = np.zeros_like(block)
    data = _DataBlocks(data_path)
    for i, j in tiles:
        rows = slice(i * tile, min((i + 1) * tile, n))
        columns = slice(j * tile, min((j + 1) * tile, n))
        values = _combined_tile(terms, rows, columns, data)
        if i == j:
            out[rows] += _symmetric_tile_product(values, block[rows])
        else:
            out[rows] += values @ block[columns]
            out[columns] += values.T @ block[rows]
    return out


def _upper_tile_groups(n_tiles: int, n_groups: int) -> list[list[tuple[int, int]]]:
    """Split the upper tiles ``I ≤ J`` into ``n_groups`` contiguous groups."""
    tiles = [(i, j) for i in range(n_tiles) for j in range(i, n_tiles)]
    n_groups = max(1, min(n_groups, len(tiles)))
    size = math.ceil(len(tiles) / n_groups)
    return [tiles[k : k + size] for k in range(0, len(tiles), size)]


# -- the equivalent ---------------------------------------------------------------

DataColumns = FloatArray | tuple[str, int, int]
"""Columns ``X[:, start:stop]``: held in memory (this process's or a worker's), or
``(path, start, stop)`` to read them from the store where they are used."""


def _data_columns(columns: DataColumns) -> FloatArray:
    """Return the column block ``columns`` stands for, as float64."""
    if isinstance(columns, np.ndarray):
        return columns
    path, start, stop = columns
    return np.asarray(_open_array(path, "X")[:, start:stop], dtype=np.float64)


@dataclass(frozen=True)
class LowRankShift:
    """The implicit equivalent ``K̄ = α 11ᵀ + β XᵀX + μI`` (never materialised).

    Parameters
    ----------
    alpha, beta, mu
        Coefficients of the equivalent (docs/solver.md, equation (1)).
    data_path
        Zarr group whose member ``X`` has shape (d, n).
    cache_bytes
        If ``X`` as float64 (``8·d·n`` bytes) fits in this many bytes it is read
        once and kept in memory; otherwise it is read one column block at a time
        in each product, twice (for ``XV``, then ``Xᵀ(XV)``), so that memory is
        ``O(d·(b + tile))``. ``0`` never caches. Either way ``K̄`` itself, of
        order n², is never formed.
    """

    alpha: float
    beta: float
    mu: float
    data_path: str
    cache_bytes: int = 1 << 30
    _cache: dict[str, FloatArray] = field(
        default_factory=dict, compare=False, repr=False
    )

    def _blocks(self) -> list[tuple[int, int, DataColumns]]:
        """Column spans ``(start, stop, columns)`` of X.

        One span holding all of X when it fits :attr:`cache_bytes` (read once),
        else one span per chunk column, read where it is used.
        """
        array = _open_array(self.data_path, "X")
        n, step = int(array.shape[1]), int(array.chunks[1])
        if self.fits_cache():
            if "X" not in self._cache:
                self._cache["X"] = _data_columns((self.data_path, 0, n))
            return [(0, n, self._cache["X"])]
        return [
            (start, min(start + step, n), (self.data_path, start, min(start + step, n)))
            for start in range(0, n, step)
        ]

    def fits_cache(self) -> bool:
        """Whether ``X`` as float64 fits :attr:`cache_bytes` (then it is kept)."""
        d, n = _open_array(self.data_path, "X").shape
        return bool(8 * d * n <= self.cache_bytes)

    def diagonal_terms(self, block: FloatArray) -> FloatArray:
        """Return ``(α 11ᵀ + μI) @ block``, the part of ``K̄V`` that needs no ``X``."""
        out: FloatArray = self.mu * block + self.alpha * block.sum(
            axis=0, keepdims=True
        )
        return out

    def apply(self, block: FloatArray) -> FloatArray:
        """Return ``K̄ @ block`` for ``block`` of shape (n, b), float64."""
        d = int(_open_array(self.data_path, "X").shape[0])
        blocks = self._blocks()
        projected = np.zeros((d, block.shape[1]))
        for start, stop, part in blocks:
            projected += _data_columns(part) @ block[start:stop]
        out = self.diagonal_terms(block)
        for start, stop, part in blocks:
            out[start:stop] += self.beta * (_data_columns(part).T @ projected)
        return out


# -- the equivalent on a cluster ----------------------------------------------------


def _project_columns(
    columns: DataColumns, block: FloatArray, start: int, stop: int
) -> FloatArray:
    """Task: ``X[:, start:stop] V[start:stop]``, one term of ``XV`` (shape (d, b))."""
    return _data_columns(columns) @ block[start:stop]


def _sum_in_order(parts: Sequence[FloatArray]) -> FloatArray:
    """Task: the sum of ``parts`` in list order (reproducible to the last bit)."""
    total = np.array(parts[0], dtype=np.float64, copy=True)
    for part in parts[1:]:
        total += part
    return total


def _back_project(columns: DataColumns, projected: FloatArray) -> FloatArray:
    """Task: ``X[:, start:stop]ᵀ (XV)``, rows ``start:stop`` of ``XᵀXV``."""
    return _data_columns(columns).T @ projected


# -- the tiled operator -------------------------------------------------------------


class TiledOperator:
    """A symmetric n×n operator ``Σ_k c_k A_k − L`` applied tile by tile.

    Parameters
    ----------
    n
        Order of the operator.
    tile
        Tile edge length (the chunk edge of the stored arrays).
    terms
        ``(coefficient, source)`` pairs of tiled terms (may be empty).
    data_path
        Zarr group holding ``X`` (d, n), needed by explicit sources.
    low_rank
        Optional equivalent subtracted (``sign=-1``) or added (``sign=+1``).
    low_rank_sign
        ``+1.0`` or ``-1.0``.
    client
        A ``distributed.Client``; without one the tiles are read in this process
        in order (the plain sequential read used as the benchmark baseline).
    tasks_per_worker
        Number of tile groups per worker thread, for load balance.

    Notes
    -----
    Each :meth:`matmat` is one pass: every upper tile read (or computed) once.
    """

    def __init__(
        self,
        n: int,
        tile: int,
        terms: Sequence[tuple[float, TileSource]],
        *,
        data_path: str | None = None,
        low_rank: LowRankShift | None = None,
        low_rank_sign: float = -1.0,
        client: Any = None,
        tasks_per_worker: int = 2,
    ) -> None:
        if n < 1:
            raise ParameterError("n", n, "a positive integer")
        if tile < 1:
            raise ParameterError("tile", tile, "a positive integer")
        if tasks_per_worker < 1:
            raise ParameterError("tasks_per_worker", tasks_per_worker, "an integer ≥ 1")
        if not terms and low_rank is None:
            raise ParameterError("terms", terms, "at least one term or a low_rank part")
        self._n = n
        self._tile = tile
        self._terms = list(terms)
        self._data_path = data_path
        self._low_rank = low_rank
        self._low_rank_sign = float(low_rank_sign)
        self._client = client
        threads = 1
        if client is not None:
            threads = max(1, sum(client.nthreads().values()))
        n_tiles = math.ceil(n / tile)
        self._threads = threads
        self._groups = _upper_tile_groups(n_tiles, threads * tasks_per_worker)
        self._data: list[tuple[int, int, Any]] | None = None
        self._passes = 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, n)``."""
        return (self._n, self._n)

    @property
    def passes(self) -> int:
        """Number of passes over the tiles so far."""
        return self._passes

    def _data_parts(self) -> list[tuple[int, int, Any]]:
        """Column groups ``(start, stop, part)`` of ``X`` for the cluster's tasks.

        One contiguous group of whole chunks per worker thread. When ``X`` fits the
        equivalent's ``cache_bytes`` each group is read once, by a task, and kept in
        that worker's memory for every later pass (``part`` is its future);
        otherwise ``part`` is ``(path, start, stop)`` and each task reads it.
        """
        if self._data is None:
            assert self._low_rank is not None and self._client is not None
            path = self._low_rank.data_path
            array = _open_array(path, "X")
            n, step = int(array.shape[1]), int(array.chunks[1])
            n_chunks = math.ceil(n / step)
            per_group = math.ceil(n_chunks / min(self._threads, n_chunks))
            spans = [
                (start, min(start + per_group * step, n))
                for start in range(0, n, per_group * step)
            ]
            keep = self._low_rank.fits_cache()
            self._data = [
                (
                    start,
                    stop,
                    self._client.submit(_data_columns, (path, start, stop), pure=False)
                    if keep
                    else (path, start, stop),
                )
                for start, stop in spans
            ]
        return self._data

    def matmat(self, block: FloatArray) -> FloatArray:
        """Return ``A @ block`` for ``block`` of shape (n, b), float64."""
        block = _check_block(block, self._n)
        self._passes += 1
        if self._client is None:
            return self._sequential_product(block)

        # Two stages for the equivalent (XV, then Xᵀ(XV)) on the workers, ahead of
        # the tiles by priority so that the second stage overlaps the tile reads.
        client = self._client
        shared = client.scatter(block, broadcast=True, hash=False)
        back: list[tuple[int, int, Any]] = []
        if self._low_rank is not None:
            parts = self._data_parts()
            projections = [
                client.submit(
                    _project_columns, part, shared, start, stop, pure=False, priority=2
                )
                for start, stop, part in parts
            ]
            projected = client.submit(
                _sum_in_order, projections, pure=False, priority=2
            )
            back = [
                (
                    start,
                    stop,
                    client.submit(
                        _back_project, part, projected, pure=False, priority=1
                    ),
                )
                for start, stop, part in parts
            ]
        tile_futures = [
            client.submit(
                _tile_group_product,
                group,
                self._terms,
                self._data_path,
                self._tile,
                shared,
                pure=False,
            )
            for group in (self._groups if self._terms else [])
        ]

        out = np.zeros_like(block)
        if self._low_rank is not None:
            sign, beta = self._low_rank_sign, self._low_rank.beta
            out += sign * self._low_rank.diagonal_terms(block)
            for (start, stop, _), rows in zip(
                back, client.gather([future for _, _, future in back]), strict=True
            ):
                out[start:stop] += (sign * beta) * rows
        for partial in client.gather(tile_futures):
            out += partial
        logger.debug("pass %d over %d tile groups", self._passes, len(self._groups))
        return out

    def _sequential_product(self, block: FloatArray) -> FloatArray:
        """One pass in this process: the equivalent, then the tile groups in order."""
        out = np.zeros_like(block)
        if self._low_rank is not None:
            out += self._low_rank_sign * self._low_rank.apply(block)
        if self._terms:
            for group in self._groups:
                out += _tile_group_product(
                    group, self._terms, self._data_path, self._tile, block
                )
        logger.debug("pass %d over %d tile groups", self._passes, len(self._groups))
        return out


def read_dense(path: str, name: str) -> FloatArray:
    """Read a whole stored (n, n) array into memory as float64 (small n only)."""
    return np.asarray(_open_array(path, name)[...], dtype=np.float64)
