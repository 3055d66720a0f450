"""Benchmark of the tiled kernel build against one dense GEMM, and its peak memory.

Prints (asserts nothing):

1. the wall time of ``build_store`` for ``ck`` at ``n = 8192, d = 4096`` on a local
   cluster, next to the time of one :math:`X^\\top X` GEMM of the same shapes on the
   same machine in the same run, and their ratio (target <= 2); also their CPU
   seconds (all processes), whose ratio is less sensitive to other load on a
   shared machine;
2. the peak resident memory of a build at ``n = 16384``, tile 2048, summed over the
   process and its workers (target <= 3 GiB).

Smaller sizes for a quick smoke run::

    python benchmarks/build.py --n 2048 --dim 1024 --tile 512 --rss-n 4096 \\
        --rss-tile 512
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_RSS_CHILD = """
import json, sys
from implicit_rmt.build import build_store
from implicit_rmt.cluster import ClusterSpec
from implicit_rmt.store import PointSpec
n, d, tile, workers, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), sys.argv[5]
spec = PointSpec(n=n, d=d, seed=0, kernels=("ck",), tile=tile)
cluster = ClusterSpec(workers=workers, threads_per_worker=1, processes=True)
report = build_store(spec, out, client=cluster, progress="none")
print(json.dumps({"seconds": report.seconds}))
"""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--tile", type=int, default=2048)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rss-n", type=int, default=16384)
    parser.add_argument("--rss-tile", type=int, default=2048)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument(
        "--scratch", default=None, help="directory for the stores (default: temp)"
    )
    return parser.parse_args(argv)


def _cpu_seconds(processes: list[object]) -> float:
    """User + system CPU seconds of this process and of ``processes`` so far."""
    import psutil

    total = time.process_time()
    for process in processes:
        assert isinstance(process, psutil.Process)
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def _time_build(args: argparse.Namespace, scratch: Path) -> tuple[float, float]:
    """Return the wall and CPU seconds (all processes) of one build."""
    import psutil

    from implicit_rmt.build import build_store, kernel_of
    from implicit_rmt.cluster import ClusterSpec, connect
    from implicit_rmt.store import PointSpec

    spec = PointSpec(n=args.n, d=args.dim, seed=0, kernels=("ck",), tile=args.tile)
    cluster = ClusterSpec(workers=args.workers, threads_per_worker=1, processes=True)
    with connect(cluster) as client:
        # The kernel's maps are built once per process; do it outside the timing.
        kernel_of(spec).prepare()
        workers: list[object] = list(psutil.Process().children(recursive=True))
        cpu = _cpu_seconds(workers)
        started = time.perf_counter()
        build_store(spec, scratch / "time.zarr", client=client, progress="none")
        wall = time.perf_counter() - started
        return wall, _cpu_seconds(workers) - cpu


def _time_gemm(args: argparse.Namespace) -> tuple[float, float]:
    """Return the wall and CPU seconds of one X^T X of the benchmark's shapes."""
    from implicit_rmt.data import sphere_columns

    x = sphere_columns(0, args.dim, 0, args.n)
    cpu, started = time.process_time(), time.perf_counter()
    product = x.T @ x
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    del product
    return wall, cpu


def _peak_rss(args: argparse.Namespace, scratch: Path) -> tuple[float, float, float]:
    """Run a build in a child; return (peak summed RSS, peak single RSS, seconds)."""
    import psutil

    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _RSS_CHILD,
            str(args.rss_n),
            str(args.dim),
            str(args.rss_tile),
            str(args.workers),
            str(scratch / "rss.zarr"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    root = psutil.Process(child.pid)
    peak_total = peak_single = 0
    while child.poll() is None:
        try:
            processes = [root, *root.children(recursive=True)]
            sizes = []
            for process in processes:
                try:
                    sizes.append(process.memory_info().rss)
                except psutil.NoSuchProcess:
                    continue
        except psutil.NoSuchProcess:
            break
        peak_total = max(peak_total, sum(sizes))
        peak_single = max(peak_single, max(sizes, default=0))
        time.sleep(0.05)
    output, _ = child.communicate()
    if child.returncode != 0:
        raise SystemExit(f"the RSS build failed with status {child.returncode}")
    seconds = json.loads(output.strip().splitlines()[-1])["seconds"]
    return peak_total / 2**30, peak_single / 2**30, seconds


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    scratch = Path(tempfile.mkdtemp(prefix="irmt-bench-", dir=args.scratch))
    try:
        gemm, gemm_cpu = _time_gemm(args)
        build, build_cpu = _time_build(args, scratch)
        shutil.rmtree(scratch / "time.zarr")
        print(
            f"n={args.n} d={args.dim} tile={args.tile} workers={args.workers} "
            f"(cpus={os.cpu_count()}, numpy {np.__version__}, "
            f"load average {os.getloadavg()[0]:.1f})"
        )
        print("                          wall s    CPU s")
        print(f"  dense X^T X GEMM      : {gemm:8.2f} {gemm_cpu:8.2f}")
        print(f"  tiled build of ck     : {build:8.2f} {build_cpu:8.2f}")
        print(
            f"  ratio build / GEMM    : {build / gemm:8.2f} {build_cpu / gemm_cpu:8.2f}"
            "   (target <= 2, wall)"
        )
        if not args.skip_rss:
            total, single, seconds = _peak_rss(args, scratch)
            print(
                f"n={args.rss_n} d={args.dim} tile={args.rss_tile} "
                f"workers={args.workers}: build {seconds:.1f} s"
            )
            print(f"  peak RSS, all processes : {total:6.2f} GiB   (target <= 3 GiB)")
            print(f"  peak RSS, one process   : {single:6.2f} GiB")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
