"""Reverse apply: during the fallback window, the application's changes on Postgres go back into
the fenced SQLite file, so that ``rollback`` loses nothing.

One batch: one Postgres transaction takes the reverse lock (appliers run one after the other),
reads the oldest entries of ``_replicator.rlog``, then the current rows of their keys (a later
snapshot, so every entry's change is in them), and deletes those entries; then one SQLite write
transaction deletes the keys' rows and inserts the rows Postgres holds, each value back in its
SQLite form (``convert_back``); the Postgres transaction commits last, releasing the lock. Being
transaction-scoped, the lock also holds behind a transaction pooler. A crash in between applies
the batch again, which changes nothing (rows are re-read, not replayed). Postgres sequence numbers
are not commit order, so no cursor is kept: an entry leaves the log only once it is applied.

The replicator's SQLite connection passes the fence: inside its own write transaction it writes
the ``reverse_apply`` row the fence triggers check (``triggers/fence.sql``); no other connection
ever sees that row. The capture triggers fire on these writes; their log entries are removed in
the same transaction (they would only send Postgres its own values again).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from . import fallback, log, metrics, state
from .convert import key_to_json
from .convert_back import back_converter
from .errors import StateError, is_retryable_pg
from .plans import TablePlan
from .quoting import qi, qualified
from .session import Session
from .source import LOG_TABLE, META_TABLE
from .stream import SAMPLE_EVERY
from .target import backoff

_log = log.get("reverse")
BATCH = 5000
PASS_KEY = "reverse_apply"


class WindowClosed(Exception):
    """The fallback window is over (rolled back or finished): ``state`` says which."""

    def __init__(self, state_name: str):
        super().__init__(state_name)
        self.state = state_name


@dataclass
class TableChanges:
    plan: TablePlan
    truncated: bool = False
    keys: list[tuple[Any, ...]] = field(default_factory=list)  # SQLite key values to delete
    rows: list[tuple[Any, ...]] = field(default_factory=list)  # rows to insert (written columns)


@dataclass
class ReverseResult:
    entries: int = 0
    rows_written: int = 0
    rows_deleted: int = 0
    inexact: int = 0
    per_table: Counter[str] = field(default_factory=Counter)


class ReverseApplier:
    """Applies the reverse log to the SQLite file: ``batch``, ``drain``, or ``run`` until the
    window closes."""

    def __init__(self, session: Session, batch_size: int = BATCH):
        self.session = session
        self.batch_size = batch_size

    async def batch(self) -> ReverseResult:
        """One batch (possibly empty). Raises ``WindowClosed`` once the state is not fallback."""
        conn = self.session.conn
        t0 = time.monotonic()
        async with conn.transaction():
            await state.reverse_lock(conn)
            st = await state.load(conn)
            if st is None or st.state != "fallback":
                raise WindowClosed(st.state if st else "finished")
            entries = await state.rlog_batch(conn, self.batch_size)
            if not entries:
                return ReverseResult()
            # Read after the entries (READ COMMITTED: a newer snapshot): every entry's change is
            # in the rows, and a change that lands in between is applied again next batch.
            changes, inexact = await self._read(conn, entries)
            await state.rlog_forget(conn, [e[0] for e in entries])
            await self._quarantine(conn, changes, inexact)
            if any(inexact.values()) or any(self.session.quarantined.get(n) for n in changes):
                await self.session.count_quarantine(conn)  # the same gauge as forward
            for name, rows in inexact.items():
                if rows:
                    metrics.QUARANTINED.labels(name).inc(len(rows))
            result = await asyncio.to_thread(self.session.live.write,
                                             lambda c: _write(c, changes), what="reverse")
            result.entries = len(entries)
            result.inexact = sum(len(v) for v in inexact.values())
            await state.merge_info(conn, reverse_rows=int(st.info.get("reverse_rows", 0))
                                   + result.rows_written + result.rows_deleted,
                                   reverse_applied_at=time.time())
        metrics.REVERSE_APPLIED.inc(result.entries)
        metrics.REVERSE_LAST_APPLY.set(time.time())
        if result.inexact:
            _log.warning("reverse_inexact", rows=result.inexact,
                         detail="values with no exact SQLite form: written by the stated rule, "
                         "and kept in _replicator.quarantine (see `replicator status`)")
        _log.debug("reverse_batch", entries=result.entries, written=result.rows_written,
                   deleted=result.rows_deleted, seconds=round(time.monotonic() - t0, 4))
        return result

    async def _quarantine(self, conn: asyncpg.Connection, changes: dict[str, TableChanges],
                          inexact: dict[str, list[Any]]) -> None:
        """Rows written back in a wider form go into the quarantine; rows of a table that may
        hold some and that went back exactly (or were deleted) leave it."""
        held = self.session.quarantined
        for name, table in changes.items():
            if held.get(name):
                if table.truncated:
                    await state.quarantine_clear_table(conn, name)
                wider = {json.dumps(item[0]) for item in inexact.get(name, [])}
                exact = [key_to_json(k) for k in table.keys]
                await state.quarantine_clear(conn, name, [k for k in exact
                                                          if json.dumps(k) not in wider])
            if inexact.get(name):
                await state.quarantine_put(conn, name, inexact[name])
                held[name] = True

    async def _read(self, conn: asyncpg.Connection, entries: list[tuple[int, str, str | None]]
                    ) -> tuple[dict[str, TableChanges], dict[str, list[Any]]]:
        keys: dict[str, set[str]] = defaultdict(set)
        changes: dict[str, TableChanges] = {}
        for _seq, name, key in entries:
            target = self.session.targets.get(name)
            if target is None:
                raise StateError(f"reverse: the reverse log names table {name!r}, which "
                                       "this replication does not hold")
            table = changes.setdefault(name, TableChanges(target.plan))
            if key is None:
                table.truncated = True
            else:
                keys[name].add(key)
        inexact: dict[str, list[Any]] = {}
        for name, table in changes.items():
            if keys[name]:
                inexact[name] = await self._rows(conn, table, sorted(keys[name]))
        return changes, {n: v for n, v in inexact.items() if v}

    async def _rows(self, conn: asyncpg.Connection, table: TableChanges, keys: list[str]
                    ) -> list[Any]:
        """The keys' current rows, into ``table`` as SQLite values; returns the rows with a value
        that has no exact SQLite form (for the quarantine)."""
        plan = table.plan
        key_plans = fallback.key_plans(plan)
        casts = [f"(k.raw::jsonb->>{i})::{c.pg_type}" for i, c in enumerate(key_plans)]
        on = " AND ".join(f"t.{qi(c.pg_name)} = {cast}" for c, cast in zip(key_plans, casts,
                                                                          strict=True))
        cols = [c for c in plan.columns if not c.generated]
        rows = await conn.fetch(
            f"SELECT {', '.join(casts)}, t.ctid IS NOT NULL AS present"
            + "".join(f", t.{qi(c.pg_name)}" for c in cols)
            + f" FROM unnest($1::text[]) AS k(raw) LEFT JOIN "
            f"{qualified(self.session.schema, plan.pg_name)} t ON {on}", keys)
        key_back = [back_converter(c) for c in key_plans]
        col_back = [back_converter(c) for c in cols]
        width = len(key_plans)
        bad = []
        for r in rows:
            table.keys.append(tuple(fn(r[i]).value for i, fn in enumerate(key_back)))
            if not r[width]:
                continue
            values = [fn(r[width + 1 + i]) for i, fn in enumerate(col_back)]
            table.rows.append(tuple(v.value for v in values))
            for col, raw, back in zip(cols, list(r)[width + 1:], values, strict=True):
                if not back.exact:
                    sqlite_row = [v.value for v in values]
                    bad.append((key_to_json(table.keys[-1]), key_to_json(sqlite_row), col.name,
                                f"{state.REVERSE_REASON}Postgres {col.pg_type} {_shown(raw)} has "
                                f"no exact SQLite form in this column's layout; written as "
                                f"{_shown(back.value)}"))
                    break
        return bad

    async def position(self) -> tuple[int, float]:
        backlog, lag = await state.rlog_position(self.session.conn)
        metrics.REVERSE_BACKLOG.set(backlog)
        metrics.REVERSE_LAG_SECONDS.set(lag)
        return backlog, lag

    async def drain(self, timeout: float, *, catch_up: bool = False) -> ReverseResult:
        """Apply until the reverse log is empty (``rollback``, after the Postgres fence); with
        ``catch_up``, until a batch is not full (the application may still be writing)."""
        deadline = time.monotonic() + timeout
        total = ReverseResult()
        while True:
            done = await self.batch()
            _add(total, done)
            if not done.entries or catch_up and done.entries < self.batch_size:
                return total
            if time.monotonic() > deadline:
                raise TimeoutError(f"rollback: the reverse log did not drain in {timeout:.0f}s")

    async def run(self, stop: asyncio.Event) -> str:
        """Apply batch after batch until ``stop`` or the window closes; returns the state then
        (``fallback`` when stopped)."""
        session = self.session
        session.progress.set_state("fallback")
        _log.info("fallback_window", detail="applying the application's changes on Postgres back "
                  "into the SQLite file; `replicator rollback` or `replicator finish` ends it")
        errors = 0
        last_summary, applied = time.monotonic(), 0
        last_sample, sampled = 0.0, 0
        while not stop.is_set():
            try:
                done = await session.bounded(self.batch(), "a reverse batch")
                backlog, lag = await self.position()
                # The screen and /readyz show the side that moves now; the forward gauges stay.
                session.progress.backlog, session.progress.lag_seconds = backlog, lag
                errors = 0
            except WindowClosed as closed:
                _log.info("fallback_closed", state=closed.state)
                return closed.state
            except Exception as exc:  # noqa: BLE001 - retried; classified below
                errors += 1
                await _sleep(stop, await self._on_error(exc, errors))
                continue
            applied += done.entries
            sampled += done.entries
            session.progress.applied += done.entries
            if time.monotonic() - last_sample >= SAMPLE_EVERY:
                with contextlib.suppress(Exception):  # a chart point is never worth an error
                    await state.sample(session.conn, "reverse", lag, backlog, sampled)
                last_sample, sampled = time.monotonic(), 0
            if time.monotonic() - last_summary >= session.cfg.summary_interval:
                _log.info("fallback_summary", applied=applied, backlog=backlog,
                          lag_seconds=round(lag, 3))
                last_summary, applied = time.monotonic(), 0
            # As forward: a pause between batches (larger batches, far fewer commits on both
            # sides), and the poll interval when there was nothing to apply.
            await _sleep(stop, session.cfg.batch_interval if done.entries
                         else session.cfg.poll_interval)
        return "fallback"

    async def _on_error(self, exc: BaseException, errors: int) -> float:
        session = self.session
        kind = "target" if is_retryable_pg(exc) else "reverse"
        metrics.ERRORS.labels(kind).inc()
        session.progress.errors += 1
        if errors == 1 or errors % 10 == 0:
            _log.warning("reverse_error", kind=kind, error=f"{type(exc).__name__}: {exc}",
                         attempt=errors)
        if is_retryable_pg(exc) or isinstance(exc, (OSError, asyncpg.InterfaceError)):
            with contextlib.suppress(Exception):
                await session.reconnect()
                metrics.TARGET_RECONNECTS.inc()
        return backoff(errors)


def _write(c: sqlite3.Connection, changes: dict[str, TableChanges]) -> ReverseResult:
    """Inside the replicator's write transaction on the live file."""
    result = ReverseResult()
    c.execute(f"INSERT INTO {qi(META_TABLE)} (key, value) VALUES (?, 1) "
              "ON CONFLICT (key) DO UPDATE SET value = 1", (PASS_KEY,))
    before = c.execute(f"SELECT coalesce(max(seq), 0) FROM {qi(LOG_TABLE)}").fetchone()[0]
    for name, table in changes.items():
        plan = table.plan
        if table.truncated:
            result.rows_deleted += c.execute(f"DELETE FROM {qi(name)}").rowcount
        where = " AND ".join(f"{qi(k.name)} IS ? COLLATE BINARY" for k in fallback.key_plans(plan))
        c.executemany(f"DELETE FROM {qi(name)} WHERE {where}", table.keys)
        cols = [qi(col.name) for col in plan.columns if not col.generated]
        c.executemany(f"INSERT INTO {qi(name)} ({', '.join(cols)}) VALUES "
                      f"({', '.join('?' * len(cols))})", table.rows)
        result.rows_written += len(table.rows)
        result.rows_deleted += len(table.keys) - len(table.rows)  # keys Postgres no longer holds
        result.per_table[name] += len(table.keys)
    c.execute(f"DELETE FROM {qi(LOG_TABLE)} WHERE seq > ?", (before,))
    c.execute(f"DELETE FROM {qi(META_TABLE)} WHERE key = ?", (PASS_KEY,))
    return result


def _shown(value: Any, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _add(total: ReverseResult, one: ReverseResult) -> None:
    total.entries += one.entries
    total.rows_written += one.rows_written
    total.rows_deleted += one.rows_deleted
    total.inexact += one.inexact
    total.per_table.update(one.per_table)


async def _sleep(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


def summary(result: ReverseResult) -> dict[str, Any]:
    return {"entries": result.entries, "rows_written": result.rows_written,
            "rows_deleted": result.rows_deleted, "inexact": result.inexact,
            "tables": dict(result.per_table)}
