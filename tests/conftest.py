"""Shared pytest configuration: markers that skip with a reason, and fixtures."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def _gpu_reason() -> str | None:
    """Return why CUDA tests cannot run here, or None when they can."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install '.[gpu]')"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError as error:
        return f"no CUDA device is usable: {error}"
    return None if count > 0 else "no CUDA device is present"


def _slurm_reason() -> str | None:
    """Return why SLURM tests cannot run here, or None when a controller answers."""
    if shutil.which("sinfo") is None:
        return "SLURM client tools (sinfo) are not installed"
    try:
        result = subprocess.run(
            ["sinfo", "--noheader", "--format=%T"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 10 s"
    if result.returncode != 0:
        return f"no SLURM controller is reachable: {result.stderr.strip()}"
    states = result.stdout.split()
    if not any(state.startswith(("idle", "mix", "alloc")) for state in states):
        return f"no SLURM node is up (states: {states or 'none'})"
    return None


def pytest_collection_modifyitems(
    config: pytest.Config, items: list[pytest.Item]
) -> None:
    reasons: dict[str, str | None] = {}
    for item in items:
        for marker, probe in (("gpu", _gpu_reason), ("slurm", _slurm_reason)):
            if marker in item.keywords:
                if marker not in reasons:
                    reasons[marker] = probe()
                reason = reasons[marker]
                if reason is not None:
                    item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def results_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real sweep directory: two measured points and their tables.

    Shared by every test of the session: copy it before changing anything in it.
    """
    from _support import make_results_tree

    sweep_dir = tmp_path_factory.mktemp("results") / "tree"
    make_results_tree(sweep_dir)
    return sweep_dir
