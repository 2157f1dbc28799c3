"""The initial copy: a frozen, consistent read of the file, a census and plan per table, the
tables created in the target, and their rows copied in parallel units (see parallel.py); then,
for ``copy`` and at cutover, the objects that come last (constraints, views, triggers)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

from . import ddl, log, metrics, objects, parallel, snapshot, state
from .census import quick_census
from .config import Config
from .plans import TablePlan
from .quoting import qualified
from .schema import plan_table, text_census_columns
from .source import Table, inspect

_log = log.get("initial")
APPLY_LOCK = "hashtext('_replicator.apply')"


class InitialCopy:
    """Mixed into Replicator: the snapshot phase and the final phase."""

    async def snapshot_phase(self) -> None:
        """Copy every table not yet copied, resumably; then set the cursor and start streaming."""
        assert self.pg is not None
        st = await state.load(self.pg)
        assert st is not None
        done = {n for n, t in (await state.tables(self.pg)).items() if t.status != state.COPYING
                and t.status != state.PENDING}
        if st.info.get("snapshot_done"):
            await self._load_targets()
            ours = self.cfg.state_path / "snapshot.sqlite"
            if st.info.get("snapshot_file") == str(ours):  # recorded done, cut before the cleanup
                ours.unlink(missing_ok=True)
            return
        await state.set_state(self.pg, "snapshot")
        metrics.set_state("snapshot")
        frozen = await self._frozen(st)
        try:
            fschema = await asyncio.to_thread(inspect, frozen.conn)
            version = fschema.schema_version
            tables = [t for t in self.wanted(fschema.tables) if t.name not in done]
            metrics.SNAPSHOT_TABLES_REMAINING.set(len(tables))
            started = time.monotonic()
            items = await self._prepare_all(frozen, tables)
            await parallel.Coordinator(self, frozen, self.cfg.snapshot_workers).run(items)
            await state.merge_info(self.pg, snapshot_seconds=round(time.monotonic() - started, 3))
        finally:
            frozen.close()
        marks = [t.snapshot_seq or 0 for t in (await state.tables(self.pg)).values()]
        cursor = min(marks) if marks else frozen.mark
        final = "done" if self.mode == "copy" else "streaming"
        await self._bounded(self._record_snapshot_done(final, cursor, version), "recording the snapshot")
        if self.mode == "copy":
            await self.final_phase()
        if frozen.path is not None:
            frozen.path.unlink(missing_ok=True)

    async def _record_snapshot_done(self, final: str, cursor: int, version: int) -> None:
        assert self.pg is not None
        async with self.pg.transaction():
            await state.set_state(self.pg, final, cursor=cursor, schema_version=version)
            await state.merge_info(self.pg, snapshot_done=True, snapshot_finished_at=time.time())
        await self._load_targets()

    async def _prepare_all(self, frozen: snapshot.Frozen, tables: list[Table]) -> list:
        """Census (in threads: SQLite works outside the GIL), plan, create, split into units."""
        t0 = time.monotonic()
        censuses = await asyncio.gather(*(self._census(frozen, t) for t in tables))
        _log.info("census_done", tables=len(tables), rows=sum(c.rows for c in censuses),
                  seconds=round(time.monotonic() - t0, 3))
        known = await state.tables(self.pg)  # type: ignore[arg-type]
        items = []
        for table, cen in zip(tables, censuses, strict=True):
            self.census_rows[table.name] = cen.rows
            k = known.get(table.name)
            if k is not None and k.status == state.COPYING and frozen.path is not None \
                    and k.snapshot_seq == frozen.mark and _same_mapping(k.plan, table, cen, self.cfg):
                _log.info("table_resume", table=table.name, rows_done=await self._rows_done(table.name))
                items.append((k.plan, cen))
                continue
            items.append((await self._create(frozen, table, cen), cen))
        return items

    async def _census(self, frozen: snapshot.Frozen, table: Table):
        if frozen.path is None:  # one read transaction: one connection, one census at a time
            return await asyncio.to_thread(quick_census, frozen.conn, table,
                                           text_columns=text_census_columns(table))

        def run():
            own = snapshot.open_frozen_copy(frozen.path)
            try:
                return quick_census(own.conn, table, text_columns=text_census_columns(table))
            finally:
                own.close()

        return await asyncio.to_thread(run)

    async def _rows_done(self, name: str) -> int:
        assert self.pg is not None
        return int(await self.pg.fetchval(
            f"SELECT coalesce(sum(rows), 0) FROM {state.SCHEMA}.units WHERE tbl = $1", name))

    async def _create(self, frozen: snapshot.Frozen, table: Table, cen) -> TablePlan:
        assert self.pg is not None
        plan = plan_table(table, cen, self.cfg)
        lo, hi = await asyncio.to_thread(parallel.rowid_bounds, frozen, plan)
        units = parallel.split(table.name, cen.rows, lo, hi, self.cfg.snapshot_workers)
        async with self.pg.transaction():
            plan = await snapshot.prepare_table(
                self.pg, plan, self.schema, table.sql, owned=await self._owned()
            )
            await state.update_table(self.pg, table.name, snapshot_seq=frozen.mark)
            await parallel.register_units(self.pg, units)
        return plan

    async def _frozen(self, st: state.State) -> snapshot.Frozen:
        if self.cfg.snapshot_method == "direct":
            return snapshot.open_frozen_direct(self.cfg.source, self.cfg.busy_timeout_ms)
        path = self.cfg.state_path / "snapshot.sqlite"
        recorded = st.info.get("snapshot_mark")
        if path.exists() and recorded is not None:
            frozen = snapshot.open_frozen_copy(path)
            if frozen.mark == recorded and st.info.get("snapshot_file") == str(path):
                _log.info("snapshot_resume", copy=str(path), mark=frozen.mark)
                return frozen
            frozen.close()
        t0 = time.monotonic()
        await asyncio.to_thread(snapshot.take_copy, self.cfg.source, path)
        frozen = snapshot.open_frozen_copy(path)
        _log.info("snapshot_copy_taken", mark=frozen.mark, seconds=round(time.monotonic() - t0, 3))
        assert self.pg is not None
        await state.merge_info(self.pg, snapshot_file=str(path), snapshot_mark=frozen.mark)
        return frozen

    async def final_phase(self) -> list[dict[str, Any]]:
        """Constraints, views, app triggers, sequences: what cutover (or the end of ``copy``)
        adds once no more rows will be replicated. Returns what happened to each object."""
        assert self.pg is not None and self.writer is not None
        schema = await asyncio.to_thread(inspect, self.writer)
        views = objects.plan_views(schema, self.cfg)
        sequences = dict(self.writer.execute(
            "SELECT name, seq FROM sqlite_sequence").fetchall()) if _has_sequence(self.writer) else {}
        plans = {n: t.plan for n, t in sorted(self.targets.items())}
        async with self.pg.transaction():
            await self.pg.execute(f"SELECT pg_advisory_xact_lock({APPLY_LOCK})")
            results = await ddl.final_objects(self.pg, plans, views, self.schema, sequences)
        results = [r for r in results if r["status"] != "added"]
        results += await ddl.validate_objects(self.pg, plans, self.schema)
        await state.merge_info(self.pg, final_objects=results)
        for plan in plans.values():
            await self.pg.execute(f"ANALYZE {qualified(self.schema, plan.pg_name)}")
        failed = [r for r in results if r["status"] not in ("validated", "created", "enabled", "set")]
        _log.info("final_objects", done=len(results) - len(failed), attention=len(failed))
        return results

    async def _owned(self) -> set[str]:
        """SQLite names of tables this replication created, plus the Postgres names of those a
        previous run created (either may be replaced; nothing else in the target may)."""
        assert self.pg is not None
        st = await state.load(self.pg)
        previous = set(st.info.get("previously_owned", [])) if st else set()
        return set(await state.tables(self.pg)) | previous


def _same_mapping(stored: TablePlan, table: Table, cen, cfg: Config) -> bool:
    """A half-copied table resumes only if the configuration still maps it the same way (an
    override added after a failure must take effect)."""
    fresh = plan_table(table, cen, cfg)
    shape = [(c.name, c.pg_type, c.conv, c.policy) for c in fresh.columns]
    return shape == [(c.name, c.pg_type, c.conv, c.policy) for c in stored.columns]


def _has_sequence(conn: sqlite3.Connection) -> bool:
    return conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'sqlite_sequence'"
    ).fetchone() is not None
