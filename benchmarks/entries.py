"""Cost of the fast kernel-entry map against the GEMM that produces its input.

A tile of the kernel store is built as ``t = X_Iᵀ X_J`` (a GEMM with inner dimension
d) followed by ``ImplicitKernel.entries(t)``. This script times both, side by side
in one run, for a 2048 × 2048 tile from d = 4096, and prints their ratio. For
comparison it also times the plain fixed-point iteration K ← σ_a² E0(K) + σ_b² t
(closed-form relu moments, iterated to machine precision) on the same tile.

Run: ``python benchmarks/entries.py [--activation relu] [--tile 2048] [--dim 4096]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from implicit_rmt.gaussian import moment
from implicit_rmt.kernels import ImplicitKernel


def best_of(repeats: int, work: Callable[[], object]) -> float:
    """Shortest wall time of ``repeats`` runs of ``work``, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--activation", default="relu")
    parser.add_argument("--tile", type=int, default=2048)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    X = rng.standard_normal((args.dim, 2 * args.tile))
    X /= np.linalg.norm(X, axis=0)
    left, right = X[:, : args.tile], X[:, args.tile :]
    kernel = ImplicitKernel(args.activation).prepare()
    t = left.T @ right

    gemm = best_of(args.repeats, lambda: left.T @ right)
    both = best_of(args.repeats, lambda: kernel.entries(t, ("ck", "ntk")))
    ck = best_of(args.repeats, lambda: kernel.entries(t, ("ck",)))
    print(f"tile {args.tile}x{args.tile}, d = {args.dim}, {args.activation}")
    print(f"GEMM X_I^T X_J            {gemm:8.3f} s")
    print(f"entries ck                {ck:8.3f} s   ratio to GEMM {ck / gemm:6.2f}")
    print(f"entries ck + ntk          {both:8.3f} s   ratio to GEMM {both / gemm:6.2f}")

    if args.activation == "relu":
        a2, b2 = kernel.sigma_a2, kernel.sigma_b2

        def plain_iteration() -> None:
            K = b2 * t
            for _ in range(200):
                previous = K
                K = a2 * moment(kernel.activation, kernel.tau, K, 0) + b2 * t
                if np.max(np.abs(K - previous)) <= 4 * np.spacing(kernel.tau):
                    break

        plain = best_of(1, plain_iteration)
        ratio = plain / gemm
        print(f"plain fixed-point loop K  {plain:8.3f} s   ratio to GEMM {ratio:6.2f}")

    exact = kernel.exact(t[:64, :64])
    fast = kernel.entries(t[:64, :64], ("ck", "ntk"))
    error = max(
        np.max(np.abs(fast[k] - exact[k])) / np.max(np.abs(exact[k]))
        for k in exact
        if k in fast
    )
    print(
        f"max error against the exact solver on a 64x64 corner: {error:.2e} of max|f|"
    )


if __name__ == "__main__":
    main()
