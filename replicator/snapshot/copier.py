"""Copy one table (or one rowid range of it) from a frozen read into Postgres, chunk by chunk.

Where every column has a rendering (``convert.render_line``), SQLite writes each chunk as one
string of COPY CSV and no value becomes a Python object; a chunk Postgres refuses goes through
the checking converters. Otherwise rows go from SQLite's ``fetchmany`` into a binary ``COPY``
column by column when the census proves every value of every column (``convert.proven``: as it
is, or through a converter whose checks the census made); else row by row through the checking
converters. With a sampled census, a value the sample did not foresee raises ``SampleBroken``
(the table is planned again, ``units.Coordinator``). Every chunk
commits together with its resume point, so after a crash a half-copied table resumes from its
last committed chunk.
``prepare_table`` (re)creates a table the replicator owns; ``finish_table`` adds its keys and
indexes and records it done, in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg

from .. import ddl, existing, log, metrics, state
from ..census import TableCensus
from ..census import prepare as census_functions
from ..convert import (
    UNFORESEEN,
    as_is,
    convert_columns,
    convert_rows,
    no_type_holds,
    proven_columns,
    render_functions,
    render_line,
    sample_proofs,
    select_list,
)
from ..errors import BadValueError, SnapshotIncomplete, SourceError, StartupError
from ..plans import TablePlan, write_columns, write_projection
from ..quoting import qi, qualified
from ..source import KEY_ALIAS
from ..target import table_exists
from .frozen import Frozen

_log = log.get("snapshot")
CHUNK_BYTES = 8 * 1024 * 1024
MAX_CHUNK_ROWS = 20_000
# A rendered chunk is text of about RENDERED_CHUNK_BYTES (SQLite's string grows by doubling
# and is copied twice on its way to Python, and the next chunk is read while one is written),
# of at most RENDERED_CHUNK_ROWS rows (a chunk Postgres refuses is converted whole).
RENDERED_CHUNK_BYTES, RENDERED_CHUNK_ROWS = 2 * 1024 * 1024, 50_000



_UNSTORABLE_TEXT = (asyncpg.exceptions.CharacterNotInRepertoireError,
                    asyncpg.exceptions.UntranslatableCharacterError)


class Interrupted(Exception):
    """A stop was requested between two committed chunks; the copy resumes on the next run."""


class SampleBroken(Exception):
    """A value the sampled census did not foresee: the table is to be planned again from every
    row (the chunk holding it was not written). Plain strings, so it pickles across processes."""

    def __init__(self, table: str, column: str, why: str):
        super().__init__(table, column, why)
        self.table, self.column, self.why = table, column, why

    def __str__(self) -> str:
        return f"table {self.table!r}, column {self.column!r}: {self.why}"


@dataclass(frozen=True)
class Unit:
    """A part of a table copied on its own (a rowid range; the whole table when lo is None),
    with its progress recorded in ``_replicator.units`` chunk by chunk."""

    table: str
    id: int
    lo: int | None
    hi: int | None


@dataclass
class CopyResult:
    rows: int
    quarantined: int
    seconds: float


class TableCopier:
    """Copies one table from a frozen read into Postgres, chunk by chunk."""

    def __init__(
        self,
        pg: asyncpg.Connection,
        frozen: Frozen,
        plan: TablePlan,
        schema: str,
        *,
        census: TableCensus | None,
        progress: Callable[[str, int, int], None] | None = None,
        stop: asyncio.Event | None = None,
        unit: Unit | None = None,
        should_stop: Callable[[], bool] | None = None,
        render: bool = True,
    ):
        self.pg, self.frozen, self.plan, self.schema = pg, frozen, plan, schema
        self.census = census
        self.progress = progress
        self.stop = stop
        self.unit = unit
        self.should_stop = should_stop  # a callable checked between chunks (worker processes)
        self.total = census.rows if census else 0
        self.columns = write_columns(plan)
        self.project = write_projection(plan)
        self.use_rowid = bool(plan.rowid_name)
        # When the census proves every column, rows go from SQLite's fetchmany into the binary
        # COPY with no Python work per row: columns as they are or mapped by a C function.
        self.proven = proven_columns(plan, census) \
            if census is not None and self.project is None else None
        self.mapped = self.proven is not None and any(fn is not as_is for fn in self.proven)
        # A sampled census: the copy's own SELECT proves every row is one the sample foresaw.
        self.proofs = sample_proofs(plan, census) if census is not None and plan.rowid_name \
            else []
        self.proof = " AND ".join(sql for _c, sql in self.proofs)
        self.sampled = bool(census and census.sampled)
        self._unforeseen: list[int] = []  # rowids the proof failed on, filled by SQLite
        # Where every column has a rendering, SQLite writes each chunk as COPY CSV.
        self.line = render_line(plan, census) if render and plan.rowid_name and \
            self.project is None and not plan.existing else None
        self.alias_at = next((i for i, c in enumerate(plan.columns)
                              if plan.key_kind == KEY_ALIAS and c.name in plan.key_columns), None)

    @property
    def passthrough(self) -> bool:
        """Rows go column by column (``proven``), not row by row through the checks."""
        return self.proven is not None

    @staticmethod
    def rows_for_budget(sample: list[tuple[Any, ...]]) -> int:
        """Rows per chunk so a chunk holds about CHUNK_BYTES of Python objects, from the size of a
        first sample: a table of 1 MB BLOBs and a table of small integers need very different
        chunks. (A worker holds about three chunks at once: the one being converted and written,
        its converted rows, and the next one being read.)"""
        size = sum(sys.getsizeof(row) + sum(map(sys.getsizeof, row)) for row in sample)
        per_row = max(1, size // max(1, len(sample)))
        return max(1, min(MAX_CHUNK_ROWS, CHUNK_BYTES // per_row))

    def _query(self, safe: bool, after: int | None, offset: int) -> tuple[str, tuple[Any, ...]]:
        sel = select_list(self.plan, safe)
        if self.passthrough and not safe:
            # (columns[, rowid]): exactly the COPY layout; the rowid is last, or is the alias.
            sel = ", ".join(qi(c.name) for c in self.plan.columns)
            if self.use_rowid and self.alias_at is None:
                sel += f", {self.plan.rowid_name}"
        else:
            sel = f"{self.plan.rowid_name or 'NULL'}, {sel}" if self.use_rowid else f"NULL, {sel}"
        table = qi(self.plan.name)
        if self.use_rowid:
            rid = self.plan.rowid_name
            conds, params = self._bounds(after)
            if self.proof:  # SQLite calls the function only on a row the proof fails on
                conds.append(f"({self.proof} OR _replicator_unforeseen({rid}))")
            where = f" WHERE {' AND '.join(conds)}" if conds else ""
            return f"SELECT {sel} FROM {table}{where} ORDER BY {rid}", params
        order = ", ".join(qi(k) for k in self.plan.key_columns) or "1"
        return (f"SELECT {sel} FROM {table} ORDER BY {order} LIMIT -1 OFFSET ?", (offset,))

    def _bounds(self, after: int | None, upto: int | None = None
                ) -> tuple[list[str], tuple[int, ...]]:
        """The rowid conditions (and their parameters) of the rows after ``after`` in this
        unit (up to ``upto``). Bounds only where there is one: a rowid can be any 64-bit
        integer, the smallest included, so "above the smallest" would leave that row out."""
        rid = self.plan.rowid_name
        lo = after if after is not None else (self.unit.lo if self.unit else None)
        hi = upto if upto is not None else (self.unit.hi if self.unit else None)
        bounds = [(f"{rid} > ?", lo), (f"{rid} <= ?", hi)]
        return [c for c, v in bounds if v is not None], tuple(v for _c, v in bounds if v is not None)

    def _chunks(self, safe: bool, after: int | None, offset: int) -> Iterator[list[tuple[Any, ...]]]:
        sql, params = self._query(safe, after, offset)
        if self.proof:
            census_functions(self.frozen.conn)
            self._unforeseen.clear()
            self.frozen.conn.create_function("_replicator_unforeseen", 1, self._note_unforeseen)
        cur = self.frozen.conn.execute(sql, params)
        n = 1000
        while True:
            rows = cur.fetchmany(n)
            if self._unforeseen:
                raise self._broken_at(self._unforeseen[0])
            if not rows:
                return
            yield rows
            n = self.rows_for_budget(rows[:200]) if n == 1000 else n

    def _note_unforeseen(self, rowid: int) -> int:
        self._unforeseen.append(rowid)
        return 1

    def _broken_at(self, rowid: int) -> SampleBroken:
        """The first column of row ``rowid`` whose value the sample did not foresee."""
        names = [qi(name) for name, _sql in self.proofs]
        row = self.frozen.conn.execute(
            f"SELECT {', '.join(sql for _n, sql in self.proofs)}, "
            f"{', '.join(f'quote({q})' for q in names)}, {', '.join(f'typeof({q})' for q in names)} "
            f"FROM {qi(self.plan.name)} WHERE {self.plan.rowid_name} = ?", (rowid,)).fetchone()
        n = len(names)
        at = next((i for i in range(n) if not row[i]), 0)
        column = self.proofs[at][0]
        return SampleBroken(self.plan.name, column,
                            f"rowid {rowid}: {str(row[n + at])[:80]} ({row[2 * n + at]}) was not "
                            f"foreseen by the census's sample, which chose "
                            f"{self.plan.column(column).pg_type}")

    async def run(
        self,
        *,
        resume_after: int | None = None,
        done_rows: int = 0,
        per_chunk_txn: bool = True,
    ) -> CopyResult:
        """Copy the rest of the table. With ``per_chunk_txn`` every chunk commits together with
        the resume point; otherwise the caller's transaction holds everything."""
        started = time.monotonic()
        if self.line is not None:
            rows, quarantined = await self._run_rendered(resume_after, done_rows, per_chunk_txn)
            return CopyResult(rows=rows, quarantined=quarantined,
                              seconds=time.monotonic() - started)
        safe = False
        after, rows, quarantined = resume_after, done_rows, 0
        while True:
            try:
                async for chunk in self._iter_chunks(safe, after, rows):
                    stopping = (self.stop is not None and self.stop.is_set()) or (
                        self.should_stop is not None and self.should_stop())
                    if stopping and per_chunk_txn:
                        raise Interrupted(self.plan.name)  # committed chunks resume next time
                    fast = self.passthrough and not safe
                    try:
                        good, bad, last = self._fast_rows(chunk) if fast else \
                            self._convert(chunk, safe)
                    except UNFORESEEN:
                        # A value the census did not foresee: this chunk with every check.
                        good, bad, last = self._convert(self._standard(chunk), safe, checked=True)
                    try:
                        await self._write(good, bad, last, rows + len(chunk), per_chunk_txn)
                    except _UNSTORABLE_TEXT:
                        # A NUL byte in a column copied as-is: convert this chunk value by value.
                        raw = self._standard(chunk) if fast else chunk
                        good, bad, last = self._convert(raw, safe, checked=True)
                        await self._write(good, bad, last, rows + len(chunk), per_chunk_txn)
                    after = last if last is not None else after
                    rows += len(chunk)
                    quarantined += len(bad)
                    if self.progress:
                        self.progress(self.plan.name, rows, max(self.total, rows))
                break
            except sqlite3.DatabaseError as exc:
                if safe or "decode" not in str(exc).lower():
                    raise SourceError(f"source: table {self.plan.name!r} cannot be read: {exc}") from None
                # Invalid UTF-8 somewhere ahead: re-read the rest with TEXT taken as bytes.
                _log.info("snapshot_safe_mode", table=self.plan.name, reason=str(exc)[:120])
                safe = True
        return CopyResult(rows=rows, quarantined=quarantined, seconds=time.monotonic() - started)

    # -- the rendered path: chunks written as COPY CSV by SQLite -----------------------------------

    def _rendered_chunk(self, after: int | None, limit: int) -> tuple[bytes, int, int]:
        """(COPY CSV, last rowid, rows) of the next ``limit`` rows after ``after``."""
        rid = self.plan.rowid_name
        conds, params = self._bounds(after)
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        text, last, count = self.frozen.conn.execute(
            f"SELECT CAST(group_concat(line, '') AS BLOB), max(r), count(*) FROM (SELECT "
            f"{self.line} AS line, {rid} AS r FROM {qi(self.plan.name)}{where} ORDER BY {rid} "
            "LIMIT ?)", (*params, limit)).fetchone()
        return text or b"", last, int(count)

    async def _run_rendered(self, after: int | None, rows: int, per_chunk_txn: bool
                            ) -> tuple[int, int]:
        """Copy the rest as COPY CSV that SQLite writes, the next chunk read while one is
        written; a chunk Postgres refuses (a value a rendering does not take) goes through the
        checking converters. Returns (rows done, rows quarantined)."""
        render_functions(self.frozen.conn)
        limit, quarantined = 1000, 0
        ahead: asyncio.Future[tuple[bytes, int, int]] = asyncio.ensure_future(
            asyncio.to_thread(self._rendered_chunk, after, limit))
        try:
            while True:
                text, last, count = await ahead
                if not count:
                    return rows, quarantined
                if limit == 1000:  # chunks of about RENDERED_CHUNK_BYTES from now on
                    limit = max(1, min(RENDERED_CHUNK_ROWS,
                                       RENDERED_CHUNK_BYTES * count // max(1, len(text))))
                ahead = asyncio.ensure_future(asyncio.to_thread(self._rendered_chunk, last, limit))
                stopping = (self.stop is not None and self.stop.is_set()) or (
                    self.should_stop is not None and self.should_stop())
                if stopping and per_chunk_txn:
                    raise Interrupted(self.plan.name)
                try:
                    async with self.pg.transaction():
                        await self.pg.copy_to_table(
                            self.plan.pg_name, schema_name=self.schema, columns=self.columns,
                            source=_as_one(text), format="csv")
                        await self._progress(last, rows + count, 0, per_chunk_txn)
                    if self.unit is None:
                        metrics.SNAPSHOT_ROWS.labels(self.plan.name).inc(count)
                except asyncpg.exceptions.DataError:
                    # The read ahead ends first: the checks read on the same connection.
                    following = await ahead
                    ahead = asyncio.get_running_loop().create_future()
                    ahead.set_result(following)
                    quarantined += await self._checked_range(after, last, rows + count,
                                                             per_chunk_txn)
                after, rows = last, rows + count
                if self.progress:
                    self.progress(self.plan.name, rows, max(self.total, rows))
        finally:
            with contextlib.suppress(BaseException):
                await ahead

    async def _checked_range(self, after: int | None, last: int, rows_done: int,
                             per_chunk_txn: bool) -> int:
        """The rows after ``after`` up to ``last`` through the checking converters (a chunk
        Postgres refused as rendered); returns how many were quarantined."""
        rid = self.plan.rowid_name
        conds, params = self._bounds(after, upto=last)
        cond = " AND ".join(conds)

        def read(sql: str) -> list[tuple[Any, ...]]:
            return self.frozen.conn.execute(sql, params).fetchall()

        if self.proof:  # a sampled census: is it a value the sample did not foresee?
            census_functions(self.frozen.conn)
            odd = await asyncio.to_thread(read, f"SELECT {rid} FROM {qi(self.plan.name)} WHERE "
                                          f"{cond} AND NOT ({self.proof}) LIMIT 1")
            if odd:
                raise await asyncio.to_thread(self._broken_at, odd[0][0])

        for safe in (False, True):
            try:
                chunk = await asyncio.to_thread(read, f"SELECT {rid}, {select_list(self.plan, safe)} "
                                                f"FROM {qi(self.plan.name)} WHERE {cond} ORDER BY {rid}")
                break
            except sqlite3.DatabaseError as exc:
                if safe or "decode" not in str(exc).lower():
                    raise SourceError(f"source: table {self.plan.name!r} cannot be read: "
                                      f"{exc}") from None
        good, bad, _last = self._convert(chunk, safe, checked=True)
        await self._write(good, bad, last, rows_done, per_chunk_txn)
        return len(bad)

    async def _iter_chunks(self, safe: bool, after: int | None, offset: int
                           ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """Chunks, the next one read (in a thread) while the current one is being written."""
        it = self._chunks(safe, after, offset)
        ahead = asyncio.ensure_future(asyncio.to_thread(next, it, None))
        try:
            while True:
                chunk = await ahead
                if chunk is None:
                    return
                ahead = asyncio.ensure_future(asyncio.to_thread(next, it, None))
                yield chunk
        finally:
            # Never leave a read running on the connection (the caller may start another).
            with contextlib.suppress(BaseException):
                await ahead

    def _fast_rows(self, chunk: list[tuple[Any, ...]]) -> tuple[list[Any], list[Any], int | None]:
        """The passthrough layout: rows are what COPY takes (minus a trailing rowid) once the
        proven converters have mapped their columns."""
        last = None
        if self.use_rowid:
            last = chunk[-1][self.alias_at if self.alias_at is not None else -1]
        drop = self.use_rowid and self.alias_at is None and not self.plan.rowid_keyed
        if self.mapped:
            assert self.proven is not None
            return convert_columns(chunk, self.proven, drop_last=drop), [], last
        return ([r[:-1] for r in chunk] if drop else chunk), [], last

    def _standard(self, chunk: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """A passthrough chunk back in the (rowid, *columns) layout the converters read."""
        if not self.use_rowid:
            return [(None, *r) for r in chunk]
        if self.alias_at is not None:
            return [(r[self.alias_at], *r) for r in chunk]
        return [(r[-1], *r[:-1]) for r in chunk]

    def _convert(self, chunk: list[tuple[Any, ...]], safe: bool, checked: bool = False
                 ) -> tuple[list[Any], list[Any], int | None]:
        """Rows through the converters (``checked``: every check, the census taken for
        nothing). With a sampled census, a value no converter takes (unless no type could hold
        it) is one the sample did not see: SampleBroken, and the table is planned again."""
        census = None if checked else self.census
        good, bad = convert_rows(self.plan, chunk, safe=safe, census=census)
        for _k, _r, column, reason, key in bad if self.sampled else ():
            if not no_type_holds(reason):
                raise SampleBroken(self.plan.name, column, f"key {key!r}: {reason}"[:300])
        if self.project is not None:
            good = [self.project(r) for r in good]
        return good, bad, chunk[-1][0]

    async def _write(
        self, good: list[Any], bad: list[Any], last: int | None, rows_done: int, per_chunk_txn: bool
    ) -> None:
        if bad:
            self._check_policy(bad)
        async with self.pg.transaction():  # a transaction, or a savepoint inside the caller's
            if good:
                bad = bad + await self._copy(good)
            if bad:
                await state.quarantine_put(self.pg, self.plan.name, [b[:4] for b in bad])
                metrics.QUARANTINED.labels(self.plan.name).inc(len(bad))
            await self._progress(last, rows_done, len(bad), per_chunk_txn)
        if self.unit is None:  # units are counted from their committed progress
            metrics.SNAPSHOT_ROWS.labels(self.plan.name).inc(len(good))

    async def _progress(self, last: int | None, rows_done: int, quarantined: int,
                        per_chunk_txn: bool) -> None:
        """The resume point, committed with the chunk it follows."""
        if self.unit is not None:
            await state.unit_chunk(self.pg, self.unit.table, self.unit.id, last, rows_done,
                                   quarantined)
        elif per_chunk_txn:
            await state.update_table(self.pg, self.plan.name, resume_after=last,
                                     rows_copied=rows_done)

    async def _copy(self, good: list[Any]) -> list[Any]:
        """COPY the rows; into a table the ORM made, rows its own constraints refuse (a CHECK,
        a UNIQUE SQLite lacked) are found one by one and returned for quarantine."""
        if not self.plan.existing:
            await self.pg.copy_records_to_table(
                self.plan.pg_name, schema_name=self.schema, columns=self.columns, records=good)
            return []
        try:
            async with self.pg.transaction():
                await self.pg.copy_records_to_table(
                    self.plan.pg_name, schema_name=self.schema, columns=self.columns,
                    records=good)
            return []
        except existing.REFUSED_BY_TARGET:
            refused = await existing.insert_each(self.pg, self.plan, self.schema, self.columns,
                                                 good)
            self._check_policy(refused)
            return refused

    def _check_policy(self, bad: list[Any]) -> None:
        for _k, _r, column, reason, key in bad:
            if self.plan.column(column).policy == "fail":
                raise BadValueError(
                    f"table {self.plan.name!r}, column {column!r}, key {key!r}: {reason} "
                    "(on_bad_value = \"fail\")"
                )


async def prepare_table(
    pg: asyncpg.Connection, plan: TablePlan, schema: str, sqlite_sql: str, *, owned: set[str]
) -> TablePlan:
    """(Re)create a table we own; refuse to touch one the replicator did not create. Returns the
    plan as created (translations Postgres refused are moved to notes)."""
    if plan.existing:  # a table the application's ORM made: emptied, never re-created
        await existing.claim_table(pg, plan, schema, owned)
        await state.put_table(pg, plan, sqlite_sql, state.COPYING)
        await state.quarantine_clear_table(pg, plan.name)
        return plan
    if await table_exists(pg, schema, plan.pg_name):
        if plan.name not in owned and plan.pg_name not in owned:
            raise StartupError(
                f"target: table {qualified(schema, plan.pg_name)} already exists and was not "
                "created by the replicator; drop it or choose another target schema"
            )
        await pg.execute(f"DROP TABLE {qualified(schema, plan.pg_name)} CASCADE")
    plan = await ddl.create_table(pg, plan, schema)
    # asyncpg caches the column types COPY looked up, per table name: a table created again
    # with other types (a rebuilt or re-planned table) must not be written with the old ones.
    await pg.reload_schema_state()
    await state.put_table(pg, plan, sqlite_sql, state.COPYING)
    await state.quarantine_clear_table(pg, plan.name)
    return plan


async def check_complete(pg: asyncpg.Connection, plan: TablePlan, schema: str, expected: int
                         ) -> None:
    """The copy's own proof at the end of a table: rows in Postgres plus rows in quarantine equal
    the rows the frozen copy holds; otherwise the table fails loudly with the numbers."""
    written = int(await pg.fetchval(f"SELECT count(*) FROM {qualified(schema, plan.pg_name)}"))
    held = await state.quarantine_rows(pg, plan.name)
    if written + held != expected:
        raise SnapshotIncomplete(
            f"snapshot: table {plan.name!r}: the frozen copy holds {expected} row(s), Postgres "
            f"received {written} and quarantine holds {held} ({expected - written - held:+d} "
            "unaccounted); the table is not marked copied. This is a bug in the replicator: "
            "please report it with the table's CREATE TABLE")


async def finish_table(
    pg: asyncpg.Connection, plan: TablePlan, schema: str, *, status: str, mark: int,
    seconds: float, rows: int,
) -> TablePlan:
    """Keys, indexes, triggers and the table's status in one transaction: a crash in the middle
    leaves none of it, so finishing again after a restart starts from a clean table."""
    async with pg.transaction():
        if plan.existing:  # the ORM made its keys and indexes; its sequences move past the copy
            await existing.set_sequences(pg, plan, schema)
        else:
            plan = await ddl.snapshot_objects(pg, plan, schema)
        await state.update_table(
            pg, plan.name, status=status, snapshot_seq=mark, copy_seconds=seconds,
            rows_copied=rows, resume_after=None, plan=json.dumps(plan.to_json()),
        )
        await state.event(pg, "table_copied", plan.name, rows=rows, seconds=round(seconds, 3))
    await pg.execute(f"ANALYZE {qualified(schema, plan.pg_name)}")
    return plan


def describe(result: CopyResult) -> dict[str, Any]:
    rate = result.rows / result.seconds if result.seconds > 0 else 0.0
    return {"rows": result.rows, "quarantined": result.quarantined,
            "seconds": round(result.seconds, 3), "rows_per_s": round(rate)}



async def _as_one(data: bytes) -> AsyncIterator[bytes]:
    """``data`` as the async iterable asyncpg's COPY takes, in one message. (Given a file-like
    object instead, asyncpg reads it in 512 kB slices in executor threads, and each thread's
    malloc arena kept the worker's memory 70 MB higher.)"""
    yield data
