"""Bookkeeping in the target's ``_replicator`` schema: state, cursor, per-table progress, quarantine.

The cursor (the highest change-log sequence applied) is written in the same Postgres transaction
as the rows it covers, so a commit whose acknowledgement was lost is never applied twice and a
crash never skips a batch.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from .errors import StateError
from .plans import TablePlan
from .quoting import qi

SCHEMA = "_replicator"
T = TypeVar("T")
# Transaction-scoped: every batch, schema change, table copy during streaming and the cutover
# take it, so the daemon and a separate `cutover` process never interleave their writes.
APPLY_LOCK = "hashtext('_replicator.apply')"
# Session-scoped: one daemon per target database (not taken behind a transaction pooler).
DAEMON_LOCK = "hashtext('_replicator.daemon')"
# Transaction-scoped, taken first by each reverse batch (fallback window) and by `finish`: reverse
# appliers (the daemon, `rollback`) run one after the other, and each reads the log and the rows
# after the previous one committed, so an older state is never written over a newer one.
REVERSE_LOCK = "hashtext('_replicator.reverse')"
# The states after cutover: the migration is over (done), or Postgres is the source of truth and
# SQLite follows it (fallback: the window in which `rollback` is still possible).
CUT_OVER = ("done", "fallback")

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.state (
    id              boolean PRIMARY KEY DEFAULT true CHECK (id),
    source_id       text,
    source_path     text NOT NULL,
    mode            text NOT NULL,
    state           text NOT NULL,
    cursor          bigint NOT NULL DEFAULT 0,
    target_schema   text NOT NULL,
    error           text,
    schema_version  bigint,
    info            jsonb NOT NULL DEFAULT '{{}}',
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.tables (
    name            text PRIMARY KEY,
    pg_name         text NOT NULL,
    plan            jsonb NOT NULL,
    sqlite_sql      text NOT NULL,
    status          text NOT NULL,
    snapshot_seq    bigint,
    resume_after    bigint,
    rows_copied     bigint NOT NULL DEFAULT 0,
    changes_applied bigint NOT NULL DEFAULT 0,
    last_change_at  timestamptz,
    copy_seconds    double precision,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.quarantine (
    tbl             text NOT NULL,
    key             jsonb NOT NULL,
    raw             jsonb NOT NULL,
    column_name     text,
    reason          text NOT NULL,
    first_seen      timestamptz NOT NULL DEFAULT now(),
    last_seen       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tbl, key)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.units (
    tbl             text NOT NULL,
    unit            int NOT NULL,
    lo              bigint,
    hi              bigint,
    after           bigint,
    rows            bigint NOT NULL DEFAULT 0,
    quarantined     bigint NOT NULL DEFAULT 0,
    done            boolean NOT NULL DEFAULT false,
    PRIMARY KEY (tbl, unit)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.dirty (
    tbl             text NOT NULL,
    key             jsonb NOT NULL,
    seq             bigint NOT NULL,
    PRIMARY KEY (tbl, key)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.rlog (
    seq             bigserial PRIMARY KEY,
    tbl             text NOT NULL,
    key             jsonb,
    at              timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.samples (
    at              timestamptz NOT NULL DEFAULT now(),
    direction       text NOT NULL,
    lag_seconds     double precision NOT NULL,
    backlog         bigint NOT NULL,
    applied         bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.events (
    id              bigserial PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    kind            text NOT NULL,
    tbl             text,
    detail          jsonb NOT NULL DEFAULT '{{}}'
);
"""

# Table status values.
PENDING, COPYING, STREAMING = "pending", "copying", "streaming"


@dataclass(frozen=True)
class State:
    """The one row of ``_replicator.state``: which file this target replicates, the mode, the
    state (new, snapshot, streaming, cutover, done, error), the cursor and free-form info."""
    source_id: str | None
    source_path: str
    mode: str
    state: str
    cursor: int
    target_schema: str
    error: str | None
    schema_version: int | None
    info: dict[str, Any]


@dataclass(frozen=True)
class TableState:
    """A row of ``_replicator.tables``: a replicated table's plan, status and counters."""
    name: str
    pg_name: str
    plan: TablePlan
    sqlite_sql: str
    status: str
    snapshot_seq: int | None
    resume_after: int | None
    rows_copied: int
    changes_applied: int
    last_change_at: datetime | None = None
    copy_seconds: float | None = None


async def ensure(conn: asyncpg.Connection) -> None:
    # Serialise concurrent first runs; the lock is released with the transaction.
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('_replicator.ddl'))")
        await conn.execute(DDL)


async def apply_lock(conn: asyncpg.Connection) -> None:
    """Inside a transaction: wait for any other writer of replicated rows (see APPLY_LOCK). The
    transaction also passes the fence that `rollback` leaves on Postgres (``fallback``)."""
    await conn.execute(f"SELECT pg_advisory_xact_lock({APPLY_LOCK}), "
                       "set_config('replicator.pass', 'on', true)")


async def reverse_lock(conn: asyncpg.Connection) -> None:
    """Inside a transaction: wait for any other reverse applier (see REVERSE_LOCK)."""
    await conn.execute(f"SELECT pg_advisory_xact_lock({REVERSE_LOCK})")


def batch_guard_cte(expected: str, high: str, also: Sequence[str] = ()) -> str:
    """The bookkeeping of a batch applied as one statement (apply.Applier.write_one_statement),
    as a CTE named ``st`` that every other part of the statement waits on: it takes the apply
    lock and passes the fence (as ``apply_lock``), then advances the cursor only if it still is
    ``expected`` and the state still lets forward batches in ("streaming", or "error", which it
    clears). The row lock re-reads the latest state after the advisory lock is granted, so a
    cutover or drain that committed meanwhile leaves ``st`` empty and the statement changes
    nothing; so does any condition in ``also`` that does not hold. Returns whether changes since
    the last full verification are tracked."""
    return (f"st AS (UPDATE {SCHEMA}.state SET cursor = greatest(cursor, {high}), "
            "updated_at = now(), error = CASE WHEN state = 'error' THEN NULL ELSE error END, "
            "state = CASE WHEN state = 'error' THEN 'streaming' ELSE state END "
            f"WHERE cursor = {expected} AND state IN ('streaming', 'error') "
            f"AND pg_advisory_xact_lock({APPLY_LOCK}) IS NOT NULL "
            "AND set_config('replicator.pass', 'on', true) = 'on' "
            + "".join(f"AND {c} " for c in also) +
            "RETURNING coalesce((info->'last_verify'->>'full')::boolean, false) AS tracking)")


def batch_dirty_cte(name: str, table: str, keys: str, seq: str) -> str:
    """``mark_dirty`` inside the one-statement batch, only while changes are tracked."""
    return (f"{name} AS (INSERT INTO {SCHEMA}.dirty (tbl, key, seq) SELECT {table}, k, {seq} "
            f"FROM unnest({keys}) k WHERE (SELECT tracking FROM st) "
            "ON CONFLICT (tbl, key) DO UPDATE SET seq = excluded.seq RETURNING 1)")


def batch_counts_cte(names: str, counts: str) -> str:
    """``count_changes`` inside the one-statement batch."""
    return (f"counted AS (UPDATE {SCHEMA}.tables t SET changes_applied = t.changes_applied + v.n, "
            f"last_change_at = now() FROM unnest({names}, {counts}) AS v(name, n) "
            "WHERE t.name = v.name AND EXISTS (SELECT FROM st) RETURNING 1)")


async def sample(conn: asyncpg.Connection, direction: str, lag: float, backlog: int,
                 applied: int) -> None:
    """One point of the report's lag and backlog charts (``direction``: forward or reverse)."""
    await conn.execute(f"INSERT INTO {SCHEMA}.samples (direction, lag_seconds, backlog, applied) "
                       "VALUES ($1, $2, $3, $4)", direction, lag, backlog, applied)


async def samples(conn: asyncpg.Connection, limit: int = 2000) -> list[dict[str, Any]]:
    """The newest ``limit`` samples, oldest first (the report's charts)."""
    rows = await conn.fetch(
        f"SELECT * FROM (SELECT extract(epoch FROM at) AS at, direction, lag_seconds, backlog, "
        f"applied FROM {SCHEMA}.samples ORDER BY at DESC LIMIT $1) s ORDER BY at", limit)
    return [dict(r) for r in rows]


def rlog_insert_sql(table_literal: str, key_sql: str) -> str:
    """The statement the reverse-capture triggers run (``fallback``): one key into the log."""
    return f"INSERT INTO {SCHEMA}.rlog (tbl, key) VALUES ({table_literal}, {key_sql})"


def function_name(name: str) -> str:
    """A replicator function in Postgres (reverse capture, the fence): in the bookkeeping schema,
    so it leaves with it."""
    return f"{SCHEMA}.{qi(name)}"


async def rlog_clear(conn: asyncpg.Connection) -> None:
    await conn.execute(f"DELETE FROM {SCHEMA}.rlog")


async def rlog_batch(conn: asyncpg.Connection, limit: int) -> list[tuple[int, str, str | None]]:
    """The oldest reverse-log entries: (seq, table, key as JSON text; None for a TRUNCATE)."""
    rows = await conn.fetch(f"SELECT seq, tbl, key FROM {SCHEMA}.rlog ORDER BY seq LIMIT $1", limit)
    return [(r["seq"], r["tbl"], r["key"]) for r in rows]


async def rlog_forget(conn: asyncpg.Connection, seqs: list[int]) -> int:
    """Delete applied entries; fails (serialization) if another applier took them first."""
    return int((await conn.execute(f"DELETE FROM {SCHEMA}.rlog WHERE seq = ANY($1::bigint[])",
                                   seqs)).split()[-1])


async def rlog_position(conn: asyncpg.Connection) -> tuple[int, float]:
    """Entries waiting in the reverse log and the age in seconds of the oldest."""
    row = await conn.fetchrow(
        f"SELECT count(*) AS n, extract(epoch FROM clock_timestamp() - min(at)) AS age "
        f"FROM {SCHEMA}.rlog")
    return int(row["n"]), max(0.0, float(row["age"] or 0.0))


async def try_daemon_lock(conn: asyncpg.Connection) -> bool:
    """Take the one-daemon-per-target lock for this session; False if another daemon holds it."""
    return bool(await conn.fetchval(f"SELECT pg_try_advisory_lock({DAEMON_LOCK})"))


async def owned_tables(conn: asyncpg.Connection) -> set[str]:
    """SQLite names of tables this replication created, plus the Postgres names of those a
    previous run created (either may be replaced; nothing else in the target may)."""
    st = await load(conn)
    previous = set(st.info.get("previously_owned", [])) if st else set()
    return set(await tables(conn)) | previous


async def count_changes(conn: asyncpg.Connection, per_table: dict[str, int]) -> None:
    """Changes a batch applied, per table (status and the report show them)."""
    for name, n in per_table.items():
        await conn.execute(f"UPDATE {SCHEMA}.tables SET changes_applied = changes_applied + $2, "
                           "last_change_at = now() WHERE name = $1", name, n)


async def updated_at(conn: asyncpg.Connection) -> float:
    """Unix time of the last change to the replication state (0 when none)."""
    return float(await conn.fetchval(f"SELECT extract(epoch FROM updated_at) FROM {SCHEMA}.state")
                 or 0)


async def rowid_fingerprint(conn: asyncpg.Connection, name: str, table: str,
                            rowid_column: str) -> tuple[int, int]:
    """(count, sum of rowids) of a rowid-keyed table in Postgres, its quarantined rows included
    (SQLite still has them): what VACUUM renumbering would change."""
    row = await conn.fetchrow(
        f"SELECT count(*) + (SELECT count(*) FROM {SCHEMA}.quarantine WHERE tbl = $1), "
        f"coalesce(sum({rowid_column}), 0) + (SELECT coalesce(sum((key->0->>'int')::numeric), 0) "
        f"FROM {SCHEMA}.quarantine WHERE tbl = $1) FROM {table}", name)
    return int(row[0]), int(row[1])


async def events_since(conn: asyncpg.Connection, kinds: tuple[str, ...], since: float) -> bool:
    """Whether an event of one of ``kinds`` was recorded after unix time ``since``."""
    return bool(await conn.fetchval(
        f"SELECT count(*) FROM {SCHEMA}.events WHERE kind = ANY($1::text[]) "
        "AND at > to_timestamp($2)", list(kinds), since))


async def set_schema_version(conn: asyncpg.Connection, version: int) -> None:
    """The SQLite schema_version the replicated tables were last checked against."""
    await conn.execute(f"UPDATE {SCHEMA}.state SET schema_version = $1", version)


async def save_plan(conn: asyncpg.Connection, plan: TablePlan, sqlite_sql: str) -> None:
    """A table's plan changed by a schema change (added columns, indexes)."""
    await conn.execute(
        f"UPDATE {SCHEMA}.tables SET plan = $2::jsonb, sqlite_sql = $3, updated_at = now() "
        "WHERE name = $1", plan.name, json.dumps(plan.to_json()), sqlite_sql)


async def drop_schema(conn: asyncpg.Connection) -> None:
    """The bookkeeping schema and everything in it (``uninstall --target-schema``)."""
    await conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")


async def exists(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT to_regclass('_replicator.state') IS NOT NULL"))


async def _if_exists(conn: asyncpg.Connection, run: Callable[[], Awaitable[T]], empty: T) -> T:
    """Bookkeeping that may not exist (before the first run, after finish or uninstall), in one
    round trip where it can: outside a transaction, a missing table means ``empty``; inside one,
    where that error would abort the transaction, look first."""
    if conn.is_closed():
        return await run()  # fails as a closed connection does: retried as a lost link
    if conn.is_in_transaction():
        return await run() if await exists(conn) else empty
    try:
        return await run()
    except (asyncpg.UndefinedTableError, asyncpg.InvalidSchemaNameError):
        return empty


async def load(conn: asyncpg.Connection, *, for_update: bool = False) -> State | None:
    row = await _if_exists(conn, lambda: conn.fetchrow(
        f"SELECT * FROM {SCHEMA}.state{' FOR UPDATE' if for_update else ''}"), None)
    if row is None:
        return None
    return State(
        source_id=row["source_id"],
        source_path=row["source_path"],
        mode=row["mode"],
        state=row["state"],
        cursor=row["cursor"],
        target_schema=row["target_schema"],
        error=row["error"],
        schema_version=row["schema_version"],
        info=json.loads(row["info"]),
    )


async def init(
    conn: asyncpg.Connection, *, source_id: str | None, source_path: str, mode: str,
    target_schema: str,
) -> None:
    """A fresh start: the previous run's bookkeeping goes, but the names of the tables it
    created are kept, so this run may replace them (and only them)."""
    async with conn.transaction():
        owned = [r[0] for r in await conn.fetch(f"SELECT pg_name FROM {SCHEMA}.tables")]
        old = await conn.fetchval(f"SELECT info->'previously_owned' FROM {SCHEMA}.state")
        owned = sorted(set(owned) | set(json.loads(old) if old else []))
        for table in ("tables", "units", "quarantine", "dirty"):
            await conn.execute(f"DELETE FROM {SCHEMA}.{table}")
        await conn.execute(
            f"INSERT INTO {SCHEMA}.state (source_id, source_path, mode, state, cursor, target_schema) "
            "VALUES ($1, $2, $3, 'new', 0, $4) ON CONFLICT (id) DO UPDATE SET source_id = $1, "
            "source_path = $2, mode = $3, state = 'new', cursor = 0, target_schema = $4, "
            "error = NULL, schema_version = NULL, info = '{}', started_at = now(), updated_at = now()",
            source_id, source_path, mode, target_schema,
        )
        await merge_info(conn, previously_owned=owned)


async def set_state(
    conn: asyncpg.Connection, state: str, *, error: str | None = None, **fields: Any
) -> None:
    sets, args = ["state = $1", "error = $2", "updated_at = now()"], [state, error]
    for key, value in fields.items():
        args.append(value)
        sets.append(f"{key} = ${len(args)}")
    await conn.execute(f"UPDATE {SCHEMA}.state SET {', '.join(sets)}", *args)


async def set_cursor(conn: asyncpg.Connection, cursor: int) -> None:
    await conn.execute(
        f"UPDATE {SCHEMA}.state SET cursor = greatest(cursor, $1), updated_at = now()", cursor
    )


async def merge_info(conn: asyncpg.Connection, **info: Any) -> None:
    await conn.execute(
        f"UPDATE {SCHEMA}.state SET info = info || $1::jsonb, updated_at = now()",
        json.dumps(info, default=str),
    )


async def event(conn: asyncpg.Connection, kind: str, tbl: str | None = None, /,
                **detail: Any) -> None:
    """Record an event (the report's timeline). Positional-only, so a detail may be called
    ``kind`` (an error's kind) without clashing with the event's."""
    await conn.execute(
        f"INSERT INTO {SCHEMA}.events (kind, tbl, detail) VALUES ($1, $2, $3::jsonb)",
        kind, tbl, json.dumps(detail, default=str),
    )


async def tables(conn: asyncpg.Connection) -> dict[str, TableState]:
    rows: list[asyncpg.Record] = await _if_exists(
        conn, lambda: conn.fetch(f"SELECT * FROM {SCHEMA}.tables ORDER BY name"), [])
    return {
        r["name"]: TableState(
            name=r["name"],
            pg_name=r["pg_name"],
            plan=TablePlan.from_json(json.loads(r["plan"])),
            sqlite_sql=r["sqlite_sql"],
            status=r["status"],
            snapshot_seq=r["snapshot_seq"],
            resume_after=r["resume_after"],
            rows_copied=r["rows_copied"],
            changes_applied=r["changes_applied"],
            last_change_at=r["last_change_at"],
            copy_seconds=r["copy_seconds"],
        )
        for r in rows
    }


async def put_table(
    conn: asyncpg.Connection, plan: TablePlan, sqlite_sql: str, status: str
) -> None:
    await conn.execute(
        f"INSERT INTO {SCHEMA}.tables (name, pg_name, plan, sqlite_sql, status) "
        "VALUES ($1, $2, $3::jsonb, $4, $5) ON CONFLICT (name) DO UPDATE SET pg_name = $2, "
        "plan = $3::jsonb, sqlite_sql = $4, status = $5, snapshot_seq = NULL, "
        "resume_after = NULL, rows_copied = 0, copy_seconds = NULL, updated_at = now()",
        plan.name, plan.pg_name, json.dumps(plan.to_json()), sqlite_sql, status,
    )


async def update_table(conn: asyncpg.Connection, name: str, **fields: Any) -> None:
    sets, args = ["updated_at = now()"], [name]
    for key, value in fields.items():
        args.append(value)
        sets.append(f"{key} = ${len(args)}")
    await conn.execute(f"UPDATE {SCHEMA}.tables SET {', '.join(sets)} WHERE name = $1", *args)


async def drop_table_row(conn: asyncpg.Connection, name: str) -> None:
    await conn.execute(f"DELETE FROM {SCHEMA}.tables WHERE name = $1", name)


async def quarantine_count(conn: asyncpg.Connection, *, absent_only: bool = False
                           ) -> dict[str, int]:
    """Quarantined rows per table (``absent_only``: not the rows the fallback window wrote back
    in a wider form, which are on both sides)."""
    rows: list[asyncpg.Record] = await _if_exists(conn, lambda: conn.fetch(
        f"SELECT tbl, count(*) FROM {SCHEMA}.quarantine "
        + ("WHERE NOT starts_with(reason, $1) " if absent_only else "") + "GROUP BY tbl",
        *((REVERSE_REASON,) if absent_only else ())), [])
    return {r[0]: r[1] for r in rows}


def check_source(st: State, source_id: str | None, source_path: str) -> None:
    """Refuse a target that holds replication from another SQLite file."""
    if st.source_id and source_id and st.source_id != source_id:
        raise StateError(
            f"target: it holds a replication of another source ({st.source_path}, id "
            f"{st.source_id}); this source has id {source_id}. Use another database or schema, "
            "or drop the target's _replicator schema"
        )


async def quarantine_put(
    conn: asyncpg.Connection, table: str, items: list[tuple[list[Any], list[Any], str, str]]
) -> None:
    """Record rows that cannot move exactly: (typed key, typed raw row, column, reason)."""
    if not items:
        return
    await conn.executemany(
        f"INSERT INTO {SCHEMA}.quarantine (tbl, key, raw, column_name, reason) "
        "VALUES ($1, $2::jsonb, $3::jsonb, $4, $5) ON CONFLICT (tbl, key) DO UPDATE SET "
        "raw = excluded.raw, column_name = excluded.column_name, reason = excluded.reason, "
        "last_seen = now()",
        [(table, json.dumps(k), json.dumps(r), c, why) for k, r, c, why in items],
    )


async def quarantine_clear(conn: asyncpg.Connection, table: str, keys: list[list[Any]]) -> int:
    """Forget quarantined rows whose keys were just applied (fixed or deleted in SQLite)."""
    if not keys:
        return 0
    result = await conn.execute(
        f"DELETE FROM {SCHEMA}.quarantine WHERE tbl = $1 AND key = ANY($2::jsonb[])",
        table, [json.dumps(k) for k in keys],
    )
    return int(result.split()[-1])


async def quarantine_clear_table(conn: asyncpg.Connection, table: str) -> None:
    await conn.execute(f"DELETE FROM {SCHEMA}.quarantine WHERE tbl = $1", table)


async def mark_dirty(conn: asyncpg.Connection, table: str, keys: list[list[Any]], seq: int) -> None:
    """Keys changed since the last full verification (so cutover can verify only those)."""
    if not keys:
        return
    await conn.execute(
        f"INSERT INTO {SCHEMA}.dirty (tbl, key, seq) SELECT $1, k, $3 FROM unnest($2::jsonb[]) k "
        "ON CONFLICT (tbl, key) DO UPDATE SET seq = excluded.seq",
        table, [json.dumps(k) for k in keys], seq,
    )


# -- snapshot units ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitProgress:
    after: int | None  # the last rowid committed
    rows: int
    done: bool


async def register_units(conn: asyncpg.Connection, table: str,
                         units: list[tuple[int, int | None, int | None]]) -> None:
    """A table's units (id, lo, hi), replacing any from an earlier plan of it."""
    await conn.execute(f"DELETE FROM {SCHEMA}.units WHERE tbl = $1", table)
    await conn.executemany(
        f"INSERT INTO {SCHEMA}.units (tbl, unit, lo, hi) VALUES ($1, $2, $3, $4)",
        [(table, *u) for u in units],
    )


async def pending_unit_rows(conn: asyncpg.Connection, table: str
                            ) -> list[tuple[int, int | None, int | None]]:
    """(id, lo, hi) of the table's units not yet done."""
    rows = await conn.fetch(f"SELECT unit, lo, hi FROM {SCHEMA}.units WHERE tbl = $1 AND NOT done "
                            "ORDER BY unit", table)
    return [(r[0], r[1], r[2]) for r in rows]


async def unit_progress(conn: asyncpg.Connection, table: str, unit: int) -> UnitProgress | None:
    row = await conn.fetchrow(f"SELECT after, rows, done FROM {SCHEMA}.units WHERE tbl = $1 "
                              "AND unit = $2", table, unit)
    return UnitProgress(row["after"], row["rows"], row["done"]) if row else None


async def unit_chunk(conn: asyncpg.Connection, table: str, unit: int, after: int | None,
                     rows: int, quarantined: int) -> None:
    """A committed chunk of a unit: its resume point, rows so far, rows quarantined."""
    await conn.execute(
        f"UPDATE {SCHEMA}.units SET after = $3, rows = $4, quarantined = quarantined + $5 "
        "WHERE tbl = $1 AND unit = $2", table, unit, after, rows, quarantined)


async def unit_done(conn: asyncpg.Connection, table: str, unit: int) -> None:
    await conn.execute(f"UPDATE {SCHEMA}.units SET done = true WHERE tbl = $1 AND unit = $2",
                       table, unit)


async def units_total(conn: asyncpg.Connection, table: str) -> tuple[int, int]:
    """(rows, quarantined) of all the table's units."""
    row = await conn.fetchrow(f"SELECT coalesce(sum(rows), 0), coalesce(sum(quarantined), 0) "
                              f"FROM {SCHEMA}.units WHERE tbl = $1", table)
    return int(row[0]), int(row[1])


async def units_rows(conn: asyncpg.Connection) -> dict[str, int]:
    """Rows committed so far, per table being copied."""
    return {r[0]: int(r[1] or 0)
            for r in await conn.fetch(f"SELECT tbl, sum(rows) FROM {SCHEMA}.units GROUP BY tbl")}


async def dirty_keys(conn: asyncpg.Connection) -> dict[str, list[list[Any]]]:
    """Keys changed since the last full verification, per table, as stored (typed JSON)."""
    out: dict[str, list[list[Any]]] = {}
    for r in await conn.fetch(f"SELECT tbl, key FROM {SCHEMA}.dirty"):
        out.setdefault(r[0], []).append(json.loads(r[1]))
    return out


async def forget_dirty(conn: asyncpg.Connection, through: int) -> None:
    """A clean full verification covered every change up to ``through``."""
    await conn.execute(f"DELETE FROM {SCHEMA}.dirty WHERE seq <= $1", through)


# The reason of a row the fallback window's reverse apply wrote to SQLite in a form that does not
# convert back exactly (``reverse``): unlike the others, that row is on both sides.
REVERSE_REASON = "reverse: "


async def quarantine_keys(conn: asyncpg.Connection, table: str, *, reverse: bool = False
                          ) -> set[str]:
    """The quarantined keys of a table, each as canonical JSON text (``reverse``: only those the
    reverse apply wrote, present on both sides)."""
    rows = await conn.fetch(f"SELECT key FROM {SCHEMA}.quarantine WHERE tbl = $1"
                            + (" AND starts_with(reason, $2)" if reverse else ""),
                            *((table, REVERSE_REASON) if reverse else (table,)))
    return {json.dumps(json.loads(r[0])) for r in rows}


async def quarantine_rows(conn: asyncpg.Connection, table: str) -> int:
    """Quarantined rows of a table that are absent from it in Postgres (not the rows the
    fallback window wrote back in a wider form, which are on both sides)."""
    return int(await conn.fetchval(
        f"SELECT count(*) FROM {SCHEMA}.quarantine WHERE tbl = $1 "
        "AND NOT starts_with(reason, $2)", table, REVERSE_REASON))


async def quarantine_list(conn: asyncpg.Connection, limit: int | None = 500
                          ) -> list[dict[str, Any]]:
    """The quarantined rows, oldest first per table (table, key, column, reason, since, the raw
    row as typed JSON, and ``reverse`` as in ``quarantine_summary``); ``limit`` None: all."""
    rows = await conn.fetch(f"SELECT tbl, key, column_name, reason, first_seen, raw FROM "
                            f"{SCHEMA}.quarantine ORDER BY tbl, first_seen, key LIMIT $1", limit)
    return [{"table": r[0], "key": json.loads(r[1]), "column": r[2], "reason": r[3],
             "since": r[4], "raw": json.loads(r[5]), "reverse": r[3].startswith(REVERSE_REASON)}
            for r in rows]


async def quarantine_summary(conn: asyncpg.Connection, *, absent_only: bool = False
                             ) -> list[dict[str, Any]]:
    """Quarantined rows per table, column and kind: how many, and the reason of the oldest one;
    ``reverse``: rows the fallback window wrote back in a wider form, which are on both sides
    (``absent_only``: without those)."""
    if not await exists(conn):
        return []
    rows = await conn.fetch(
        f"SELECT tbl, column_name, count(*), (array_agg(reason ORDER BY first_seen))[1], "
        f"starts_with(reason, $1) AS reverse FROM {SCHEMA}.quarantine "
        + ("WHERE NOT starts_with(reason, $1) " if absent_only else "")
        + "GROUP BY tbl, column_name, reverse ORDER BY tbl, column_name, reverse", REVERSE_REASON)
    return [{"table": r[0], "column": r[1], "rows": r[2], "reason": r[3], "reverse": r[4]}
            for r in rows]


async def events_of(conn: asyncpg.Connection, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """Recorded events of ``kinds``, oldest first (at, kind, table, detail)."""
    rows = await conn.fetch(f"SELECT at, kind, tbl, detail FROM {SCHEMA}.events "
                            "WHERE kind = ANY($1::text[]) ORDER BY at", list(kinds))
    return [{"at": r[0], "kind": r[1], "table": r[2], "detail": json.loads(r[3])} for r in rows]
