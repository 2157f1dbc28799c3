"""The snapshot copier and drift detection as units, against real files and a real Postgres.

Snapshot: ``take_copy`` freezes the live file together with its change-log mark (later writes
do not reach the copy); ``TableCopier`` copies a table chunk by chunk (the passthrough fast path,
converted columns, a keyless table with its rowid helper column, a WITHOUT ROWID table read by
key order) and every value arrives, compared one by one by the harness's comparator; stopped
with ``Interrupted`` after a committed chunk, a table (or one unit of it) resumes from its
recorded progress without copying a row twice; ``split`` cuts rowid ranges that cover every
rowid exactly once.

Drift: ``detect`` reports a new table, ADD COLUMN, a rebuilt table (its triggers gone), a
changed definition, an added or dropped index, a renamed table (an error naming it) and a
dropped table (an error naming it, or a drop to follow with ``follow_drops``).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator import capture, state
from replicator.census import quick_census
from replicator.config import Config
from replicator.drift import detect
from replicator.dsn import parse_target
from replicator.errors import DriftError, SnapshotIncomplete
from replicator.plans import TablePlan
from replicator.schema import plan_table, text_census_columns
from replicator.snapshot.copier import (
    Interrupted,
    TableCopier,
    Unit,
    check_complete,
    finish_table,
    prepare_table,
)
from replicator.snapshot.frozen import Frozen, open_frozen_copy, open_frozen_direct, take_copy
from replicator.snapshot.units import UNIT_ROWS, Job, copy_unit, rowid_bounds, split
from replicator.source import inspect, open_source
from replicator.source_write import LiveFile

from .support.helpers import compare_all

SOURCE = """
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL, data BLOB);
CREATE TABLE mixed (id INTEGER PRIMARY KEY, v, at DATETIME);
CREATE TABLE logs (msg TEXT, n INTEGER);
CREATE TABLE wr (a TEXT NOT NULL, b INTEGER NOT NULL, v, PRIMARY KEY (a, b)) WITHOUT ROWID;
"""


def make_source(path: Path, rows: int = 3000, journal: str = "wal") -> Path:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.executescript(SOURCE)
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO items VALUES (?, ?, ?, ?)",
                     [(i * 3 - 500, f"item {i}", i / 7, bytes([i % 256]) * (i % 4))
                      for i in range(rows)])
    conn.executemany("INSERT INTO mixed VALUES (?, ?, ?)",
                     [(i, [i, i / 4, f"t{i}", 2**63 - i][i % 4], f"2024-01-02 03:04:{i % 60:02d}")
                      for i in range(rows // 3)])
    conn.executemany("INSERT INTO logs VALUES (?, ?)", [(f"line {i}", i) for i in range(rows)])
    conn.execute("INSERT INTO logs VALUES ('nul' || char(0), -1)")  # quarantined
    conn.executemany("INSERT INTO wr VALUES (?, ?, ?)",
                     [(f"k{i % 13}", i, [None, 1.5, "x", 7][i % 4]) for i in range(rows)])
    conn.execute("COMMIT")
    conn.close()
    return path


def install(path: Path) -> None:
    conn = open_source(path)
    try:
        capture.install(LiveFile(conn, path), inspect(conn).tables.values())
    finally:
        conn.close()


async def ready(pg: asyncpg.Connection, source: Path) -> None:
    await state.ensure(pg)
    await state.init(pg, source_id="unit", source_path=str(source), mode="run",
                     target_schema="public")


async def create(pg: asyncpg.Connection, frozen: Frozen, name: str, source: Path
                 ) -> tuple[TablePlan, object]:
    """Census and plan as the snapshot phase does them, the table created in Postgres."""
    table = inspect(frozen.conn).tables[name]
    cen = quick_census(frozen.conn, table, text_columns=text_census_columns(table))
    plan = plan_table(table, cen, Config(source=source))
    plan = await prepare_table(pg, plan, "public", table.sql, owned=await state.owned_tables(pg))
    return plan, cen


async def copy_table(pg, frozen, name, source) -> int:
    plan, cen = await create(pg, frozen, name, source)
    result = await TableCopier(pg, frozen, plan, "public", census=cen).run()
    await check_complete(pg, plan, "public", cen.rows)  # every row accounted for, or it raises
    await finish_table(pg, plan, "public", status=state.STREAMING, mark=frozen.mark,
                       seconds=result.seconds, rows=result.rows)
    return result.rows


def only(path: Path, name: str) -> Path:
    """A copy of the file holding just ``name`` (to compare one copied table with the
    harness's all-tables comparator)."""
    out = path.with_name(f"{path.stem}-{name}.sqlite")
    shutil.copy(path, out)
    conn = sqlite3.connect(out, isolation_level=None)
    try:
        for (other,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' AND "
                                     "name NOT LIKE 'sqlite%' AND name != ?", (name,)).fetchall():
            conn.execute(f'DROP TABLE "{other}"')
    finally:
        conn.close()
    return out


async def pg_count(pg: asyncpg.Connection, table: str) -> tuple[int, int]:
    """(rows, distinct rows) in Postgres: a row copied twice shows as a difference."""
    row = await pg.fetchrow(f"SELECT count(*), count(DISTINCT t.*) FROM {table} t")
    return row[0], row[1]


@pytest.fixture
async def pg(target_dsn):
    conn = await asyncpg.connect(target_dsn)
    yield conn
    await conn.close()


# -- frozen reads ----------------------------------------------------------------------------------


def test_a_frozen_copy_holds_the_file_and_its_log_mark_as_they_were(tmp_path):
    source = make_source(tmp_path / "live.db", rows=300)
    install(source)
    app = sqlite3.connect(source, isolation_level=None)
    try:
        app.execute("INSERT INTO items (name) VALUES ('logged 1')")
        app.execute("UPDATE items SET price = 1 WHERE id = -500")
        copy = take_copy(source, tmp_path / "state" / "snapshot.sqlite")
        app.execute("INSERT INTO items (name) VALUES ('after the copy')")
        frozen = open_frozen_copy(copy)
        try:
            assert frozen.mark == 2 and frozen.path == copy
            assert frozen.conn.execute("SELECT count(*) FROM items").fetchone()[0] == 301
            assert frozen.conn.execute(
                "SELECT count(*) FROM items WHERE name = 'after the copy'").fetchone()[0] == 0
        finally:
            frozen.close()
        assert not Path(str(copy) + ".tmp").exists() and copy.exists()
        direct = open_frozen_direct(source, 5000)  # one read transaction on the live file
        try:
            app.execute("INSERT INTO items (name) VALUES ('while reading')")  # WAL: not seen
            assert direct.mark == 3 and direct.path is None
            assert direct.conn.execute("SELECT count(*) FROM items").fetchone()[0] == 302
        finally:
            direct.close()
    finally:
        app.close()


# -- the copier ------------------------------------------------------------------------------------


async def test_every_table_is_copied_value_by_value(tmp_path, pg, target_dsn):
    source = make_source(tmp_path / "live.db")
    install(source)
    await ready(pg, source)
    frozen = open_frozen_copy(take_copy(source, tmp_path / "snap.sqlite"))
    try:
        copied = {n: await copy_table(pg, frozen, n, source) for n in ("items", "mixed", "logs", "wr")}
    finally:
        frozen.close()
    assert copied == {"items": 3000, "mixed": 1000, "logs": 3001, "wr": 3000}
    counts = await compare_all(tmp_path / "snap.sqlite", target_dsn, expect_quarantined={"logs": 1})
    assert counts == {"items": 3000, "mixed": 1000, "logs": 3001, "wr": 3000}
    tables = await state.tables(pg)
    assert tables["logs"].rows_copied == 3001 and tables["items"].status == state.STREAMING
    # The keyless table carries SQLite's rowids in its helper column; the keys are in place.
    rowids = await pg.fetch("SELECT _replicator_rowid FROM logs ORDER BY 1")
    assert [r[0] for r in rowids] == list(range(1, 3001))
    assert await pg.fetchval("SELECT count(*) FROM pg_constraint WHERE conrelid = 'items'::regclass "
                             "AND contype = 'p'") == 1


async def test_a_value_the_census_did_not_count_sends_its_chunk_through_the_checks(
        tmp_path, pg, target_dsn):
    """Columns mapped column by column (0/1 to boolean, one ISO layout to timestamptz, JSON as
    it is) rest on the census of the very rows copied. Given values the census did not count
    (here a census of the file before three values changed: a 2 in the 0/1 column and an
    integer among the date texts in the first chunk, another ISO layout alone in the second),
    the mapping raises and the chunk is converted with every check: those three are
    quarantined, never converted wrongly, and the rest arrive."""
    before = tmp_path / "before.db"
    conn = sqlite3.connect(before, isolation_level=None)
    conn.execute("CREATE TABLE flags (id INTEGER PRIMARY KEY, ok BOOLEAN NOT NULL, "
                 "at DATETIME NOT NULL, doc JSON)")
    conn.executemany("INSERT INTO flags VALUES (?, ?, ?, ?)",
                     [(i, i % 2, f"2024-01-02 03:04:{i % 60:02d}", f'{{"i": {i}}}')
                      for i in range(2000)])
    conn.close()
    after = tmp_path / "after.db"
    shutil.copy(before, after)
    conn = sqlite3.connect(after, isolation_level=None)
    conn.execute("UPDATE flags SET ok = 2 WHERE id = 500")
    conn.execute("UPDATE flags SET at = 1700000000 WHERE id = 700")  # another storage class
    conn.execute("UPDATE flags SET at = '2024-01-02T03:04:05' WHERE id = 1500")  # another layout
    conn.close()
    await ready(pg, after)
    counted = open_frozen_copy(take_copy(before, tmp_path / "before.sqlite"))
    frozen = open_frozen_copy(take_copy(after, tmp_path / "after.sqlite"))
    try:
        plan, cen = await create(pg, counted, "flags", before)
        assert [c.pg_type for c in plan.columns] == ["bigint", "boolean", "timestamptz", "json"]
        copier = TableCopier(pg, frozen, plan, "public", census=cen)
        assert copier.mapped  # the column-by-column path is the one taken
        result = await copier.run()
    finally:
        counted.close()
        frozen.close()
    assert (result.rows, result.quarantined) == (2000, 3)
    assert await state.quarantine_rows(pg, "flags") == 3
    rows = await pg.fetch("SELECT id, ok, at, doc::text FROM flags ORDER BY id")
    assert [r["id"] for r in rows] == [i for i in range(2000) if i not in (500, 700, 1500)]
    for r in rows:
        i = r["id"]
        assert r["ok"] is bool(i % 2)
        assert r["at"] == datetime(2024, 1, 2, 3, 4, i % 60, tzinfo=UTC)
        assert r["doc"] == f'{{"i": {i}}}'


@pytest.mark.parametrize("name", ["items", "wr", "logs"])
async def test_a_stopped_copy_resumes_without_copying_a_row_twice(tmp_path, pg, target_dsn, name):
    source = make_source(tmp_path / "live.db", rows=5000)
    await ready(pg, source)
    frozen = open_frozen_copy(take_copy(source, tmp_path / "snap.sqlite"))
    try:
        plan, cen = await create(pg, frozen, name, source)
        stop = asyncio.Event()
        seen: list[int] = []

        def progress(_table: str, done: int, _total: int) -> None:
            seen.append(done)
            stop.set()  # stop after the first committed chunk

        with pytest.raises(Interrupted):
            await TableCopier(pg, frozen, plan, "public", census=cen, stop=stop,
                              progress=progress).run()
        recorded = (await state.tables(pg))[name]
        assert seen == [1000] and recorded.rows_copied == 1000
        assert await pg_count(pg, name) == (1000, 1000)  # exactly the committed chunk
        if plan.rowid_name:
            nth = frozen.conn.execute(f"SELECT rowid FROM {name} ORDER BY rowid LIMIT 1 OFFSET 999"
                                      ).fetchone()[0]
            assert recorded.resume_after == nth
        else:
            assert recorded.resume_after is None  # WITHOUT ROWID: resumes by offset
        result = await TableCopier(pg, frozen, plan, "public", census=cen).run(
            resume_after=recorded.resume_after, done_rows=recorded.rows_copied)
        total = 5001 if name == "logs" else 5000
        assert result.rows == total
        await finish_table(pg, plan, "public", status=state.STREAMING, mark=frozen.mark,
                           seconds=result.seconds, rows=result.rows)
    finally:
        frozen.close()
    good = total - (1 if name == "logs" else 0)
    assert await pg_count(pg, name) == (good, good)
    expect = {"logs": 1} if name == "logs" else {}
    counts = await compare_all(only(tmp_path / "snap.sqlite", name), target_dsn,
                               expect_quarantined=expect)
    assert counts == {name: total}


async def test_units_copy_their_rowid_ranges_and_resume_from_their_progress(tmp_path, pg, target_dsn):
    source = make_source(tmp_path / "live.db", rows=6000)
    await ready(pg, source)
    frozen = open_frozen_copy(take_copy(source, tmp_path / "snap.sqlite"))
    try:
        plan, cen = await create(pg, frozen, "items", source)
        lo, hi = frozen.conn.execute("SELECT min(rowid), max(rowid) FROM items").fetchone()
        mid = (lo + hi) // 2
        units = [Unit("items", 0, lo - 1, mid), Unit("items", 1, mid, hi)]
        await state.register_units(pg, "items", [(u.id, u.lo, u.hi) for u in units])
        target = parse_target(target_dsn)

        def job(unit: Unit) -> Job:
            return Job(target=target, timeout=10, tls_verify=False,
                       copy_path=str(frozen.path), plan=plan.to_json(), census=cen,
                       schema="public", unit=unit, ppid=0, stop_file=str(tmp_path / "stop"))

        stop = asyncio.Event()
        # The first unit stops after its first committed chunk...
        with pytest.raises(Interrupted):
            await TableCopier(pg, frozen, plan, "public", census=cen, unit=units[0], stop=stop,
                              progress=lambda *_: stop.set()).run()
        first = await state.unit_progress(pg, "items", 0)
        assert first is not None and not first.done and first.rows == 1000
        assert await pg_count(pg, "items") == (1000, 1000)
        # ...and copy_unit resumes it from its recorded progress, then copies the other.
        done = [await copy_unit(pg, frozen, job(u)) for u in units]
        assert [d.rows for d in done] == [3000, 3000]
        assert all(p is not None and p.done for p in
                   [await state.unit_progress(pg, "items", u.id) for u in units])
        assert await state.units_total(pg, "items") == (6000, 0)
        again = await copy_unit(pg, frozen, job(units[1]))  # a finished unit copies nothing
        assert again.rows == 3000 and again.seconds == 0.0
        await finish_table(pg, plan, "public", status=state.STREAMING, mark=frozen.mark,
                           seconds=1.0, rows=6000)
    finally:
        frozen.close()
    assert await pg_count(pg, "items") == (6000, 6000)
    counts = await compare_all(only(tmp_path / "snap.sqlite", "items"), target_dsn,
                               expect_quarantined={})
    assert counts == {"items": 6000}


INT64 = (-(2**63), 2**63 - 1)


@settings(max_examples=200, deadline=None, database=None)
@given(lo=st.integers(-(2**63) + 1, 2**63 - 1), span=st.integers(0, 2**64), rows=st.integers(0, 10**7),
       workers=st.integers(1, 16))
def test_split_cuts_rowid_ranges_that_cover_each_rowid_once(lo, span, rows, workers):
    hi = min(lo + span, INT64[1])
    rows = min(rows, hi - lo + 1)  # rowids are distinct
    units = split("t", rows, lo, hi, workers)
    if rows <= UNIT_ROWS or workers == 1:
        assert units == [Unit("t", 0, None, None)]
        return
    assert 2 <= len(units) <= workers * 4 and [u.id for u in units] == list(range(len(units)))
    # Units are (lo, hi] ranges, contiguous and increasing; the first has no lower bound and the
    # last no upper one (None), so every 64-bit rowid falls in exactly one.
    assert units[0].lo is None and units[-1].hi is None
    for a, b in zip(units, units[1:], strict=False):
        assert a.hi == b.lo and a.hi is not None and lo <= a.hi < hi
    inner = [u.hi for u in units[:-1]]
    assert inner == sorted(set(inner))
    for rid in {lo, hi, (lo + hi) // 2, *inner, *(b + 1 for b in inner if b < hi)}:
        owners = [u for u in units if (u.lo is None or u.lo < rid) and (u.hi is None or rid <= u.hi)]
        assert len(owners) == 1, (rid, owners)


def test_split_leaves_small_tables_and_no_rowid_whole():
    assert split("t", UNIT_ROWS, 1, UNIT_ROWS, 8) == [Unit("t", 0, None, None)]
    assert split("t", 10**6, None, None, 8) == [Unit("t", 0, None, None)]
    assert split("t", 10**6, 1, 10**6, 1) == [Unit("t", 0, None, None)]
    assert len(split("t", 10**6, 1, 10**6, 8)) == 4


# -- drift -----------------------------------------------------------------------------------------


DRIFT_SOURCE = """
CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT UNIQUE, price REAL);
CREATE TABLE codes (code TEXT NOT NULL PRIMARY KEY, v INTEGER);
CREATE TABLE log (msg TEXT);
CREATE INDEX items_price ON items (price);
INSERT INTO items VALUES (1, 'a', 1.5), (2, 'b', NULL);
INSERT INTO codes VALUES ('x', 1);
INSERT INTO log VALUES ('hello');
"""


@pytest.fixture(scope="module")
def drift_base(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("drift") / "base.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(DRIFT_SOURCE)
    conn.close()
    install(path)
    return path


class Replicated:
    """A copy of the base file and what was replicated from it (plans and CREATE TABLE text)."""

    def __init__(self, base: Path, tmp: Path):
        self.path = tmp / "drift.db"
        shutil.copy(base, self.path)
        self.conn = open_source(self.path)
        self.known = {}
        for name, table in inspect(self.conn).tables.items():
            cen = quick_census(self.conn, table, text_columns=text_census_columns(table))
            self.known[name] = (plan_table(table, cen, Config(source=self.path)), table.sql)

    def run(self, *statements: str) -> None:
        app = sqlite3.connect(self.path, isolation_level=None)
        try:
            for stmt in statements:
                app.execute(stmt)
        finally:
            app.close()

    def detect(self, wanted: set[str] | None = None, follow_drops: bool = False):
        schema = inspect(self.conn)
        wanted = set(schema.tables) if wanted is None else wanted
        return detect(self.conn, schema, self.known, wanted, follow_drops=follow_drops)


@pytest.fixture
def replicated(drift_base, tmp_path):
    r = Replicated(drift_base, tmp_path)
    yield r
    r.conn.close()


def test_no_drift_when_nothing_changed(replicated):
    found = replicated.detect()
    assert found.empty, found
    assert found.rowid_check == ["log"]  # keyless: rowids compared after each schema change


def test_drift_new_table(replicated):
    replicated.run("CREATE TABLE fresh (id INTEGER PRIMARY KEY, v TEXT)")
    found = replicated.detect()
    assert found.new == ["fresh"] and not (found.add_columns or found.recopy or found.indexes)
    assert replicated.detect(wanted={"items", "codes", "log"}).empty  # excluded by config


def test_drift_add_column(replicated):
    replicated.run("ALTER TABLE items ADD COLUMN extra INTEGER NOT NULL DEFAULT 42",
                   "ALTER TABLE items ADD COLUMN note TEXT")
    found = replicated.detect()
    assert found.add_columns == {"items": ["extra", "note"]}
    assert not (found.new or found.recopy or found.indexes or found.dropped)


def test_drift_rebuilt_table_loses_its_triggers_and_is_copied_again(replicated):
    replicated.run("BEGIN",
                   "CREATE TABLE items_new (id INTEGER PRIMARY KEY, name TEXT UNIQUE, price NUMERIC)",
                   "INSERT INTO items_new SELECT * FROM items", "DROP TABLE items",
                   "ALTER TABLE items_new RENAME TO items", "CREATE INDEX items_price ON items (price)",
                   "COMMIT")
    found = replicated.detect()
    assert list(found.recopy) == ["items"] and "triggers disappeared" in found.recopy["items"]
    assert not (found.new or found.add_columns or found.dropped)


def test_drift_changed_definition_is_copied_again(replicated):
    replicated.run("ALTER TABLE codes RENAME COLUMN v TO value")
    found = replicated.detect()
    assert found.recopy == {"codes": "table definition changed"}


def test_drift_index_added_or_dropped(replicated):
    replicated.run("CREATE UNIQUE INDEX codes_v ON codes (v)")
    assert replicated.detect().indexes == ["codes"]
    replicated.run("DROP INDEX codes_v", "DROP INDEX items_price")
    found = replicated.detect()
    assert found.indexes == ["items"] and not found.recopy


def test_drift_dropped_table_is_an_error_naming_it_unless_followed(replicated):
    replicated.run("DROP TABLE codes")
    with pytest.raises(DriftError, match="table 'codes' was dropped") as exc:
        replicated.detect()
    assert "follow_drops" in str(exc.value)
    found = replicated.detect(follow_drops=True)
    assert found.dropped == ["codes"] and not found.empty


def test_drift_renamed_table_is_an_error_naming_both(replicated):
    replicated.run("ALTER TABLE codes RENAME TO codes2")
    with pytest.raises(DriftError, match="table 'codes' was renamed to 'codes2'"):
        replicated.detect(follow_drops=True)


# -- product bugs found here (fixed; each test failed before its fix) -------------------------------


async def test_a_row_with_the_smallest_rowid_is_copied(tmp_path, pg, target_dsn):
    source = tmp_path / "extremes.db"
    conn = sqlite3.connect(source, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(-(2**63), "min"), (0, "zero"),
                                                     (2**63 - 1, "max")])
    conn.close()
    await ready(pg, source)
    frozen = open_frozen_copy(take_copy(source, tmp_path / "snap.sqlite"))
    try:
        rows = await copy_table(pg, frozen, "t", source)
    finally:
        frozen.close()
    assert rows == 3
    await compare_all(source, target_dsn, expect_quarantined={})


def test_split_bounds_stay_within_64_bits_at_the_smallest_rowid():
    units = split("t", UNIT_ROWS * 4, -(2**63), 2**63 - 1, 4)
    assert all(INT64[0] <= b <= INT64[1] for u in units for b in (u.lo, u.hi) if b is not None)


async def test_a_table_created_again_with_another_type_is_copied_exactly(tmp_path, pg, target_dsn):
    source = tmp_path / "replan.db"
    conn = sqlite3.connect(source, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(1, 1), (2, 2)])
    conn.close()
    await ready(pg, source)
    frozen = open_frozen_copy(take_copy(source, tmp_path / "snap1.sqlite"))
    try:
        await copy_table(pg, frozen, "t", source)
        assert (await state.tables(pg))["t"].plan.column("v").pg_type == "bigint"
    finally:
        frozen.close()
    conn = sqlite3.connect(source, isolation_level=None)
    conn.execute("UPDATE t SET v = 2.5 WHERE id = 2")  # the column is now planned numeric
    conn.close()
    frozen = open_frozen_copy(take_copy(source, tmp_path / "snap2.sqlite"))
    try:
        await copy_table(pg, frozen, "t", source)  # prepare_table drops and re-creates it
        assert (await state.tables(pg))["t"].plan.column("v").pg_type == "numeric"
    finally:
        frozen.close()
    await compare_all(source, target_dsn, expect_quarantined={})


async def test_a_copy_that_misses_a_row_fails_loudly_with_the_numbers(tmp_path, pg, target_dsn):
    source = make_source(tmp_path / "live.db", rows=300)
    await ready(pg, source)
    frozen = open_frozen_copy(take_copy(source, tmp_path / "snap.sqlite"))
    try:
        plan, cen = await create(pg, frozen, "logs", source)
        await TableCopier(pg, frozen, plan, "public", census=cen).run()
        await check_complete(pg, plan, "public", cen.rows)  # 300 written + 1 quarantined
        await pg.execute("DELETE FROM logs WHERE _replicator_rowid = 17")  # as if never copied
        with pytest.raises(SnapshotIncomplete, match=r"'logs'.* 301 row.*received 299 and "
                           r"quarantine holds 1 \(\+1 unaccounted\)"):
            await check_complete(pg, plan, "public", cen.rows)
    finally:
        frozen.close()


# -- the whole key space ---------------------------------------------------------------------------

_EDGES = st.sampled_from([-(2**63), -(2**63) + 1, -(2**62), -1, 0, 1, 2**31, 2**53 + 1,
                          2**62, 2**63 - 2, 2**63 - 1])
ROWIDS = st.lists(st.one_of(_EDGES, st.integers(-(2**63), 2**63 - 1), st.integers(-50, 50)),
                  min_size=1, max_size=60, unique=True)
TEXT_KEYS = st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                             max_size=8), min_size=1, max_size=40, unique=True)
BLOB_KEYS = st.lists(st.binary(max_size=8), min_size=1, max_size=40, unique=True)
SHAPES = {
    "alias": ("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO t VALUES (?, ?)"),
    "rowid": ("CREATE TABLE t (v TEXT, w INTEGER)", "INSERT INTO t (rowid, v, w) VALUES (?, ?, 1)"),
    "text": ("CREATE TABLE t (k TEXT PRIMARY KEY NOT NULL, v TEXT) WITHOUT ROWID",
             "INSERT INTO t VALUES (?, ?)"),
    "blob": ("CREATE TABLE t (k BLOB PRIMARY KEY NOT NULL, v TEXT) WITHOUT ROWID",
             "INSERT INTO t VALUES (?, ?)"),
    "composite": ("CREATE TABLE t (a TEXT NOT NULL, b INTEGER NOT NULL, v TEXT, "
                  "PRIMARY KEY (a, b)) WITHOUT ROWID", "INSERT INTO t VALUES (?, ?, ?)"),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_snapshot_covers_the_whole_key_space(tmp_path, target_dsn, shape):
    """Keys at both ends of 64 bits, negative, with huge gaps, not aliased, text, blob and
    composite: the copy (split into rowid units where the table has rowids, as the snapshot
    does for large tables) holds every row, proven by the comparator and the copy's own count."""
    keys = {"alias": ROWIDS, "rowid": ROWIDS, "text": TEXT_KEYS, "blob": BLOB_KEYS,
            "composite": st.lists(st.tuples(st.sampled_from(["", "a", "é", "z" * 5]), _EDGES),
                                  min_size=1, max_size=40, unique=True)}[shape]
    loop = asyncio.new_event_loop()
    pg = loop.run_until_complete(asyncpg.connect(target_dsn))
    files = iter(range(10**6))

    @settings(max_examples=15, deadline=None)
    @given(keys=keys, workers=st.integers(1, 5))
    def prop(keys, workers):
        source = tmp_path / f"keys{next(files)}.db"
        conn = sqlite3.connect(source, isolation_level=None)
        create_sql, insert = SHAPES[shape]
        conn.execute(create_sql)
        conn.executemany(insert, [(*k, "v") if isinstance(k, tuple) else (k, "v") for k in keys])
        conn.close()
        loop.run_until_complete(_copy_in_units(pg, tmp_path, source, workers))
        loop.run_until_complete(compare_all(source, target_dsn, expect_quarantined={}))
        source.unlink()

    try:
        loop.run_until_complete(ready(pg, tmp_path / "keys.db"))
        prop()
    finally:
        loop.run_until_complete(pg.close())
        loop.close()


async def _copy_in_units(pg: asyncpg.Connection, tmp_path: Path, source: Path, workers: int) -> None:
    snap = tmp_path / "keys-snap.sqlite"
    snap.unlink(missing_ok=True)
    frozen = open_frozen_copy(take_copy(source, snap))
    try:
        plan, cen = await create(pg, frozen, "t", source)
        lo, hi = rowid_bounds(frozen, plan)
        units = split("t", UNIT_ROWS + 1, lo, hi, workers)  # as the snapshot splits a large table
        await state.register_units(pg, "t", [(u.id, u.lo, u.hi) for u in units])
        for unit in units:
            await TableCopier(pg, frozen, plan, "public", census=cen, unit=unit).run()
        await check_complete(pg, plan, "public", cen.rows)
    finally:
        frozen.close()
