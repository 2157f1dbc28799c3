"""``replicator queries replay``: run each read-only query on SQLite and its translation on
Postgres, and say which return different rows.

Nothing can write: a query must be a SELECT (or WITH ... SELECT) for sqlglot; SQLite is opened
``mode=ro`` with ``PRAGMA query_only`` and an authorizer that denies every write action; each
Postgres run is a ``BEGIN READ ONLY`` transaction that is rolled back, with a statement timeout.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from .. import log
from ..source import open_source
from .advise import Advice, PlanScan, plan_scans, plan_summary
from .catalog import Catalog
from .compare import compare
from .corpus import Query
from .sqltext import find_params
from .translate import parse, translate

_log = log.get("queries.replay")

# sqlite3 authorizer action codes that only read
_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                 sqlite3.SQLITE_RECURSIVE, sqlite3.SQLITE_TRANSACTION}


@dataclass
class QueryResult:
    name: str
    origin: str
    sqlite_sql: str
    postgres_sql: str | None
    status: str  # same | different | failed | skipped
    reason: str = ""
    expect: str | None = None
    sqlite_rows: int | None = None
    pg_rows: int | None = None
    sqlite_row: list | None = None
    pg_row: list | None = None
    sqlite_ms: float | None = None
    pg_ms: float | None = None
    plan: dict | None = None
    traps: list = field(default_factory=list)

    @property
    def as_expected(self) -> bool:
        if self.expect is not None:
            return self.status == self.expect
        return self.status in ("same", "skipped")

    def to_json(self) -> dict:
        data = asdict(self)
        data["as_expected"] = self.as_expected
        for k in ("sqlite_row", "pg_row"):
            if data[k] is not None:
                data[k] = [_jsonable(v) for v in data[k]]
        return data


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, bytes):
        return {"bytes": v.hex()}
    return str(v)


@dataclass
class ReplayReport:
    source: str
    target: str
    results: list[QueryResult]
    advice: list[Advice] = field(default_factory=list)
    scans: list[PlanScan] = field(default_factory=list)  # sequential scans seen in the plans

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("same", "different", "failed", "skipped"), 0)
        for r in self.results:
            out[r.status] += 1
        return out

    @property
    def ok(self) -> bool:
        return all(r.as_expected for r in self.results)

    def to_json(self) -> dict:
        return {"source": self.source, "target": self.target, "counts": self.counts(),
                "ok": self.ok, "results": [r.to_json() for r in self.results],
                "advice": [a.to_json() for a in self.advice]}


def open_readonly(path: Path) -> sqlite3.Connection:
    """SQLite for replay: read-only file mode, query_only, and an authorizer denying writes."""
    conn = open_source(path, readonly=True)
    conn.execute("PRAGMA query_only = ON")
    conn.set_authorizer(_authorize)
    return conn


def _authorize(action: int, *_args: Any) -> int:
    return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY


class Replayer:
    """Runs queries against both sides; one SQLite and one Postgres connection."""

    def __init__(self, sqlite_conn: sqlite3.Connection, pg: asyncpg.Connection,
                 catalog: Catalog | None, *, runs: int = 3, slow_ms: float = 200.0,
                 timeout_s: float = 30.0):
        self.sqlite, self.pg, self.catalog = sqlite_conn, pg, catalog
        self.runs, self.slow_ms, self.timeout_s = max(1, runs), slow_ms, timeout_s
        self.scans: list[PlanScan] = []

    async def run(self, q: Query) -> QueryResult:
        tr = translate(q.sql, "asyncpg", self.catalog)
        res = QueryResult(q.name, q.origin, q.sql, tr.postgres, "skipped", expect=q.expect,
                          traps=[t.to_json() for t in tr.traps])
        if tr.error:
            res.status, res.reason = "failed", f"cannot parse as SQLite SQL: {tr.error}"
            return res
        if not tr.read_only:
            res.reason = f"refused: not a read-only query ({tr.kind}); nothing was executed"
            return res
        params = find_params(q.sql)
        if re.search(r"__expr\d+__", q.sql):
            res.reason = "built by string interpolation in the source; nothing to replay"
            return res
        if params and q.params is None:
            res.reason = ("has bind parameters; add a '-- params: [...]' line to replay it")
            return res
        if tr.postgres is None:
            res.status, res.reason = "failed", "no Postgres translation"
            return res
        await self._execute(q, tr.postgres, params, res)
        return res

    async def explain_only(self, q: Query) -> None:
        """Collect the plan's sequential scans without running the query (for advise)."""
        tr = translate(q.sql, "asyncpg", self.catalog)
        params = find_params(q.sql)
        if tr.error or not tr.read_only or tr.postgres is None or (params and q.params is None):
            return
        res = QueryResult(q.name, q.origin, q.sql, tr.postgres, "skipped")
        pg_args = list(q.params or [])[:max((p.index for p in params), default=0)]
        await self._plan(q, tr.postgres, pg_args, res)

    async def _execute(self, q: Query, pg_sql: str, params: list, res: QueryResult) -> None:
        sqlite_args = _sqlite_args(params, q.params or [])
        pg_args = list(q.params or [])[:max((p.index for p in params), default=0)]
        try:
            rows_s, res.sqlite_ms = await asyncio.to_thread(self._sqlite, q.sql, sqlite_args)
        except sqlite3.Error as exc:
            res.status, res.reason = "failed", f"SQLite: {' '.join(str(exc).split())}"
            return
        try:
            rows_p, res.pg_ms = await self._postgres(pg_sql, pg_args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            state = getattr(exc, "sqlstate", None)
            res.status = "failed"
            text = " ".join(str(exc).split())
            res.reason = log.scrub(f"Postgres: {text}" + (f" [{state}]" if state else ""))
            res.sqlite_rows = len(rows_s)
            return
        res.sqlite_rows, res.pg_rows = len(rows_s), len(rows_p)
        outcome = compare(rows_s, rows_p, _ordered(q.sql))
        res.status = "same" if outcome.same else "different"
        res.reason, res.sqlite_row, res.pg_row = outcome.reason, outcome.sqlite_row, outcome.pg_row
        await self._plan(q, pg_sql, pg_args, res)

    def _sqlite(self, sql: str, args: Any) -> tuple[list, float]:
        times, rows = [], []
        for _ in range(self.runs):
            t0 = time.perf_counter()
            self.sqlite.execute("BEGIN")
            try:
                rows = self.sqlite.execute(sql, args).fetchall()
            finally:
                self.sqlite.execute("ROLLBACK")
            times.append((time.perf_counter() - t0) * 1000)
        return rows, round(statistics.median(times), 3)

    async def _readonly(self, sql: str, args: list) -> list:
        tx = self.pg.transaction(readonly=True)
        await tx.start()
        try:
            await self.pg.execute(f"SET LOCAL statement_timeout = {int(self.timeout_s * 1000)}")
            return await self.pg.fetch(sql, *args)
        finally:
            await tx.rollback()

    async def _postgres(self, sql: str, args: list) -> tuple[list, float]:
        times, rows = [], []
        for _ in range(self.runs):
            t0 = time.perf_counter()
            rows = await self._readonly(sql, args)
            times.append((time.perf_counter() - t0) * 1000)
        return [tuple(r) for r in rows], round(statistics.median(times), 3)

    async def _plan(self, q: Query, sql: str, args: list, res: QueryResult) -> None:
        """EXPLAIN every replayed query (for index advice); ANALYZE + BUFFERS when slow."""
        slow = res.pg_ms is not None and res.pg_ms >= self.slow_ms
        opts = "ANALYZE, BUFFERS, FORMAT JSON" if slow else "FORMAT JSON"
        try:
            rows = await self._readonly(f"EXPLAIN ({opts}) {sql}", args)
        except asyncpg.PostgresError as exc:
            _log.warning("explain_failed", query=q.name, error=log.scrub(str(exc)))
            return
        plan = rows[0][0]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        top = plan[0]
        self.scans += plan_scans(top["Plan"], q.name)
        if slow:
            res.plan = plan_summary(top)


def _ordered(sql: str) -> bool:
    """Does the query have a top-level ORDER BY (so row order is part of the answer)?"""
    try:
        tree = parse(sql)[0]
    except Exception:  # noqa: BLE001 - translation already parsed it; be safe
        return False
    return bool(tree.args.get("order"))


def _sqlite_args(params: list, values: list) -> Any:
    """Bind values by SQLite parameter number; named parameters need a dict in sqlite3."""
    if not params:
        return ()
    if all(p.token.startswith("?") for p in params):
        return tuple(values)
    out = {}
    for p in params:
        if not p.token.startswith("?") and p.index - 1 < len(values):
            out[p.token[1:]] = values[p.index - 1]
    return out


async def replay(queries: list[Query], source: Path, pg: asyncpg.Connection,
                 catalog: Catalog | None, target_masked: str, **kw: Any) -> ReplayReport:
    """Replay ``queries``; the caller owns the Postgres connection."""
    conn = open_readonly(source)
    replayer = Replayer(conn, pg, catalog, **{k: v for k, v in kw.items()
                                              if k in ("runs", "slow_ms", "timeout_s")})
    try:
        results = [await replayer.run(q) for q in queries]
    finally:
        conn.close()
    return ReplayReport(str(source), target_masked, results, scans=replayer.scans)
