"""Kernel stores: one Zarr v3 group per sweep point, with its build records and lock.

Layout (the contract of ``docs/architecture.md``; ``docs/stores.md`` explains it):

``X``
    (d, n) data matrix, chunks ``(min(d, tile), tile)``, dims ``(feature, sample)``.
``ck``, ``ntk``
    (n, n) kernels :math:`G^*` and :math:`\\Theta^*`, chunks ``(tile, tile)``, dims
    ``(row, column)``.
group attribute ``implicit_rmt``
    every parameter of the point, the package version, ``tau`` and
    ``coefficients`` (:math:`\\alpha, \\beta, \\mu` per kernel).
``_build/``
    a Zarr subgroup holding the build's bookkeeping: ``lock`` (the lock file of
    the running build), ``x/<J>`` (column block ``J`` of ``X`` is written),
    ``tiles/<I>_<J>`` (tile ``(I, J)`` and its mirror are written for every
    kernel) and ``complete`` (every tile was written and verified).

Records are written only after the data they describe, each atomically (temporary
file, then rename), so a build killed at any instant never leaves a record without
its data. Every array's fill value is NaN: a chunk that was never written reads as
NaN and is caught by the finiteness check of a resumed build.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from implicit_rmt import __version__
from implicit_rmt.data import check_seed
from implicit_rmt.errors import ParameterError, StoreError

logger = logging.getLogger(__name__)

STORE_FORMAT = 1
KERNEL_NAMES = ("ck", "ntk")
DTYPES = ("float64", "float32")
ATTRIBUTE = "implicit_rmt"
BUILD_GROUP = "_build"


@dataclass(frozen=True, eq=True)
class PointSpec:
    """Every parameter that determines the content of one kernel store.

    Parameters
    ----------
    n
        Number of data points (columns of :math:`X`, order of the kernels).
    d
        Dimension of the data points (rows of :math:`X`).
    seed
        Seed of the data, an integer in ``[0, 2**64)``.
    kernels
        Kernels to build, a non-empty subset of ``("ck", "ntk")`` in that order.
    activation
        Activation name understood by ``implicit_rmt.activations``.
    activation_params
        Parameters of the activation (e.g. ``{"slope": 0.1}``).
    sigma_a2, sigma_b2
        Weight and bias variances of the implicit network.
    tile
        Side of the square kernel tiles (the Zarr chunks).
    dtype
        ``"float64"`` (default) or ``"float32"``.
    """

    n: int
    d: int
    seed: int = 0
    kernels: tuple[str, ...] = KERNEL_NAMES
    activation: str = "relu"
    activation_params: Mapping[str, float] = field(default_factory=dict)
    sigma_a2: float = 0.2
    sigma_b2: float = 0.8
    tile: int = 1024
    dtype: str = "float64"

    def __post_init__(self) -> None:
        for name in ("n", "d", "tile"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ParameterError(name, value, "a positive integer")
        check_seed(self.seed)
        kernels = self.kernels
        if isinstance(kernels, str) or not isinstance(kernels, Sequence):
            raise ParameterError("kernels", kernels, "a sequence such as ('ck', 'ntk')")
        unknown = [name for name in kernels if name not in KERNEL_NAMES]
        if not kernels or unknown or len(set(kernels)) != len(kernels):
            raise ParameterError(
                "kernels",
                ",".join(map(str, kernels)),
                "a non-empty list of distinct names among ck, ntk",
            )
        object.__setattr__(
            self, "kernels", tuple(name for name in KERNEL_NAMES if name in kernels)
        )
        if not isinstance(self.activation, str) or not self.activation:
            raise ParameterError("activation", self.activation, "an activation name")
        if not isinstance(self.activation_params, Mapping):
            raise ParameterError(
                "activation_params", self.activation_params, "a mapping name -> number"
            )
        params: dict[str, float] = {}
        for key, value in sorted(self.activation_params.items()):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ParameterError(f"activation_params.{key}", value, "a number")
            params[str(key)] = float(value)
        object.__setattr__(self, "activation_params", params)
        for name in ("sigma_a2", "sigma_b2"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ParameterError(name, value, "a non-negative number")
            if not (math.isfinite(value) and value >= 0):
                raise ParameterError(name, value, "a finite non-negative number")
            object.__setattr__(self, name, float(value))
        if self.dtype not in DTYPES:
            raise ParameterError("dtype", self.dtype, "'float64' or 'float32'")

    @property
    def tiles_per_side(self) -> int:
        """Number of tile rows (and columns) of an n×n kernel."""
        return -(-self.n // self.tile)

    def block(self, index: int) -> tuple[int, int]:
        """Return the ``(start, stop)`` sample range of tile row/column ``index``."""
        start = index * self.tile
        return start, min(start + self.tile, self.n)

    def parameters(self) -> dict[str, Any]:
        """Return the JSON-serialisable parameters, as in the group attributes."""
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        values["kernels"] = list(self.kernels)
        values["activation_params"] = dict(self.activation_params)
        return values

    def to_attrs(
        self, tau: float, coefficients: Mapping[str, Mapping[str, float]]
    ) -> dict[str, Any]:
        """Return the ``implicit_rmt`` group attribute of a store of this point.

        Parameters
        ----------
        tau
            Diagonal fixed point :math:`\\tau` of the kernel.
        coefficients
            ``{kernel: {"alpha": ..., "beta": ..., "mu": ...}}`` for every kernel.
        """
        return {
            "format": STORE_FORMAT,
            "version": __version__,
            **self.parameters(),
            "tau": float(tau),
            "coefficients": {
                name: {key: float(value) for key, value in coefficients[name].items()}
                for name in self.kernels
            },
        }

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any]) -> PointSpec:
        """Read a spec back from an ``implicit_rmt`` group attribute."""
        names = [item.name for item in fields(cls)]
        missing = [name for name in names if name not in attrs]
        if missing:
            raise StoreError(
                f"the store attributes lack {', '.join(missing)}; "
                "it was not written by implicit-rmt build"
            )
        values = {name: attrs[name] for name in names}
        values["kernels"] = tuple(values["kernels"])
        return cls(**values)

    def differences(self, other: PointSpec) -> list[str]:
        """Return ``"name: stored X, requested Y"`` for each differing parameter."""
        mine, theirs = self.parameters(), other.parameters()
        return [
            f"{name}: stored {mine[name]!r}, requested {theirs[name]!r}"
            for name in mine
            if mine[name] != theirs[name]
        ]


@dataclass(frozen=True)
class KernelStore:
    """A complete kernel store opened for reading.

    Attributes
    ----------
    path
        Directory of the Zarr group.
    group
        The open ``zarr.Group``; ``store["ck"]`` etc. return its ``zarr.Array``.
    spec
        Parameters of the point.
    attrs
        The whole ``implicit_rmt`` attribute, including ``tau``, ``coefficients``
        and ``version``.
    """

    path: Path
    group: Any
    spec: PointSpec
    attrs: dict[str, Any]

    def __getitem__(self, name: str) -> Any:
        """Return the ``zarr.Array`` ``X``, ``ck`` or ``ntk``."""
        if name != "X" and name not in self.spec.kernels:
            raise StoreError(
                f"{self.path} holds no array {name!r}; "
                f"it holds X and {', '.join(self.spec.kernels)}"
            )
        return self.group[name]

    @property
    def tau(self) -> float:
        """Diagonal fixed point :math:`\\tau` recorded at build time."""
        return float(self.attrs["tau"])

    @property
    def coefficients(self) -> dict[str, dict[str, float]]:
        """:math:`\\alpha, \\beta, \\mu` per kernel, as recorded at build time."""
        return dict(self.attrs["coefficients"])


def open_store(path: str | os.PathLike[str]) -> KernelStore:
    """Open a finished kernel store for reading.

    Parameters
    ----------
    path
        Directory of the store (``.../kernels.zarr``).

    Raises
    ------
    StoreError
        The path is not a kernel store, or its build has not finished (rerun
        ``implicit-rmt build`` with the same parameters to complete it).
    """
    path = Path(path)
    group = _open_group(path, mode="r")
    attrs = _read_attrs(group, path)
    if attrs.get("format") != STORE_FORMAT:
        raise StoreError(
            f"{path} has store format {attrs.get('format')!r}; this version of "
            f"implicit-rmt reads format {STORE_FORMAT}. Rebuild the store."
        )
    spec = PointSpec.from_attrs(attrs)
    if not (path / BUILD_GROUP / "complete").exists():
        raise StoreError(
            f"{path} is incomplete: its build did not finish. Rerun "
            "`implicit-rmt build` with the same parameters to complete it."
        )
    return KernelStore(path=path, group=group, spec=spec, attrs=attrs)


def _open_group(path: Path, mode: str) -> Any:
    """Open the Zarr group at ``path`` or raise StoreError if there is none."""
    import zarr

    if not (path / "zarr.json").is_file():
        raise StoreError(f"{path} is not a kernel store (no zarr.json)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        return zarr.open_group(path, mode=mode, zarr_format=3)  # type: ignore[arg-type]


def _read_attrs(group: Any, path: Path) -> dict[str, Any]:
    attrs = group.attrs.asdict().get(ATTRIBUTE)
    if not isinstance(attrs, dict):
        raise StoreError(f"{path} is a Zarr group but not a kernel store")
    return attrs


def prepare_store(
    path: str | os.PathLike[str], spec: PointSpec, attrs: Mapping[str, Any]
) -> Any:
    """Create the store of ``spec`` at ``path``, or reopen it if it matches.

    Parameters
    ----------
    path
        Directory of the store; its parent must exist.
    spec
        Parameters the caller wants to build.
    attrs
        The full ``implicit_rmt`` attribute to write on creation
        (:meth:`PointSpec.to_attrs`).

    Returns
    -------
    zarr.Group
        The group, opened for writing, with every array present.

    Raises
    ------
    StoreError
        ``path`` exists but is not a kernel store, or holds one whose parameters
        differ from ``spec`` (the message lists each difference). Nothing is
        written in that case.
    """
    import zarr

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise StoreError(f"--out {path} exists and is not a directory")
    if (path / "zarr.json").is_file():
        group = _open_group(path, mode="r+")
        check_matches(group, path, spec)
        logger.info("resuming the build of %s", path)
    else:
        if path.is_dir() and set(os.listdir(path)) - {BUILD_GROUP}:
            raise StoreError(
                f"--out {path} is a non-empty directory that is not a kernel store; "
                "choose another --out"
            )
        if not path.parent.is_dir():
            raise StoreError(
                f"--out {path}: the directory {path.parent} does not exist"
            )
        logger.info("creating the store %s", path)
        group = zarr.create_group(
            path, zarr_format=3, attributes={ATTRIBUTE: dict(attrs)}, overwrite=False
        )
    _create_arrays(group, spec, path)
    return group


def check_matches(group: Any, path: Path, spec: PointSpec) -> None:
    """Raise StoreError, listing the differences, unless the store holds ``spec``."""
    stored = PointSpec.from_attrs(_read_attrs(group, path))
    differences = stored.differences(spec)
    if differences:
        raise StoreError(
            f"{path} holds a store with other parameters ("
            + "; ".join(differences)
            + "). Choose another --out, or delete the store to rebuild it."
        )


def check_existing(path: Path, spec: PointSpec) -> None:
    """Refuse, before any work, an ``--out`` that holds something other than ``spec``.

    A missing path, an empty directory, or a store of the same parameters passes.
    """
    if path.exists() and not path.is_dir():
        raise StoreError(f"--out {path} exists and is not a directory")
    if (path / "zarr.json").is_file():
        check_matches(_open_group(path, mode="r"), path, spec)
    elif path.is_dir() and set(os.listdir(path)) - {BUILD_GROUP}:
        raise StoreError(
            f"--out {path} is a non-empty directory that is not a kernel store; "
            "choose another --out"
        )
    elif not path.parent.is_dir():
        raise StoreError(f"--out {path}: the directory {path.parent} does not exist")
    # A build writes into the store (lock, records), even one that is complete.
    writable = path if path.is_dir() else path.parent
    if not os.access(writable, os.W_OK):
        raise StoreError(
            f"--out {path}: {writable} is not writable (read-only file system or "
            "permissions); choose another --out"
        )


def _create_arrays(group: Any, spec: PointSpec, path: Path) -> None:
    """Create the arrays and the build subgroup that are missing; consolidate."""
    import zarr

    wanted: dict[str, tuple[tuple[int, int], tuple[int, int], tuple[str, str]]] = {
        "X": (
            (spec.d, spec.n),
            (min(spec.d, spec.tile), spec.tile),
            ("feature", "sample"),
        )
    }
    for name in spec.kernels:
        wanted[name] = ((spec.n, spec.n), (spec.tile, spec.tile), ("row", "column"))
    created = False
    if not (path / BUILD_GROUP / "zarr.json").is_file():
        group.create_group(BUILD_GROUP, attributes={"about": "build records"})
        created = True
    for name, (shape, chunks, dims) in wanted.items():
        if (path / name / "zarr.json").is_file():
            array = group[name]
            if tuple(array.shape) != shape or tuple(array.chunks) != chunks:
                raise StoreError(
                    f"array {name} of {group.store} has shape {array.shape} and "
                    f"chunks {array.chunks}; expected {shape} and {chunks}"
                )
            continue
        group.create_array(
            name,
            shape=shape,
            chunks=chunks,
            dtype=spec.dtype,
            fill_value=np.nan,
            dimension_names=dims,
            compressors=None,
        )
        created = True
    if created or group.metadata.consolidated_metadata is None:
        # Consolidated metadata lets xarray.open_zarr read the group without
        # listing the directory (which holds the records). It describes the
        # arrays only, so later record files leave it valid.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)
            zarr.consolidate_metadata(group.store)


@contextlib.contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """Hold the exclusive build lock of the store at ``path``.

    The lock is an ``flock`` on ``_build/lock``: the kernel releases it when its
    holder dies, so a killed build never blocks the next one.

    Raises
    ------
    StoreError
        Another build holds the lock.
    """
    lock_path = path / BUILD_GROUP / "lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")  # noqa: SIM115 - held across the yield
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise StoreError(
                f"{path} is being built by another process; wait for it to "
                "finish, or build into another --out"
            ) from error
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    finally:
        handle.close()


class Records:
    """The completion records of a store's ``_build`` subgroup.

    Parameters
    ----------
    path
        Directory of the store.
    """

    def __init__(self, path: Path) -> None:
        self.root = path / BUILD_GROUP

    def x_path(self, block: int) -> Path:
        """Record file of column block ``block`` of ``X``."""
        return self.root / "x" / str(block)

    def tile_path(self, row: int, column: int) -> Path:
        """Record file of tile ``(row, column)`` (and its mirror)."""
        return self.root / "tiles" / f"{row}_{column}"

    def done_x(self) -> set[int]:
        """Column blocks of ``X`` recorded as written."""
        folder = self.root / "x"
        if not folder.is_dir():
            return set()
        return {int(name) for name in os.listdir(folder) if name.isdigit()}

    def done_tiles(self) -> set[tuple[int, int]]:
        """Tiles ``(I, J)``, ``I <= J``, recorded as written."""
        folder = self.root / "tiles"
        if not folder.is_dir():
            return set()
        done = set()
        for name in os.listdir(folder):
            row, sep, column = name.partition("_")
            if sep and row.isdigit() and column.isdigit():
                done.add((int(row), int(column)))
        return done

    @property
    def complete_path(self) -> Path:
        """Marker written once every tile is written and verified."""
        return self.root / "complete"


def remove_partial_writes(path: Path) -> int:
    """Delete the temporary files that killed writers left in the store.

    Zarr writes each chunk to ``<chunk>.<uuid>.partial`` and renames it; records
    are written to ``.<name>.<pid>.<thread>.tmp``. A writer killed in between
    leaves that file behind, never a damaged chunk or record. Call this only
    while holding :func:`build_lock`.

    Returns
    -------
    int
        The number of files removed.
    """
    removed = 0
    for folder, _, names in os.walk(path):
        for name in names:
            if name.endswith(".partial") or (
                name.startswith(".") and name.endswith(".tmp")
            ):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))
                    removed += 1
    return removed


def write_record(path: Path, content: Mapping[str, Any]) -> None:
    """Write a small JSON record atomically: temporary file, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(
        f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"
    )
    with open(temporary, "w") as handle:
        json.dump(dict(content), handle)
    os.replace(temporary, path)


def remove_record(path: Path) -> None:
    """Remove a record if it exists."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
