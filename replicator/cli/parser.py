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
EPILOG = """\
a migration, step by step:
  export REPLICATOR_TARGET_URL='<the connection string from the Neon console>'
  replicator doctor --source app.db     can we reach Neon, and is the file ready?
  replicator plan --source app.db       what each column becomes, and why
  replicator run --source app.db        the daemon: capture, snapshot, then stream changes
  replicator status --source app.db     lag, backlog, quarantine
  replicator verify --source app.db     every value compared on both sides
  replicator cutover --source app.db    freeze writes, drain, verify, done
with no target at all, an embedded local Postgres is used: a rehearsal.

exit codes: 0 ok, 1 failed or needs attention, 2 bad usage or config, 3 could not start
"""


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
        p.add_argument("--schema-mode", choices=["create", "existing"],
                       help="create: the replicator creates the target tables (default); "
                       "existing: it fills the tables the application's ORM made")
    p.add_argument("--config", type=Path, help="TOML config file (flags override it)")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    p.add_argument("--log-format", choices=["auto", "json", "console"])
    if json_:
        p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def build(families: list[Callable[[Subparsers], None]]) -> Parser:
    parser = Parser(prog="replicator", description=DESCRIPTION, epilog=EPILOG,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"replicator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in families:
        add(sub)
    return parser
