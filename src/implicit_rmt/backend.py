"""Array backends of the kernel build, and the tile arithmetic written once for all.

The arithmetic of a tile is written against the array API standard (through
``array-api-compat``), so the same code runs on NumPy arrays (backend ``numpy``),
on CuPy arrays on a GPU (backend ``cupy``) and on ``array_api_strict`` arrays, which
the tests use to prove that nothing NumPy-specific slipped in. Data move between the
host and the device only at the edges: :func:`to_device` before the arithmetic,
:func:`to_host` before a write.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from array_api_compat import array_namespace, is_cupy_namespace

from implicit_rmt.errors import ParameterError

logger = logging.getLogger(__name__)

BACKENDS = ("numpy", "cupy")

SLAB_ENTRIES = 16384
"""Entries per slab when the entry maps run on a CPU: 128 KiB of float64, so that
the dozens of elementwise passes of a map stay in the core's L2 cache instead of
streaming the whole tile from memory each time. On a 2048 × 2048 tile this made
the maps 5-15 times faster (timed against one whole-tile call, same bits)."""


class EntryMap(Protocol):
    """What the tile arithmetic needs of a kernel: its entry maps on an array."""

    def entries(self, t: Any, kernels: Sequence[str] = ...) -> dict[str, Any]:
        """Return ``{name: map(t)}`` for each kernel name, in ``t``'s namespace."""
        ...


def check_backend(backend: str) -> None:
    """Raise :class:`ParameterError` unless ``backend`` can run here.

    ``numpy`` always can; ``cupy`` needs CuPy and at least one CUDA device.
    """
    if backend not in BACKENDS:
        raise ParameterError("backend", backend, f"one of {', '.join(BACKENDS)}")
    if backend == "cupy":
        try:
            import cupy
        except ImportError as error:
            raise ParameterError(
                "backend",
                backend,
                "CuPy to be installed",
                "Install the GPU extra: pip install 'implicit-rmt[gpu]'.",
            ) from error
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except cupy.cuda.runtime.CUDARuntimeError as error:
            raise ParameterError(
                "backend", backend, f"a usable CUDA device ({error})"
            ) from error
        if count < 1:
            raise ParameterError("backend", backend, "a CUDA device; none is present")


def to_device(block: npt.NDArray[np.floating], backend: str) -> Any:
    """Move a host block to the array type of ``backend``.

    Parameters
    ----------
    block
        Any shape, float32 or float64, on the host.
    backend
        ``"numpy"`` (returned as is) or ``"cupy"`` (copied to the current GPU).
    """
    if backend == "cupy":
        import cupy

        return cupy.asarray(block)
    return block


def to_host(array: Any) -> npt.NDArray[np.floating]:
    """Return ``array`` as a NumPy array on the host (a copy only if it is on a GPU)."""
    if type(array).__module__.startswith("cupy"):
        return array.get()  # type: ignore[no-any-return]
    return np.asarray(array)


def tile_entries(
    kernel: EntryMap,
    rows: Any,
    columns: Any,
    kernels: Sequence[str],
    *,
    diagonal: bool,
) -> dict[str, Any]:
    """Compute the kernel entries of one tile from two column blocks of the data.

    The tile is :math:`T = X_I^\\top X_J`, the inner products of the data points of
    blocks :math:`I` and :math:`J`; each kernel is its entry map applied to
    :math:`T`: :math:`g(t)` and :math:`\\theta(t)` of docs/theory.md, equations (11)
    and (12), by their certified fast maps (``ImplicitKernel.entries``).

    Parameters
    ----------
    kernel
        An ``ImplicitKernel`` (anything with ``entries(t, kernels)``).
    rows
        :math:`X_I`, shape ``(d, b_I)``, float32 or float64, any array-API array.
    columns
        :math:`X_J`, shape ``(d, b_J)``, same namespace and dtype as ``rows``.
    kernels
        Kernel names to compute, e.g. ``("ck", "ntk")``.
    diagonal
        True when :math:`I = J`. The tile is then symmetrised,
        :math:`T \\leftarrow (T + T^\\top)/2`, so that the stored kernel is exactly
        symmetric (a GEMM does not guarantee it bitwise), and its diagonal is set
        to :math:`x_i^\\top x_i = 1`, as ``ImplicitKernel.dense`` does.

    Returns
    -------
    dict
        ``{name: tile}`` with tiles of shape ``(b_I, b_J)``, in the namespace and
        dtype of the inputs.

    Notes
    -----
    On a CPU the maps are applied to slabs of :data:`SLAB_ENTRIES` entries, which
    keeps their elementwise passes in cache; the result does not depend on the
    slab size, since every entry is mapped on its own.

    The data points lie on the unit sphere, so :math:`|T_{ab}| \\le 1` in exact
    arithmetic; entries that rounding pushes a few ulps past :math:`\\pm 1` are
    left to ``kernel.entries``, which maps them to :math:`f(\\pm 1)`.
    """
    xp = array_namespace(rows, columns)

    # Step 1: inner products, one GEMM.
    t = xp.matmul(xp.matrix_transpose(rows), columns)
    if diagonal:
        t = (t + xp.matrix_transpose(t)) / 2
        identity = xp.eye(t.shape[0], dtype=t.dtype)
        t = xp.where(identity == 1, xp.ones_like(t), t)

    # Step 2: the entry maps of the kernels, slab by slab of rows on a CPU.
    kernels = tuple(kernels)
    if is_cupy_namespace(xp):
        return kernel.entries(t, kernels)
    height, width = t.shape
    step = max(1, SLAB_ENTRIES // max(width, 1))
    out = {name: xp.empty((height, width), dtype=t.dtype) for name in kernels}
    for start in range(0, height, step):
        stop = min(start + step, height)
        slab = kernel.entries(t[start:stop, :], kernels)
        for name in kernels:
            out[name][start:stop, :] = slab[name]
    return out
