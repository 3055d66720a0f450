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


def marchenko_pastur_density(x: npt.ArrayLike, ratio: float) -> npt.NDArray[np.float64]:
    """Density of the eigenvalues of :math:`X^\\top X / d`, X (d, n) i.i.d. N(0, 1).

    Parameters
    ----------
    x
        Points where the density is evaluated, any shape, float64.
    ratio
        :math:`\\gamma = n / d`.

    Returns
    -------
    numpy.ndarray
        The absolutely continuous part
        :math:`\\sqrt{(\\lambda_+ - x)(x - \\lambda_-)} / (2\\pi\\gamma x)` on
        :math:`[\\lambda_-, \\lambda_+]`,
        :math:`\\lambda_\\pm = (1 \\pm \\sqrt\\gamma)^2`,
        zero elsewhere; for :math:`\\gamma > 1` a mass :math:`1 - 1/\\gamma` at zero
        is not included.
    """
    points = np.asarray(x, dtype=np.float64)
    low, high = (1 - math.sqrt(ratio)) ** 2, (1 + math.sqrt(ratio)) ** 2
    inside = (points > low) & (points < high)
    density = np.zeros_like(points)
    p = points[inside]
    density[inside] = np.sqrt((high - p) * (p - low)) / (2 * math.pi * ratio * p)
    return density


def spectrum_figure(
    spectra: dict[str, npt.NDArray[np.float64]],
    kernel: str,
    point: Point,
    beta: float,
    mu: float,
) -> Any:
    """Histogram the eigenvalues in ``spectra`` over the theoretical bulk of K̄.

    Parameters
    ----------
    spectra
        Name (``K*``, ``K̄``, ``Σ``, …) to eigenvalues, each of shape (k,) float.
    kernel
        The kernel's name, for the title.
    point
        The point the spectra belong to.
    beta, mu
        Coefficients of the equivalent :math:`\\bar K`; its bulk is drawn as the
        Marchenko–Pastur law of ratio :math:`n/d`, scaled by ``beta`` and shifted
        by ``mu``. The rank-one part and the largest outliers are outside the bulk.
    """
    figure, axes = _figure()
    finite = [v[np.isfinite(v)] for v in spectra.values()]
    pooled = np.concatenate(finite) if finite else np.zeros(0)
    # the bins cover the bulk: the top eigenvalue of a kernel with a constant
    # part is an outlier of order n that would squash every histogram
    upper = float(np.quantile(pooled, 0.99)) if pooled.size else 1.0
    lower = float(pooled.min()) if pooled.size else 0.0
    bins = np.linspace(lower, upper + 1e-12 * max(abs(upper), 1.0), 60)
    for name, values in spectra.items():
        values = values[np.isfinite(values)]
        axes.hist(
            values,
            bins=bins,
            density=True,
            histtype="step",
            linewidth=1.4,
            label=f"{name} ({values.size} eigenvalues)",
        )
    if math.isfinite(beta) and beta > 0 and math.isfinite(mu):
        grid = np.linspace(lower, upper, 400)
        density = marchenko_pastur_density((grid - mu) / beta, point.n / point.d) / beta
        axes.plot(grid, density, "k--", linewidth=1.2, label="theory: β·MP(n/d) + μ")
    axes.set_xlabel("eigenvalue")
    axes.set_ylabel("density")
    axes.set_title(
        f"spectra, {_KERNEL_NAMES.get(kernel, kernel)}, "
        f"n={point.n}, d={point.d}, seed={point.seed}",
        fontsize=10,
    )
    axes.legend(fontsize=8)
    return figure


def load_spectra(path: Path) -> dict[str, npt.NDArray[np.float64]]:
    """Read a spectrum file (``.npz``): every one-dimensional array it holds."""
    with np.load(path) as archive:
        return {
            key: np.asarray(archive[key], dtype=np.float64)
            for key in archive.files
            if archive[key].ndim == 1
        }


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
        found = _largest_spectrum(dataset, sweep_dir, str(kernel))
        if found is None:
            continue
        point, path, entry = found
        spectra = load_spectra(path)
        if not spectra:
            logger.warning("spectrum file %s holds no one-dimensional array", path)
            continue
        figure = spectrum_figure(
            spectra,
            str(kernel),
            point,
            float(entry.get("beta", math.nan)),
            float(entry.get("mu", math.nan)),
        )
        save(figure, f"spectra_{kernel}.png")
    return written


def _largest_spectrum(
    dataset: Any, sweep_dir: Path, kernel: str
) -> tuple[Point, Path, dict[str, Any]] | None:
    """Return the point of largest n (then smallest seed) with a spectrum file."""
    for n, d in sorted(
        zip(dataset.n.values, dataset.d.values, strict=True), reverse=True
    ):
        for seed in dataset.seed.values:
            point = Point(int(n), int(d), int(seed))
            metrics_path = point_dir(sweep_dir, point) / "metrics.json"
            try:
                metrics = json.loads(metrics_path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            entry = metrics.get("kernels", {}).get(kernel, {})
            spectrum = entry.get("spectrum")
            if not spectrum or "path" not in spectrum:
                continue
            path = Path(spectrum["path"])
            if not path.is_absolute():
                path = metrics_path.parent / path
            if path.exists():
                return point, path, entry
    return None
