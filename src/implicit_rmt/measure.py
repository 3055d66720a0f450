"""Measure a kernel store: ‖K* − K̄‖₂ with certificates, spectra, metrics.json.

For every kernel of a finished store (``ck`` = :math:`G^*`, ``ntk`` =
:math:`\\Theta^*`) :func:`measure_store` runs the certified block Lanczos solver
(:mod:`implicit_rmt.lanczos`) on

* the stored kernel ``K*`` — ``opnorm``, ``lambda_max``, ``lambda_min``;
* the difference ``K* − K̄`` with the equivalent ``K̄ = α11ᵀ + βXᵀX + μI`` applied
  implicitly — ``error_opnorm`` and its certified half-width;
* optionally the difference ``K* − Σ`` to the matched explicit (quadratic)
  network's kernel, whose tiles are computed on the fly — ``explicit_error_opnorm``;

and writes the metrics of ``docs/architecture.md`` atomically (temporary file, then
``os.replace``). A solve that reaches its pass limit does not abort the point: its
partial result is recorded with ``"converged": false`` and a warning is issued, so
a sweep still yields a table in which unconverged points are marked.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from implicit_rmt import __version__
from implicit_rmt.errors import ConvergenceError, ParameterError
from implicit_rmt.lanczos import LanczosResult, extreme_eigenvalues
from implicit_rmt.operators import (
    ExplicitTiles,
    LowRankShift,
    StoredTiles,
    TiledOperator,
    TileSource,
    read_dense,
)
from implicit_rmt.spectra import (
    DEFAULT_DENSE_MAX,
    dense_eigenvalues,
    equivalent_outlier,
    lanczos_density,
    marchenko_pastur_density,
    marchenko_pastur_support,
)

logger = logging.getLogger(__name__)

METRICS_FORMAT = 1
SpectraKind = Literal["none", "auto", "dense", "slq"]
SPECTRA_KINDS: tuple[str, ...] = ("none", "auto", "dense", "slq")


def _positive_int(name: str, value: object, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParameterError(name, value, f"an integer ≥ {minimum}")


@dataclass(frozen=True)
class MeasureOptions:
    """Options of a measurement, validated on construction.

    Parameters
    ----------
    tol
        Relative tolerance of every norm (``--tol``), in ``[1e-15, 1)``.
    block_size
        Vectors per pass of the block Lanczos solver (``--block-size``).
    max_passes
        Pass limit of each solve (``--max-passes``).
    seed
        Seed of the solver's start blocks and SLQ probes.
    spectra
        ``"none"``; ``"dense"`` (all eigenvalues, n ≤ ``dense_max``); ``"slq"``
        (density by stochastic Lanczos quadrature); ``"auto"`` (dense up to
        ``dense_max``, SLQ beyond).
    dense_max
        Largest n for dense eigenvalues (``--dense-max``).
    slq_probes, slq_steps, slq_bins
        Probe vectors, Lanczos steps and histogram bins of SLQ.
    explicit
        Also measure ``‖K* − Σ‖₂`` for the matched explicit network (``--explicit``).
    """

    tol: float = 1e-10
    block_size: int = 16
    max_passes: int = 200
    seed: int = 0
    spectra: str = "none"
    dense_max: int = DEFAULT_DENSE_MAX
    slq_probes: int = 16
    slq_steps: int = 80
    slq_bins: int = 200
    explicit: bool = False

    def __post_init__(self) -> None:
        tol = self.tol
        if isinstance(tol, bool) or not isinstance(tol, int | float):
            raise ParameterError("tol", tol, "a number in [1e-15, 1)")
        if not (math.isfinite(tol) and 1e-15 <= tol < 1):
            raise ParameterError("tol", tol, "a number in [1e-15, 1)")
        _positive_int("block_size", self.block_size)
        _positive_int("max_passes", self.max_passes)
        _positive_int("seed", self.seed, minimum=0)
        _positive_int("dense_max", self.dense_max)
        _positive_int("slq_probes", self.slq_probes, minimum=2)
        _positive_int("slq_steps", self.slq_steps)
        _positive_int("slq_bins", self.slq_bins)
        if self.spectra not in SPECTRA_KINDS:
            raise ParameterError(
                "spectra", self.spectra, "one of " + ", ".join(SPECTRA_KINDS)
            )


def check_output_path(path: str | os.PathLike[str], parameter: str = "out") -> Path:
    """Return ``path`` if a file can be written there, else raise ParameterError."""
    target = Path(path)
    if target.is_dir():
        raise ParameterError(parameter, str(path), "a file path, not a directory")
    parent = target.parent if str(target.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise ParameterError(parameter, str(path), "a path whose parent is a directory")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise ParameterError(parameter, str(path), "a path in a writable directory")
    return target


def write_json_atomic(path: Path, content: dict[str, Any]) -> None:
    """Write ``content`` to ``path`` via a temporary file and ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(content, stream, indent=2, allow_nan=True)
            stream.write("\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _save_npz_atomic(path: Path, arrays: dict[str, Any]) -> None:
    handle, temporary = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=".npz", dir=path.parent
    )
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def solve(operator: TiledOperator, options: MeasureOptions, what: str) -> LanczosResult:
    """Run the solver; on the pass limit warn and return the partial result."""
    try:
        return extreme_eigenvalues(
            operator,
            tol=options.tol,
            block_size=options.block_size,
            max_passes=options.max_passes,
            seed=options.seed,
        )
    except ConvergenceError as error:
        warnings.warn(f"{what}: {error}", RuntimeWarning, stacklevel=2)
        partial: LanczosResult = error.partial
        return partial


def explicit_entry_maps(attrs: dict[str, Any]) -> dict[str, Any]:
    """Entry maps ``t ↦ Σ(t)`` of the matched explicit kernels of a store's point.

    Uses the theory core: the implicit kernel of the point, its equivalent
    coefficients at dimension ``d``, their quadratic match and
    ``explicit_entries`` (docs/theory.md).
    """
    from implicit_rmt.equivalents import (
        equivalent_coefficients,
        explicit_entries,
        match_quadratic,
    )
    from implicit_rmt.kernels import ImplicitKernel

    kernel = ImplicitKernel(
        activation=attrs["activation"],
        sigma_a2=attrs["sigma_a2"],
        sigma_b2=attrs["sigma_b2"],
        **attrs.get("activation_params", {}),
    )
    maps: dict[str, Any] = {}
    for name in attrs["kernels"]:
        coefficients = equivalent_coefficients(kernel, name, attrs["d"])
        match = match_quadratic(coefficients)
        maps[name] = functools.partial(explicit_entries, match, name)
    return maps


def _spectrum(
    name: str,
    path: str,
    operator: TiledOperator,
    coefficients: dict[str, float],
    attrs: dict[str, Any],
    options: MeasureOptions,
    directory: Path,
) -> dict[str, str]:
    """Write the spectrum of kernel ``name`` with its MP overlay; return its record."""
    n, d = int(attrs["n"]), int(attrs["d"])
    kind = options.spectra
    if kind == "auto":
        kind = "dense" if n <= options.dense_max else "slq"
    alpha, beta, mu = (coefficients[key] for key in ("alpha", "beta", "mu"))
    arrays: dict[str, Any] = {"n": n, "d": d, "alpha": alpha, "beta": beta, "mu": mu}
    if kind == "dense":
        eigenvalues = dense_eigenvalues(read_dense(path, name))
        arrays["eigenvalues"] = eigenvalues
        low, high = float(eigenvalues[0]), float(eigenvalues[-1])
        record_kind = "eigenvalues"
    else:
        density = lanczos_density(
            operator,
            probes=options.slq_probes,
            steps=options.slq_steps,
            bins=options.slq_bins,
            seed=options.seed,
        )
        arrays.update(
            edges=density.edges,
            density=density.density,
            stderr=density.stderr,
            nodes=density.nodes,
            weights=density.weights,
        )
        low, high = float(density.edges[0]), float(density.edges[-1])
        record_kind = "density"

    # Overlay: the equivalent's bulk βXᵀX + μI and its outlier (equations (13)-(14)).
    if beta != 0:
        edge_low, edge_high = marchenko_pastur_support(n / d, beta, mu)
        grid = np.linspace(min(low, edge_low), max(high, edge_high), 2001)
        mp, atom = marchenko_pastur_density(grid, n / d, beta, mu)
        arrays.update(mp_grid=grid, mp_density=mp, mp_atom=atom)
    arrays["outlier"] = equivalent_outlier(n, alpha, beta, mu)
    target = directory / f"spectrum_{name}.npz"
    _save_npz_atomic(target, arrays)
    return {"kind": record_kind, "path": target.name}


def measure_store(
    store: str | os.PathLike[str],
    out: str | os.PathLike[str],
    options: MeasureOptions | None = None,
    client: Any = None,
) -> dict[str, Any]:
    """Measure every kernel of a finished store and write ``out`` (metrics.json).

    Parameters
    ----------
    store
        Directory of a finished kernel store (``implicit-rmt build``).
    out
        Path of the metrics file; spectra go next to it.
    options
        Solver and spectra options; defaults of :class:`MeasureOptions`.
    client
        A ``distributed.Client`` whose workers read the tiles, a
        :class:`~implicit_rmt.cluster.ClusterSpec` to start (and close) for this
        measurement, or None to read the tiles in this process, in order.

    Returns
    -------
    dict
        The metrics written (``docs/architecture.md``).

    Raises
    ------
    ParameterError, StoreError
        Before any pass, when an option, the output path or the store is unusable.
    """
    from implicit_rmt.cluster import ClusterSpec, connect
    from implicit_rmt.store import open_store

    ## Validate everything before the first pass (and before any cluster starts).
    if options is None:
        options = MeasureOptions()
    if not isinstance(options, MeasureOptions):
        raise ParameterError("options", options, "a MeasureOptions")
    if not (client is None or isinstance(client, ClusterSpec)) and not hasattr(
        client, "submit"
    ):
        raise ParameterError(
            "client", client, "a distributed.Client, a ClusterSpec or None"
        )
    target = check_output_path(out)
    opened = open_store(store)
    attrs = dict(opened.attrs)
    explicit_maps = explicit_entry_maps(attrs) if options.explicit else {}
    target.parent.mkdir(parents=True, exist_ok=True)

    if isinstance(client, ClusterSpec):
        with connect(client) as started:
            return _measure(
                store, opened.path, attrs, target, options, explicit_maps, started
            )
    return _measure(store, opened.path, attrs, target, options, explicit_maps, client)


def _measure(
    store: str | os.PathLike[str],
    store_path: Path,
    attrs: dict[str, Any],
    target: Path,
    options: MeasureOptions,
    explicit_maps: dict[str, Any],
    client: Any,
) -> dict[str, Any]:
    """Run the solves of :func:`measure_store` on validated input."""
    path = str(Path(store_path).resolve())
    n, tile = int(attrs["n"]), int(attrs["tile"])
    metrics: dict[str, Any] = {
        "format": METRICS_FORMAT,
        "version": __version__,
        "point": {
            key: attrs[key]
            for key in (
                "n",
                "d",
                "seed",
                "activation",
                "activation_params",
                "sigma_a2",
                "sigma_b2",
                "tile",
                "dtype",
            )
        },
        "store": str(store),
        "tolerance": options.tol,
        "kernels": {},
    }

    for name in attrs["kernels"]:
        started = time.perf_counter()
        coefficients = {k: float(v) for k, v in attrs["coefficients"][name].items()}
        stored: TileSource = StoredTiles(path, name)

        ## ‖K*‖₂ and the extreme eigenvalues of K*.
        kernel_op = TiledOperator(n, tile, [(1.0, stored)], client=client)
        kernel = solve(kernel_op, options, f"‖{name}‖₂")

        ## ‖K* − K̄‖₂ with the equivalent applied implicitly.
        equivalent = LowRankShift(
            coefficients["alpha"], coefficients["beta"], coefficients["mu"], path
        )
        difference_op = TiledOperator(
            n, tile, [(1.0, stored)], low_rank=equivalent, client=client
        )
        difference = solve(difference_op, options, f"‖{name} − equivalent‖₂")
        passes = kernel.passes + difference.passes
        converged = kernel.converged and difference.converged
        entry: dict[str, Any] = {
            "alpha": coefficients["alpha"],
            "beta": coefficients["beta"],
            "mu": coefficients["mu"],
            "error_opnorm": difference.norm,
            "error_opnorm_bound": difference.norm_bound,
            "opnorm": kernel.norm,
            "opnorm_bound": kernel.norm_bound,
            "relative_error": difference.norm / kernel.norm
            if kernel.norm
            else math.inf,
            "lambda_max": kernel.lambda_max.value,
            "lambda_min": kernel.lambda_min.value,
        }

        ## ‖K* − Σ‖₂ for the matched explicit network, tiles computed on the fly.
        if options.explicit:
            explicit_op = TiledOperator(
                n,
                tile,
                [(1.0, stored), (-1.0, ExplicitTiles(explicit_maps[name]))],
                data_path=path,
                client=client,
            )
            explicit = solve(explicit_op, options, f"‖{name} − Σ‖₂")
            passes += explicit.passes
            converged = converged and explicit.converged
            entry["explicit_error_opnorm"] = explicit.norm
            entry["explicit_error_opnorm_bound"] = explicit.norm_bound

        if options.spectra != "none":
            entry["spectrum"] = _spectrum(
                name, path, kernel_op, coefficients, attrs, options, target.parent
            )
        entry.update(
            passes=passes,
            seconds=time.perf_counter() - started,
            converged=converged,
        )
        metrics["kernels"][name] = entry
        logger.info(
            "%s: ‖K* − K̄‖₂ = %.12g ± %.3g, ‖K*‖₂ = %.12g, %d passes, %.1f s",
            name,
            entry["error_opnorm"],
            entry["error_opnorm_bound"],
            entry["opnorm"],
            passes,
            entry["seconds"],
        )

    write_json_atomic(target, metrics)
    return metrics
