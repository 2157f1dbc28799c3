"""``replicator verify``: prove the target holds exactly what SQLite holds, value by value.

Both sides are streamed in key order in chunks (short read transactions, flat memory) and merged.
SQLite rows pass through the same converters as the copy, so "equal" means "what the replicator
would have written". Rows the converters reject must be in ``_replicator.quarantine`` and absent
from the table; they are reported apart and do not count as differences.

While replication runs, a row can differ only because its change is not applied yet: differing
keys are re-checked after the target's cursor has passed the log position seen at the end of
the pass, up to a few times. Only differences that persist are reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import math
import multiprocessing
import os
import random
import sqlite3
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from . import capture, log, metrics, state
from .config import Config
from .convert import (
    BadValue,
    convert_rows,
    converter,
    decode_safe_row,
    from_typed_json,
    key_to_json,
    row_converter,
    select_list,
    to_sqlite_value,
)
from .dsn import TargetDSN
from .errors import SourceError, StartupError, StateError, TargetError
from .plans import ROWID_COLUMN, TablePlan
from .quoting import qi, qualified
from .source import open_source
from .target import connect

_log = log.get("verify")
# Rows per second for background verification; a ContextVar so asyncio.to_thread carries it.
_RATE: contextvars.ContextVar[float | None] = contextvars.ContextVar("verify_rate", default=None)
CHUNK = 20_000
MAX_SAMPLES = 5
MAX_RECHECK = 10_000
PARALLEL_FROM = 300_000  # rows: below this, starting worker processes costs more than it saves


@dataclass
class TableReport:
    table: str
    matched: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    quarantined: int = 0
    sampled: bool = False
    samples: dict[str, list[Any]] = field(default_factory=lambda: {"missing": [], "extra": [],
                                                                     "different": []})
    suspects: dict[str, list] = field(default_factory=dict)  # kind -> keys (to re-check)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different)

    def note(self, kind: str, key: Any, **detail: Any) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.suspects.setdefault(kind, [])
        if len(self.suspects[kind]) < MAX_RECHECK:
            self.suspects[kind].append(key)
        if len(self.samples[kind]) < MAX_SAMPLES:
            self.samples[kind].append({"key": list(key), **detail})

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table, "ok": self.ok, "matched": self.matched, "missing": self.missing,
            "extra": self.extra, "different": self.different, "quarantined": self.quarantined,
            "sampled": self.sampled, "samples": self.samples, "seconds": round(self.seconds, 3),
        }


class _Side:
    """Key order shared by both sides: text compares as UTF-8 bytes (code points) on both."""

    def __init__(self, plan: TablePlan, schema: str):
        self.plan = plan
        self.schema = schema
        names = [c.name for c in plan.columns]
        self.key_pos = [names.index(k) for k in plan.key_columns]
        self.float_pos = [i for i, c in enumerate(plan.columns) if c.pg_type == "double precision"]
        self.sqlite_key = ([plan.rowid_name] if plan.rowid_keyed
                           else [f"{qi(k)} COLLATE BINARY" for k in plan.key_columns])
        by_name = {c.name: c for c in plan.columns}
        if plan.rowid_keyed:
            self.pg_key = [qi(ROWID_COLUMN)]
            self.pg_types = ["bigint"]
        else:
            self.pg_key = [
                qi(by_name[k].pg_name) + (' COLLATE "C"' if by_name[k].pg_type == "text" else "")
                for k in plan.key_columns
            ]
            self.pg_types = [by_name[k].pg_type for k in plan.key_columns]

    def key_of(self, rowid: Any, row: tuple) -> tuple:
        if self.plan.rowid_keyed:
            return (rowid,)
        return tuple(row[i] for i in self.key_pos)

    def sqlite_chunk(self, conn: sqlite3.Connection, after: tuple | None, safe: bool) -> list:
        rid = self.plan.rowid_name or "NULL"
        keys = self.sqlite_key
        where = ""
        params: list[Any] = []
        if after is not None:
            where = f"WHERE ({', '.join(keys)}) > ({', '.join('?' * len(keys))})"
            params = list(after)
        sql = (f"SELECT {rid}, {select_list(self.plan, safe)} FROM {qi(self.plan.name)} {where} "
               f"ORDER BY {', '.join(keys)} LIMIT {CHUNK}")
        conn.execute("BEGIN")
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.execute("COMMIT")

    async def pg_chunk(self, pg: asyncpg.Connection, after: tuple | None) -> list:
        cols = ", ".join(qi(c.pg_name) for c in self.plan.columns)
        table = qualified(self.schema, self.plan.pg_name)
        where = ""
        args: list[Any] = []
        if after is not None:
            params = ", ".join(f"${i + 1}::{t}" for i, t in enumerate(self.pg_types))
            where = f"WHERE ({', '.join(self.pg_key)}) > ({params})"
            args = list(after)
        key_sel = ", ".join(self.pg_key)
        return await pg.fetch(
            f"SELECT {key_sel}, {cols} FROM {table} {where} ORDER BY {key_sel} LIMIT {CHUNK}", *args
        )

    def differing(self, a: tuple, b: tuple) -> str:
        """The first column whose values differ (bits included for floats)."""
        for i, (col, x, y) in enumerate(zip(self.plan.columns, a, b, strict=True)):
            if x != y or (i in self.float_pos and x == 0 and x is not None
                          and math.copysign(1, x) != math.copysign(1, y)):
                return col.name
        return "?"

    def same(self, a: tuple, b: tuple) -> bool:
        if a != b:
            return False
        # == treats 0.0 and -0.0 as equal; the bits must match too.
        return all(a[i] != 0 or math.copysign(1, a[i]) == math.copysign(1, b[i])
                   for i in self.float_pos if a[i] is not None)


async def verify(
    cfg: Config, target: TargetDSN, *, tables: list[str] | None = None,
    sample: float | None = None, recheck_rounds: int = 3, changed_only: bool = False,
    rate: float | None = None,
) -> dict[str, Any]:
    """Compare the target with SQLite. ``changed_only``: only the keys changed since the last
    full verification (plus row counts of every table). ``rate``: at most this many rows per
    second (background verification)."""
    if sample is not None and not 0 < sample <= 1:
        from .errors import ConfigError

        raise ConfigError(f"--sample: expected a fraction in (0, 1], got {sample}")
    _RATE.set(rate)
    pg = await connect(target, timeout=cfg.connect_timeout, tls_verify=cfg.tls_verify)
    src = open_source(cfg.source, readonly=True, busy_timeout_ms=cfg.busy_timeout_ms)
    started = time.monotonic()
    try:
        known = await state.tables(pg)
        st = await state.load(pg)
        if not known or st is None:
            raise StateError("verify: the target holds no replicated tables (run `replicator run` "
                             "or `replicator copy` first)")
        names = tables or sorted(known)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise StateError(f"verify: not replicated: {', '.join(unknown)}")
        by_name: dict[str, TableReport] = {}
        dirty = await _dirty_keys(pg) if changed_only else {}
        merge = []
        for name in names:
            plan = known[name].plan
            if changed_only:
                rep = await _verify_changed(pg, src, plan, cfg.target_schema, dirty.get(name, []))
            elif plan.rowid_keyed and not await _has_rowid_column(pg, cfg.target_schema, plan):
                rep = await _verify_multiset(pg, src, plan, cfg.target_schema)
            elif sample:
                rep = await _verify_sample(pg, src, plan, cfg.target_schema, sample)
            else:
                merge.append(known[name])
                continue
            by_name[name] = rep
        by_name.update(await _merge_all(cfg, target, pg, src, merge))
        reports = [by_name[n] for n in names]
        await _recheck(pg, src, cfg, reports, known, recheck_rounds)
        rows = sum(r.matched + r.missing + r.different + r.quarantined for r in reports)
        seconds = time.monotonic() - started
        report = {
            "ok": all(r.ok for r in reports),
            "mode": "changed since the last full verification, plus row counts" if changed_only
            else "sample" if sample else "full",
            "tables": [r.to_json() for r in reports],
            "rows": rows,
            "quarantined": sum(r.quarantined for r in reports),
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds) if seconds else 0,
            "sample": sample,
            "state": st.state,
        }
        metrics.VERIFY_ROWS.inc(rows)
        for r in reports:
            if not r.ok:
                metrics.VERIFY_MISMATCHES.labels(r.table).inc(r.missing + r.extra + r.different)
        full = sample is None and tables is None and not changed_only
        if full:
            await _record_full(pg, report["ok"], rows, st.cursor)
        return report
    finally:
        src.close()
        await pg.close()


async def _record_full(pg: asyncpg.Connection, ok: bool, rows: int, cursor: int) -> None:
    """A full pass covers every change up to the cursor it started at: forget those as dirty,
    and start tracking what changes from now on (the applier does, once this is recorded)."""
    async with pg.transaction():
        if ok:
            await pg.execute(f"DELETE FROM {state.SCHEMA}.dirty WHERE seq <= $1", cursor)
        await state.merge_info(pg, last_verify={"at": time.time(), "ok": ok, "rows": rows,
                                                "full": ok, "cursor": cursor})


async def _dirty_keys(pg: asyncpg.Connection) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in await pg.fetch(f"SELECT tbl, key FROM {state.SCHEMA}.dirty"):
        out.setdefault(r[0], []).append([from_typed_json(v) for v in json.loads(r[1])])
    return out


async def _verify_changed(pg, src, plan: TablePlan, schema: str, raw_keys: list) -> TableReport:
    """The keys changed since the last full pass, row by row, and the row counts of both sides."""
    rep = TableReport(plan.name)
    t0 = time.monotonic()
    keys = []
    convs = None if plan.rowid_keyed else [converter(c) for c in plan.key_plans]
    for raw in raw_keys:
        try:
            keys.append(tuple(raw) if convs is None else tuple(f(v) for f, v in zip(convs, raw, strict=True)))
        except BadValue:
            rep.quarantined += 1  # a key no column can hold: its row is in quarantine
    rep.suspects = {"different": keys}
    rep.different = len(keys)
    await _recheck_table(pg, src, plan, schema, rep)
    src_count = src.execute(f"SELECT count(*) FROM {qi(plan.name)}").fetchone()[0]
    pg_count = await pg.fetchval(f"SELECT count(*) FROM {qualified(schema, plan.pg_name)}")
    q_count = await pg.fetchval(f"SELECT count(*) FROM {state.SCHEMA}.quarantine WHERE tbl = $1", plan.name)
    if src_count != pg_count + q_count:
        kind = "missing" if src_count > pg_count + q_count else "extra"
        rep.note(kind, [], detail=f"row counts: SQLite {src_count}, Postgres {pg_count} + "
                 f"{q_count} quarantined")
    rep.seconds = time.monotonic() - t0
    return rep


async def _has_rowid_column(pg: asyncpg.Connection, schema: str, plan: TablePlan) -> bool:
    return bool(await pg.fetchval(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 "
        "AND column_name = $3", schema, plan.pg_name, ROWID_COLUMN))


async def _quarantined_keys(pg: asyncpg.Connection, table: str) -> set[str]:
    rows = await pg.fetch(f"SELECT key FROM {state.SCHEMA}.quarantine WHERE tbl = $1", table)
    return {json.dumps(json.loads(r[0])) for r in rows}


def _convert_chunk(conn, side: _Side, after, safe: bool):
    """One chunk of SQLite rows in key order, through the copy's converters.

    Returns (good, bad, last raw key): good as (converted key, converted row), bad as
    (typed key, typed row, column, reason, raw key)."""
    try:
        raw = side.sqlite_chunk(conn, after, safe)
    except sqlite3.OperationalError as exc:
        if safe or "decode" not in str(exc).lower():
            raise
        return _convert_chunk(conn, side, after, True)  # invalid UTF-8 ahead: read TEXT as bytes
    if not raw:
        return [], [], None
    convert = row_converter(side.plan)
    good, bad = [], []
    rate = _RATE.get()
    if rate:
        time.sleep(len(raw) / rate)  # runs in a worker thread: throttles background verification
    for r in raw:
        values = decode_safe_row(r[1:]) if safe else r[1:]
        try:
            row = convert(values)
        except BadValue as exc:
            key = [r[0]] if side.plan.rowid_keyed else [values[i] for i in side.key_pos]
            bad.append((key_to_json(key), None, exc.column, exc.reason, key))
            continue
        good.append((side.key_of(r[0], row), row))
    last = raw[-1]
    values = decode_safe_row(last[1:]) if safe else last[1:]
    after_key = (last[0],) if side.plan.rowid_keyed else tuple(values[i] for i in side.key_pos)
    return good, bad, after_key


_IDENTITY = ("bigint", "float", "text", "bytea")


class _Ranges:
    """The fast comparison: the same key range read from both sides as (keys..., columns...)
    and compared as whole lists (in C). Only a range that differs is merged row by row.

    Values whose conversion is the identity are compared as read; Postgres's -0.0 is read as
    NaN, so a float differing only in its sign bit cannot compare equal to SQLite's 0.0."""

    def __init__(self, side: _Side):
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

    def sqlite(self, conn: sqlite3.Connection, after: tuple | None) -> list[tuple]:
        where, params = "", []
        if after is not None:
            where = f"WHERE ({', '.join(self.side.sqlite_key)}) > ({', '.join('?' * self.nk)})"
            params = list(after)
        conn.execute("BEGIN")
        try:
            rate = _RATE.get()
            rows = conn.execute(f"SELECT {self.s_select} FROM {qi(self.plan.name)} {where} "
                                f"ORDER BY {', '.join(self.side.sqlite_key)} LIMIT {CHUNK}",
                                params).fetchall()
            if rate:
                time.sleep(len(rows) / rate)
            return rows
        finally:
            conn.execute("COMMIT")

    def convert(self, raw: list[tuple]) -> tuple[list[tuple], list[tuple]]:
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

    async def postgres(self, pg: asyncpg.Connection, lo: tuple | None, hi: tuple | None) -> list:
        cond, args = [], []
        types = self.side.pg_types
        for op, bound in ((">", lo), ("<=", hi)):
            if bound is not None:
                marks = ", ".join(f"${len(args) + i + 1}::{t}" for i, t in enumerate(types))
                cond.append(f"({', '.join(self.side.pg_key)}) {op} ({marks})")
                args += list(bound)
        where = f"WHERE {' AND '.join(cond)}" if cond else ""
        return await pg.fetch(f"SELECT {self.p_select} FROM {self.table} {where} "
                              f"ORDER BY {self.p_order}", *args)


async def _verify_merge(pg, src, plan: TablePlan, schema: str) -> TableReport:
    """Range by range: whole-list comparison, row-by-row merge only where a range differs."""
    side = _Side(plan, schema)
    ranges = _Ranges(side)
    rep = TableReport(plan.name)
    t0 = time.monotonic()
    qkeys = await _quarantined_keys(pg, plan.name)
    p_lo = None
    nk = ranges.nk
    ahead = asyncio.ensure_future(asyncio.to_thread(ranges.sqlite, src, None))
    try:
        while True:
            try:
                raw = await ahead
            except sqlite3.OperationalError as exc:
                if "decode" not in str(exc).lower():
                    raise
                return await _verify_merge_rows(pg, src, plan, schema)  # invalid UTF-8
            if not raw:
                for r in await ranges.postgres(pg, p_lo, None):
                    rep.note("extra", list(r[:nk]))
                break
            # Read the next SQLite range while this one is fetched from Postgres and compared.
            ahead = asyncio.ensure_future(asyncio.to_thread(ranges.sqlite, src, tuple(raw[-1][:nk])))
            rows, bad = ranges.convert(raw)
            try:
                hi = tuple(rows[-1][:nk]) if rows and not bad else _pg_key(side, raw[-1][:nk])
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


async def _merge_all(cfg: Config, target: TargetDSN, pg, src, tables: list) -> dict[str, TableReport]:
    """Full comparison of ``tables`` (TableState): in worker processes, one table each, when
    there is enough to compare (a process reads SQLite and decodes Postgres rows at about one
    core's worth; the GIL keeps threads from doing better); else here, one after the other."""
    schema = cfg.target_schema
    rows = sum(t.rows_copied + t.changes_applied for t in tables)
    workers = min(cfg.verify_workers, len(tables))
    if workers < 2 or _RATE.get() is not None or rows < PARALLEL_FROM or target.pooled:
        return {t.name: await _verify_merge(pg, src, t.plan, schema) for t in tables}
    from . import parallel

    loop = asyncio.get_running_loop()
    ctx = multiprocessing.get_context("spawn")
    job = (target, cfg.connect_timeout, cfg.tls_verify, str(cfg.source), cfg.busy_timeout_ms, schema)
    order = sorted(tables, key=lambda t: -(t.rows_copied + t.changes_applied))
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                             initializer=parallel._worker_init, initargs=(os.getpid(),)) as pool:
        futures = [loop.run_in_executor(pool, _merge_in_worker, job, t.plan.to_json())
                   for t in order]
        try:
            done = await asyncio.gather(*futures)
        except parallel.WorkerError as exc:
            if exc.kind == "target":
                raise TargetError(exc.message, retryable=exc.retryable) from None
            raise (StartupError if exc.kind == "startup" else SourceError)(exc.message) from None
    return {rep.table: rep for rep in done}


def _merge_in_worker(job: tuple, plan_json: dict) -> TableReport:
    """Entry point in a worker process: one table's full comparison."""
    from . import parallel
    from .errors import ReplicatorError, is_retryable_pg

    target, timeout, tls_verify, source, busy_ms, schema = job
    plan = TablePlan.from_json(plan_json)

    async def run() -> TableReport:
        log.add_secret(target.password)
        pg = await connect(target, timeout=timeout, tls_verify=tls_verify, retry_for=30)
        src = open_source(Path(source), readonly=True, busy_timeout_ms=busy_ms)
        try:
            return await _verify_merge(pg, src, plan, schema)
        finally:
            src.close()
            with contextlib.suppress(Exception):
                await pg.close()

    try:
        return asyncio.run(run())
    except ReplicatorError as exc:
        raise parallel.WorkerError(str(exc), exc.retryable, exc.kind) from None
    except sqlite3.Error as exc:
        raise parallel.WorkerError(f"source: table {plan.name!r}: {exc}", False, "source") from None
    except Exception as exc:  # noqa: BLE001 - carried back as text
        raise parallel.WorkerError(f"{type(exc).__name__}: {log.scrub(str(exc))}",
                                   is_retryable_pg(exc), "target") from None


def _pg_key(side: _Side, raw_key: tuple) -> tuple:
    if side.plan.rowid_keyed:
        return tuple(raw_key)
    return tuple(converter(c)(v) for c, v in zip(side.plan.key_plans, raw_key, strict=True))


def _merge_range(side: _Side, rep: TableReport, rows: list, bad: list, prows: list,
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


async def _verify_merge_rows(pg, src, plan: TablePlan, schema: str) -> TableReport:
    side = _Side(plan, schema)
    rep = TableReport(plan.name)
    t0 = time.monotonic()
    qkeys = await _quarantined_keys(pg, plan.name)
    s_after, p_after = None, None
    s_buf: list = []
    p_buf: list = []
    s_done = p_done = False
    nk = len(side.pg_key)
    while True:
        if not s_buf and not s_done:
            good, bad, s_after_new = await asyncio.to_thread(_convert_chunk, src, side, s_after, False)
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


def _merge_step(side: _Side, rep: TableReport, s_buf: list, p_buf: list, s_done: bool,
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
                rep.note("different", list(sk), column=side.differing(srow, prow))
        elif sk < pk:
            s_buf.pop()
            rep.note("missing", list(sk))
        else:
            p_buf.pop()
            rep.note("extra", list(pk))


async def _verify_sample(pg, src, plan: TablePlan, schema: str, fraction: float) -> TableReport:
    """Check a random fraction of SQLite rows by key, plus the row counts of both sides."""
    side = _Side(plan, schema)
    rep = TableReport(plan.name, sampled=True)
    t0 = time.monotonic()
    rng = random.Random()
    qkeys = await _quarantined_keys(pg, plan.name)
    after = None
    while True:
        good, bad, after_new = await asyncio.to_thread(_convert_chunk, src, side, after, False)
        if after_new is None:
            break
        after = after_new
        picked = [g for g in good if rng.random() < fraction]
        rep.quarantined += sum(1 for b in bad if json.dumps(b[0]) in qkeys)
        await _compare_keys(pg, side, rep, picked)
    src_count = src.execute(f"SELECT count(*) FROM {qi(plan.name)}").fetchone()[0]
    pg_count = await pg.fetchval(f"SELECT count(*) FROM {qualified(schema, plan.pg_name)}")
    if pg_count > src_count - rep.quarantined:
        rep.extra += pg_count - (src_count - rep.quarantined)
    rep.seconds = time.monotonic() - t0
    return rep


async def _compare_keys(pg, side: _Side, rep: TableReport, rows: list) -> None:
    if not rows:
        return
    found = await _pg_rows(pg, side, [k for k, _r in rows])
    for key, row in rows:
        prow = found.get(key)
        if prow is None:
            rep.note("missing", list(key))
        elif side.same(row, prow):
            rep.matched += 1
        else:
            rep.note("different", list(key), column=side.differing(row, prow))


async def _pg_rows(pg, side: _Side, keys: list[tuple]) -> dict[tuple, tuple]:
    cols = ", ".join(qi(c.pg_name) for c in side.plan.columns)
    table = qualified(side.schema, side.plan.pg_name)
    raw_keys = [k.split(' COLLATE')[0] for k in side.pg_key]
    nk = len(raw_keys)
    unnest = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(side.pg_types))
    names = ", ".join(f"k{i}" for i in range(nk))
    cond = " AND ".join(f"t.{raw_keys[i]} = u.k{i}" for i in range(nk))
    rows = await pg.fetch(
        f"SELECT {', '.join('t.' + k for k in raw_keys)}, {cols} FROM {table} t "
        f"JOIN unnest({unnest}) AS u({names}) ON {cond}",
        *[list(col) for col in zip(*keys, strict=True)],
    )
    return {tuple(r[:nk]): tuple(r[nk:]) for r in rows}


async def _verify_multiset(pg, src, plan: TablePlan, schema: str) -> TableReport:
    """Keyless tables after cutover (no rowid helper column): compare the multisets of rows."""
    from collections import Counter

    rep = TableReport(plan.name)
    t0 = time.monotonic()
    conn = src
    raw = await asyncio.to_thread(
        lambda: conn.execute(f"SELECT NULL, {select_list(plan, True)} FROM {qi(plan.name)}").fetchall()
    )
    good, bad = convert_rows(plan, raw, safe=True)
    rep.quarantined = len(bad)
    want = Counter(tuple(g[: len(plan.columns)]) for g in good)
    cols = ", ".join(qi(c.pg_name) for c in plan.columns)
    have = Counter(tuple(r) for r in await pg.fetch(
        f"SELECT {cols} FROM {qualified(schema, plan.pg_name)}"))
    for row, n in (want - have).items():
        for _ in range(n):
            rep.note("missing", list(row)[:3])
    for row, n in (have - want).items():
        for _ in range(n):
            rep.note("extra", list(row)[:3])
    rep.matched = sum((want & have).values())
    rep.seconds = time.monotonic() - t0
    return rep


async def _recheck(pg, src, cfg: Config, reports: list[TableReport], known, rounds: int) -> None:
    """Re-compare suspect keys once the target has applied what SQLite held at the pass's end."""
    for attempt in range(rounds):
        suspects = [r for r in reports if r.suspects and not r.ok]
        if not suspects:
            return
        if capture.installed(src):
            await _wait_for_cursor(pg, capture.log_high_water(src), timeout=10 + 10 * attempt)
        for rep in suspects:
            plan = known[rep.table].plan
            if plan.rowid_keyed and not await _has_rowid_column(pg, cfg.target_schema, plan):
                continue
            await _recheck_table(pg, src, plan, cfg.target_schema, rep)


async def _wait_for_cursor(pg, goal: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await state.load(pg)
        if st is None or st.cursor >= goal or st.state not in ("streaming", "cutover"):
            return
        await asyncio.sleep(0.2)


async def _recheck_table(pg, src, plan: TablePlan, schema: str, rep: TableReport) -> None:
    side = _Side(plan, schema)
    keys = [tuple(k) for kind in ("missing", "extra", "different") for k in rep.suspects.get(kind, [])]
    qkeys = await _quarantined_keys(pg, plan.name)
    fresh = TableReport(plan.name, sampled=rep.sampled)
    sqlite_rows = await asyncio.to_thread(_sqlite_rows_by_key, src, side, keys)
    found = await _pg_rows(pg, side, keys) if keys else {}
    for key in keys:
        srow = sqlite_rows.get(key)
        prow = found.get(key)
        if srow == "bad":
            if prow is None and json.dumps(key_to_json(list(key))) in qkeys:
                fresh.quarantined += 1
            else:
                fresh.note("missing", list(key))
        elif srow is None and prow is None:
            continue  # deleted on both sides
        elif srow is None:
            fresh.note("extra", list(key))
        elif prow is None:
            fresh.note("missing", list(key))
        elif side.same(srow, prow):
            fresh.matched += 1
        else:
            fresh.note("different", list(key), column=side.differing(srow, prow))
    rep.matched += fresh.matched
    rep.quarantined += fresh.quarantined
    for kind in ("missing", "extra", "different"):
        unchecked = getattr(rep, kind) - len(rep.suspects.get(kind, []))
        setattr(rep, kind, getattr(fresh, kind) + unchecked)
        rep.samples[kind] = fresh.samples[kind]
    rep.suspects = fresh.suspects


def _sqlite_rows_by_key(conn, side: _Side, keys: list[tuple]) -> dict[tuple, Any]:
    """Current SQLite rows (converted) for converted keys; "bad" where conversion fails."""
    out: dict[tuple, Any] = {}
    plan = side.plan
    exprs = [plan.rowid_name] if plan.rowid_keyed else [qi(k) for k in plan.key_columns]
    conn.execute("BEGIN")
    try:
        for key in keys:
            where = " AND ".join(f"{e} = ?" for e in exprs)
            params = [to_sqlite_value(v) for v in key]
            raw = conn.execute(
                f"SELECT {plan.rowid_name or 'NULL'}, {select_list(plan, True)} "
                f"FROM {qi(plan.name)} WHERE {where}", params).fetchall()
            if not raw:
                continue
            good, bad = convert_rows(plan, raw, safe=True)
            out[key] = "bad" if bad else tuple(good[0][: len(plan.columns)])
    finally:
        conn.execute("COMMIT")
    return out


def render(report: dict[str, Any]) -> str:
    lines = []
    for t in report["tables"]:
        mark = "ok  " if t["ok"] else "DIFF"
        extra = f", {t['quarantined']} quarantined" if t["quarantined"] else ""
        lines.append(
            f"{mark} {t['table']:30} matched {t['matched']:>9}  missing {t['missing']:>5}  "
            f"extra {t['extra']:>5}  different {t['different']:>5}{extra}"
        )
        if not t["ok"]:
            for kind in ("missing", "extra", "different"):
                for s in t["samples"][kind]:
                    lines.append(f"       {kind}: {s}")
    verdict = "everything matches" if report["ok"] else "DIFFERENCES FOUND"
    lines.append(
        f"\n{verdict}: {report['rows']} rows in {report['seconds']}s "
        f"({report['rows_per_s']} rows/s){' (sampled)' if report['sample'] else ''}"
    )
    return "\n".join(lines)
