"""The ``implicit-rmt measure``subcommand (being written; see the issue that owns it)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``measure`` parser (placeholder until its module is written)."""
    parser = subparsers.add_parser("measure", help="(not yet available)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    raise NotImplementedError("measure")
