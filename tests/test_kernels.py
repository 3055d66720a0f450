"""ImplicitKernel: exact entry maps, the certified fast map on tiles, dense, Taylor."""

from __future__ import annotations

import json
import math
import pickle

import array_api_strict
import numpy as np
import pytest

from implicit_rmt.errors import NoFixedPointError, ParameterError
from implicit_rmt.kernels import ImplicitKernel

ACTIVATIONS = [
    ("relu", {}),
    ("leaky_relu", {"slope": 0.1}),
    ("erf", {}),
    ("tanh", {}),
    ("gelu", {}),
    ("swish", {}),
    ("elu", {"alpha": 0.7}),
    ("quadratic", {"a0": 0.2, "a1": 0.5, "a2": 0.4}),
]


@pytest.fixture(scope="module", params=ACTIVATIONS, ids=[a for a, _ in ACTIVATIONS])
def kernel(request: pytest.FixtureRequest) -> ImplicitKernel:
    name, params = request.param
    return ImplicitKernel(name, 0.25, 0.75, **params).prepare()


def _tile_values(rng: np.random.Generator) -> np.ndarray:
    return np.concatenate(
        [
            rng.uniform(-1, 1, 100),
            rng.normal(0, 0.05, 100),
            1 - 10.0 ** rng.uniform(-16, -1, 20),
            -1 + 10.0 ** rng.uniform(-16, -1, 20),
            [1.0, -1.0, 1 + 2e-16, 0.3, -0.3, 0.0],
        ]
    )


def test_fast_map_agrees_with_exact(kernel: ImplicitKernel) -> None:
    assert all(error <= 1e-13 for error in kernel.map_errors.values())
    t = _tile_values(np.random.default_rng(0))
    fast = kernel.entries(t, ("preactivation", "ck", "ntk"))
    exact = kernel.exact(np.clip(t, -1, 1))
    # Near t = ±1 the entry functions of kinked activations have infinite slope
    # (f' ~ (1 − |t|)^(-1/2)): the exact solver's K* carries an absolute error of
    # a few ulp, which arccos amplifies, so the reference itself is only good to
    # ~ε/sqrt(1 − |t|). Elsewhere the certified bound 1e-13·max|f| applies (2e-13
    # for points off the certification grid).
    conditioning = 1e-15 / np.sqrt(np.maximum(1 - np.abs(np.clip(t, -1, 1)), 1e-300))
    for name, values in fast.items():
        scale = np.max(np.abs(exact[name]))
        bound = (2e-13 + np.minimum(conditioning, 1.0)) * scale
        assert np.all(np.abs(values - exact[name]) <= bound), name


def test_array_api_strict_tile(kernel: ImplicitKernel) -> None:
    rng = np.random.default_rng(1)
    t = np.clip(rng.normal(0, 0.2, (30, 40)), -1, 1)
    t[0, 0] = 1.0
    strict = array_api_strict.asarray(t)
    out = kernel.entries(strict)
    reference = kernel.entries(t)
    assert set(out) == {"ck", "ntk"}
    for name, values in out.items():
        assert type(values) is type(strict)
        assert values.dtype == array_api_strict.float64
        assert values.shape == (30, 40)
        np.testing.assert_array_equal(np.asarray(values), reference[name])


def test_float32_tile(kernel: ImplicitKernel) -> None:
    t = np.linspace(-1, 1, 101).astype(np.float32)
    out = kernel.entries(t, "ck")["ck"]
    assert out.dtype == np.float32
    exact = kernel.ck(t.astype(np.float64))
    assert np.max(np.abs(out - exact)) <= 1e-6 * np.max(np.abs(exact))


def test_dense(kernel: ImplicitKernel) -> None:
    rng = np.random.default_rng(2)
    X = rng.standard_normal((7, 14))
    X /= np.linalg.norm(X, axis=0)
    dense = kernel.dense(X)
    t = np.clip(X.T @ X, -1, 1)
    exact = kernel.exact(t)
    for key, name in (("K", "preactivation"), ("ck", "ck"), ("ntk", "ntk")):
        matrix = dense[key]
        assert matrix.shape == (14, 14) and matrix.dtype == np.float64
        assert np.array_equal(matrix, matrix.T)
        assert np.all(np.diag(matrix) == kernel.exact(np.ones(1))[name][0])
        # Off the diagonal (whose t is 1 only up to rounding, see above).
        off = ~np.eye(14, dtype=bool)
        error = np.max(np.abs(matrix - exact[name])[off])
        assert error <= 2e-13 * np.max(np.abs(matrix))
    assert np.all(np.diag(dense["K"]) == kernel.tau)


def test_taylor_matches_differences(kernel: ImplicitKernel) -> None:
    # Richardson-extrapolated differences of the exact maps: truncation ~h⁴ ≈ 1e-9
    # at h = 5e-3, rounding ~1e-15/h² ≈ 4e-11 for the second derivative.
    h = 5e-3
    for name in ("ck", "ntk"):
        taylor = kernel.taylor(name)
        f = getattr(kernel, name)

        def first(step: float, f=f) -> float:
            values = f(np.array([-step, step]))
            return float(values[1] - values[0]) / (2 * step)

        def second(step: float, f=f) -> float:
            values = f(np.array([-step, 0.0, step]))
            return float(values[2] - 2 * values[1] + values[0]) / step**2

        slope = (4 * first(h / 2) - first(h)) / 3
        curvature = (4 * second(h / 2) - second(h)) / 3
        assert taylor.value == pytest.approx(float(f(np.zeros(1))[0]), abs=1e-15)
        assert taylor.slope == pytest.approx(slope, abs=1e-8)
        assert taylor.curvature == pytest.approx(curvature, abs=1e-6)
        assert taylor.diagonal == float(f(np.ones(1))[0])


def test_relu_ntk_diagonal_closed_form() -> None:
    # At t = 1: K* = τ, g = τ/2, Ė = 1/2, so θ(1) = τ/2 + τ (1/2)/(1 − σ_a²/2).
    kernel = ImplicitKernel("relu", 0.2, 0.8)
    tau = 0.8 / 0.9
    assert kernel.tau == pytest.approx(tau, rel=4e-16)
    assert kernel.ntk(np.ones(1))[0] == pytest.approx(
        tau / 2 + tau / 2 / 0.9, rel=1e-15
    )
    assert kernel.ck(np.ones(1))[0] == pytest.approx(tau / 2, rel=1e-15)


def test_describe_and_pickle() -> None:
    kernel = ImplicitKernel("leaky_relu", 0.3, 0.6, slope=0.2).prepare()
    description = json.loads(json.dumps(kernel.describe()))
    assert description == {
        "activation": "leaky_relu",
        "activation_params": {"slope": 0.2},
        "sigma_a2": 0.3,
        "sigma_b2": 0.6,
        "tau": kernel.tau,
    }
    copy = pickle.loads(pickle.dumps(kernel))
    assert copy._maps == kernel._maps  # travels built, no rebuild on workers
    t = np.linspace(-1, 1, 5)
    assert np.array_equal(copy.entries(t)["ntk"], kernel.entries(t)["ntk"])


def test_bad_inputs() -> None:
    with pytest.raises(ParameterError, match="activation='sigmoid'"):
        ImplicitKernel("sigmoid")
    with pytest.raises(ParameterError, match=r"sigma_b2=-1 is invalid"):
        ImplicitKernel("relu", 0.2, -1)
    with pytest.raises(NoFixedPointError, match=r"sigma_a2=2.2 .*sigma_a2 < 2"):
        ImplicitKernel("relu", 2.2, 0.8)
    kernel = ImplicitKernel()
    with pytest.raises(ParameterError, match=r"X='column 1 of norm 2' .*unit norm"):
        kernel.dense(np.array([[1.0, 2.0], [0.0, 0.0]]))
    with pytest.raises(ParameterError, match=r"X='array of shape \(3,\)'"):
        kernel.dense(np.ones(3))
    with pytest.raises(ParameterError, match="kernels="):
        kernel.entries(np.zeros(3), ("ck", "gram"))
    with pytest.raises(ParameterError, match="finite data"):
        kernel.dense(np.array([[math.nan], [1.0]]))


@pytest.mark.gpu
def test_cupy_tile() -> None:
    cupy = pytest.importorskip("cupy")
    kernel = ImplicitKernel().prepare()
    rng = np.random.default_rng(4)
    t = np.clip(rng.normal(0, 0.2, (64, 48)), -1, 1)
    t[:5, 0] = [1.0, -1.0, 0.9, -0.95, 1 + 1e-16]
    out = kernel.entries(cupy.asarray(t))
    reference = kernel.entries(t)
    for name, values in out.items():
        assert isinstance(values, cupy.ndarray) and values.dtype == cupy.float64
        # Same arithmetic; fused multiply-adds on the device may differ by an ulp
        # per Horner/Clenshaw step, ~25 steps.
        scale = np.max(np.abs(reference[name]))
        assert np.max(np.abs(cupy.asnumpy(values) - reference[name])) <= 1e-14 * scale


def test_certification_catches_a_map_that_misses() -> None:
    # A jump at t = 0.1 cannot be interpolated by a polynomial: the check against
    # the "exact" function must report it.
    from implicit_rmt.entry_maps import AccuracyWarning, build_entry_maps

    def exact(t: np.ndarray) -> dict[str, np.ndarray]:
        return {"step": np.where(t > 0.1, 1.0, 0.0)}

    with pytest.warns(AccuracyWarning, match="'step' differs from the exact"):
        maps = build_entry_maps(exact, ["step"])
    assert maps["step"].error > 0.1
