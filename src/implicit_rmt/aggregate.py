"""Convergence tables: collect a sweep's metrics.json files, fit the rate, write.

:func:`collect` gathers every point of a sweep into an :class:`xarray.Dataset`
over ``n``, ``seed`` and ``kernel``; points that are missing or failed stay in
it as NaN, unconverged ones with their values, each with a ``status``. K̄ is the
equivalent :math:`\\alpha 11^\\top + \\beta X^\\top X + \\mu I` of
docs/theory.md, equation (18). :func:`fit_power_law` fits
:math:`\\|K^* - \\bar K\\|_2 \\approx C n^p` by least squares on log–log axes
over all seeds, with a Student-t interval for :math:`p`.
:func:`aggregate` writes ``convergence.nc``, ``convergence.csv``,
``convergence.md`` and the plots, each to a temporary name first and then renamed,
so an interrupted aggregation never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from implicit_rmt.config import Point
from implicit_rmt.errors import ConfigError
from implicit_rmt.sweep import point_dir, point_log, read_manifest

logger = logging.getLogger(__name__)

#: Per-kernel numbers of metrics.json gathered into the dataset, with units and
#: descriptions written to the netCDF attributes.
METRICS: dict[str, tuple[str, str]] = {
    "error_opnorm": ("1", "spectral norm ||K* - K-bar||_2 (Lanczos estimate)"),
    "error_opnorm_bound": (
        "1",
        "certified half-width: ||K* - K-bar||_2 lies within error_opnorm +- this",
    ),
    "opnorm": ("1", "spectral norm ||K*||_2 (Lanczos estimate)"),
    "opnorm_bound": ("1", "certified half-width of opnorm"),
    "relative_error": ("1", "||K* - K-bar||_2 / ||K*||_2"),
    "lambda_max": ("1", "largest eigenvalue of K*"),
    "lambda_min": ("1", "smallest eigenvalue of K*"),
    "explicit_error_opnorm": (
        "1",
        "spectral norm ||K* - Sigma||_2, Sigma the matched explicit network's kernel",
    ),
    "explicit_error_opnorm_bound": (
        "1",
        "certified half-width of explicit_error_opnorm",
    ),
    "alpha": ("1", "coefficient alpha of the equivalent K-bar"),
    "beta": ("1", "coefficient beta of the equivalent K-bar"),
    "mu": ("1", "coefficient mu of the equivalent K-bar"),
    "passes": ("1", "passes of the Lanczos solver over the kernel"),
    "seconds": ("s", "wall-clock time of the measurement"),
}

#: Status of a (point, kernel): measured and converged, measured without
#: converging, job ran and left no usable metrics, job never ran.
STATUSES = ("ok", "not_converged", "failed", "missing")

#: Numbers of the convergence table summarised by their mean and spread over seeds.
TABLE_METRICS = ("error_opnorm", "relative_error", "explicit_error_opnorm")

#: Certificates of the table, summarised by their largest value over seeds.
TABLE_CERTIFICATES = ("error_opnorm_bound", "explicit_error_opnorm_bound")


@dataclass(frozen=True)
class PowerLaw:
    """Least-squares fit of :math:`\\log y = \\log C + p \\log n`.

    ``exponent_low``/``exponent_high`` bound the ``level`` (95 %) Student-t
    interval of :math:`p`; they are NaN when fewer than three points or fewer than
    two distinct ``n`` were fitted.
    """

    exponent: float
    exponent_low: float
    exponent_high: float
    prefactor: float
    points: int
    residual_variance: float
    mean_log_n: float
    sxx: float
    t_quantile: float

    def predict(self, n: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Return :math:`C n^p` at ``n`` (any shape, float64)."""
        return np.asarray(
            self.prefactor * np.asarray(n, dtype=np.float64) ** self.exponent
        )

    def band(
        self, n: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Return the pointwise interval of the fitted line :math:`C n^p` at ``n``.

        The interval of the mean of :math:`\\log y` at :math:`x_0 = \\log n` is
        :math:`\\hat y(x_0) \\pm t\\, s \\sqrt{1/m + (x_0 - \\bar x)^2 / S_{xx}}`,
        mapped back through the exponential.
        """
        x0 = np.log(np.asarray(n, dtype=np.float64))
        centre = math.log(self.prefactor) + self.exponent * x0
        half = self.t_quantile * np.sqrt(
            self.residual_variance
            * (1.0 / self.points + (x0 - self.mean_log_n) ** 2 / self.sxx)
        )
        return np.exp(centre - half), np.exp(centre + half)


def fit_power_law(
    n: npt.ArrayLike, values: npt.ArrayLike, level: float = 0.95
) -> PowerLaw | None:
    """Fit :math:`y = C n^p` by ordinary least squares on :math:`(\\log n, \\log y)`.

    Parameters
    ----------
    n
        Sample counts, shape (m,), positive.
    values
        Measured values, shape (m,); NaN and non-positive entries are left out.
    level
        Confidence level of the interval of :math:`p`.

    Returns
    -------
    PowerLaw or None
        None when fewer than two usable points or fewer than two distinct ``n``
        remain.

    Notes
    -----
    With :math:`x = \\log n`, :math:`y = \\log` value, :math:`m` points,
    :math:`S_{xx} = \\sum (x - \\bar x)^2`, the slope is
    :math:`\\hat p = \\sum (x - \\bar x)(y - \\bar y) / S_{xx}`, its standard error
    :math:`s / \\sqrt{S_{xx}}` with :math:`s^2` the residual sum of squares over
    :math:`m - 2`, and the interval :math:`\\hat p \\pm t_{(1+level)/2,\\,m-2}\\,
    s / \\sqrt{S_{xx}}`. Seeds at the same ``n`` are separate points, so the
    interval reflects the seed-to-seed scatter.
    """
    from scipy import stats

    n_array = np.asarray(n, dtype=np.float64).ravel()
    y_array = np.asarray(values, dtype=np.float64).ravel()
    usable = np.isfinite(y_array) & (y_array > 0) & (n_array > 0)
    x, y = np.log(n_array[usable]), np.log(y_array[usable])
    m = x.size
    if m < 2 or np.unique(x).size < 2:
        return None

    # slope and intercept of the least-squares line
    mean_x, mean_y = float(x.mean()), float(y.mean())
    sxx = float(np.sum((x - mean_x) ** 2))
    slope = float(np.sum((x - mean_x) * (y - mean_y)) / sxx)
    intercept = mean_y - slope * mean_x

    # Student-t interval of the slope, defined with at least one degree of freedom
    if m > 2:
        residuals = y - (intercept + slope * x)
        variance = float(np.sum(residuals**2) / (m - 2))
        t = float(stats.t.ppf(0.5 + level / 2, m - 2))
        half = t * math.sqrt(variance / sxx)
    else:
        variance, t, half = math.nan, math.nan, math.nan
    return PowerLaw(
        exponent=slope,
        exponent_low=slope - half,
        exponent_high=slope + half,
        prefactor=math.exp(intercept),
        points=m,
        residual_variance=variance,
        mean_log_n=mean_x,
        sxx=sxx,
        t_quantile=t,
    )


def find_points(sweep_dir: str | Path) -> tuple[list[Point], list[str], str]:
    """Return the points, kernels and name of a sweep directory.

    The manifest ``sweep.json`` lists the points the sweep asked for; point
    directories found on disk but not listed are added, so nothing measured is
    ever dropped. Without a manifest, the points are the directories under
    ``points/`` and the kernels those found in their metrics.
    """
    sweep_dir = Path(sweep_dir)
    manifest = read_manifest(sweep_dir)
    points: set[Point] = set()
    kernels: list[str] = []
    name = sweep_dir.name
    if manifest is not None:
        points.update(Point(p["n"], p["d"], p["seed"]) for p in manifest["points"])
        kernels = list(manifest["kernels"])
        name = manifest["sweep"]
    for directory in sorted((sweep_dir / "points").glob("n*_d*_seed*")):
        point = _parse_point_name(directory.name)
        if point is not None:
            points.add(point)
    if not kernels:
        for point in points:
            metrics = _read_metrics(point_dir(sweep_dir, point) / "metrics.json")
            for kernel in (metrics or {}).get("kernels", {}):
                if kernel not in kernels:
                    kernels.append(kernel)
    if not points:
        raise ConfigError(
            f"sweep directory {str(sweep_dir)!r} holds no sweep.json and no point "
            "directories: expected the results/<sweep> directory of a sweep"
        )
    return sorted(points), sorted(kernels), name


def collect(sweep_dir: str | Path) -> Any:
    """Gather the metrics of every point of a sweep into an xarray Dataset.

    Returns
    -------
    xarray.Dataset
        Dimensions ``n``, ``seed``, ``kernel``; coordinate ``d`` along ``n``;
        one float64 variable per entry of :data:`METRICS` (NaN where not
        measured), ``converged`` (float64: 1, 0 or NaN) and ``status`` (str, one
        of :data:`STATUSES`).

    Raises
    ------
    ConfigError
        The directory is not a sweep directory, or two points share ``n`` with
        different ``d``.
    """
    import xarray as xr

    sweep_dir = Path(sweep_dir)
    points, kernels, name = find_points(sweep_dir)
    ns = sorted({p.n for p in points})
    seeds = sorted({p.seed for p in points})
    dims: dict[int, int] = {}
    for point in points:
        if dims.setdefault(point.n, point.d) != point.d:
            raise ConfigError(
                f"sweep {str(sweep_dir)!r} has points with n={point.n} and two "
                f"dimensions d={dims[point.n]} and d={point.d}: expected one d per n"
            )

    # one array per metric, NaN until a metrics file provides the number
    shape = (len(ns), len(seeds), len(kernels))
    values = {key: np.full(shape, np.nan) for key in (*METRICS, "converged")}
    status = np.full(shape, "missing", dtype=object)
    present = np.zeros(shape, dtype=bool)
    for point in points:
        i, j = ns.index(point.n), seeds.index(point.seed)
        path = point_dir(sweep_dir, point) / "metrics.json"
        metrics = _read_metrics(path)
        if metrics is None:
            present[i, j, :] = True
            ran = path.exists() or point_log(sweep_dir, point).exists()
            status[i, j, :] = "failed" if ran else "missing"
            continue
        for k, kernel in enumerate(kernels):
            present[i, j, k] = True
            entry = metrics.get("kernels", {}).get(kernel)
            if entry is None:
                status[i, j, k] = "missing"
                continue
            for key in METRICS:
                values[key][i, j, k] = _number(entry.get(key))
            converged = entry.get("converged")
            values["converged"][i, j, k] = (
                math.nan if converged is None else float(converged)
            )
            status[i, j, k] = "ok" if converged else "not_converged"
    # grid cells of no listed point (n and seed not combined) are not points
    status[~present] = "not_in_sweep"

    coords = {
        "n": ("n", np.array(ns, dtype=np.int64), {"long_name": "sample count n"}),
        "seed": ("seed", np.array(seeds, dtype=np.int64), {"long_name": "data seed"}),
        "kernel": ("kernel", np.array(kernels, dtype=object), {"long_name": "kernel"}),
        "d": (
            "n",
            np.array([dims[n] for n in ns], dtype=np.int64),
            {"long_name": "input dimension d"},
        ),
    }
    variables: dict[str, Any] = {}
    for key, (units, description) in METRICS.items():
        variables[key] = (
            ("n", "seed", "kernel"),
            values[key],
            {"units": units, "description": description},
        )
    variables["converged"] = (
        ("n", "seed", "kernel"),
        values["converged"],
        {
            "units": "1",
            "description": (
                "1 when the solver reached its tolerance, 0 if not, NaN if not measured"
            ),
        },
    )
    variables["status"] = (
        ("n", "seed", "kernel"),
        status.astype(str).astype(object),
        {
            "description": (
                "ok | not_converged | failed (job left no metrics) | "
                "missing (never ran) | not_in_sweep"
            )
        },
    )
    dataset = xr.Dataset(variables, coords=coords)
    dataset.attrs.update(
        {
            "title": f"implicit-rmt convergence of sweep {name}",
            "sweep": name,
            "source": str(sweep_dir),
        }
    )
    manifest = read_manifest(sweep_dir)
    if manifest is not None:
        dataset.attrs["parameters"] = json.dumps(manifest["parameters"], sort_keys=True)

    # fitted exponent per kernel, over all seeds of the usable points
    fits = {kernel: _fit_kernel(dataset, kernel) for kernel in kernels}
    for key, description in (
        (
            "exponent",
            "fitted p of error_opnorm ~ C n^p (least squares on log-log, all seeds)",
        ),
        ("exponent_low", "lower end of the 95% Student-t interval of p"),
        ("exponent_high", "upper end of the 95% Student-t interval of p"),
        ("prefactor", "fitted C of error_opnorm ~ C n^p"),
    ):
        dataset[key] = (
            ("kernel",),
            np.array([getattr(fits[k], key) if fits[k] else math.nan for k in kernels]),
            {"units": "1", "description": description},
        )
    return dataset


def convergence_table(dataset: Any) -> Any:
    """Summarise a dataset from :func:`collect` per (kernel, n) over seeds.

    Returns
    -------
    pandas.DataFrame
        One row per (kernel, n): ``d``, ``seeds_ok``, ``seeds``, ``status``
        (``ok`` or a count of each other status), mean and sample standard
        deviation (ddof 1, NaN for one seed) of :data:`TABLE_METRICS` and the
        largest of :data:`TABLE_CERTIFICATES` over the points with status ``ok``,
        and the kernel's fitted exponent with its interval.
    """
    import pandas as pd

    rows = []
    for kernel in dataset.kernel.values:
        for n in dataset.n.values:
            cell = dataset.sel(kernel=kernel, n=n)
            statuses = [s for s in cell.status.values if s != "not_in_sweep"]
            ok = np.array([s == "ok" for s in cell.status.values])
            row: dict[str, Any] = {
                "kernel": kernel,
                "n": int(n),
                "d": int(cell.d),
                "seeds_ok": int(ok.sum()),
                "seeds": len(statuses),
                "status": _status_summary(statuses),
            }
            for key in TABLE_METRICS:
                chosen = cell[key].values[ok]
                chosen = chosen[np.isfinite(chosen)]
                row[f"{key}_mean"] = float(chosen.mean()) if chosen.size else math.nan
                row[f"{key}_std"] = (
                    float(chosen.std(ddof=1)) if chosen.size > 1 else math.nan
                )
            for key in TABLE_CERTIFICATES:
                chosen = cell[key].values[ok]
                chosen = chosen[np.isfinite(chosen)]
                row[f"{key}_max"] = float(chosen.max()) if chosen.size else math.nan
            for key in ("exponent", "exponent_low", "exponent_high"):
                row[key] = float(dataset[key].sel(kernel=kernel))
            rows.append(row)
    return pd.DataFrame(rows)


def markdown_table(table: Any, dataset: Any) -> str:
    """Return the convergence table and the fitted exponents as Markdown."""
    explicit = bool(np.isfinite(table["explicit_error_opnorm_mean"]).any())
    header = [
        "kernel",
        "n",
        "d",
        "seeds ok",
        "status",
        "‖K*−K̄‖₂ mean",
        "spread",
        "certificate ±",
        "relative mean",
        "relative spread",
    ]
    if explicit:
        header += ["‖K*−Σ‖₂ mean", "spread"]
    lines = [
        f"# Convergence of sweep {dataset.attrs.get('sweep', '')}",
        "",
        "Mean and sample standard deviation (spread) over the seeds whose "
        "measurement converged, NaN where no seed did; certificate: the largest "
        "certified half-width over those seeds.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    for row in table.itertuples(index=False):
        cells = [
            row.kernel,
            str(row.n),
            str(row.d),
            f"{row.seeds_ok}/{row.seeds}",
            row.status,
            _format(row.error_opnorm_mean),
            _format(row.error_opnorm_std),
            _format(row.error_opnorm_bound_max, 2),
            _format(row.relative_error_mean),
            _format(row.relative_error_std),
        ]
        if explicit:
            cells += [
                _format(row.explicit_error_opnorm_mean),
                _format(row.explicit_error_opnorm_std),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Fitted ‖K*−K̄‖₂ ≈ C n^p (least squares on log–log axes over all seeds, "
        "95% Student-t interval):",
        "",
        "| kernel | p | 95% interval | C |",
        "|---|---|---|---|",
    ]
    for kernel in dataset.kernel.values:
        fit = dataset.sel(kernel=kernel)
        lines.append(
            f"| {kernel} | {_format(float(fit.exponent), 3)} | "
            f"[{_format(float(fit.exponent_low), 3)}, "
            f"{_format(float(fit.exponent_high), 3)}] | "
            f"{_format(float(fit.prefactor), 3)} |"
        )
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Outputs:
    """Paths written by :func:`aggregate`."""

    netcdf: Path
    csv: Path
    markdown: Path
    plots: list[Path]


def aggregate(sweep_dir: str | Path, plots: bool = True) -> Outputs:
    """Rebuild the convergence files and plots of a sweep from the points on disk.

    Parameters
    ----------
    sweep_dir
        The ``results/<sweep>`` directory.
    plots
        Also draw the figures into ``plots/``.

    Returns
    -------
    Outputs
        The files written.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(
            f"sweep directory {str(sweep_dir)!r} does not exist: expected the "
            "results/<sweep> directory of a sweep"
        )
    dataset = collect(sweep_dir)
    table = convergence_table(dataset)
    counts = {s: int((dataset.status.values == s).sum()) for s in STATUSES}
    logger.info("sweep %s: %s", dataset.attrs["sweep"], counts)

    netcdf = sweep_dir / "convergence.nc"
    _write_atomic(netcdf, lambda path: dataset.to_netcdf(path, engine="netcdf4"))
    csv = sweep_dir / "convergence.csv"
    _write_atomic(csv, lambda path: table.to_csv(path, index=False))
    markdown = sweep_dir / "convergence.md"
    text = markdown_table(table, dataset)
    _write_atomic(markdown, lambda path: path.write_text(text, encoding="utf-8"))

    figures: list[Path] = []
    if plots:
        from implicit_rmt.plots import draw_all

        figures = draw_all(dataset, sweep_dir, sweep_dir / "plots", _write_atomic)
    return Outputs(netcdf, csv, markdown, figures)


def _write_atomic(path: Path, write: Any) -> None:
    """Call ``write(temporary)`` on a name beside ``path``, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _fit_kernel(dataset: Any, kernel: str) -> PowerLaw | None:
    cell = dataset.sel(kernel=kernel)
    ok = cell.status.values == "ok"
    n = np.broadcast_to(cell.n.values[:, None], ok.shape)
    return fit_power_law(n[ok], cell.error_opnorm.values[ok])


def _status_summary(statuses: Sequence[str]) -> str:
    if statuses and all(s == "ok" for s in statuses):
        return "ok"
    counts = {s: statuses.count(s) for s in STATUSES if statuses.count(s)}
    return ", ".join(f"{count} {s}" for s, count in counts.items())


def _format(value: float, digits: int = 4) -> str:
    return "NaN" if not math.isfinite(value) else f"{value:.{digits}g}"


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _read_metrics(path: Path) -> dict[str, Any] | None:
    """Return the parsed metrics file, or None when absent or unreadable."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as error:
        logger.warning(
            "metrics file %s is unreadable (%s); its point counts as failed",
            path,
            error,
        )
        return None
    return data if isinstance(data, dict) else None


def _parse_point_name(name: str) -> Point | None:
    try:
        n_part, d_part, seed_part = name.split("_")
        return Point(int(n_part[1:]), int(d_part[1:]), int(seed_part[4:]))
    except ValueError:
        return None
