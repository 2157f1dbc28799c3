"""The ``queries`` (scan, replay, advise) and ``doctor`` commands.

Wiring contract: ``add_parsers(sub)`` adds both parsers to the main CLI's subparsers object and
``await dispatch(args)`` runs the chosen command and returns its exit code. Failures raise
``replicator.errors`` exceptions (ConfigError -> 2, StartupError -> 3) for the CLI to map.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import log
from ..dsn import TargetDSN, parse_target
from ..errors import ConfigError, ReplicatorError
from . import DEFAULT_SEQ_ROWS, DRIVERS

COMMANDS = ("queries", "doctor")
_FORMATS = ("text", "md", "json")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``queries {scan,replay,advise}`` and ``doctor`` to the CLI's subparsers."""
    q = sub.add_parser("queries", help="find, translate and replay the application's SQL",
                       description="find, translate and replay the application's SQL")
    qsub = q.add_subparsers(dest="queries_command", required=True, parser_class=type(q))
    p = qsub.add_parser("scan", help="find SQL in source code; flag SQLite-only constructs "
                        "and give the Postgres translation")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--driver", choices=DRIVERS, default="asyncpg",
                   help="placeholder style: $1 (asyncpg, node-postgres, neon) or %%s (psycopg)")
    p.add_argument("--source", type=Path, help="the SQLite database, for type-aware checks")
    p.add_argument("--format", choices=_FORMATS, default="text")
    p = qsub.add_parser("replay", help="run read-only queries on SQLite and Postgres and "
                        "compare the rows")
    p.add_argument("file", type=Path, metavar="FILE", help=".sql corpus or scan JSON output")
    _target_args(p, source_required=True)
    p.add_argument("--slow-ms", type=float, default=200.0,
                   help="show the EXPLAIN ANALYZE summary of queries slower than this on Postgres")
    p.add_argument("--runs", type=int, default=3, help="runs per query (median time)")
    p.add_argument("--timeout", type=float, default=30.0, help="statement timeout, seconds")
    p = qsub.add_parser("advise", help="index advice: unindexed foreign keys, sequential scans "
                        "of large tables in the queries' plans")
    p.add_argument("file", type=Path, nargs="?", metavar="FILE",
                   help=".sql corpus or scan JSON output whose plans to inspect")
    _target_args(p, source_required=True)
    d = sub.add_parser("doctor", help="connection diagnostics for the target, one line per check",
                       description="connection diagnostics for the target, one line per check")
    d.add_argument("--target", help="Postgres DSN (default: $REPLICATOR_TARGET_URL, "
                   "$DATABASE_URL)")
    d.add_argument("--schema", default="public", help="target schema (default public)")
    d.add_argument("--source", type=Path, help="also check the SQLite file: readable, and what "
                   "its journal mode means for the application while the replicator runs")
    d.add_argument("--timeout", type=float, default=10.0, help="seconds per network step")
    d.add_argument("--format", choices=("text", "json"), default="text")


def _target_args(p: argparse.ArgumentParser, source_required: bool) -> None:
    p.add_argument("--source", type=Path, required=source_required, help="the SQLite file")
    p.add_argument("--target", help="Postgres DSN (default: $REPLICATOR_TARGET_URL, "
                   "$DATABASE_URL)")
    p.add_argument("--schema", default="public", help="target schema (default public)")
    p.add_argument("--seq-scan-rows", type=float, default=DEFAULT_SEQ_ROWS,
                   help="advise on sequential scans of tables above this many rows")
    p.add_argument("--format", choices=_FORMATS, default="text")


def target_from(args: argparse.Namespace) -> TargetDSN:
    """--target, else $REPLICATOR_TARGET_URL, else $DATABASE_URL; ConfigError when none."""
    url = (getattr(args, "target", None) or os.environ.get("REPLICATOR_TARGET_URL")
           or os.environ.get("DATABASE_URL"))
    if not url:
        raise ConfigError("--target: a Postgres DSN is required (or REPLICATOR_TARGET_URL / "
                          "DATABASE_URL)")
    target = parse_target(url)
    log.add_secret(target.password)
    return target


async def dispatch(args: argparse.Namespace) -> int:
    """Run ``queries ...`` or ``doctor``; returns the exit code."""
    if args.command == "doctor":
        from ..doctor import run as run_doctor

        return await run_doctor(target_from(args), schema=args.schema, timeout=args.timeout,
                                fmt=args.format, source=args.source)
    from . import commands

    handler = {"scan": commands.scan, "replay": commands.replay,
               "advise": commands.advise}[args.queries_command]
    return await handler(args)


def main(argv: list[str] | None = None) -> int:
    """A stand-alone runner (``python -m replicator.queries.cli``) until the CLI is wired."""
    import asyncio

    from ..cli import _Parser

    parser = _Parser(prog="replicator")
    add_parsers(parser.add_subparsers(dest="command", required=True, parser_class=_Parser))
    args = parser.parse_args(argv)
    log.configure(level="warning")
    try:
        return asyncio.run(dispatch(args))
    except ReplicatorError as exc:
        print(f"replicator: error: {log.scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
