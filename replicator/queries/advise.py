"""Index advice for the Postgres side: foreign keys without an index, and sequential scans of
large tables in the replayed queries' plans, each with the ``CREATE INDEX CONCURRENTLY`` to
consider.

SQLite apps often rely on indexes SQLite never needed (tiny tables) or that the migration did
not carry over; Postgres has no automatic index on a referencing column, so every join and
every ``ON DELETE`` check on it scans the table.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field

import asyncpg

from . import DEFAULT_SEQ_ROWS
from .catalog import Catalog


@dataclass
class PlanScan:
    query: str
    relation: str
    filter: str | None
    plan_rows: float


@dataclass
class Advice:
    kind: str  # fk | seq-scan
    table: str
    columns: list[str]
    reason: str
    statement: str
    queries: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"' if not re.fullmatch(r"[a-z_][a-z0-9_]*", name) \
        else name


def create_index(schema: str, table: str, cols: list[str]) -> str:
    name = f"{table}_{'_'.join(cols)}_idx"[:63]
    return (f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {qi(name)} ON {qi(schema)}.{qi(table)} "
            f"({', '.join(qi(c) for c in cols)});")


async def leading_columns(pg: asyncpg.Connection, schema: str) -> set[tuple[str, str]]:
    """(table, first column) of every index in ``schema``."""
    rows = await pg.fetch(
        "SELECT t.relname, a.attname FROM pg_index i "
        "JOIN pg_class t ON t.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = t.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0] "
        "WHERE n.nspname = $1", schema)
    return {(r[0], r[1]) for r in rows}


async def table_columns(pg: asyncpg.Connection, schema: str) -> dict[str, list[str]]:
    rows = await pg.fetch("SELECT table_name, column_name FROM information_schema.columns "
                          "WHERE table_schema = $1 ORDER BY ordinal_position", schema)
    out: dict[str, list[str]] = {}
    for t, c in rows:
        out.setdefault(t, []).append(c)
    return out


async def fk_advice(pg: asyncpg.Connection, catalog: Catalog, schema: str) -> list[Advice]:
    """SQLite foreign keys whose Postgres table has no index led by the referencing column."""
    indexed = await leading_columns(pg, schema)
    tables = await table_columns(pg, schema)
    out = []
    for table in catalog.tables.values():
        if table.pg_name not in tables:
            continue
        for fk in table.foreign_keys:
            cols = [c.pg_name for name in fk.columns if (c := table.column(name))]
            if not cols or (table.pg_name, cols[0]) in indexed:
                continue
            out.append(Advice(
                "fk", table.pg_name, cols,
                f"foreign key {table.name}({', '.join(fk.columns)}) -> {fk.ref_table}: no index "
                "starts with it, so joins on it and deletes in the referenced table scan "
                f"{table.pg_name}",
                create_index(schema, table.pg_name, cols)))
    return out


def plan_scans(node: dict, query: str) -> list[PlanScan]:
    """Every Seq Scan in an EXPLAIN (FORMAT JSON) plan tree."""
    out = []
    if node.get("Node Type") == "Seq Scan" and node.get("Relation Name"):
        out.append(PlanScan(query, node["Relation Name"], node.get("Filter"),
                            float(node.get("Plan Rows", 0))))
    for child in node.get("Plans", []):
        out += plan_scans(child, query)
    return out


def plan_summary(top: dict) -> dict:
    """A short summary of an EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) result."""
    plan = top["Plan"]
    nodes: list[str] = []

    def walk(n: dict) -> None:
        label = n.get("Node Type", "?")
        if n.get("Relation Name"):
            label += f" on {n['Relation Name']}"
        if n.get("Index Name"):
            label += f" using {n['Index Name']}"
        nodes.append(label)
        for c in n.get("Plans", []):
            walk(c)

    walk(plan)
    return {
        "execution_ms": top.get("Execution Time"),
        "planning_ms": top.get("Planning Time"),
        "total_cost": plan.get("Total Cost"),
        "actual_rows": plan.get("Actual Rows"),
        "shared_hit_blocks": plan.get("Shared Hit Blocks"),
        "shared_read_blocks": plan.get("Shared Read Blocks"),
        "nodes": nodes,
    }


async def table_rows(pg: asyncpg.Connection, schema: str, table: str) -> float:
    """The planner's row estimate for a table (reltuples, or a plan when never analyzed)."""
    n = await pg.fetchval(
        "SELECT c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND c.relname = $2", schema, table)
    if n is not None and n >= 0:
        return float(n)
    rows = await pg.fetchval(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM {qi(schema)}.{qi(table)}")
    plan = json.loads(rows) if isinstance(rows, str) else rows
    return float(plan[0]["Plan"].get("Plan Rows", 0))


async def seq_scan_advice(pg: asyncpg.Connection, scans: list[PlanScan], schema: str,
                          min_rows: float = DEFAULT_SEQ_ROWS) -> list[Advice]:
    """Filtered sequential scans of tables above ``min_rows`` (planner estimate), with an index
    on the filtered columns when none exists yet."""
    indexed = await leading_columns(pg, schema)
    columns = await table_columns(pg, schema)
    sizes: dict[str, float] = {}
    merged: dict[tuple[str, tuple[str, ...]], Advice] = {}
    for scan in scans:
        if scan.relation not in columns or not scan.filter:
            continue
        if scan.relation not in sizes:
            sizes[scan.relation] = await table_rows(pg, schema, scan.relation)
        if sizes[scan.relation] <= min_rows:
            continue
        cols = _filter_columns(scan.filter, columns[scan.relation])
        if not cols or (scan.relation, cols[0]) in indexed:
            continue
        key = (scan.relation, tuple(cols[:1]))
        if key in merged:
            merged[key].queries.append(scan.query)
            continue
        merged[key] = Advice(
            "seq-scan", scan.relation, cols[:1],
            f"sequential scan of {scan.relation} (about {int(sizes[scan.relation])} rows) "
            f"filtering on {scan.filter}",
            create_index(schema, scan.relation, cols[:1]), [scan.query])
    return list(merged.values())


def _filter_columns(filter_text: str, columns: list[str]) -> list[str]:
    """Columns of the relation named in a plan's Filter, in order of appearance."""
    seen = []
    for m in re.finditer(r'"((?:[^"]|"")+)"|\b([a-z_][a-z0-9_$]*)\b', filter_text):
        name = (m.group(1) or "").replace('""', '"') or m.group(2)
        if name in columns and name not in seen:
            seen.append(name)
    return seen
