"""Benchmark of the certified block Lanczos solver (issue: targets below).

Measured side by side in one run, on stores built here with ``build_store``:

1. passes to certify ‖K* − K̄‖₂ to 1e-10 at n = 16 384 (target ≤ 40), for several
   block sizes;
2. seconds per pass over the store against one plain sequential read of the same
   store (target ≤ 1.5×), for the same block sizes, with the pass both in-process
   and on the Dask cluster;
3. the whole measurement of ‖K* − K̄‖₂ against ``numpy.linalg.norm(D, 2)`` on the
   dense difference at n = 4000 (target ≥ 100× faster), with the floor that the
   pass count sets: passes × one plain read of the upper tiles;
4. the same against ``scipy.sparse.linalg.eigsh`` on the in-memory difference at
   n = 8192.

Smaller sizes for a quick smoke run::

    python benchmarks/lanczos.py --n-passes 2048 --n-svd 1000 --n-eigsh 1024

The cluster is the one ``implicit-rmt point`` starts by default: one single-threaded
worker process per core (``--threads`` for threads of this process instead).
Stores go to ``--workdir`` (default: a temporary directory, removed at the end).
"""

from __future__ import annotations

import argparse
import functools
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse.linalg

from implicit_rmt.build import build_store
from implicit_rmt.cluster import ClusterSpec, connect
from implicit_rmt.lanczos import LanczosResult, extreme_eigenvalues
from implicit_rmt.operators import (
    DenseOperator,
    LowRankShift,
    StoredTiles,
    TiledOperator,
    read_dense,
)
from implicit_rmt.store import PointSpec, open_store


def timed(function: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    value = function()
    return value, time.perf_counter() - started


def best_of(repeats: int, function: Callable[[], Any]) -> float:
    """Fewest seconds ``function`` took over ``repeats`` calls."""
    return min(timed(function)[1] for _ in range(repeats))


def tile_spans(n: int, tile: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each tile row (or column) of an n×n array."""
    return [(start, min(start + tile, n)) for start in range(0, n, tile)]


def read_upper_tiles(array: Any, spans: list[tuple[int, int]]) -> None:
    """One plain sequential read of the tiles a pass reads: those with I ≤ J."""
    for i, (r0, r1) in enumerate(spans):
        for c0, c1 in spans[i:]:
            array[r0:r1, c0:c1]


def build(root: Path, n: int, d: int, tile: int, client: Any) -> Path:
    path = root / f"n{n}_d{d}" / "kernels.zarr"
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = PointSpec(n=n, d=d, seed=0, kernels=("ck",), tile=tile)
    _, seconds = timed(
        lambda: build_store(spec, path, client=client, progress="none", verify=False)
    )
    print(f"  built n={n} d={d} tile={tile} in {seconds:.1f} s")
    return path


def difference_operator(path: Path, client: Any) -> TiledOperator:
    store = open_store(path)
    c = store.coefficients["ck"]
    n, tile = store.spec.n, store.spec.tile
    low_rank = LowRankShift(c["alpha"], c["beta"], c["mu"], str(path))
    terms = [(1.0, StoredTiles(str(path), "ck"))]
    return TiledOperator(n, tile, terms, low_rank=low_rank, client=client)


def dense_difference(path: Path) -> np.ndarray[Any, np.dtype[np.float64]]:
    store = open_store(path)
    c = store.coefficients["ck"]
    x = read_dense(str(path), "X")
    kernel = read_dense(str(path), "ck")
    kernel -= c["beta"] * (x.T @ x)
    kernel -= c["alpha"]
    kernel[np.diag_indices_from(kernel)] -= c["mu"]
    return kernel


def describe(result: LanczosResult) -> str:
    relative = result.norm_bound / result.norm if result.norm else 0.0
    return (
        f"‖D‖₂ = {result.norm:.15g} ± {result.norm_bound:.2g} (relative "
        f"{relative:.2g}), {result.passes} passes, converged={result.converged}"
    )


def passes_to_certify(
    path: Path, client: Any, block_sizes: list[int], max_passes: int
) -> None:
    print("\n[1] passes to certify ‖K* − K̄‖₂ to 1e-10 (target ≤ 40)")
    for block_size in block_sizes:
        operator = difference_operator(path, client)
        started = time.perf_counter()
        result = extreme_eigenvalues(
            operator, block_size=block_size, max_passes=max_passes
        )
        seconds = time.perf_counter() - started
        print(
            f"  b={block_size:3d}: {describe(result)}, {result.restarts} restart(s), "
            f"{seconds:.1f} s"
        )


def seconds_per_pass(
    path: Path, client: Any, block_sizes: list[int], repeats: int
) -> None:
    print("\n[2] seconds per pass against one plain sequential read of the store")
    store = open_store(path)
    array = store["ck"]
    n, tile = store.spec.n, store.spec.tile
    blocks = tile_spans(n, tile)

    def read_all() -> None:
        for r0, r1 in blocks:
            for c0, c1 in blocks:
                array[r0:r1, c0:c1]

    data = store["X"]

    def read_data() -> None:
        for c0, c1 in blocks:
            data[:, c0:c1]

    best = functools.partial(best_of, repeats)

    read_all()  # warm the page cache once, for every contender alike
    reads = {
        "plain read, all ck tiles": best(read_all),
        "plain read, upper ck tiles": best(
            functools.partial(read_upper_tiles, array, blocks)
        ),
        "plain read of X": best(read_data),
    }
    base = reads["plain read, all ck tiles"]
    for name, seconds in reads.items():
        print(f"  {name:34s} {seconds:8.3f} s   ratio {seconds / base:5.2f}×")
    c = store.coefficients["ck"]
    kernel_only = TiledOperator(
        n, tile, [(1.0, StoredTiles(str(path), "ck"))], client=client
    )
    local = difference_operator(path, None)
    spread = difference_operator(path, client)
    equivalent = LowRankShift(c["alpha"], c["beta"], c["mu"], str(path))
    for block_size in block_sizes:
        block = np.random.default_rng(0).standard_normal((n, block_size))
        spread.matmat(block)  # X into the workers' memory, outside the timing
        rows = {
            "pass K*, Dask cluster": functools.partial(kernel_only.matmat, block),
            "pass K* − K̄, Dask cluster": functools.partial(spread.matmat, block),
            "pass K* − K̄, in-process": functools.partial(local.matmat, block),
            "equivalent K̄V alone, in-process": functools.partial(
                equivalent.apply, block
            ),
        }
        print(f"  b = {block_size}:")
        for name, function in rows.items():
            seconds = best(function)
            print(
                f"    {name:32s} {seconds:8.3f} s   ratio to plain read "
                f"{seconds / base:5.2f}×"
            )


def against_dense_norm(path: Path, client: Any, block_size: int) -> None:
    print("\n[3] whole measurement against numpy.linalg.norm(D, 2) (target ≥ 100×)")
    # In this process, as `implicit-rmt measure` does by default, and on the cluster.
    result, ours = timed(
        lambda: extreme_eigenvalues(
            difference_operator(path, None), block_size=block_size
        )
    )
    spread, spread_seconds = timed(
        lambda: extreme_eigenvalues(
            difference_operator(path, client), block_size=block_size
        )
    )
    difference, reading = timed(lambda: dense_difference(path))
    reference, dense = timed(lambda: np.linalg.norm(difference, 2))
    # What no solver making this many passes can beat: one plain read of the
    # upper tiles (the least a pass reads) per pass, with no arithmetic at all.
    store = open_store(path)
    spans = tile_spans(store.spec.n, store.spec.tile)
    upper = best_of(5, functools.partial(read_upper_tiles, store["ck"], spans))
    floor = result.passes * upper
    print(f"  Lanczos from the store, in-process: {describe(result)}, {ours:.2f} s")
    print(
        f"  Lanczos from the store, Dask cluster: {describe(spread)}, "
        f"{spread_seconds:.2f} s"
    )
    print(
        f"  numpy.linalg.norm(D, 2): {reference:.15g}, {dense:.2f} s "
        f"(+ {reading:.2f} s to read and form D)"
    )
    print(
        f"  |difference| = {abs(reference - result.norm):.2g}, "
        f"speed-up {dense / ours:.1f}× (cluster {dense / spread_seconds:.1f}×)"
    )
    print(
        f"  floor for {result.passes} passes: {result.passes} × {upper:.4f} s "
        f"(plain read of the upper tiles) = {floor:.2f} s, at most "
        f"{dense / floor:.0f}× faster than the dense norm"
    )


def against_eigsh(path: Path, client: Any, block_size: int) -> None:
    print("\n[4] against scipy eigsh on the in-memory matrix")
    difference = dense_difference(path)
    (values, _), eigsh_seconds = timed(
        lambda: scipy.sparse.linalg.eigsh(difference, k=1, which="LM", tol=0)
    )
    in_memory, memory_seconds = timed(
        lambda: extreme_eigenvalues(DenseOperator(difference), block_size=block_size)
    )
    print(f"  eigsh(k=1, LM, tol=0): {abs(values[0]):.15g}, {eigsh_seconds:.2f} s")
    print(
        f"  Lanczos in memory:  {describe(in_memory)}, {memory_seconds:.2f} s, "
        f"ratio {eigsh_seconds / memory_seconds:.2f}×"
    )
    for where, operator_client in (("in-process", None), ("Dask cluster", client)):
        stored, stored_seconds = timed(
            functools.partial(
                extreme_eigenvalues,
                difference_operator(path, operator_client),
                block_size=block_size,
            )
        )
        print(
            f"  Lanczos from store, {where}: {describe(stored)}, "
            f"{stored_seconds:.2f} s, ratio {eigsh_seconds / stored_seconds:.2f}×"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-passes", type=int, default=16384)
    parser.add_argument("--n-svd", type=int, default=4000)
    parser.add_argument("--n-eigsh", type=int, default=8192)
    parser.add_argument("--dim-ratio", type=float, default=0.5, help="d = ratio·n")
    parser.add_argument("--tile", type=int, default=1024)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--block-sizes", default="16,32,64,128")
    parser.add_argument("--max-passes", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--workers", type=int, help="default: one per core (processes), 1 (threads)"
    )
    parser.add_argument("--threads-per-worker", type=int)
    parser.add_argument(
        "--threads",
        action="store_true",
        help="workers as threads of this process (default: worker processes)",
    )
    parser.add_argument("--workdir", type=Path)
    parser.add_argument(
        "--only", default="1234", help="sections to run, e.g. 12 (default 1234)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    root = args.workdir or Path(tempfile.mkdtemp(prefix="lanczos-bench-"))
    spec = ClusterSpec(
        kind="local",
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        processes=not args.threads,
    )
    sizes = {"1": args.n_passes, "2": args.n_passes, "3": args.n_svd, "4": args.n_eigsh}
    try:
        with connect(spec) as client:
            print(f"cluster: {client}")
            paths: dict[int, Path] = {}
            for section in args.only:
                n = sizes[section]
                if n not in paths:
                    d = max(1, int(args.dim_ratio * n))
                    paths[n] = build(root, n, d, min(args.tile, n), client)
                path = paths[n]
                if section == "1":
                    block_sizes = [int(b) for b in args.block_sizes.split(",")]
                    passes_to_certify(path, client, block_sizes, args.max_passes)
                elif section == "2":
                    block_sizes = [int(b) for b in args.block_sizes.split(",")]
                    seconds_per_pass(path, client, block_sizes, args.repeats)
                elif section == "3":
                    against_dense_norm(path, client, args.block_size)
                elif section == "4":
                    against_eigsh(path, client, args.block_size)
    finally:
        if args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
