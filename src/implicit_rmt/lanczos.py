"""Block Lanczos with full reorthogonalisation, thick restarts and certificates.

The solver builds an orthonormal basis ``Q`` of a block Krylov space of a
symmetric operator ``A`` one block per pass, keeps ``AQ`` next to it, and runs
Rayleigh–Ritz on ``H = QᵀAQ`` on a schedule of passes (docs/solver.md, equations
(2)–(4)). Ritz residuals are computed directly as ``AQs − θQs``, so loss of
orthogonality or rounding in the products cannot make a certificate look better
than it is. When the basis reaches its size limit it is restarted thickly: the
Ritz vectors at both ends of the spectrum are kept together with their products,
and the Krylov process continues from the current residual block (equation (5)).

Certificates (docs/solver.md, section "Certificates"): for each end, the Ritz
value ``θ`` comes with a half-width ``min(‖r‖, ‖R_k‖²/δ_k) + rounding`` —
equations (6)–(8). The operator norm is the midpoint of the interval (9), whose
lower end is ``max(θ₁, −θ_min)`` by interlacing, with that interval's half-width.
The solver stops when that half-width is at most ``tol`` times the norm, or
raises :class:`~implicit_rmt.errors.ConvergenceError` carrying the partial
:class:`LanczosResult` when the pass limit is reached.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.linalg

from implicit_rmt.errors import ConvergenceError, ParameterError
from implicit_rmt.operators import SymmetricOperator

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

_EPS = float(np.finfo(np.float64).eps)
_DEFAULT_BASIS_BYTES = 1 << 30


@dataclass(frozen=True)
class EndBound:
    """A Ritz value at one end of the spectrum and its certified half-width.

    ``value`` is the extreme Ritz value; the extreme eigenvalue lies in
    ``[value − bound, value + bound]`` (docs/solver.md, equations (6)–(8), under
    the assumption stated there for the outer side).
    """

    value: float
    bound: float
    residual: float


@dataclass(frozen=True)
class LanczosResult:
    """What the solver found.

    Attributes
    ----------
    norm, norm_bound
        ``‖A‖₂`` and its certified half-width (equation (9)).
    lambda_max, lambda_min
        The extreme eigenvalues, each with its half-width.
    passes
        Products ``A @ V`` computed, each one pass over the matrix.
    converged
        Whether ``norm_bound ≤ tol · norm`` was reached.
    basis_size, restarts
        Final basis dimension and number of thick restarts.
    ritz_values
        Ritz values of the final basis at both ends (b + 1 from each; every one
        when the basis has at most 4(b + 1) columns), ascending.
    """

    norm: float
    norm_bound: float
    lambda_max: EndBound
    lambda_min: EndBound
    passes: int
    converged: bool
    basis_size: int
    restarts: int
    ritz_values: FloatArray

    def as_dict(self) -> dict[str, Any]:
        """Return the scalar fields as a JSON-serialisable dict."""
        out = asdict(self)
        out.pop("ritz_values")
        return out


def _orthonormalise(
    block: FloatArray,
    basis: FloatArray,
    drop: float,
    coefficients: FloatArray | None = None,
) -> FloatArray:
    """Orthogonalise ``block`` against ``basis`` twice, then orthonormalise it.

    Columns whose component outside ``basis`` has norm at most ``drop`` are
    removed (rank deficiency: the Krylov space has become invariant in those
    directions). Returns an (n, k) array with orthonormal columns, ``k ≤ b``.
    ``coefficients``, when given, is ``basisᵀ block`` already computed (the new
    column of ``H``), and saves the first of the products.
    """
    longest = float(np.max(np.linalg.norm(block, axis=0))) if block.size else 0.0
    # Two passes of classical Gram–Schmidt against the basis ("twice is enough").
    for sweep in range(2):
        if basis.shape[1]:
            if sweep == 0 and coefficients is not None:
                block = block - basis @ coefficients
            else:
                block = block - basis @ (basis.T @ block)
    if block.shape[1] == 0:
        return block
    left, singular, _ = np.linalg.svd(block, full_matrices=False)
    kept_values = singular[singular > drop]
    kept = left[:, : kept_values.size]
    # The SVD's error on a direction of singular value σ is bounded only by
    # ε·‖block‖/σ, in any direction, the basis included: one more pass when a
    # kept direction is ten times shorter than the longest column was. (Measured,
    # the SVD stays orthogonal to the basis to 1e-16 even for σ_min/σ_max = 1e-13,
    # so this is a safeguard that seldom runs.)
    if basis.shape[1] and kept.shape[1] and kept_values[-1] < 0.1 * longest:
        kept = kept - basis @ (basis.T @ kept)
        kept, _ = np.linalg.qr(kept)
    return np.ascontiguousarray(kept)


def _ritz_pairs(projected: FloatArray, ends: int) -> tuple[FloatArray, FloatArray]:
    """Ritz pairs of the symmetric ``projected`` (m × m) at both ends, ascending.

    Returns the ``ends`` smallest and the ``ends`` largest eigenvalues with their
    eigenvectors (all of them when ``m ≤ 4·ends``), as ``(theta, vectors)`` with
    ``theta`` ascending: the bottom end first, the top end last. Two selected-index
    LAPACK calls cost about 60 % of one full ``eigh`` with vectors (0.069 s against
    0.109 s at m = 736), and the solver needs no interior pair.
    """
    m = projected.shape[0]
    if m <= 4 * ends:
        theta, vectors = scipy.linalg.eigh(projected)
        return theta, vectors
    low, low_vectors = scipy.linalg.eigh(projected, subset_by_index=[0, ends - 1])
    high, high_vectors = scipy.linalg.eigh(projected, subset_by_index=[m - ends, m - 1])
    return np.concatenate([low, high]), np.hstack([low_vectors, high_vectors])


def _end_bound(theta: FloatArray, residual_block: FloatArray) -> EndBound:
    """Certificate for the extreme eigenvalue at one end (equations (6)–(8)).

    Parameters
    ----------
    theta
        Ritz values ordered from the extreme inwards, shape (k,).
    residual_block
        Residuals ``AQs_i − θ_i Qs_i`` in the same order, shape (n, k).
    """
    # ‖R_c‖₂² is the largest eigenvalue of the leading c×c block of RᵀR.
    gram = residual_block.T @ residual_block
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    best = float(norms[0])
    # Quadratic (gap) bound for the leading cluster of size c: the next Ritz value
    # plus its residual bounds the rest of the spectrum from the inside. The
    # cluster bound uses the smallest cluster member, equation (7).
    for c in range(1, theta.size):
        gap = abs(theta[c - 1] - theta[c]) - norms[c]
        if gap <= 0.0:
            continue
        cluster_norm2 = float(np.linalg.eigvalsh(gram[:c, :c])[-1])
        best = min(best, max(cluster_norm2, 0.0) / gap)
    return EndBound(value=float(theta[0]), bound=best, residual=float(norms[0]))


def _norm_interval(
    upper: EndBound, lower: EndBound, rounding: float
) -> tuple[float, float]:
    """``‖A‖₂`` as the midpoint of the interval (9), and that interval's half-width.

    By interlacing each extreme Ritz value lies inside the spectrum (up to
    ``rounding``), so the interval's lower end is ``max(θ₁, −θ_min) − rounding``;
    the ends' half-widths bound it from above.
    """
    low = max(max(upper.value, -lower.value) - rounding, 0.0)
    high = max(upper.value + upper.bound, -(lower.value - lower.bound), low)
    return (low + high) / 2, (high - low) / 2


def _certify(
    theta: FloatArray,
    vectors: FloatArray,
    basis: FloatArray,
    products: FloatArray,
    size: int,
    b: int,
    n: int,
    scale: float,
    tol: float,
) -> LanczosResult:
    """Certificates at both ends of the Ritz spectrum (equations (4), (6)–(9))."""
    ends = min(size, b + 1)
    top_vectors = vectors[:, ::-1][:, :ends]
    bottom_vectors = vectors[:, :ends]
    top_res = products[:, :size] @ top_vectors - basis[:, :size] @ (
        top_vectors * theta[::-1][:ends]
    )
    bottom_res = products[:, :size] @ bottom_vectors - basis[:, :size] @ (
        bottom_vectors * theta[:ends]
    )
    # Rounding in A@V, in H and in the residual itself: eps·√n·‖A‖ per entry
    # sum, with a factor 8 of slack (equation (8)).
    rounding = 8.0 * _EPS * math.sqrt(n) * scale
    upper = _end_bound(theta[::-1][:ends], top_res)
    lower = _end_bound(theta[:ends], bottom_res)
    upper = EndBound(upper.value, upper.bound + rounding, upper.residual)
    lower = EndBound(lower.value, lower.bound + rounding, lower.residual)
    norm, half_width = _norm_interval(upper, lower, rounding)
    logger.debug(
        "basis %d: norm %.17g ± %.3g (relative %.3g), λ ∈ [%.12g, %.12g]",
        size,
        norm,
        half_width,
        half_width / norm if norm else 0.0,
        lower.value,
        upper.value,
    )
    return LanczosResult(
        norm=norm,
        norm_bound=half_width,
        lambda_max=upper,
        lambda_min=lower,
        passes=0,
        converged=bool(half_width <= tol * norm),
        basis_size=size,
        restarts=0,
        ritz_values=theta.copy(),
    )


def _next_check(
    history: list[tuple[int, float]], passes: int, result: LanczosResult, tol: float
) -> int:
    """Pass at which to run Rayleigh–Ritz next.

    Rayleigh–Ritz costs O(m³) for a basis of m columns; late in a run that can
    exceed a pass. From the rate at which log(bound/norm) fell between the last
    two checks, skip 30 % of the passes still predicted (at most 8), so the
    checks thin out geometrically and stop at most a few passes late.
    """
    relative = result.norm_bound / result.norm if result.norm > 0 else 1.0
    history.append((passes, math.log(max(relative, 1e-300))))
    if len(history) < 2:
        return passes + 1
    (before, log_before), (now, log_now) = history[-2], history[-1]
    rate = (log_before - log_now) / max(now - before, 1)
    if rate <= 0:
        return passes + 1
    remaining = (log_now - math.log(tol)) / rate
    return passes + max(1, min(8, int(0.3 * remaining)))


def default_basis_limit(n: int, block_size: int) -> int:
    """Largest basis (columns) whose ``Q`` and ``AQ`` fit in 1 GiB, within [4b, n]."""
    by_memory = _DEFAULT_BASIS_BYTES // (16 * max(n, 1))
    return int(min(n, max(4 * block_size, min(64 * block_size, by_memory))))


def extreme_eigenvalues(
    operator: SymmetricOperator,
    *,
    tol: float = 1e-10,
    block_size: int = 16,
    max_passes: int = 200,
    max_basis: int | None = None,
    seed: int = 0,
) -> LanczosResult:
    """Certified extreme eigenvalues and operator norm of a symmetric operator.

    Parameters
    ----------
    operator
        Symmetric operator of shape (n, n) with ``matmat`` on float64 (n, b)
        blocks (see :mod:`implicit_rmt.operators`).
    tol
        Relative tolerance on the norm: stop when the half-width of equation (9)
        is at most ``tol · ‖A‖₂``. Must lie in ``[1e-15, 1)``.
    block_size
        Vectors per pass ``b`` (reduced to ``n`` when ``n < b``).
    max_passes
        Pass limit; reaching it raises :class:`ConvergenceError` with the
        partial result in ``.partial``.
    max_basis
        Basis size that triggers a thick restart; default from
        :func:`default_basis_limit`.
    seed
        Seed of the Gaussian start block (reproducible runs).

    Returns
    -------
    LanczosResult

    Raises
    ------
    ParameterError
        On invalid arguments, before any pass.
    ConvergenceError
        When ``max_passes`` passes did not reach ``tol``.

    Notes
    -----
    Implements docs/solver.md, equations (2)–(9). Each pass costs one product of
    ``A`` with ``b`` vectors plus ``O(n·m·b)`` flops for reorthogonalisation,
    ``m`` the basis size.
    """
    n = int(operator.shape[0])
    if not (isinstance(tol, float | int) and 1e-15 <= tol < 1):
        raise ParameterError("tol", tol, "a number in [1e-15, 1)")
    if (
        isinstance(block_size, bool)
        or not isinstance(block_size, int)
        or block_size < 1
    ):
        raise ParameterError("block_size", block_size, "an integer ≥ 1")
    if (
        isinstance(max_passes, bool)
        or not isinstance(max_passes, int)
        or max_passes < 1
    ):
        raise ParameterError("max_passes", max_passes, "an integer ≥ 1")
    b = min(block_size, n)
    limit = default_basis_limit(n, b) if max_basis is None else int(max_basis)
    if not (min(n, 3 * b) <= limit <= n):
        raise ParameterError(
            "max_basis",
            max_basis,
            f"an integer in [{min(n, 3 * b)}, {n}] (three blocks up to n)",
            "Lower --block-size or raise the basis limit.",
        )
    keep_per_end = max(1, min(b, limit // 4))

    ## Start block: Gaussian, seeded, orthonormalised.
    rng = np.random.default_rng(seed)
    basis = np.empty((n, limit))
    products = np.empty((n, limit))
    projected = np.empty((limit, limit))
    size = 0
    block = _orthonormalise(rng.standard_normal((n, b)), basis[:, :0], 0.0)
    scale = 0.0
    restarts = 0
    result: LanczosResult | None = None

    next_check = 1
    history: list[tuple[int, float]] = []
    theta = np.zeros(0)
    vectors = np.zeros((0, 0))

    while True:
        ## One pass: the product of the new block, appended to the basis.
        image = operator.matmat(block)
        k = block.shape[1]
        basis[:, size : size + k] = block
        products[:, size : size + k] = image
        projected[: size + k, size : size + k] = basis[:, : size + k].T @ image
        projected[size : size + k, :size] = projected[:size, size : size + k].T
        size += k
        scale = max(scale, float(np.linalg.norm(image)))
        passes = operator.passes
        must_check = (
            passes >= next_check
            or passes >= max_passes
            or size + b > limit
            or size >= n
        )
        if must_check:
            ## Rayleigh–Ritz and certificates at both ends (equations (3)–(9)).
            small = projected[:size, :size]
            theta, vectors = _ritz_pairs((small + small.T) / 2, min(size, b + 1))
            scale = max(scale, float(np.max(np.abs(theta))))
            result = _certify(theta, vectors, basis, products, size, b, n, scale, tol)
            result = replace(result, passes=passes, restarts=restarts)
            if result.converged or size >= n:
                return replace(result, converged=True)
            if passes >= max_passes:
                raise ConvergenceError(
                    f"block Lanczos stopped at the pass limit max_passes={max_passes}"
                    f" with ‖A‖₂ = {result.norm:.12g} ± {result.norm_bound:.3g} "
                    f"(relative {result.norm_bound / max(result.norm, 1e-300):.3g}, "
                    f"asked {tol:g}); raise --max-passes or --block-size",
                    partial=result,
                )
            next_check = _next_check(history, passes, result, tol)

        ## Next block: new Krylov directions (orthogonal to the whole current
        ## basis, hence to any Ritz vectors kept below), refilled at random after
        ## deflation.
        drop = 64.0 * _EPS * math.sqrt(n) * max(scale, 1e-300)
        candidate = _orthonormalise(
            image, basis[:, :size], drop, projected[:size, size - k : size]
        )

        ## Thick restart when the next block would not fit: keep both ends.
        if size + b > limit:
            keep = min(size, 2 * keep_per_end)
            chosen = np.r_[
                np.arange(keep_per_end),
                np.arange(theta.size - keep_per_end, theta.size),
            ]
            chosen = np.unique(chosen)[:keep]
            ritz = vectors[:, chosen]
            basis[:, : chosen.size] = basis[:, :size] @ ritz
            products[:, : chosen.size] = products[:, :size] @ ritz
            projected[: chosen.size, : chosen.size] = np.diag(theta[chosen])
            size = chosen.size
            restarts += 1
            logger.debug("thick restart %d keeps %d Ritz vectors", restarts, size)

        room = min(b, n - size)
        if candidate.shape[1] > room:
            candidate = candidate[:, :room]
        if candidate.shape[1] < room:
            filler = rng.standard_normal((n, room - candidate.shape[1]))
            candidate = np.hstack([candidate, filler])
            candidate = _orthonormalise(candidate, basis[:, :size], 1e-8)
        if candidate.shape[1] == 0 and result is not None:
            # The basis spans the whole space: Rayleigh–Ritz is exact already.
            return replace(result, converged=True)
        block = candidate
