"""``plan``'s own counts, taken by shortcuts, equal what the long way counts, on generated data:
NUL bytes and invalid UTF-8 in text (skipped where the census already proved a column's text
ASCII, or NUL-free), and orphan rows of a foreign key naming a parent's rowid (an anti-join
instead of ``PRAGMA foreign_key_check``)."""

from __future__ import annotations

import sqlite3

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replicator.census import count_orphans, merged, plan_census
from replicator.schema import text_census_columns
from replicator.source import inspect

# Text as SQLite may hold it: valid, NUL bytes, invalid UTF-8 (lone lead and continuation bytes,
# which SQLite's length() does not tell apart from ASCII), other scripts.
_PIECES = [b"a", b"Z", b"0", b" ", b"-", b":", b"\x00", b"\x80", b"\xc3", b"\xc3\xa9", b"\xe2\x82\xac",
           b"\xff", b"\xf0\x9f\x98\x80", b'"', b"{", b"}"]
_DATES = [b"2024-02-29 10:20:30", b"2023-12-31 23:59:59", b"1999-01-01 00:00:00"]
_JSONS = [b'{"a": 1}', b'["x", 2]', b'{"k": "\xc3\xa9"}', b'{"k": "\xc3"}', b'{"k": "\xff"}', b'[]']

texts = st.one_of(st.lists(st.sampled_from(_PIECES), max_size=6).map(b"".join),
                  st.sampled_from(_DATES), st.sampled_from(_JSONS))


def _reference(values: list[bytes | None]) -> tuple[int, int]:
    nul = sum(1 for v in values if v is not None and b"\x00" in v)
    bad = 0
    for v in values:
        if v is None:
            continue
        try:
            v.decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
    return nul, bad


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(free=st.lists(st.one_of(st.none(), texts), min_size=1, max_size=30),
       dated=st.lists(st.sampled_from(_DATES), min_size=1, max_size=8),
       jsons=st.lists(st.sampled_from(_JSONS), min_size=1, max_size=8),
       odd=st.sampled_from([None, b"2024-02-29 10:20:3\x00", b"2024-02-29 10:20:3\xc3", b"{\x00}",
                            b'{"k": "\xc3"}']))
def test_text_counts_equal_the_value_by_value_count(tmp_path_factory, free, dated, jsons, odd):
    # One column of anything, one of date-times only, one of JSON only; ``odd`` is one more value
    # in the last two, which may break what the census proved there.
    path = tmp_path_factory.mktemp("t") / "t.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, free TEXT, at DATETIME, doc JSON)")
    n = max(len(free), len(dated), len(jsons)) + 1
    columns = {"free": free, "at": [*dated, odd], "doc": [*jsons, odd]}
    rows = [[i, *(vals[i] if i < len(vals) else None for vals in columns.values())] for i in range(n)]
    conn.executemany("INSERT INTO t VALUES (?, CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS TEXT))",
                     rows)
    conn.commit()
    table = inspect(conn).tables["t"]
    cen = plan_census(conn, table, text_columns=text_census_columns(table))
    for name, vals in columns.items():
        got = (cen.columns[name].nul_text, cen.columns[name].bad_utf8)
        assert got == _reference(vals), (name, vals)
    conn.close()


values = st.one_of(st.none(), st.integers(-3, 8), st.sampled_from([2**63 - 1, -2**63]),
                   st.sampled_from([2.0, 2.5, -0.0, 1e300]),
                   st.sampled_from(["2", " 2", "2 ", "2.0", "0x2", "2e0", "x", ""]),
                   st.sampled_from([b"\x02", b"2"]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parents=st.sets(st.integers(-3, 8), max_size=8), kids=st.lists(values, max_size=25),
       declared=st.sampled_from(["INTEGER", "INT", "BIGINT"]), by_pk=st.booleans())
def test_orphans_by_anti_join_equal_the_pragma(tmp_path_factory, parents, kids, declared, by_pk):
    path = tmp_path_factory.mktemp("fk") / "fk.db"
    conn = sqlite3.connect(path)
    ref = "REFERENCES p" if by_pk else "REFERENCES p (id)"
    conn.execute("CREATE TABLE p (id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute(f"CREATE TABLE c (id INTEGER PRIMARY KEY, pid {declared} {ref}, "
                 "up INTEGER REFERENCES c (id))")  # and a key to itself
    conn.executemany("INSERT INTO p (id) VALUES (?)", [(p,) for p in parents])
    conn.executemany("INSERT INTO c (id, pid, up) VALUES (?, ?, ?)",
                     [(i, k, kids[-1 - i]) for i, k in enumerate(kids)])
    conn.commit()
    table = inspect(conn).tables["c"]
    expected: dict[str, int] = {}
    for _t, _rowid, parent, fkid in conn.execute("PRAGMA foreign_key_check(c)"):
        fk = table.foreign_keys[fkid]
        label = f"({', '.join(fk.columns)}) -> {parent}"
        expected[label] = expected.get(label, 0) + 1
    assert count_orphans(conn, table) == expected
    conn.close()


cells = st.one_of(st.none(), st.integers(-2, 2), st.sampled_from([2**60, 0.5, -0.0, 2459000.5]),
                  texts.map(lambda b: ("text", b)), st.sampled_from([b"\x01\x02", b""]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(cells, cells, cells), min_size=1, max_size=40), cut=st.integers(0, 41))
def test_a_table_counted_in_rowid_ranges_adds_up_to_the_whole(tmp_path_factory, rows, cut):
    path = tmp_path_factory.mktemp("r") / "r.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a, at DATETIME, doc JSON)")
    for row in rows:  # text as the bytes it is, valid UTF-8 or not
        marks = ", ".join("CAST(? AS TEXT)" if isinstance(v, tuple) else "?" for v in row)
        conn.execute(f"INSERT INTO t (a, at, doc) VALUES ({marks})",
                     [v[1] if isinstance(v, tuple) else v for v in row])
    conn.commit()
    table = inspect(conn).tables["t"]
    cols = text_census_columns(table)
    whole = plan_census(conn, table, text_columns=cols)
    halves = merged([plan_census(conn, table, text_columns=cols, rowids=(None, cut)),
                     plan_census(conn, table, text_columns=cols, rowids=(cut + 1, None))])
    assert halves == whole
    conn.close()


def test_plan_in_worker_processes_equals_plan_in_threads(chinook, monkeypatch):
    """A large file is counted in worker processes, its large tables in rowid halves: the plan
    is the one threads make, and one table (or half) at a time."""
    from replicator import census, migration_plan
    from replicator.config import Config

    cfg = Config(source=chinook, snapshot_workers=2)
    monkeypatch.setattr(census, "SPLIT_ABOVE", 1000)  # Track (3,503 rows) and others in halves
    threads = migration_plan.build(cfg)
    monkeypatch.setattr(migration_plan, "PROCESSES_FROM", 0)
    processes = migration_plan.build(cfg)
    one = migration_plan.build(Config(source=chinook, snapshot_workers=1))
    assert processes == threads == one
    assert sum(t["rows"] for t in one["tables"]) == 15607
