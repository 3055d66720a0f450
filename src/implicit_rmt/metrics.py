"""Check the metrics.json files of a sweep before anything is aggregated from them.

``implicit-rmt measure`` writes each ``metrics.json`` atomically (temporary file,
then rename), so a crashed job leaves no file rather than a truncated one. A file
that does not parse, or whose numbers are not numbers, was therefore damaged or
edited by hand after it was written; aggregating it would turn its values into
NaN without a word. :func:`check_sweep_metrics` refuses such a sweep instead,
naming the file and the entry, before any table is rewritten.

The layout checked is the contract of ``docs/architecture.md``: ``point`` with
``n``, ``d`` and ``seed`` matching the point's directory, and ``kernels`` mapping
each kernel to numbers (JSON ``NaN`` and ``Infinity`` included) and a boolean
``converged``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NoReturn

from implicit_rmt.errors import MetricsError

logger = logging.getLogger(__name__)

#: Entries of a kernel's block that must be numbers when present.
NUMBER_KEYS = (
    "alpha",
    "beta",
    "mu",
    "error_opnorm",
    "error_opnorm_bound",
    "opnorm",
    "opnorm_bound",
    "relative_error",
    "lambda_max",
    "lambda_min",
    "explicit_error_opnorm",
    "explicit_error_opnorm_bound",
    "passes",
    "seconds",
)
#: Entries every kernel's block holds.
REQUIRED_KEYS = ("error_opnorm", "error_opnorm_bound", "converged")

_FIX = (
    "Delete it and run the point again (`implicit-rmt sweep` reruns the points "
    "that have no metrics.json)."
)


def check_metrics_file(
    path: str | Path,
    n: int | None = None,
    d: int | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Read one metrics.json and check it against the contract; return its content.

    Parameters
    ----------
    path
        The metrics file.
    n, d, seed
        The point its directory names; when given, ``point`` must match them.

    Raises
    ------
    MetricsError
        The file is unreadable, not JSON, or an entry is missing or of the
        wrong type; the message names the file and the entry.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MetricsError(
            f"metrics file {str(path)!r} is damaged ({error}): expected the JSON "
            f"that `implicit-rmt measure` writes. {_FIX}"
        ) from None
    if not isinstance(data, dict):
        _refuse(path, "<file>", data, "a JSON object")

    point = data.get("point")
    if not isinstance(point, dict):
        _refuse(path, "point", point, "an object with n, d and seed")
    for key, expected in (("n", n), ("d", d), ("seed", seed)):
        value = point.get(key)
        if not _is_integer(value):
            _refuse(path, f"point.{key}", value, "an integer")
        if expected is not None and value != expected:
            _refuse(
                path,
                f"point.{key}",
                value,
                f"{expected}, the {key} of the point directory it lies in",
            )

    kernels = data.get("kernels")
    if not isinstance(kernels, dict) or not kernels:
        _refuse(path, "kernels", kernels, "a non-empty object, one entry per kernel")
    for kernel, entry in kernels.items():
        _check_kernel_entry(path, f"kernels.{kernel}", entry)
    return data


def check_sweep_metrics(sweep_dir: str | Path) -> int:
    """Check every ``points/*/metrics.json`` of a sweep; return how many exist.

    Raises
    ------
    MetricsError
        The first damaged file (see :func:`check_metrics_file`).
    """
    count = 0
    for path in sorted(Path(sweep_dir).glob("points/*/metrics.json")):
        n, d, seed = _point_of(path.parent.name)
        check_metrics_file(path, n, d, seed)
        count += 1
    logger.info("%d metrics file(s) of %s are intact", count, sweep_dir)
    return count


def _check_kernel_entry(path: Path, where: str, entry: Any) -> None:
    if not isinstance(entry, Mapping):
        _refuse(path, where, entry, "an object of numbers")
    for key in REQUIRED_KEYS:
        if key not in entry:
            _refuse(path, f"{where}.{key}", "<missing>", "present")
    for key in NUMBER_KEYS:
        if key in entry and not _is_number(entry[key]):
            _refuse(path, f"{where}.{key}", entry[key], "a number")
    if not isinstance(entry["converged"], bool):
        _refuse(path, f"{where}.converged", entry["converged"], "true or false")
    bound = entry["error_opnorm_bound"]
    if math.isfinite(bound) and bound < 0:
        _refuse(path, f"{where}.error_opnorm_bound", bound, "a number >= 0")


def _refuse(path: Path, where: str, value: Any, expected: str) -> NoReturn:
    raise MetricsError(
        f"metrics file {str(path)!r} is damaged: {where}={value!r}, expected "
        f"{expected}. {_FIX}"
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _point_of(name: str) -> tuple[int | None, int | None, int | None]:
    """``(n, d, seed)`` of a directory named ``n<n>_d<d>_seed<seed>``, else Nones."""
    parts = name.split("_")
    if (
        len(parts) == 3
        and parts[0][:1] == "n"
        and parts[1][:1] == "d"
        and parts[2][:4] == "seed"
        and all(p.isdigit() for p in (parts[0][1:], parts[1][1:], parts[2][4:]))
    ):
        return int(parts[0][1:]), int(parts[1][1:]), int(parts[2][4:])
    return None, None, None
