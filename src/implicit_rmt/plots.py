"""Figures of a sweep: error against n with the fitted rate, relative error, spectra.

Every function takes the dataset built by :func:`implicit_rmt.aggregate.collect`
and returns a :class:`matplotlib.figure.Figure`; :func:`draw_all` saves them as
PNG files. Matplotlib's ``Agg`` backend is used explicitly, so drawing needs no
display.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from implicit_rmt.aggregate import PowerLaw, fit_power_law
from implicit_rmt.config import Point
from implicit_rmt.sweep import point_dir

logger = logging.getLogger(__name__)

_KERNEL_NAMES = {"ck": "CK (G*)", "ntk": "NTK (Θ*)"}


def _figure(width: float = 6.4, height: float = 4.6) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return figure, figure.add_subplot()


def _ok_values(dataset: Any, kernel: str, key: str) -> tuple[Any, Any]:
    """Return (n, value) of the points of ``kernel`` with status ok, flattened."""
    cell = dataset.sel(kernel=kernel)
    ok = (cell.status.values == "ok") & np.isfinite(cell[key].values)
    n = np.broadcast_to(cell.n.values[:, None], ok.shape)
    return n[ok], cell[key].values[ok]


def error_figure(
    dataset: Any, key: str = "error_opnorm", label: str | None = None
) -> Any:
    """Plot ``key`` against n on log–log axes with the fitted power law per kernel.

    Each seed is a dot, the mean over seeds a larger marker, the least-squares
    line :math:`C n^p` solid with its pointwise 95 % interval shaded; the legend
    gives :math:`p` and its interval. Points that are not ``ok`` are listed in the
    title so a partial sweep is visible.
    """
    figure, axes = _figure()
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red")
    for index, kernel in enumerate(dataset.kernel.values):
        color = colors[index % len(colors)]
        n, values = _ok_values(dataset, kernel, key)
        if n.size == 0:
            continue
        axes.scatter(n, values, s=12, color=color, alpha=0.5)
        distinct = np.unique(n)
        means = [values[n == value].mean() for value in distinct]
        axes.plot(distinct, means, "o", color=color, markersize=6)
        fit = fit_power_law(n, values)
        if fit is not None:
            _draw_fit(axes, fit, distinct, color, _KERNEL_NAMES.get(kernel, kernel))

    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("n (samples)")
    axes.set_ylabel(label or key)
    not_ok = int(
        np.sum(
            (dataset.status.values != "ok") & (dataset.status.values != "not_in_sweep")
        )
    )
    title = f"sweep {dataset.attrs.get('sweep', '')}: {label or key}"
    if not_ok:
        title += f" ({not_ok} point·kernel not ok, not shown)"
    axes.set_title(title, fontsize=10)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    axes.grid(True, which="both", alpha=0.3)
    return figure


def _draw_fit(axes: Any, fit: PowerLaw, n: Any, color: str, name: str) -> None:
    grid = np.geomspace(n.min(), n.max(), 50)
    if math.isfinite(fit.exponent_low):
        interval = f" [{fit.exponent_low:.3f}, {fit.exponent_high:.3f}]"
        low, high = fit.band(grid)
        axes.fill_between(grid, low, high, color=color, alpha=0.2, linewidth=0)
    else:
        interval = " (too few points for an interval)"
    axes.plot(
        grid,
        fit.predict(grid),
        "-",
        color=color,
        label=f"{name}: p = {fit.exponent:.3f}{interval}",
    )


@dataclass
class PointSpectra:
    """Spectra of one kernel at one point, as the figure compares them.

    Attributes
    ----------
    point, kernel
        Where they come from.
    kind
        ``"eigenvalues"`` (all eigenvalues of K*) or ``"density"`` (a stochastic
        Lanczos estimate of the density of K*), as the solver wrote them.
    kstar
        Eigenvalues of K*, shape (n,) float64 (kind ``eigenvalues``); or the
        density on ``edges``: ``(edges (bins + 1,), density (bins,))``.
    equivalent, explicit
        Eigenvalues of the equivalent :math:`\\bar K = \\alpha 11^\\top +
        \\beta X^\\top X + \\mu I` (docs/theory.md, equation (18)) and of the
        matched explicit kernel
        :math:`\\Sigma`, shape (n,) float64; None above ``dense_max``.
    theory
        The limiting bulk of :math:`\\bar K` written by the solver
        (docs/solver.md, equation (13)): ``(grid, density, atom)``, or None.
    outlier
        First-order location of the outlier of :math:`\\bar K`, docs/solver.md
        equation (14).
    """

    point: Point
    kernel: str
    kind: str
    kstar: Any
    equivalent: npt.NDArray[np.float64] | None
    explicit: npt.NDArray[np.float64] | None
    theory: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float] | None
    outlier: float


def load_point_spectra(
    directory: Path, point: Point, kernel: str, dense_max: int = 2048
) -> PointSpectra | None:
    """Read the spectrum a point's metrics.json points to, and add K̄ and Σ.

    The eigenvalues of :math:`\\bar K` and :math:`\\Sigma` are computed densely
    (LAPACK ``eigvalsh``) from the data ``X`` of the point's kernel store, for
    :math:`n \\le` ``dense_max``: :math:`\\bar K` from the coefficients the
    store records, :math:`\\Sigma_{ij} = f(x_i^\\top x_j)` from the same entry
    map the solver measures :math:`\\|K^* - \\Sigma\\|_2` with.

    Returns
    -------
    PointSpectra or None
        None when the metrics name no spectrum file for ``kernel`` or it is gone.
    """
    metrics_path = directory / "metrics.json"
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    entry = metrics.get("kernels", {}).get(kernel, {})
    record = entry.get("spectrum")
    if not record or "path" not in record:
        return None
    path = directory / Path(record["path"]).name
    if not path.exists():
        return None

    # K* and the theory overlay, as the solver wrote them
    with np.load(path) as archive:
        arrays = {key: archive[key] for key in archive.files}
    kstar: Any
    if "eigenvalues" in arrays:
        kind, kstar = "eigenvalues", np.asarray(arrays["eigenvalues"], dtype=np.float64)
    elif "edges" in arrays and "density" in arrays:
        kind, kstar = "density", (arrays["edges"], arrays["density"])
    else:
        logger.warning("spectrum file %s holds neither eigenvalues nor a density", path)
        return None
    theory = None
    if "mp_grid" in arrays and "mp_density" in arrays:
        atom = float(arrays["mp_atom"]) if "mp_atom" in arrays else 0.0
        theory = (arrays["mp_grid"], arrays["mp_density"], atom)
    outlier = float(arrays["outlier"]) if "outlier" in arrays else math.nan

    # K̄ and Σ from the data of the store, for moderate n
    equivalent = explicit = None
    if point.n <= dense_max:
        equivalent, explicit = _dense_equivalents(directory / "kernels.zarr", kernel)
    return PointSpectra(
        point, kernel, kind, kstar, equivalent, explicit, theory, outlier
    )


def _dense_equivalents(
    store_path: Path, kernel: str
) -> tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.float64] | None]:
    """Eigenvalues of K̄ and Σ of a finished store; (None, None) if unusable."""
    from implicit_rmt.errors import ImplicitRMTError, NoQuadraticMatchError
    from implicit_rmt.measure import explicit_entry_maps
    from implicit_rmt.store import open_store

    try:
        store = open_store(store_path)
    except ImplicitRMTError as error:
        logger.warning("no K-bar/Sigma spectra for %s: %s", store_path, error)
        return None, None
    attrs = store.attrs
    data = np.asarray(store.group["X"][...], dtype=np.float64)
    gram = data.T @ data
    coefficients = attrs["coefficients"][kernel]
    n = gram.shape[0]
    equivalent_matrix = (
        coefficients["alpha"] * np.ones((n, n))
        + coefficients["beta"] * gram
        + coefficients["mu"] * np.eye(n)
    )
    equivalent = np.linalg.eigvalsh(equivalent_matrix)
    try:
        explicit_map = explicit_entry_maps(attrs)[kernel]
    except NoQuadraticMatchError as error:
        logger.info("no Sigma spectrum for %s: %s", store_path, error)
        return equivalent, None
    explicit_matrix = np.asarray(explicit_map(gram))
    return equivalent, np.linalg.eigvalsh((explicit_matrix + explicit_matrix.T) / 2)


def spectrum_figure(spectra: PointSpectra) -> Any:
    """Histograms of the eigenvalues of K*, K̄ and Σ over the limiting bulk of K̄.

    Histograms are weighted by :math:`1/n` per eigenvalue, so that they are on
    the scale of the limiting density (whose atom, when :math:`n > d`, is given
    in the legend). The bins cover the bulk: the largest eigenvalue of each
    matrix, the outlier of order :math:`\\alpha n`, is marked by a line instead.
    """
    figure, axes = _figure()
    point = spectra.point
    samples = {
        "K*": spectra.kstar if spectra.kind == "eigenvalues" else None,
        "K̄": spectra.equivalent,
        "Σ": spectra.explicit,
    }
    bulks = [np.sort(v)[:-1] for v in samples.values() if v is not None and v.size > 1]
    if spectra.kind == "density":
        bulks.append(np.asarray(spectra.kstar[0], dtype=np.float64))
    pooled = np.concatenate(bulks) if bulks else np.zeros(1)
    low, high = float(pooled.min()), float(pooled.max())
    pad = 0.02 * max(high - low, 1e-12)
    bins = np.linspace(low - pad, high + pad, 50)

    styles = {"K*": "tab:blue", "K̄": "tab:orange", "Σ": "tab:green"}
    for name, values in samples.items():
        if values is None:
            continue
        weights = np.full(values.size, 1.0 / (values.size * (bins[1] - bins[0])))
        axes.hist(
            values,
            bins=bins,
            weights=weights,
            histtype="step",
            linewidth=1.5,
            color=styles[name],
            label=f"{name} ({values.size} eigenvalues, top {values.max():.3g})",
        )
    if spectra.kind == "density":
        edges, density = spectra.kstar
        axes.stairs(density, edges, color=styles["K*"], linewidth=1.5, label="K* (SLQ)")
    if spectra.theory is not None:
        grid, density, atom = spectra.theory
        inside = (grid >= bins[0]) & (grid <= bins[-1])
        label = "limit of K̄: β·MP(n/d) + μ"
        if atom > 0:
            label += f", atom {atom:.2f} at μ"
        axes.plot(grid[inside], density[inside], "k--", linewidth=1.2, label=label)
    if math.isfinite(spectra.outlier):
        axes.text(
            0.98,
            0.6,
            f"outlier of K̄ ≈ αn + β + μ = {spectra.outlier:.3g}",
            transform=axes.transAxes,
            ha="right",
            fontsize=8,
        )
    if spectra.equivalent is None:
        axes.text(
            0.98,
            0.55,
            "K̄, Σ: not computed (n above the dense limit, or no store)",
            transform=axes.transAxes,
            ha="right",
            fontsize=8,
        )
    axes.set_xlabel("eigenvalue")
    axes.set_ylabel("density (eigenvalues per unit, / n)")
    name = _KERNEL_NAMES.get(spectra.kernel, spectra.kernel)
    axes.set_title(
        f"spectra, {name}, n={point.n}, d={point.d}, seed={point.seed}", fontsize=10
    )
    axes.legend(fontsize=8)
    return figure


def draw_all(
    dataset: Any,
    sweep_dir: Path,
    plots_dir: Path,
    write_atomic: Callable[[Path, Callable[[Path], Any]], None],
) -> list[Path]:
    """Draw every figure of a sweep into ``plots_dir``; return the PNG paths.

    ``error_opnorm.png`` and ``relative_error.png`` always;
    ``explicit_error_opnorm.png`` when the explicit network was measured;
    ``spectra_<kernel>.png`` for the largest n whose metrics point to a spectrum
    file.
    """
    written: list[Path] = []

    def save(figure: Any, name: str) -> None:
        path = plots_dir / name
        write_atomic(path, lambda temporary: figure.savefig(temporary, format="png"))
        written.append(path)

    save(error_figure(dataset, "error_opnorm", "‖K* − K̄‖₂"), "error_opnorm.png")
    save(
        error_figure(dataset, "relative_error", "‖K* − K̄‖₂ / ‖K*‖₂"),
        "relative_error.png",
    )
    if np.isfinite(dataset.explicit_error_opnorm.values).any():
        save(
            error_figure(dataset, "explicit_error_opnorm", "‖K* − Σ‖₂"),
            "explicit_error_opnorm.png",
        )

    for kernel in dataset.kernel.values:
        spectra = _largest_spectrum(dataset, sweep_dir, str(kernel))
        if spectra is not None:
            save(spectrum_figure(spectra), f"spectra_{kernel}.png")
    return written


def _largest_spectrum(
    dataset: Any, sweep_dir: Path, kernel: str
) -> PointSpectra | None:
    """Return the spectra of the largest n (then smallest seed) that has some."""
    pairs = sorted(zip(dataset.n.values, dataset.d.values, strict=True), reverse=True)
    for n, d in pairs:
        for seed in dataset.seed.values:
            point = Point(int(n), int(d), int(seed))
            spectra = load_point_spectra(point_dir(sweep_dir, point), point, kernel)
            if spectra is not None:
                return spectra
    return None
