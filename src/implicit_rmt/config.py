"""Workflow configuration: read, validate, fill defaults, expand sweeps into points.

A configuration file (``config/config.yaml``) names one or more sweeps, each a grid
of ``(n, d, seed)`` points sharing the theory and build parameters. Validation
happens in two stages, both before any job starts and without touching the disk:

1. the JSON schema ``config/schema.yaml`` checks types and ranges, fills the
   defaults it declares and rejects unknown keys;
2. :func:`validate_config` then checks what a schema cannot express: ``n >= 2``,
   ``d = round(c n) >= 1``, one ``d`` per ``n``, a kernel fixed point for the
   activation and the variances (by constructing
   :class:`implicit_rmt.kernels.ImplicitKernel`).

Every problem is raised as :class:`~implicit_rmt.errors.ConfigValueError` whose
parameter is the key path as written in the file, e.g. ``sweeps.default.n[2]``.
"""

from __future__ import annotations

import copy
import difflib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from implicit_rmt.errors import ConfigError, ConfigValueError, ParameterError

logger = logging.getLogger(__name__)

#: The schema shipped with the project, next to the default configuration.
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


@dataclass(frozen=True, order=True)
class Point:
    """One sweep point: the sample count, the input dimension and the data seed."""

    n: int
    d: int
    seed: int

    @property
    def name(self) -> str:
        """Directory name of the point, ``n<n>_d<d>_seed<seed>``."""
        return f"n{self.n}_d{self.d}_seed{self.seed}"


def load_config(path: str | Path, schema: str | Path | None = None) -> dict[str, Any]:
    """Read a YAML configuration file and return it validated, defaults filled.

    Parameters
    ----------
    path
        The configuration file.
    schema
        The JSON schema; default :data:`SCHEMA_PATH`.

    Raises
    ------
    ConfigError
        The file cannot be read or is not a YAML mapping.
    ConfigValueError
        A key is unknown or holds an invalid value (see :func:`validate_config`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(
            f"config file {str(path)!r} cannot be read: {error}"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(
            f"config file {str(path)!r} is not valid YAML{_yaml_problem(error)}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {str(path)!r} must hold a mapping of keys to values, "
            f"got {type(data).__name__}"
        )
    return validate_config(data, schema=schema)


def _yaml_problem(error: yaml.YAMLError) -> str:
    """Say on one line where and why YAML failed (its own message spans lines)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None)
    if mark is None or problem is None:
        return ": " + " ".join(str(error).split())
    text = f" at line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context = getattr(error, "context", None)
    context_mark = getattr(error, "context_mark", None)
    if context and context_mark is not None:
        text += f" ({context} from line {context_mark.line + 1})"
    return text


def load_schema(schema: str | Path | None = None) -> dict[str, Any]:
    """Return the JSON schema of the configuration as a dictionary."""
    schema_path = Path(schema) if schema is not None else SCHEMA_PATH
    with schema_path.open(encoding="utf-8") as stream:
        loaded: dict[str, Any] = yaml.safe_load(stream)
    return loaded


def validate_config(
    config: Mapping[str, Any],
    schema: str | Path | None = None,
    check_theory: bool = True,
) -> dict[str, Any]:
    """Validate a configuration and return a copy with the schema's defaults filled.

    Parameters
    ----------
    config
        The configuration as read from YAML (not modified).
    schema
        The JSON schema; default :data:`SCHEMA_PATH`.
    check_theory
        Also construct the implicit kernel of every sweep, which fails when its
        activation and variances have no fixed point.

    Returns
    -------
    dict
        The validated configuration, defaults filled in.

    Raises
    ------
    ConfigValueError
        The first problem found, with the key path, the value and what was
        expected.
    """
    validated = copy.deepcopy(dict(config))
    schema_dict = load_schema(schema)
    _check_schema(validated, schema_dict)

    sweeps = validated["sweeps"]
    if "sweep" not in validated and ("default" in sweeps or len(sweeps) == 1):
        validated["sweep"] = "default" if "default" in sweeps else next(iter(sweeps))
    sweep_name = validated.get("sweep", "<missing>")
    if sweep_name not in sweeps:
        raise ConfigValueError(
            "sweep",
            sweep_name,
            f"the name of a sweep under `sweeps` ({', '.join(validated['sweeps'])})",
        )
    for name, sweep in validated["sweeps"].items():
        # top-level backend/cluster (set by the gpu profile) override every sweep
        for key in ("backend", "cluster"):
            if key in validated:
                sweep[key] = validated[key]
        _check_sweep(f"sweeps.{name}", sweep, check_theory)
    return validated


def select_sweep(config: dict[str, Any], name: str | None) -> dict[str, Any]:
    """Return ``config`` with ``sweep`` set to ``name`` (when given), validated."""
    if name is None:
        return config
    if name not in config["sweeps"]:
        raise ConfigValueError(
            "--sweep", name, f"a sweep of the config ({', '.join(config['sweeps'])})"
        )
    selected = dict(config)
    selected["sweep"] = name
    return selected


def sweep_dims(sweep: Mapping[str, Any]) -> list[int]:
    """Return the input dimension ``d`` of each ``n`` of a validated sweep.

    With ``ratio`` :math:`c`, :math:`d = \\operatorname{round}(c\\,n)` (Python's
    round, halves to even); with ``d``, the listed values.
    """
    if "d" in sweep:
        return [int(d) for d in sweep["d"]]
    return [round(sweep["ratio"] * n) for n in sweep["n"]]


def sweep_points(sweep: Mapping[str, Any]) -> list[Point]:
    """Return the points of a validated sweep, ordered by ``n`` then seed."""
    dims = sweep_dims(sweep)
    pairs = sorted(zip(sweep["n"], dims, strict=True))
    return [Point(n, d, seed) for n, d in pairs for seed in sorted(sweep["seeds"])]


def point_arguments(sweep: Mapping[str, Any]) -> list[str]:
    """Return the ``implicit-rmt point`` options shared by every point of a sweep.

    The per-point options (``--n``, ``--dim``, ``--seed``, outputs) and the
    threads per worker, which come from the job's resources, are added by the
    caller.
    """
    arguments = [
        "--kernels",
        ",".join(sweep["kernels"]),
        "--activation",
        sweep["activation"],
        "--sigma-a2",
        repr(float(sweep["sigma_a2"])),
        "--sigma-b2",
        repr(float(sweep["sigma_b2"])),
        "--tile",
        str(sweep["tile"]),
        "--dtype",
        sweep["dtype"],
        "--backend",
        sweep["backend"],
        "--cluster",
        sweep["cluster"],
        "--workers",
        str(sweep["workers"]),
        "--tol",
        repr(float(sweep["tolerance"])),
        "--block-size",
        str(sweep["block_size"]),
        "--max-passes",
        str(sweep["max_passes"]),
    ]
    for key, value in sorted(sweep["activation_params"].items()):
        arguments += ["--activation-param", f"{key}={float(value)!r}"]
    if sweep["cluster"] == "address":
        arguments += ["--scheduler-address", sweep["scheduler_address"]]
    if sweep["cluster"] == "local":
        # workers as threads of the point's process: start-up in milliseconds,
        # which dominates the small points of a sweep
        arguments.append("--threads")
    spectra = sweep["spectra"]
    if spectra is True:
        spectra = "auto"
    if spectra not in (False, "none"):
        arguments += ["--spectra", str(spectra)]
    if sweep["explicit"]:
        arguments.append("--explicit")
    return arguments


def _check_schema(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """Validate against the JSON schema, filling defaults; raise the first error."""
    import jsonschema
    from jsonschema import Draft202012Validator, validators

    # Defaults are filled while validating, the way the jsonschema FAQ and
    # Snakemake's `validate` do it: every `properties` keyword first sets the
    # defaults of the properties it lists.
    validate_properties = Draft202012Validator.VALIDATORS["properties"]

    def set_defaults(
        validator: Any, properties: Any, instance: Any, subschema: Any
    ) -> Iterator[Any]:
        if isinstance(instance, dict):
            for name, property_schema in properties.items():
                if "default" in property_schema:
                    instance.setdefault(name, copy.deepcopy(property_schema["default"]))
        yield from validate_properties(validator, properties, instance, subschema)

    validator_class = validators.extend(
        Draft202012Validator, {"properties": set_defaults}
    )
    errors: list[jsonschema.ValidationError] = sorted(
        validator_class(schema).iter_errors(config),
        key=lambda error: [str(part) for part in error.absolute_path],
    )
    if errors:
        raise _describe(errors[0], len(errors) - 1)


def _describe(error: Any, others: int) -> ConfigValueError:
    """Turn a jsonschema error into a ConfigValueError naming the key path."""
    path = _key_path(error.absolute_path)
    more = (
        f" ({others} more problem{'s' * (others > 1)} after this one)" if others else ""
    )
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        unknown = [key for key in error.instance if key not in known]
        key = unknown[0] if unknown else "?"
        close = difflib.get_close_matches(str(key), known, n=1)
        fix = f"Did you mean {close[0]!r}?" if close else None
        return ConfigValueError(
            _join(path, str(key)),
            error.instance.get(key),
            f"a known key; this object accepts {', '.join(known)}" + more,
            fix,
        )
    if error.validator == "required":
        return ConfigValueError(
            path or "<config>",
            "<missing key>",
            f"{error.message}{more}",
        )
    if error.validator == "propertyNames":
        return ConfigValueError(
            path, error.instance, f"a name made of letters, digits, _ . -{more}"
        )
    description = error.schema.get("description")
    expected = _expected(error)
    if description:
        expected += f" ({description.rstrip('.')})"
    return ConfigValueError(path or "<config>", error.instance, expected + more)


def _expected(error: Any) -> str:
    """Say in words what a failed schema keyword asked for."""
    keyword, value = error.validator, error.validator_value
    plural = "" if value == 1 else "s"
    if keyword == "type":
        return f"a value of type {value}"
    if keyword == "enum":
        return f"one of {', '.join(map(str, value))}"
    bounds = {
        "minimum": ">=",
        "maximum": "<=",
        "exclusiveMinimum": ">",
        "exclusiveMaximum": "<",
    }
    if keyword in bounds:
        return f"a number {bounds[keyword]} {value}"
    if keyword == "minItems":
        return f"a list of at least {value} item{plural}"
    if keyword == "minProperties":
        return f"a mapping with at least {value} entr{'y' if value == 1 else 'ies'}"
    if keyword == "uniqueItems":
        return "a list without repeated values"
    if keyword == "minLength":
        return f"a string of at least {value} character{plural}"
    return str(error.message)


def _key_path(parts: Sequence[Any]) -> str:
    """Format a jsonschema path as ``a.b[2].c``."""
    text = ""
    for part in parts:
        text = f"{text}[{part}]" if isinstance(part, int) else _join(text, str(part))
    return text


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _check_sweep(prefix: str, sweep: dict[str, Any], check_theory: bool) -> None:
    """Check the constraints of one sweep that the schema cannot express."""
    # sample counts: a kernel needs at least two samples to have off-diagonal entries
    for index, n in enumerate(sweep["n"]):
        if n < 2:
            raise ConfigValueError(
                f"{prefix}.n[{index}]",
                n,
                "an integer >= 2 (a kernel needs two samples)",
            )

    # input dimensions: exactly one of ratio and d, every d >= 1
    if ("ratio" in sweep) == ("d" in sweep):
        raise ConfigValueError(
            f"{prefix}.ratio",
            sweep.get("ratio", "<missing>"),
            "exactly one of `ratio` (c = d/n) and `d` (one dimension per n)",
            "Remove one of them." if "ratio" in sweep else "Add `ratio: 0.5`, say.",
        )
    if "d" in sweep:
        if len(sweep["d"]) != len(sweep["n"]):
            raise ConfigValueError(
                f"{prefix}.d",
                sweep["d"],
                f"one dimension per n: a list of {len(sweep['n'])} integers",
            )
        for index, d in enumerate(sweep["d"]):
            if d < 1:
                raise ConfigValueError(f"{prefix}.d[{index}]", d, "an integer >= 1")
    else:
        for index, n in enumerate(sweep["n"]):
            d = round(sweep["ratio"] * n)
            if d < 1:
                raise ConfigValueError(
                    f"{prefix}.ratio",
                    sweep["ratio"],
                    f"a ratio giving d = round(c n) >= 1, but n = {n} "
                    f"({prefix}.n[{index}]) gives d = {d}",
                    f"Use a ratio of at least {1 / n:g}, or larger n.",
                )

    # a running scheduler's address goes with cluster: address, and only there
    if (sweep["cluster"] == "address") != ("scheduler_address" in sweep):
        raise ConfigValueError(
            f"{prefix}.scheduler_address",
            sweep.get("scheduler_address", "<missing>"),
            "an address such as tcp://host:8786 exactly when cluster is 'address' "
            f"(cluster is {sweep['cluster']!r})",
        )

    # theory: the activation and the variances must have a kernel fixed point
    if check_theory:
        _check_kernel(prefix, sweep)


def _check_kernel(prefix: str, sweep: dict[str, Any]) -> None:
    """Construct the kernel (and its quadratic match if asked); name the bad key."""
    from implicit_rmt.kernels import ImplicitKernel

    try:
        kernel = ImplicitKernel(
            activation=sweep["activation"],
            sigma_a2=sweep["sigma_a2"],
            sigma_b2=sweep["sigma_b2"],
            **sweep["activation_params"],
        )
    except ParameterError as error:
        # the kernel names its parameter as a keyword (sigma_a2) or as
        # activation.parameter (erf.slope); map it to the config key
        name = str(error.parameter).rsplit(".", 1)[-1]
        if name in sweep["activation_params"]:
            key = f"activation_params.{name}"
        elif name in sweep:
            key = name
        else:
            key = "activation"
        summary = (
            f"activation={sweep['activation']}, "
            f"activation_params={sweep['activation_params']}, "
            f"sigma_a2={sweep['sigma_a2']}, sigma_b2={sweep['sigma_b2']}"
        )
        raise ConfigValueError(
            f"{prefix}.{key}",
            error.value,
            f"{error.expected} (for the kernel of {summary})",
            error.fix,
        ) from error

    if sweep["explicit"]:
        _check_explicit(prefix, sweep, kernel)


def _check_explicit(prefix: str, sweep: dict[str, Any], kernel: Any) -> None:
    """Check that a quadratic network matches every kernel at every ``d``.

    Odd activations (erf, tanh) have α = 0, so no quadratic matches them
    (docs/theory.md, matching section); finding that out after every point's
    build would waste the sweep.
    """
    from implicit_rmt.equivalents import equivalent_coefficients, match_quadratic
    from implicit_rmt.errors import NoQuadraticMatchError

    for d in sorted(set(sweep_dims(sweep))):
        for name in sweep["kernels"]:
            try:
                match_quadratic(equivalent_coefficients(kernel, name, d))
            except NoQuadraticMatchError as error:
                raise ConfigValueError(
                    f"{prefix}.explicit",
                    True,
                    f"false for this sweep: no quadratic network matches its "
                    f"{name} kernel at d = {d} ({error})",
                    "Set `explicit: false`, or choose an activation with a "
                    "non-zero mean such as relu.",
                ) from error
