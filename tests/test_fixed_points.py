"""The diagonal fixed point τ and the off-diagonal map t ↦ K*(t) (equations (2)–(4))."""

from __future__ import annotations

import math

import numpy as np
import pytest

from implicit_rmt.activations import get_activation
from implicit_rmt.errors import NoFixedPointError, ParameterError
from implicit_rmt.fixed_points import solve_preactivation, solve_tau
from implicit_rmt.gaussian import moment

ACTIVATIONS = [
    ("relu", {}),
    ("leaky_relu", {"slope": 0.2}),
    ("erf", {}),
    ("tanh", {}),
    ("gelu", {}),
    ("swish", {}),
    ("elu", {"alpha": 0.8}),
    ("quadratic", {"a0": 0.1, "a1": 0.6, "a2": 0.3}),
]


@pytest.mark.parametrize(("a2", "b2"), [(0.2, 0.8), (1.5, 0.3), (1.99, 1.0)])
def test_relu_tau_closed_form(a2: float, b2: float) -> None:
    # E[relu(u)²] = τ/2, so τ = σ_b² / (1 − σ_a²/2).
    tau = solve_tau(get_activation("relu"), a2, b2)
    assert tau == pytest.approx(b2 / (1 - a2 / 2), rel=4e-16)


def test_leaky_relu_tau_closed_form() -> None:
    slope = 0.3
    tau = solve_tau(get_activation("leaky_relu", slope=slope), 0.5, 0.6)
    assert tau == pytest.approx(0.6 / (1 - 0.5 * (1 + slope**2) / 2), rel=4e-16)


def test_quadratic_tau_closed_form() -> None:
    # E[φ(u)²] = (a0 + a2 τ)² + a1² τ + 2 a2² τ²: τ is the smaller root of a
    # quadratic equation.
    a0, a1, a2, s_a, s_b = 0.1, 0.6, 0.3, 0.4, 0.7
    activation = get_activation("quadratic", a0=a0, a1=a1, a2=a2)
    coefficients = [
        s_a * 3 * a2**2,
        s_a * (2 * a0 * a2 + a1**2) - 1.0,
        s_a * a0**2 + s_b,
    ]
    expected = min(r.real for r in np.roots(coefficients) if r.real > 0)
    assert solve_tau(activation, s_a, s_b) == pytest.approx(expected, rel=1e-14)


@pytest.mark.parametrize(("name", "params"), ACTIVATIONS)
def test_preactivation_solves_its_equation(name: str, params: dict) -> None:
    activation = get_activation(name, **params)
    a2, b2 = 0.3, 0.7
    tau = solve_tau(activation, a2, b2)
    assert abs(a2 * moment(activation, tau, np.array([tau]), 0)[0] + b2 - tau) < 4e-16
    t = np.concatenate([np.linspace(-1, 1, 41), [-1e-3, 1e-9, 1 - 1e-12]])
    K = solve_preactivation(activation, a2, b2, tau, t)
    residual = K - a2 * moment(activation, tau, K, 0) - b2 * t
    # The residual is a difference of O(τ) terms: a few ulp of τ.
    assert np.max(np.abs(residual)) <= 4 * np.spacing(tau)
    assert K[t == 1.0][0] == pytest.approx(tau, abs=4 * np.spacing(tau))
    assert np.all(np.diff(K[:41]) > 0)  # K*(t) increases with t
    assert np.all(np.abs(K) <= tau)


def test_preactivation_by_plain_iteration() -> None:
    # The fixed-point iteration K ← σ_a² E0(K) + σ_b² t, an independent solver.
    activation = get_activation("relu")
    tau = solve_tau(activation, 0.2, 0.8)
    t = np.linspace(-1, 1, 9)
    K = 0.8 * t
    for _ in range(100):
        K = 0.2 * moment(activation, tau, K, 0) + 0.8 * t
    newton = solve_preactivation(activation, 0.2, 0.8, tau, t)
    np.testing.assert_allclose(newton, K, rtol=0, atol=4e-16)


def test_odd_activation_keeps_orthogonal_points_orthogonal() -> None:
    activation = get_activation("tanh")
    tau = solve_tau(activation, 0.4, 0.6)
    # Zero up to the quadrature's rounding of E0(0) = 0.
    assert abs(solve_preactivation(activation, 0.4, 0.6, tau, np.zeros(1))[0]) < 1e-16


@pytest.mark.parametrize("a2", [2.0, 2.5])
def test_relu_without_fixed_point(a2: float) -> None:
    with pytest.raises(NoFixedPointError, match=rf"sigma_a2={a2!r} .*sigma_a2 < 2 "):
        solve_tau(get_activation("relu"), a2, 0.8)


def test_quadratic_limit_is_named() -> None:
    # τ exists iff 1 ≥ 12 σ_a² σ_b² for φ = t², so the limit is 1/(12 σ_b²); the
    # geometric bracket may shave ~0.1% off it (fixed_points.py, step 1).
    activation = get_activation("quadratic")
    with pytest.raises(NoFixedPointError) as info:
        solve_tau(activation, 0.5, 0.8)
    limit = float(str(info.value).split("sigma_a2 < ")[1].split()[0])
    assert 0.998 / 9.6 < limit <= 1 / 9.6


def test_erf_without_contraction() -> None:
    with pytest.raises(NoFixedPointError, match="does not contract"):
        solve_tau(get_activation("erf"), 5.0, 0.8)


@pytest.mark.parametrize(
    ("a2", "b2", "bad"),
    [
        (0.0, 0.8, "sigma_a2"),
        (-0.1, 0.8, "sigma_a2"),
        (0.2, 0.0, "sigma_b2"),
        (0.2, math.nan, "sigma_b2"),
        (math.inf, 0.8, "sigma_a2"),
        ("0.2", 0.8, "sigma_a2"),
    ],
)
def test_bad_variances(a2: object, b2: object, bad: str) -> None:
    with pytest.raises(ParameterError, match=rf"^{bad}=.* is invalid: expected"):
        solve_tau(get_activation("relu"), a2, b2)  # type: ignore[arg-type]
