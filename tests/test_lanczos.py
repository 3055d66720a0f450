"""Certified block Lanczos against dense LAPACK, scipy's eigsh, adversarial spectra.

Tolerances: a dense symmetric eigensolver is backward stable, so each eigenvalue
it returns is exact for a matrix within ``c·eps·‖A‖`` of ``A``; we allow
``eps · n · ‖A‖`` for the reference itself (``n`` covers ``c`` generously). The
solver's answer must lie within its own certificate plus that reference error, and
the certificate must be at most the asked tolerance (1e-10) relative.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest
import scipy.sparse.linalg

from implicit_rmt.errors import ConvergenceError, ParameterError
from implicit_rmt.lanczos import extreme_eigenvalues
from implicit_rmt.operators import DenseOperator

EPS = float(np.finfo(np.float64).eps)
Matrix = npt.NDArray[np.float64]


def wigner(n: int, seed: int) -> Matrix:
    """GOE matrix scaled to spectrum [-2, 2]: dense edges, the hard case."""
    g = np.random.default_rng(seed).standard_normal((n, n))
    return (g + g.T) / np.sqrt(2 * n)


def with_spectrum(eigenvalues: Matrix, seed: int) -> Matrix:
    """Symmetric matrix with the given eigenvalues and Haar-random eigenvectors."""
    n = eigenvalues.size
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, n)))
    q *= np.sign(np.diag(r))
    return (q * eigenvalues) @ q.T


def kernel_like(n: int, seed: int) -> Matrix:
    """A PSD kernel matrix on sphere data with an outlier and an MP-like bulk."""
    g = np.random.default_rng(seed).standard_normal((n // 2, n))
    x = g / np.linalg.norm(g, axis=0)
    t = np.clip(x.T @ x, -1, 1)
    return np.asarray(np.exp(t) - 1.0 + 0.1 * t**2)


def check_against_dense(matrix: Matrix, tol: float = 1e-10, **kwargs: int) -> None:
    n = matrix.shape[0]
    result = extreme_eigenvalues(DenseOperator(matrix), tol=tol, **kwargs)
    eigenvalues = np.linalg.eigvalsh(matrix)
    norm = float(np.max(np.abs(eigenvalues)))
    reference_error = EPS * n * max(norm, 1e-300)
    assert result.converged
    assert abs(result.norm - norm) <= result.norm_bound + reference_error
    assert result.norm_bound <= tol * norm + 1e-300
    assert abs(result.lambda_max.value - eigenvalues[-1]) <= (
        result.lambda_max.bound + reference_error
    )
    assert abs(result.lambda_min.value - eigenvalues[0]) <= (
        result.lambda_min.bound + reference_error
    )
    # Cauchy interlacing: the extreme Ritz values lie inside the spectrum.
    assert result.lambda_max.value <= eigenvalues[-1] + reference_error
    assert result.lambda_min.value >= eigenvalues[0] - reference_error
    if n <= 1000:  # the SVD behind numpy.linalg.norm(·, 2) is slow beyond
        dense_norm = np.linalg.norm(matrix, 2)
        assert abs(result.norm - dense_norm) <= result.norm_bound + reference_error


@pytest.mark.parametrize("n", [40, 700])
def test_wigner_against_dense(n: int) -> None:
    check_against_dense(wigner(n, seed=n))


def test_kernel_like_against_dense() -> None:
    check_against_dense(kernel_like(600, seed=3))


@pytest.mark.slow
def test_n3000_against_dense_eigenvalues() -> None:
    matrix = wigner(3000, seed=7) + 0.3 * kernel_like(3000, seed=8) / 3000
    check_against_dense(matrix)


def test_against_scipy_eigsh() -> None:
    matrix = kernel_like(500, seed=5) - 2.0 * wigner(500, seed=6)
    result = extreme_eigenvalues(DenseOperator(matrix))
    top = scipy.sparse.linalg.eigsh(matrix, k=1, which="LA", tol=0)[0][0]
    bottom = scipy.sparse.linalg.eigsh(matrix, k=1, which="SA", tol=0)[0][0]
    slack = EPS * 500 * result.norm
    assert abs(result.lambda_max.value - top) <= result.lambda_max.bound + slack
    assert abs(result.lambda_min.value - bottom) <= result.lambda_min.bound + slack


def test_clustered_top() -> None:
    bulk = np.linspace(-0.5, 0.5, 300)
    top = 1.0 - 1e-9 * np.arange(5)
    check_against_dense(with_spectrum(np.r_[bulk, top], seed=1))


def test_equal_magnitude_opposite_extremes() -> None:
    spectrum = np.r_[np.linspace(-0.6, 0.6, 200), [-1.0, 1.0]]
    matrix = with_spectrum(spectrum, seed=2)
    result = extreme_eigenvalues(DenseOperator(matrix))
    check_against_dense(matrix)
    assert abs(result.lambda_max.value - 1.0) <= result.lambda_max.bound + 1e-13
    assert abs(result.lambda_min.value + 1.0) <= result.lambda_min.bound + 1e-13


def test_rank_one() -> None:
    u = np.random.default_rng(4).standard_normal(250)
    matrix = np.outer(u, u)
    result = extreme_eigenvalues(DenseOperator(matrix))
    assert result.converged
    assert result.passes <= 3
    assert abs(result.norm - u @ u) <= result.norm_bound + EPS * 250 * (u @ u)


def test_zero_matrix() -> None:
    result = extreme_eigenvalues(DenseOperator(np.zeros((64, 64))))
    assert result.converged
    assert result.norm == 0.0
    assert result.norm_bound == 0.0
    assert result.passes == 1


@pytest.mark.parametrize("n", [1, 2, 5])
def test_n_smaller_than_block(n: int) -> None:
    matrix = wigner(n, seed=n) if n > 1 else np.array([[-3.0]])
    check_against_dense(matrix, block_size=16)


def test_restarts_keep_the_certificate() -> None:
    matrix = wigner(400, seed=9)
    result = extreme_eigenvalues(DenseOperator(matrix), block_size=4, max_basis=24)
    assert result.restarts > 0
    check_against_dense(matrix, block_size=4, max_basis=24)


def test_seed_makes_runs_identical() -> None:
    matrix = kernel_like(300, seed=1)
    first = extreme_eigenvalues(DenseOperator(matrix), seed=11)
    second = extreme_eigenvalues(DenseOperator(matrix), seed=11)
    assert first.as_dict() == second.as_dict()


def test_pass_limit_raises_with_partial_result() -> None:
    matrix = wigner(500, seed=12)
    with pytest.raises(ConvergenceError, match="max_passes=2") as caught:
        extreme_eigenvalues(DenseOperator(matrix), max_passes=2)
    partial = caught.value.partial
    assert partial.passes == 2
    assert not partial.converged
    # The partial norm is a valid lower bound (interlacing) with a wide bar.
    assert partial.norm <= np.linalg.norm(matrix, 2) + 1e-12
    assert partial.norm_bound > 1e-10 * partial.norm


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("tol", 0.0), ("tol", 1.5), ("block_size", 0), ("max_passes", 0)],
)
def test_bad_arguments_are_refused_before_any_pass(keyword: str, value: float) -> None:
    operator = DenseOperator(np.eye(10))
    with pytest.raises(ParameterError, match=keyword):
        extreme_eigenvalues(operator, **{keyword: value})  # type: ignore[arg-type]
    assert operator.passes == 0


@pytest.mark.parametrize("m, ends", [(60, 5), (12, 5)])  # selected ends, then all
def test_ritz_pairs_at_both_ends_match_full_eigh(m: int, ends: int) -> None:
    from implicit_rmt.lanczos import _ritz_pairs

    a = wigner(m, seed=9)
    values, vectors = np.linalg.eigh(a)
    theta, ritz = _ritz_pairs(a, ends)
    wanted = np.r_[0:ends, m - ends : m] if m > 4 * ends else np.arange(m)
    # Backward-stable solvers on the same matrix: values within eps·m·‖A‖, and
    # (the spectrum of a GOE matrix being simple) vectors equal up to sign.
    scale = np.abs(values).max()
    assert np.allclose(theta, values[wanted], rtol=0, atol=EPS * m * scale)
    overlaps = np.abs(np.sum(ritz * vectors[:, wanted], axis=0))
    assert np.allclose(overlaps, 1.0, rtol=0, atol=1e-8)


@pytest.mark.parametrize("short", [1.0, 1e-7])  # similar columns, then disparate
def test_orthonormalise_keeps_the_new_block_orthogonal_to_the_basis(
    short: float,
) -> None:
    from implicit_rmt.lanczos import _orthonormalise

    n, m, b = 500, 60, 8
    rng = np.random.default_rng(11)
    basis, _ = np.linalg.qr(rng.standard_normal((n, m)))
    # Half the columns have a component beyond the basis of relative size
    # `short`, the others of size 1: the worst case for the SVD, whose error on
    # the short directions is bounded only by ε·(longest/shortest). The result
    # must be orthonormal and orthogonal to the basis either way.
    outside = rng.standard_normal((n, b))
    outside[:, : b // 2] *= short
    block = basis @ rng.standard_normal((m, b)) + outside
    for coefficients in (None, basis.T @ block):
        new = _orthonormalise(block, basis, drop=0.0, coefficients=coefficients)
        assert new.shape == (n, b)
        # Orthonormal to a few eps·√n, and orthogonal to the basis likewise.
        assert np.abs(new.T @ new - np.eye(b)).max() <= 8 * EPS * np.sqrt(n)
        assert np.abs(basis.T @ new).max() <= 8 * EPS * np.sqrt(n)


def test_orthonormalise_drops_directions_inside_the_basis() -> None:
    from implicit_rmt.lanczos import _orthonormalise

    rng = np.random.default_rng(12)
    basis, _ = np.linalg.qr(rng.standard_normal((200, 30)))
    inside = basis @ rng.standard_normal((30, 3))
    block = np.hstack([inside, rng.standard_normal((200, 2))])
    new = _orthonormalise(block, basis, drop=1e-10)
    assert new.shape == (200, 2)
