"""Tail the change log: wake on file changes (a hint) or a timer (the truth), read batches.

A batch is everything visible in one SQLite read transaction: the log entries after the cursor
up to the high-water mark read at the start of the transaction, and the current state of every
row they name, read in that same transaction. SQLite serialises writers, so log order is commit
order and a batch never splits a source transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import aiosqlite
import watchfiles

from . import log
from .capture import POSITION_SQL, LogPosition, position_from
from .convert import select_list
from .plans import TablePlan
from .quoting import qi
from .source import LOG_TABLE
from .source import _uri_path as uri_path

_log = log.get("tail")
MAX_PARAMS = 30_000
_HIGH_SQL = f"SELECT coalesce(max(seq), 0) FROM {qi(LOG_TABLE)}"  # pruning keeps the newest row


class Watcher:
    """Sets ``event`` when the database or its WAL changes; lost events only delay a batch."""

    def __init__(self, source: Path, *, force_polling: bool = False):
        self.source = source.resolve()
        self.names = {self.source.name, self.source.name + "-wal", self.source.name + "-journal"}
        self.event = asyncio.Event()
        self.force_polling = force_polling

    async def run(self, stop: asyncio.Event) -> None:
        try:
            async for _changes in watchfiles.awatch(
                self.source.parent,
                watch_filter=lambda _c, p: Path(p).name in self.names,
                debounce=5,
                step=5,
                stop_event=stop,
                force_polling=self.force_polling or None,
                poll_delay_ms=100,
                recursive=False,
                ignore_permission_denied=True,
            ):
                self.event.set()
        except Exception as exc:  # noqa: BLE001 - the timer still drives the loop
            _log.warning("watch_failed", error=str(exc), fallback="timer")

    async def wait(self, timeout: float, stop: asyncio.Event) -> None:
        """Until a change event, ``stop``, or ``timeout`` seconds (the polling fallback)."""
        waits = [asyncio.ensure_future(self.event.wait()), asyncio.ensure_future(stop.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        self.event.clear()


class Tail:
    """The daemon's reading connection to the live file."""

    def __init__(self, source: Path, busy_timeout_ms: int, page: int):
        self.source = source
        self.busy_timeout_ms = busy_timeout_ms
        self.page = page
        self.conn: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.conn = await aiosqlite.connect(
            f"file:{uri_path(self.source)}?mode=rw", uri=True, isolation_level=None,
            timeout=self.busy_timeout_ms / 1000,
        )
        await self.conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
            self.conn = None

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        assert self.conn is not None
        async with self.conn.execute(sql, params) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[ReadTxn]:
        """A read transaction; everything inside sees one snapshot of the file."""
        assert self.conn is not None
        await self.conn.execute("BEGIN")
        try:
            # The first read fixes the snapshot; schema_version comes from that same snapshot.
            version = await self._one("PRAGMA schema_version")
            high = await self._one(_HIGH_SQL)
            yield ReadTxn(self, int(version), int(high or 0))
        finally:
            with contextlib.suppress(sqlite3.Error):
                await self.conn.execute("ROLLBACK")

    async def quick(self) -> tuple[int, int]:
        """(schema_version, log high-water mark), read outside any batch: a cheap hint."""
        polled = await self.poll(0)
        return polled.schema_version, polled.high

    async def poll(self, cursor: int) -> LogPosition:
        """Where the log stands (capture.POSITION_SQL: one statement, one short read lock)."""
        assert self.conn is not None
        async with self.conn.execute(POSITION_SQL, (cursor,)) as cur:
            row = await cur.fetchone()
        assert row is not None  # an aggregate always returns a row
        return position_from(tuple(row), cursor)


class RowSet(NamedTuple):
    rows: list[tuple[Any, ...]]
    safe: bool  # TEXT read as bytes plus typeof (see convert.select_list)


class ReadTxn:
    def __init__(self, tail: Tail, schema_version: int, high: int):
        self.tail = tail
        self.schema_version = schema_version
        self.high = high

    async def entries(self, after: int) -> AsyncIterator[list[tuple[Any, ...]]]:
        """Log entries with after < seq <= high, in pages of ``tail.page``."""
        conn = self.tail.conn
        assert conn is not None
        width = await self._key_width()
        keys = ", ".join(f"k{i + 1}" for i in range(width))
        sql = (
            f"SELECT seq, ts, tbl, op, {keys} FROM {qi(LOG_TABLE)} "
            "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
        )
        while after < self.high:
            async with conn.execute(sql, (after, self.high, self.tail.page)) as cur:
                rows = [tuple(r) for r in await cur.fetchall()]
            if not rows:
                return
            after = rows[-1][0]
            yield rows

    async def _key_width(self) -> int:
        conn = self.tail.conn
        assert conn is not None
        async with conn.execute(f"PRAGMA table_info({qi(LOG_TABLE)})") as cur:
            cols = [r[1] for r in await cur.fetchall()]
        return sum(1 for c in cols if c.startswith("k") and c[1:].isdigit())

    async def oldest_ts(self, after: int) -> float | None:
        ts: float | None = await self.tail._one(
            f"SELECT ts FROM {qi(LOG_TABLE)} WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT 1",
            (after, self.high),
        )
        return ts

    async def rowid_fingerprint(self, plan: TablePlan) -> tuple[int, int]:
        """(count, sum of rowids) of a rowid-keyed table, in this snapshot. The sum is exact:
        SQLite's sum() of 64-bit rowids overflows ("integer overflow") as soon as two are near
        2^63, so the high and low 32 bits are summed apart and put together here."""
        conn = self.tail.conn
        assert conn is not None
        rid = plan.rowid_name
        async with conn.execute(
            f"SELECT count(*), coalesce(sum({rid} >> 32), 0), coalesce(sum({rid} & 4294967295), 0) "
            f"FROM {qi(plan.name)}"
        ) as cur:
            row = await cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1]) * 2**32 + int(row[2])

    async def rows(self, plan: TablePlan, keys: Sequence[tuple[Any, ...]]) -> RowSet:
        """Current rows for ``keys`` as ``(rowid, *columns)``; read as-is, or in the safe
        (typeof-tagged) form when some TEXT is not valid UTF-8."""
        try:
            return RowSet(await self._rows(plan, keys, safe=False), safe=False)
        except sqlite3.OperationalError as exc:
            if "decode" not in str(exc).lower():
                raise
            return RowSet(await self._rows(plan, keys, safe=True), safe=True)

    async def _rows(self, plan: TablePlan, keys: Sequence[tuple[Any, ...]], safe: bool
                    ) -> list[tuple[Any, ...]]:
        conn = self.tail.conn
        assert conn is not None
        if not keys:
            return []
        key_exprs = (
            [plan.rowid_name] if plan.rowid_keyed else [qi(k) for k in plan.key_columns]
        )
        rowid = plan.rowid_name or "NULL"
        head = f"SELECT {rowid}, {select_list(plan, safe=safe)} FROM {qi(plan.name)} WHERE "
        width = len(key_exprs)
        per = max(1, MAX_PARAMS // width)
        out: list[tuple[Any, ...]] = []
        for i in range(0, len(keys), per):
            part = keys[i : i + per]
            if width == 1:
                where = f"{key_exprs[0]} IN ({', '.join('?' * len(part))})"
                params = [k[0] for k in part]
            else:
                one = "(" + ", ".join("?" * width) + ")"
                where = f"({', '.join(key_exprs)}) IN (VALUES {', '.join([one] * len(part))})"
                params = [v for k in part for v in k]
            async with conn.execute(head + where, params) as cur:
                out.extend(tuple(r) for r in await cur.fetchall())
        return out
