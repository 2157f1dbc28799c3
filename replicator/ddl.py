"""Target DDL: the schema's meaning, carried into Postgres in two phases.

* With the table (snapshot phase): columns, types, NOT NULL, identity for INTEGER PRIMARY KEY,
  translated DEFAULTs and generated columns (STORED); after the load, the primary key and every
  index (UNIQUE ones with SQLite's exact semantics: COLLATE NOCASE folds ASCII only, as SQLite
  does), and the application's triggers translated to PL/pgSQL, created DISABLED so replicated
  rows do not fire them twice.
* At cutover (or at the end of ``copy``): CHECK constraints and foreign keys added NOT VALID and
  then validated (SQLite does not enforce foreign keys by default, so orphans are common: a key
  that cannot be validated stays NOT VALID and is reported), views, the app triggers enabled,
  identity sequences set after max(id) and sqlite_sequence.

Every translated object is created in a savepoint: what Postgres refuses is recorded, with the
original SQL, in the plan and the cutover report, and the rest carries on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import asyncpg
import sqlglot
from sqlglot import exp

from . import translate
from .config import Config
from .schema import (
    ROWID_COLUMN,
    ColumnPlan,
    IndexPlan,
    ObjectPlan,
    TablePlan,
    pg_ident,
    short_name,
)
from .source import KEY_ROWID, Index, Schema, Table, qi

_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def q2(schema: str, name: str) -> str:
    return f"{qi(schema)}.{qi(name)}"


# -- planning --------------------------------------------------------------------------------------


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


def _column(col: ColumnPlan, table: Table, colmap: dict[str, str], parsed: dict) -> ColumnPlan:
    notes = list(col.notes)
    default_sql = generated_sql = None
    source = table.column(col.name)
    if col.generated:
        expr = parsed["generated"].get(col.name.lower())
        t = translate.expression(expr, colmap) if expr else None
        if t is not None and t.ok:
            generated_sql = f"CAST(({t.sql}) AS {col.pg_type})"
            notes.append("generated column: Postgres computes it (STORED); verify compares values")
            notes += t.notes
        else:
            notes.append("generated column copied as plain values: "
                         f"{t.error if t else 'expression not found'}")
    elif source.default is not None and not col.identity:
        t = translate.default(source.default, col.pg_type, colmap)
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
                     ) -> translate.Translation:
    out = translate.Translation(original=sql)
    m = _INDEX.match(sql.strip().rstrip(";"))
    if not m:
        out.error = "CREATE INDEX not understood"
        return out
    items = []
    for item in _split_top(m["items"]):
        desc = re.search(r"\s+DESC\s*$", item, re.IGNORECASE)
        item = re.sub(r"\s+(ASC|DESC)\s*$", "", item, flags=re.IGNORECASE)
        t = translate.expression(item, colmap)
        if not t.ok:
            out.error = t.error
            return out
        items.append(f"({t.sql})" + (" DESC" if desc else ""))
    where = ""
    if m["where"]:
        t = translate.expression(m["where"], colmap)
        if not t.ok:
            out.error = f"WHERE: {t.error}"
            return out
        where = f" WHERE {t.sql}"
    unique = "UNIQUE " if m.group(1) else ""
    out.sql = (f"CREATE {unique}INDEX IF NOT EXISTS {qi(name)} ON {q2(schema, plan.pg_name)} "
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


def _checks(plan: TablePlan, checks: list, colmap: dict[str, str], schema: str) -> list[ObjectPlan]:
    out = []
    for i, (name, expr) in enumerate(checks):
        cname = short_name(pg_ident(name, "lower") if name else f"{plan.pg_name}_check{i + 1}")
        t = translate.expression(expr, colmap)
        table = q2(schema, plan.pg_name)
        out.append(ObjectPlan(
            kind="check", name=cname, original=f"CHECK ({expr})", error=t.error,
            notes=tuple(t.notes),
            sql=f"ALTER TABLE {table} ADD CONSTRAINT {qi(cname)} CHECK ({t.sql}) NOT VALID"
            if t.ok else None,
            validate_sql=f"ALTER TABLE {table} VALIDATE CONSTRAINT {qi(cname)}",
        ))
    return out


def _foreign_key(plan: TablePlan, fk, colmap: dict[str, str], ident, schema: str, i: int) -> ObjectPlan:
    cols = [colmap.get(c, ident(c)) for c in fk.columns]
    name = short_name(f"{plan.pg_name}_{'_'.join(cols)}_fkey")
    parent_cols = "" if any(c is None for c in fk.parent_columns) else \
        " (" + ", ".join(qi(ident(c)) for c in fk.parent_columns) + ")"
    actions = "".join(f" ON {what} {act}" for what, act in (("DELETE", fk.on_delete),
                      ("UPDATE", fk.on_update)) if act and act.upper() != "NO ACTION")
    table = q2(schema, plan.pg_name)
    original = (f"FOREIGN KEY ({', '.join(fk.columns)}) REFERENCES {fk.parent}"
                f"({', '.join(c or '' for c in fk.parent_columns)})")
    return ObjectPlan(
        kind="foreign_key", name=name, original=original,
        sql=f"ALTER TABLE {table} ADD CONSTRAINT {qi(name)} FOREIGN KEY "
            f"({', '.join(qi(c) for c in cols)}) REFERENCES {q2(schema, ident(fk.parent))}"
            f"{parent_cols}{actions} NOT VALID",
        validate_sql=f"ALTER TABLE {table} VALIDATE CONSTRAINT {qi(name)}",
    )


def _trigger(plan: TablePlan, name: str, sql: str, colmap: dict[str, str], ident, schema: str
             ) -> ObjectPlan:
    t = translate.trigger(sql, plan.pg_name, schema, colmap, ident)
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
        t = translate.select(m.group(1).rstrip(";"), ident, cfg.target_schema)
        out.append(ObjectPlan(
            kind="view", name=name, original=sql, error=t.error, notes=tuple(t.notes),
            sql=f"CREATE OR REPLACE VIEW {q2(cfg.target_schema, ident(name))} AS {t.sql}"
            if t.ok else None,
        ))
    return out


# -- SQL for the target ----------------------------------------------------------------------------


def column_sql(col: ColumnPlan, with_extras: bool = True) -> str:
    sql = f"{qi(col.pg_name)} {col.pg_type}"
    if col.identity:
        sql += " GENERATED BY DEFAULT AS IDENTITY"
    if with_extras and col.generated_sql:
        sql += f" GENERATED ALWAYS AS ({col.generated_sql}) STORED"
    if col.notnull and not col.generated_sql:
        sql += " NOT NULL"
    return sql


def create_table_sql(plan: TablePlan, schema: str) -> str:
    cols = [f"    {column_sql(c)}" for c in plan.columns]
    if plan.rowid_keyed:
        cols.append(f"    {qi(ROWID_COLUMN)} bigint NOT NULL")
    return f"CREATE TABLE {q2(schema, plan.pg_name)} (\n" + ",\n".join(cols) + "\n)"


def default_sql(plan: TablePlan, schema: str) -> list[str]:
    return [f"ALTER TABLE {q2(schema, plan.pg_name)} ALTER COLUMN {qi(c.pg_name)} "
            f"SET DEFAULT {c.default_sql}" for c in plan.columns if c.default_sql]


def primary_key_sql(plan: TablePlan, schema: str) -> str:
    return (f"ALTER TABLE {q2(schema, plan.pg_name)} ADD CONSTRAINT "
            f"{qi(short_name(plan.pg_name + '_pkey'))} PRIMARY KEY "
            f"({', '.join(qi(c) for c in plan.pg_key_columns)})")


def index_sql(plan: TablePlan, idx: IndexPlan, schema: str, unique: bool | None = None) -> str:
    if idx.sql:
        return idx.sql
    by_name = {c.name: c for c in plan.columns}
    unique = idx.unique if unique is None else unique
    items = []
    for col, coll, desc in zip(idx.columns, idx.collations, idx.descending, strict=False):
        c = by_name[col]
        item = qi(c.pg_name)
        if unique and c.pg_type == "text" and coll == "NOCASE":
            item = f"translate({item}, '{_UPPER}', '{_UPPER.lower()}')"
        elif unique and c.pg_type == "text" and coll == "RTRIM":
            item = f"rtrim({item}, ' ')"
        items.append(item + (" DESC" if desc else ""))
    return (f"CREATE {'UNIQUE ' if unique else ''}INDEX IF NOT EXISTS {qi(idx.name)} ON "
            f"{q2(schema, plan.pg_name)} ({', '.join(items)})")


def snapshot_ddl(plan: TablePlan, schema: str) -> list[str]:
    """Keys and indexes, as created after the bulk load (for ``plan --emit-sql``)."""
    out = [primary_key_sql(plan, schema)]
    out += [index_sql(plan, i, schema) for i in plan.indexes if not i.primary and not i.error]
    return out


def final_ddl(plan: TablePlan) -> list[str]:
    out = []
    for o in plan.objects:
        if o.sql and o.kind in ("check", "foreign_key"):
            out += [o.sql, o.validate_sql or ""]
        elif o.sql:
            out.append(o.sql)
    return [s for s in out if s]


# -- executing against the target ------------------------------------------------------------------


async def try_sql(conn: asyncpg.Connection, sql: str) -> str | None:
    """Run ``sql`` in a savepoint; the error message when Postgres refuses it."""
    try:
        async with conn.transaction():
            await conn.execute(sql)
    except asyncpg.PostgresError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


async def create_table(conn: asyncpg.Connection, plan: TablePlan, schema: str) -> TablePlan:
    """CREATE TABLE with every translated default and generation expression Postgres accepts."""
    columns = list(plan.columns)
    if await try_sql(conn, create_table_sql(plan, schema)) is not None:
        for i, col in enumerate(columns):  # find the generated columns Postgres refuses
            if col.generated_sql:
                probe = replace(plan, columns=tuple(
                    c if c is col else replace(c, generated_sql=None) for c in columns))
                error = await _probe_table(conn, probe, schema)
                if error:
                    columns[i] = replace(col, generated_sql=None, notes=col.notes + (
                        f"generated column copied as plain values: Postgres refused "
                        f"{col.generated_sql}: {error}",))
        plan = replace(plan, columns=tuple(columns))
        await conn.execute(create_table_sql(plan, schema))
    for i, col in enumerate(columns):
        if col.default_sql:
            error = await try_sql(conn, f"ALTER TABLE {q2(schema, plan.pg_name)} ALTER COLUMN "
                                        f"{qi(col.pg_name)} SET DEFAULT {col.default_sql}")
            if error:
                columns[i] = replace(col, default_sql=None, notes=col.notes + (
                    f"DEFAULT {col.default_sql} refused by Postgres: {error}",))
    return replace(plan, columns=tuple(columns))


async def _probe_table(conn: asyncpg.Connection, plan: TablePlan, schema: str) -> str | None:
    try:
        async with conn.transaction():
            await conn.execute(create_table_sql(plan, schema))
            raise _Rollback
    except _Rollback:
        return None
    except asyncpg.PostgresError as exc:
        return str(exc)


class _Rollback(Exception):
    pass


async def snapshot_objects(conn: asyncpg.Connection, plan: TablePlan, schema: str) -> TablePlan:
    """After the load: primary key, indexes, the app's triggers (disabled)."""
    await conn.execute(primary_key_sql(plan, schema))
    indexes = []
    for idx in plan.indexes:
        if idx.primary or idx.error:
            indexes.append(idx)
            continue
        error = await try_sql(conn, index_sql(plan, idx, schema))
        if error and idx.unique and idx.sql is None:
            await conn.execute(index_sql(plan, idx, schema, unique=False))
            idx = replace(idx, error=f"created without UNIQUE: {error}")
        elif error:
            idx = replace(idx, error=error)
        indexes.append(idx)
    objects = []
    for obj in plan.objects:
        if obj.kind == "trigger" and obj.sql:
            error = await try_sql(conn, obj.sql + ";\n" + _disable(plan, obj, schema))
            obj = replace(obj, error=error) if error else obj
        objects.append(obj)
    return replace(plan, indexes=tuple(indexes), objects=tuple(objects))


def _disable(plan: TablePlan, obj: ObjectPlan, schema: str, enable: bool = False) -> str:
    return (f"ALTER TABLE {q2(schema, plan.pg_name)} {'ENABLE' if enable else 'DISABLE'} "
            f"TRIGGER {qi(obj.name)}")


async def final_objects(
    conn: asyncpg.Connection, plans: dict[str, TablePlan], views: list[ObjectPlan], schema: str,
    sequences: dict[str, int],
) -> list[dict[str, Any]]:
    """Inside the cutover's write freeze, all quick catalog changes: helper columns dropped,
    CHECKs and foreign keys added NOT VALID (enforced for new rows at once), app triggers on,
    views, identity sequences. Validation of old rows comes after (``validate_objects``)."""
    results: list[dict[str, Any]] = []
    for plan in plans.values():
        results += await _table_final(conn, plan, schema, sequences.get(plan.name, 0))
    results += await _views(conn, views)
    return results


async def validate_objects(conn: asyncpg.Connection, plans: dict[str, TablePlan], schema: str
                           ) -> list[dict[str, Any]]:
    """After cutover: VALIDATE the constraints added NOT VALID (no lock that blocks the app's
    reads or writes), and promote nullable primary keys that hold no NULLs."""
    out = []
    for plan in plans.values():
        for obj in plan.objects:
            if obj.kind in ("check", "foreign_key") and obj.sql and obj.validate_sql:
                error = await try_sql(conn, obj.validate_sql)
                out.append({"table": plan.name, "object": f"{obj.kind} {obj.name}",
                            "status": "not valid" if error else "validated", "detail": error,
                            "original": obj.original})
        if plan.rowid_keyed:
            out += await _promote_key(conn, plan, schema)
    return out


async def _promote_key(conn, plan: TablePlan, schema: str) -> list[dict[str, Any]]:
    if not plan.declared_key:
        return []
    cols = [plan.column(c).pg_name for c in plan.declared_key]
    error = await try_sql(conn, f"ALTER TABLE {q2(schema, plan.pg_name)} ADD PRIMARY KEY "
                                f"({', '.join(qi(c) for c in cols)})")
    return [{"table": plan.name, "object": f"primary key ({', '.join(cols)})",
             "status": "not created" if error else "created", "detail": error}]


async def dry_run(conn: asyncpg.Connection, plans: dict[str, TablePlan], schema: str
                  ) -> dict[str, str | None]:
    """Before the fence: which constraints would validate on the data as it is (None: yes).
    Everything happens in a transaction that is rolled back."""
    out: dict[str, str | None] = {}
    try:
        async with conn.transaction():
            for plan in plans.values():
                for obj in plan.objects:
                    if obj.kind in ("check", "foreign_key") and obj.sql:
                        out[f"{plan.name}: {obj.kind} {obj.name}"] = await try_sql(
                            conn, f"{obj.sql}; {obj.validate_sql}")
            raise _Rollback
    except _Rollback:
        pass
    return out


async def _table_final(conn, plan: TablePlan, schema: str, seq: int) -> list[dict[str, Any]]:
    out = []
    table = q2(schema, plan.pg_name)
    if plan.rowid_keyed:
        await conn.execute(f"ALTER TABLE {table} DROP COLUMN IF EXISTS {qi(ROWID_COLUMN)}")
    for obj in plan.objects:
        out.append(await _final_object(conn, plan, obj, schema))
    for col in plan.columns:
        if col.identity:
            top = await conn.fetchval(f"SELECT max({qi(col.pg_name)}) FROM {table}")
            nxt = max(int(top or 0), seq)
            await conn.execute(
                "SELECT setval(pg_get_serial_sequence($1, $2), $3, $4)",
                f"{qi(schema)}.{qi(plan.pg_name)}", col.pg_name, max(nxt, 1), nxt > 0,
            )
            out.append({"table": plan.name, "object": f"identity {col.name}", "status": "set",
                        "detail": f"next value {nxt + 1}"})
    return out


async def _final_object(conn, plan: TablePlan, obj: ObjectPlan, schema: str) -> dict[str, Any]:
    base = {"table": plan.name, "object": f"{obj.kind} {obj.name}", "original": obj.original}
    if not obj.sql:
        return {**base, "status": "not translated", "detail": obj.error}
    if obj.kind == "trigger":
        if obj.error:
            return {**base, "status": "failed", "detail": obj.error}
        error = await try_sql(conn, _disable(plan, obj, schema, enable=True))
        return {**base, "status": "failed" if error else "enabled", "detail": error}
    error = await try_sql(conn, obj.sql)
    if error and "already exists" not in error:
        return {**base, "status": "failed", "detail": error}
    return {**base, "status": "added", "detail": "NOT VALID until validated after cutover"}


async def _views(conn, views: list[ObjectPlan]) -> list[dict[str, Any]]:
    """Create views in dependency order: retry the ones that failed while any succeeds."""
    pending = [v for v in views if v.sql]
    out = [{"object": f"view {v.name}", "status": "not translated", "detail": v.error,
            "original": v.original} for v in views if not v.sql]
    errors: dict[str, str] = {}
    while pending:
        progress = False
        for view in list(pending):
            error = await try_sql(conn, view.sql or "")
            if error is None:
                pending.remove(view)
                out.append({"object": f"view {view.name}", "status": "created", "detail": None})
                progress = True
            else:
                errors[view.name] = error
        if not progress:
            break
    out += [{"object": f"view {v.name}", "status": "failed", "detail": errors[v.name],
             "original": v.original} for v in pending]
    return out


async def add_column(conn: asyncpg.Connection, plan: TablePlan, col: ColumnPlan, value: Any,
                     schema: str) -> ColumnPlan:
    """ALTER TABLE ADD COLUMN, with ``value`` (what old rows read back in SQLite) filled in."""
    from .convert import converter

    table = q2(schema, plan.pg_name)
    if col.generated_sql:
        error = await try_sql(conn, f"ALTER TABLE {table} ADD COLUMN {column_sql(col)}")
        if error is None:
            return col
        col = replace(col, generated_sql=None, notes=col.notes + (
            f"generated column copied as plain values: {error}",))
    await conn.execute(f"ALTER TABLE {table} ADD COLUMN {qi(col.pg_name)} {col.pg_type}")
    converted = converter(col)(value)
    if converted is not None:
        await conn.execute(f"UPDATE {table} SET {qi(col.pg_name)} = $1", converted)
    if col.notnull:
        await conn.execute(f"ALTER TABLE {table} ALTER COLUMN {qi(col.pg_name)} SET NOT NULL")
    if col.default_sql:
        error = await try_sql(conn, f"ALTER TABLE {table} ALTER COLUMN {qi(col.pg_name)} "
                                    f"SET DEFAULT {col.default_sql}")
        if error:
            col = replace(col, default_sql=None, notes=col.notes + (f"DEFAULT refused: {error}",))
    return col


async def sync_indexes(conn: asyncpg.Connection, plan: TablePlan, wanted: tuple[IndexPlan, ...],
                       schema: str) -> TablePlan:
    """Drop indexes that went away in SQLite and create the new ones."""
    have = {i.sqlite_name: i for i in plan.indexes}
    keep = []
    for idx in plan.indexes:
        if idx.sqlite_name not in {w.sqlite_name for w in wanted} and not idx.primary:
            await conn.execute(f"DROP INDEX IF EXISTS {q2(schema, idx.name)}")
    for idx in wanted:
        if idx.sqlite_name in have:
            keep.append(have[idx.sqlite_name])
            continue
        if not idx.primary and not idx.error:
            error = await try_sql(conn, index_sql(plan, idx, schema))
            if error and idx.unique and idx.sql is None:
                await conn.execute(index_sql(plan, idx, schema, unique=False))
                idx = replace(idx, error=f"created without UNIQUE: {error}")
            elif error:
                idx = replace(idx, error=error)
        keep.append(idx)
    return replace(plan, indexes=tuple(keep))
