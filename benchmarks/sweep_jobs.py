"""Benchmark of a sweep's point job: start-up with thread workers against processes.

Every point of a sweep is its own ``implicit-rmt point`` process, so the start-up
of the Dask cluster is paid once per point. The workflow runs points on an
in-process cluster of thread workers (``--threads``, see ``point_arguments`` in
implicit_rmt.config). This script prints, measured side by side in one run:

1. the wall and CPU seconds of one small point (start-up dominated) with thread
   workers and with worker processes, and their ratio (target: below 1; measured
   on the shared 2-core development machine, load ~7: wall 0.74, CPU 0.67 at
   n = 256, i.e. about 3 s and 2.4 CPU seconds saved per point);
2. the same for a point of the default sweep's largest size, where the work
   dominates and the two should be close (measured at n = 1024: wall 1.13, CPU
   1.03, within the noise of that machine).

It asserts nothing. A quick run::

    python benchmarks/sweep_jobs.py --small 256 --large 1024 --repeats 2
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_point(n: int, threads: bool, directory: Path) -> tuple[float, float]:
    """Run one point; return (wall seconds, CPU seconds of the child processes)."""
    out = directory / f"n{n}_{'threads' if threads else 'processes'}_{time.time_ns()}"
    command = [
        sys.executable,
        "-m",
        "implicit_rmt",
        "point",
        "--n",
        str(n),
        "--dim",
        str(n // 2),
        "--tile",
        "256",
        "--workers",
        "2",
        "--threads-per-worker",
        "1",
        "--out",
        str(out / "kernels.zarr"),
        "--metrics",
        str(out / "metrics.json"),
    ]
    if threads:
        command.append("--threads")
    out.mkdir(parents=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def compare(n: int, repeats: int, directory: Path) -> None:
    """Print median wall and CPU seconds of both cluster kinds at size n."""
    results: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for _ in range(repeats):
        # alternate the two kinds so that load changes hit both alike
        for threads in (True, False):
            results[threads].append(run_point(n, threads, directory))
    wall = {k: statistics.median(w for w, _ in v) for k, v in results.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in results.items()}
    print(
        f"n={n:5d}  threads: {wall[True]:6.2f} s wall {cpu[True]:6.2f} s CPU   "
        f"processes: {wall[False]:6.2f} s wall {cpu[False]:6.2f} s CPU   "
        f"ratio threads/processes: wall {wall[True] / wall[False]:.2f}, "
        f"CPU {cpu[True] / cpu[False]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=256, help="start-up bound size")
    parser.add_argument("--large", type=int, default=2048, help="work bound size")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        for n in (args.small, args.large):
            compare(n, args.repeats, Path(directory))


if __name__ == "__main__":
    main()
