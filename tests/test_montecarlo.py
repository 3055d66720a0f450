"""Finite-width implicit networks against the infinite-width kernels G* and Θ*.

Each network is built for real: the fixed point h = σ_a A φ(h)/√m + σ_b B x is
iterated to machine precision, and the empirical NTK comes from implicit
differentiation of that fixed point (docs/theory.md, equation (12)):
with D = diag φ'(h*), w = D v/√m + σ_a D Aᵀ w/√m solved by the same contraction,

    Θ_m(x, x') = z*ᵀz*' + (w·w') (σ_a² z*ᵀz*' + σ_b² xᵀx').

By the central limit theorem the entries fluctuate like m^(-1/2), so the error
against G*, Θ* must fall with that slope on a log-log plot of the width.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from implicit_rmt.kernels import ImplicitKernel


def _sphere(d: int, n: int, rng: np.random.Generator) -> np.ndarray:
    X = rng.standard_normal((d, n))
    return X / np.linalg.norm(X, axis=0)


def finite_width_kernels(
    kernel: ImplicitKernel, X: np.ndarray, width: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CK Z*ᵀZ* and NTK of one random implicit network of width m."""
    d, _ = X.shape
    phi, dphi = kernel.activation.phi, kernel.activation.dphi
    sigma_a, sigma_b = math.sqrt(kernel.sigma_a2), math.sqrt(kernel.sigma_b2)
    A = rng.standard_normal((width, width))
    B = rng.standard_normal((width, d))
    v = rng.standard_normal(width)
    root = math.sqrt(width)

    # The forward fixed point, iterated until it stops moving (the map contracts
    # with factor ≈ σ_a (E φ'²)^(1/2) ≈ 0.3 for the defaults).
    inputs = sigma_b * (B @ X)
    H = inputs
    for _ in range(500):
        H_next = sigma_a * (A @ (phi(H) / root)) + inputs
        change = np.max(np.abs(H_next - H))
        H = H_next
        if change <= 1e-14 * np.max(np.abs(H)):
            break
    else:
        raise AssertionError("forward fixed point did not converge")
    Z = phi(H) / root

    # The adjoint: w = D v/√m + σ_a D Aᵀ w/√m, the same contraction transposed.
    D = dphi(H) / root
    source = D * v[:, None]
    W = source
    for _ in range(500):
        W_next = source + sigma_a * D * (A.T @ W)
        change = np.max(np.abs(W_next - W))
        W = W_next
        if change <= 1e-14 * np.max(np.abs(W)):
            break
    else:
        raise AssertionError("adjoint fixed point did not converge")

    ck = Z.T @ Z
    ntk = ck + (W.T @ W) * (kernel.sigma_a2 * ck + kernel.sigma_b2 * (X.T @ X))
    return ck, ntk


@pytest.mark.parametrize(("activation", "params"), [("relu", {}), ("tanh", {})])
def test_error_shrinks_like_inverse_sqrt_width(activation: str, params: dict) -> None:
    kernel = ImplicitKernel(activation, 0.2, 0.8, **params)
    rng = np.random.default_rng(20261203)
    X = _sphere(20, 10, rng)
    exact = kernel.dense(X)
    widths = (128, 512, 2048)
    seeds = (8, 6, 4)
    errors: dict[str, list[float]] = {"ck": [], "ntk": []}
    for width, count in zip(widths, seeds, strict=True):
        squared = {"ck": 0.0, "ntk": 0.0}
        for _ in range(count):
            ck, ntk = finite_width_kernels(kernel, X, width, rng)
            squared["ck"] += np.mean((ck - exact["ck"]) ** 2)
            squared["ntk"] += np.mean((ntk - exact["ntk"]) ** 2)
        for name in errors:
            errors[name].append(math.sqrt(squared[name] / count))

    for name, values in errors.items():
        slope = np.polyfit(np.log(widths), np.log(values), 1)[0]
        # The RMS over seeds of a CLT fluctuation has ~1/sqrt(2·seeds·entries_eff)
        # relative spread; with ≥ 4 seeds and a width ratio of 16 the fitted slope
        # has a standard deviation of about 0.07, so ±0.2 is a ~3σ band.
        assert -0.7 < slope < -0.3, (name, slope, values)
        # Absolute size: entries of a width-m kernel deviate by O(scale/√m).
        scale = float(np.max(np.abs(exact[name])))
        assert values[-1] < 3.0 * scale / math.sqrt(widths[-1]), (name, values)
