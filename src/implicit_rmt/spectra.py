"""Spectra of stored kernels, and the limiting density of the equivalent.

* :func:`dense_eigenvalues` — every eigenvalue by LAPACK ``eigvalsh`` (moderate n);
* :func:`lanczos_density` — the spectral density by stochastic Lanczos quadrature
  (SLQ) with an empirical standard error per bin (docs/solver.md, equations
  (10)–(12));
* :func:`marchenko_pastur_density` and :func:`equivalent_outlier` — the bulk
  ``βXᵀX + μI`` (a scaled and shifted Marchenko–Pastur law of ratio n/d) and the
  outlier created by ``α11ᵀ`` (equations (13)–(14)), for overlays.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.linalg

from implicit_rmt.errors import ParameterError
from implicit_rmt.operators import SymmetricOperator

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]

DEFAULT_DENSE_MAX = 4096


def dense_eigenvalues(matrix: FloatArray) -> FloatArray:
    """All eigenvalues of a symmetric matrix, ascending.

    Parameters
    ----------
    matrix
        Array of shape (n, n), float64; its upper triangle is used.

    Returns
    -------
    numpy.ndarray
        Shape (n,), float64.
    """
    return np.asarray(
        scipy.linalg.eigvalsh(matrix, lower=False, check_finite=True),
        dtype=np.float64,
    )


@dataclass(frozen=True)
class Density:
    """A spectral density estimated by stochastic Lanczos quadrature.

    Attributes
    ----------
    edges
        Bin edges, shape (bins + 1,), float64.
    density
        Mean density per bin (integrates to one), shape (bins,), float64.
    stderr
        Standard error of ``density`` over the probe vectors, shape (bins,).
    nodes, weights
        Gauss quadrature nodes and weights per probe, shape (probes, steps).
    """

    edges: FloatArray
    density: FloatArray
    stderr: FloatArray
    nodes: FloatArray
    weights: FloatArray


def _probe_lanczos(
    operator: SymmetricOperator, probes: FloatArray, steps: int
) -> tuple[FloatArray, FloatArray]:
    """Run one Lanczos recurrence per probe column, all probes in each pass.

    Returns the tridiagonal diagonals ``a`` (probes, steps) and off-diagonals
    ``b`` (probes, steps − 1); full reorthogonalisation within each column's
    basis keeps the quadrature nodes free of spurious copies.
    """
    n, count = probes.shape
    basis = np.zeros((steps, n, count))
    diagonal = np.zeros((count, steps))
    offdiagonal = np.zeros((count, max(steps - 1, 0)))
    current = probes / np.linalg.norm(probes, axis=0)
    previous = np.zeros_like(current)
    beta_prev = np.zeros(count)
    active = np.ones(count, dtype=bool)
    for step in range(steps):
        basis[step] = current
        image = operator.matmat(current)
        alpha = np.einsum("ij,ij->j", current, image)
        diagonal[:, step] = alpha
        image -= current * alpha + previous * beta_prev
        # Twice against every earlier vector of the same column.
        for _ in range(2):
            overlap = np.einsum("kij,ij->kj", basis[: step + 1], image)
            image -= np.einsum("kij,kj->ij", basis[: step + 1], overlap)
        if step == steps - 1:
            break
        beta = np.linalg.norm(image, axis=0)
        # A column whose Krylov space is exhausted stops contributing nodes.
        active &= beta > 1e-12 * np.maximum(np.abs(diagonal).max(axis=1), 1e-300)
        offdiagonal[:, step] = np.where(active, beta, 0.0)
        previous = current
        current = np.where(active, image / np.where(active, beta, 1.0), 0.0)
        beta_prev = offdiagonal[:, step]
    return diagonal, offdiagonal


def lanczos_density(
    operator: SymmetricOperator,
    *,
    probes: int = 16,
    steps: int = 80,
    bins: int = 200,
    seed: int = 0,
    limits: tuple[float, float] | None = None,
) -> Density:
    """Spectral density by stochastic Lanczos quadrature (equations (10)–(12)).

    Parameters
    ----------
    operator
        Symmetric operator of shape (n, n).
    probes
        Number of Rademacher probe vectors ``v_l`` (all multiplied in one pass).
    steps
        Lanczos steps per probe (passes over the matrix); quadrature with ``m``
        nodes is exact for polynomials of degree ``2m − 1``.
    bins
        Number of histogram bins.
    seed
        Seed of the probe vectors.
    limits
        Histogram range; default the span of all nodes.

    Returns
    -------
    Density
        Histogram of the quadrature measure averaged over probes, with the
        standard error of the mean per bin (equation (12)).
    """
    n = int(operator.shape[0])
    for name, value in (("probes", probes), ("steps", steps), ("bins", bins)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ParameterError(name, value, "an integer ≥ 1")
    steps = min(steps, n)
    rng = np.random.default_rng(seed)
    vectors = rng.choice(np.array([-1.0, 1.0]), size=(n, probes))
    diagonal, offdiagonal = _probe_lanczos(operator, vectors, steps)

    nodes = np.zeros((probes, steps))
    weights = np.zeros((probes, steps))
    for probe in range(probes):
        values, eigvecs = scipy.linalg.eigh_tridiagonal(
            diagonal[probe], offdiagonal[probe]
        )
        nodes[probe] = values
        weights[probe] = eigvecs[0] ** 2
    if limits is None:
        spread = max(float(nodes.max() - nodes.min()), 1e-12)
        limits = (
            float(nodes.min()) - 1e-3 * spread,
            float(nodes.max()) + 1e-3 * spread,
        )
    edges = np.linspace(limits[0], limits[1], bins + 1)
    width = np.diff(edges)
    per_probe = np.stack(
        [
            np.histogram(nodes[p], bins=edges, weights=weights[p])[0] / width
            for p in range(probes)
        ]
    )
    density = per_probe.mean(axis=0)
    stderr = (
        per_probe.std(axis=0, ddof=1) / math.sqrt(probes)
        if probes > 1
        else np.full(bins, np.inf)
    )
    logger.info("SLQ: %d probes × %d steps on n = %d", probes, steps, n)
    return Density(edges, density, stderr, nodes, weights)


def marchenko_pastur_density(
    x: FloatArray, ratio: float, beta: float = 1.0, mu: float = 0.0
) -> tuple[FloatArray, float]:
    """Limiting density of ``βXᵀX + μI`` for X (d, n) with unit-norm columns.

    Parameters
    ----------
    x
        Points where the density is evaluated, any shape, float64.
    ratio
        ``γ = n/d`` (> 0).
    beta
        Scale ``β`` (nonzero).
    mu
        Shift ``μ``.

    Returns
    -------
    density : numpy.ndarray
        The absolutely continuous part at ``x`` (same shape), equation (13).
    atom : float
        Mass ``max(0, 1 − 1/γ)`` of the atom at ``μ`` (the n − d zero
        eigenvalues of XᵀX when n > d).
    """
    if not ratio > 0:
        raise ParameterError("ratio", ratio, "n/d > 0")
    if beta == 0:
        raise ParameterError("beta", beta, "a nonzero scale")
    lower = (1 - math.sqrt(ratio)) ** 2
    upper = (1 + math.sqrt(ratio)) ** 2
    t = (np.asarray(x, dtype=np.float64) - mu) / beta
    inside = (t > lower) & (t < upper)
    safe = np.where(inside, t, 1.0)
    values = np.sqrt(np.clip((upper - safe) * (safe - lower), 0.0, None)) / (
        2 * math.pi * ratio * safe
    )
    density = np.where(inside, values, 0.0) / abs(beta)
    return density, max(0.0, 1.0 - 1.0 / ratio)


def marchenko_pastur_support(
    ratio: float, beta: float = 1.0, mu: float = 0.0
) -> tuple[float, float]:
    """Edges of the continuous part of equation (13), ascending."""
    ends = (
        mu + beta * (1 - math.sqrt(ratio)) ** 2,
        mu + beta * (1 + math.sqrt(ratio)) ** 2,
    )
    return (min(ends), max(ends))


def equivalent_outlier(n: int, alpha: float, beta: float, mu: float) -> float:
    """First-order location ``αn + β + μ`` of the outlier of ``K̄`` (equation (14))."""
    return alpha * n + beta + mu
