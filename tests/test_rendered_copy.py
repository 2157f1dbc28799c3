"""The snapshot's rendered path: SQLite writes each chunk as COPY text (issue 13).

Where every column of a table has a rendering (``convert.render_line``), rows never become
Python objects: SQLite writes a chunk as one string of COPY's text format and Postgres parses
it. Each rendering takes exactly what its converter takes and writes 0xFF (never valid UTF-8)
for anything else, so Postgres refuses that chunk, which goes through the checking converters.

Proven here by generated tables of every renderable type holding hostile values (tabs,
newlines, backslashes, ``\\N`` as text, NUL bytes, invalid UTF-8, -0.0, infinities, integers at
the 64-bit edges, impossible dates, UUIDs in other spellings, JSON scalars, BLOBs where text is
declared): copied once through the rendered path and once through the checking converters,
both give the same rows in Postgres, value for value, and the same quarantine.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import asyncpg
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator import state
from replicator.census import quick_census
from replicator.config import Config
from replicator.dsn import parse_target
from replicator.schema import plan_table, text_census_columns
from replicator.snapshot.copier import TableCopier, prepare_table
from replicator.snapshot.frozen import open_frozen_copy, take_copy
from replicator.source import inspect
from replicator.target import connect

BAD_UTF8 = b"\xc3("  # stored as TEXT (see _make): not valid UTF-8

POOLS = {
    "INTEGER": [0, -1, 2**63 - 1, -(2**63), 2**53 + 1, None, 2.5, "12", b"\x01"],
    "REAL": [0.1, -0.0, float("inf"), float("-inf"), 1 / 3, 1e300, 5e-324, None, 2**53 + 1],
    "NUMERIC": [1, 2.5, -0.0, 0.1, 2**63 - 1, float("inf"), None, 1e-7, 123456789.125],
    "TEXT": ["plain", "a\tb", "x\ny", "back\\slash", "cr\r", "\\N", "", "é ü 漢字", None,
             "nul\x00byte", BAD_UTF8, b"\x00\xff", 7, 1.5, "\\.", "\\x41"],
    "BLOB": [b"", b"\x00\x01\\", b"\xff" * 5, None, "text", 3],
    "BOOLEAN": [0, 1, 1, None, 2, 1.0, "true"],
    "DATETIME": ["2024-01-02 03:04:05", "1999-12-31 23:59:59", "2000-02-29 12:00:00",
                 "2024-02-30 03:04:05",
                 "2024-01-02 24:00:00", "2024-01-02 23:59:60", "0000-01-01 00:00:00",
                 "2024-01-02T03:04:05Z", None, 1_700_000_000, "2024-01-02 03:04:05\x00x"],
    "TIMESTAMP": ["2024-01-02T03:04:05.123456Z", "2024-01-02T03:04:05.000001Z",
                  "0999-07-08T09:10:11.500000Z", "0001-01-01T00:00:00.000000Z",
                  "9999-12-31T23:59:59.999999Z", "2024-01-02T03:04:05Z",
                  "2024-13-02T03:04:05.123456Z", None],
    "DATE": ["2024-01-02", "2000-02-29", "0001-01-01", "9999-12-31", "1900-02-29", "2024-1-2",
             None],
    "JSON": ['{"a": 1}', "[1, 2]", '{"t": "a\\tb", "u": "back\\\\slash"}', '{"x": "\\u00e9"}', "5",
             "{bad", None, '{"n": NaN}', '[\n1\n]'],
    "UUID": ["0b0e2a4e-4f3c-4b5e-9d3a-1c2b3a4d5e6f", "6f0e2a4e-4f3c-4b5e-9d3a-1c2b3a4d5e60",
             "00000000-0000-0000-0000-000000000000", "0B0E2A4E-4F3C-4B5E-9D3A-1C2B3A4D5E6F",
             "{0b0e2a4e-4f3c-4b5e-9d3a-1c2b3a4d5e6f}", None],
    "": [1, 2.5, "text", b"\x02", None, -0.0],
}


def _make(path: Path, declared: list[str], rows: list[tuple]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    cols = ", ".join(f"c{i} {d}" for i, d in enumerate(declared))
    conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, {cols})")
    conn.executemany(f"INSERT INTO t VALUES (NULL, {', '.join('?' * len(declared))})", rows)
    for i in range(len(declared)):  # invalid UTF-8 as TEXT
        conn.execute(f"UPDATE t SET c{i} = CAST(c{i} AS TEXT) WHERE c{i} = ?", (BAD_UTF8,))
    conn.close()


async def _copy(pg: asyncpg.Connection, frozen, plan, schema: str, render: bool):
    made = await prepare_table(pg, plan, schema, "CREATE TABLE t (...)",
                               owned=await state.owned_tables(pg))
    copier = TableCopier(pg, frozen, made, schema, census=None, render=render)
    result = await copier.run()
    rows = await pg.fetch(f"SELECT x::text FROM {schema}.t x ORDER BY x.id")  # -0 shows
    held = await pg.fetch("SELECT key, column_name, reason FROM _replicator.quarantine "
                          "WHERE tbl = 't' ORDER BY key")
    return copier.line is not None, result, [tuple(r) for r in rows], [tuple(r) for r in held]


async def _ready(dsn: str) -> asyncpg.Connection:
    conn = await connect(parse_target(dsn), retry_for=5)  # the replicator's own connection
    await conn.execute("SET TimeZone = 'America/New_York'")  # naive text is UTC all the same
    await state.ensure(conn)
    await state.init(conn, source_id="unit", source_path="unused", mode="run",
                     target_schema="public")
    await conn.execute("CREATE SCHEMA IF NOT EXISTS rendered; CREATE SCHEMA IF NOT EXISTS checked")
    return conn


def test_the_rendered_path_gives_the_rows_and_quarantine_of_the_checking_path(tmp_path,
                                                                              target_dsn):
    loop = asyncio.new_event_loop()
    pg = loop.run_until_complete(_ready(target_dsn))
    used: list[bool] = []
    files = iter(range(10**6))

    @settings(max_examples=120, deadline=None)
    @given(data=st.data())
    def prop(data):
        declared = data.draw(st.lists(st.sampled_from(sorted(POOLS)), min_size=1, max_size=3))
        # mostly a column's usual values (so the plan takes their type), sometimes a hostile one
        usual = {d: [v for v in POOLS[d][:3] if v is not None] or [None] for d in declared}
        count = data.draw(st.integers(1, 25))
        rows = [tuple(data.draw(st.sampled_from(POOLS[d]) if data.draw(st.integers(0, 4)) == 0
                                else st.sampled_from([*usual[d], None])) for d in declared)
                for _ in range(count)]
        n = next(files)
        source = tmp_path / f"r{n}.db"
        _make(source, declared, rows)
        frozen = open_frozen_copy(take_copy(source, tmp_path / f"r{n}.sqlite"))
        try:
            table = inspect(frozen.conn).tables["t"]
            cen = quick_census(frozen.conn, table, text_columns=text_census_columns(table))
            plan = plan_table(table, cen, Config(source=source))
            rendered = loop.run_until_complete(_copy(pg, frozen, plan, "rendered", True))
            checked = loop.run_until_complete(_copy(pg, frozen, plan, "checked", False))
        finally:
            frozen.close()
        convs = [c.conv for c in plan.columns]
        assert rendered[1].rows == checked[1].rows == count
        assert rendered[2:] == checked[2:], (declared, rows, convs)
        assert rendered[1].quarantined == checked[1].quarantined
        used.append(rendered[0])

    try:
        prop()
    finally:
        loop.run_until_complete(pg.close())
        loop.close()
    assert sum(used) > len(used) // 3, used  # the rendered path was the one mostly taken


def test_the_first_and_last_dates_arrive_as_themselves(tmp_path, target_dsn):
    """asyncpg writes 0001-01-01 and 9999-12-31 (and the first and last microsecond of those
    years) as -infinity and infinity, and reads infinity back as those dates, so no comparison
    through asyncpg sees it; the replicator's connections write them as themselves, by either
    path. Read back as text here."""
    source = tmp_path / "edges.db"
    rows = [("0001-01-01", "0001-01-01 00:00:00.000000"), ("9999-12-31", "9999-12-31 23:59:59.999999"),
            ("2024-02-29", "2024-02-29 12:00:00.000000")]
    conn = sqlite3.connect(source, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, d DATE, at DATETIME)")
    conn.executemany("INSERT INTO t VALUES (NULL, ?, ?)", rows)
    conn.close()
    expect = [f"({i},{d},\"{at.replace('.000000', '')}+00\")" for i, (d, at) in enumerate(rows, 1)]

    async def run() -> list[list[str]]:
        pg = await _ready(target_dsn)
        await pg.execute("SET TimeZone = 'UTC'")
        frozen = open_frozen_copy(take_copy(source, tmp_path / "edges.sqlite"))
        try:
            table = inspect(frozen.conn).tables["t"]
            cen = quick_census(frozen.conn, table, text_columns=text_census_columns(table))
            plan = plan_table(table, cen, Config(source=source))
            assert [c.pg_type for c in plan.columns] == ["bigint", "date", "timestamptz"]
            return [(await _copy(pg, frozen, plan, schema, render))[2]
                    for schema, render in (("rendered", True), ("checked", False))]
        finally:
            frozen.close()
            await pg.close()

    for got in asyncio.run(run()):
        assert [r[0] for r in got] == expect


async def test_an_infinity_on_postgres_is_no_date_sqlite_holds(tmp_path, target_dsn):
    """Postgres's infinities read back as their names: never equal to the first or last date,
    so verification sees a row the application changed to infinity on Postgres, and the way back
    to SQLite (the fallback window) names it as having no exact SQLite form."""
    import json

    from replicator.convert_back import back_converter

    from .support.helpers import cli

    source = tmp_path / "ends.db"
    conn = sqlite3.connect(source, isolation_level=None)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, d DATE, at DATETIME)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", [
        (1, "9999-12-31", "9999-12-31 23:59:59.999999"), (2, "0001-01-01", "0001-01-01 00:00:00.000000"),
        (3, "2024-02-29", "2024-02-29 12:00:00.000000")])
    conn.close()
    cli("copy", "--source", str(source), "--target", target_dsn, check=True)
    pg = await connect(parse_target(target_dsn))
    try:
        assert await pg.fetchrow("SELECT 'infinity'::date, '-infinity'::timestamptz, "
                                 "'9999-12-31'::date = $1 AS same", "infinity") == \
            ("infinity", "-infinity", False)
        await pg.execute("UPDATE t SET d = 'infinity', at = 'infinity' WHERE id = 1")
        await pg.execute("UPDATE t SET at = $1 WHERE id = 2", "-infinity")
        plan = (await state.tables(pg))["t"].plan
    finally:
        await pg.close()
    out = cli("verify", "--source", str(source), "--target", target_dsn, "--json")
    report = json.loads(out.stdout)
    assert out.returncode == 1 and report["tables"][0]["different"] == 2, report
    named = {(x["key"][0], x["column"], x["postgres"])
             for x in report["tables"][0]["samples"]["different"]}
    assert named == {(1, "d", "'infinity'"), (2, "at", "'-infinity'")}, named  # each row's first
    back = {c.name: back_converter(c) for c in plan.columns}
    assert back["at"]("infinity") == ("infinity", False)
    assert back["d"]("-infinity") == ("-infinity", False)
