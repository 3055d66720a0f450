"""Activation functions φ and their derivatives as generalised functions.

Every activation is described, for each derivative order ``k = 0, 1, 2, 3``, by a
:class:`Derivative`: a smooth function on each half-line ``x < 0`` and ``x > 0``
plus the coefficients of the Dirac mass :math:`\\delta(x)` and of its derivative
:math:`\\delta'(x)` at the kink ``x = 0`` (docs/theory.md, equation (6)). This is
what the Gaussian expectations of :mod:`implicit_rmt.gaussian` need to treat kinked
activations (relu, leaky relu, elu) exactly, without finite differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import special

from implicit_rmt.errors import ParameterError

FloatArray = npt.NDArray[np.float64]
Function = Callable[[FloatArray], FloatArray]

ACTIVATIONS = ("relu", "leaky_relu", "erf", "tanh", "gelu", "swish", "elu", "quadratic")

_PARAMETERS: dict[str, dict[str, float]] = {
    "relu": {},
    "leaky_relu": {"slope": 0.01},
    "erf": {},
    "tanh": {},
    "gelu": {},
    "swish": {},
    "elu": {"alpha": 1.0},
    "quadratic": {"a0": 0.0, "a1": 0.0, "a2": 1.0},
}


@dataclass(frozen=True)
class Derivative:
    """The k-th derivative of an activation as a generalised function.

    :math:`\\varphi^{(k)}(x) = s_-(x)\\,1_{x<0} + s_+(x)\\,1_{x>0}
    + c_0\\,\\delta(x) + c_1\\,\\delta'(x)` (docs/theory.md, equation (6)).

    Attributes
    ----------
    negative, positive
        The smooth pieces :math:`s_\\mp`, vectorised over float64 arrays of any shape.
    delta, delta_prime
        The coefficients :math:`c_0` and :math:`c_1` of the point masses at 0.
    """

    negative: Function
    positive: Function
    delta: float = 0.0
    delta_prime: float = 0.0

    @property
    def is_smooth(self) -> bool:
        """True when one analytic function serves both half-lines (no kink, no mass)."""
        return (
            self.negative is self.positive
            and self.delta == 0.0
            and self.delta_prime == 0.0
        )

    def smooth(self, x: FloatArray) -> FloatArray:
        """Evaluate the smooth part at ``x`` (float64 array, any shape)."""
        if self.negative is self.positive:
            return self.positive(x)
        return np.where(x < 0.0, self.negative(x), self.positive(x))


@dataclass(frozen=True)
class Activation:
    """An activation φ with its derivatives up to order three.

    Attributes
    ----------
    name
        One of :data:`ACTIVATIONS`.
    params
        Its parameters (``slope`` for leaky relu, ``alpha`` for elu, ``a0``, ``a1``,
        ``a2`` for the quadratic), with defaults filled in.
    derivatives
        ``derivatives[k]`` is the k-th derivative, ``k = 0, 1, 2, 3``.
    """

    name: str
    params: Mapping[str, float]
    derivatives: tuple[Derivative, Derivative, Derivative, Derivative] = field(
        repr=False
    )

    def phi(self, x: FloatArray) -> FloatArray:
        """φ(x) for a float64 array ``x`` of any shape."""
        return self.derivatives[0].smooth(np.asarray(x, dtype=np.float64))

    def dphi(self, x: FloatArray) -> FloatArray:
        """φ'(x) (its smooth part; the value at a kink is the right-hand one)."""
        return self.derivatives[1].smooth(np.asarray(x, dtype=np.float64))

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description: the name and the parameters."""
        return {"activation": self.name, "activation_params": dict(self.params)}

    def __reduce__(self) -> tuple[Any, tuple[str, dict[str, float]]]:
        # The derivatives are closures; rebuild them from the name and parameters,
        # so that kernels travel to Dask workers by pickle.
        return (_rebuild, (self.name, dict(self.params)))


def _constant(value: float) -> Function:
    def constant(x: FloatArray) -> FloatArray:
        return np.full_like(x, value)

    return constant


def _identity(x: FloatArray) -> FloatArray:
    return x


_ZERO = _constant(0.0)


def _relu(slope: float) -> tuple[Derivative, Derivative, Derivative, Derivative]:
    def negative(x: FloatArray) -> FloatArray:
        return slope * x

    jump = 1.0 - slope
    return (
        Derivative(negative, _identity),
        Derivative(_constant(slope), _constant(1.0)),
        Derivative(_ZERO, _ZERO, delta=jump),
        Derivative(_ZERO, _ZERO, delta_prime=jump),
    )


def _elu(alpha: float) -> tuple[Derivative, Derivative, Derivative, Derivative]:
    # φ = x on x > 0 and α(eˣ − 1) on x < 0; φ' jumps by 1 − α at 0 and φ'' by −α.
    def value(x: FloatArray) -> FloatArray:
        return alpha * np.expm1(np.minimum(x, 0.0))

    def exponential(x: FloatArray) -> FloatArray:
        return alpha * np.exp(np.minimum(x, 0.0))

    return (
        Derivative(value, _identity),
        Derivative(exponential, _constant(1.0)),
        Derivative(exponential, _ZERO, delta=1.0 - alpha),
        Derivative(exponential, _ZERO, delta=-alpha, delta_prime=1.0 - alpha),
    )


def _smooth(
    functions: tuple[Function, Function, Function, Function],
) -> tuple[Derivative, Derivative, Derivative, Derivative]:
    f0, f1, f2, f3 = functions
    return (
        Derivative(f0, f0),
        Derivative(f1, f1),
        Derivative(f2, f2),
        Derivative(f3, f3),
    )


def _erf() -> tuple[Derivative, Derivative, Derivative, Derivative]:
    scale = 2.0 / math.sqrt(math.pi)

    def d1(x: FloatArray) -> FloatArray:
        return scale * np.exp(-(x**2))

    def d2(x: FloatArray) -> FloatArray:
        return -2.0 * x * d1(x)

    def d3(x: FloatArray) -> FloatArray:
        return (4.0 * x**2 - 2.0) * d1(x)

    def d0(x: FloatArray) -> FloatArray:
        return np.asarray(special.erf(x), dtype=np.float64)

    return _smooth((d0, d1, d2, d3))


def _tanh() -> tuple[Derivative, Derivative, Derivative, Derivative]:
    def d1(x: FloatArray) -> FloatArray:
        return 1.0 - np.tanh(x) ** 2

    def d2(x: FloatArray) -> FloatArray:
        y = np.tanh(x)
        return -2.0 * y * (1.0 - y**2)

    def d3(x: FloatArray) -> FloatArray:
        y2 = np.tanh(x) ** 2
        return -2.0 * (1.0 - y2) * (1.0 - 3.0 * y2)

    return _smooth((np.tanh, d1, d2, d3))


def _gelu() -> tuple[Derivative, Derivative, Derivative, Derivative]:
    # φ(x) = x Φ(x) with Φ the standard normal distribution function (exact gelu).
    def density(x: FloatArray) -> FloatArray:
        return np.exp(-0.5 * x**2) / math.sqrt(2.0 * math.pi)

    def d0(x: FloatArray) -> FloatArray:
        return x * np.asarray(special.ndtr(x), dtype=np.float64)

    def d1(x: FloatArray) -> FloatArray:
        return np.asarray(special.ndtr(x), dtype=np.float64) + x * density(x)

    def d2(x: FloatArray) -> FloatArray:
        return (2.0 - x**2) * density(x)

    def d3(x: FloatArray) -> FloatArray:
        return (x**3 - 4.0 * x) * density(x)

    return _smooth((d0, d1, d2, d3))


def _swish() -> tuple[Derivative, Derivative, Derivative, Derivative]:
    # φ(x) = x s(x), s the logistic sigmoid: φ^(k) = k s^(k-1) + x s^(k).
    def s1(s: FloatArray) -> FloatArray:
        return s * (1.0 - s)

    def s2(s: FloatArray) -> FloatArray:
        return s * (1.0 - s) * (1.0 - 2.0 * s)

    def s3(s: FloatArray) -> FloatArray:
        return s * (1.0 - s) * (1.0 - 6.0 * s + 6.0 * s**2)

    def d0(x: FloatArray) -> FloatArray:
        return x * np.asarray(special.expit(x), dtype=np.float64)

    def d1(x: FloatArray) -> FloatArray:
        s = np.asarray(special.expit(x), dtype=np.float64)
        return s + x * s1(s)

    def d2(x: FloatArray) -> FloatArray:
        s = np.asarray(special.expit(x), dtype=np.float64)
        return 2.0 * s1(s) + x * s2(s)

    def d3(x: FloatArray) -> FloatArray:
        s = np.asarray(special.expit(x), dtype=np.float64)
        return 3.0 * s2(s) + x * s3(s)

    return _smooth((d0, d1, d2, d3))


def _quadratic(
    a0: float, a1: float, a2: float
) -> tuple[Derivative, Derivative, Derivative, Derivative]:
    def d0(x: FloatArray) -> FloatArray:
        return a0 + x * (a1 + a2 * x)

    def d1(x: FloatArray) -> FloatArray:
        return a1 + 2.0 * a2 * x

    return _smooth((d0, d1, _constant(2.0 * a2), _ZERO))


def _check_parameters(name: str, params: Mapping[str, Any]) -> dict[str, float]:
    allowed = _PARAMETERS[name]
    for key in params:
        if key not in allowed:
            expected = (
                f"one of {sorted(allowed)}"
                if allowed
                else "no parameter (this activation has none)"
            )
            raise ParameterError(f"{name}.{key}", params[key], expected)
    values = dict(allowed)
    for key, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParameterError(key, value, "a real number")
        if not math.isfinite(value):
            raise ParameterError(key, value, "a finite real number")
        values[key] = float(value)
    if name == "elu" and values["alpha"] < 0.0:
        raise ParameterError("alpha", values["alpha"], "alpha >= 0 for elu")
    return values


def _rebuild(name: str, params: dict[str, float]) -> Activation:
    return get_activation(name, **params)


def get_activation(name: str, **params: float) -> Activation:
    """Return the activation called ``name`` with its parameters.

    Parameters
    ----------
    name
        One of ``relu``, ``leaky_relu`` (``slope``, default 0.01), ``erf``,
        ``tanh``, ``gelu`` (exact, :math:`x\\Phi(x)`), ``swish`` (:math:`x
        \\operatorname{sigmoid}(x)`), ``elu`` (``alpha``, default 1) and
        ``quadratic`` (:math:`a_2 x^2 + a_1 x + a_0`, defaults 0, 0, 1).
    **params
        The activation's parameters; unknown names are rejected.

    Raises
    ------
    ParameterError
        For an unknown name, an unknown parameter or a non-finite value.
    """
    if name not in _PARAMETERS:
        raise ParameterError("activation", name, f"one of {', '.join(ACTIVATIONS)}")
    values = _check_parameters(name, params)
    builders: dict[str, Callable[[], tuple[Derivative, ...]]] = {
        "relu": lambda: _relu(0.0),
        "leaky_relu": lambda: _relu(values["slope"]),
        "erf": _erf,
        "tanh": _tanh,
        "gelu": _gelu,
        "swish": _swish,
        "elu": lambda: _elu(values["alpha"]),
        "quadratic": lambda: _quadratic(values["a0"], values["a1"], values["a2"]),
    }
    derivatives = builders[name]()
    assert len(derivatives) == 4
    return Activation(
        name, values, (derivatives[0], derivatives[1], derivatives[2], derivatives[3])
    )
