"""``replicator queries scan|replay|advise``: the application's SQL, found, translated, replayed
on both databases, and index advice."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import asyncpg

from .. import state
from ..errors import EXIT_OK, EXIT_RUNTIME, ConfigError
from ..queries import DEFAULT_SEQ_ROWS, DRIVERS, advise, catalog, corpus, render
from ..queries.replay import Replayer, ReplayReport, open_readonly
from ..queries.replay import replay as run_replay
from ..queries.scan import scan as run_scan
from ..quoting import qi
from ..target import connect
from .output import command_target
from .parser import Subparsers

FORMATS = ("text", "md", "json")


def add_parsers(sub: Subparsers) -> None:
    q = sub.add_parser("queries", help="find, translate and replay the application's SQL",
                       description="find, translate and replay the application's SQL")
    qsub = q.add_subparsers(dest="queries_command", required=True, parser_class=type(q))
    p = qsub.add_parser("scan", help="find SQL in source code; flag SQLite-only constructs "
                        "and give the Postgres translation")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    p.add_argument("--driver", choices=DRIVERS, default="asyncpg",
                   help="placeholder style: $1 (asyncpg, node-postgres, neon) or %%s (psycopg)")
    p.add_argument("--source", type=Path, help="the SQLite database, for type-aware checks")
    p.add_argument("--format", choices=FORMATS, default="text")
    p = qsub.add_parser("replay", help="run read-only queries on SQLite and Postgres and "
                        "compare the rows")
    p.add_argument("file", type=Path, metavar="FILE", help=".sql corpus or scan JSON output")
    _target_args(p)
    p.add_argument("--slow-ms", type=float, default=200.0,
                   help="show the EXPLAIN ANALYZE summary of queries slower than this on Postgres")
    p.add_argument("--runs", type=int, default=3, help="runs per query (median time)")
    p.add_argument("--timeout", type=float, default=30.0, help="statement timeout, seconds")
    p = qsub.add_parser("advise", help="index advice: unindexed foreign keys, sequential scans "
                        "of large tables in the queries' plans")
    p.add_argument("file", type=Path, nargs="?", metavar="FILE",
                   help=".sql corpus or scan JSON output whose plans to inspect")
    _target_args(p)


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", type=Path, required=True, help="the SQLite file")
    p.add_argument("--target", help="Postgres DSN (default: the config's target.url, "
                   "$REPLICATOR_TARGET_URL, $DATABASE_URL, else the embedded default)")
    p.add_argument("--config", type=Path, help="TOML config file (its target.url)")
    p.add_argument("--schema", default="public", help="target schema (default public)")
    p.add_argument("--seq-scan-rows", type=float, default=DEFAULT_SEQ_ROWS,
                   help="advise on sequential scans of tables above this many rows")
    p.add_argument("--format", choices=FORMATS, default="text")


async def run(args: argparse.Namespace) -> int:
    handler = {"scan": scan, "replay": replay, "advise": advise_cmd}[args.queries_command]
    return await handler(args)


async def scan(args: argparse.Namespace) -> int:
    """Exit 1 when a statement has an open 'fails' or 'differs' finding."""
    for path in args.paths:
        if not path.exists():
            raise ConfigError(f"scan: {path} does not exist")
    cat = catalog.load(args.source) if args.source else None
    rep = run_scan(list(args.paths), args.driver, cat)
    print(render.render_scan(rep, args.format))
    attention = any(f.translation.severity in ("fails", "differs") for f in rep.findings)
    return EXIT_RUNTIME if attention else EXIT_OK


async def _open(args: argparse.Namespace) -> tuple[asyncpg.Connection, catalog.Catalog, str]:
    target = command_target(args)
    cat = catalog.load(args.source)
    pg = await connect(target, retry_for=10.0)
    try:
        if args.schema != "public":
            await pg.execute(f"SET search_path = {qi(args.schema)}, public")
        rows = await pg.fetch("SELECT table_name, column_name, data_type FROM "
                              "information_schema.columns WHERE table_schema = $1", args.schema)
        catalog.with_target_types(cat, [tuple(r) for r in rows])
    except BaseException:
        await pg.close()
        raise
    return pg, cat, target.masked


async def replay(args: argparse.Namespace) -> int:
    """Exit 0 when every query is same/skipped or as its ``-- expect:`` says; else 1."""
    queries = corpus.load(args.file)
    pg, cat, masked = await _open(args)
    try:
        rep = await run_replay(queries, args.source, pg, cat, masked, runs=args.runs,
                               slow_ms=args.slow_ms, timeout_s=args.timeout)
        rep.advice = await advise.fk_advice(pg, cat, args.schema)
        rep.advice += await advise.seq_scan_advice(pg, rep.scans, args.schema, args.seq_scan_rows)
        if await state.exists(pg):  # the migration report shows the application's validation
            await state.merge_info(pg, last_replay=_for_report(rep))
    finally:
        await pg.close()
    print(render.render_replay(rep, args.format))
    return EXIT_OK if rep.ok else EXIT_RUNTIME


def _for_report(rep: ReplayReport) -> dict[str, Any]:
    return {"at": time.time(), "counts": rep.counts(), "ok": rep.ok, "results": [
        {"name": r.name, "status": r.status, "reason": r.reason[:200], "sqlite_ms": r.sqlite_ms,
         "pg_ms": r.pg_ms} for r in rep.results[:200]]}


async def advise_cmd(args: argparse.Namespace) -> int:
    """Index advice; always exit 0 (advice is not a failure)."""
    queries = corpus.load(args.file) if args.file else []
    pg, cat, _masked = await _open(args)
    try:
        advice = await advise.fk_advice(pg, cat, args.schema)
        if queries:
            scans = await _explain_all(queries, args.source, pg, cat)
            advice += await advise.seq_scan_advice(pg, scans, args.schema, args.seq_scan_rows)
    finally:
        await pg.close()
    if args.format == "json":
        print(json.dumps({"advice": [a.to_json() for a in advice]}, indent=2))
    else:
        print(render.render_advice(advice, args.format))
    return EXIT_OK


async def _explain_all(queries: list[Any], source: Path, pg: asyncpg.Connection,
                       cat: catalog.Catalog) -> list[Any]:
    conn = open_readonly(source)
    try:
        rep = Replayer(conn, pg, cat, runs=1)
        for q in queries:
            await rep.explain_only(q)
        return rep.scans
    finally:
        conn.close()
