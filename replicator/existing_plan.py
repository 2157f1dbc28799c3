"""``replicator plan --target DSN`` (schema_mode = "existing"): the SQLite file side by side with
the schema the application's ORM made on the target.

For every SQLite column: the target column it fills, the conversion and its rule, and whether
every stored value goes in exactly, counted by running the copy's own converters over every value
(``convert``: one code path for plan, snapshot, streaming and verify), with a sample key for each
kind of refusal, and for numeric(p,s) how many values rounding would change and by at most how
much. Then what the target lacks, what it has that SQLite does not, and the migration records.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from typing import Any

import asyncpg

from .config import Config
from .conventions import rounding
from .convert import BadValue, converter, decode_safe_row, select_list
from .errors import StartupError
from .existing import (
    check_migrations,
    fit_table,
    read_catalog,
    sqlite_migrations,
    target_table_name,
)
from .plans import ColumnPlan, TablePlan
from .quoting import qi
from .source import Table, inspect, open_source

_CHUNK = 20_000


async def build(cfg: Config, pg: asyncpg.Connection) -> dict[str, Any]:
    catalog = await read_catalog(pg, cfg.target_schema)
    conn = open_source(cfg.source, readonly=True, busy_timeout_ms=cfg.busy_timeout_ms)
    try:
        conn.execute("BEGIN")
        schema = inspect(conn)
        tables = [t for n, t in schema.tables.items() if cfg.wants_table(n)]
        entries, attention = [], []
        for table in tables:
            entry = _table(conn, table, cfg, catalog)
            attention += entry.pop("_attention")
            entries.append(entry)
        recorded = sqlite_migrations(conn, {t.name for t in tables})
        conn.execute("COMMIT")
    finally:
        conn.close()
    try:
        await check_migrations(pg, cfg.target_schema, cfg, recorded, catalog)
        migrations = {"same": True, "tables": sorted(t for t in recorded
                                                       if target_table_name(t, cfg) in catalog)}
    except StartupError as exc:
        migrations = {"same": False, "error": str(exc)}
        attention.append(str(exc))
    filled = {e["pg_name"] for e in entries}
    unfilled = sorted(n for n in catalog if n not in filled)
    refused = [e["name"] for e in entries if e["refused"]]
    return {
        "source": str(cfg.source),
        "target_schema": cfg.target_schema,
        "schema_mode": "existing",
        "tables": entries,
        "target_only_tables": unfilled,
        "migrations": migrations,
        "attention": attention,
        "exact": not attention,
        "summary": {"tables": len(entries), "refused": len(refused),
                    "exact": sum(1 for e in entries if e["exact"])},
    }


def _table(conn: sqlite3.Connection, table: Table, cfg: Config,
           catalog: dict[str, Any]) -> dict[str, Any]:
    pg_name = target_table_name(table.name, cfg)
    rows = conn.execute(f"SELECT count(*) FROM {qi(table.name)}").fetchone()[0]
    plan, refusals = fit_table(table, None, cfg, catalog)
    base = {"name": table.name, "pg_name": pg_name, "rows": rows}
    if plan is None:
        return {**base, "refused": refusals, "exact": False, "columns": [],
                "_attention": refusals}
    counts = _scan(conn, table, plan)
    target = catalog[pg_name]
    columns, attention = [], []
    for col in plan.columns:
        c = counts[col.name]
        entry = {"name": col.name, "declared": col.declared, "target": col.pg_name,
                 "target_type": col.pg_type, "rule": col.reason, "values": c["values"],
                 "refused": c["refused"], "rounded": c["rounded"],
                 "max_rounding": str(c["max_rounding"]) if c["max_rounding"] else None,
                 "would_round": c["would_round"],
                 "exact": not c["refused"] and not c["rounded"]}
        columns.append(entry)
        for reason, (n, key) in c["refused"].items():
            attention.append(f"{table.name}.{col.name} -> {col.pg_type}: {n} value(s) refused: "
                             f"{reason} (policy {col.policy}; e.g. {key})")
        if c["would_round"]:
            n, most = c["would_round"]
            attention.append(f"{table.name}.{col.name}: {n} REAL value(s) have more decimal digits "
                             f"than {col.pg_type} holds; rounding to the scale (as the app's "
                             f"framework reads them) would change each by at most {most}: set "
                             f"tables.{table.name}.columns.{col.name}.round_to_scale = true")
    used = {c.pg_name for c in plan.columns}
    extra = [{"name": n, "type": t.pg_type, "fills_itself": t.has_default or not t.notnull}
             for n, t in target.columns.items() if n not in used]
    return {**base, "refused": [], "columns": columns, "target_only_columns": extra,
            "key": list(plan.key_columns), "exact": not attention, "_attention": attention}


def _scan(conn: sqlite3.Connection, table: Table, plan: TablePlan) -> dict[str, dict[str, Any]]:
    """Every stored value through its column's converter: refusals by reason (with the first key),
    and for numeric(p,s) what rounding changes or would change."""
    convs = [converter(c) for c in plan.columns]
    rule = rounding(True, table)
    rounders = [_rounder(c, rule or "exact") for c in plan.columns]
    out: dict[str, dict[str, Any]] = {c.name: {"values": 0, "refused": {}, "rounded": 0,
                                               "max_rounding": Decimal(0), "would_round": None}
                                      for c in plan.columns}
    key_pos = [i for i, c in enumerate(plan.columns) if c.name in plan.key_columns]
    cur = conn.execute(f"SELECT {select_list(plan, True)} FROM {qi(table.name)}")
    while batch := cur.fetchmany(_CHUNK):
        for raw in batch:
            values = decode_safe_row(raw)
            key = [values[i] for i in key_pos]
            for col, fn, rounder, v in zip(plan.columns, convs, rounders, values, strict=True):
                if v is None:
                    continue
                c = out[col.name]
                c["values"] += 1
                try:
                    got = fn(v)
                except BadValue as exc:
                    group = _group(exc.reason)
                    n, first = c["refused"].get(group, (0, f"key {key}: {exc.reason}"))
                    c["refused"][group] = (n + 1, first)
                    if rounder is not None:
                        _note_rounding(c, "would_round", v, rounder)
                    continue
                if type(v) is float and _rounds(col) and got != Decimal(repr(v)):
                    c["rounded"] += 1
                    c["max_rounding"] = max(c["max_rounding"], abs(got - Decimal(repr(v))))
    return out


def _group(reason: str) -> str:
    """A refusal without its value ("REAL 1.239 cannot be stored exactly in numeric(10,2)" ->
    "REAL values that cannot be stored exactly in numeric(10,2)"), to count them together."""
    head, sep, tail = reason.partition(" cannot be stored exactly in ")
    return f"{head.split(' ', 1)[0]} values that cannot be stored exactly in {tail}" if sep \
        else reason


def _rounds(col: ColumnPlan) -> bool:
    return col.conv.startswith("scaled:") and col.conv.count(":") == 3


def _rounder(col: ColumnPlan, rule: str) -> Any:
    """For a numeric(p,s) column that refuses extra digits: the converter that would round."""
    if col.conv.startswith("scaled:") and not _rounds(col):
        return converter(ColumnPlan(**{**col.__dict__, "conv": f"{col.conv}:{rule}"}))
    return None


def _note_rounding(c: dict[str, Any], field: str, v: Any, rounder: Any) -> None:
    try:
        got = rounder(v)
    except BadValue:
        return
    n, most = c[field] or (0, Decimal(0))
    c[field] = (n + 1, max(most, abs(got - Decimal(repr(v)))))


def render(report: dict[str, Any]) -> str:
    out = [f"Plan for {report['source']} into the existing schema {report['target_schema']!r} "
           "(made by the application)", ""]
    for t in report["tables"]:
        out.append(f"{t['name']} -> {t['pg_name']}  ({t['rows']} rows)")
        for r in t["refused"]:
            out.append(f"  !! {r}")
        for c in t["columns"]:
            mark = "ok " if c["exact"] else "!! "
            out.append(f"  {mark}{c['name']:22} {c['declared'] or '(none)':14} -> "
                       f"{c['target']:22} {c['target_type']:28} {c['values']} value(s)")
            out.append(f"       {c['rule']}")
            for reason, (n, key) in c["refused"].items():
                out.append(f"       !! {n} refused: {reason} (e.g. {key})")
            if c["rounded"]:
                out.append(f"       {c['rounded']} rounded to the scale, each by at most "
                           f"{c['max_rounding']} (round_to_scale = true)")
            if c["would_round"]:
                out.append(f"       !! {c['would_round'][0]} would need rounding (at most "
                           f"{c['would_round'][1]}): round_to_scale = true")
        for e in t.get("target_only_columns", []):
            how = "fills itself (default or NULL)" if e["fills_itself"] else "NOT NULL, no default"
            out.append(f"     target only: {e['name']} {e['type']}: {how}")
        out.append("")
    if report["target_only_tables"]:
        out.append("Target tables SQLite has no table for (left as they are): "
                   + ", ".join(report["target_only_tables"]))
    m = report["migrations"]
    if m.get("same"):
        names = ", ".join(m["tables"]) or "none found"
        out.append(f"Migration records ({names}): the same on both sides; SQLite's rows replace "
                   "the target's")
    s = report["summary"]
    out.append(f"\n{s['exact']} of {s['tables']} tables fill exactly; {s['refused']} refused.")
    if report["attention"]:
        out.append("Needs attention:")
        out += [f"  - {a}" for a in report["attention"]]
    return "\n".join(out)

