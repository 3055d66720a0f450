"""The ``implicit-rmt point``subcommand (being written; see the issue that owns it)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``point`` parser (placeholder until its module is written)."""
    parser = subparsers.add_parser("point", help="(not yet available)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise NotImplementedError("point")
