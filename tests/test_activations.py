"""Activations and their derivatives as generalised functions (docs/theory.md, (6))."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

from implicit_rmt.activations import ACTIVATIONS, get_activation
from implicit_rmt.errors import ParameterError

CASES = [
    ("relu", {}),
    ("leaky_relu", {"slope": 0.1}),
    ("erf", {}),
    ("tanh", {}),
    ("gelu", {}),
    ("swish", {}),
    ("elu", {"alpha": 1.0}),
    ("elu", {"alpha": 0.6}),
    ("quadratic", {"a0": 0.3, "a1": -0.4, "a2": 0.7}),
]


@pytest.mark.parametrize(("name", "params"), CASES)
def test_each_derivative_is_the_slope_of_the_previous(name: str, params: dict) -> None:
    activation = get_activation(name, **params)
    # Points away from the kink at 0; central differences with step h have error
    # h² f'''/6 ≈ 1e-10 and rounding ≈ 1e-16/h ≈ 1e-11.
    x = np.concatenate([np.linspace(-3, -0.05, 20), np.linspace(0.05, 3, 20)])
    h = 1e-5
    for order in range(3):
        lower = activation.derivatives[order].smooth
        upper = activation.derivatives[order + 1].smooth
        slope = (lower(x + h) - lower(x - h)) / (2 * h)
        np.testing.assert_allclose(upper(x), slope, atol=1e-8)


@pytest.mark.parametrize(("name", "params"), CASES)
def test_point_masses_are_the_jumps_at_zero(name: str, params: dict) -> None:
    activation = get_activation(name, **params)
    tiny = np.array([1e-300])
    for order in range(3):
        derivative = activation.derivatives[order]
        following = activation.derivatives[order + 1]
        jump = float(derivative.positive(tiny)[0] - derivative.negative(-tiny)[0])
        assert following.delta == pytest.approx(jump, abs=1e-15)
        assert following.delta_prime == derivative.delta
    assert activation.derivatives[0].delta == 0.0


def test_closed_forms_of_the_activations() -> None:
    x = np.linspace(-4, 4, 81)
    assert np.array_equal(get_activation("relu").phi(x), np.maximum(x, 0))
    leaky = get_activation("leaky_relu", slope=0.2).phi(x)
    assert np.allclose(leaky, np.where(x > 0, x, 0.2 * x), rtol=0, atol=0)
    assert np.allclose(get_activation("erf").phi(x), special.erf(x), rtol=1e-16)
    assert np.allclose(get_activation("gelu").phi(x), x * special.ndtr(x), rtol=1e-16)
    swish = get_activation("swish").phi(x)
    assert np.allclose(swish, x / (1 + np.exp(-x)), rtol=1e-15)
    elu = get_activation("elu", alpha=0.5).phi(x)
    assert np.allclose(elu, np.where(x > 0, x, 0.5 * (np.exp(x) - 1)), rtol=1e-15)
    quad = get_activation("quadratic", a0=1.0, a1=2.0, a2=3.0).phi(x)
    assert np.allclose(quad, 3 * x**2 + 2 * x + 1, rtol=1e-15)
    assert get_activation("leaky_relu").params == {"slope": 0.01}
    assert get_activation("elu").params == {"alpha": 1.0}
    assert math.isclose(get_activation("tanh").dphi(np.array([0.0]))[0], 1.0)


def test_every_listed_activation_exists() -> None:
    for name in ACTIVATIONS:
        assert get_activation(name).name == name


def test_unknown_activation() -> None:
    with pytest.raises(ParameterError, match=r"activation='softplus' .*one of relu"):
        get_activation("softplus")


def test_unknown_parameter() -> None:
    with pytest.raises(ParameterError, match=r"relu.slope=0.1 .*no parameter"):
        get_activation("relu", slope=0.1)
    with pytest.raises(ParameterError, match=r"elu.beta=1.0 .*one of \['alpha'\]"):
        get_activation("elu", beta=1.0)


@pytest.mark.parametrize("value", [math.nan, math.inf, "1"])
def test_non_finite_parameter(value: object) -> None:
    with pytest.raises(ParameterError, match="slope="):
        get_activation("leaky_relu", slope=value)  # type: ignore[arg-type]


def test_negative_elu_alpha() -> None:
    with pytest.raises(ParameterError, match=r"alpha=-1.0 .*alpha >= 0"):
        get_activation("elu", alpha=-1.0)
