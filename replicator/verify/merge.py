"""The full comparison: both sides streamed in key order, range by range, compared as whole
lists, and merged row by row only where a range differs; in worker processes when there is
enough to compare."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import asyncpg

from .. import log, state, workers
from ..config import Config
from ..convert import (
    BadValue,
    converter,
    key_to_json,
)
from ..dsn import TargetDSN
from ..plans import TablePlan
from ..quoting import qi, qualified
from ..source import open_source
from ..target import connect
from .common import (
    PARALLEL_FROM,
    RATE,
    Side,
    TableReport,
    chunk_rows,
    convert_chunk,
    pg_key,
    quarantined_keys,
)

_log = log.get("verify")


_IDENTITY = ("bigint", "float", "text", "bytea")


class _Ranges:
    """The fast comparison: the same key range read from both sides as (keys..., columns...)
    and compared as whole lists (in C). Only a range that differs is merged row by row.

    Values whose conversion is the identity are compared as read; Postgres's -0.0 is read as
    NaN, so a float differing only in its sign bit cannot compare equal to SQLite's 0.0."""

    def __init__(self, side: Side):
        plan = side.plan
        self.side, self.plan, self.nk = side, plan, len(side.pg_key)
        keys = [plan.rowid_name] if plan.rowid_keyed else [qi(k) for k in plan.key_columns]
        self.s_select = ", ".join(keys + [qi(c.name) for c in plan.columns])
        key_plans = [] if plan.rowid_keyed else list(plan.key_plans)
        self.convs = [(i, converter(c)) for i, c in enumerate(key_plans) if c.conv not in _IDENTITY]
        self.convs += [(self.nk + i, converter(c)) for i, c in enumerate(plan.columns)
                       if c.conv not in _IDENTITY]
        cols = [f"CASE WHEN {qi(c.pg_name)} = 0 AND {qi(c.pg_name)}::text LIKE '-%' THEN "
                f"'NaN'::float8 ELSE {qi(c.pg_name)} END" if c.pg_type == "double precision"
                else qi(c.pg_name) for c in plan.columns]
        self.p_select = ", ".join([k.split(" COLLATE")[0] for k in side.pg_key] + cols)
        self.p_order = ", ".join(side.pg_key)
        self.table = qualified(side.schema, plan.pg_name)

    def sqlite(self, conn: sqlite3.Connection, after: tuple[Any, ...] | None) -> list[tuple[Any, ...]]:
        where, params = "", []
        if after is not None:
            where = f"WHERE ({', '.join(self.side.sqlite_key)}) > ({', '.join('?' * self.nk)})"
            params = list(after)
        conn.execute("BEGIN")
        try:
            rate = RATE.get()
            rows = conn.execute(f"SELECT {self.s_select} FROM {qi(self.plan.name)} {where} "
                                f"ORDER BY {', '.join(self.side.sqlite_key)} LIMIT {chunk_rows()}",
                                params).fetchall()
            if rate:
                time.sleep(len(rows) / rate)
            return rows
        finally:
            conn.execute("COMMIT")

    def read(self, conn: sqlite3.Connection, after: tuple[Any, ...] | None
             ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """(raw rows, converted, refused): read and converted in the caller's thread, so the
        conversion does not hold the event loop."""
        raw = self.sqlite(conn, after)
        return (raw, *self.convert(raw))

    def convert(self, raw: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """(rows as Postgres would hold them, rows no column can hold: (raw key, column, reason))."""
        if not self.convs:
            return raw, []
        good, bad = [], []
        for r in raw:
            out = list(r)
            try:
                for i, fn in self.convs:
                    out[i] = fn(out[i])
            except BadValue as exc:
                bad.append((list(r[: self.nk]), exc.column, exc.reason))
                continue
            good.append(tuple(out))
        return good, bad

    async def postgres(self, pg: asyncpg.Connection, lo: tuple[Any, ...] | None,
                       hi: tuple[Any, ...] | None) -> list[Any]:
        cond: list[str] = []
        args: list[Any] = []
        types = self.side.pg_types
        for op, bound in ((">", lo), ("<=", hi)):
            if bound is not None:
                marks = ", ".join(f"${len(args) + i + 1}::{t}" for i, t in enumerate(types))
                cond.append(f"({', '.join(self.side.pg_key)}) {op} ({marks})")
                args += list(bound)
        where = f"WHERE {' AND '.join(cond)}" if cond else ""
        return list(await pg.fetch(f"SELECT {self.p_select} FROM {self.table} {where} "
                                   f"ORDER BY {self.p_order}", *args))


async def verify_merge(pg: asyncpg.Connection, src: sqlite3.Connection, plan: TablePlan,
                       schema: str) -> TableReport:
    """Range by range: whole-list comparison, row-by-row merge only where a range differs."""
    side = Side(plan, schema)
    ranges = _Ranges(side)
    rep = TableReport(plan.name)
    t0 = time.monotonic()
    qkeys = await quarantined_keys(pg, plan.name)
    p_lo = None
    nk = ranges.nk
    ahead = asyncio.ensure_future(asyncio.to_thread(ranges.read, src, None))
    try:
        while True:
            try:
                raw, rows, bad = await ahead
            except sqlite3.OperationalError as exc:
                if "decode" not in str(exc).lower():
                    raise
                return await _verify_merge_rows(pg, src, plan, schema)  # invalid UTF-8
            if not raw:
                for r in await ranges.postgres(pg, p_lo, None):
                    rep.note("extra", list(r[:nk]))
                break
            # Read the next SQLite range while this one is fetched from Postgres and compared.
            ahead = asyncio.ensure_future(asyncio.to_thread(ranges.read, src, tuple(raw[-1][:nk])))
            try:
                hi = tuple(rows[-1][:nk]) if rows and not bad else pg_key(side, raw[-1][:nk])
            except BadValue:  # a key value no key column can hold: compare row by row
                return await _verify_merge_rows(pg, src, plan, schema)
            prows = await ranges.postgres(pg, p_lo, hi)
            if not bad and rows == prows:
                rep.matched += len(rows)
            else:
                _merge_range(side, rep, rows, bad, prows, qkeys)
            p_lo = hi
    finally:
        with contextlib.suppress(BaseException):
            await ahead  # never leave a read running on the connection
    rep.seconds = time.monotonic() - t0
    return rep


async def merge_all(cfg: Config, target: TargetDSN, pg: asyncpg.Connection, src: sqlite3.Connection,
                    tables: list[state.TableState]) -> dict[str, TableReport]:
    """Full comparison of ``tables`` (TableState): in worker processes, one table each, when
    there is enough to compare (a process reads SQLite and decodes Postgres rows at about one
    core's worth; the GIL keeps threads from doing better); else here, one after the other."""
    schema = cfg.target_schema
    rows = sum(t.rows_copied + t.changes_applied for t in tables)
    n_workers = min(cfg.verify_workers, len(tables))
    if n_workers < 2 or RATE.get() is not None or rows < PARALLEL_FROM or target.pooled:
        return {t.name: await verify_merge(pg, src, t.plan, schema) for t in tables}
    loop = asyncio.get_running_loop()
    job = (target, cfg.connect_timeout, cfg.tls_verify, str(cfg.source), cfg.busy_timeout_ms, schema)
    order = sorted(tables, key=lambda t: -(t.rows_copied + t.changes_applied))
    with workers.pool(n_workers) as pool:
        futures = [loop.run_in_executor(pool, _merge_in_worker, job, t.plan.to_json())
                   for t in order]
        try:
            done = await asyncio.gather(*futures)
        except workers.WorkerError as exc:
            raise workers.restored(exc) from None
    return {rep.table: rep for rep in done}


def _merge_in_worker(job: tuple[Any, ...], plan_json: dict[str, Any]) -> TableReport:
    """Entry point in a worker process: one table's full comparison."""
    target, timeout, tls_verify, source, busy_ms, schema = job
    plan = TablePlan.from_json(plan_json)

    async def run() -> TableReport:
        log.add_secret(target.password)
        pg = await connect(target, timeout=timeout, tls_verify=tls_verify, retry_for=30)
        src = open_source(Path(source), readonly=True, busy_timeout_ms=busy_ms)
        try:
            return await verify_merge(pg, src, plan, schema)
        finally:
            src.close()
            with contextlib.suppress(Exception):
                await pg.close()

    try:
        return asyncio.run(run())
    except Exception as exc:  # noqa: BLE001 - carried back as text
        raise workers.carried(exc, f"table {plan.name!r}") from None


def _merge_range(side: Side, rep: TableReport, rows: list[Any], bad: list[Any], prows: list[Any],
                 qkeys: set[str]) -> None:
    nk = len(side.pg_key)
    for key, column, reason in bad:
        if json.dumps(key_to_json(key)) in qkeys:
            rep.quarantined += 1
        else:
            rep.note("missing", key, column=column, reason=reason, quarantined=False)
    s_buf = [(tuple(r[:nk]), tuple(r[nk:])) for r in reversed(rows)]
    p_buf = [(tuple(r[:nk]), tuple(r[nk:])) for r in reversed(prows)]
    _merge_step(side, rep, s_buf, p_buf, True, True, qkeys)


async def _verify_merge_rows(pg: asyncpg.Connection, src: sqlite3.Connection, plan: TablePlan,
                             schema: str) -> TableReport:
    side = Side(plan, schema)
    rep = TableReport(plan.name)
    t0 = time.monotonic()
    qkeys = await quarantined_keys(pg, plan.name)
    s_after, p_after = None, None
    s_buf: list[Any] = []
    p_buf: list[Any] = []
    s_done = p_done = False
    nk = len(side.pg_key)
    while True:
        if not s_buf and not s_done:
            good, bad, s_after_new = await asyncio.to_thread(convert_chunk, src, side, s_after, False)
            if s_after_new is None:
                s_done = True
            else:
                s_after = s_after_new
                for b in bad:
                    k = json.dumps(b[0])
                    if k in qkeys:
                        rep.quarantined += 1
                    else:
                        rep.note("missing", b[4], column=b[2], reason=b[3], quarantined=False)
                s_buf = good
                s_buf.reverse()
        if not p_buf and not p_done:
            rows = await side.pg_chunk(pg, p_after)
            if not rows:
                p_done = True
            else:
                p_after = tuple(rows[-1][:nk])
                p_buf = [(tuple(r[:nk]), tuple(r[nk:])) for r in rows]
                p_buf.reverse()
        if not s_buf and not p_buf and s_done and p_done:
            break
        _merge_step(side, rep, s_buf, p_buf, s_done, p_done, qkeys)
    rep.seconds = time.monotonic() - t0
    return rep


def _merge_step(side: Side, rep: TableReport, s_buf: list[Any], p_buf: list[Any], s_done: bool,
                p_done: bool, qkeys: set[str]) -> None:
    """Merge until one buffer runs dry (and its side is not finished)."""
    while (s_buf or s_done) and (p_buf or p_done):
        if not s_buf and not p_buf:
            return
        if not s_buf:
            key, _row = p_buf.pop()
            rep.note("extra", list(key))
            continue
        if not p_buf:
            key, _row = s_buf.pop()
            rep.note("missing", list(key))
            continue
        sk, srow = s_buf[-1]
        pk, prow = p_buf[-1]
        if sk == pk:
            s_buf.pop()
            p_buf.pop()
            if side.same(srow, prow):
                rep.matched += 1
            else:
                rep.note("different", list(sk), **side.differing(srow, prow))
        elif sk < pk:
            s_buf.pop()
            rep.note("missing", list(sk))
        else:
            p_buf.pop()
            rep.note("extra", list(pk))
