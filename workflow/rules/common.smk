# Helpers shared by the rules: result paths, the point grid, resources scaling with n.
import os
import shlex
import sys

from implicit_rmt.config import point_arguments, sweep_points
from implicit_rmt.sweep import manifest, write_manifest

RESULTS = CONFIG["results"]
POINT = "n{n}_d{d}_seed{seed}"
# The interpreter running Snakemake runs the package too, so jobs use the same
# environment whatever PATH says.
def _interpreter():
    """This interpreter, named the same however it was started.

    The command is a param of the rules, so `implicit-rmt sweep` (…/bin/python3)
    after `python -m implicit_rmt sweep` (…/bin/python) would count as changed
    params and rerun every point; <prefix>/bin/python, where it is this same
    interpreter, names both.
    """
    candidate = os.path.join(sys.prefix, "bin", "python")
    if os.path.realpath(candidate) == os.path.realpath(sys.executable):
        return candidate
    return sys.executable


IMPLICIT_RMT = f"{shlex.quote(_interpreter())} -m implicit_rmt"


wildcard_constraints:
    sweep=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    n=r"\d+",
    d=r"\d+",
    seed=r"\d+",


def sweep_config(wildcards):
    return CONFIG["sweeps"][wildcards.sweep]


def point_metrics(sweep):
    """metrics.json of every point of a sweep."""
    return [
        f"{RESULTS}/{sweep}/points/{point.name}/metrics.json"
        for point in sweep_points(CONFIG["sweeps"][sweep])
    ]


def convergence_outputs(sweep):
    """What a finished sweep provides: tables and the plots directory."""
    return [
        f"{RESULTS}/{sweep}/convergence.nc",
        f"{RESULTS}/{sweep}/convergence.csv",
        f"{RESULTS}/{sweep}/convergence.md",
        f"{RESULTS}/{sweep}/plots",
    ]


def point_options(wildcards):
    """The `implicit-rmt point` options the sweep's points share, shell-quoted."""
    return shlex.join(point_arguments(sweep_config(wildcards)))


def point_threads_per_worker(wildcards, threads):
    """The job's cores shared among the sweep's Dask workers."""
    return max(1, threads // sweep_config(wildcards)["workers"])


def _mentries(wildcards):
    """Kernel entries in millions: n^2 / 1e6."""
    return int(wildcards.n) ** 2 / 1e6


def point_mem_mb(wildcards):
    limits = CONFIG["resources"]["point"]
    return int(limits["mem_mb_base"] + limits["mem_mb_per_mentry"] * _mentries(wildcards))


def point_runtime(wildcards):
    limits = CONFIG["resources"]["point"]
    return int(limits["runtime_base"] + limits["runtime_per_mentry"] * _mentries(wildcards))
