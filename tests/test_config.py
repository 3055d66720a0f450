"""Workflow configuration: defaults, and every kind of bad input named by its key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from implicit_rmt.config import (
    Point,
    load_config,
    point_arguments,
    select_sweep,
    sweep_dims,
    sweep_points,
    validate_config,
)
from implicit_rmt.errors import ConfigError, ConfigValueError

PROJECT_CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"
MINIMAL: dict[str, Any] = {
    "sweeps": {"small": {"n": [32, 64], "ratio": 0.5, "seeds": [0]}}
}


def rejected(config: dict[str, Any]) -> ConfigValueError:
    with pytest.raises(ConfigValueError) as caught:
        validate_config(config)
    return caught.value


def with_sweep(**changes: Any) -> dict[str, Any]:
    config = copy.deepcopy(MINIMAL)
    config["sweeps"]["small"].update(changes)
    return config


def test_project_config_is_valid_and_default_sweep_is_the_main_job() -> None:
    config = load_config(PROJECT_CONFIG)
    default = config["sweeps"][config["sweep"]]
    assert config["sweep"] == "default"
    assert sweep_points(default) == [
        Point(n, n // 2, seed) for n in (256, 512, 1024, 2048) for seed in (0, 1, 2)
    ]
    assert (default["activation"], default["sigma_a2"], default["sigma_b2"]) == (
        "relu",
        0.2,
        0.8,
    )
    assert default["kernels"] == ["ck", "ntk"]


def test_defaults_are_filled_without_touching_the_input() -> None:
    original = copy.deepcopy(MINIMAL)
    config = validate_config(MINIMAL)
    assert original == MINIMAL
    sweep = config["sweeps"]["small"]
    assert sweep["kernels"] == ["ck", "ntk"]
    assert (sweep["activation"], sweep["sigma_a2"], sweep["sigma_b2"]) == (
        "relu",
        0.2,
        0.8,
    )
    assert (sweep["tile"], sweep["dtype"], sweep["backend"]) == (
        256,
        "float64",
        "numpy",
    )
    assert sweep["spectra"] is False and sweep["explicit"] is False
    assert config["resources"]["point"]["threads"] == 2
    assert config["results"] == "results"


def test_points_from_ratio_and_from_explicit_d() -> None:
    config = validate_config(with_sweep(n=[64, 33], ratio=0.3, seeds=[2, 0]))
    # round(0.3 * 33) = round(9.9) = 10, round(0.3 * 64) = round(19.2) = 19
    assert sweep_dims(config["sweeps"]["small"]) == [19, 10]
    assert [p.name for p in sweep_points(config["sweeps"]["small"])] == [
        "n33_d10_seed0",
        "n33_d10_seed2",
        "n64_d19_seed0",
        "n64_d19_seed2",
    ]
    explicit = with_sweep(d=[5, 7])
    del explicit["sweeps"]["small"]["ratio"]
    config = validate_config(explicit)
    assert sweep_points(config["sweeps"]["small"])[-1] == Point(64, 7, 0)


def test_point_arguments_carry_every_setting() -> None:
    config = validate_config(
        with_sweep(
            activation="leaky_relu",
            activation_params={"slope": 0.1},
            spectra=True,
            tile=16,
            block_size=64,
            max_passes=90,
        )
    )
    arguments = point_arguments(config["sweeps"]["small"])
    text = " ".join(arguments)
    assert "--block-size 64" in text and "--max-passes 90" in text
    assert "--activation leaky_relu" in text and "--activation-param slope=0.1" in text
    assert "--tile 16" in text and "--spectra auto" in text and "--threads" in arguments
    assert "--explicit" not in arguments


def test_the_selected_sweep_must_exist() -> None:
    config = copy.deepcopy(MINIMAL) | {"sweep": "other"}
    error = rejected(config)
    assert error.parameter == "sweep" and "small" in str(error)
    # without `sweep`: the sweep named default, else the only one, else an error
    assert validate_config(MINIMAL)["sweep"] == "small"
    two = copy.deepcopy(MINIMAL)
    two["sweeps"]["other"] = two["sweeps"]["small"]
    assert rejected(two).parameter == "sweep"
    valid = validate_config(MINIMAL | {"sweep": "small"})
    with pytest.raises(ConfigValueError, match="--sweep='nope'"):
        select_sweep(valid, "nope")


@pytest.mark.parametrize(
    ("config", "key", "words"),
    [
        (with_sweep(sedes=[0]), "sweeps.small.sedes", "Did you mean 'seeds'"),
        (MINIMAL | {"resuls": "out"}, "resuls", "Did you mean 'results'"),
        (
            with_sweep(activation_params={"slop": 0.1}),
            "sweeps.small.activation_params.slop",
            "slope",
        ),
        (with_sweep(n=[32, "64"]), "sweeps.small.n[1]", "integer"),
        (with_sweep(activation="relux"), "sweeps.small.activation", "one of relu"),
        (with_sweep(sigma_a2=0), "sweeps.small.sigma_a2", "> 0"),
        (
            with_sweep(kernels=["ck", "nkt"]),
            "sweeps.small.kernels[1]",
            "one of ck, ntk",
        ),
        (with_sweep(seeds=[0, 0]), "sweeps.small.seeds", "without repeated"),
        (with_sweep(tolerance=1.5), "sweeps.small.tolerance", "< 1"),
        (with_sweep(block_size=0), "sweeps.small.block_size", ">= 1"),
        (with_sweep(max_passes=2.5), "sweeps.small.max_passes", "integer"),
        (with_sweep(spectra="yes"), "sweeps.small.spectra", "one of False, True, none"),
    ],
)
def test_schema_errors_name_the_key(
    config: dict[str, Any], key: str, words: str
) -> None:
    error = rejected(config)
    assert error.parameter == key
    assert words in str(error)
    assert str(error).startswith(f"{key}=")


def test_impossible_sweeps_are_rejected() -> None:
    error = rejected(with_sweep(n=[32, 1]))
    assert error.parameter == "sweeps.small.n[1]" and "two samples" in str(error)
    # a ratio giving d = round(0.01 * 32) = 0 at the smallest n
    error = rejected(with_sweep(n=[32, 1000], ratio=0.01))
    assert error.parameter == "sweeps.small.ratio"
    assert "n = 32" in str(error) and "d = 0" in str(error)
    explicit = with_sweep(d=[4, 0])
    del explicit["sweeps"]["small"]["ratio"]
    assert rejected(explicit).parameter == "sweeps.small.d[1]"
    explicit["sweeps"]["small"]["d"] = [4]
    assert "one dimension per n" in str(rejected(explicit))
    assert rejected(with_sweep(d=[4, 8])).parameter == "sweeps.small.ratio"


def test_scheduler_address_goes_with_the_address_cluster() -> None:
    error = rejected(with_sweep(cluster="address"))
    assert error.parameter == "sweeps.small.scheduler_address"
    error = rejected(with_sweep(scheduler_address="tcp://host:8786"))
    assert error.parameter == "sweeps.small.scheduler_address"
    assert rejected(with_sweep(scheduler_address="host")).parameter == (
        "sweeps.small.scheduler_address"
    )
    config = validate_config(
        with_sweep(cluster="address", scheduler_address="tcp://host:8786")
    )
    arguments = point_arguments(config["sweeps"]["small"])
    assert " ".join(arguments).count("--scheduler-address tcp://host:8786") == 1
    assert "--threads" not in arguments


def test_variances_without_a_fixed_point_are_rejected() -> None:
    # for ReLU the diagonal fixed point tau = sigma_b2 / (1 - sigma_a2 / 2)
    # exists only for sigma_a2 < 2
    error = rejected(with_sweep(sigma_a2=2.5))
    assert error.parameter == "sweeps.small.sigma_a2"
    assert error.value == 2.5
    validate_config(with_sweep(sigma_a2=1.9))
    error = rejected(with_sweep(activation="erf", activation_params={"slope": 0.1}))
    assert error.parameter == "sweeps.small.activation_params.slope"


def test_unreadable_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("sweeps: {a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(MINIMAL))
    assert load_config(tmp_path / "ok.yaml")["sweeps"]["small"]["n"] == [32, 64]


def test_explicit_network_without_a_quadratic_match_is_rejected() -> None:
    # tanh is odd, so G*(0) = G*''(0) = 0 and alpha = 0 while mu > 0: the constant
    # term a0 = sqrt(alpha - 2 a2^2 / d) - a2 has a negative radicand
    error = rejected(with_sweep(activation="tanh", explicit=True))
    assert error.parameter == "sweeps.small.explicit"
    assert "no quadratic network matches" in str(error)
    # the same sweep without the explicit network, and relu with it, are valid
    validate_config(with_sweep(activation="tanh", explicit=False))
    validate_config(with_sweep(activation="relu", explicit=True))
