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
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import asyncpg

from . import log, metrics, snapshot, state
from .census import TableCensus
from .dsn import TargetDSN
from .errors import ReplicatorError, TargetError, is_retryable_pg
from .plans import TablePlan
from .quoting import qi
from .target import connect

_log = log.get("parallel")
UNIT_ROWS = 250_000  # a table is split into units of about this many rows
SEQUENTIAL_BELOW = 200_000  # smaller snapshots are not worth starting processes for


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
    unit: snapshot.Unit
    ppid: int
    stop_file: str


@dataclass(frozen=True)
class Done:
    unit: snapshot.Unit
    rows: int
    quarantined: int
    seconds: float


class WorkerError(Exception):
    """A worker's failure, carried back as plain text (asyncpg's exceptions do not pickle)."""

    def __init__(self, message: str, retryable: bool = False, kind: str = "runtime"):
        super().__init__(message, retryable, kind)
        self.message, self.retryable, self.kind = message, retryable, kind


def split(table: str, rows: int, lo: int | None, hi: int | None, workers: int) -> list[snapshot.Unit]:
    """Rowid ranges of about UNIT_ROWS rows (uniform in rowid; correct whatever the gaps)."""
    if lo is None or hi is None or rows <= UNIT_ROWS or workers <= 1:
        return [snapshot.Unit(table, 0, None, None)]
    n = min(max(2, rows // UNIT_ROWS), workers * 4)
    step = (hi - lo + n) // n
    bounds = [lo - 1 + step * i for i in range(n)] + [hi]
    return [snapshot.Unit(table, i, bounds[i], bounds[i + 1]) for i in range(n)]


async def register_units(pg: asyncpg.Connection, units: list[snapshot.Unit]) -> None:
    if not units:
        return
    await pg.execute(f"DELETE FROM {state.SCHEMA}.units WHERE tbl = $1", units[0].table)
    await pg.executemany(
        f"INSERT INTO {state.SCHEMA}.units (tbl, unit, lo, hi) VALUES ($1, $2, $3, $4)",
        [(u.table, u.id, u.lo, u.hi) for u in units],
    )


async def pending_units(pg: asyncpg.Connection, table: str) -> list[tuple[snapshot.Unit, int | None, int]]:
    rows = await pg.fetch(
        f"SELECT unit, lo, hi, after, rows FROM {state.SCHEMA}.units WHERE tbl = $1 AND NOT done "
        "ORDER BY unit", table)
    return [(snapshot.Unit(table, r[0], r[1], r[2]), r[3], r[4]) for r in rows]


# -- the worker side -------------------------------------------------------------------------------


def _worker_init(ppid: int) -> None:
    """A pool worker dies with its parent, even while idle waiting for work: the kernel sends it
    SIGKILL (Linux), and a watchdog thread checks the parent anyway."""
    import ctypes
    import signal
    import threading

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != ppid:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == ppid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def run_unit(job: Job) -> Done:
    """Entry point in a worker process."""
    try:
        return asyncio.run(_run_unit(job))
    except snapshot.Interrupted:
        raise
    except ReplicatorError as exc:
        raise WorkerError(str(exc), exc.retryable, exc.kind) from None
    except Exception as exc:  # noqa: BLE001 - carried back as text
        raise WorkerError(f"{type(exc).__name__}: {log.scrub(str(exc))}", is_retryable_pg(exc),
                          "target") from None


async def _run_unit(job: Job) -> Done:
    log.add_secret(job.target.password)
    pg = await connect(job.target, timeout=job.timeout, tls_verify=job.tls_verify, retry_for=30)
    try:
        if not job.target.pooled:
            await pg.execute("SELECT pg_advisory_lock(hashtext($1), $2)",
                             "_replicator.unit:" + job.unit.table, job.unit.id)
        return await copy_unit(pg, snapshot.open_frozen_copy(Path(job.copy_path)), job)
    finally:
        with contextlib.suppress(Exception):
            await pg.close()


async def copy_unit(pg: asyncpg.Connection, frozen: snapshot.Frozen, job: Job,
                    stop: asyncio.Event | None = None) -> Done:
    """Copy one unit from where its committed progress says (in a worker or in-process)."""
    row = await pg.fetchrow(f"SELECT after, rows, done FROM {state.SCHEMA}.units WHERE tbl = $1 "
                            "AND unit = $2", job.unit.table, job.unit.id)
    if row is None or row["done"]:
        return Done(job.unit, row["rows"] if row else 0, 0, 0.0)

    def should_stop() -> bool:
        return os.getppid() != job.ppid or os.path.exists(job.stop_file)

    copier = snapshot.TableCopier(
        pg, frozen, TablePlan.from_json(job.plan), job.schema, census=job.census, unit=job.unit,
        stop=stop, should_stop=should_stop if job.ppid else None,
    )
    result = await copier.run(resume_after=row["after"], done_rows=row["rows"])
    await pg.execute(f"UPDATE {state.SCHEMA}.units SET done = true WHERE tbl = $1 AND unit = $2",
                     job.unit.table, job.unit.id)
    return Done(job.unit, result.rows, result.quarantined, result.seconds)


# -- the coordinating side -------------------------------------------------------------------------


class Coordinator:
    """Runs the units of every table being copied; finishes each table when its units are done."""

    def __init__(self, rep, frozen: snapshot.Frozen, workers: int):
        self.rep, self.frozen, self.workers = rep, frozen, workers
        self.stop_file = rep.cfg.state_path / "snapshot.stop"
        self.remaining: dict[str, int] = {}
        self.plans: dict[str, TablePlan] = {}
        self.started: dict[str, float] = {}
        self.counted: dict[str, int] = {}  # rows already added to the snapshot-rows metric

    async def run(self, items: list[tuple[TablePlan, TableCensus | None]]) -> None:
        self.stop_file.unlink(missing_ok=True)
        jobs = []
        for plan, cen in items:
            units = await pending_units(self.rep.pg, plan.name)
            self.plans[plan.name] = plan
            self.remaining[plan.name] = len(units)
            self.started[plan.name] = time.monotonic()
            jobs += [self._job(plan, cen, unit) for unit, _after, _rows in units]
        total = sum(c.rows for _p, c in items if c)
        for name in [n for n, left in self.remaining.items() if left == 0]:
            await self._finish(name)  # every unit already done before a crash
        if not jobs:
            return
        jobs.sort(key=lambda j: -(j.census.rows if j.census else 0) / max(1, self._units(j)))
        watcher = asyncio.create_task(self._watch_progress())
        try:
            if self.workers > 1 and total >= SEQUENTIAL_BELOW and self.frozen.path is not None \
                    and not self.rep.pooled:
                await self._in_processes(jobs)
            else:
                await self._in_process(jobs)
        finally:
            watcher.cancel()
            self.stop_file.unlink(missing_ok=True)

    def _units(self, job: Job) -> int:
        return max(1, self.remaining.get(job.unit.table, 1))

    def _job(self, plan: TablePlan, cen: TableCensus | None, unit: snapshot.Unit) -> Job:
        cfg = self.rep.cfg
        return Job(
            target=replace(self.rep.target, pooled=self.rep.pooled), timeout=cfg.connect_timeout,
            tls_verify=cfg.tls_verify, copy_path=str(self.frozen.path or ""), plan=plan.to_json(),
            census=cen, schema=self.rep.schema, unit=unit, ppid=0, stop_file=str(self.stop_file),
        )

    async def _in_process(self, jobs: list[Job]) -> None:
        for job in jobs:
            done = await copy_unit(self.rep.pg, self.frozen, job, stop=self.rep.stop)
            await self._unit_done(done)

    async def _in_processes(self, jobs: list[Job]) -> None:
        loop = asyncio.get_running_loop()
        ctx = multiprocessing.get_context("spawn")  # no inherited event loop, threads or sockets
        jobs = [replace(j, ppid=os.getpid()) for j in jobs]
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx,
                                 initializer=_worker_init, initargs=(os.getpid(),)) as pool:
            pending = {asyncio.ensure_future(loop.run_in_executor(pool, run_unit, j)) for j in jobs}
            stopper = asyncio.create_task(self._propagate_stop())
            try:
                while pending:
                    finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for fut in finished:
                        await self._unit_done(self._result(fut))
            except BaseException:
                self.stop_file.touch()  # running units stop at their next chunk, committed
                for fut in pending:
                    fut.cancel()
                raise
            finally:
                stopper.cancel()

    @staticmethod
    def _result(fut: asyncio.Future) -> Done:
        try:
            return fut.result()
        except WorkerError as exc:
            if exc.kind == "bad_value":
                from .errors import BadValueError

                raise BadValueError(exc.message) from None
            raise TargetError(exc.message, retryable=exc.retryable) from None

    async def _propagate_stop(self) -> None:
        if self.rep.stop is None:
            return
        await self.rep.stop.wait()
        self.stop_file.touch()

    async def _unit_done(self, done: Done) -> None:
        name = done.unit.table
        self.remaining[name] -= 1
        if self.remaining[name] == 0:
            await self._finish(name)

    async def _finish(self, name: str) -> None:
        pg = self.rep.pg
        rows, quarantined = (int(v) for v in await pg.fetchrow(
            f"SELECT coalesce(sum(rows), 0), coalesce(sum(quarantined), 0) FROM {state.SCHEMA}.units "
            "WHERE tbl = $1", name))
        seconds = time.monotonic() - self.started[name]
        self._count(name, int(rows))
        status = "copied" if self.rep.mode == "copy" else state.STREAMING
        plan = await snapshot.finish_table(pg, self.plans[name], self.rep.schema, status=status,
                                           mark=self.frozen.mark, seconds=seconds, rows=int(rows))
        self.plans[name] = plan
        metrics.SNAPSHOT_TABLES_REMAINING.dec()
        if self.rep.progress:
            self.rep.progress(name, int(rows), int(rows))
        _log.info("table_copied", table=name, rows=int(rows), quarantined=int(quarantined),
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
        conn = await self.rep._connect(retry_for=5)
        try:
            while True:
                for name, rows in await conn.fetch(
                        f"SELECT tbl, sum(rows) FROM {state.SCHEMA}.units GROUP BY tbl"):
                    rows = int(rows or 0)
                    if name in self.plans and self._count(name, rows) and self.rep.progress:
                        total = self.rep.census_rows.get(name, rows)
                        self.rep.progress(name, rows, max(total, rows))
                await asyncio.sleep(0.5)
        finally:
            await conn.close()


def rowid_bounds(frozen: snapshot.Frozen, plan: TablePlan) -> tuple[int | None, int | None]:
    if not plan.rowid_name:
        return None, None
    rid, table = plan.rowid_name, qi(plan.name)
    return frozen.conn.execute(f"SELECT min({rid}), max({rid}) FROM {table}").fetchone()
