"""Exceptions raised by implicit-rmt.

Every error a user can cause derives from :class:`ImplicitRMTError`, so the CLI can
report it in one line and exit non-zero without a traceback. Each class also inherits
the builtin exception a caller would naturally catch (``ValueError``,
``RuntimeError``, ``OSError``).

Messages follow one pattern: the parameter, the value received, what was expected,
and, where one exists, how to fix it.
"""

from __future__ import annotations

from typing import Any


class ImplicitRMTError(Exception):
    """Base class of every error implicit-rmt raises on purpose."""


class ParameterError(ImplicitRMTError, ValueError):
    """A parameter has a value outside what is allowed.

    Parameters
    ----------
    parameter
        Name of the parameter as the user spelled it (CLI flag, config key or
        keyword argument).
    value
        The value received.
    expected
        What would have been accepted, in words.
    fix
        Optional hint on how to repair the input.
    """

    def __init__(
        self, parameter: str, value: Any, expected: str, fix: str | None = None
    ) -> None:
        self.parameter = parameter
        self.value = value
        self.expected = expected
        self.fix = fix
        message = f"{parameter}={value!r} is invalid: expected {expected}."
        if fix:
            message += f" {fix}"
        super().__init__(message)


class NoFixedPointError(ParameterError):
    """The kernel fixed point does not exist or its iteration does not contract."""


class ConfigError(ImplicitRMTError, ValueError):
    """A workflow configuration file is malformed or inconsistent."""


class StoreError(ImplicitRMTError, RuntimeError):
    """A kernel store cannot be used as asked (other parameters, locked, damaged)."""


class ConvergenceError(ImplicitRMTError, RuntimeError):
    """An iterative solver stopped before reaching its tolerance.

    Parameters
    ----------
    message
        What did not converge and why.
    partial
        The best result available when the solver stopped.
    """

    def __init__(self, message: str, partial: Any = None) -> None:
        self.partial = partial
        super().__init__(message)


class ConfigValueError(ConfigError, ParameterError):
    """A workflow configuration key is unknown or holds a value outside what is allowed.

    ``parameter`` is the key path as written in the file, for example
    ``sweeps.default.n[2]``.
    """


class NoQuadraticMatchError(ParameterError):
    """No quadratic activation has an explicit kernel with the requested α, β, μ."""


class MetricsError(ImplicitRMTError, ValueError):
    """A metrics.json file is damaged: unreadable, or not as ``measure`` wrote it."""
