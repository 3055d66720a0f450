"""Build a kernel store tile by tile on a Dask cluster, resuming where a build stopped.

A build has two phases, each a stream of small Dask tasks submitted in bounded
waves (so neither the scheduler nor the client ever holds more than a few waves):

1. column blocks of :math:`X` (``data.sphere_columns``) are written to ``X``;
2. for every tile :math:`(I, J)` with :math:`I \\le J`, a task reads the column
   blocks :math:`X_I, X_J`, computes :math:`T = X_I^\\top X_J` and the kernel maps
   (``backend.tile_entries``), writes the tile of every kernel and its mirror
   :math:`(J, I)`, and only then records the tile as done.

A worker holds at most two column blocks of :math:`X` and a few tiles at a time,
whatever :math:`n` is. On a rerun, tiles without a record are computed; recorded
tiles are read back and recomputed if any entry is not finite (a chunk that was
never written reads as NaN, the fill value). Tile arithmetic is deterministic (same
blocks, same GEMM shapes), so a resumed build is bitwise identical to an
uninterrupted one.
"""

from __future__ import annotations

import errno
import functools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Literal, TextIO

import numpy as np
import numpy.typing as npt

from implicit_rmt.backend import check_backend, tile_entries, to_device, to_host
from implicit_rmt.cluster import ClusterSpec, connect
from implicit_rmt.data import sphere_columns
from implicit_rmt.errors import ParameterError, StoreError
from implicit_rmt.store import (
    PointSpec,
    Records,
    build_lock,
    check_existing,
    prepare_store,
    remove_partial_writes,
    remove_record,
    write_record,
)

logger = logging.getLogger(__name__)

Progress = Literal["auto", "bar", "log", "none"]
PROGRESS_MODES = ("auto", "bar", "log", "none")

# A task's outcome: written without a record before, rewritten because its record
# pointed at non-finite data, or recorded and verified (nothing written).
_COMPUTED, _REPAIRED, _SKIPPED = "computed", "repaired", "skipped"


@dataclass(frozen=True)
class BuildReport:
    """What a build did.

    Attributes
    ----------
    path
        The store.
    tiles_total
        Tiles :math:`(I, J)`, :math:`I \\le J`, of the store (each covers every
        kernel and its mirror).
    tiles_computed
        Tiles computed because no record of them existed.
    tiles_repaired
        Tiles recorded as done whose data were not finite (corrupted or lost),
        recomputed.
    tiles_skipped
        Tiles recorded as done whose data were verified (or trusted, without
        verification).
    x_blocks_total, x_blocks_computed, x_blocks_repaired, x_blocks_skipped
        The same counts for the column blocks of :math:`X`.
    seconds
        Wall-clock time of the build, store preparation included.
    """

    path: Path
    tiles_total: int
    tiles_computed: int
    tiles_repaired: int
    tiles_skipped: int
    x_blocks_total: int
    x_blocks_computed: int
    x_blocks_repaired: int
    x_blocks_skipped: int
    seconds: float

    @property
    def tiles_recomputed(self) -> int:
        """Tiles whose entries were (re)written by this build."""
        return self.tiles_computed + self.tiles_repaired


def kernel_of(spec: PointSpec) -> Any:
    """Return the ``ImplicitKernel`` of a point (raises ParameterError if invalid)."""
    return _cached_kernel(
        spec.activation,
        json.dumps(spec.activation_params, sort_keys=True),
        spec.sigma_a2,
        spec.sigma_b2,
    )


@functools.lru_cache(maxsize=8)
def _cached_kernel(
    activation: str, params: str, sigma_a2: float, sigma_b2: float
) -> Any:
    """Return the kernel, one per worker process and parameter set."""
    from implicit_rmt.kernels import ImplicitKernel

    return ImplicitKernel(
        activation=activation,
        sigma_a2=sigma_a2,
        sigma_b2=sigma_b2,
        **json.loads(params),
    )


def store_attrs(spec: PointSpec) -> dict[str, Any]:
    """Return the ``implicit_rmt`` attribute of the store of ``spec``.

    Solves the kernel's fixed point and the equivalent coefficients
    (``implicit_rmt.equivalents.equivalent_coefficients``, at dimension ``d``), so
    invalid theory parameters are reported here, before any work.
    """
    from implicit_rmt.equivalents import equivalent_coefficients

    kernel = kernel_of(spec)
    coefficients = {}
    for name in spec.kernels:
        values = equivalent_coefficients(kernel, name, spec.d)
        coefficients[name] = {
            "alpha": float(values.alpha),
            "beta": float(values.beta),
            "mu": float(values.mu),
        }
    return spec.to_attrs(float(kernel.tau), coefficients)


def build_store(
    spec: PointSpec,
    path: str | os.PathLike[str],
    *,
    client: Any = None,
    backend: str = "numpy",
    progress: Progress = "auto",
    verify: bool = True,
) -> BuildReport:
    """Build (or finish building) the kernel store of one point.

    Parameters
    ----------
    spec
        Parameters of the point.
    path
        Directory of the store (``.../kernels.zarr``); its parent must exist.
    client
        A ``distributed.Client`` to run on, a :class:`~implicit_rmt.cluster.ClusterSpec`
        to start (and close) for this build, or ``None`` for a local cluster
        (``ClusterSpec()``).
    backend
        ``"numpy"`` or ``"cupy"`` (tile arithmetic on the workers' GPU).
    progress
        ``"bar"`` (a progress bar on stderr), ``"log"`` (INFO log lines),
        ``"none"``, or ``"auto"``: a bar if stderr is a terminal, log lines
        otherwise.
    verify
        Read back the tiles recorded as done and recompute those that are not
        finite. ``False`` trusts the records.

    Returns
    -------
    BuildReport
        Counts of computed, repaired and skipped tiles, and the time taken.

    Raises
    ------
    ParameterError
        An invalid backend, cluster or theory parameter (before any work).
    StoreError
        ``path`` holds a store of other parameters or something else, or another
        build holds the store's lock. Nothing is written in that case.
    """
    started = time.perf_counter()
    # Workers may run elsewhere (SLURM) with another working directory.
    path = Path(os.path.abspath(path))

    # Step 1: validate everything before the first write.
    if not isinstance(spec, PointSpec):
        raise ParameterError("spec", spec, "a PointSpec")
    check_backend(backend)
    if progress not in PROGRESS_MODES:
        raise ParameterError("progress", progress, f"one of {PROGRESS_MODES}")
    if not (client is None or isinstance(client, ClusterSpec)) and not hasattr(
        client, "submit"
    ):
        raise ParameterError(
            "client", client, "a distributed.Client, a ClusterSpec or None"
        )
    attrs = store_attrs(spec)
    check_existing(path, spec)

    # Step 2: hold the lock, create or reopen the store, forget "complete".
    with ExitStack() as stack:
        # A full disk, raised by any write below, ends the build with a StoreError.
        stack.enter_context(_disk_full_as_store_error(path))
        stack.enter_context(build_lock(path))
        prepare_store(path, spec, attrs)
        records = Records(path)
        remove_record(records.complete_path)
        leftovers = remove_partial_writes(path)
        if leftovers:
            logger.info("removed %d partial write(s) of a killed build", leftovers)
        if client is None or isinstance(client, ClusterSpec):
            client = stack.enter_context(connect(client))
        # The kernel travels with each tile task, its fast maps built (a few kB;
        # no scatter, which would wait for workers that a SLURM queue may delay).
        kernel = kernel_of(spec).prepare()

        # Step 3: the column blocks of X.
        blocks = range(spec.tiles_per_side)
        done_x = records.done_x()
        x_calls = (
            (_x_block_task, str(path), spec, block, recorded)
            for block in blocks
            for recorded in (block in done_x,)
            if verify or not recorded
        )
        x_counts = _run_wave(
            client, x_calls, _Reporter("X column blocks", len(blocks), progress)
        )
        x_counts[_SKIPPED] += 0 if verify else len(done_x & set(blocks))

        # Step 4: the tiles I <= J of every kernel, and their mirrors.
        pairs = [(row, col) for row in blocks for col in blocks if row <= col]
        done_tiles = records.done_tiles()
        tile_calls = (
            (_tile_task, str(path), spec, kernel, row, col, backend, recorded)
            for row, col in pairs
            for recorded in ((row, col) in done_tiles,)
            if verify or not recorded
        )
        tile_counts = _run_wave(
            client, tile_calls, _Reporter("tiles", len(pairs), progress)
        )
        tile_counts[_SKIPPED] += 0 if verify else len(done_tiles & set(pairs))

        # Step 5: everything is written and verified.
        seconds = time.perf_counter() - started
        report = BuildReport(
            path=path,
            tiles_total=len(pairs),
            tiles_computed=tile_counts[_COMPUTED],
            tiles_repaired=tile_counts[_REPAIRED],
            tiles_skipped=tile_counts[_SKIPPED],
            x_blocks_total=spec.tiles_per_side,
            x_blocks_computed=x_counts[_COMPUTED],
            x_blocks_repaired=x_counts[_REPAIRED],
            x_blocks_skipped=x_counts[_SKIPPED],
            seconds=seconds,
        )
        write_record(
            records.complete_path,
            {"tiles": len(pairs), "seconds": seconds, "backend": backend},
        )
    logger.info(
        "built %s: %d tiles computed, %d repaired, %d skipped in %.1f s",
        path,
        report.tiles_computed,
        report.tiles_repaired,
        report.tiles_skipped,
        report.seconds,
    )
    if report.tiles_repaired or report.x_blocks_repaired:
        logger.warning(
            "%d tile(s) and %d X block(s) of %s were recorded as written but not "
            "finite on disk; they were recomputed",
            report.tiles_repaired,
            report.x_blocks_repaired,
            path,
        )
    return report


@contextmanager
def _disk_full_as_store_error(path: Path) -> Iterator[None]:
    """Re-raise a full disk or quota (ENOSPC, EDQUOT) as a StoreError.

    The message says how to resume; other errors pass unchanged. Chunks and
    records are written atomically, so what was written before the disk filled
    up stays valid and a rerun with space resumes from it.
    """
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise StoreError(
            f"{path}: the disk is full ({error.strerror}) while building the store. "
            "The tiles written so far are kept: free space, or build into another "
            "--out, and rerun the same command to resume."
        ) from error


def _in_flight_limit(client: Any) -> int:
    """Tasks kept in flight: two per worker thread, at least four."""
    threads = int(sum(client.nthreads().values()))
    return max(4, 2 * threads)


def _run_wave(
    client: Any,
    calls: Iterable[tuple[Any, ...]],
    reporter: _Reporter,
) -> dict[str, int]:
    """Run ``calls`` with a bounded number in flight; count their outcomes.

    The bound, two tasks per worker thread (:func:`_in_flight_limit`), is read
    again every few seconds, so workers that join late (SLURM jobs leaving the
    queue) get work too.
    """
    from distributed import as_completed

    counts = {_COMPUTED: 0, _REPAIRED: 0, _SKIPPED: 0}
    pending: Iterator[tuple[Any, ...]] = iter(calls)
    limit, checked = _in_flight_limit(client), time.monotonic()
    in_flight = {client.submit(*call, pure=False) for call in islice(pending, limit)}
    queue = as_completed(in_flight)  # type: ignore[no-untyped-call]
    try:
        for future in queue:
            counts[future.result()] += 1
            in_flight.discard(future)
            future.release()
            reporter.advance()
            if time.monotonic() - checked > 5.0:
                limit, checked = _in_flight_limit(client), time.monotonic()
            for call in islice(pending, max(limit - len(in_flight), 0)):
                future = client.submit(*call, pure=False)
                in_flight.add(future)
                queue.add(future)  # type: ignore[no-untyped-call]
    except BaseException:
        client.cancel(list(in_flight))
        raise
    finally:
        reporter.close()
    return counts


def _open_array(path: str, name: str) -> Any:
    """Open array ``name`` of the store, reusing this process's handle if current."""
    status = os.stat(os.path.join(path, name, "zarr.json"))
    return _cached_array(path, name, status.st_ino, status.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _cached_array(path: str, name: str, inode: int, mtime_ns: int) -> Any:
    """Array handle; the metadata file's inode and mtime key out stale handles."""
    import zarr

    return zarr.open_array(os.path.join(path, name), mode="r+", zarr_format=3)


def _x_block_task(path: str, spec: PointSpec, block: int, recorded: bool) -> str:
    """Write column block ``block`` of X unless it is recorded and finite."""
    x = _open_array(path, "X")
    start, stop = spec.block(block)
    record = Records(Path(path)).x_path(block)
    status = _COMPUTED
    if recorded:
        if np.isfinite(x[:, start:stop]).all():
            return _SKIPPED
        remove_record(record)
        status = _REPAIRED
    x[:, start:stop] = sphere_columns(spec.seed, spec.d, start, stop, spec.dtype)
    write_record(record, {"columns": [start, stop]})
    return status


def _tile_task(
    path: str,
    spec: PointSpec,
    kernel: Any,
    row: int,
    column: int,
    backend: str,
    recorded: bool,
) -> str:
    """Write tile (row, column) of every kernel and its mirror, then record it."""
    arrays = {name: _open_array(path, name) for name in spec.kernels}
    rows, columns = slice(*spec.block(row)), slice(*spec.block(column))
    record = Records(Path(path)).tile_path(row, column)
    status = _COMPUTED
    if recorded:
        if all(
            np.isfinite(arrays[name][rows, columns]).all()
            and np.isfinite(arrays[name][columns, rows]).all()
            for name in spec.kernels
        ):
            return _SKIPPED
        remove_record(record)
        status = _REPAIRED

    # The arithmetic: T = X_I^T X_J, then the entry maps, on the backend's device.
    x = _open_array(path, "X")
    x_rows = to_device(x[:, rows], backend)
    x_columns = x_rows if row == column else to_device(x[:, columns], backend)
    entries = tile_entries(
        kernel, x_rows, x_columns, spec.kernels, diagonal=row == column
    )

    # Write every kernel's tile and mirror, and only then the record.
    for name in spec.kernels:
        tile = to_host(entries[name])
        if not np.isfinite(tile).all():
            # Never record a non-finite tile: its inputs are damaged.
            raise StoreError(
                f"tile ({row}, {column}) of {name} in {path} is not finite: the "
                "data X it was computed from are damaged. Rerun the build without "
                "--no-verify (verify=True) to rewrite the damaged blocks of X."
            )
        arrays[name][rows, columns] = tile
        if row != column:
            arrays[name][columns, rows] = _transposed(tile)
    write_record(record, {"rows": [rows.start, rows.stop]})
    return status


def _transposed(
    tile: npt.NDArray[np.floating], block: int = 128
) -> npt.NDArray[np.floating]:
    """Return ``tile.T`` in C order, copied block by block.

    Blocks of ``block`` × ``block`` entries (128 KiB in float64) stay in cache
    while they are transposed; a plain ``tile.T.copy()`` of a 2048 × 2048 tile,
    or Zarr's own copy of a transposed view, is 3-8 times slower.
    """
    height, width = tile.shape
    out = np.empty((width, height), dtype=tile.dtype)
    for top in range(0, height, block):
        for left in range(0, width, block):
            out[left : left + block, top : top + block] = tile[
                top : top + block, left : left + block
            ].T
    return out


class _Reporter:
    """Progress of one phase: a bar on a terminal, or INFO log lines."""

    def __init__(
        self,
        what: str,
        total: int,
        mode: Progress,
        stream: TextIO | None = None,
        interval: float = 10.0,
    ) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.stream = sys.stderr if stream is None else stream
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "log"
        self.mode = mode
        self.interval = interval
        self.started = self.last = time.perf_counter()

    def advance(self) -> None:
        self.done += 1
        now = time.perf_counter()
        rate = self.done / max(now - self.started, 1e-9)
        if self.mode == "bar":
            width = 30
            filled = width * self.done // max(self.total, 1)
            self.stream.write(
                f"\r{self.what}: [{'#' * filled}{'.' * (width - filled)}] "
                f"{self.done}/{self.total} ({rate:.1f}/s)"
            )
            self.stream.flush()
        elif self.mode == "log" and (
            now - self.last >= self.interval or self.done == self.total
        ):
            self.last = now
            remaining = (self.total - self.done) / rate if rate > 0 else math.inf
            logger.info(
                "%s: %d/%d done (%.1f/s, about %.0f s left)",
                self.what,
                self.done,
                self.total,
                rate,
                remaining,
            )

    def close(self) -> None:
        if self.mode == "bar" and self.done:
            self.stream.write("\n")
            self.stream.flush()
