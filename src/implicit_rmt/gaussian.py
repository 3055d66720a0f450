"""Gaussian expectations of products of activation derivatives.

:math:`E_k(K) = \\mathbb E[\\varphi^{(k)}(u)\\varphi^{(k)}(v)]`, where
``(u, v)`` is a centred Gaussian pair with variances ``tau`` and covariance ``K``.
By Price's theorem :math:`E_k = d^k E_0 / dK^k` (docs/theory.md, equation (5)), so
the orders 0–3 are everything the fixed point, the NTK and their Taylor
coefficients need.

Closed forms are used for relu and leaky relu (arc-cosine kernels), erf and the
quadratic (equations (7)–(9)). Every other activation goes through
:func:`quadrature_moment`: Gauss–Legendre quadrature in polar coordinates of the
whitened pair, split along the lines ``u = 0`` and ``v = 0`` so that each sector
has a smooth integrand, plus exact line and point terms for the Dirac masses of the
derivatives of kinked activations (equation (10)). The quadrature is also applied to
the closed-form activations in the tests, where it reproduces them to ~1e-14.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from implicit_rmt.activations import Activation, Derivative

FloatArray = npt.NDArray[np.float64]

CLOSED_FORMS = frozenset({"relu", "leaky_relu", "erf", "quadratic"})

# Quadrature sizes: nodes per angular sector, radial nodes, radial cut-off in units
# of the standard deviation. The weight e^{-r²/2} is below 2e-22 beyond r = 10 and
# the sizes were chosen so that every closed form is reproduced to ~1e-14 for
# τ <= 6 (tests/test_gaussian.py). Derivatives like erf' vary on the scale 1/√τ,
# so for larger τ both counts grow like √(τ/6).
_ANGULAR_NODES = 48
_RADIAL_NODES = 64
_RADIAL_CUTOFF = 10.0
_BATCH = 32


def _node_counts(tau: float) -> tuple[int, int, int]:
    """Angular and radial node counts and the batch size for variance ``tau``."""
    factor = max(1.0, math.sqrt(tau / 6.0))
    angular = 8 * math.ceil(_ANGULAR_NODES * factor / 8)
    radial = 8 * math.ceil(_RADIAL_NODES * factor / 8)
    return angular, radial, max(1, int(_BATCH / factor**2))


@lru_cache(maxsize=8)
def _legendre(count: int) -> tuple[FloatArray, FloatArray]:
    nodes, weights = np.polynomial.legendre.leggauss(count)
    return nodes, weights


def moment(
    activation: Activation,
    tau: float,
    K: npt.ArrayLike,
    order: int,
    gap: npt.ArrayLike | None = None,
) -> FloatArray:
    """Return :math:`E_k(K)` for ``k = order`` (docs/theory.md, equation (5)).

    Parameters
    ----------
    activation
        The activation φ.
    tau
        The common variance of ``u`` and ``v``, positive.
    K
        Covariances, float64 array of any shape, with ``|K| <= tau``.
    order
        The derivative order ``k`` in ``0, 1, 2, 3``.
    gap
        Optionally :math:`\\tau - K` (float64, shape of ``K``) computed without
        cancellation. The arc-cosine moments of relu and leaky relu then use
        :math:`\\theta = 2\\arcsin\\sqrt{(\\tau-K)/2\\tau}`, which keeps full
        relative accuracy as ``K → τ`` where :math:`\\arccos(K/\\tau)` does not.

    Returns
    -------
    numpy.ndarray
        float64, same shape as ``K``. Orders 2 and 3 of kinked activations are
        infinite at ``|K| = tau``.
    """
    if activation.name in CLOSED_FORMS:
        return closed_form_moment(activation, tau, K, order, gap)
    return quadrature_moment(activation, tau, K, order)


def moment_drop(activation: Activation, tau: float, gap: npt.ArrayLike) -> FloatArray:
    """:math:`E_0(\\tau) - E_0(\\tau - \\delta)` for gaps δ (float64 array).

    Exact to full relative accuracy for relu and leaky relu as δ → 0 (equation
    (7b)); for the other activations the difference of two moments.
    """
    gap = np.asarray(gap, dtype=np.float64)
    if activation.name in ("relu", "leaky_relu"):
        slope = activation.params.get("slope", 0.0)
        theta = _angle_from_gap(tau, gap)
        # E0(τ) − E0(τ − δ) = δ/2 − τ/(2π) (sin θ − θ + θ δ/τ), cos θ = 1 − δ/τ;
        # sin θ − θ by its Taylor series where it would cancel.
        small = theta < 0.1
        t2 = theta**2
        series = (
            -theta
            * t2
            / 6.0
            * (1.0 - t2 / 20.0 * (1.0 - t2 / 42.0 * (1.0 - t2 / 72.0)))
        )
        sine_minus = np.where(small, series, np.sin(theta) - theta)
        drop = 0.5 * gap - tau / (2.0 * math.pi) * (sine_minus + theta * gap / tau)
        result: FloatArray = (1.0 - slope) ** 2 * drop + slope * gap
        return result
    top = moment(activation, tau, np.array([tau]), 0)[0]
    difference: FloatArray = top - moment(activation, tau, tau - gap, 0)
    return difference


def _angle_from_gap(tau: float, gap: FloatArray) -> FloatArray:
    """:math:`\\theta = \\arccos(1 - \\delta/\\tau)` without cancellation."""
    return 2.0 * np.arcsin(np.sqrt(np.clip(gap / (2.0 * tau), 0.0, 1.0)))


def closed_form_moment(
    activation: Activation,
    tau: float,
    K: npt.ArrayLike,
    order: int,
    gap: npt.ArrayLike | None = None,
) -> FloatArray:
    """Closed forms of :math:`E_k` (docs/theory.md, equations (7)–(9)).

    Same parameters and result as :func:`moment`; only for relu, leaky relu, erf
    and the quadratic.
    """
    K = np.asarray(K, dtype=np.float64)
    name = activation.name
    if name in ("relu", "leaky_relu"):
        slope = activation.params.get("slope", 0.0)
        value = (1.0 - slope) ** 2 * _arccos_moment(tau, K, order, gap)
        if order == 0:
            value = value + slope * K
        elif order == 1:
            value = value + slope
        return value
    if name == "erf":
        scale = 1.0 + 2.0 * tau
        D = scale**2 - 4.0 * K**2
        if order == 0:
            return 2.0 / math.pi * np.arcsin(np.clip(2.0 * K / scale, -1.0, 1.0))
        if order == 1:
            return 4.0 / math.pi / np.sqrt(D)
        if order == 2:
            return 16.0 / math.pi * K / D**1.5
        return 16.0 / math.pi * (D**-1.5 + 12.0 * K**2 * D**-2.5)
    if name == "quadratic":
        a0, a1, a2 = (activation.params[key] for key in ("a0", "a1", "a2"))
        if order == 0:
            return (a0 + a2 * tau) ** 2 + a1**2 * K + 2.0 * a2**2 * K**2
        if order == 1:
            return a1**2 + 4.0 * a2**2 * K
        if order == 2:
            return np.full_like(K, 4.0 * a2**2)
        return np.zeros_like(K)
    raise ValueError(f"no closed form for activation {name!r}")


def _arccos_moment(
    tau: float, K: FloatArray, order: int, gap: npt.ArrayLike | None
) -> FloatArray:
    """Relu moments in :math:`\\theta = \\arccos(K/\\tau)` (equation (7))."""
    if gap is None:
        rho = np.clip(K / tau, -1.0, 1.0)
        theta = np.arccos(rho)
    else:
        theta = _angle_from_gap(tau, np.asarray(gap, dtype=np.float64))
        rho = np.cos(theta)
    sine = np.sin(theta)
    with np.errstate(divide="ignore"):
        if order == 0:
            return tau / (2.0 * math.pi) * (sine + (math.pi - theta) * rho)
        if order == 1:
            return (math.pi - theta) / (2.0 * math.pi)
        if order == 2:
            return 1.0 / (2.0 * math.pi * tau * sine)
        return rho / (2.0 * math.pi * tau**2 * sine**3)


def quadrature_moment(
    activation: Activation, tau: float, K: npt.ArrayLike, order: int
) -> FloatArray:
    """:math:`E_k(K)` by sector-split polar quadrature (docs/theory.md, equation (10)).

    Same parameters and result as :func:`moment`, for any activation.

    Notes
    -----
    With :math:`\\gamma = \\arccos(K/\\tau)` the pair is
    :math:`u = \\sqrt\\tau\\, r\\cos\\psi`,
    :math:`v = \\sqrt\\tau\\, r\\cos(\\psi-\\gamma)`
    with density :math:`e^{-r^2/2} r\\,dr\\,d\\psi / 2\\pi`. The lines ``u = 0`` and
    ``v = 0`` cut the circle at :math:`\\pi/2, 3\\pi/2, \\gamma+\\pi/2,
    \\gamma+3\\pi/2`; Gauss–Legendre rules on each of the four arcs and on
    ``r in [0, 10]`` integrate the smooth part. Dirac masses contribute a
    one-dimensional integral along the other variable and a point term.
    """
    K = np.asarray(K, dtype=np.float64)
    derivative = activation.derivatives[order]
    flat = K.reshape(-1)
    out = np.empty_like(flat)
    angular, radial, batch = _node_counts(tau)
    for start in range(0, flat.size, batch):
        out[start : start + batch] = _quadrature_batch(
            derivative, tau, flat[start : start + batch], angular, radial
        )
    return out.reshape(K.shape)


def _quadrature_batch(
    derivative: Derivative, tau: float, K: FloatArray, angular: int, radial: int
) -> FloatArray:
    rho = np.clip(K / tau, -1.0, 1.0)
    scale = math.sqrt(tau)

    # Step 1: the smooth part, integrated sector by sector.
    total = _smooth_part(derivative, scale, np.arccos(rho), angular, radial)

    # Step 2: line terms, one Dirac mass against the smooth part of the other
    # factor; by symmetry each appears twice.
    c0, c1 = derivative.delta, derivative.delta_prime
    conditional_sd = scale * np.sqrt(np.maximum(1.0 - rho**2, 0.0))
    density_at_zero = 1.0 / math.sqrt(2.0 * math.pi * tau)
    if c0 != 0.0 or c1 != 0.0:
        nodes, weights = _legendre(radial)
        x = 0.5 * _RADIAL_CUTOFF * (nodes + 1.0)
        w = (
            0.5
            * _RADIAL_CUTOFF
            * weights
            * np.exp(-0.5 * x**2)
            / math.sqrt(2.0 * math.pi)
        )
        v = conditional_sd[:, None] * x[None, :]
        plus, minus = derivative.smooth(v), derivative.smooth(-v)
        if c0 != 0.0:
            mean = (plus + minus) @ w
            total += 2.0 * c0 * density_at_zero * mean
        if c1 != 0.0:
            mean = (v * (plus - minus)) @ w
            with np.errstate(divide="ignore", invalid="ignore"):
                factor = -K / (tau**2 - K**2)
            total += 2.0 * c1 * factor * density_at_zero * mean

    # Step 3: point terms, two Dirac masses (δδ, δ'δ'; δδ' vanishes).
    if c0 != 0.0 or c1 != 0.0:
        with np.errstate(divide="ignore", invalid="ignore"):
            gap = tau**2 - K**2
            point = 1.0 / (2.0 * math.pi * np.sqrt(gap))
            total += c0**2 * point
            if c1 != 0.0:
                total += c1**2 * K * point / gap
    return total


def _smooth_part(
    derivative: Derivative,
    scale: float,
    gamma: FloatArray,
    angular: int,
    radial: int,
) -> FloatArray:
    # Sector boundaries on [0, 2π): where u = 0 and where v = 0.
    cuts = np.stack(
        [
            np.full_like(gamma, 0.5 * math.pi),
            np.full_like(gamma, 1.5 * math.pi),
            np.mod(gamma + 0.5 * math.pi, 2.0 * math.pi),
            np.mod(gamma + 1.5 * math.pi, 2.0 * math.pi),
        ],
        axis=1,
    )
    cuts = np.sort(cuts, axis=1)
    starts = cuts
    ends = np.concatenate([cuts[:, 1:], cuts[:, :1] + 2.0 * math.pi], axis=1)

    nodes, weights = _legendre(angular)
    half = 0.5 * (ends - starts)
    psi = starts[..., None] + half[..., None] * (nodes + 1.0)
    psi_weights = half[..., None] * weights

    r_nodes, r_weights = _legendre(radial)
    r = 0.5 * _RADIAL_CUTOFF * (r_nodes + 1.0)
    r_w = 0.5 * _RADIAL_CUTOFF * r_weights * r * np.exp(-0.5 * r**2) / (2.0 * math.pi)

    u = scale * np.cos(psi)[..., None] * r
    v = scale * np.cos(psi - gamma[:, None, None])[..., None] * r
    integrand = derivative.smooth(u) * derivative.smooth(v)
    total: FloatArray = np.einsum("bspr,bsp,r->b", integrand, psi_weights, r_w)
    return total
