"""``replicator plan``: the migration plan, computed from the live file without writing anything.

For every table and column: the declared type, the census of stored values, the Postgres type
chosen and why; every value or feature that cannot move exactly, with counts and a sample key;
the indexes, constraints, triggers and views and how each is carried over.

Tables are counted side by side (``snapshot_workers`` threads; SQLite runs a query without
holding Python's lock), the largest in rowid ranges (``census.rowid_ranges``), each range and
each table's foreign-key check in a read transaction of its own connection: a table written
while ``plan`` runs may have its parts read moments apart (``replicator copy`` takes its own
census of one consistent copy).
"""

from __future__ import annotations

import os
import sqlite3
import sys
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import ddl, objects, workers
from .census import (
    TableCensus,
    apart,
    count_orphans,
    merged,
    plan_census,
    rowid_ranges,
    sample_key,
)
from .census import prepare as census_functions
from .config import Config
from .convert import accepts
from .errors import ConfigError
from .plans import ColumnPlan, TablePlan
from .quoting import qi
from .schema import plan_table, text_census_columns
from .source import Schema, Table, inspect, journal_mode, open_source
from .source_write import journal_advice

PROCESSES_FROM = 64 * 1024 * 1024  # a file this large is counted in worker processes


def _counting_pool(cfg: Config) -> Executor:
    """``snapshot_workers`` threads; for a large file processes (started now: they take half a
    second to import), as SQLite's allocator takes one process-wide lock that keeps two threads
    from scaling: two halves of a table counted in two threads took as long as one after the
    other."""
    n = max(1, cfg.snapshot_workers)
    if n < 2 or not cfg.source.is_file() or cfg.source.stat().st_size < PROCESSES_FROM:
        return ThreadPoolExecutor(n)
    pool = workers.pool(n)
    for _ in range(n):
        pool.submit(os.getpid)
    return pool


def build(cfg: Config) -> dict[str, Any]:
    return build_with_plans(cfg)[0]


def build_with_plans(cfg: Config) -> tuple[dict[str, Any], list[TablePlan]]:
    """The plan, and the table plans it shows (what ``emit_sql`` writes, not counted twice)."""
    with _counting_pool(cfg) as pool:
        conn = open_source(cfg.source, readonly=True, busy_timeout_ms=cfg.busy_timeout_ms)
        try:
            conn.execute("BEGIN")
            schema = inspect(conn)
            wanted = [t for name, t in schema.tables.items() if cfg.wants_table(name)]
            try:
                tables, attention, plans = _tables(cfg, conn, wanted, pool)
            except workers.WorkerError as exc:
                raise workers.restored(exc) from None
            report = _report(cfg, conn, schema, tables, attention)
            conn.execute("COMMIT")
        finally:
            conn.close()
    return report, plans


def _tables(cfg: Config, conn: sqlite3.Connection, wanted: list[Table], pool: Executor
            ) -> tuple[list[dict[str, Any]], list[str], list[TablePlan]]:
    """Each table's entry, what needs attention, and the table plans: the largest tables counted
    first, each in rowid ranges, then the foreign-key checks, all in ``pool``."""
    tables: list[dict[str, Any]] = []
    attention: list[str] = []
    plans: list[TablePlan] = []
    ranges = {t.name: rowid_ranges(conn, t, max(1, cfg.snapshot_workers)) for t in wanted}
    parts: dict[str, list[Future[TableCensus]]] = {}
    for t in sorted(wanted, key=lambda t: -len(ranges[t.name])):
        parts[t.name] = [pool.submit(apart, cfg.source, cfg.busy_timeout_ms, plan_census, t,
                                     text_columns=text_census_columns(t), rowids=r)
                         for r in ranges[t.name]]
    orphans = {t.name: pool.submit(apart, cfg.source, cfg.busy_timeout_ms, count_orphans, t)
               for t in wanted}
    census_functions(conn)  # what the sample keys' SQL calls
    for t in wanted:
        cen = merged([f.result() for f in parts[t.name]])
        plan, entry = _table(conn, t, cfg, cen, orphans[t.name].result())
        tables.append(entry)
        attention += entry.pop("_attention")
        if plan is not None:
            plans.append(plan)
    return tables, attention, plans


def _report(cfg: Config, conn: sqlite3.Connection, schema: Schema, tables: list[dict[str, Any]],
        attention: list[str]) -> dict[str, Any]:
    views = [asdict(v) for v in objects.plan_views(schema, cfg)]
    attention += [f"view {v['name']}: not translated ({v['error']}): {v['original']}"
                  for v in views if v["error"]]
    attention += [f"{name}: {why}" for name, why in schema.skipped.items()]
    exact = [t["name"] for t in tables if t["exact"]]
    framework = next((t.framework for t in schema.tables.values() if t.framework), None)
    report = {
        "source": str(cfg.source),
        "sqlite_version": sqlite3.sqlite_version,
        "journal_mode": journal_mode(conn),
        "locking": dict(zip(("status", "detail"), journal_advice(conn, cfg.source),
                            strict=True)),
        "identifiers": cfg.identifiers,
        "target_schema": cfg.target_schema,
        "tables": tables,
        "views": views,
        "skipped": schema.skipped,
        "attention": attention,
        "exact": not attention,
        "summary": {"tables": len(tables), "exact": len(exact),
                    "named_with_reason": len(tables) - len(exact)},
        "rows": sum(t["rows"] for t in tables),
        "framework": framework,
        "rules": _rules(tables),
        "renamed": [(t["name"], t["pg_name"]) for t in tables
                    if "pg_name" in t and t["pg_name"] != t["name"]],
    }
    return report


def _table(conn: sqlite3.Connection, table: Table, cfg: Config, cen: TableCensus,
           orphans: dict[str, int]) -> tuple[TablePlan | None, dict[str, Any]]:
    attention: list[str] = []
    try:
        plan = plan_table(table, cen, cfg)
    except ConfigError as exc:
        return None, {"name": table.name, "rows": cen.rows, "exact": False, "error": str(exc),
                      "_attention": [f"{table.name}: {exc}"]}
    cols = []
    for col in plan.columns:
        c = cen.columns[col.name]
        samples = _samples(conn, table, col) if col.problems else {}
        cols.append({**asdict(col), "sample_keys": samples, "census": {
            **c.counts, "nul_text": c.nul_text, "bad_utf8": c.bad_utf8, "max_bytes": c.max_bytes,
            "text_tags": c.text_tags, "datetime_formats": c.datetime_formats}})
        attention += [f"{table.name}.{col.name}: {p} (policy: {col.policy}; sample key "
                      f"{_sample_for(p, samples)})" for p in col.problems]
    attention += [f"{table.name}: foreign key {fk} has {n} orphan row(s) in SQLite; it will stay "
                  "NOT VALID in Postgres" for fk, n in orphans.items()]
    attention += [f"{table.name}: index {i.sqlite_name} not carried over ({i.error}): {i.original}"
                  for i in plan.indexes if i.error]
    attention += [f"{table.name}: {o.kind} {o.name} not translated ({o.error}): {o.original}"
                  for o in plan.objects if o.error]
    return plan, {
        "name": table.name,
        "pg_name": plan.pg_name,
        "rows": cen.rows,
        "key": {"kind": plan.key_kind, "columns": list(plan.key_columns), "note": plan.key_note},
        "columns": cols,
        "indexes": [asdict(i) for i in plan.indexes],
        "objects": [asdict(o) for o in plan.objects],
        "foreign_key_orphans": orphans,
        "notes": list(plan.notes) + [f"{c.name}: {n}" for c in plan.columns for n in c.notes],
        "exact": not attention,
        "_attention": attention,
    }


def _samples(conn: sqlite3.Connection, table: Table, col: ColumnPlan) -> dict[str, list | None]:
    """A sample key for each kind of value that cannot move exactly."""
    q = qi(col.name)
    base = col.conv.split(":")[0]
    out = {}
    rejected = [c for c in ("integer", "real", "text", "blob") if c not in accepts(col.conv)]
    if rejected:
        classes = ", ".join(repr(c) for c in rejected)
        out["storage class"] = sample_key(conn, table, f"typeof({q}) IN ({classes})")
    out["NUL byte"] = sample_key(conn, table, f"typeof({q}) = 'text' AND instr(CAST({q} AS BLOB), X'00') > 0")
    out["invalid UTF-8"] = sample_key(
        conn, table, f"typeof({q}) = 'text' AND NOT _replicator_utf8_ok(CAST({q} AS BLOB))")
    if base == "bool":
        out["not 0/1"] = sample_key(conn, table, f"typeof({q}) = 'integer' AND {q} NOT IN (0, 1)")
    return {k: v for k, v in out.items() if v is not None}


def _sample_for(problem: str, samples: dict[str, list | None]) -> list | None:
    for needle, kind in (("NUL", "NUL byte"), ("UTF-8", "invalid UTF-8"), ("0/1", "not 0/1"),
                         ("cannot be stored", "storage class")):
        if needle in problem:
            return samples.get(kind)
    return next(iter(samples.values()), None)


def _rules(tables: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each rule that chose a column's type, once, with how many columns it decided (the column
    lines refer to it as R1, R2, ... in this order)."""
    counts: dict[str, int] = {}
    for t in tables:
        for c in t.get("columns", []):
            counts[c["reason"]] = counts.get(c["reason"], 0) + 1
    return [{"id": f"R{i + 1}", "rule": r, "columns": n} for i, (r, n) in enumerate(counts.items())]


def overview(report: dict[str, Any]) -> list[str]:
    """What the plan says, in a few lines: the first thing it prints."""
    s = report["summary"]
    if not s["tables"]:
        return ["The file holds no table to migrate (only SQLite's own, or none at all)."]
    lines = [f"{s['tables']} tables, {report['rows']:,} rows: "
             + (f"all {s['tables']} arrive exact." if not s["named_with_reason"] else
                f"{s['exact']} arrive exact, {s['named_with_reason']} need attention (below).")]
    fw = report.get("framework")
    lines.append(f"Framework: {fw} (its migration table is in the file; its Postgres conventions "
                 "apply)" if fw else "Framework: none recognised (Django, Rails, Alembic "
                 "migration tables are looked for)")
    renamed = report.get("renamed") or []
    if renamed and report["identifiers"] == "lower":
        example = ", ".join(f"{a} -> {b}" for a, b in renamed[:3])
        lines.append(f"Names: {len(renamed)} table(s) and their columns are lower-cased ({example}"
                     f"{', ...' if len(renamed) > 3 else ''}), as Postgres folds unquoted names, "
                     "so the application's unquoted SQL keeps working; identifiers = \"preserve\" "
                     "keeps them as they are (then every query must quote them)")
    return lines


def render(report: dict[str, Any]) -> str:
    if sys.stdout.isatty():
        return _render_rich(report)
    out = [f"Migration plan for {report['source']} (journal {report['journal_mode']}, "
           f"target schema {report['target_schema']})", "", *overview(report), ""]
    if report["rules"]:
        out.append("Rules that chose the types (each column below names its rule):")
        out += [f"  {r['id']:>4}  {r['rule']}  ({r['columns']} column{'s' * (r['columns'] != 1)})"
                for r in report["rules"]]
        out.append("")
    rule_id = {r["rule"]: r["id"] for r in report["rules"]}
    for t in report["tables"]:
        if "error" in t:
            out += [f"{t['name']}: {t['error']}", ""]
            continue
        out.append(f"{t['name']} -> {t['pg_name']}  ({t['rows']} rows; key: {t['key']['note']})")
        for c in t["columns"]:
            mark = "ok " if c["exact"] else "!! "
            out.append(f"  {mark}{c['name']:24} {c['declared'] or '(none)':16} -> "
                       f"{c['pg_type']:17} {rule_id[c['reason']]:>4}  [{_seen(c['census'])}]")
            out += [f"       !! {p}" for p in c["problems"]]
        out += [f"  note: {n}" for n in t["notes"]]
        out += [f"  {o['kind']} {o['name']}: {'ok' if not o['error'] else 'NOT TRANSLATED: ' + o['error']}"
                for o in t["objects"]]
        out.append("")
    for v in report["views"]:
        out.append(f"view {v['name']}: {'ok' if not v['error'] else 'NOT TRANSLATED: ' + v['error']}")
    if report["attention"]:
        out.append("Needs attention:")
        out += [f"  - {a}" for a in report["attention"]]
    out.append(f"\nWhile it runs: {report['locking']['detail']}")
    return "\n".join(out)


def _seen(cen: dict[str, Any]) -> str:
    return ", ".join(f"{k} {cen[k]}" for k in ("integer", "real", "text", "blob", "null")
                     if cen[k]) or "empty"


def _render_rich(report: dict[str, Any]) -> str:
    from rich.console import Console
    from rich.table import Table as RichTable

    console = Console(record=True, width=140)
    console.print(f"[bold]Migration plan[/] for {report['source']} "
                  f"(journal {report['journal_mode']}, target schema {report['target_schema']})")
    for line in overview(report):
        console.print(f"  {line}", markup=False)
    if report["rules"]:
        console.print("[bold]Rules that chose the types[/]")
        for r in report["rules"]:
            console.print(f"  [cyan]{r['id']:>4}[/]  {r['rule']}  [dim]({r['columns']} columns)[/]")
    rule_id = {r["rule"]: r["id"] for r in report["rules"]}
    for t in report["tables"]:
        if "error" in t:
            console.print(f"[red]{t['name']}: {t['error']}[/]")
            continue
        rt = RichTable(title=f"{t['name']} -> {t['pg_name']} ({t['rows']} rows)",
                       caption=f"key: {t['key']['note']}", title_justify="left")
        for head in ("", "column", "declared", "stored values", "postgres", "why"):
            rt.add_column(head)
        for c in t["columns"]:
            mark = "[green]ok[/]" if c["exact"] else "[red]!![/]"
            why = rule_id[c["reason"]] + "".join(f"\n[red]{p}[/]" for p in c["problems"])
            rt.add_row(mark, c["name"], c["declared"] or "-", _seen(c["census"]), c["pg_type"], why)
        console.print(rt)
        for n in t["notes"]:
            console.print(f"  [dim]note: {n}[/]")
    if report["attention"]:
        console.print("\n[bold]Needs attention[/]")
    for a in report["attention"]:
        console.print(f"  [yellow]- {a}[/]")
    color = "green" if report["locking"]["status"] == "ok" else "yellow"
    console.print(f"\n[{color}]While it runs:[/] {report['locking']['detail']}")
    return console.export_text(styles=True)


def emit_sql(report: dict[str, Any], plans: list[TablePlan], cfg: Config, folder: Path
             ) -> list[Path]:
    """The target DDL of ``plans`` and the report's views (``build_with_plans``) as numbered,
    reviewable files, in the order the replicator runs it."""
    views = report["views"]
    s = cfg.target_schema
    files = {
        "001_tables.sql": [ddl.create_table_sql(p, s) + ";" + "".join(
            f"\n{d};" for d in ddl.default_sql(p, s)) for p in plans],
        "002_keys_and_indexes.sql": [x + ";" for p in plans for x in ddl.snapshot_ddl(p, s)],
        "003_constraints.sql": [x + ";" for p in plans for o in p.objects
                                if o.kind in ("check", "foreign_key") and o.sql
                                for x in (o.sql, o.validate_sql or "")],
        "004_triggers.sql": [o.sql + ";" for p in plans for o in p.objects if o.kind == "trigger" and o.sql],
        "005_views.sql": [v["sql"] + ";" for v in views if v["sql"]],
    }
    untranslated = [f"-- {o.kind} {o.name}: {o.error}\n-- {o.original}" for p in plans
                    for o in p.objects if o.error]
    untranslated += [f"-- view {v['name']}: {v['error']}" for v in views if v["error"]]
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, stmts in files.items():
        path = folder / name
        body = "\n\n".join(stmts)
        if name == "003_constraints.sql" or name == "005_views.sql":
            body = "-- created at cutover (SQLite may hold rows these constraints reject)\n\n" + body
        path.write_text("-- generated by `replicator plan --emit-sql`\n\n" + body + "\n")
        written.append(path)
    if untranslated:
        path = folder / "900_not_translated.sql"
        path.write_text("-- objects the replicator could not translate; review by hand\n\n"
                        + "\n\n".join(untranslated) + "\n")
        written.append(path)
    return written
