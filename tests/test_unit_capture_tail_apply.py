"""Capture, tail and apply as units, against a real SQLite file and a real Postgres table.

The application writes to SQLite (inserts, updates, key changes, deletes, INSERT OR REPLACE
clashing on a UNIQUE column); the capture triggers log the keys; ``Tail`` reads a batch in one
read transaction (the log entries after the cursor and the current rows they name); ``Applier``
applies it inside one Postgres transaction, the way ``Stream.batch`` does. After every batch
both sides are compared value by value with the harness's independent comparator. Applying a
batch again changes nothing, a batch sees exactly one SQLite snapshot, a rolled-back batch
leaves no trace, and a value that cannot move is quarantined until it is fixed at the source.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import pytest

from replicator import capture, state
from replicator.apply import Applier, BatchResult, TableTarget
from replicator.census import quick_census
from replicator.config import Config
from replicator.convert import key_to_json
from replicator.errors import DriftError, is_retryable_pg
from replicator.plans import ROWID_COLUMN, TablePlan
from replicator.schema import plan_table
from replicator.snapshot.copier import finish_table, prepare_table
from replicator.source import KEY_ALIAS, KEY_PK, KEY_ROWID, inspect, open_source
from replicator.source_write import LiveFile
from replicator.tail import RowSet, Tail

from .support.helpers import compare_all

SCHEMA = """
CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT NOT NULL, score REAL);
CREATE TABLE pairs (a TEXT NOT NULL, b INTEGER NOT NULL, v BLOB, PRIMARY KEY (a, b));
CREATE TABLE notes (body TEXT, n INTEGER);
"""


def make_db(path: Path, journal: str = "wal", schema: str = SCHEMA) -> Path:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.executescript(schema)
    conn.close()
    return path


def app(path: Path) -> sqlite3.Connection:
    """The application's own connection (autocommit unless it says BEGIN)."""
    return sqlite3.connect(path, isolation_level=None, timeout=10)


class Replica:
    """Capture installed in ``db``, its tables created in Postgres, and batches applied as
    ``Stream.batch`` applies them (read everything in one read transaction, then write)."""

    def __init__(self, db: Path, pg: asyncpg.Connection, page: int = 3):
        self.db, self.pg = db, pg
        self.tail = Tail(db, busy_timeout_ms=5000, page=page)
        self.targets: dict[str, TableTarget] = {}
        self.quarantined: dict[str, bool] = {}
        self.cursor = 0
        self.one_statements = 0  # batches applied as one statement

    async def open(self) -> Replica:
        src = open_source(self.db)
        try:
            tables = inspect(src).tables
            outcome = capture.install(LiveFile(src, self.db), tables.values())
            assert set(outcome.values()) == {"created"}
            await state.ensure(self.pg)
            await state.init(self.pg, source_id="unit", source_path=str(self.db), mode="run",
                             target_schema="public")
            await state.set_state(self.pg, "streaming")
            cfg = Config(source=self.db)
            for table in tables.values():
                plan = plan_table(table, quick_census(src, table), cfg)
                plan = await prepare_table(self.pg, plan, "public", table.sql, owned=set())
                plan = await finish_table(self.pg, plan, "public", status=state.STREAMING, mark=0,
                                          seconds=0.0, rows=0)
                self.targets[table.name] = TableTarget(plan, "public")
        finally:
            src.close()
        await self.tail.open()
        return self

    async def close(self) -> None:
        await self.tail.close()

    async def _fresh(self, plan: TablePlan, keys: Sequence[tuple]) -> RowSet:
        async with self.tail.read() as txn:
            return await txn.rows(plan, keys)

    async def batch(self, *, cursor: int | None = None, paged: bool = False,
                    one_statement: bool = False) -> BatchResult:
        """One batch after ``cursor`` (default: the last applied), in one Postgres transaction;
        ``one_statement``: as the daemon does, first as one statement, else the long way."""
        cursor = self.cursor if cursor is None else cursor
        pg = self.pg
        if one_statement:
            applier = Applier(pg, self.targets, quarantined=self.quarantined)
            result = BatchResult(high=cursor)
            async with self.tail.read() as txn:
                result.high = max(txn.high, cursor)
                pages = await applier.read_all(txn, cursor, result)
            if len(pages) == 1 and await applier.write_one_statement(pages[0], result, cursor,
                                                                     result.high):
                self.one_statements += 1
                self.cursor = max(self.cursor, result.high)
                return result
        async with pg.transaction():
            applier = Applier(pg, self.targets, quarantined=self.quarantined)
            result = BatchResult(high=cursor)
            pages = []
            async with self.tail.read() as txn:
                result.high = max(txn.high, cursor)
                if paged:  # a large catch-up: page by page inside the read transaction
                    await applier.apply(txn, cursor, result)
                else:
                    pages = await applier.read_all(txn, cursor, result)
            for page in pages:
                await applier.write_page(page, result, self._fresh)
            await state.set_cursor(pg, result.high)
        self.cursor = max(self.cursor, result.high)
        return result


async def dump(pg: asyncpg.Connection) -> dict[str, list[tuple]]:
    """Every replicated table and the quarantine, as sorted rows (to prove nothing moved)."""
    out = {}
    for table in ("users", "pairs", "notes"):
        if await pg.fetchval("SELECT to_regclass($1) IS NOT NULL", f"public.{table}"):
            out[table] = sorted((tuple(r) for r in await pg.fetch(f"SELECT * FROM {table}")),
                                key=repr)
    out["quarantine"] = sorted((tuple(r) for r in await pg.fetch(
        "SELECT tbl, key, raw, column_name, reason FROM _replicator.quarantine")), key=repr)
    return out


async def rowids_match(db: Path, pg: asyncpg.Connection, table: str = "notes") -> None:
    """A rowid-keyed table: the helper column holds exactly SQLite's rowids."""
    conn = sqlite3.connect(db)
    try:
        sqlite_ids = sorted(r[0] for r in conn.execute(f"SELECT rowid FROM {table}"))
    finally:
        conn.close()
    pg_ids = sorted(r[0] for r in await pg.fetch(f"SELECT _replicator_rowid FROM {table}"))
    assert pg_ids == sqlite_ids


@pytest.fixture
async def pg(target_dsn):
    conn = await asyncpg.connect(target_dsn)
    yield conn
    await conn.close()


# -- the tail --------------------------------------------------------------------------------------


async def test_a_batch_sees_one_snapshot_of_the_file(tmp_path, pg):
    """Everything in one read transaction: entries up to the high-water mark read at its start,
    rows as they were then, although the application commits meanwhile (WAL)."""
    db = make_db(tmp_path / "snap.db")
    replica = await Replica(db, pg).open()
    a = app(db)
    try:
        for i in range(1, 6):
            a.execute("INSERT INTO users (email, name) VALUES (?, ?)", (f"u{i}@x", f"before{i}"))
        async with replica.tail.read() as txn:
            assert txn.high == 5
            a.execute("UPDATE users SET name = 'after' WHERE id = 1")  # commits during the read
            a.execute("INSERT INTO users (email, name) VALUES ('late@x', 'late')")
            pages = [p async for p in txn.entries(0)]
            plan = replica.targets["users"].plan
            rows = await txn.rows(plan, [(1,), (6,)])
        assert [len(p) for p in pages] == [3, 2]  # pages of tail.page entries
        assert [e[0] for p in pages for e in p] == [1, 2, 3, 4, 5]
        assert [(e[2], e[3], e[4]) for p in pages for e in p] == [("users", "I", i) for i in range(1, 6)]
        assert not rows.safe and rows.rows == [(1, 1, "u1@x", "before1", None)]  # (rowid, *cols)
        polled = await replica.tail.poll(2)
        assert (polled.high, polled.backlog, polled.rows) == (7, 5, 7)  # + the U and the I
        assert polled.oldest is not None and polled.lag >= 0
        assert polled.schema_version == a.execute("PRAGMA schema_version").fetchone()[0]
        assert await replica.tail.quick() == (polled.schema_version, 7)
    finally:
        a.close()
        await replica.close()


async def test_rows_are_read_for_many_composite_keys_and_written_by_copy(tmp_path, pg, target_dsn):
    """More keys than one statement may bind (30 000 parameters), and enough rows for the
    applier's COPY path."""
    db = make_db(tmp_path / "many.db")
    replica = await Replica(db, pg, page=50_000).open()
    a = app(db)
    try:
        a.execute("BEGIN")
        a.executemany("INSERT INTO pairs VALUES (?, ?, ?)",
                      [(f"k{i % 7}", i, bytes([i % 256]) * (i % 5)) for i in range(16_000)])
        a.execute("COMMIT")
        keys = [(f"k{i % 7}", i) for i in range(16_000)] + [("missing", 1)]
        async with replica.tail.read() as txn:
            got = await txn.rows(replica.targets["pairs"].plan, keys)
        direct = a.execute("SELECT rowid, a, b, v FROM pairs").fetchall()
        assert sorted(got.rows) == sorted(direct) and len(got.rows) == 16_000
        result = await replica.batch()
        assert (result.entries, result.rows_written, result.rows_deleted) == (16_000, 16_000, 0)
        assert await compare_all(db, target_dsn, expect_quarantined={}) == \
            {"users": 0, "pairs": 16_000, "notes": 0}
    finally:
        a.close()
        await replica.close()


# -- the applier -----------------------------------------------------------------------------------


WORKLOAD: list[list[tuple[str, tuple]]] = [
    [  # batch 1: inserts in every kind of table
        ("INSERT INTO users VALUES (1, 'a@x', 'Ann', 1.5)", ()),
        ("INSERT INTO users VALUES (2, 'b@x', 'Bob', -0.0)", ()),
        ("INSERT INTO users VALUES (3, 'c@x', 'Cid', 1e308)", ()),
        ("INSERT INTO users VALUES (?, 'big@x', 'Big', 0.1)", (2**63 - 1,)),
        ("INSERT INTO pairs VALUES ('x', 1, x'00ff')", ()),
        ("INSERT INTO pairs VALUES ('x', 2, NULL)", ()),
        ("INSERT INTO pairs VALUES ('y', ?, x'')", (-(2**63),)),
        ("INSERT INTO notes VALUES ('first', 1), ('second', 2), ('third', 3)", ()),
    ],
    [  # batch 2: updates, key changes, deletes
        ("UPDATE users SET name = 'Ann B', score = 2.25 WHERE id = 1", ()),
        ("UPDATE users SET id = 10 WHERE id = 2", ()),  # key change: K(2) then U(10)
        ("UPDATE pairs SET b = 3 WHERE a = 'x' AND b = 2", ()),
        ("UPDATE pairs SET a = 'z', v = x'01' WHERE a = 'x' AND b = 1", ()),
        ("DELETE FROM users WHERE id = 3", ()),
        ("UPDATE notes SET rowid = 100 WHERE body = 'second'", ()),  # a rowid-keyed key change
        ("DELETE FROM notes WHERE body = 'third'", ()),
        ("UPDATE notes SET n = 11 WHERE body = 'first'", ()),
    ],
    [  # batch 3: REPLACE deletes rows without firing delete triggers
        ("INSERT OR REPLACE INTO users VALUES (20, 'a@x', 'Ann again', 3.0)", ()),  # clashes on email
        ("INSERT OR REPLACE INTO users VALUES (10, 'b2@x', 'Bob 2', NULL)", ()),  # on the key
        ("UPDATE OR REPLACE users SET email = 'big@x' WHERE id = 10", ()),  # UPDATE clashing
        ("INSERT INTO users VALUES (30, 'c@x', 'Cid back', 5) ON CONFLICT (id) DO UPDATE "
         "SET name = 'never'", ()),
        ("INSERT OR REPLACE INTO pairs VALUES ('y', ?, x'aa')", (-(2**63),)),
        ("INSERT INTO notes VALUES ('fourth', NULL)", ()),
    ],
    [  # batch 4: one transaction touching the same keys again and again (coalesced)
        ("BEGIN", ()),
        ("UPDATE users SET score = score + 1 WHERE id = 20", ()),
        ("UPDATE users SET score = score + 1 WHERE id = 20", ()),
        ("DELETE FROM users WHERE id = 30", ()),
        ("INSERT INTO users VALUES (30, 'c3@x', 'Cid 3', 7.5)", ()),
        ("UPDATE users SET id = 31 WHERE id = 30", ()),
        ("UPDATE users SET id = 30 WHERE id = 31", ()),
        ("DELETE FROM pairs", ()),
        ("INSERT INTO pairs VALUES ('x', 1, x'02')", ()),
        ("COMMIT", ()),
    ],
]


@pytest.mark.parametrize("journal", ["wal", "delete"])
@pytest.mark.parametrize("way", ["prefetched", "paged", "one_statement"])
async def test_every_batch_leaves_postgres_equal_to_sqlite(tmp_path, pg, target_dsn, journal, way):
    db = make_db(tmp_path / f"apply-{journal}.db", journal)
    replica = await Replica(db, pg, page=3 if way != "one_statement" else 1000).open()
    a = app(db)
    try:
        for step in WORKLOAD:
            for sql, params in step:
                a.execute(sql, params)
            result = await replica.batch(paged=way == "paged", one_statement=way == "one_statement")
            assert result.high == capture.log_high_water(a) and result.quarantined == 0
            await compare_all(db, target_dsn, expect_quarantined={})
            await rowids_match(db, pg)
        st = await state.load(pg)
        assert st is not None and st.cursor == replica.cursor
        assert a.execute("SELECT count(*) FROM users WHERE email = 'a@x'").fetchone()[0] == 1
        # Invariant 6: the row REPLACE deleted without a trigger is gone in Postgres too.
        assert await pg.fetchval("SELECT count(*) FROM users WHERE id IN (1, 2, 3)") == 0
        assert await pg.fetchval("SELECT name FROM users WHERE id = 20") == "Ann again"
        if way == "one_statement":  # capture logs the rows a REPLACE deletes: no clash left
            assert replica.one_statements == len(WORKLOAD)
    finally:
        a.close()
        await replica.close()


async def test_applying_a_batch_twice_changes_nothing(tmp_path, pg, target_dsn):
    db = make_db(tmp_path / "twice.db")
    replica = await Replica(db, pg).open()
    a = app(db)
    try:
        for sql, params in WORKLOAD[0] + WORKLOAD[1]:
            a.execute(sql, params)
        await replica.batch()
        for sql, params in WORKLOAD[2]:
            a.execute(sql, params)
        start = replica.cursor
        first = await replica.batch()
        before = await dump(pg)
        again = await replica.batch(cursor=start)  # the same batch: an acknowledgement was lost
        assert await dump(pg) == before
        assert (again.high, again.entries, again.rows_written) == \
            (first.high, first.entries, first.rows_written)
        replay = await replica.batch(cursor=0)  # everything from the start, once more
        assert await dump(pg) == before and replay.entries == first.high
        await compare_all(db, target_dsn, expect_quarantined={})
        # An older batch re-applied after newer changes still converges to the current state.
        for sql, params in WORKLOAD[3]:
            a.execute(sql, params)
        await replica.batch(cursor=start)
        await compare_all(db, target_dsn, expect_quarantined={})
        await rowids_match(db, pg)
    finally:
        a.close()
        await replica.close()


class Failed(Exception):
    pass


async def test_a_batch_rolled_back_in_postgres_leaves_no_trace(tmp_path, pg, target_dsn):
    db = make_db(tmp_path / "rollback.db")
    replica = await Replica(db, pg).open()
    a = app(db)
    try:
        for sql, params in WORKLOAD[0]:
            a.execute(sql, params)
        await replica.batch()
        before = await dump(pg)
        for sql, params in WORKLOAD[1]:
            a.execute(sql, params)
        with pytest.raises(Failed):
            async with pg.transaction():
                applier = Applier(pg, replica.targets)
                async with replica.tail.read() as txn:
                    result = await applier.apply(txn, replica.cursor)
                await state.set_cursor(pg, result.high)
                assert result.rows_written > 0
                assert await pg.fetchval("SELECT count(*) FROM users WHERE id = 10") == 1
                raise Failed("the batch fails before its commit")
        assert await dump(pg) == before
        st = await state.load(pg)
        assert st is not None and st.cursor == replica.cursor
        await replica.batch()
        await compare_all(db, target_dsn, expect_quarantined={})
    finally:
        a.close()
        await replica.close()


@pytest.mark.parametrize("one_statement", [False, True], ids=["transaction", "one_statement"])
async def test_a_unique_clash_that_over_matches_is_read_again(tmp_path, pg, target_dsn,
                                                              one_statement):
    """Postgres's lower() folds 'É' and 'é', SQLite's NOCASE does not: the applier deletes the
    Postgres row that seems to clash, then re-reads it from SQLite and puts it back. The one
    statement sees the clash and changes nothing; the long way then does the above."""
    db = make_db(tmp_path / "nocase.db", schema="""
        CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE COLLATE NOCASE, name TEXT);
    """)
    replica = await Replica(db, pg).open()
    a = app(db)
    try:
        a.execute("INSERT INTO users VALUES (1, 'é@x', 'lower')")
        await replica.batch()
        a.execute("INSERT INTO users VALUES (2, 'É@x', 'upper')")  # no clash in SQLite
        a.execute("INSERT OR REPLACE INTO users VALUES (3, 'A@X', 'ascii')")
        a.execute("INSERT OR REPLACE INTO users VALUES (4, 'a@x', 'replaces 3')")  # a real clash
        await replica.batch(one_statement=one_statement)
        rows = [tuple(r) for r in await pg.fetch("SELECT id, email FROM users ORDER BY id")]
        assert rows == [(1, "é@x"), (2, "É@x"), (4, "a@x")]
        assert replica.one_statements == 0
        await compare_all(db, target_dsn, expect_quarantined={})
    finally:
        a.close()
        await replica.close()


async def test_a_value_that_cannot_move_is_quarantined_until_fixed(tmp_path, pg, target_dsn):
    db = make_db(tmp_path / "bad.db")
    replica = await Replica(db, pg).open()
    a = app(db)
    try:
        a.execute("INSERT INTO users VALUES (1, 'a@x', 'ok', 1.0)")
        a.execute("INSERT INTO users VALUES (2, 'b@x', 'text score', 'lots')")  # REAL column
        a.execute("INSERT INTO users VALUES (3, 'c@x', CAST(x'ff41' AS TEXT), 2.0)")  # bad UTF-8
        a.execute("INSERT INTO notes VALUES ('nul' || char(0) || 'byte', 1)")
        result = await replica.batch()
        assert result.quarantined == 3 and result.rows_written == 1
        await compare_all(db, target_dsn, expect_quarantined={"users": 2, "notes": 1})
        reasons = {(r[0], r[1]): (r[2], r[3]) for r in await pg.fetch(
            "SELECT tbl, key::text, column_name, raw::text FROM _replicator.quarantine")}
        assert reasons[("users", '[{"int": "2"}]')][0] == "score"
        assert '{"text": "lots"}' in reasons[("users", '[{"int": "2"}]')][1]
        assert '{"text_hex": "ff41"}' in reasons[("users", '[{"int": "3"}]')][1]
        assert reasons[("notes", '[{"int": "1"}]')][0] == "body"
        # Fixed at the source: the rows move and leave the quarantine.
        a.execute("UPDATE users SET score = 2.5 WHERE id = 2")
        a.execute("DELETE FROM users WHERE id = 3")
        a.execute("UPDATE notes SET body = 'no nul'")
        result = await replica.batch()
        assert result.quarantined == 0
        await compare_all(db, target_dsn, expect_quarantined={})
        await rowids_match(db, pg)
    finally:
        a.close()
        await replica.close()


async def test_entries_already_in_the_snapshot_are_skipped(tmp_path, pg):
    db = make_db(tmp_path / "mark.db")
    replica = await Replica(db, pg).open()
    a = app(db)
    try:
        a.execute("INSERT INTO users VALUES (1, 'a@x', 'in the snapshot', NULL)")
        a.execute("INSERT INTO users VALUES (2, 'b@x', 'after it', NULL)")
        target = replica.targets["users"]
        replica.targets["users"] = TableTarget(target.plan, target.schema, snapshot_seq=1)
        result = await replica.batch()
        assert result.entries == 2 and result.rows_written == 1
        assert [r[0] for r in await pg.fetch("SELECT id FROM users")] == [2]
    finally:
        a.close()
        await replica.close()


async def test_a_log_entry_for_a_table_not_replicated_stops_the_batch(tmp_path, pg):
    db = make_db(tmp_path / "drift.db")
    replica = await Replica(db, pg).open()
    a = app(db)
    try:
        a.execute("INSERT INTO users VALUES (1, 'a@x', 'x', NULL)")
        del replica.targets["users"]
        with pytest.raises(DriftError, match="'users'"):
            await replica.batch()
        assert await pg.fetchval("SELECT cursor FROM _replicator.state") == 0
    finally:
        a.close()
        await replica.close()


def test_key_kinds_of_the_workload_tables(tmp_path):
    db = make_db(tmp_path / "kinds.db")
    conn = open_source(db)
    try:
        tables = inspect(conn).tables
    finally:
        conn.close()
    assert tables["users"].key_kind == KEY_ALIAS
    assert tables["pairs"].key_kind == KEY_PK and tables["pairs"].key_columns == ("a", "b")
    assert tables["notes"].key_kind == KEY_ROWID


# -- product bugs found here (fixed; each test failed before its fix) -------------------------------


async def test_a_case_only_change_of_a_nocase_primary_key_is_followed(tmp_path, pg, target_dsn):
    db = make_db(tmp_path / "nocase-pk.db", schema="""
        CREATE TABLE codes (code TEXT NOT NULL PRIMARY KEY COLLATE NOCASE, v INTEGER);
    """)
    replica = await Replica(db, pg).open()
    a = app(db)
    try:
        a.execute("INSERT INTO codes VALUES ('abc', 1)")
        await replica.batch()
        a.execute("UPDATE codes SET code = 'ABC' WHERE code = 'abc'")
        await replica.batch()
        await compare_all(db, target_dsn, expect_quarantined={})
    finally:
        a.close()
        await replica.close()


async def test_a_replace_that_clashes_with_a_nocase_primary_key_is_followed(tmp_path, pg, target_dsn):
    """INSERT OR REPLACE 'ABC' deletes the row 'abc' (equal under NOCASE) without a delete
    trigger; Postgres, whose key compares exactly, must lose 'abc' too."""
    db = make_db(tmp_path / "nocase-replace.db", schema="""
        CREATE TABLE codes (code TEXT NOT NULL PRIMARY KEY COLLATE NOCASE, v INTEGER);
    """)
    replica = await Replica(db, pg).open()
    a = app(db)
    try:
        a.execute("INSERT INTO codes VALUES ('abc', 1)")
        await replica.batch()
        a.execute("INSERT OR REPLACE INTO codes VALUES ('ABC', 2)")
        await replica.batch()
        await compare_all(db, target_dsn, expect_quarantined={})
    finally:
        a.close()
        await replica.close()


async def test_the_tail_and_the_app_can_run_side_by_side(tmp_path, pg, target_dsn):
    """Application writes interleaved with batches (REPLACE clashing on both keys, deletes),
    some applied page by page: after the last batch both sides are equal."""
    db = make_db(tmp_path / "side.db")
    replica = await Replica(db, pg, page=7).open()
    a = app(db)
    try:
        for i in range(60):
            a.execute("INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?)",
                      (i % 17, f"e{i % 11}@x", f"n{i}", i / 7))
            a.execute("INSERT INTO notes VALUES (?, ?)", (f"note {i}", i))
            if i % 3 == 0:
                a.execute("DELETE FROM notes WHERE n = ?", (i - 2,))
            if i % 10 == 0:
                await replica.batch(paged=i % 20 == 0)
            await asyncio.sleep(0)
        await replica.batch()
        await compare_all(db, target_dsn, expect_quarantined={})
        await rowids_match(db, pg)
    finally:
        a.close()
        await replica.close()


async def test_the_rowid_fingerprints_agree_at_the_ends_of_64_bits(tmp_path, pg, target_dsn):
    """VACUUM detection compares (count, sum of rowids) on both sides. SQLite's sum() overflowed
    with two rowids near 2^63 and the daemon retried forever (found by the pipeline test)."""
    db = make_db(tmp_path / "ends.db", schema="CREATE TABLE notes (body TEXT);")
    replica = await Replica(db, pg).open()
    a = app(db)
    try:
        a.executemany("INSERT INTO notes (rowid, body) VALUES (?, ?)",
                      [(2**63 - 1, "max"), (2**63 - 2, "max-1"), (-(2**63), "min"), (7, "seven")])
        await replica.batch()
        plan = replica.targets["notes"].plan
        async with replica.tail.read() as txn:
            src = await txn.rowid_fingerprint(plan)
        assert src == (4, 2**63 - 1 + 2**63 - 2 - 2**63 + 7)
        assert await state.rowid_fingerprint(pg, "notes", "notes", ROWID_COLUMN) == src
    finally:
        a.close()
        await replica.close()


async def test_the_one_statement_changes_nothing_unless_the_cursor_and_state_agree(tmp_path, pg):
    """A cutover or a drain that committed meanwhile (state done, or the cursor moved on) makes
    the one-statement batch a no-op, so the long way decides (and raises CutoverDone)."""
    db = make_db(tmp_path / "guard.db")
    replica = await Replica(db, pg, page=1000).open()
    a = app(db)
    try:
        for sql, params in WORKLOAD[0]:
            a.execute(sql, params)
        before = await dump(pg)

        async def attempt(expected: int) -> bool | None:
            applier = Applier(pg, replica.targets, quarantined=replica.quarantined)
            result = BatchResult(high=expected)
            async with replica.tail.read() as txn:
                result.high = txn.high
                [page] = await applier.read_all(txn, expected, result)
            return await applier.write_one_statement(page, result, expected, result.high)

        await state.set_cursor(pg, 1)  # someone else applied the first entry
        assert await attempt(0) is False
        await state.set_state(pg, "done", cursor=0)
        assert await attempt(0) is False
        assert await dump(pg) == before and (await state.load(pg)).cursor == 0
        assert await pg.fetchval("SELECT count(*) FROM _replicator.dirty") == 0
        await state.set_state(pg, "error", error="a failure the next batch clears")
        await state.merge_info(pg, last_verify={"full": True})  # changes are tracked from now
        assert await attempt(0) is True
        st = await state.load(pg)
        high = capture.log_high_water(a)
        assert (st.state, st.error, st.cursor) == ("streaming", None, high)
        assert await pg.fetchval("SELECT changes_applied FROM _replicator.tables "
                                 "WHERE name = 'users'") == 4
        # Every key the batch named is marked changed since the full verification, with its seq.
        widths = {n: len(t.plan.key_columns) or 1 for n, t in replica.targets.items()}
        logged = {(t, json.dumps(key_to_json(tuple(k[:widths[t]]))))
                  for t, *k in a.execute("SELECT tbl, k1, k2 FROM _replicator_log")}
        dirty = {(r[0], json.dumps(json.loads(r[1]))) for r in await pg.fetch(
            "SELECT tbl, key::text FROM _replicator.dirty")}
        assert dirty == logged and len(dirty) == 4 + 3 + 3
        assert [r[0] for r in await pg.fetch("SELECT DISTINCT seq FROM _replicator.dirty")] == [high]
    finally:
        a.close()
        await replica.close()


async def test_state_reads_before_the_bookkeeping_exists_and_on_a_cut_link(pg, target_dsn):
    """No `_replicator` yet: nothing recorded, in or outside a transaction (one round trip
    outside). On a connection the daemon cut (a hung link), a read fails as a lost link does,
    which the apply loop retries and logs; not as a programming error it would retry silently."""
    assert await state.load(pg) is None and await state.tables(pg) == {}
    async with pg.transaction():
        assert await state.load(pg) is None and await state.quarantine_count(pg) == {}
    cut = await asyncpg.connect(target_dsn)
    cut.terminate()
    with pytest.raises(asyncpg.InterfaceError) as raised:
        await state.load(cut)
    assert is_retryable_pg(raised.value)
