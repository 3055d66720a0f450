"""High-dimensional equivalents of kernel matrices and the matched quadratic network.

The equivalent is :math:`\\bar K = \\alpha 11^\\top + \\beta X^\\top X + \\mu I`.

For a kernel with entry function ``f`` on unit-norm data in dimension ``d``
(docs/theory.md, equations (18)–(20)):

.. math::

    \\alpha = f(0) + \\frac{f''(0)}{2d}, \\quad \\beta = f'(0), \\quad
    \\mu = f(1) - f(0) - f'(0) - \\frac{f''(0)}{2d}.

The quadratic network :math:`\\sigma(t) = a_2 t^2 + a_1 t + a_0` whose explicit kernel
has the same α, β, μ is found by :func:`match_quadratic` (equations (21)–(23)), and
:func:`explicit_entries` gives the entries of that explicit kernel Σ on tiles.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, overload

from array_api_compat import array_namespace

from implicit_rmt.errors import NoQuadraticMatchError, ParameterError
from implicit_rmt.kernels import KERNELS, ImplicitKernel, check_kernels


@dataclass(frozen=True)
class Coefficients:
    """Coefficients of the equivalent :math:`\\bar K` and the Taylor data behind them.

    Attributes
    ----------
    kernel
        ``"ck"`` or ``"ntk"``.
    dim
        The data dimension ``d``.
    finite_d
        Whether the ``f''(0)/(2d)`` terms are included (equation (19)).
    alpha, beta, mu
        The coefficients of :math:`11^\\top`, :math:`X^\\top X` and :math:`I`.
    value, slope, curvature, diagonal
        :math:`f(0), f'(0), f''(0), f(1)`.
    tau
        The diagonal pre-activation fixed point.
    """

    kernel: str
    dim: int
    finite_d: bool
    alpha: float
    beta: float
    mu: float
    value: float
    slope: float
    curvature: float
    diagonal: float
    tau: float

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable view."""
        return asdict(self)


@dataclass(frozen=True)
class QuadraticMatch:
    """A quadratic activation :math:`a_2 t^2 + a_1 t + a_0` matched to a kernel.

    Attributes
    ----------
    kernel
        The kernel (``"ck"`` or ``"ntk"``) whose α, β, μ were matched.
    dim
        The dimension ``d`` of the match.
    a0, a1, a2
        The coefficients.
    signs
        The signs ``(s2, s1, s0)`` chosen for the square roots of equation (22).
    """

    kernel: str
    dim: int
    a0: float
    a1: float
    a2: float
    signs: tuple[int, int, int]

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable view: ``a0``, ``a1``, ``a2`` and the signs."""
        return {"a0": self.a0, "a1": self.a1, "a2": self.a2, "signs": list(self.signs)}


def check_dim(dim: int) -> int:
    """Validate a data dimension (an integer >= 2) and return it."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
        raise ParameterError("dim", dim, "an integer >= 2 (the data dimension d)")
    return dim


def equivalent_coefficients(
    kernel: ImplicitKernel, which: str, dim: int, finite_d: bool = True
) -> Coefficients:
    """α, β, μ of the equivalent of the implicit CK or NTK (equations (18)–(20)).

    Parameters
    ----------
    kernel
        The implicit kernel.
    which
        ``"ck"`` or ``"ntk"``.
    dim
        The data dimension ``d >= 2``.
    finite_d
        Keep the :math:`f''(0)/(2d)` corrections (default); ``False`` gives the
        leading-order coefficients only.
    """
    (which,) = check_kernels(which, KERNELS)
    dim = check_dim(dim)
    taylor = kernel.taylor(which)
    correction = taylor.curvature / (2.0 * dim) if finite_d else 0.0
    alpha = taylor.value + correction
    beta = taylor.slope
    mu = taylor.diagonal - taylor.value - taylor.slope - correction
    return Coefficients(
        kernel=which,
        dim=dim,
        finite_d=finite_d,
        alpha=alpha,
        beta=beta,
        mu=mu,
        value=taylor.value,
        slope=taylor.slope,
        curvature=taylor.curvature,
        diagonal=taylor.diagonal,
        tau=kernel.tau,
    )


# Explicit kernels of σ(t) = a2 t² + a1 t + a0 (equation (21)): entry = c0 + c1 t +
# c2 t² with (c0, c1, c2) = ((a0+a2)², m1 a1², m2 a2²); m = (1, 2) for the CK and
# (2, 6) for the NTK.
_MULTIPLIERS = {"ck": (1.0, 2.0), "ntk": (2.0, 6.0)}


@overload
def match_quadratic(
    coefficients: Coefficients, all_branches: Literal[False] = ...
) -> QuadraticMatch: ...


@overload
def match_quadratic(
    coefficients: Coefficients, all_branches: Literal[True]
) -> list[QuadraticMatch]: ...


def match_quadratic(
    coefficients: Coefficients, all_branches: bool = False
) -> QuadraticMatch | list[QuadraticMatch]:
    """The quadratic activation whose explicit kernel has the same α, β, μ.

    Solves equation (22): for the CK
    :math:`a_2 = \\pm\\sqrt{\\mu / (2(1 - 1/d))}`, :math:`a_1 = \\pm\\sqrt\\beta`,
    :math:`a_0 = \\pm\\sqrt{\\alpha - 2a_2^2/d} - a_2`; for the NTK the factors are
    6, 2 (on β: :math:`a_1 = \\pm\\sqrt{\\beta/2}`) and 6.

    Parameters
    ----------
    coefficients
        From :func:`equivalent_coefficients` (finite-d or not; the match uses
        ``coefficients.dim``).
    all_branches
        Return all eight sign branches (``s2, s1, s0`` each ±1) instead of the
        positive one.

    Raises
    ------
    NoQuadraticMatchError
        When a radicand is negative: no real quadratic activation matches; the
        message names which coefficient is out of reach.
    """
    which, d = coefficients.kernel, coefficients.dim
    m1, m2 = _MULTIPLIERS[which]
    radicand_2 = coefficients.mu / (m2 * (1.0 - 1.0 / d))
    radicand_1 = coefficients.beta / m1
    if radicand_2 < 0.0:
        raise NoQuadraticMatchError(
            f"mu ({which})",
            coefficients.mu,
            "mu >= 0: the identity coefficient of a quadratic network's kernel "
            "cannot be negative, so no quadratic activation matches",
        )
    if radicand_1 < 0.0:
        raise NoQuadraticMatchError(
            f"beta ({which})",
            coefficients.beta,
            "beta >= 0: no quadratic activation matches",
        )
    a2_abs = math.sqrt(radicand_2)
    radicand_0 = coefficients.alpha - m2 * a2_abs**2 / d
    if radicand_0 < 0.0:
        raise NoQuadraticMatchError(
            f"alpha ({which})",
            coefficients.alpha,
            f"alpha >= {m2:g} a2²/d = {m2 * a2_abs**2 / d:.6g} so that "
            "(a0 + a2)² >= 0; no quadratic activation matches",
        )
    a1_abs = math.sqrt(radicand_1)
    root_0 = math.sqrt(radicand_0)
    branches = []
    for s2, s1, s0 in itertools.product((1, -1), repeat=3):
        a2 = s2 * a2_abs
        branches.append(
            QuadraticMatch(which, d, s0 * root_0 - a2, s1 * a1_abs, a2, (s2, s1, s0))
        )
    return branches if all_branches else branches[0]


def explicit_entries(match: QuadraticMatch, which: str, t: Any) -> Any:
    """Entries of the explicit kernel Σ of the matched quadratic network.

    :math:`(a_0+a_2)^2 + a_1^2 t + 2a_2^2 t^2` for the CK and
    :math:`(a_0+a_2)^2 + 2a_1^2 t + 6a_2^2 t^2` for the NTK (equation (21)).

    Parameters
    ----------
    match
        The matched quadratic.
    which
        ``"ck"`` or ``"ntk"``: which explicit kernel.
    t
        Inner products, floating array of any array-API namespace and shape.

    Returns
    -------
    array
        Same namespace, dtype and shape as ``t``.
    """
    (which,) = check_kernels(which, KERNELS)
    array_namespace(t)  # rejects non-arrays early with a clear TypeError
    m1, m2 = _MULTIPLIERS[which]
    c0 = (match.a0 + match.a2) ** 2
    c1 = m1 * match.a1**2
    c2 = m2 * match.a2**2
    return c0 + t * (c1 + c2 * t)
