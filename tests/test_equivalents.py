"""The equivalents K̄ = α11ᵀ + βXᵀX + μI and the matched quadratic network.

The operator-norm errors ‖G* − Ḡ‖₂ and ‖Θ* − Θ̄‖₂ are measured on dense kernels of
random points on the sphere with d/n fixed; the theory (docs/theory.md, section 5,
equations (18)–(20)) predicts decay like n^(-1/2) with the finite-d terms, and an
error of order |f''(0)| n/(2d), which does not vanish, without them.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.sparse.linalg import eigsh

from implicit_rmt.equivalents import (
    Coefficients,
    equivalent_coefficients,
    explicit_entries,
    match_quadratic,
)
from implicit_rmt.errors import NoQuadraticMatchError, ParameterError
from implicit_rmt.kernels import ImplicitKernel


def _sphere(d: int, n: int, rng: np.random.Generator) -> np.ndarray:
    X = rng.standard_normal((d, n))
    return X / np.linalg.norm(X, axis=0)


def _opnorm(M: np.ndarray) -> float:
    """‖M‖₂ of a symmetric matrix: the largest |eigenvalue| by Lanczos.

    Checked against dense eigvalsh in test_opnorm_matches_dense; tol=1e-10 gives
    the norm to ~1e-10 relative, far below the effects measured here.
    """
    value = eigsh(M, k=1, which="LM", tol=1e-10, return_eigenvectors=False)
    return float(abs(value[0]))


def _equivalent(c: Coefficients, T: np.ndarray) -> np.ndarray:
    return c.alpha + c.beta * T + c.mu * np.eye(T.shape[0])


def test_opnorm_matches_dense() -> None:
    rng = np.random.default_rng(1)
    M = rng.standard_normal((300, 300))
    M = M + M.T
    reference = np.max(np.abs(np.linalg.eigvalsh(M)))
    assert abs(_opnorm(M) - reference) <= 1e-9 * reference


@pytest.mark.parametrize("which", ["ck", "ntk"])
@pytest.mark.parametrize(
    ("activation", "params"),
    [("relu", {}), ("leaky_relu", {"slope": 0.2}), ("elu", {}), ("gelu", {})],
)
def test_matched_quadratic_has_the_same_coefficients(
    activation: str, params: dict, which: str
) -> None:
    kernel = ImplicitKernel(activation, 0.3, 0.7, **params)
    dim = 200
    coefficients = equivalent_coefficients(kernel, which, dim)
    branches = match_quadratic(coefficients, all_branches=True)
    assert len(branches) == 8
    assert match_quadratic(coefficients) == branches[0]
    assert branches[0].a2 > 0 and branches[0].a1 > 0
    assert len({b.signs for b in branches}) == 8
    t = np.array([0.0, 1.0, -1.0])
    for branch in branches:
        # Σ(t) = c0 + c1 t + c2 t² read back from three values; its equivalent is
        # α = c0 + c2/d, β = c1, μ = c2 (1 − 1/d) (equation (19) for a quadratic).
        at0, at1, atm1 = explicit_entries(branch, which, t)
        c0, c1, c2 = at0, 0.5 * (at1 - atm1), 0.5 * (at1 + atm1) - at0
        scale = coefficients.diagonal
        assert abs(c0 + c2 / dim - coefficients.alpha) <= 1e-14 * scale
        assert abs(c1 - coefficients.beta) <= 1e-14 * scale
        assert abs(c2 * (1 - 1 / dim) - coefficients.mu) <= 1e-14 * scale
        # Same diagonal f(1) = α + β + μ as the implicit kernel.
        assert abs(at1 - coefficients.diagonal) <= 1e-14 * scale


def test_explicit_entries_closed_forms() -> None:
    kernel = ImplicitKernel()
    match = match_quadratic(equivalent_coefficients(kernel, "ck", 100))
    a0, a1, a2 = match.a0, match.a1, match.a2
    t = np.linspace(-1, 1, 11)
    ck = (a0 + a2) ** 2 + a1**2 * t + 2 * a2**2 * t**2
    ntk = (a0 + a2) ** 2 + 2 * a1**2 * t + 6 * a2**2 * t**2
    # Both sides round differently; a few ulp of the largest term.
    np.testing.assert_allclose(explicit_entries(match, "ck", t), ck, atol=4e-16)
    np.testing.assert_allclose(explicit_entries(match, "ntk", t), ntk, atol=1e-15)


def test_explicit_entries_by_monte_carlo() -> None:
    # CK E[σ(u)σ(v)] and NTK E[σ(u)σ(v)] + t E[σ'(u)σ'(v)] for unit-variance (u, v)
    # with correlation t, sampled directly; 5 standard errors of the mean.
    match = match_quadratic(equivalent_coefficients(ImplicitKernel(), "ck", 100))
    rng = np.random.default_rng(3)
    t = 0.4
    u = rng.standard_normal(2_000_000)
    v = t * u + math.sqrt(1 - t**2) * rng.standard_normal(u.size)

    def sigma(x: np.ndarray) -> np.ndarray:
        return match.a2 * x**2 + match.a1 * x + match.a0

    def slope(x: np.ndarray) -> np.ndarray:
        return 2 * match.a2 * x + match.a1

    ck = sigma(u) * sigma(v)
    ntk = ck + t * slope(u) * slope(v)
    for which, samples in (("ck", ck), ("ntk", ntk)):
        error = samples.std() / math.sqrt(u.size)
        exact = float(explicit_entries(match, which, np.array(t)))
        assert abs(samples.mean() - exact) < 5 * error, which


def test_no_quadratic_for_odd_activation() -> None:
    # tanh is odd: g(0) = g''(0) = 0, so α = 0 < 2a₂²/d and (a0 + a2)² < 0.
    coefficients = equivalent_coefficients(ImplicitKernel("tanh"), "ck", 100)
    with pytest.raises(NoQuadraticMatchError, match=r"alpha \(ck\)"):
        match_quadratic(coefficients)


def test_no_quadratic_for_negative_mu() -> None:
    bad = Coefficients("ntk", 50, True, 1.0, 1.0, -0.1, 1.0, 1.0, 0.0, 1.9, 1.0)
    with pytest.raises(NoQuadraticMatchError, match=r"mu \(ntk\)=-0.1.*mu >= 0"):
        match_quadratic(bad)


@pytest.mark.parametrize("dim", [0, 1, -5, 2.5, True])
def test_bad_dimension(dim: object) -> None:
    with pytest.raises(ParameterError, match=rf"dim={dim!r} is invalid"):
        equivalent_coefficients(ImplicitKernel(), "ck", dim)  # type: ignore[arg-type]


def test_bad_kernel_name() -> None:
    with pytest.raises(ParameterError, match="kernels='cntk'"):
        equivalent_coefficients(ImplicitKernel(), "cntk", 10)


@pytest.mark.slow
def test_operator_norm_error_decays_like_inverse_sqrt_n() -> None:
    kernel = ImplicitKernel().prepare()
    rng = np.random.default_rng(7)
    sizes = (250, 500, 1000, 2000)
    seeds = (4, 3, 2, 1)
    ratio = 2  # n / d
    errors: dict[str, list[float]] = {"ck": [], "ntk": []}
    leading: dict[str, list[float]] = {"ck": [], "ntk": []}
    explicit: dict[str, list[float]] = {"ck": [], "ntk": []}
    for n, count in zip(sizes, seeds, strict=True):
        d = n // ratio
        total = {key: np.zeros(3) for key in errors}
        for _ in range(count):
            X = _sphere(d, n, rng)
            T = X.T @ X
            dense = kernel.dense(X)
            for which in errors:
                full = equivalent_coefficients(kernel, which, d)
                plain = equivalent_coefficients(kernel, which, d, finite_d=False)
                sigma = explicit_entries(match_quadratic(full), which, T)
                total[which] += [
                    _opnorm(dense[which] - _equivalent(full, T)),
                    _opnorm(dense[which] - _equivalent(plain, T)),
                    _opnorm(dense[which] - sigma),
                ]
        for which in errors:
            mean = total[which] / count
            errors[which].append(mean[0])
            leading[which].append(mean[1])
            explicit[which].append(mean[2])

    for which in errors:
        slope = np.polyfit(np.log(sizes), np.log(errors[which]), 1)[0]
        # Measured about −0.5 for both kernels (relu); the spread over seeds of
        # each point is a few percent, so ±0.15 over a factor 8 in n is generous.
        assert -0.65 < slope < -0.35, (which, slope, errors[which])
        # Without the f''(0)/(2d) terms the error does not vanish: α is off by
        # f''(0)/(2d) on the n-fold eigenvalue of 11ᵀ, i.e. by f''(0) n/(2d).
        for full, plain in zip(errors[which], leading[which], strict=True):
            assert plain > 2.0 * full
        # The matched quadratic's explicit kernel is close to the implicit one.
        explicit_slope = np.polyfit(np.log(sizes), np.log(explicit[which]), 1)[0]
        assert explicit_slope < -0.3, (which, explicit_slope, explicit[which])


@pytest.mark.parametrize("which", ["ck", "ntk"])
def test_matched_quadratic_spectrum_agrees(which: str) -> None:
    kernel = ImplicitKernel().prepare()
    rng = np.random.default_rng(11)
    gaps = []
    for n in (200, 800):
        X = _sphere(n // 2, n, rng)
        T = X.T @ X
        implicit = np.linalg.eigvalsh(kernel.dense(X)[which])
        match = match_quadratic(equivalent_coefficients(kernel, which, n // 2))
        explicit = np.linalg.eigvalsh(explicit_entries(match, which, T))
        # Largest gap between the ordered spectra, relative to the bulk's edge (the
        # top eigenvalue is the α n outlier, so the second largest sets the scale).
        gaps.append(np.max(np.abs(implicit - explicit)) / implicit[-2])
    assert gaps[1] < gaps[0]
    assert gaps[1] < 0.05, gaps
