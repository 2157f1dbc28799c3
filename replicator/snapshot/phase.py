"""The snapshot phase of a run: a frozen, consistent read of the file, a census and plan per
table, the tables created in the target, their rows copied in units (``units``), and the cursor
recorded where the frozen read stood; for ``copy``, then the objects that come last
(constraints, views, triggers)."""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from typing import Any

from .. import ddl, existing, log, metrics, state
from ..census import TableCensus, quick_census, sampled_census
from ..objects import final_inputs
from ..plans import TablePlan
from ..schema import plan_table, text_census_columns
from ..session import Session
from ..source import Table, inspect
from .copier import SampleBroken, Unit, prepare_table
from .frozen import Frozen, file_size, open_frozen_copy, open_frozen_direct, take_copy
from .units import Coordinator, rowid_bounds, split, warm_pool

_log = log.get("snapshot")


class SnapshotPhase:
    """Copies every table not yet copied, resumably; then sets the cursor."""

    def __init__(self, session: Session):
        self.session = session
        self.census_rows: dict[str, int] = {}
        self.tables: dict[str, Table] = {}
        self.frozen: Frozen | None = None

    async def run(self) -> None:
        session = self.session
        st = await state.load(session.conn)
        assert st is not None
        done = {n for n, t in (await state.tables(session.conn)).items()
                if t.status not in (state.COPYING, state.PENDING)}
        if st.info.get("snapshot_done"):
            await session.reload()
            ours = session.cfg.state_path / "snapshot.sqlite"
            if st.info.get("snapshot_file") == str(ours):  # recorded done, cut before the cleanup
                ours.unlink(missing_ok=True)
            return
        await state.set_state(session.conn, "snapshot")
        session.progress.set_state("snapshot")
        with warm_pool(session, file_size(session.cfg.source)) as pool:
            frozen, version = await self._copy_tables(st, done, pool)
        marks = [t.snapshot_seq or 0 for t in (await state.tables(session.conn)).values()]
        cursor = min(marks) if marks else frozen.mark
        final = "done" if session.mode == "copy" else "streaming"
        await session.bounded(self._record_done(final, cursor, version), "recording the snapshot")
        if session.mode == "copy":
            await self.final_phase()
        if frozen.path is not None:
            frozen.path.unlink(missing_ok=True)

    async def _copy_tables(self, st: state.State, done: set[str],
                           pool: ProcessPoolExecutor | None) -> tuple[Frozen, int]:
        """The frozen read, and every table not yet copied copied from it; returns the frozen
        read (closed) and its schema version."""
        session = self.session
        frozen = await self._frozen(st)
        try:
            fschema = await asyncio.to_thread(inspect, frozen.conn)
            tables = [t for t in fschema.tables.values()
                      if session.cfg.wants_table(t.name) and t.name not in done]
            self.tables, self.frozen = {t.name: t for t in tables}, frozen
            metrics.SNAPSHOT_TABLES_REMAINING.set(len(tables))
            started = time.monotonic()
            items = await self._prepare_all(frozen, tables)
            await Coordinator(session, frozen, self.census_rows, self._replan, pool).run(items)
            await state.merge_info(session.conn,
                                   snapshot_seconds=round(time.monotonic() - started, 3))
        finally:
            frozen.close()
        return frozen, fschema.schema_version

    async def _record_done(self, final: str, cursor: int, version: int) -> None:
        conn = self.session.conn
        async with conn.transaction():
            await state.set_state(conn, final, cursor=cursor, schema_version=version)
            await state.merge_info(conn, snapshot_done=True, snapshot_finished_at=time.time())
        await self.session.reload()

    async def _prepare_all(self, frozen: Frozen, tables: list[Table]
                           ) -> list[tuple[TablePlan, TableCensus | None]]:
        """Census (in threads: SQLite works outside the GIL), plan, create, split into units."""
        t0 = time.monotonic()
        # As many at once as there are workers (a third thread on two cores slows the other
        # two more than it gains), the largest tables first.
        slots = asyncio.Semaphore(self.session.cfg.snapshot_workers)
        by_size = sorted(tables, key=lambda t: -_rowid_span(frozen, t))
        counted = await asyncio.gather(*(self._census(frozen, t, slots) for t in by_size))
        by_name = {t.name: c for t, c in zip(by_size, counted, strict=True)}
        censuses = [by_name[t.name] for t in tables]
        _log.info("census_done", tables=len(tables), rows=sum(c.rows for c in censuses),
                  seconds=round(time.monotonic() - t0, 3))
        known = await state.tables(self.session.conn)
        cfg = self.session.cfg
        fitted: dict[str, TablePlan] = {}
        if cfg.schema_mode == "existing":
            fitted = await self._fit_existing(frozen, tables, censuses)
        items: list[tuple[TablePlan, TableCensus | None]] = []
        for table, cen in zip(tables, censuses, strict=True):
            self.census_rows[table.name] = cen.rows
            k = known.get(table.name)
            fresh = fitted.get(table.name) or plan_table(table, cen, cfg)
            if k is not None and k.status == state.COPYING and frozen.path is not None \
                    and k.snapshot_seq == frozen.mark and _same_mapping(k.plan, fresh):
                _log.info("table_resume", table=table.name,
                          rows_done=(await state.units_total(self.session.conn, table.name))[0])
                items.append((k.plan, cen))
                continue
            items.append((await self._create(frozen, table, fresh, cen.rows), cen))
        return items

    async def _fit_existing(self, frozen: Frozen, tables: list[Table],
                            censuses: list[TableCensus]) -> dict[str, TablePlan]:
        """Existing schema mode: every table fitted to the target's (all misfits named at once),
        the ORM's migration records compared, the target's foreign keys held for the window."""
        conn, cfg = self.session.conn, self.session.cfg
        catalog = await existing.read_catalog(conn, self.session.schema)
        plans = existing.fit_all(tables, {t.name: c for t, c in zip(tables, censuses, strict=True)},
                                 cfg, catalog)
        recorded = await asyncio.to_thread(existing.sqlite_migrations, frozen.conn,
                                           {t.name for t in tables})
        await existing.check_migrations(conn, self.session.schema, cfg, recorded, catalog)
        held = await existing.hold_foreign_keys(conn, self.session.schema,
                                                {p.pg_name for p in plans.values()})
        _log.info("existing_schema", tables=len(plans), foreign_keys_held=held)
        return plans

    async def _census(self, frozen: Frozen, table: Table, slots: asyncio.Semaphore,
                      every_row: bool = False) -> TableCensus:
        """A large table's census is taken of a sample (the copy proves it, see ``_replan``),
        except into an existing schema, whose fit is judged before anything is copied."""
        count = quick_census if every_row or self.session.cfg.schema_mode == "existing" \
            else sampled_census
        if frozen.path is None:  # one read transaction: one connection, one census at a time
            return await asyncio.to_thread(count, frozen.conn, table,
                                           text_columns=text_census_columns(table))
        path = frozen.path

        def run() -> TableCensus:
            own = open_frozen_copy(path)
            try:
                return count(own.conn, table, text_columns=text_census_columns(table))
            finally:
                own.close()

        async with slots:
            t0 = time.monotonic()
            out = await asyncio.to_thread(run)
            _log.debug("census_table", table=table.name, rows=out.rows,
                       sampled=out.sampled or None, seconds=round(time.monotonic() - t0, 3))
            return out

    async def _replan(self, name: str, broken: SampleBroken) -> tuple[TablePlan, TableCensus]:
        """A value the sample did not foresee: the table's census taken of every row, and the
        table re-created and copied again if that census chooses other types; otherwise its
        units go on from their progress, with the plan's notes from every row."""
        session, frozen, table = self.session, self.frozen, self.tables[name]
        assert frozen is not None
        t0 = time.monotonic()
        cen = await self._census(frozen, table, asyncio.Semaphore(1), every_row=True)
        old = (await state.tables(session.conn))[name].plan
        fresh = plan_table(table, cen, session.cfg)
        changed = {c.name: f"{o.pg_type} -> {c.pg_type}"
                   for o, c in zip(old.columns, fresh.columns, strict=True)
                   if (o.pg_type, o.conv) != (c.pg_type, c.conv)}
        again = not _same_mapping(old, fresh)
        if not again:
            plan = replace(old, columns=tuple(
                replace(o, reason=c.reason, exact=c.exact, problems=c.problems, notes=c.notes)
                for o, c in zip(old.columns, fresh.columns, strict=True)))
            await state.update_table(session.conn, name, plan=json.dumps(plan.to_json()))
        else:
            plan = await self._create(frozen, table, fresh, cen.rows)
        metrics.SNAPSHOT_REPLANS.labels(name).inc()
        await state.event(session.conn, "snapshot_replanned", name, column=broken.column,
                          why=broken.why, changed=changed, copied_again=again)
        _log.warning("snapshot_replanned", table=name, column=broken.column, why=broken.why,
                     changed=changed, copied_again=again,
                     census_seconds=round(time.monotonic() - t0, 3))
        return plan, cen

    async def _create(self, frozen: Frozen, table: Table, plan: TablePlan, rows: int
                      ) -> TablePlan:
        session = self.session
        lo, hi = await asyncio.to_thread(rowid_bounds, frozen, plan)
        units: list[Unit] = split(table.name, rows, lo, hi, session.cfg.snapshot_workers)
        async with session.conn.transaction():
            plan = await prepare_table(session.conn, plan, session.schema, table.sql,
                                       owned=await state.owned_tables(session.conn))
            await state.update_table(session.conn, table.name, snapshot_seq=frozen.mark)
            await state.register_units(session.conn, table.name,
                                       [(u.id, u.lo, u.hi) for u in units])
        return plan

    async def _frozen(self, st: state.State) -> Frozen:
        cfg = self.session.cfg
        if cfg.snapshot_method == "direct":
            return open_frozen_direct(cfg.source, cfg.busy_timeout_ms)
        path = cfg.state_path / "snapshot.sqlite"
        recorded = st.info.get("snapshot_mark")
        if path.exists() and recorded is not None:
            frozen = open_frozen_copy(path)
            if frozen.mark == recorded and st.info.get("snapshot_file") == str(path):
                _log.info("snapshot_resume", copy=str(path), mark=frozen.mark)
                return frozen
            frozen.close()
        t0 = time.monotonic()
        await asyncio.to_thread(take_copy, cfg.source, path)
        frozen = open_frozen_copy(path)
        _log.info("snapshot_copy_taken", mark=frozen.mark, seconds=round(time.monotonic() - t0, 3))
        await state.merge_info(self.session.conn, snapshot_file=str(path), snapshot_mark=frozen.mark)
        return frozen

    async def final_phase(self) -> list[dict[str, Any]]:
        """Constraints, views, app triggers, sequences: what the end of ``copy`` adds once no
        more rows will be replicated (cutover does the same inside its freeze). Returns what
        happened to each object."""
        session = self.session
        plans = {n: t.plan for n, t in sorted(session.targets.items())}
        views, sequences = await asyncio.to_thread(final_inputs, session.writer, session.cfg)
        async with session.conn.transaction():
            await state.apply_lock(session.conn)
            results = await existing.final_objects(session.conn, plans, views, session.schema,
                                                   sequences, session.cfg)
        results = [r for r in results if r["status"] != "added"]
        results += await existing.validate_objects(session.conn, plans, session.schema,
                                                  session.cfg)
        await state.merge_info(session.conn, final_objects=results)
        failed = [r for r in results if r["status"] not in ddl.DONE_STATUSES]
        _log.info("final_objects", done=len(results) - len(failed), attention=len(failed))
        return results


def _rowid_span(frozen: Frozen, table: Table) -> int:
    """About how many rows a table holds, from its rowids (0 without rowid)."""
    lo, hi = rowid_bounds(frozen, table)
    return 0 if lo is None or hi is None else hi - lo + 1


def _same_mapping(stored: TablePlan, fresh: TablePlan) -> bool:
    """A half-copied table resumes only if the configuration still maps it the same way (an
    override added after a failure must take effect)."""
    shape = [(c.name, c.pg_type, c.conv, c.policy) for c in fresh.columns]
    return shape == [(c.name, c.pg_type, c.conv, c.policy) for c in stored.columns]
