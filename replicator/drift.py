"""Schema drift: compare what is replicated with what the SQLite file holds now, and follow.

Runs whenever ``PRAGMA schema_version`` moves (any DDL, and VACUUM). ``detect`` lists the
actions; ``DriftFollower`` carries them into Postgres: capture and copy a new table, add columns
(with the value old rows read back), copy a rebuilt or altered table again, refresh indexes,
check rowid-keyed tables (VACUUM may have renumbered their rowids: their rowid sets are compared
and the table re-copied only when they differ), drop a dropped table when configured. What
cannot be followed raises ``DriftError`` naming the table.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass, field, replace

from . import capture, ddl, existing, log, metrics, state
from .apply import TableTarget
from .capture import trigger_names
from .census import TableCensus, quick_census
from .errors import DriftError, SchemaInMotion
from .plans import TablePlan
from .quoting import qualified
from .schema import plan_table, text_census_columns
from .session import Session
from .snapshot.copier import TableCopier, check_complete, describe, finish_table, prepare_table
from .snapshot.frozen import open_frozen_brief
from .source import KEY_ROWID, Schema, Table, inspect, normalize_sql

_log = log.get("drift")


@dataclass
class Drift:
    new: list[str] = field(default_factory=list)
    add_columns: dict[str, list[str]] = field(default_factory=dict)  # table -> new column names
    recopy: dict[str, str] = field(default_factory=dict)  # table -> reason
    indexes: list[str] = field(default_factory=list)  # tables whose index set changed
    dropped: list[str] = field(default_factory=list)
    rowid_check: list[str] = field(default_factory=list)  # rowid-keyed: compare rowid sets

    @property
    def empty(self) -> bool:
        return not (self.new or self.add_columns or self.recopy or self.indexes or self.dropped)


def detect(
    conn: sqlite3.Connection,
    schema: Schema,
    known: dict[str, tuple[TablePlan, str]],
    wanted: set[str],
    *,
    follow_drops: bool = False,
) -> Drift:
    """``known`` maps table name -> (plan, the CREATE TABLE text it was planned from)."""
    drift = Drift()
    for name, (plan, sql) in known.items():
        table = schema.tables.get(name)
        if table is None:
            renamed = _renamed_to(conn, name)
            if renamed:
                raise DriftError(
                    f"table {name!r} was renamed to {renamed!r} in SQLite; renames are not "
                    "followed. Rename it back, or uninstall and start the migration again"
                )
            if not follow_drops:
                raise DriftError(
                    f"table {name!r} was dropped in SQLite; set replication.follow_drops = true "
                    "to drop it in Postgres too, or restore the table"
                )
            drift.dropped.append(name)
            continue
        if not set(trigger_names(name)) <= schema.triggers:
            drift.recopy[name] = "capture triggers disappeared (table rebuilt)"
        elif normalize_sql(table.sql) != normalize_sql(sql):
            added = _added_columns(plan, table)
            if added is None:
                drift.recopy[name] = "table definition changed"
            else:
                drift.add_columns[name] = added
        elif _index_names(plan) != _sqlite_index_names(table):
            drift.indexes.append(name)
        if name not in drift.recopy and table.key_kind == KEY_ROWID:
            drift.rowid_check.append(name)
    for name in schema.tables:
        if name not in known and name in wanted:
            drift.new.append(name)
    return drift


def _renamed_to(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute(
        "SELECT tbl_name FROM sqlite_schema WHERE type = 'trigger' AND name = ?",
        (trigger_names(name)[0],),
    ).fetchone()
    return row[0] if row and row[0] != name else None


def _added_columns(plan: TablePlan, table: Table) -> list[str] | None:
    """New column names if ``table`` is ``plan`` plus appended columns (ALTER TABLE ADD COLUMN)."""
    old = [(c.name, c.declared) for c in plan.columns]
    new = [(c.name, c.declared) for c in table.columns]
    if len(new) <= len(old) or new[: len(old)] != old:
        return None
    if tuple(table.key_columns) != plan.key_columns or table.key_kind != plan.key_kind:
        return None
    return [n for n, _d in new[len(old) :]]


def _same_type(a: TablePlan, b: TablePlan, column: str) -> bool:
    x, y = a.column(column), b.column(column)
    return (x.pg_type, x.conv) == (y.pg_type, y.conv)


def _index_names(plan: TablePlan) -> set[str]:
    return {i.sqlite_name for i in plan.indexes}


def _sqlite_index_names(table: Table) -> set[str]:
    return {i.name for i in table.indexes}


class DriftFollower:
    """What happens when ``PRAGMA schema_version`` moves, carried into Postgres."""

    def __init__(self, session: Session):
        self.session = session
        self.fenced = False  # the cutover fence is in the file
        self.rowid_check: set[str] = set()  # rowid-keyed tables to compare after the next batch
        # (table, column, converter) a re-plan kept: no type fits its values better; not retried
        self.kept: set[tuple[str, str, str]] = set()

    async def follow(self) -> None:
        """Look at the schema again and follow every change found."""
        session = self.session
        schema = await asyncio.to_thread(inspect, session.writer)
        self.fenced = any(n.startswith("_replicator_f") for n in schema.triggers)
        capture.check_log(session.writer)
        known = {n: (t.plan, session.sql[n]) for n, t in session.targets.items()}
        wanted = {n for n in schema.tables if session.cfg.wants_table(n)}
        found = await asyncio.to_thread(detect, session.writer, schema, known, wanted,
                                        follow_drops=session.cfg.follow_drops)
        if session.schema_version is not None and not found.empty:
            _log.info("schema_drift", new=found.new, add_columns=found.add_columns,
                      recopy=found.recopy, indexes=found.indexes)
        for name in found.dropped:
            await self.drop_table(name)
            metrics.SCHEMA_CHANGES.labels("dropped").inc()
        for name in found.new:
            await self.resnapshot(name, "new table")
            metrics.SCHEMA_CHANGES.labels("new_table").inc()
        for name, reason in found.recopy.items():
            await self.resnapshot(name, reason)
            metrics.SCHEMA_CHANGES.labels("recopy").inc()
        for name, cols in found.add_columns.items():
            if session.targets[name].plan.existing:  # the ORM added it to the target: copy again
                await self.resnapshot(name, f"columns added: {', '.join(cols)}")
            else:
                await self.add_columns(schema.tables[name], cols)
            metrics.SCHEMA_CHANGES.labels("add_column").inc()
        for name in found.indexes:
            await self.refresh_indexes(schema.tables[name])
            metrics.SCHEMA_CHANGES.labels("indexes").inc()
        self.rowid_check |= set(found.rowid_check)
        session.schema_version = schema.schema_version
        await state.set_schema_version(session.conn, schema.schema_version)

    async def drop_table(self, name: str) -> None:
        """DROP TABLE in SQLite, followed (replication.follow_drops = true): the same in Postgres."""
        session = self.session
        conn = session.conn
        plan = session.targets[name].plan
        async with conn.transaction():
            await state.apply_lock(conn)
            if not plan.existing:  # a table the ORM made stays: the ORM's migration drops it
                await conn.execute(f"DROP TABLE IF EXISTS "
                                   f"{qualified(session.schema, plan.pg_name)} CASCADE")
            await state.drop_table_row(conn, name)
            await state.quarantine_clear_table(conn, name)
            await state.event(conn, "drop_table", name)
        del session.targets[name]
        session.sql.pop(name, None)
        _log.info("table_dropped", table=name)

    async def replan(self, name: str, column: str, why: str) -> str | None:
        """A streamed value did not fit the type the census chose for ``column``: plan the table
        again with the new evidence and copy it again. Returns the new type, or None when the
        evidence gives the same type (the value then stays in quarantine, named)."""
        old = self.session.targets[name].plan.column(column)
        if (name, column, old.conv) in self.kept:
            return None
        new = await self.resnapshot(name, f"re-plan {column}: {why}", unless_same=column)
        if new is None:
            self.kept.add((name, column, old.conv))
            _log.warning("replan_kept_type", table=name, column=column, type=old.pg_type,
                         value=why, action="no type fits better; the row stays in quarantine")
            return None
        new_type = new.column(column).pg_type if new.has_column(column) else "(gone)"
        metrics.REPLANS.labels(name).inc()
        await state.event(self.session.conn, "table_replanned", name, column=column,
                          old=old.pg_type, new=new_type, value=why)
        _log.warning("table_replanned", table=name, column=column, old_type=old.pg_type,
                     new_type=new_type, value=why)
        return new_type

    async def resnapshot(self, name: str, reason: str, *, unless_same: str | None = None
                         ) -> TablePlan | None:
        """Capture (again) and copy one table from a consistent read of the live file. With
        ``unless_same``, nothing is copied (None) when that column's plan would not change."""
        session = self.session
        conn, cfg = session.conn, session.cfg
        table = (await asyncio.to_thread(inspect, session.writer)).tables.get(name)
        if table is None:
            raise SchemaInMotion(f"table {name!r} is gone again (a migration in progress)")
        try:
            await asyncio.to_thread(capture.install, session.live, [table])
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise
            raise SchemaInMotion(f"table {name!r} is gone again ({exc})") from None
        async with conn.transaction():
            await state.apply_lock(conn)
            frozen = await asyncio.to_thread(open_frozen_brief, cfg.source, cfg.state_path,
                                             cfg.busy_timeout_ms)
            try:
                live = (await asyncio.to_thread(inspect, frozen.conn)).tables.get(name)
                if live is None:
                    raise SchemaInMotion(f"table {name!r} is gone again (a migration in progress)")
                cen = await asyncio.to_thread(
                    quick_census, frozen.conn, live, text_columns=text_census_columns(live))
                plan = await self._plan(live, cen)
                if plan.existing:
                    await existing.hold_foreign_keys(conn, session.schema, {plan.pg_name})
                if unless_same is not None and plan.has_column(unless_same) and \
                        _same_type(plan, session.targets[name].plan, unless_same):
                    return None
                plan = await prepare_table(conn, plan, session.schema, live.sql,
                                           owned=await state.owned_tables(conn))
                result = await TableCopier(conn, frozen, plan, session.schema,
                                           census=cen).run(per_chunk_txn=False)
                await check_complete(conn, plan, session.schema, cen.rows)
                plan = await finish_table(conn, plan, session.schema, status=state.STREAMING,
                                          mark=frozen.mark, seconds=result.seconds,
                                          rows=result.rows)
                await state.event(conn, "resnapshot", name, reason=reason, rows=result.rows)
            finally:
                frozen.close()
        session.targets[name] = TableTarget(plan, session.schema, snapshot_seq=frozen.mark)
        session.sql[name] = live.sql
        session.quarantined[name] = True  # the copy may have quarantined rows
        metrics.RESNAPSHOTS.labels(name).inc()
        _log.info("table_resnapshot", table=name, reason=reason, **describe(result))
        return plan

    async def _plan(self, table: Table, cen: TableCensus | None) -> TablePlan:
        """The table's plan now; against an existing target schema, its catalog read again (a
        table or column the target lacks waits for the user's migration: AwaitingTarget)."""
        session = self.session
        catalog = None
        if session.cfg.schema_mode == "existing":
            catalog = await existing.read_catalog(session.conn, session.schema)
        return existing.plan_for(table, cen, session.cfg, catalog, streaming=True)

    async def add_columns(self, table: Table, names: list[str]) -> None:
        """ALTER TABLE ... ADD COLUMN: add them in Postgres, with the value old rows read back."""
        session = self.session
        conn, cfg = session.conn, session.cfg
        old = session.targets[table.name].plan
        frozen = await asyncio.to_thread(open_frozen_brief, cfg.source, cfg.state_path,
                                         cfg.busy_timeout_ms)
        try:
            cen = await asyncio.to_thread(
                quick_census, frozen.conn, table, text_columns=text_census_columns(table))
            defaults = {
                n: frozen.conn.execute(f"SELECT {table.column(n).default or 'NULL'}").fetchone()[0]
                for n in names
            }
        finally:
            frozen.close()
        fresh = plan_table(table, cen, cfg)
        new_cols = [fresh.column(n) for n in names]
        async with conn.transaction():
            await state.apply_lock(conn)
            for i, col in enumerate(new_cols):
                new_cols[i] = await ddl.add_column(conn, old, col, defaults[col.name],
                                                   session.schema)
            plan = replace(old, columns=old.columns + tuple(new_cols))
            await state.save_plan(conn, plan, table.sql)
            await state.event(conn, "add_columns", table.name, columns=names)
        session.targets[table.name] = replace(session.targets[table.name], plan=plan)
        session.sql[table.name] = table.sql
        _log.info("columns_added", table=table.name, columns=names)

    async def refresh_indexes(self, table: Table) -> None:
        """CREATE/DROP INDEX in SQLite: the same in Postgres (and the REPLACE guards follow)."""
        session = self.session
        conn = session.conn
        await asyncio.to_thread(capture.install, session.live, [table])
        old = session.targets[table.name].plan
        fresh = await self._plan(table, None)
        async with conn.transaction():
            await state.apply_lock(conn)
            if old.existing:  # the ORM owns the target's indexes; the plan follows SQLite's
                plan = replace(old, indexes=fresh.indexes)
            else:
                plan = await ddl.sync_indexes(conn, old, fresh.indexes, session.schema)
            await state.save_plan(conn, plan, table.sql)
        session.targets[table.name] = replace(session.targets[table.name], plan=plan)
        _log.info("indexes_refreshed", table=table.name)
