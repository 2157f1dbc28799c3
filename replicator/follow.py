"""Following schema drift in SQLite: new tables, added columns, rebuilt or altered tables,
index changes, dropped tables (when configured), each carried into Postgres."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

from . import capture, ddl, drift, log, metrics, snapshot, state
from .apply import TableTarget
from .census import quick_census
from .plans import TablePlan
from .quoting import qualified
from .schema import plan_table, text_census_columns
from .source import Table, inspect

_log = log.get("follow")
APPLY_LOCK = "hashtext('_replicator.apply')"


class FollowDrift:
    """Mixed into Replicator: what happens when PRAGMA schema_version moves."""

    async def handle_drift(self) -> None:
        assert self.writer is not None
        schema = await asyncio.to_thread(inspect, self.writer)
        self.fenced = any(n.startswith("_replicator_f") for n in schema.triggers)
        capture.check_log(self.writer)
        known = {n: (t.plan, self.sql[n]) for n, t in self.targets.items()}
        wanted = {t.name for t in self.wanted(schema.tables)}
        found = await asyncio.to_thread(
            drift.detect, self.writer, schema, known, wanted, follow_drops=self.cfg.follow_drops
        )
        if self.schema_version is not None and not found.empty:
            _log.info(
                "schema_drift", new=found.new, add_columns=found.add_columns,
                recopy=found.recopy, indexes=found.indexes,
            )
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
            await self.add_columns(schema.tables[name], cols)
            metrics.SCHEMA_CHANGES.labels("add_column").inc()
        for name in found.indexes:
            await self.refresh_indexes(schema.tables[name])
            metrics.SCHEMA_CHANGES.labels("indexes").inc()
        self.rowid_check |= set(found.rowid_check)
        self.schema_version = schema.schema_version
        assert self.pg is not None
        await self.pg.execute(
            f"UPDATE {state.SCHEMA}.state SET schema_version = $1", schema.schema_version
        )

    async def drop_table(self, name: str) -> None:
        """DROP TABLE in SQLite, followed (replication.follow_drops = true): the same in Postgres."""
        assert self.pg is not None
        plan = self.targets[name].plan
        async with self.pg.transaction():
            await self.pg.execute(f"SELECT pg_advisory_xact_lock({APPLY_LOCK})")
            await self.pg.execute(f"DROP TABLE IF EXISTS {qualified(self.schema, plan.pg_name)} CASCADE")
            await state.drop_table_row(self.pg, name)
            await state.quarantine_clear_table(self.pg, name)
            await state.event(self.pg, "drop_table", name)
        del self.targets[name]
        self.sql.pop(name, None)
        _log.info("table_dropped", table=name)

    async def resnapshot(self, name: str, reason: str) -> None:
        """Capture (again) and copy one table from a consistent read of the live file."""
        assert self.pg is not None and self.writer is not None
        table = (await asyncio.to_thread(inspect, self.writer)).tables[name]
        await asyncio.to_thread(capture.install, self.live, [table])
        async with self.pg.transaction():
            await self.pg.execute(f"SELECT pg_advisory_xact_lock({APPLY_LOCK})")
            frozen = await asyncio.to_thread(snapshot.open_frozen_brief, self.cfg.source,
                                             self.cfg.state_path, self.cfg.busy_timeout_ms)
            try:
                live = (await asyncio.to_thread(inspect, frozen.conn)).tables[name]
                cen = await asyncio.to_thread(
                    quick_census, frozen.conn, live, text_columns=text_census_columns(live))
                plan = plan_table(live, cen, self.cfg)
                plan = await snapshot.prepare_table(
                    self.pg, plan, self.schema, live.sql, owned=await self._owned()
                )
                result = await snapshot.TableCopier(
                    self.pg, frozen, plan, self.schema, census=cen
                ).run(per_chunk_txn=False)
                plan = await snapshot.finish_table(
                    self.pg, plan, self.schema, status=state.STREAMING, mark=frozen.mark,
                    seconds=result.seconds, rows=result.rows,
                )
                await state.event(self.pg, "resnapshot", name, reason=reason, rows=result.rows)
            finally:
                frozen.close()
        self.targets[name] = TableTarget(plan, self.schema, snapshot_seq=frozen.mark)
        self.sql[name] = live.sql
        self.quarantined[name] = True  # the copy may have quarantined rows
        metrics.RESNAPSHOTS.labels(name).inc()
        _log.info("table_resnapshot", table=name, reason=reason, **snapshot.describe(result))

    async def add_columns(self, table: Table, names: list[str]) -> None:
        """ALTER TABLE ... ADD COLUMN: add them in Postgres, with the value old rows read back."""
        assert self.pg is not None and self.writer is not None
        old = self.targets[table.name].plan
        frozen = await asyncio.to_thread(snapshot.open_frozen_brief, self.cfg.source,
                                         self.cfg.state_path, self.cfg.busy_timeout_ms)
        try:
            cen = await asyncio.to_thread(
                quick_census, frozen.conn, table, text_columns=text_census_columns(table))
            defaults = {
                n: frozen.conn.execute(f"SELECT {table.column(n).default or 'NULL'}").fetchone()[0]
                for n in names
            }
        finally:
            frozen.close()
        fresh = plan_table(table, cen, self.cfg)
        new_cols = [fresh.column(n) for n in names]
        async with self.pg.transaction():
            await self.pg.execute(f"SELECT pg_advisory_xact_lock({APPLY_LOCK})")
            for i, col in enumerate(new_cols):
                new_cols[i] = await ddl.add_column(self.pg, old, col, defaults[col.name], self.schema)
            plan = replace(old, columns=old.columns + tuple(new_cols))
            await self._save_plan(plan, table.sql)
            await state.event(self.pg, "add_columns", table.name, columns=names)
        self.targets[table.name] = replace(self.targets[table.name], plan=plan)
        self.sql[table.name] = table.sql
        _log.info("columns_added", table=table.name, columns=names)

    async def refresh_indexes(self, table: Table) -> None:
        """CREATE/DROP INDEX in SQLite: the same in Postgres (and the REPLACE guards follow)."""
        assert self.pg is not None
        await asyncio.to_thread(capture.install, self.live, [table])
        old = self.targets[table.name].plan
        fresh = plan_table(table, None, self.cfg)
        async with self.pg.transaction():
            await self.pg.execute(f"SELECT pg_advisory_xact_lock({APPLY_LOCK})")
            plan = await ddl.sync_indexes(self.pg, old, fresh.indexes, self.schema)
            await self._save_plan(plan, table.sql)
        self.targets[table.name] = replace(self.targets[table.name], plan=plan)
        _log.info("indexes_refreshed", table=table.name)

    async def _save_plan(self, plan: TablePlan, sql: str) -> None:

        assert self.pg is not None
        await self.pg.execute(
            f"UPDATE {state.SCHEMA}.tables SET plan = $2::jsonb, sqlite_sql = $3, "
            "updated_at = now() WHERE name = $1",
            plan.name, json.dumps(plan.to_json()), sql,
        )
