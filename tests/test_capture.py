"""Capture objects in SQLite: what the triggers log, that they never fail a write, idempotent
install, and an uninstall that leaves the application's schema byte-identical."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from replicator import capture
from replicator.source import KEY_ALIAS, KEY_PK, KEY_ROWID, inspect, open_source
from replicator.source_write import LiveFile

HOSTILE = """
CREATE TABLE plain (id INTEGER PRIMARY KEY, v TEXT);
CREATE TABLE comp (a TEXT NOT NULL, b INTEGER NOT NULL, v REAL, PRIMARY KEY (b, a));
CREATE TABLE wr (k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;
CREATE TABLE nokey (x, y);
CREATE TABLE nullpk (code TEXT PRIMARY KEY, v);
CREATE TABLE descpk (id INTEGER PRIMARY KEY DESC, v);
CREATE TABLE "we""ird; name ✓" ("sel ect" INTEGER PRIMARY KEY, "order" TEXT, "ñ" BLOB);
CREATE TABLE shadowed (rowid TEXT, oid TEXT, v);
CREATE VIRTUAL TABLE docs USING fts5(body);
CREATE INDEX plain_v ON plain (v);
CREATE VIEW plain_view AS SELECT * FROM plain;
CREATE TRIGGER app_trigger AFTER INSERT ON plain BEGIN SELECT 1; END;
"""


@pytest.fixture
def db(tmp_path):
    path = tmp_path / "hostile.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(HOSTILE)
    conn.close()
    return path


def live(conn: sqlite3.Connection) -> LiveFile:
    """The connection as the replicator's writer (its writes wait for quiet moments)."""
    path = conn.execute("PRAGMA database_list").fetchone()[2]
    return LiveFile(conn, Path(path))


def schema_rows(conn: sqlite3.Connection):
    return conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_schema WHERE name NOT LIKE 'sqlite_%' "
        "ORDER BY type, name"
    ).fetchall()


def log_rows(conn):
    return [r[2:] for r in conn.execute(
        "SELECT seq, ts, tbl, op, k1, k2 FROM _replicator_log ORDER BY seq")]


def test_key_kinds(db):
    conn = open_source(db)
    tables = inspect(conn).tables
    assert tables["plain"].key_kind == KEY_ALIAS
    assert tables["comp"].key_kind == KEY_PK and tables["comp"].key_columns == ("b", "a")
    assert tables["wr"].key_kind == KEY_PK and tables["wr"].rowid_name == ""
    assert tables["nokey"].key_kind == KEY_ROWID
    assert tables["nullpk"].key_kind == KEY_ROWID and "can hold NULL" in tables["nullpk"].key_note
    assert tables["descpk"].key_kind == KEY_ROWID  # INTEGER PRIMARY KEY DESC is not a rowid alias
    assert tables["shadowed"].rowid_name == "_rowid_"
    assert "docs" not in tables and "docs_data" not in tables
    assert "virtual" in inspect(conn).skipped["docs"]


def test_triggers_log_keys_of_every_change(db):
    conn = open_source(db)
    capture.install(live(conn), inspect(conn).tables.values())
    conn.execute("INSERT INTO plain (id, v) VALUES (1, 'a')")
    conn.execute("UPDATE plain SET id = 2 WHERE id = 1")  # key change: old and new key
    conn.execute("DELETE FROM plain")
    conn.execute("INSERT INTO comp VALUES ('x', 7, 0.1)")
    conn.execute("INSERT INTO wr VALUES ('k', x'00ff')")
    conn.execute("INSERT INTO nokey VALUES (1, 2)")
    conn.execute("INSERT INTO shadowed VALUES ('r', 'o', 1)")
    conn.execute('INSERT INTO "we""ird; name ✓" VALUES (5, \'o\', NULL)')
    assert log_rows(conn) == [
        ("plain", "I", 1, None), ("plain", "K", 1, None), ("plain", "U", 2, None),
        ("plain", "D", 2, None), ("comp", "I", 7, "x"), ("wr", "I", "k", None),
        ("nokey", "I", 1, None), ("shadowed", "I", 1, None), ('we"ird; name ✓', "I", 5, None),
    ]


def test_keys_keep_their_storage_class(db):
    conn = open_source(db)
    capture.install(live(conn), inspect(conn).tables.values())
    conn.execute("INSERT INTO wr VALUES (?, NULL)", (b"\x00blob-key",))
    conn.execute("INSERT INTO comp VALUES ('a', 9223372036854775807, NULL)")
    rows = conn.execute("SELECT k1, typeof(k1), k2 FROM _replicator_log").fetchall()
    assert rows == [(b"\x00blob-key", "blob", None), (9223372036854775807, "integer", "a")]


def test_a_trigger_never_fails_an_application_write(db):
    conn = open_source(db)
    capture.install(live(conn), inspect(conn).tables.values())
    conn.execute("PRAGMA trusted_schema = OFF")
    conn.execute("PRAGMA recursive_triggers = ON")
    huge = "x" * 5_000_000
    conn.execute("INSERT INTO nokey VALUES (?, ?)", (huge, b"\x00" * 1000))
    conn.execute("INSERT INTO nullpk VALUES (NULL, 1)")  # NULL primary key
    conn.execute("INSERT INTO nullpk VALUES (NULL, 2)")
    conn.execute("INSERT OR REPLACE INTO plain VALUES (1, 'a')")
    conn.execute("INSERT OR REPLACE INTO plain VALUES (1, 'b')")
    conn.execute("INSERT INTO descpk (v) VALUES (NULL)")  # a NULL key in a non-alias PK
    conn.execute("UPDATE nokey SET x = 1.5e308")
    assert conn.execute("SELECT count(*) FROM _replicator_log").fetchone()[0] >= 6


def test_install_is_idempotent_and_atomic(db):
    conn = open_source(db)
    tables = list(inspect(conn).tables.values())
    first = capture.install(live(conn), tables)
    assert set(first.values()) == {"created"}
    version = conn.execute("PRAGMA schema_version").fetchone()[0]
    assert set(capture.install(live(conn), tables).values()) == {"kept"}
    assert conn.execute("PRAGMA schema_version").fetchone()[0] == version  # nothing rewritten
    # A failure midway leaves nothing behind.
    capture.uninstall(live(conn))
    broken = tables + [tables[0].__class__(**{**tables[0].__dict__, "name": "missing_table"})]
    with pytest.raises(sqlite3.OperationalError):
        capture.install(live(conn), broken)
    assert not capture.installed(conn)
    assert not [r for r in schema_rows(conn) if r[1].startswith("_replicator")]


def test_uninstall_leaves_the_app_schema_byte_identical(db):
    conn = open_source(db)
    before = schema_rows(conn)
    capture.install(live(conn), inspect(conn).tables.values())
    capture.install_fence(live(conn), ["plain"], "postgres://x")
    conn.execute("INSERT INTO nokey VALUES (1, 1)")
    assert schema_rows(conn) != before
    result = capture.uninstall(live(conn))
    # 3 capture triggers per table, 2 REPLACE guards on each table with a secondary unique key
    # (nullpk and descpk: their nullable primary keys), 3 fence triggers.
    assert result["triggers"] == 3 * 8 + 2 * 2 + 3 and result["tables"] == 2
    assert schema_rows(conn) == before
    assert conn.execute("SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_sequence'"
                        ).fetchone()[0] == 0  # nothing left behind, not even sqlite_sequence


def test_fence_makes_every_write_fail_loudly(db):
    conn = open_source(db)
    capture.install(live(conn), inspect(conn).tables.values())
    conn.execute("INSERT INTO plain VALUES (1, 'a')")
    conn.execute("INSERT INTO comp VALUES ('a', 1, 0.5)")
    capture.install_fence(live(conn), ["plain", "comp"], "postgresql://user:***@neon/db")
    for sql in ("INSERT INTO plain VALUES (9, 'x')", "UPDATE comp SET v = 1", "DELETE FROM plain"):
        with pytest.raises(sqlite3.IntegrityError, match="data lives in postgresql://user:"):
            conn.execute(sql)
    capture.remove_fence(live(conn))
    conn.execute("INSERT INTO plain VALUES (9, 'x')")


def test_prune_never_reuses_sequence_numbers(db):
    conn = open_source(db)
    capture.install(live(conn), inspect(conn).tables.values())
    for i in range(10):
        conn.execute("INSERT INTO plain VALUES (?, 'x')", (i,))
    # Everything applied: all but the newest row go (SQLite numbers new rows max + 1).
    assert capture.prune(live(conn), 10, chunk=3) == 9
    conn.execute("INSERT INTO plain VALUES (100, 'y')")
    assert conn.execute("SELECT seq FROM _replicator_log").fetchall() == [(10,), (11,)]
    assert capture.prune(live(conn), 11, chunk=3) == 1
    conn.execute("DELETE FROM plain WHERE id = 100")
    assert conn.execute("SELECT seq FROM _replicator_log").fetchall() == [(11,), (12,)]
    assert capture.log_high_water(conn) == 12
    assert capture.read_meta(conn)["pruned_through"] == 11


def test_replace_guard_logs_rows_that_replace_deletes_silently(tmp_path):
    path = tmp_path / "r.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript("""
        CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE COLLATE NOCASE, v);
        CREATE TABLE codes (id INTEGER PRIMARY KEY, code TEXT);
        CREATE UNIQUE INDEX codes_code ON codes (code COLLATE NOCASE);
        INSERT INTO users VALUES (1, 'a@x', 1), (2, 'b@x', 2);
        INSERT INTO codes VALUES (1, 'ab');
    """)
    conn.close()
    conn = open_source(path)
    capture.install(live(conn), inspect(conn).tables.values())
    conn.execute("INSERT OR REPLACE INTO users VALUES (3, 'A@X', 3)")  # deletes row 1, no trigger
    conn.execute("UPDATE OR REPLACE users SET email = 'B@X' WHERE id = 3")  # deletes row 2
    conn.execute("INSERT OR REPLACE INTO codes VALUES (5, 'AB')")  # index-level NOCASE
    conn.execute("INSERT INTO users VALUES (4, 'c@x', 4)")  # no clash: nothing extra logged
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO users VALUES (5, 'C@X', 5)")  # a failed statement logs nothing
    assert log_rows(conn) == [
        ("users", "R", 1, None), ("users", "I", 3, None), ("users", "R", 2, None),
        ("users", "U", 3, None), ("codes", "R", 1, None), ("codes", "I", 5, None),
        ("users", "I", 4, None),
    ]
    assert conn.execute("SELECT id FROM users ORDER BY id").fetchall() == [(3,), (4,)]
