"""implicit-rmt: implicit-network kernels against their random-matrix equivalents.

The theory is written out in ``docs/theory.md``; modules cite its equations.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("implicit-rmt")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = ["__version__"]
