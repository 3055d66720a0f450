"""Figures of a sweep, opened back as PNG files: size, colours, not blank."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image
from test_aggregate import SWEEP, kernel_entry, write_metrics

from implicit_rmt.aggregate import aggregate
from implicit_rmt.config import Point
from implicit_rmt.spectra import marchenko_pastur_density
from implicit_rmt.sweep import manifest, point_dir, write_json_atomic


def assert_real_png(path: Path) -> None:
    """The file is a PNG of a drawn figure: large enough and far from one colour."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = image.imread(path)
    height, width = pixels.shape[:2]
    assert width >= 500 and height >= 350
    rgb = pixels[..., :3].reshape(-1, 3)
    # a blank figure is all white: require ink (dark pixels) and colour
    # (pixels whose channels differ: the fitted lines and bands)
    dark = (rgb.max(axis=1) < 0.5).mean()
    coloured = (rgb.max(axis=1) - rgb.min(axis=1) > 0.3).mean()
    assert dark > 0.002, f"{path.name}: almost no dark pixels ({dark:.4f})"
    assert coloured > 0.002, f"{path.name}: almost no coloured pixels ({coloured:.4f})"


@pytest.fixture
def sweep_with_spectra(tmp_path: Path) -> Path:
    """A sweep whose errors scatter around n^-1/2 and whose largest n has spectra."""
    directory = tmp_path / "demo"
    write_json_atomic(
        directory / "sweep.json", manifest("demo", SWEEP | {"explicit": True})
    )
    rng = np.random.default_rng(11)
    for n in SWEEP["n"]:
        for seed in SWEEP["seeds"]:
            point = Point(n, n // 2, seed)
            blocks = {}
            for kernel in ("ck", "ntk"):
                entry = kernel_entry(
                    2.0 * n**-0.5 * math.exp(0.1 * rng.standard_normal())
                )
                entry["explicit_error_opnorm"] = 0.5 * entry["error_opnorm"]
                entry["explicit_error_opnorm_bound"] = 0.5 * entry["error_opnorm_bound"]
                blocks[kernel] = entry
            if n == 512 and seed == 0:
                # the solver's spectrum file: eigenvalues of K* (here: of a
                # Wishart-type matrix beta X^T X + mu with unit-norm columns) and
                # the limiting density it overlays
                x = rng.standard_normal((point.d, n))
                x /= np.linalg.norm(x, axis=0)
                eigenvalues = np.linalg.eigvalsh(0.3 * x.T @ x + 0.5 * np.eye(n))
                grid = np.linspace(0, 2, 2001)
                density, atom = marchenko_pastur_density(grid, n / point.d, 0.3, 0.5)
                point_dir(directory, point).mkdir(parents=True)
                np.savez(
                    point_dir(directory, point) / "spectrum_ck.npz",
                    eigenvalues=eigenvalues,
                    mp_grid=grid,
                    mp_density=density,
                    mp_atom=atom,
                    outlier=0.1 * n + 0.3 + 0.5,
                )
                blocks["ck"]["spectrum"] = {
                    "kind": "eigenvalues",
                    "path": "spectrum_ck.npz",
                }
            write_metrics(directory, point, blocks)
    return directory


def test_every_figure_is_a_real_png(sweep_with_spectra: Path) -> None:
    outputs = aggregate(sweep_with_spectra)
    names = sorted(path.name for path in outputs.plots)
    assert names == [
        "error_opnorm.png",
        "explicit_error_opnorm.png",
        "relative_error.png",
        "spectra_ck.png",
    ]
    for path in outputs.plots:
        assert_real_png(path)


def test_partial_sweep_still_plots(sweep_with_spectra: Path) -> None:
    for seed in SWEEP["seeds"]:
        (point_dir(sweep_with_spectra, Point(256, 128, seed)) / "metrics.json").unlink()
    outputs = aggregate(sweep_with_spectra)
    for path in outputs.plots:
        assert_real_png(path)
