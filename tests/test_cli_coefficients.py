"""``implicit-rmt coefficients``: the JSON contract, the table, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from implicit_rmt.cli import main
from implicit_rmt.equivalents import equivalent_coefficients, match_quadratic
from implicit_rmt.kernels import ImplicitKernel

CONTRACT = [
    "coefficients",
    "--activation",
    "relu",
    "--sigma-a2",
    "0.2",
    "--sigma-b2",
    "0.8",
    "--dim",
    "500",
    "--kernel",
    "ck",
    "--json",
]


def _script() -> str:
    script = Path(sys.executable).with_name("implicit-rmt")
    return str(script) if script.exists() else shutil.which("implicit-rmt") or ""


def test_installed_script_prints_the_contract_json() -> None:
    result = subprocess.run(
        [_script(), *CONTRACT], capture_output=True, text=True, check=True, timeout=60
    )
    report = json.loads(result.stdout)
    keys = {"kernel", "activation", "sigma_a2", "sigma_b2", "dim", "tau"}
    assert keys | {"alpha", "beta", "mu", "quadratic"} <= set(report)
    assert {"a0", "a1", "a2"} <= set(report["quadratic"])
    assert report["kernel"] == "ck" and report["activation"] == "relu"
    assert report["dim"] == 500 and report["sigma_a2"] == 0.2
    assert report["tau"] == pytest.approx(0.8 / 0.9, rel=4e-16)
    # The same numbers as the library (JSON round-trips floats exactly).
    coefficients = equivalent_coefficients(ImplicitKernel(), "ck", 500)
    match = match_quadratic(coefficients)
    assert report["alpha"] == coefficients.alpha
    assert report["beta"] == coefficients.beta
    assert report["mu"] == coefficients.mu
    assert report["quadratic"]["a2"] == match.a2


def test_table_and_branches(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["coefficients", "--dim", "100", "--kernel", "ntk", "--all-branches"]
    assert main(args) == 0
    out = capsys.readouterr().out
    coefficients = equivalent_coefficients(ImplicitKernel(), "ntk", 100)
    assert f"{coefficients.alpha:.15g}" in out
    assert f"{coefficients.mu:.15g}" in out
    rows = [line for line in out.splitlines() if line[:5] in ("+ + +", "- - -")]
    assert len(rows) == 2
    assert sum(line[:1] in "+-" and line[1:2] == " " for line in out.splitlines()) == 8


def test_activation_parameters_and_no_match(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["coefficients", "--activation", "tanh", "--dim", "50", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["quadratic"] is None
    assert "no quadratic activation matches" in report["no_quadratic_match"]
    args = ["coefficients", "--activation", "leaky_relu", "--param", "slope=0.3"]
    assert main([*args, "--dim", "50", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["activation_params"] == {"slope": 0.3}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--activation", "softsign"], "activation='softsign' is invalid"),
        (["--sigma-a2", "-0.2"], "sigma_a2=-0.2 is invalid: expected a finite number"),
        (["--sigma-b2", "0"], "sigma_b2=0.0 is invalid"),
        (["--sigma-a2", "2.5"], "sigma_a2=2.5 is invalid: expected sigma_a2 < 2 "),
        (["--param", "slope=2"], "relu.slope=2.0 is invalid"),
    ],
)
def test_bad_input_names_the_parameter(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["coefficients", "--dim", "50", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_bad_dimension(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["coefficients", "--dim", "0"]) == 2
    assert "dim=0 is invalid: expected an integer >= 2" in capsys.readouterr().err
