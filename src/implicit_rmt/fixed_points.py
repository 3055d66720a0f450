"""The kernel fixed points: the diagonal τ and the off-diagonal map ``t ↦ K*(t)``.

For unit-norm inputs the pre-activation kernel of the infinite-width implicit network
solves, entry by entry (docs/theory.md, equations (2) and (3)),

.. math::

    \\tau = \\sigma_a^2 E_0(\\tau;\\tau) + \\sigma_b^2, \\qquad
    K = \\sigma_a^2 E_0(K;\\tau) + \\sigma_b^2 t .

Both are solved here to machine precision: τ by a bracketed root search, ``K*(t)``
by a vectorised Newton iteration safeguarded by bisection. These are the exact
references that the fast tile map of :mod:`implicit_rmt.entry_maps` is certified
against.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import numpy.typing as npt
from scipy import interpolate, optimize

from implicit_rmt.activations import Activation
from implicit_rmt.errors import NoFixedPointError, ParameterError
from implicit_rmt.gaussian import moment, moment_drop

FloatArray = npt.NDArray[np.float64]

logger = logging.getLogger(__name__)

# The diagonal root is searched on τ in (0, _TAU_MAX]; a larger variance means a
# network whose pre-activations are ~1e4 standard units, far outside any useful range.
_TAU_MAX = 1e8
_NEWTON_STEPS = 60
_SEED_POINTS = 65


def check_variances(sigma_a2: float, sigma_b2: float) -> tuple[float, float]:
    """Validate the weight variances and return them as floats.

    Raises
    ------
    ParameterError
        When either is not a finite positive number.
    """
    for name, value in (("sigma_a2", sigma_a2), ("sigma_b2", sigma_b2)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParameterError(name, value, "a positive real number")
        if not math.isfinite(value) or value <= 0.0:
            raise ParameterError(name, value, "a finite number > 0")
    return float(sigma_a2), float(sigma_b2)


def _diagonal(activation: Activation, tau: float, order: int) -> float:
    """:math:`E_k(\\tau;\\tau) = \\mathbb E[\\varphi^{(k)}(u)^2]`, ``u ~ N(0, τ)``."""
    return float(moment(activation, tau, np.array([tau]), order)[0])


def _tau_or_reason(
    activation: Activation, sigma_a2: float, sigma_b2: float
) -> tuple[float, str | None]:
    """τ and ``None``, or ``nan`` and why no contracting fixed point exists."""

    def residual(tau: float) -> float:
        return sigma_a2 * _diagonal(activation, tau, 0) + sigma_b2 - tau

    # Step 1: bracket the first sign change on a geometric grid (h(0⁺) > 0). A
    # root pair closer together than the grid's factor 2 is missed, so σ_a² within
    # ~1e-3 below the true limit may be rejected too (never the reverse).
    low = sigma_b2 * 1e-3
    high = low
    while residual(high) > 0.0:
        low, high = high, 2.0 * high
        if high > _TAU_MAX:
            return math.nan, (
                f"the diagonal fixed point τ grows without bound (no root below "
                f"{_TAU_MAX:g})"
            )

    # Step 2: the root, to machine precision.
    tau = float(
        optimize.brentq(residual, low, high, xtol=1e-300, rtol=8.9e-16, maxiter=200)
    )

    # Step 3: the off-diagonal iteration must contract on [-τ, τ] (equation (4)).
    slope = sigma_a2 * _diagonal(activation, tau, 1)
    if slope >= 1.0:
        return math.nan, (
            f"sigma_a2 * E[φ'(u)²] = {slope:.6g} >= 1 at τ = {tau:.6g}: the kernel "
            "iteration does not contract"
        )
    return tau, None


def critical_sigma_a2(activation: Activation, sigma_b2: float, above: float) -> float:
    """The supremum of the σ_a² for which a contracting fixed point exists.

    Bisection on ``(0, above)`` to 1e-10 relative, assuming (true of every
    activation here) that the admissible values form an interval starting at 0;
    ``above`` must be inadmissible.
    """
    low, high = 0.0, above
    while high - low > 1e-10 * high:
        middle = 0.5 * (low + high)
        tau, _ = _tau_or_reason(activation, middle, sigma_b2)
        if math.isnan(tau):
            high = middle
        else:
            low = middle
    return low


def solve_tau(activation: Activation, sigma_a2: float, sigma_b2: float) -> float:
    """Solve the diagonal fixed point τ (docs/theory.md, equation (2)).

    Parameters
    ----------
    activation
        The activation φ.
    sigma_a2, sigma_b2
        The variances :math:`\\sigma_a^2, \\sigma_b^2 > 0`.

    Returns
    -------
    float
        The smallest positive root of :math:`h(\\tau) = \\sigma_a^2
        \\mathbb E[\\varphi(u)^2] + \\sigma_b^2 - \\tau`, the one the iteration from
        ``τ = 0`` reaches.

    Raises
    ------
    NoFixedPointError
        When no root exists below 1e8, or when the fixed-point iteration does not
        contract at the root, :math:`\\sigma_a^2\\,\\mathbb E[\\varphi'(u)^2] \\ge 1`
        (equation (4)). The message gives the largest admissible ``sigma_a2`` for
        this activation and ``sigma_b2``.
    """
    sigma_a2, sigma_b2 = check_variances(sigma_a2, sigma_b2)
    tau, reason = _tau_or_reason(activation, sigma_a2, sigma_b2)
    if reason is not None:
        limit = critical_sigma_a2(activation, sigma_b2, sigma_a2)
        raise NoFixedPointError(
            "sigma_a2",
            sigma_a2,
            f"sigma_a2 < {limit:.6g} for activation {activation.name} with "
            f"sigma_b2 = {sigma_b2:g} ({reason})",
            "Lower sigma_a2.",
        )
    logger.debug("tau = %.17g", tau)
    return tau


def solve_gap(
    activation: Activation,
    sigma_a2: float,
    sigma_b2: float,
    tau: float,
    t: npt.ArrayLike,
) -> FloatArray:
    """Solve the off-diagonal fixed point for :math:`\\delta = \\tau - K^*(t)`.

    Subtracting equation (2) from equation (3) gives (equation (3b))

    .. math::

        \\delta = \\sigma_b^2 (1 - t) + \\sigma_a^2 \\left[E_0(\\tau) -
        E_0(\\tau - \\delta)\\right],

    solved entrywise. Working with δ keeps full relative accuracy as ``t → 1``,
    where the moments of kinked activations depend on :math:`\\sqrt\\delta`.

    Parameters
    ----------
    activation
        The activation φ.
    sigma_a2, sigma_b2
        The variances.
    tau
        The diagonal fixed point from :func:`solve_tau`.
    t
        Inner products :math:`x_i^\\top x_j`, float64 array of any shape, in
        ``[-1, 1]`` (values beyond are clipped).

    Returns
    -------
    numpy.ndarray
        δ, float64, shape of ``t``, in ``[0, 2τ]``; exactly 0 where ``t = 1``.

    Notes
    -----
    :math:`G(\\delta) = \\delta - \\sigma_b^2 (1-t) - \\sigma_a^2 [E_0(\\tau) -
    E_0(\\tau-\\delta)]` increases (:math:`G' = 1 - \\sigma_a^2 E_1 > 0` by the
    contraction check, equation (4)) from :math:`G(0) \\le 0` to
    :math:`G(2\\tau) \\ge 0`. Newton steps from the linearised guess are kept
    inside a shrinking bracket and replaced by bisection when they leave it; the
    iteration stops when a step is below 4 ulp of τ.
    """
    t = np.clip(np.asarray(t, dtype=np.float64), -1.0, 1.0)
    shape = t.shape
    s = 1.0 - t.reshape(-1)  # exact for t in [1/2, 1]
    low = np.zeros_like(s)
    high = np.full_like(s, 2.0 * tau)
    if s.size > 2 * _SEED_POINTS:
        # Many entries: solve on a few angles ϑ = arccos t first and start every
        # entry from a cubic spline in ϑ through them (δ is smooth in ϑ even for
        # kinked activations, docs/theory.md (24)); two Newton steps then suffice.
        angles = np.linspace(0.0, math.pi, _SEED_POINTS)
        seed = solve_gap(activation, sigma_a2, sigma_b2, tau, np.cos(angles))
        guess = interpolate.CubicSpline(angles, seed)(np.arccos(1.0 - s))
        gap = np.clip(guess, 0.0, 2.0 * tau)
    else:
        top_slope = moment(activation, tau, np.array([tau]), 1)[0]
        gap = np.clip(sigma_b2 * s / (1.0 - sigma_a2 * top_slope), 0.0, 2.0 * tau)
    active = s > 0.0
    gap[~active] = 0.0
    for step in range(_NEWTON_STEPS):
        index = np.flatnonzero(active)
        if index.size == 0:
            break
        d = gap[index]
        value = d - sigma_b2 * s[index] - sigma_a2 * moment_drop(activation, tau, d)
        slope = 1.0 - sigma_a2 * moment(activation, tau, tau - d, 1, gap=d)

        # Shrink the bracket with the sign of G, then a Newton step inside it.
        positive = value > 0.0
        high[index] = np.where(positive, d, high[index])
        low[index] = np.where(positive, low[index], d)
        candidate = d - value / slope
        inside = (candidate >= low[index]) & (candidate <= high[index])
        candidate = np.where(inside, candidate, 0.5 * (low[index] + high[index]))
        gap[index] = candidate
        done = (np.abs(candidate - d) <= 4.0 * np.spacing(tau)) | (value == 0.0)
        active[index[done]] = False
        logger.debug(
            "Newton step %d: %d entries still moving", step, int(np.sum(~done))
        )
    else:
        logger.debug("Newton stopped after %d steps", _NEWTON_STEPS)
    result: FloatArray = gap.reshape(shape)
    return result


def solve_preactivation(
    activation: Activation,
    sigma_a2: float,
    sigma_b2: float,
    tau: float,
    t: npt.ArrayLike,
) -> FloatArray:
    """Solve :math:`K = \\sigma_a^2 E_0(K) + \\sigma_b^2 t` entrywise (equation (3)).

    Parameters are those of :func:`solve_gap`; returns :math:`K^*(t) = \\tau - \\delta`,
    float64 of the shape of ``t``, exactly τ where ``t = 1``.
    """
    return tau - solve_gap(activation, sigma_a2, sigma_b2, tau, t)
