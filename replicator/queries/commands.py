"""The bodies of ``queries scan``, ``queries replay`` and ``queries advise``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import asyncpg

from ..errors import ConfigError
from ..target import connect
from . import advise as advise_mod
from . import catalog as catalog_mod
from . import corpus, report
from .catalog import Catalog
from .replay import Replayer, open_readonly
from .replay import replay as run_replay
from .scan import scan as run_scan

EXIT_OK, EXIT_ATTENTION = 0, 1


async def scan(args: argparse.Namespace) -> int:
    """Exit 1 when a statement has an open 'fails' or 'differs' finding."""
    for path in args.paths:
        if not path.exists():
            raise ConfigError(f"scan: {path} does not exist")
    cat = catalog_mod.load(args.source) if args.source else None
    rep = run_scan(list(args.paths), args.driver, cat)
    print(report.render_scan(rep, args.format))
    attention = any(f.translation.severity in ("fails", "differs") for f in rep.findings)
    return EXIT_ATTENTION if attention else EXIT_OK


async def _open(args: argparse.Namespace) -> tuple[asyncpg.Connection, Catalog, str]:
    from .cli import target_from

    target = target_from(args)
    cat = catalog_mod.load(args.source)
    pg = await connect(target, retry_for=10.0)
    try:
        if args.schema != "public":
            await pg.execute(f"SET search_path = {advise_mod.qi(args.schema)}, public")
        rows = await pg.fetch("SELECT table_name, column_name, data_type FROM "
                              "information_schema.columns WHERE table_schema = $1", args.schema)
        catalog_mod.with_target_types(cat, [tuple(r) for r in rows])
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
        rep.advice = await advise_mod.fk_advice(pg, cat, args.schema)
        rep.advice += await advise_mod.seq_scan_advice(pg, rep.scans, args.schema,
                                                       args.seq_scan_rows)
    finally:
        await pg.close()
    print(report.render_replay(rep, args.format))
    return EXIT_OK if rep.ok else EXIT_ATTENTION


async def advise(args: argparse.Namespace) -> int:
    """Index advice; always exit 0 (advice is not a failure)."""
    queries = corpus.load(args.file) if args.file else []
    pg, cat, _masked = await _open(args)
    try:
        advice = await advise_mod.fk_advice(pg, cat, args.schema)
        if queries:
            scans = await _explain_all(queries, args.source, pg, cat)
            advice += await advise_mod.seq_scan_advice(pg, scans, args.schema,
                                                       args.seq_scan_rows)
    finally:
        await pg.close()
    if args.format == "json":
        print(json.dumps({"advice": [a.to_json() for a in advice]}, indent=2))
    else:
        print(report.render_advice(advice, args.format))
    return EXIT_OK


async def _explain_all(queries: list, source: Path, pg: asyncpg.Connection, cat: Catalog
                       ) -> list:
    conn = open_readonly(source)
    try:
        rep = Replayer(conn, pg, cat, runs=1)
        for q in queries:
            await rep.explain_only(q)
        return rep.scans
    finally:
        conn.close()

