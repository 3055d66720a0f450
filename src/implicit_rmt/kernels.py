"""The implicit network's kernels: pre-activation K*, CK G* and NTK Θ*.

For unit-norm data every entry is a function of ``t = x_iᵀ x_j`` alone
(docs/theory.md, section 4):

.. math::

    K^*(t) = \\sigma_a^2 E_0(K^*) + \\sigma_b^2 t, \\quad
    g(t) = E_0(K^*(t)), \\quad
    \\theta(t) = g(t) + \\frac{K^*(t)\\, E_1(K^*(t))}{1 - \\sigma_a^2 E_1(K^*(t))}.

:class:`ImplicitKernel` gives these exactly (per entry, numpy), fast on tiles
(certified interpolants, any array-API namespace), densely for moderate ``n``, and
their Taylor data at ``t = 0`` by implicit differentiation of the fixed point
(equations (13)–(16)).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from implicit_rmt.activations import Activation, get_activation
from implicit_rmt.entry_maps import EntryMap, build_entry_maps, evaluate_maps
from implicit_rmt.errors import ParameterError
from implicit_rmt.fixed_points import (
    check_variances,
    solve_gap,
    solve_preactivation,
    solve_tau,
)
from implicit_rmt.gaussian import moment

FloatArray = npt.NDArray[np.float64]

logger = logging.getLogger(__name__)

KERNELS = ("ck", "ntk")
ENTRY_NAMES = ("preactivation", "ck", "ntk")

# Columns of X must have unit norm to this relative accuracy: the entry functions
# are defined for unit-norm data only (their diagonal is f(1)).
_UNIT_NORM_TOLERANCE = 1e-8


@dataclass(frozen=True)
class Taylor:
    """Taylor data of an entry function ``f`` (docs/theory.md, equation (17)).

    Attributes
    ----------
    kernel
        ``"ck"`` or ``"ntk"``.
    value, slope, curvature
        :math:`f(0), f'(0), f''(0)`, exact by implicit differentiation.
    diagonal
        :math:`f(1)`.
    """

    kernel: str
    value: float
    slope: float
    curvature: float
    diagonal: float


def check_kernels(
    kernels: Sequence[str] | str, allowed: Sequence[str]
) -> tuple[str, ...]:
    """Validate a selection of entry functions; return it as a tuple."""
    selection = (kernels,) if isinstance(kernels, str) else tuple(kernels)
    for name in selection:
        if name not in allowed:
            raise ParameterError(
                "kernels", kernels, f"names among {', '.join(allowed)}"
            )
    if not selection:
        raise ParameterError("kernels", kernels, "at least one kernel name")
    return selection


class ImplicitKernel:
    """Kernels of the infinite-width implicit network for unit-norm inputs.

    Parameters
    ----------
    activation
        Activation name (see :func:`implicit_rmt.activations.get_activation`) or an
        :class:`~implicit_rmt.activations.Activation`.
    sigma_a2, sigma_b2
        Variances :math:`\\sigma_a^2` of the recurrent and :math:`\\sigma_b^2` of
        the input weights, both > 0.
    **activation_params
        Parameters of the activation (``slope``, ``alpha``, ``a0``, ``a1``, ``a2``).

    Raises
    ------
    ParameterError
        Unknown activation or parameter, non-positive variance.
    NoFixedPointError
        When τ does not exist or the kernel iteration does not contract
        (docs/theory.md, equation (4)).

    Notes
    -----
    The fast map of :meth:`entries` is built and certified on first use (a fraction
    of a second for closed-form activations, a few seconds with quadrature); call
    :meth:`prepare` before sending the object to workers so that it travels built.
    """

    def __init__(
        self,
        activation: str | Activation = "relu",
        sigma_a2: float = 0.2,
        sigma_b2: float = 0.8,
        **activation_params: float,
    ) -> None:
        if isinstance(activation, Activation):
            if activation_params:
                raise ParameterError(
                    "activation_params",
                    activation_params,
                    "none when an Activation object is given",
                )
            self.activation = activation
        else:
            self.activation = get_activation(activation, **activation_params)
        self.sigma_a2, self.sigma_b2 = check_variances(sigma_a2, sigma_b2)
        self.tau = solve_tau(self.activation, self.sigma_a2, self.sigma_b2)
        self._maps: dict[str, EntryMap] | None = None

    def __repr__(self) -> str:
        return (
            f"ImplicitKernel(activation={self.activation.name!r}, "
            f"sigma_a2={self.sigma_a2!r}, sigma_b2={self.sigma_b2!r}, "
            f"params={dict(self.activation.params)!r}, tau={self.tau!r})"
        )

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable parameters: activation, its parameters, variances, τ."""
        return {
            "activation": self.activation.name,
            "activation_params": dict(self.activation.params),
            "sigma_a2": self.sigma_a2,
            "sigma_b2": self.sigma_b2,
            "tau": self.tau,
        }

    # Exact entry functions -------------------------------------------------------

    def _moment(self, K: FloatArray, order: int) -> FloatArray:
        return moment(self.activation, self.tau, K, order)

    def exact(self, t: npt.ArrayLike) -> dict[str, FloatArray]:
        """All three entry functions at ``t``, exactly (equations (3), (11), (12)).

        Parameters
        ----------
        t
            Inner products, float64 array of any shape, in [-1, 1].

        Returns
        -------
        dict
            ``preactivation`` (K*), ``ck`` (g) and ``ntk`` (θ), float64 arrays of
            the shape of ``t``.
        """
        gap = solve_gap(self.activation, self.sigma_a2, self.sigma_b2, self.tau, t)
        K = self.tau - gap
        g = moment(self.activation, self.tau, K, 0, gap=gap)
        derivative = moment(self.activation, self.tau, K, 1, gap=gap)
        theta = g + K * derivative / (1.0 - self.sigma_a2 * derivative)
        return {"preactivation": K, "ck": g, "ntk": theta}

    def preactivation(self, t: npt.ArrayLike) -> FloatArray:
        """:math:`K^*(t)` exactly (equation (3)); float64, shape of ``t``."""
        return self.exact(t)["preactivation"]

    def ck(self, t: npt.ArrayLike) -> FloatArray:
        """:math:`g(t) = E_0(K^*(t))` exactly (equation (11)); float64."""
        return self.exact(t)["ck"]

    def ntk(self, t: npt.ArrayLike) -> FloatArray:
        """:math:`\\theta(t)` exactly (equation (12)); float64."""
        return self.exact(t)["ntk"]

    # Fast entry functions on tiles ----------------------------------------------

    def prepare(self) -> ImplicitKernel:
        """Build and certify the fast entry maps now (else on first use)."""
        if self._maps is None:
            logger.info("building the fast entry maps for %r", self)
            self._maps = build_entry_maps(self.exact, ENTRY_NAMES)
        return self

    @property
    def map_errors(self) -> dict[str, float]:
        """Certified error of each fast map, relative to its ``max |f|``."""
        self.prepare()
        assert self._maps is not None
        return {name: entry.error for name, entry in self._maps.items()}

    def entries(self, t: Any, kernels: Sequence[str] | str = KERNELS) -> dict[str, Any]:
        """Kernel entries on a tile of inner products, by the certified fast map.

        Parameters
        ----------
        t
            ``X_Iᵀ X_J`` for unit-norm columns: a floating array (numpy, CuPy or
            array-api-strict) of any shape, values in [-1, 1] up to rounding.
        kernels
            Names among ``ck``, ``ntk`` and ``preactivation``.

        Returns
        -------
        dict
            ``{name: values}``, arrays of ``t``'s namespace, dtype and shape,
            within ``1e-13 · max|f|`` of :meth:`exact` (certified at build time).
        """
        selection = check_kernels(kernels, ENTRY_NAMES)
        self.prepare()
        assert self._maps is not None
        return evaluate_maps(self._maps, t, selection)

    def dense(self, X: npt.ArrayLike) -> dict[str, FloatArray]:
        """Dense kernel matrices of the columns of ``X``.

        Parameters
        ----------
        X
            Data, float64 array of shape (d, n) with unit-norm columns.

        Returns
        -------
        dict
            ``K`` (K*), ``ck`` (G*) and ``ntk`` (Θ*): float64 arrays of shape (n, n),
            symmetric, with diagonals exactly τ, g(1), θ(1). Off-diagonal entries
            come from the certified fast map (within ``1e-13 · max|f|`` of
            :meth:`exact`), so n of a few thousand takes seconds.

        Raises
        ------
        ParameterError
            When ``X`` is not a finite 2-D array with unit-norm columns.
        """
        data = np.asarray(X, dtype=np.float64)
        if data.ndim != 2 or data.shape[1] == 0:
            raise ParameterError("X", f"array of shape {data.shape}", "shape (d, n)")
        if not np.all(np.isfinite(data)):
            raise ParameterError("X", "an array with non-finite entries", "finite data")
        norms = np.linalg.norm(data, axis=0)
        worst = int(np.argmax(np.abs(norms - 1.0)))
        if abs(norms[worst] - 1.0) > _UNIT_NORM_TOLERANCE:
            raise ParameterError(
                "X",
                f"column {worst} of norm {norms[worst]:.6g}",
                "columns of unit norm (points on the sphere S^{d-1})",
                "Divide each column by its norm.",
            )
        t = data.T @ data
        t = 0.5 * (t + t.T)
        np.fill_diagonal(t, 1.0)
        values = self.entries(t, ENTRY_NAMES)
        diagonal = self.exact(np.ones(1))
        out: dict[str, FloatArray] = {}
        for key, name in (("K", "preactivation"), ("ck", "ck"), ("ntk", "ntk")):
            matrix = np.asarray(values[name], dtype=np.float64)
            np.fill_diagonal(matrix, diagonal[name][0])
            out[key] = matrix
        return out

    # Taylor data at t = 0 -------------------------------------------------------

    def taylor(self, kernel: str) -> Taylor:
        """Value, first and second derivative at ``t = 0``, and value at ``t = 1``.

        The derivatives follow from implicit differentiation of the fixed point
        (docs/theory.md, equations (13)–(16)); no finite differences.

        Parameters
        ----------
        kernel
            ``"ck"`` or ``"ntk"``.
        """
        (kernel,) = check_kernels(kernel, KERNELS)
        a2, b2 = self.sigma_a2, self.sigma_b2
        K0 = solve_preactivation(self.activation, a2, b2, self.tau, np.zeros(1))
        e0, e1, e2, e3 = (float(self._moment(K0, order)[0]) for order in range(4))
        k0 = float(K0[0])

        # Equation (13): derivatives of K*(t) at 0.
        gap = 1.0 - a2 * e1
        k1 = b2 / gap
        k2 = a2 * e2 * k1**2 / gap

        # Equation (14): the CK g = E_0(K*).
        g0, g1, g2 = e0, e1 * k1, e2 * k1**2 + e1 * k2
        at_one = self.exact(np.ones(1))
        if kernel == "ck":
            return Taylor("ck", g0, g1, g2, float(at_one["ck"][0]))

        # Equations (15)-(16): θ = g + K Q(K), Q = E_1 / (1 - σ_a² E_1).
        q0 = e1 / gap
        q1 = e2 / gap**2
        q2 = e3 / gap**2 + 2.0 * a2 * e2**2 / gap**3
        theta0 = g0 + k0 * q0
        theta1 = g1 + k1 * q0 + k0 * q1 * k1
        theta2 = g2 + k2 * q0 + 2.0 * k1**2 * q1 + k0 * (q2 * k1**2 + q1 * k2)
        if not all(math.isfinite(x) for x in (theta0, theta1, theta2)):
            raise ParameterError(
                "activation", self.activation.name, "an NTK smooth at t = 0"
            )
        return Taylor("ntk", theta0, theta1, theta2, float(at_one["ntk"][0]))
