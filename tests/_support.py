"""Helpers shared by the fault, bad-input and SLURM tests.

- :func:`tree_digest` fingerprints every file under a folder, so a test can prove
  that a failed command left existing results byte-identical;
- :func:`run_killable` runs a command in its own process group under a timeout
  that kills the whole group (Snakemake and Dask start children of their own);
- :func:`venv_env` is the environment in which those children, and SLURM jobs
  that inherit it, find this interpreter's ``implicit-rmt`` and ``snakemake``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

#: Folder of the interpreter running the tests (the project's .venv/bin in CI).
BIN = Path(sys.executable).parent


def tree_digest(root: Path) -> dict[str, str]:
    """Return ``{relative path: sha256}`` for every regular file under ``root``.

    Folders appear with the digest ``"dir"`` so that an added empty folder counts
    as a change too.
    """
    digest: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            digest[relative] = "link:" + os.readlink(path)
        elif path.is_dir():
            digest[relative] = "dir"
        else:
            digest[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def venv_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Return ``os.environ`` with this interpreter's folder first on ``PATH``."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("PYTHONUNBUFFERED", "1")
    if extra:
        env.update(extra)
    return env


def run_killable(
    command: Sequence[str],
    *,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a new session; on timeout kill its whole process group.

    Raises
    ------
    AssertionError
        The command ran past ``timeout`` seconds; the message holds its output.
    """
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=dict(env) if env is not None else venv_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(
            f"{' '.join(command)} ran past {timeout} s and was killed; output:\n"
            f"{output[-4000:]}"
        ) from None
    finally:
        # Whatever the command left behind in its group goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")


#: The points of :func:`make_results_tree`: (n, d), seed 0, tiles of 16.
TREE_POINTS = ((32, 16), (48, 24))


def make_results_tree(sweep_dir: Path) -> None:
    """Write a real sweep directory: two measured points, then their aggregation.

    Each point is built and measured by ``implicit-rmt point`` (in this process,
    Dask workers as threads), then ``implicit-rmt aggregate`` writes the tables
    and plots. About 10 s on two cores.
    """
    from implicit_rmt.cli import main

    for n, d in TREE_POINTS:
        point = sweep_dir / "points" / f"n{n}_d{d}_seed0"
        point.mkdir(parents=True)
        status = main(
            ["point", "--n", str(n), "--dim", str(d), "--tile", "16", "--threads",
             "--progress", "none", "--out", str(point / "kernels.zarr"),
             "--metrics", str(point / "metrics.json")]
        )  # fmt: skip
        assert status == 0, f"implicit-rmt point failed for n={n}"
    assert main(["aggregate", str(sweep_dir)]) == 0
