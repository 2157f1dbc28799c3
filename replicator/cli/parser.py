"""The argument parser: one sub-command per CLI family module, each adding its own parsers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from .. import __version__
from ..errors import EXIT_USAGE

DESCRIPTION = "Live SQLite -> Neon (Postgres) replication for zero-downtime migrations"


class Parser(argparse.ArgumentParser):
    """argparse, exiting with the usage exit code (2) and the message on stderr."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


Subparsers = argparse._SubParsersAction  # the object ``add_subparsers`` returns


def common(sub: Subparsers, name: str, help_: str, *, target: bool = True,
           json_: bool = False) -> argparse.ArgumentParser:
    """A sub-command taking ``--source``, ``--config``, log flags, and optionally ``--target`` and
    ``--json``: the shape every replication command shares."""
    p = sub.add_parser(name, help=help_, description=help_)
    p.add_argument("--source", type=Path, help="the SQLite database file")
    if target:
        p.add_argument("--target", help="Postgres DSN (default: $REPLICATOR_TARGET_URL, "
                       "$DATABASE_URL, else an embedded local Postgres)")
    p.add_argument("--config", type=Path, help="TOML config file (flags override it)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["auto", "json", "console"])
    if json_:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def build(families: list[Callable[[Subparsers], None]]) -> Parser:
    parser = Parser(prog="replicator", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"replicator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in families:
        add(sub)
    return parser
