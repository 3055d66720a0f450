"""Certified Chebyshev interpolants of the entry functions, evaluated on tiles.

A kernel tile holds ``n²`` entries ``f(t_ij)`` with ``t = X_Iᵀ X_J``. Solving the
fixed point per entry costs many times the GEMM that produced ``t``, so each entry
function (``K*``, ``g``, ``θ``) is replaced by two Chebyshev interpolants
(docs/theory.md, section 6):

- a central one in ``y = t / c`` on ``|t| <= c`` (``c = 0.3``), where every
  off-diagonal entry of a high-dimensional tile lies (``|t| ≲ 6/√d``); the entry
  functions are analytic there, so a low degree reaches machine precision;
- an outer one in the angle ``ϑ = arccos t`` on ``[0, π]``, used only for the few
  entries with ``|t| > c`` (the diagonal, and small ``d``). The arc-cosine variable
  absorbs the square-root singularities of kinked activations at ``t = ±1``
  (equation (24)), which no polynomial in ``t`` resolves.

Both are built from the exact solution (:mod:`implicit_rmt.fixed_points`) and then
*certified*: compared with it on a dense grid, warning when the error exceeds
``1e-13`` of the entry function's largest magnitude. Evaluation uses only array-API
operations, so tiles may be numpy, CuPy or array-api-strict arrays.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from array_api_compat import array_namespace

FloatArray = npt.NDArray[np.float64]
ExactFunction = Callable[[FloatArray], dict[str, FloatArray]]

logger = logging.getLogger(__name__)

CENTRAL_HALF_WIDTH = 0.3
TOLERANCE = 1e-13
_DEGREES_CENTRAL = (24, 48)
_DEGREES_OUTER = (48, 96, 192)
_TAIL = 2e-15
_CERTIFY_CENTRAL = 201
_CERTIFY_OUTER = 401


class AccuracyWarning(UserWarning):
    """A fast entry map misses its certified tolerance on the check grid."""


@dataclass(frozen=True)
class EntryMap:
    """Chebyshev coefficients of one entry function, central and outer.

    Attributes
    ----------
    central
        Coefficients in ``y = t / CENTRAL_HALF_WIDTH``, float64, shape (p,).
    power
        The same polynomial in the monomial basis of ``t`` (evaluated by Horner's
        rule, two operations per degree). The entry functions' Taylor series at 0
        converge well beyond ``|t| = c``, so these coefficients decay and the
        conversion loses nothing (the certification evaluates this form).
    outer
        Coefficients in ``y = 2 arccos(t) / π − 1``, float64, shape (q,).
    error
        The largest error measured at certification, relative to ``scale``.
    scale
        ``max |f|`` on the certification grid.
    at_one, at_minus_one
        The exact values ``f(1)`` and ``f(-1)``, returned for ``t`` at (or rounded
        beyond) the ends, where the interpolant is least accurate.
    """

    central: tuple[float, ...]
    power: tuple[float, ...]
    outer: tuple[float, ...]
    error: float
    scale: float
    at_one: float
    at_minus_one: float


def _clenshaw(xp: Any, coefficients: Sequence[float], y: Any) -> Any:
    """Evaluate :math:`\\sum_k c_k T_k(y)` elementwise with array-API operations."""
    twice = 2.0 * y
    b1 = xp.zeros_like(y)
    b2 = xp.zeros_like(y)
    for c in coefficients[:0:-1]:
        b1, b2 = twice * b1 - b2 + c, b1
    return y * b1 - b2 + coefficients[0]


def _horner(t: Any, coefficients: Sequence[float]) -> Any:
    """Evaluate :math:`\\sum_k a_k t^k` elementwise with array-API operations."""
    if len(coefficients) == 1:
        return t * 0.0 + coefficients[0]
    result = t * coefficients[-1] + coefficients[-2]
    for a in coefficients[-3::-1]:
        result = result * t + a
    return result


def _chebyshev_nodes(degree: int) -> FloatArray:
    """Chebyshev points of the first kind on [-1, 1], ``degree + 1`` of them."""
    k = np.arange(degree + 1)
    return np.cos(math.pi * (k + 0.5) / (degree + 1))


def _fit(
    values_at: Callable[[FloatArray], dict[str, FloatArray]],
    names: Sequence[str],
    degrees: Sequence[int],
) -> dict[str, FloatArray]:
    """Chebyshev coefficients of each named function, degree raised until converged.

    Least squares on twice as many Chebyshev points as coefficients damps the
    rounding noise of the exact values (largest near ``t = ±1``, where the entry
    functions of kinked activations have infinite slope). The series is accepted
    when its last quarter of coefficients is below ``_TAIL`` of the largest one,
    then trailing negligible terms are dropped.
    """
    fitted: dict[str, FloatArray] = {}
    for degree in degrees:
        y = _chebyshev_nodes(2 * degree + 1)
        values = values_at(y)
        for name in names:
            if name in fitted:
                continue
            coefficients = np.polynomial.chebyshev.chebfit(y, values[name], degree)
            size = float(np.max(np.abs(coefficients)))
            tail = float(np.max(np.abs(coefficients[-(degree // 4) :])))
            if tail <= _TAIL * size or degree == degrees[-1]:
                keep = np.flatnonzero(np.abs(coefficients) > 1e-17 * size)
                last = int(keep[-1]) + 1 if keep.size else 1
                fitted[name] = np.asarray(coefficients[:last], dtype=np.float64)
                logger.debug("%s: degree %d (tail %.2e)", name, last - 1, tail / size)
        if len(fitted) == len(names):
            break
    return fitted


def build_entry_maps(exact: ExactFunction, names: Sequence[str]) -> dict[str, EntryMap]:
    """Build and certify the entry maps of the named entry functions.

    Parameters
    ----------
    exact
        Maps a float64 array ``t`` (1-D, in [-1, 1]) to ``{name: f(t)}`` computed by
        the exact fixed-point solver.
    names
        The entry functions to interpolate (keys of ``exact``'s result).

    Returns
    -------
    dict
        One :class:`EntryMap` per name.

    Warns
    -----
    AccuracyWarning
        When an interpolant misses ``TOLERANCE`` (relative to ``max |f|``) on the
        certification grid.
    """
    c = CENTRAL_HALF_WIDTH

    # Step 1: the interpolants, central in t/c and outer in arccos t.
    central = _fit(lambda y: exact(c * y), names, _DEGREES_CENTRAL)
    outer = _fit(
        lambda y: exact(np.cos(0.5 * math.pi * (y + 1.0))), names, _DEGREES_OUTER
    )

    # Step 2: certification against the exact solver on dense grids, including
    # both ends t = ±1 and both sides of the switch |t| = c.
    t_central = np.linspace(-c, c, _CERTIFY_CENTRAL)
    t_outer = np.cos(np.linspace(0.0, math.pi, _CERTIFY_OUTER))
    t_outer = t_outer[np.abs(t_outer) > c]
    grid = np.concatenate([t_central, t_outer])
    reference = exact(grid)
    ends = exact(np.array([1.0, -1.0]))
    maps: dict[str, EntryMap] = {}
    for name in names:
        degrees = np.arange(len(central[name]))
        power = np.polynomial.chebyshev.cheb2poly(central[name]) / c**degrees
        candidate = EntryMap(
            tuple(central[name].tolist()),
            tuple(power.tolist()),
            tuple(outer[name].tolist()),
            math.nan,
            math.nan,
            float(ends[name][0]),
            float(ends[name][1]),
        )
        approximate = evaluate_maps({name: candidate}, grid, (name,))[name]
        scale = float(np.max(np.abs(reference[name])))
        error = float(np.max(np.abs(approximate - reference[name]))) / max(
            scale, 1e-300
        )
        maps[name] = EntryMap(
            candidate.central,
            candidate.power,
            candidate.outer,
            error,
            scale,
            candidate.at_one,
            candidate.at_minus_one,
        )
        logger.info(
            "entry map %s: degrees %d/%d, certified error %.2e of max|f| = %.6g",
            name,
            len(central[name]) - 1,
            len(outer[name]) - 1,
            error,
            scale,
        )
        if not error <= TOLERANCE:
            warnings.warn(
                f"the fast entry map of {name!r} differs from the exact fixed point "
                f"by {error:.2e} of max|f| on the check grid (target {TOLERANCE:g}); "
                "entries are less accurate than certified",
                AccuracyWarning,
                stacklevel=2,
            )
    return maps


def evaluate_maps(
    maps: dict[str, EntryMap], t: Any, names: Sequence[str]
) -> dict[str, Any]:
    """Evaluate several entry maps on one tile, sharing the outer selection.

    Parameters
    ----------
    maps
        The certified maps, by name.
    t
        Inner products, floating array (numpy, CuPy, array-api-strict), any shape.
    names
        Which maps to evaluate.

    Returns
    -------
    dict
        ``{name: f(t)}``, arrays of ``t``'s namespace, dtype and shape.
    """
    xp = array_namespace(t)
    c = CENTRAL_HALF_WIDTH
    far = xp.abs(t) > c
    any_far = bool(xp.any(far))
    if any_far:
        t_far = xp.clip(t[far], -1.0, 1.0)
        angle = xp.acos(t_far) * (2.0 / math.pi) - 1.0
        top = t_far >= 1.0
        bottom = t_far <= -1.0
    out: dict[str, Any] = {}
    for name in names:
        entry_map = maps[name]
        values = _horner(t, entry_map.power)
        if any_far:
            outer = _clenshaw(xp, entry_map.outer, angle)
            outer = xp.where(top, entry_map.at_one, outer)
            outer = xp.where(bottom, entry_map.at_minus_one, outer)
            values[far] = outer
        out[name] = values
    return out
