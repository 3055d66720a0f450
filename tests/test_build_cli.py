"""The ``implicit-rmt build`` command: the contract's options, one-line errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from implicit_rmt.cli import main
from implicit_rmt.cli.build import (
    add_build_arguments,
    cluster_from_args,
    spec_from_args,
)
from implicit_rmt.cluster import ClusterSpec
from implicit_rmt.errors import ParameterError
from implicit_rmt.store import PointSpec, open_store


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_build_arguments(parser)
    return parser.parse_args(["--n", "10", "--dim", "4", "--out", "k.zarr", *argv])


def test_options_give_the_specs() -> None:
    args = _parse(
        "--seed",
        "3",
        "--kernels",
        "ntk",
        "--tile",
        "8",
        "--activation",
        "leaky_relu",
        "--activation-param",
        "slope=0.1",
        "--sigma-a2",
        "0.3",
        "--cluster",
        "slurm",
        "--workers",
        "4",
        "--slurm-queue",
        "short",
        "--slurm-walltime",
        "02:00:00",
        "--slurm-job-extra=--gres=gpu:1",
    )
    assert spec_from_args(args) == PointSpec(
        n=10,
        d=4,
        seed=3,
        kernels=("ntk",),
        activation="leaky_relu",
        activation_params={"slope": 0.1},
        sigma_a2=0.3,
        tile=8,
    )
    assert cluster_from_args(args) == ClusterSpec(
        kind="slurm",
        workers=4,
        queue="short",
        walltime="02:00:00",
        job_extra=("--gres=gpu:1",),
    )


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (("--tile", "0"), "--tile"),
        (("--kernels", "ck,nngp"), "--kernels"),
        (("--activation-param", "slope"), "--activation-param"),
        (("--workers", "0"), "--workers"),
        (("--cluster", "address"), "--scheduler-address"),
    ],
)
def test_errors_name_the_flag(argv: tuple[str, ...], flag: str) -> None:
    args = _parse(*argv)
    with pytest.raises(ParameterError) as info:
        spec_from_args(args)
        cluster_from_args(args)
    assert info.value.parameter == flag


def test_build_command_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "kernels.zarr"
    argv = ["build", "--n", "40", "--dim", "8", "--seed", "1", "--kernels", "ck,ntk"]
    argv += ["--out", str(out), "--threads", "--workers", "1"]
    assert main([*argv, "--tile", "16"]) == 0
    store = open_store(out)
    assert store.spec.n == 40
    assert np.isfinite(store["ntk"][:]).all()
    assert "6 of 6 tiles written" in capsys.readouterr().err

    # a rerun with other parameters is refused in one line, exit status 2
    assert main([*argv, "--tile", "8"]) == 2
    error = capsys.readouterr().err
    assert "tile: stored 16, requested 8" in error
    assert error.count("\n") == 1

    # a bad dimension names its flag
    assert main(["build", "--n", "4", "--dim", "0", "--out", str(tmp_path / "b")]) == 2
    assert "--dim=0" in capsys.readouterr().err
