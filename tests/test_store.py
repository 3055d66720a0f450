"""Store layout, parameters, records, lock, and the reader's open_store."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from implicit_rmt.errors import ParameterError, StoreError
from implicit_rmt.store import (
    PointSpec,
    Records,
    build_lock,
    open_store,
    prepare_store,
    remove_partial_writes,
    write_record,
)

COEFFICIENTS = {
    "ck": {"alpha": 0.1, "beta": 0.2, "mu": 0.3},
    "ntk": {"alpha": 0.4, "beta": 0.5, "mu": 0.6},
}


def _tree_digest(path: Path) -> str:
    """Hash of every file name and content under ``path``."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize(
    ("values", "parameter"),
    [
        ({"n": 0}, "n"),
        ({"d": -3}, "d"),
        ({"tile": 2.5}, "tile"),
        ({"seed": -1}, "seed"),
        ({"kernels": ()}, "kernels"),
        ({"kernels": ("ck", "nngp")}, "kernels"),
        ({"kernels": "ck"}, "kernels"),
        ({"kernels": ("ck", "ck")}, "kernels"),
        ({"sigma_a2": -0.1}, "sigma_a2"),
        ({"sigma_b2": float("nan")}, "sigma_b2"),
        ({"dtype": "float16"}, "dtype"),
        ({"activation_params": {"slope": "x"}}, "activation_params.slope"),
    ],
)
def test_point_spec_names_the_bad_field(values: dict[str, Any], parameter: str) -> None:
    arguments: dict[str, Any] = {"n": 10, "d": 3, **values}
    with pytest.raises(ParameterError) as info:
        PointSpec(**arguments)
    assert info.value.parameter == parameter


def test_point_spec_round_trips_through_the_attributes() -> None:
    spec = PointSpec(
        n=10,
        d=3,
        seed=2**63,
        kernels=("ntk", "ck"),
        activation="leaky_relu",
        activation_params={"slope": 0.1},
        sigma_a2=0.3,
        sigma_b2=1,
        tile=4,
        dtype="float32",
    )
    assert spec.kernels == ("ck", "ntk")  # canonical order
    assert spec.tiles_per_side == 3
    assert spec.block(2) == (8, 10)
    attrs = spec.to_attrs(0.5, COEFFICIENTS)
    assert attrs["format"] == 1
    assert attrs["tau"] == 0.5
    assert attrs["coefficients"] == COEFFICIENTS
    assert PointSpec.from_attrs(attrs) == spec
    other = PointSpec(n=12, d=3, seed=2**63, kernels=("ck", "ntk"), tile=4)
    differences = spec.differences(other)
    assert "n: stored 10, requested 12" in differences
    assert any(item.startswith("activation:") for item in differences)


def test_new_store_layout_opens_in_xarray_with_named_dims(tmp_path: Path) -> None:
    xarray = pytest.importorskip("xarray")
    spec = PointSpec(n=10, d=3, tile=4)
    path = tmp_path / "k.zarr"
    group = prepare_store(path, spec, spec.to_attrs(0.5, COEFFICIENTS))
    assert group["X"].chunks == (3, 4)
    assert group["ck"].chunks == (4, 4)
    assert np.isnan(group["ntk"][:]).all()  # unwritten chunks read as NaN
    group["ck"][:] = np.eye(10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dataset = xarray.open_zarr(path)
    assert dataset["X"].dims == ("feature", "sample")
    assert dataset["ck"].dims == ("row", "column")
    assert dataset.attrs["implicit_rmt"]["n"] == 10
    np.testing.assert_array_equal(dataset["ck"].values, np.eye(10))


def test_other_parameters_are_refused_and_nothing_is_touched(tmp_path: Path) -> None:
    spec = PointSpec(n=10, d=3, tile=4)
    path = tmp_path / "k.zarr"
    group = prepare_store(path, spec, spec.to_attrs(0.5, COEFFICIENTS))
    group["ck"][:] = 1.0
    before = _tree_digest(path)
    other = PointSpec(n=10, d=3, seed=1, tile=8)
    with pytest.raises(StoreError) as info:
        prepare_store(path, other, other.to_attrs(0.5, COEFFICIENTS))
    assert "seed: stored 0, requested 1" in str(info.value)
    assert "tile: stored 4, requested 8" in str(info.value)
    assert _tree_digest(path) == before
    # the same parameters reopen the store with its data
    again = prepare_store(path, spec, spec.to_attrs(0.5, COEFFICIENTS))
    assert (again["ck"][:] == 1.0).all()


def test_a_directory_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "results"
    path.mkdir()
    (path / "notes.txt").write_text("mine")
    spec = PointSpec(n=4, d=2, tile=4)
    with pytest.raises(StoreError, match="not a kernel store"):
        prepare_store(path, spec, spec.to_attrs(0.5, COEFFICIENTS))
    assert (path / "notes.txt").read_text() == "mine"
    with pytest.raises(StoreError, match="does not exist"):
        prepare_store(tmp_path / "a" / "b.zarr", spec, spec.to_attrs(0.5, COEFFICIENTS))


def test_open_store_refuses_an_incomplete_store(tmp_path: Path) -> None:
    spec = PointSpec(n=4, d=2, kernels=("ck",), tile=4)
    path = tmp_path / "k.zarr"
    prepare_store(path, spec, spec.to_attrs(0.5, COEFFICIENTS))
    with pytest.raises(StoreError, match="incomplete"):
        open_store(path)
    write_record(Records(path).complete_path, {})
    store = open_store(path)
    assert store.spec == spec
    assert store.tau == 0.5
    assert store.coefficients == {"ck": COEFFICIENTS["ck"]}
    assert store["ck"].shape == (4, 4)
    with pytest.raises(StoreError, match="no array 'ntk'"):
        store["ntk"]
    with pytest.raises(StoreError, match="not a kernel store"):
        open_store(tmp_path)


def test_records_are_listed_and_temporary_files_ignored(tmp_path: Path) -> None:
    records = Records(tmp_path)
    write_record(records.tile_path(0, 2), {"rows": [0, 4]})
    write_record(records.x_path(3), {})
    (records.root / "tiles" / ".1_1.99.1.tmp").write_text("{")  # a killed write
    assert records.done_tiles() == {(0, 2)}
    assert records.done_x() == {3}
    chunk = tmp_path / "ck" / "c" / "0"
    chunk.mkdir(parents=True)
    (chunk / "1.4f2a.partial").write_bytes(b"\0")  # a killed zarr chunk write
    (chunk / "0").write_bytes(b"\0")
    assert remove_partial_writes(tmp_path) == 2
    assert [p.name for p in chunk.iterdir()] == ["0"]
    assert [
        p.name for p in (records.root / "tiles").iterdir() if "tmp" not in p.name
    ] == ["0_2"]


def test_two_builds_of_one_store_are_refused(tmp_path: Path) -> None:
    with (
        build_lock(tmp_path),
        pytest.raises(StoreError, match="another process"),
        build_lock(tmp_path),
    ):
        pass
    with build_lock(tmp_path):  # released on exit
        pass


def test_the_lock_of_a_killed_process_does_not_block(tmp_path: Path) -> None:
    script = (
        "import sys, time, pathlib\n"
        "from implicit_rmt.store import build_lock\n"
        "with build_lock(pathlib.Path(sys.argv[1])):\n"
        "    print('locked', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreError), build_lock(tmp_path):
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        assert holder.stdout is not None
        holder.stdout.close()
    deadline = time.monotonic() + 10
    while True:  # the kernel drops the flock when the holder dies
        try:
            with build_lock(tmp_path):
                break
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_a_store_killed_while_being_created_is_completed(tmp_path: Path) -> None:
    # The group exists with its attributes, but the build died before creating
    # the arrays and consolidating the metadata.
    import zarr

    spec = PointSpec(n=10, d=3, tile=4)
    path = tmp_path / "k.zarr"
    attrs = spec.to_attrs(0.5, COEFFICIENTS)
    zarr.create_group(path, zarr_format=3, attributes={"implicit_rmt": attrs})
    group = prepare_store(path, spec, attrs)
    assert sorted(group.array_keys()) == ["X", "ck", "ntk"]
    reopened = zarr.open_group(path, mode="r", use_consolidated=True)
    assert sorted(reopened.metadata.consolidated_metadata.metadata) == [
        "X",
        "_build",
        "ck",
        "ntk",
    ]
