"""The initial snapshot, in parallel: tables split into rowid ranges ("units") copied by worker
processes (the GIL caps one process at one core), primary keys and indexes built as soon as a
table's units are all done.

Every unit commits its progress with each chunk, so after a crash each resumes where it stopped.
A worker holds a session advisory lock on its unit while it copies, and stops at the next chunk
if its parent is gone: a worker orphaned by ``kill -9`` of the daemon can never copy the same
rows as the restarted daemon's worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg

from .. import log, metrics, state, workers
from ..census import TableCensus
from ..dsn import TargetDSN
from ..plans import TablePlan
from ..session import Session
from ..source import Table
from ..source import rowid_bounds as source_bounds
from ..target import connect
from .copier import Interrupted, SampleBroken, TableCopier, Unit, check_complete, finish_table
from .frozen import Frozen, open_frozen_copy

_log = log.get("units")
UNIT_ROWS = 250_000  # a table is split into units of about this many rows
SEQUENTIAL_BELOW = 200_000  # smaller snapshots are not worth starting processes for
WARM_ABOVE = 64 * 1024 * 1024  # a file this large starts its workers before the census


def ready() -> int:
    """A worker's first task, while the census runs: importing this module is the point."""
    return os.getpid()


@contextlib.contextmanager
def warm_pool(session: Session, source_bytes: int) -> Iterator[ProcessPoolExecutor | None]:
    """The worker processes, started (their imports take about a second) while the file is
    copied and counted, for a file large enough to be copied in processes; else None."""
    cfg = session.cfg
    if cfg.snapshot_workers <= 1 or cfg.snapshot_method != "copy" or session.target.pooled \
            or source_bytes < WARM_ABOVE:
        yield None
        return
    with workers.pool(cfg.snapshot_workers) as pool:
        for _ in range(cfg.snapshot_workers):
            pool.submit(ready)
        yield pool


@dataclass(frozen=True)
class Job:
    """Everything a worker process needs (picklable)."""

    target: TargetDSN
    timeout: float
    tls_verify: bool
    copy_path: str
    plan: dict[str, Any]
    census: TableCensus | None
    schema: str
    unit: Unit
    ppid: int
    stop_file: str
    table_stop: str = ""  # stops the units of this table only (it is being planned again)


@dataclass(frozen=True)
class UnitDone:
    unit: Unit
    rows: int
    quarantined: int
    seconds: float


def split(table: str, rows: int, lo: int | None, hi: int | None, workers: int) -> list[Unit]:
    """Rowid ranges of about UNIT_ROWS rows (uniform in rowid; correct whatever the gaps)."""
    if lo is None or hi is None or rows <= UNIT_ROWS or workers <= 1:
        return [Unit(table, 0, None, None)]
    n = min(max(2, rows // UNIT_ROWS), workers * 4)
    step = (hi - lo + n) // n
    # (lo, hi]: the first unit has no lower bound (lo - 1 may not fit in 64 bits), the last
    # none above.
    bounds: list[int | None] = [None, *(lo - 1 + step * i for i in range(1, n)), None]
    return [Unit(table, i, bounds[i], bounds[i + 1]) for i in range(n)]


# -- the worker side -------------------------------------------------------------------------------


def run_unit(job: Job) -> UnitDone:
    """Entry point in a worker process."""
    try:
        return asyncio.run(_run_unit(job))
    except (Interrupted, SampleBroken):
        raise
    except Exception as exc:  # noqa: BLE001 - carried back as text
        raise workers.carried(exc, f"table {job.unit.table!r}") from None


async def _run_unit(job: Job) -> UnitDone:
    log.add_secret(job.target.password)
    pg = await connect(job.target, timeout=job.timeout, tls_verify=job.tls_verify, retry_for=30)
    try:
        if not job.target.pooled:
            await pg.execute("SELECT pg_advisory_lock(hashtext($1), $2)",
                             "_replicator.unit:" + job.unit.table, job.unit.id)
        return await copy_unit(pg, open_frozen_copy(Path(job.copy_path)), job)
    finally:
        with contextlib.suppress(Exception):
            await pg.close()


async def copy_unit(pg: asyncpg.Connection, frozen: Frozen, job: Job,
                    stop: asyncio.Event | None = None) -> UnitDone:
    """Copy one unit from where its committed progress says (in a worker or in-process)."""
    progress = await state.unit_progress(pg, job.unit.table, job.unit.id)
    if progress is None or progress.done:
        return UnitDone(job.unit, progress.rows if progress else 0, 0, 0.0)

    def should_stop() -> bool:
        return os.getppid() != job.ppid or os.path.exists(job.stop_file) or (
            bool(job.table_stop) and os.path.exists(job.table_stop))

    copier = TableCopier(
        pg, frozen, TablePlan.from_json(job.plan), job.schema, census=job.census, unit=job.unit,
        stop=stop, should_stop=should_stop if job.ppid else None,
    )
    result = await copier.run(resume_after=progress.after, done_rows=progress.rows)
    await state.unit_done(pg, job.unit.table, job.unit.id)
    return UnitDone(job.unit, result.rows, result.quarantined, result.seconds)


# -- the coordinating side -------------------------------------------------------------------------


Replan = Callable[[str, SampleBroken], Awaitable[tuple[TablePlan, TableCensus]]]


class Coordinator:
    """Runs the units of every table being copied; finishes each table when its units are done.
    A unit that meets a value its table's sampled census did not foresee stops the table's
    other units; once none runs, ``replan`` plans the table from every row (re-creating it if
    the types change) and its units run again (from their progress if nothing changed)."""

    def __init__(self, session: Session, frozen: Frozen, census_rows: dict[str, int],
                 replan: Replan | None = None, pool: ProcessPoolExecutor | None = None):
        self.session, self.frozen, self.census_rows = session, frozen, census_rows
        self.replan = replan
        self.pool = pool  # started already (``warm_pool``), or started here when needed
        self.workers = session.cfg.snapshot_workers
        self.stop_file = session.cfg.state_path / "snapshot.stop"
        self.remaining: dict[str, int] = {}
        self.plans: dict[str, TablePlan] = {}
        self.started: dict[str, float] = {}  # table -> when its first unit began copying
        self.counted: dict[str, int] = {}  # rows already added to the snapshot-rows metric

    async def run(self, items: list[tuple[TablePlan, TableCensus | None]]) -> None:
        for stale in (self.stop_file, *self.stop_file.parent.glob(f"{self.stop_file.name}.*")):
            stale.unlink(missing_ok=True)
        jobs = []
        for plan, cen in items:
            units = [Unit(plan.name, *u)
                     for u in await state.pending_unit_rows(self.session.conn, plan.name)]
            self.plans[plan.name] = plan
            self.remaining[plan.name] = len(units)
            jobs += [self._job(plan, cen, unit) for unit in units]
        total = sum(c.rows for _p, c in items if c)
        for name in [n for n, left in self.remaining.items() if left == 0]:
            await self._finish(name)  # every unit already done before a crash
        if not jobs:
            return
        jobs.sort(key=lambda j: -(j.census.rows if j.census else 0) / max(1, self._units(j)))
        watcher = asyncio.create_task(self._watch_progress())
        try:
            if self.workers > 1 and total >= SEQUENTIAL_BELOW and self.frozen.path is not None \
                    and not self.session.target.pooled:
                await self._in_processes(jobs)
            else:
                await self._in_process(jobs)
        finally:
            watcher.cancel()
            self.stop_file.unlink(missing_ok=True)

    def _units(self, job: Job) -> int:
        return max(1, self.remaining.get(job.unit.table, 1))

    def _job(self, plan: TablePlan, cen: TableCensus | None, unit: Unit) -> Job:
        cfg = self.session.cfg
        return Job(
            target=self.session.target, timeout=cfg.connect_timeout, tls_verify=cfg.tls_verify,
            copy_path=str(self.frozen.path or ""), plan=plan.to_json(), census=cen,
            schema=self.session.schema, unit=unit, ppid=0, stop_file=str(self.stop_file),
            table_stop=str(self._table_stop(plan.name)),
        )

    def _table_stop(self, name: str) -> Path:
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        return self.stop_file.with_name(f"{self.stop_file.name}.{digest}")

    async def _replanned(self, name: str, broken: SampleBroken) -> list[Job]:
        """The table planned again from every row; the jobs of its units still to copy."""
        if self.replan is None:
            raise broken
        plan, cen = await self.replan(name, broken)
        self._table_stop(name).unlink(missing_ok=True)
        self.plans[name] = plan
        units = [Unit(name, *u) for u in await state.pending_unit_rows(self.session.conn, name)]
        self.remaining[name] = len(units)
        if not units:
            await self._finish(name)
        return [self._job(plan, cen, unit) for unit in units]

    async def _in_process(self, jobs: list[Job]) -> None:
        queue = list(jobs)
        while queue:
            job = queue.pop(0)
            try:
                done = await copy_unit(self.session.conn, self.frozen, job, stop=self.session.stop)
            except SampleBroken as exc:
                others = [j for j in queue if j.unit.table != exc.table]
                queue = await self._replanned(exc.table, exc) + others
                continue
            await self._unit_done(done)

    async def _in_processes(self, jobs: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        running: dict[asyncio.Future[UnitDone], Job] = {}
        broken: dict[str, SampleBroken] = {}  # tables whose units are stopping to be re-planned

        with contextlib.nullcontext(self.pool) if self.pool else workers.pool(self.workers) \
                as pool:
            def submit(batch: list[Job]) -> None:
                for job in batch:
                    job = replace(job, ppid=os.getpid())
                    running[asyncio.ensure_future(loop.run_in_executor(pool, run_unit, job))] = job

            submit(jobs)
            stopper = asyncio.create_task(self._propagate_stop())
            try:
                while running:
                    finished, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    for fut in finished:
                        name = running.pop(fut).unit.table
                        try:
                            await self._unit_done(self._result(fut))
                        except SampleBroken as exc:
                            _log.info("snapshot_sample_broken", table=name, column=exc.column,
                                      why=exc.why)
                            broken.setdefault(name, exc)
                            self._table_stop(name).touch()  # its units stop at their next chunk
                        except Interrupted:
                            if name not in broken:
                                raise
                        if name in broken and all(j.unit.table != name for j in running.values()):
                            submit(await self._replanned(name, broken.pop(name)))
            except BaseException:
                self.stop_file.touch()  # running units stop at their next chunk, committed
                for fut in running:
                    fut.cancel()
                raise
            finally:
                stopper.cancel()
                for name in broken:
                    self._table_stop(name).unlink(missing_ok=True)

    @staticmethod
    def _result(fut: asyncio.Future[UnitDone]) -> UnitDone:
        try:
            return fut.result()
        except workers.WorkerError as exc:
            raise workers.restored(exc) from None

    async def _propagate_stop(self) -> None:
        if self.session.stop is None:
            return
        await self.session.stop.wait()
        self.stop_file.touch()

    async def _unit_done(self, done: UnitDone) -> None:
        name = done.unit.table
        # A table's time (and the log's rows/s) counts from when its first unit began to copy,
        # not from the snapshot's start: a table waiting for a worker is not slow. The screen's
        # bars count the same way.
        began = time.monotonic() - done.seconds
        self.started[name] = min(self.started.get(name, began), began)
        self.remaining[name] -= 1
        if self.remaining[name] == 0:
            await self._finish(name)

    async def _finish(self, name: str) -> None:
        session = self.session
        rows, quarantined = await state.units_total(session.conn, name)
        if name in self.census_rows:
            await check_complete(session.conn, self.plans[name], session.schema,
                                 self.census_rows[name])
        seconds = time.monotonic() - self.started.get(name, time.monotonic())
        self._count(name, rows)
        status = "copied" if session.mode == "copy" else state.STREAMING
        plan = await finish_table(session.conn, self.plans[name], session.schema, status=status,
                                  mark=self.frozen.mark, seconds=seconds, rows=rows)
        self.plans[name] = plan
        metrics.SNAPSHOT_TABLES_REMAINING.dec()
        if session.bars:
            session.bars(name, rows, rows)
        _log.info("table_copied", table=name, rows=rows, quarantined=quarantined,
                  seconds=round(seconds, 3), rows_per_s=round(rows / seconds) if seconds else 0)

    def _count(self, name: str, rows: int) -> bool:
        """Bring the snapshot-rows metric up to ``rows`` for ``name``; True if it moved."""
        before = self.counted.get(name, 0)
        if rows <= before:
            return False
        metrics.SNAPSHOT_ROWS.labels(name).inc(rows - before)
        self.counted[name] = rows
        return True

    async def _watch_progress(self) -> None:
        """Progress bars and the snapshot-rows metric, from the units' committed progress."""
        conn = await self.session.connect(retry_for=5)
        bars = self.session.bars
        try:
            while True:
                for name, rows in (await state.units_rows(conn)).items():
                    if name in self.plans and self._count(name, rows) and bars:
                        bars(name, rows, max(self.census_rows.get(name, rows), rows))
                await asyncio.sleep(0.5)
        finally:
            await conn.close()


def rowid_bounds(frozen: Frozen, plan: TablePlan | Table) -> tuple[int | None, int | None]:
    """The smallest and largest rowid, or (None, None) without rowid."""
    return source_bounds(frozen.conn, plan.name, plan.rowid_name)
