"""The commands that look without changing anything: plan, verify, report."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import existing_plan, migration_plan
from .. import report as migration_report
from ..config import Config
from ..errors import EXIT_OK, EXIT_RUNTIME
from ..target import connect
from ..verify import render as render_verify
from ..verify import verify as do_verify
from .output import config_target, emit
from .parser import Subparsers, common


def add_parsers(sub: Subparsers) -> None:
    p = common(sub, "verify", "compare every table value by value; exit 0 only when all match",
               json_=True)
    p.add_argument("--tables", help="comma-separated SQLite table names to verify")
    p.add_argument("--sample", type=float, help="verify only this fraction of rows (0 < f <= 1)")
    p = common(sub, "plan", "the migration plan: type mapping with reasons, what cannot move "
               "exactly; with --target (or schema_mode = \"existing\"), side by side with the "
               "schema the application's ORM made there", target=False, json_=True)
    p.add_argument("--target", help="Postgres DSN whose existing schema (made by the app's ORM) "
                   "the plan fills; without it, the plan of the schema the replicator creates")
    p.add_argument("--emit-sql", type=Path, metavar="DIR", help="write the target DDL as files")
    p = common(sub, "report", "the migration report: what moved, mapping, quarantine, timings, "
               "rollback")
    p.add_argument("--format", choices=["md", "html", "json"], default="md")
    p.add_argument("--output", type=Path, help="write to this file instead of stdout")


async def plan(args: argparse.Namespace, cfg: Config) -> int:
    if args.target or cfg.schema_mode == "existing":
        return await _plan_existing(args, cfg)
    report, plans = await asyncio.to_thread(migration_plan.build_with_plans, cfg)
    if args.emit_sql:
        files = migration_plan.emit_sql(report, plans, cfg, args.emit_sql)
        print(f"wrote {len(files)} files to {args.emit_sql}", file=sys.stderr)
    emit(report, args.json, migration_plan.render(report))
    return EXIT_OK if report["exact"] else EXIT_RUNTIME


async def _plan_existing(args: argparse.Namespace, cfg: Config) -> int:
    cfg = replace(cfg, schema_mode="existing")
    target = config_target(cfg)
    pg = await connect(target, timeout=cfg.connect_timeout, tls_verify=cfg.tls_verify)
    try:
        report = await existing_plan.build(cfg, pg)
    finally:
        await pg.close()
    emit(report, args.json, existing_plan.render(report))
    return EXIT_OK if report["exact"] else EXIT_RUNTIME


async def verify(args: argparse.Namespace, cfg: Config) -> int:
    tables = [t for t in (args.tables or "").split(",") if t] or None
    report: dict[str, Any] = await do_verify(cfg, config_target(cfg), tables=tables,
                                             sample=args.sample)
    emit(report, args.json, render_verify(report))
    return EXIT_OK if report["ok"] else EXIT_RUNTIME


async def report(args: argparse.Namespace, cfg: Config) -> int:
    text = migration_report.render(await migration_report.gather(cfg, config_target(cfg)),
                                   args.format)
    if args.output:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    return EXIT_OK


COMMANDS = {"plan": plan, "verify": verify, "report": report}
