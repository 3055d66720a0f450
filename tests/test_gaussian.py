"""Gaussian moments E_k(K) = E[φ^(k)(u) φ^(k)(v)]: closed forms against quadrature.

The sector-split polar quadrature (docs/theory.md, equation (10)) is the only
route for tanh, gelu, swish and elu; it is checked here on every closed form
(equations (7)–(9)) and, for the others, against Price's theorem
E_{k+1} = dE_k/dK (equation (5)), against one-dimensional adaptive quadrature on
the diagonal, and against Monte-Carlo sampling.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate

from implicit_rmt.activations import get_activation
from implicit_rmt.gaussian import closed_form_moment, moment, quadrature_moment

CLOSED = [
    ("relu", {}),
    ("leaky_relu", {"slope": 0.15}),
    ("erf", {}),
    ("quadratic", {"a0": 0.3, "a1": -0.5, "a2": 0.7}),
]
QUADRATURE_ONLY = [
    ("tanh", {}),
    ("gelu", {}),
    ("swish", {}),
    ("elu", {"alpha": 1.0}),
    ("elu", {"alpha": 0.6}),
]


@pytest.mark.parametrize("tau", [0.3, 1.0, 2.5, 30.0])
@pytest.mark.parametrize("order", [0, 1, 2, 3])
@pytest.mark.parametrize(("name", "params"), CLOSED)
def test_quadrature_reproduces_closed_forms(
    name: str, params: dict, order: int, tau: float
) -> None:
    activation = get_activation(name, **params)
    K = tau * np.linspace(-0.98, 0.98, 25)
    exact = closed_form_moment(activation, tau, K, order)
    approximate = quadrature_moment(activation, tau, K, order)
    # Measured ≤ 4.7e-14 of the largest value (64 radial × 4·48 angular nodes,
    # more for τ > 6 where derivatives such as erf' narrow like 1/√τ).
    scale = np.max(np.abs(exact)) + 1e-300
    np.testing.assert_allclose(approximate, exact, rtol=0, atol=5e-14 * scale)


@pytest.mark.parametrize(("name", "params"), CLOSED + QUADRATURE_ONLY)
def test_diagonal_by_adaptive_quadrature(name: str, params: dict) -> None:
    activation = get_activation(name, **params)
    tau = 0.8
    for order in (0, 1):
        derivative = activation.derivatives[order]

        def integrand(z: float, d=derivative) -> float:
            x = np.array([math.sqrt(tau) * z])
            return float(d.smooth(x)[0] ** 2) * math.exp(-0.5 * z * z)

        pieces = [
            integrate.quad(integrand, a, b, epsabs=1e-14, epsrel=1e-13)[0]
            for a, b in ((-12, 0), (0, 12))
        ]
        reference = sum(pieces) / math.sqrt(2 * math.pi)
        value = moment(activation, tau, np.array([tau]), order)[0]
        assert value == pytest.approx(reference, rel=1e-13)


@pytest.mark.parametrize("order", [0, 1, 2])
@pytest.mark.parametrize(("name", "params"), QUADRATURE_ONLY + CLOSED[:1])
def test_price_theorem(name: str, params: dict, order: int) -> None:
    # E_{k+1} = dE_k/dK. Richardson-extrapolated central differences with steps h
    # and h/2 have truncation error ~h⁴ |E^(k+5)| ~ 1e-10 at h = 2e-3 (|E^(k+5)| is
    # O(10) here) and rounding ~1e-15/h ~ 1e-12; 1e-8 of the scale leaves room for
    # both. Without the point masses of kinked activations, orders 2 and 3 would be
    # off by O(0.1).
    activation = get_activation(name, **params)
    tau = 1.1
    K = tau * np.array([-0.6, -0.2, 0.0, 0.3, 0.7])

    def derivative(h: float) -> np.ndarray:
        upper = moment(activation, tau, K + h, order)
        lower = moment(activation, tau, K - h, order)
        return (upper - lower) / (2 * h)

    h = 2e-3
    richardson = (4 * derivative(h / 2) - derivative(h)) / 3
    expected = moment(activation, tau, K, order + 1)
    scale = np.max(np.abs(expected)) + 1e-12
    np.testing.assert_allclose(expected, richardson, rtol=0, atol=1e-8 * scale)


@pytest.mark.parametrize(("name", "params"), QUADRATURE_ONLY)
def test_monte_carlo(name: str, params: dict) -> None:
    activation = get_activation(name, **params)
    rng = np.random.default_rng(5)
    tau, K = 0.9, 0.5
    u = math.sqrt(tau) * rng.standard_normal(1_000_000)
    v = (K / tau) * u + math.sqrt(tau - K**2 / tau) * rng.standard_normal(u.size)
    for order in (0, 1):
        d = activation.derivatives[order].smooth
        samples = d(u) * d(v)
        standard_error = samples.std() / math.sqrt(u.size)
        value = moment(activation, tau, np.array([K]), order)[0]
        assert abs(samples.mean() - value) < 5 * standard_error


def test_relu_arc_cosine_values() -> None:
    relu = get_activation("relu")
    # ρ = 0: E0 = τ/(2π), E1 = 1/4; ρ = 1: E0 = τ/2, E1 = 1/2.
    values = closed_form_moment(relu, 2.0, np.array([0.0, 2.0]), 0)
    np.testing.assert_allclose(values, [1 / math.pi, 1.0], rtol=1e-15)
    values = closed_form_moment(relu, 2.0, np.array([0.0, 2.0]), 1)
    np.testing.assert_allclose(values, [0.25, 0.5], rtol=1e-15)
