"""``replicator doctor``: connection diagnostics for the target (and the SQLite file)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import doctor
from .output import command_target
from .parser import Subparsers


def add_parsers(sub: Subparsers) -> None:
    d = sub.add_parser("doctor", help="connection diagnostics for the target, one line per check",
                       description="connection diagnostics for the target, one line per check")
    d.add_argument("--target", help="Postgres DSN (default: the config's target.url, "
                   "$REPLICATOR_TARGET_URL, $DATABASE_URL, else the embedded default)")
    d.add_argument("--config", type=Path, help="TOML config file (its target.url)")
    d.add_argument("--schema", default="public", help="target schema (default public)")
    d.add_argument("--source", type=Path, help="also check the SQLite file: readable, and what "
                   "its journal mode means for the application while the replicator runs")
    d.add_argument("--timeout", type=float, default=10.0, help="seconds per network step")
    d.add_argument("--format", choices=("text", "json"), default="text")


async def run(args: argparse.Namespace) -> int:
    return await doctor.run(command_target(args), schema=args.schema, timeout=args.timeout,
                            fmt=args.format, source=args.source)
