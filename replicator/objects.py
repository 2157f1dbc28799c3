"""The table's objects planned in Postgres terms: column DEFAULTs and generated columns, indexes
(UNIQUE ones with SQLite's semantics), CHECK constraints, foreign keys, the application's triggers
and views, each translated from its SQLite text (``dialect.expressions``) or recorded with the reason it
could not be. ``schema.plan_table`` adds them to a table's plan; ``ddl`` creates them.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import sqlglot
from sqlglot import exp

from .config import Config
from .dialect import expressions
from .plans import ColumnPlan, IndexPlan, ObjectPlan, TablePlan, pg_ident, short_name
from .quoting import qi, qualified
from .source import KEY_ROWID, ForeignKey, Index, Schema, Table, inspect, is_ours

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def table_objects(plan: TablePlan, table: Table, cfg: Config) -> TablePlan:
    """Add defaults, generated columns, indexes, CHECKs, foreign keys and triggers to a plan."""
    schema = cfg.target_schema
    ident: Callable[[str], str] = lambda n: pg_ident(n, cfg.identifiers)  # noqa: E731
    colmap = {c.name: c.pg_name for c in plan.columns}
    parsed = _parse_create(table.sql)
    notes = list(plan.notes)
    if parsed is None:
        notes.append("CREATE TABLE could not be parsed: CHECKs and generated expressions not read")
        parsed = {"generated": {}, "checks": []}
    columns = tuple(_column(c, table, colmap, parsed) for c in plan.columns)
    indexes = tuple(_index(i, plan, table, colmap, schema) for i in table.indexes)
    objects = [
        *_checks(plan, parsed["checks"], colmap, schema),
        *(_foreign_key(plan, fk, colmap, ident, schema, i) for i, fk in enumerate(table.foreign_keys)),
        *(_trigger(plan, name, sql, colmap, ident, schema) for name, sql in table.triggers),
    ]
    for idx in indexes:
        if idx.error:
            notes.append(f"index {idx.sqlite_name}: not created ({idx.error}): {idx.original}")
        if idx.unique and "NOCASE" in idx.collations and idx.sql is None:
            notes.append(f"unique index {idx.sqlite_name} (COLLATE NOCASE): enforced on the "
                         "ASCII-folded value, exactly as SQLite folds case")
    if table.key_kind == KEY_ROWID and table.key_columns == () and any(c.pk for c in table.columns):
        notes.append("nullable primary key: becomes the primary key at cutover if no NULLs remain")
    return replace(plan, columns=columns, indexes=indexes, objects=tuple(objects), notes=tuple(notes))


_TABLE_OPTIONS = re.compile(r"\)\s*(?:(?:WITHOUT\s+ROWID|STRICT)\s*,?\s*)+$", re.IGNORECASE)


def _parse_create(sql: str) -> dict[str, Any] | None:
    try:
        tree = sqlglot.parse_one(_TABLE_OPTIONS.sub(")", sql.strip()), read="sqlite")
    except sqlglot.errors.SqlglotError:
        return None
    generated: dict[str, str] = {}
    checks: list[tuple[str | None, str]] = []
    schema = tree.this if isinstance(tree.this, exp.Schema) else None
    if schema is None:
        return None
    for item in schema.expressions:
        if isinstance(item, exp.ColumnDef):
            for cons in item.constraints:
                kind = cons.kind
                if isinstance(kind, exp.ComputedColumnConstraint):
                    generated[item.name.lower()] = kind.this.sql(dialect="sqlite")
                elif isinstance(kind, exp.CheckColumnConstraint):
                    checks.append((cons.name or None, kind.this.sql(dialect="sqlite")))
        elif isinstance(item, exp.Constraint):
            for e in item.expressions:
                if isinstance(e, exp.CheckColumnConstraint):
                    checks.append((item.name, e.this.sql(dialect="sqlite")))
        elif isinstance(item, exp.CheckColumnConstraint):
            checks.append((None, item.this.sql(dialect="sqlite")))
    return {"generated": generated, "checks": checks}


def _column(col: ColumnPlan, table: Table, colmap: dict[str, str], parsed: dict[str, Any]) -> ColumnPlan:
    notes = list(col.notes)
    default_sql = generated_sql = None
    source = table.column(col.name)
    if col.generated:
        expr = parsed["generated"].get(col.name.lower())
        t = expressions.expression(expr, colmap) if expr else None
        if t is not None and t.ok:
            generated_sql = f"CAST(({t.sql}) AS {col.pg_type})"
            notes.append("generated column: Postgres computes it (STORED); verify compares values")
            notes += t.notes
        else:
            notes.append("generated column copied as plain values: "
                         f"{t.error if t else 'expression not found'}")
    elif source.default is not None and not col.identity:
        t = expressions.default(source.default, col.pg_type, colmap)
        if t.ok:
            default_sql = t.sql
            notes += t.notes
        else:
            notes.append(f"DEFAULT {source.default} not translated: {t.error}")
    return replace(col, default_sql=default_sql, generated_sql=generated_sql, notes=tuple(notes))


def _index(idx: Index, plan: TablePlan, table: Table, colmap: dict[str, str], schema: str) -> IndexPlan:
    primary = idx.origin == "pk" and table.key_kind != KEY_ROWID
    base = IndexPlan(
        name=index_name(plan.pg_name, [colmap.get(c or "", "expr") for c in idx.columns],
                        idx.unique, idx.name),
        sqlite_name=idx.name, unique=idx.unique, columns=idx.columns, collations=idx.collations,
        descending=idx.descending, primary=primary, original=idx.sql,
    )
    if idx.plain:
        return base
    if not idx.sql:
        return replace(base, error="no CREATE INDEX text")
    t = _translate_index(idx.sql, plan, colmap, schema, base.name)
    return replace(base, sql=t.sql, error=t.error)


_INDEX = re.compile(
    r"CREATE\s+(UNIQUE\s+)?INDEX\s+(?:IF\s+NOT\s+EXISTS\s+)?\S+\s+ON\s+\S+\s*\((?P<items>.*?)\)"
    r"\s*(?:WHERE\s+(?P<where>.*))?$", re.IGNORECASE | re.DOTALL)


def _translate_index(sql: str, plan: TablePlan, colmap: dict[str, str], schema: str, name: str
                     ) -> expressions.Translation:
    out = expressions.Translation(original=sql)
    m = _INDEX.match(sql.strip().rstrip(";"))
    if not m:
        out.error = "CREATE INDEX not understood"
        return out
    items = []
    for item in _split_top(m["items"]):
        desc = re.search(r"\s+DESC\s*$", item, re.IGNORECASE)
        item = re.sub(r"\s+(ASC|DESC)\s*$", "", item, flags=re.IGNORECASE)
        t = expressions.expression(item, colmap)
        if not t.ok:
            out.error = t.error
            return out
        items.append(f"({t.sql})" + (" DESC" if desc else ""))
    where = ""
    if m["where"]:
        t = expressions.expression(m["where"], colmap)
        if not t.ok:
            out.error = f"WHERE: {t.error}"
            return out
        where = f" WHERE {t.sql}"
    unique = "UNIQUE " if m.group(1) else ""
    out.sql = (f"CREATE {unique}INDEX IF NOT EXISTS {qi(name)} ON {qualified(schema, plan.pg_name)} "
               f"({', '.join(items)}){where}")
    return out


def _split_top(text: str) -> list[str]:
    out, depth, buf, quote = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"`[":
            quote = "]" if ch == "[" else ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(buf.strip())
            buf = ""
            continue
        buf += ch
    if buf.strip():
        out.append(buf.strip())
    return out


def index_name(table: str, cols: list[str], unique: bool, sqlite_name: str) -> str:
    if sqlite_name.startswith("sqlite_autoindex_"):
        return short_name(f"{table}_{'_'.join(cols)}_{'key' if unique else 'idx'}")
    return short_name(pg_ident(sqlite_name, "lower"))


def _checks(plan: TablePlan, checks: list[Any], colmap: dict[str, str], schema: str) -> list[ObjectPlan]:
    out = []
    for i, (name, expr) in enumerate(checks):
        cname = short_name(pg_ident(name, "lower") if name else f"{plan.pg_name}_check{i + 1}")
        t = expressions.expression(expr, colmap)
        table = qualified(schema, plan.pg_name)
        out.append(ObjectPlan(
            kind="check", name=cname, original=f"CHECK ({expr})", error=t.error,
            notes=tuple(t.notes),
            sql=f"ALTER TABLE {table} ADD CONSTRAINT {qi(cname)} CHECK ({t.sql}) NOT VALID"
            if t.ok else None,
            validate_sql=f"ALTER TABLE {table} VALIDATE CONSTRAINT {qi(cname)}",
        ))
    return out


def _foreign_key(plan: TablePlan, fk: ForeignKey, colmap: dict[str, str],
                 ident: Callable[[str], str], schema: str, i: int) -> ObjectPlan:
    cols = [colmap.get(c, ident(c)) for c in fk.columns]
    name = short_name(f"{plan.pg_name}_{'_'.join(cols)}_fkey")
    named = [c for c in fk.parent_columns if c is not None]
    parent_cols = "" if len(named) < len(fk.parent_columns) else \
        " (" + ", ".join(qi(ident(c)) for c in named) + ")"
    actions = "".join(f" ON {what} {act}" for what, act in (("DELETE", fk.on_delete),
                      ("UPDATE", fk.on_update)) if act and act.upper() != "NO ACTION")
    table = qualified(schema, plan.pg_name)
    original = (f"FOREIGN KEY ({', '.join(fk.columns)}) REFERENCES {fk.parent}"
                f"({', '.join(c or '' for c in fk.parent_columns)})")
    return ObjectPlan(
        kind="foreign_key", name=name, original=original,
        sql=f"ALTER TABLE {table} ADD CONSTRAINT {qi(name)} FOREIGN KEY "
            f"({', '.join(qi(c) for c in cols)}) REFERENCES {qualified(schema, ident(fk.parent))}"
            f"{parent_cols}{actions} NOT VALID",
        validate_sql=f"ALTER TABLE {table} VALIDATE CONSTRAINT {qi(name)}",
    )


def _trigger(plan: TablePlan, name: str, sql: str, colmap: dict[str, str],
             ident: Callable[[str], str], schema: str
             ) -> ObjectPlan:
    t = expressions.trigger(sql, plan.pg_name, schema, colmap, ident)
    return ObjectPlan(kind="trigger", name=name, sql=t.sql, original=sql, error=t.error,
                      notes=tuple(t.notes))


def plan_views(schema: Schema, cfg: Config) -> list[ObjectPlan]:
    ident: Callable[[str], str] = lambda n: pg_ident(n, cfg.identifiers)  # noqa: E731
    out = []
    for name, sql in schema.views:
        m = re.match(r"CREATE\s+(?:TEMP(?:ORARY)?\s+)?VIEW\s+(?:IF\s+NOT\s+EXISTS\s+)?\S+"
                     r"(?:\s*\([^)]*\))?\s+AS\s+(.*)$", sql.strip(), re.IGNORECASE | re.DOTALL)
        if not m:
            out.append(ObjectPlan(kind="view", name=name, sql=None, original=sql,
                                  error="CREATE VIEW not understood"))
            continue
        t = expressions.select(m.group(1).rstrip(";"), ident, cfg.target_schema)
        out.append(ObjectPlan(
            kind="view", name=name, original=sql, error=t.error, notes=tuple(t.notes),
            sql=f"CREATE OR REPLACE VIEW {qualified(cfg.target_schema, ident(name))} AS {t.sql}"
            if t.ok else None,
        ))
    return out


def final_inputs(conn: sqlite3.Connection, cfg: Config) -> tuple[list[ObjectPlan], dict[str, int]]:
    """What the final objects need from SQLite now: the views, planned, and each table's
    AUTOINCREMENT sequence (``sqlite_sequence``), so identities continue after it."""
    schema = inspect(conn)
    has_sequence = conn.execute("SELECT 1 FROM sqlite_schema WHERE type = 'table' "
                                "AND name = 'sqlite_sequence'").fetchone() is not None
    sequences = {name: seq for name, seq in conn.execute(
        "SELECT name, seq FROM sqlite_sequence").fetchall() if not is_ours(name)} \
        if has_sequence else {}
    return plan_views(schema, cfg), sequences
