"""Spectra: dense eigenvalues, SLQ densities with their error, Marchenko–Pastur.

SLQ is checked through moments: with m Lanczos steps the Gauss quadrature of one
probe integrates polynomials of degree ≤ 2m − 1 exactly, so the SLQ estimate of
``tr(A^k)/n`` differs from the truth only by the probe (Hutchinson) noise, whose
standard error is estimated from the spread over probes; we allow 5 standard
errors (a 1-in-10⁶ event for Gaussian noise) plus rounding.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
import scipy.integrate

from implicit_rmt.errors import ParameterError
from implicit_rmt.operators import DenseOperator
from implicit_rmt.spectra import (
    dense_eigenvalues,
    equivalent_outlier,
    lanczos_density,
    marchenko_pastur_density,
    marchenko_pastur_support,
)

EPS = float(np.finfo(np.float64).eps)


def wigner(n: int, seed: int) -> npt.NDArray[np.float64]:
    g = np.random.default_rng(seed).standard_normal((n, n))
    return (g + g.T) / np.sqrt(2 * n)


def sphere(d: int, n: int, seed: int) -> npt.NDArray[np.float64]:
    g = np.random.default_rng(seed).standard_normal((d, n))
    unit: npt.NDArray[np.float64] = g / np.linalg.norm(g, axis=0)
    return unit


def test_dense_eigenvalues_match_numpy() -> None:
    matrix = wigner(200, 0)
    values = dense_eigenvalues(matrix)
    assert np.all(np.diff(values) >= 0)
    assert np.max(np.abs(values - np.linalg.eigvalsh(matrix))) <= EPS * 200 * 2.5


@pytest.mark.parametrize("power", [1, 2, 3, 4])
def test_slq_moments_within_stated_error(power: int) -> None:
    n = 400
    matrix = wigner(n, 1) + 0.5 * np.eye(n)
    operator = DenseOperator(matrix)
    density = lanczos_density(operator, probes=24, steps=20, seed=3)
    assert operator.passes == 20
    per_probe = np.sum(density.weights * density.nodes**power, axis=1)
    estimate = per_probe.mean()
    stderr = per_probe.std(ddof=1) / math.sqrt(per_probe.size)
    exact = np.trace(np.linalg.matrix_power(matrix, power)) / n
    assert abs(estimate - exact) <= 5 * stderr + 1e-12


def test_slq_density_integrates_to_one_and_matches_histogram() -> None:
    n = 600
    matrix = wigner(n, 2)
    density = lanczos_density(DenseOperator(matrix), probes=16, steps=60, bins=40)
    widths = np.diff(density.edges)
    assert abs(np.sum(density.density * widths) - 1.0) <= 1e-10
    # The distribution functions agree within the probe noise: a Hutchinson
    # estimate of a spectral measure has standard deviation about
    # sqrt(2/(n·probes)) per bin mass, and quadrature smearing moves mass by at
    # most one node spacing (~4/steps) — 0.05 bounds both with room.
    eigenvalues = np.linalg.eigvalsh(matrix)
    slq_cdf = np.cumsum(density.density * widths)
    exact_cdf = np.searchsorted(eigenvalues, density.edges[1:], side="right") / n
    assert np.max(np.abs(slq_cdf - exact_cdf)) <= 0.05
    assert np.all(density.stderr >= 0)


def test_slq_refuses_bad_arguments() -> None:
    with pytest.raises(ParameterError, match="probes"):
        lanczos_density(DenseOperator(np.eye(4)), probes=0)


@pytest.mark.parametrize(("n", "d"), [(600, 1200), (1200, 600)])
def test_marchenko_pastur_matches_sample_spectrum(n: int, d: int) -> None:
    beta, mu = 1.7, 0.3
    x = sphere(d, n, seed=n)
    eigenvalues = np.linalg.eigvalsh(beta * x.T @ x + mu * np.eye(n))
    ratio = n / d
    low, high = marchenko_pastur_support(ratio, beta, mu)
    _, atom = marchenko_pastur_density(np.array([mu]), ratio, beta, mu)
    assert atom == pytest.approx(max(0.0, 1 - d / n))
    total, _ = scipy.integrate.quad(
        lambda s: float(marchenko_pastur_density(np.array([s]), ratio, beta, mu)[0][0]),
        low,
        high,
        limit=200,
    )
    assert total + atom == pytest.approx(1.0, abs=1e-6)
    # Kolmogorov distance between the sample spectrum and the law. Bulk
    # fluctuations are O(1/n) and the edges move by O(n^(-2/3)) ≈ 0.01 at these
    # sizes (measured: 0.004 and 0.001); a ratio off by 10 % gives 0.023.
    grid = np.linspace(low, high, 41)[1:-1]
    law = atom * (grid >= mu) + np.array(
        [
            scipy.integrate.quad(
                lambda s: float(
                    marchenko_pastur_density(np.array([s]), ratio, beta, mu)[0][0]
                ),
                low,
                g,
                limit=200,
            )[0]
            for g in grid
        ]
    )
    sample = np.searchsorted(eigenvalues, grid, side="right") / n
    assert np.max(np.abs(sample - law)) <= 0.01


def test_outlier_of_the_equivalent() -> None:
    n, d = 800, 400
    alpha, beta, mu = 0.05, 1.0, 0.2
    x = sphere(d, n, seed=9)
    matrix = alpha * np.ones((n, n)) + beta * x.T @ x + mu * np.eye(n)
    top = np.linalg.eigvalsh(matrix)[-1]
    # First-order perturbation of the spike αn by the bulk. Left out: the
    # fluctuation of β‖X1‖²/n, standard deviation β√(2/d) ≈ 0.07, and the second
    # order term (variance of the bulk)/αn ≈ β²(n/d)/(αn) = 0.05; 0.5 covers both.
    assert abs(top - equivalent_outlier(n, alpha, beta, mu)) <= 0.5
    assert top > marchenko_pastur_support(n / d, beta, mu)[1] + 10


def test_marchenko_pastur_refuses_bad_ratio() -> None:
    with pytest.raises(ParameterError, match="ratio"):
        marchenko_pastur_density(np.zeros(3), 0.0)
