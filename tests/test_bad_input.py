"""Bad input across the command line, the config and the results on disk.

Each case of :data:`CASES` runs one ``implicit-rmt`` command in a workspace that
holds a real sweep directory (two measured points with their tables, the
``results_tree`` fixture). Every case must

- exit with status 2,
- print one line ``implicit-rmt <command>: error: ...`` that names what is wrong
  (the flag or config key path, and the value received), without a traceback,
- and leave every file of the workspace byte-identical (hashed before and after),
  including the results already there.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from _support import tree_digest

from implicit_rmt.cli import main

TREE = "results/tree"
POINT = f"{TREE}/points/n32_d16_seed0"
STORE = f"{POINT}/kernels.zarr"
METRICS = f"{POINT}/metrics.json"
# A valid one-point sweep; each config case breaks one key of it.
VALID_SWEEP = {"n": [32], "ratio": 0.5, "seeds": [0], "tile": 16}
BUILD = ("build", "--n", "32", "--dim", "16", "--tile", "16", "--threads")


def _config(**changes: Any) -> Callable[[Path], None]:
    """Setup writing ``bad.yaml``: the valid sweep with ``changes`` applied."""

    def write(workspace: Path) -> None:
        sweep: dict[str, Any] = dict(VALID_SWEEP)
        resources = changes.pop("resources", None)
        sweep.update(changes)
        sweep = {key: value for key, value in sweep.items() if value is not None}
        config: dict[str, Any] = {"sweeps": {"t": sweep}}
        if resources is not None:
            config["resources"] = resources
        (workspace / "bad.yaml").write_text(yaml.safe_dump(config))

    return write


def _edit_metrics(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """Setup editing the n=32 point's metrics.json by hand (valid JSON after)."""

    def write(workspace: Path) -> None:
        path = workspace / METRICS
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data, indent=2))

    return write


def _truncate_metrics(workspace: Path) -> None:
    path = workspace / METRICS
    path.write_bytes(path.read_bytes()[:300])


def _text(name: str, text: str) -> Callable[[Path], None]:
    def write(workspace: Path) -> None:
        (workspace / name).write_text(text)

    return write


@dataclass(frozen=True)
class Bad:
    """One bad input: the command, what its error must say, how to prepare it."""

    id: str
    argv: tuple[str, ...]
    mentions: tuple[str, ...]
    setup: Callable[[Path], None] | None = None
    read_only: bool = False  # mount a read-only tmpfs on <workspace>/readonly
    tags: tuple[str, ...] = field(default=())


CASES = [
    # --- command line: types, ranges, unknown names -------------------------
    Bad("n-not-an-integer", ("build", "--n", "abc", "--dim", "16", "--out", "k.zarr"),
        ("--n", "'abc'")),
    Bad("n-zero", ("build", "--n", "0", "--dim", "16", "--out", "k.zarr"),
        ("--n=0", "positive integer")),
    Bad("dim-negative", ("build", "--n", "32", "--dim", "-3", "--out", "k.zarr"),
        ("--dim=-3", "positive integer")),
    Bad("unknown-kernel", (*BUILD, "--kernels", "ck,foo", "--out", "k.zarr"),
        ("--kernels", "foo", "ck, ntk")),
    Bad("unknown-activation", (*BUILD, "--activation", "sigmoidx", "--out", "k.zarr"),
        ("--activation", "sigmoidx", "relu")),
    Bad("negative-variance", (*BUILD, "--sigma-a2", "-0.5", "--out", "k.zarr"),
        ("--sigma-a2=-0.5", "non-negative")),
    Bad("no-fixed-point", (*BUILD, "--sigma-a2", "5", "--out", "k.zarr"),
        ("--sigma-a2=5.0", "sigma_a2 < 2")),
    Bad("activation-param-without-value",
        (*BUILD, "--activation", "leaky_relu", "--activation-param", "slope",
         "--out", "k.zarr"),
        ("--activation-param", "'slope'", "NAME=VALUE")),
    Bad("parameter-of-another-activation",
        (*BUILD, "--activation-param", "slope=0.1", "--out", "k.zarr"),
        ("slope=0.1", "no parameter")),
    Bad("negative-seed", (*BUILD, "--seed", "-1", "--out", "k.zarr"),
        ("--seed=-1", "2**64")),
    Bad("address-cluster-without-address",
        (*BUILD, "--cluster", "address", "--out", "k.zarr"),
        ("--scheduler-address", "tcp://")),
    Bad("slurm-walltime-malformed",
        (*BUILD, "--cluster", "slurm", "--slurm-walltime", "25h", "--out", "k.zarr"),
        ("--slurm-walltime='25h'", "HH:MM:SS")),
    Bad("memory-limit-malformed", (*BUILD, "--memory-limit", "lots", "--out", "k.zarr"),
        ("--memory-limit='lots'", "4GiB")),
    Bad("solver-tolerance-negative",
        ("measure", "--store", STORE, "--out", "m.json", "--tol", "-1"),
        ("--tol=-1.0",)),
    Bad("coefficients-dimension-zero", ("coefficients", "--dim", "0"),
        ("dim=0", ">= 2")),
    Bad("unknown-profile", ("sweep", "--profile", "laptop"),
        ("--profile", "'laptop'", "local")),
    # --- stores and output folders -------------------------------------------
    Bad("store-of-other-parameters",
        ("build", "--n", "48", "--dim", "16", "--tile", "16", "--threads",
         "--out", STORE),
        (STORE, "n: stored 32, requested 48")),
    Bad("out-is-a-file", (*BUILD, "--out", METRICS),
        (METRICS, "not a directory")),
    Bad("measure-of-a-non-store", ("measure", "--store", POINT, "--out", "m.json"),
        (POINT, "not a kernel store")),
    Bad("unwritable-store-folder", (*BUILD, "--out", "readonly/kernels.zarr"),
        ("readonly", "not writable"), read_only=True),
    Bad("unwritable-metrics-folder",
        ("measure", "--store", STORE, "--out", "readonly/metrics.json"),
        ("--out='readonly/metrics.json'", "writable directory"), read_only=True),
    # --- the workflow config -------------------------------------------------
    Bad("config-wrong-type", ("sweep", "--config", "bad.yaml"),
        ("sweeps.t.n[1]='abc'", "integer"), setup=_config(n=[32, "abc"])),
    Bad("config-out-of-range", ("sweep", "--config", "bad.yaml"),
        ("sweeps.t.ratio=-1",), setup=_config(ratio=-1)),
    Bad("config-unknown-key", ("sweep", "--config", "bad.yaml"),
        ("sweeps.t.seed", "Did you mean 'seeds'?"),
        setup=_config(seeds=None, seed=[0])),
    Bad("config-unknown-activation", ("sweep", "--config", "bad.yaml"),
        ("sweeps.t.activation", "sigmoid"), setup=_config(activation="sigmoid")),
    Bad("config-no-fixed-point", ("sweep", "--config", "bad.yaml"),
        ("sweeps.t.sigma_a2", "3.0"), setup=_config(sigma_a2=3.0)),
    Bad("config-resources-zero-threads", ("sweep", "--config", "bad.yaml"),
        ("resources.point.threads=0", ">= 1"),
        setup=_config(resources={"point": {"threads": 0}})),
    Bad("config-unknown-sweep", ("sweep", "--config", "bad.yaml", "--sweep", "big"),
        ("--sweep='big'", "(t)"), setup=_config()),
    Bad("config-not-yaml", ("sweep", "--config", "bad.yaml"),
        ("bad.yaml", "not valid YAML at line 3"),
        setup=_text("bad.yaml", "sweeps:\n  t: [n: 32\n")),
    Bad("config-missing", ("sweep", "--config", "absent.yaml"),
        ("absent.yaml", "cannot be read")),
    # --- results on disk -----------------------------------------------------
    Bad("metrics-truncated", ("aggregate", TREE),
        (METRICS, "damaged"), setup=_truncate_metrics),
    Bad("metrics-value-edited", ("aggregate", TREE),
        (METRICS, "kernels.ck.error_opnorm='abc'", "a number"),
        setup=_edit_metrics(lambda m: m["kernels"]["ck"].update(error_opnorm="abc"))),
    Bad("metrics-point-edited", ("aggregate", TREE),
        (METRICS, "point.n=64", "32"),
        setup=_edit_metrics(lambda m: m["point"].update(n=64))),
    Bad("metrics-converged-edited", ("aggregate", TREE),
        (METRICS, "kernels.ntk.converged='yes'", "true or false"),
        setup=_edit_metrics(lambda m: m["kernels"]["ntk"].update(converged="yes"))),
    Bad("aggregate-of-no-sweep", ("aggregate", "results/absent"),
        ("results/absent", "does not exist")),
]  # fmt: skip


@contextlib.contextmanager
def _read_only_folder(folder: Path) -> Iterator[None]:
    """Mount a read-only tmpfs on ``folder`` (root can write anywhere else)."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _run(argv: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run the command line in this process; return its status and its stderr."""
    try:
        status = main(list(argv))
    except SystemExit as exit_:  # argparse rejects types and choices this way
        status = int(exit_.code or 0)
    return status, capsys.readouterr().err


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 15
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_refused_and_changes_nothing(
    case: Bad,
    results_tree: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workspace = tmp_path / "workspace"
    shutil.copytree(results_tree, workspace / TREE)
    if case.setup is not None:
        case.setup(workspace)
    monkeypatch.chdir(workspace)
    with contextlib.ExitStack() as stack:
        if case.read_only:
            stack.enter_context(_read_only_folder(workspace / "readonly"))
        before = tree_digest(workspace)

        status, stderr = _run(case.argv, capsys)

        after = tree_digest(workspace)
    assert status == 2, f"exit status {status}; stderr:\n{stderr}"
    assert "Traceback" not in stderr, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(f"implicit-rmt {case.argv[0]}: error: "), stderr
    for text in case.mentions:
        assert text in line, f"{text!r} not in the error: {line}"
    changed = sorted(
        name
        for name in before.keys() | after.keys()
        if before.get(name) != after.get(name)
    )
    assert not changed, f"files changed by a refused command: {changed}"
