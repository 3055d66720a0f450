"""The ``implicit-rmt coefficients`` subcommand: α, β, μ and the matched quadratic.

Prints, for one activation, variances and dimension, the coefficients of the
equivalent :math:`\\bar K = \\alpha 11^\\top + \\beta X^\\top X + \\mu I` of
the implicit CK or NTK and the quadratic activation whose explicit kernel has the
same α, β, μ (docs/theory.md, equations (18)–(22)), as a table or as one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from implicit_rmt.activations import ACTIVATIONS


def _parameter(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number after {name}=, got {value!r}"
        ) from None


def register(subparsers: Any) -> None:
    """Add the ``coefficients`` parser."""
    parser = subparsers.add_parser(
        "coefficients",
        help="coefficients alpha, beta, mu of the equivalent and the matched quadratic",
        description=(
            "Print tau, the coefficients alpha, beta, mu of the high-dimensional "
            "equivalent of the implicit CK or NTK at dimension d, and the matched "
            "quadratic activation a2 t^2 + a1 t + a0."
        ),
    )
    parser.add_argument("--activation", default="relu", help=", ".join(ACTIVATIONS))
    parser.add_argument(
        "--param",
        action="append",
        type=_parameter,
        default=[],
        metavar="NAME=VALUE",
        help="activation parameter, e.g. slope=0.1 (leaky_relu), alpha=1 (elu), "
        "a0=, a1=, a2= (quadratic); repeatable",
    )
    parser.add_argument("--sigma-a2", type=float, default=0.2, help="σ_a² (0.2)")
    parser.add_argument("--sigma-b2", type=float, default=0.8, help="σ_b² (0.8)")
    parser.add_argument("--dim", type=int, required=True, help="data dimension d")
    parser.add_argument("--kernel", choices=("ck", "ntk"), default="ck")
    parser.add_argument(
        "--no-finite-d",
        dest="finite_d",
        action="store_false",
        help="drop the f''(0)/(2d) corrections",
    )
    parser.add_argument(
        "--all-branches",
        action="store_true",
        help="list all eight sign branches of the matched quadratic",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def compute(args: argparse.Namespace) -> dict[str, Any]:
    """Validate the arguments and compute the report (a JSON-serialisable dict)."""
    from implicit_rmt.equivalents import (
        check_dim,
        equivalent_coefficients,
        match_quadratic,
    )
    from implicit_rmt.errors import NoQuadraticMatchError
    from implicit_rmt.kernels import ImplicitKernel

    params = dict(args.param)
    dim = check_dim(args.dim)
    kernel = ImplicitKernel(args.activation, args.sigma_a2, args.sigma_b2, **params)
    coefficients = equivalent_coefficients(kernel, args.kernel, dim, args.finite_d)
    report: dict[str, Any] = {
        "kernel": args.kernel,
        **kernel.describe(),
        "dim": dim,
        "finite_d": args.finite_d,
        "alpha": coefficients.alpha,
        "beta": coefficients.beta,
        "mu": coefficients.mu,
        "taylor": {
            "f0": coefficients.value,
            "f1": coefficients.slope,
            "f2": coefficients.curvature,
            "f_at_1": coefficients.diagonal,
        },
    }
    try:
        branches = match_quadratic(coefficients, all_branches=True)
    except NoQuadraticMatchError as error:
        report["quadratic"] = None
        report["no_quadratic_match"] = str(error)
        return report
    report["quadratic"] = branches[0].as_dict()
    if args.all_branches:
        report["branches"] = [branch.as_dict() for branch in branches]
    return report


def _table(report: dict[str, Any]) -> str:
    params = report["activation_params"]
    name = report["activation"]
    if params:
        name += "(" + ", ".join(f"{k}={v:g}" for k, v in params.items()) + ")"
    rows = [
        ("kernel", report["kernel"]),
        ("activation", name),
        ("sigma_a2", f"{report['sigma_a2']:g}"),
        ("sigma_b2", f"{report['sigma_b2']:g}"),
        ("dim", str(report["dim"])),
        ("finite-d terms", "yes" if report["finite_d"] else "no"),
        ("tau", f"{report['tau']:.15g}"),
        ("alpha", f"{report['alpha']:.15g}"),
        ("beta", f"{report['beta']:.15g}"),
        ("mu", f"{report['mu']:.15g}"),
    ]
    lines = [f"{key:<16}{value}" for key, value in rows]
    if report["quadratic"] is None:
        lines.append(f"{'quadratic':<16}none: {report['no_quadratic_match']}")
        return "\n".join(lines)
    quadratic = report["quadratic"]
    lines.append(
        f"{'quadratic':<16}a2 = {quadratic['a2']:.15g}, a1 = {quadratic['a1']:.15g}, "
        f"a0 = {quadratic['a0']:.15g}"
    )
    if "branches" in report:
        lines.append("")
        lines.append(f"{'s2 s1 s0':<10}{'a2':>24}{'a1':>24}{'a0':>24}")
        for branch in report["branches"]:
            signs = " ".join("+" if s > 0 else "-" for s in branch["signs"])
            lines.append(
                f"{signs:<10}{branch['a2']:>24.15g}{branch['a1']:>24.15g}"
                f"{branch['a0']:>24.15g}"
            )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Run the subcommand; print the report; return the exit code."""
    report = compute(args)
    if args.json:
        print(json.dumps(report, indent=2, allow_nan=False))
    else:
        print(_table(report))
    return 0 if all(math.isfinite(report[k]) for k in ("alpha", "beta", "mu")) else 1
