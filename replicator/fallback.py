"""The Postgres side of the fallback window: reverse capture, and the fence that ``rollback`` puts
on Postgres. Every object is in ``_replicator`` (functions) or named ``_replicator_…`` (triggers).

Reverse capture is a keys-only change log, like the SQLite side's (DESIGN invariant 3): one
``AFTER … FOR EACH ROW`` trigger per migrated table writes the row's key (the old one and, when
it changed, the new one) to ``_replicator.rlog``; a statement trigger logs a TRUNCATE. The
functions are ``SECURITY DEFINER`` (owned by the replicator's role, ``search_path`` pinned), so
the application's role needs no privilege on ``_replicator``, and nothing needs a superuser. They
are created in the same transaction that records the cutover, so no write on Postgres escapes.

Postgres hands out sequence numbers in call order, not commit order, so ``rlog.seq`` is not a
cursor: the reverse applier reads the log and the rows in one snapshot and deletes exactly the
entries it applied (``reverse``).

The fence (after ``rollback``, while SQLite is the source of truth again): a ``BEFORE`` statement
trigger on each table raises, naming where the data lives, unless the transaction set
``replicator.pass`` (``state.apply_lock`` does, for the replicator's own forward apply).
"""

from __future__ import annotations

import sqlite3

import asyncpg

from . import log, state
from .convert import converter
from .plans import ROWID_COLUMN, ColumnPlan, TablePlan, short_name
from .quoting import qi, ql, qualified

_log = log.get("fallback")
SCHEMA = state.SCHEMA
CAPTURE_TRIGGER = "_replicator_reverse"
TRUNCATE_TRIGGER = "_replicator_reverse_truncate"
FENCE_TRIGGER = "_replicator_fence"
FENCE_MESSAGE = ("replicator: this database was rolled back; the data lives in the SQLite file "
                 "{where} again. Point the application at it")


FENCE_FUNCTION = state.function_name("fence")


def capture_function(plan: TablePlan) -> str:
    return state.function_name(short_name(f"reverse_{plan.pg_name}"))


def key_plans(plan: TablePlan) -> tuple[ColumnPlan, ...]:
    """The columns that find a row on both sides after cutover: the key, or for a table SQLite
    tracked by rowid, its declared PRIMARY KEY (the rowid does not survive cutover)."""
    if not plan.rowid_keyed:
        return plan.key_plans
    return tuple(plan.column(c) for c in plan.declared_key)


def _key(plan: TablePlan, which: str) -> str:
    return "jsonb_build_array(" + ", ".join(f"{which}.{qi(c.pg_name)}" for c in key_plans(plan)) + ")"


def capture_sql(plan: TablePlan, schema: str) -> list[str]:
    """The function and the two triggers that log ``plan``'s changed keys."""
    fn, table, name = capture_function(plan), qualified(schema, plan.pg_name), ql(plan.name)
    old, new = _key(plan, "OLD"), _key(plan, "NEW")
    return [
        f"""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $body$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        {state.rlog_insert_sql(name, "NULL")};
        RETURN NULL;
    END IF;
    IF TG_OP <> 'INSERT' THEN
        {state.rlog_insert_sql(name, old)};
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND {old} IS DISTINCT FROM {new}) THEN
        {state.rlog_insert_sql(name, new)};
    END IF;
    RETURN NULL;
END $body$""",
        f"DROP TRIGGER IF EXISTS {qi(CAPTURE_TRIGGER)} ON {table}",
        f"CREATE TRIGGER {qi(CAPTURE_TRIGGER)} AFTER INSERT OR UPDATE OR DELETE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {fn}()",
        f"DROP TRIGGER IF EXISTS {qi(TRUNCATE_TRIGGER)} ON {table}",
        f"CREATE TRIGGER {qi(TRUNCATE_TRIGGER)} AFTER TRUNCATE ON {table} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION {fn}()",
    ]


def unkeyed(plans: dict[str, TablePlan]) -> list[str]:
    """Tables with no key after cutover (no PRIMARY KEY: SQLite's rowid does not survive), whose
    rows therefore cannot be found again from Postgres."""
    return sorted(n for n, p in plans.items() if not key_plans(p))


async def install_capture(conn: asyncpg.Connection, plans: dict[str, TablePlan],
                          schema: str) -> None:
    """Inside the transaction that records the cutover: reverse capture on every table."""
    await state.rlog_clear(conn)
    for plan in plans.values():
        for stmt in capture_sql(plan, schema):
            await conn.execute(stmt)
    _log.info("reverse_capture_installed", tables=len(plans))


async def remove_capture(conn: asyncpg.Connection, plans: dict[str, TablePlan], schema: str) -> None:
    for plan in plans.values():
        table = qualified(schema, plan.pg_name)
        for trigger in (CAPTURE_TRIGGER, TRUNCATE_TRIGGER):
            await conn.execute(f"DROP TRIGGER IF EXISTS {qi(trigger)} ON {table}")
        await conn.execute(f"DROP FUNCTION IF EXISTS {capture_function(plan)}()")


async def install_fence(conn: asyncpg.Connection, plans: dict[str, TablePlan], schema: str,
                        where: str) -> None:
    """Make every write to the migrated tables fail, unless the replicator itself is applying."""
    message = ql(FENCE_MESSAGE.format(where=where))
    await conn.execute(f"""CREATE OR REPLACE FUNCTION {FENCE_FUNCTION}() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $body$
BEGIN
    IF coalesce(current_setting('replicator.pass', true), '') <> 'on' THEN
        RAISE EXCEPTION USING ERRCODE = 'read_only_sql_transaction', MESSAGE = {message};
    END IF;
    RETURN NULL;
END $body$""")
    for plan in plans.values():
        table = qualified(schema, plan.pg_name)
        await conn.execute(f"DROP TRIGGER IF EXISTS {qi(FENCE_TRIGGER)} ON {table}")
        await conn.execute(f"CREATE TRIGGER {qi(FENCE_TRIGGER)} BEFORE INSERT OR UPDATE OR DELETE "
                           f"OR TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION "
                           f"{FENCE_FUNCTION}()")


async def remove_fence(conn: asyncpg.Connection, plans: dict[str, TablePlan], schema: str) -> None:
    for plan in plans.values():
        await conn.execute(f"DROP TRIGGER IF EXISTS {qi(FENCE_TRIGGER)} "
                           f"ON {qualified(schema, plan.pg_name)}")
    await conn.execute(f"DROP FUNCTION IF EXISTS {FENCE_FUNCTION}()")


def sqlite_rowids(conn: sqlite3.Connection, plan: TablePlan) -> list[tuple[object, ...]]:
    """(rowid, *declared key as Postgres values) of every row of a rowid-tracked table."""
    keys = key_plans(plan)
    convs = [converter(c) for c in keys]
    cols = ", ".join(qi(c.name) for c in keys)
    return [(r[0], *(fn(v) for fn, v in zip(convs, r[1:], strict=True)))
            for r in conn.execute(f"SELECT {plan.rowid_name}, {cols} FROM {qi(plan.name)}")]


async def restore_rowids(conn: asyncpg.Connection, plan: TablePlan, schema: str,
                         rowids: list[tuple[object, ...]]) -> None:
    """After a rollback, before streaming forward again: a table SQLite tracks by rowid gets back
    the helper column cutover dropped, filled by its declared key from the (fenced) SQLite file."""
    table = qualified(schema, plan.pg_name)
    keys = key_plans(plan)
    await conn.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {qi(ROWID_COLUMN)} bigint")
    await conn.execute("CREATE TEMP TABLE _replicator_rowids (rid bigint, "
                       + ", ".join(f"k{i} {c.pg_type}" for i, c in enumerate(keys))
                       + ") ON COMMIT DROP")
    await conn.copy_records_to_table("_replicator_rowids", records=rowids)
    match = " AND ".join(f"t.{qi(c.pg_name)} = r.k{i}" for i, c in enumerate(keys))
    await conn.execute(f"UPDATE {table} t SET {qi(ROWID_COLUMN)} = r.rid "
                       f"FROM _replicator_rowids r WHERE {match}")
    await conn.execute("DROP TABLE _replicator_rowids")
    await conn.execute(f"ALTER TABLE {table} ALTER COLUMN {qi(ROWID_COLUMN)} SET NOT NULL")
    await conn.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS "
                       f"{qi(short_name(plan.pg_name + '_replicator_rowid'))} ON {table} "
                       f"({qi(ROWID_COLUMN)})")


async def leftovers(conn: asyncpg.Connection, schema: str) -> list[str]:
    """Every replicator trigger or function still in the database (``finish`` leaves none)."""
    rows = await conn.fetch(
        "SELECT c.relname || '.' || t.tgname AS name FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE NOT t.tgisinternal AND t.tgname LIKE '\\_replicator\\_%' AND n.nspname = $1 "
        "UNION ALL SELECT n.nspname || '.' || p.proname FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $2 "
        "UNION ALL SELECT nspname FROM pg_namespace WHERE nspname = $2", schema, SCHEMA)
    return [r["name"] for r in rows]
