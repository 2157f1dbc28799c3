"""Schema drift while streaming: followed where it can be, a named error where it cannot."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from .support.helpers import (
    Daemon,
    cli,
    compare_all,
    matches,
    pg_state,
    wait_caught_up,
    wait_for,
    wait_streaming,
)

pytestmark = pytest.mark.slow


def make_db(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript("""
        CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL);
        CREATE TABLE log (msg TEXT, at REAL);  -- no key: rows tracked by rowid
        CREATE TABLE keep (id INTEGER PRIMARY KEY, v TEXT);
    """)
    conn.executemany("INSERT INTO items (name, price) VALUES (?, ?)",
                     [(f"item{i}", i / 3) for i in range(300)])
    conn.executemany("INSERT INTO log VALUES (?, ?)", [(f"m{i}", i * 0.5) for i in range(300)])
    conn.execute("INSERT INTO keep VALUES (1, 'x')")
    conn.close()


def sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    for stmt in statements:
        conn.execute(stmt)
    conn.close()


async def events_of(daemon: Daemon, name: str) -> list[dict]:
    return [e for e in daemon.events() if e.get("event") == name]


async def test_rebuild_vacuum_add_column_and_new_table_are_followed(tmp_path, target_dsn):
    db = tmp_path / "d.db"
    make_db(db)
    daemon = Daemon(db, target_dsn)
    try:
        await wait_caught_up(target_dsn, db, daemon)
        # Alembic/Django-style rebuild: new table, copy, drop, rename. Drops our triggers.
        sql(db, "BEGIN",
            "CREATE TABLE items_new (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price NUMERIC, "
            "sku TEXT UNIQUE)",
            "INSERT INTO items_new (id, name, price) SELECT id, name, price FROM items",
            "DROP TABLE items", "ALTER TABLE items_new RENAME TO items", "COMMIT")
        sql(db, "INSERT INTO items (name, price, sku) VALUES ('after rebuild', 2.5, 'S1')",
            "UPDATE items SET name = 'renamed' WHERE id = 7")
        # VACUUM renumbers the rowids of the keyless table once it has gaps.
        sql(db, "DELETE FROM log WHERE rowid % 2 = 0", "VACUUM",
            "UPDATE log SET msg = 'touched' WHERE rowid = 3")
        sql(db, "ALTER TABLE keep ADD COLUMN extra INTEGER NOT NULL DEFAULT 42",
            "INSERT INTO keep (id, v, extra) VALUES (2, 'y', 7)")
        sql(db, "CREATE TABLE fresh (k TEXT PRIMARY KEY NOT NULL, v BLOB)",
            "INSERT INTO fresh VALUES ('a', x'00ff'), ('b', NULL)")
        await wait_caught_up(target_dsn, db, daemon)

        await wait_for(lambda: matches(db, target_dsn, daemon), 60, "target equal to source",
                       daemon)
        reasons = {e["table"]: e["reason"] for e in await events_of(daemon, "table_resnapshot")}
        assert "rebuilt" in reasons["items"]
        assert "VACUUM" in reasons["log"]
        assert reasons["fresh"] == "new table"
        assert (await events_of(daemon, "columns_added"))[0]["columns"] == ["extra"]
        conn = await asyncpg.connect(target_dsn)
        try:
            assert await conn.fetchval("SELECT extra FROM keep WHERE id = 1") == 42
            assert await conn.fetchval(
                "SELECT data_type FROM information_schema.columns WHERE table_name = 'items' "
                "AND column_name = 'price'") == "numeric"
        finally:
            await conn.close()
    finally:
        daemon.stop()


async def test_a_dropped_table_stops_with_an_error_naming_it(tmp_path, target_dsn):
    db = tmp_path / "d.db"
    make_db(db)
    daemon = Daemon(db, target_dsn)
    try:
        await wait_streaming(target_dsn, daemon)
        sql(db, "DROP TABLE keep")

        async def errored():
            st = await pg_state(target_dsn)
            return st["state"] == "error" and "keep" in (st["error"] or "")

        await wait_for(errored, 30, "state error", daemon)
        st = await pg_state(target_dsn)
        assert "dropped" in st["error"] and "'keep'" in st["error"]
        status = cli("status", "--source", str(db), "--target", target_dsn, "--check")
        assert status.returncode == 1 and "dropped" in status.stdout
    finally:
        daemon.stop()


async def test_a_renamed_table_is_an_error_not_silent_drift(tmp_path, target_dsn):
    db = tmp_path / "d.db"
    make_db(db)
    daemon = Daemon(db, target_dsn)
    try:
        await wait_streaming(target_dsn, daemon)
        sql(db, "ALTER TABLE keep RENAME TO kept")

        async def errored():
            st = await pg_state(target_dsn)
            return st["state"] == "error" and "renamed to 'kept'" in (st["error"] or "")

        await wait_for(errored, 30, "state error naming the rename", daemon)
        # Undo it: the daemon recovers by itself.
        sql(db, "ALTER TABLE kept RENAME TO keep", "INSERT INTO keep VALUES (5, 'back')")

        async def recovered():
            st = await pg_state(target_dsn)
            return st["state"] == "streaming"

        await wait_for(recovered, 60, "recovery", daemon)
        await wait_caught_up(target_dsn, db, daemon)
        await compare_all(db, target_dsn)
    finally:
        daemon.stop()


async def test_follow_drops_drops_the_table_in_postgres_too(tmp_path, target_dsn):
    db = tmp_path / "d.db"
    make_db(db)
    daemon = Daemon(db, target_dsn, config="[verify]\ninterval = 0\n[replication]\nfollow_drops = true\n")
    try:
        await wait_caught_up(target_dsn, db, daemon)
        sql(db, "DROP TABLE keep", "INSERT INTO items (name, price) VALUES ('after', 1.0)")
        await wait_caught_up(target_dsn, db, daemon)

        async def gone():
            conn = await asyncpg.connect(target_dsn)
            try:
                return await conn.fetchval("SELECT to_regclass('public.keep') IS NULL")
            finally:
                await conn.close()

        await wait_for(gone, 30, "the table dropped in Postgres", daemon)
        assert (await pg_state(target_dsn))["state"] == "streaming"
        await compare_all(db, target_dsn)
    finally:
        daemon.stop()


async def test_a_table_created_while_streaming_is_typed_from_its_declaration(tmp_path, target_dsn):
    """Issue 12's first report: a table created mid-stream was planned from its zero rows
    (DATETIME -> numeric) and every row it then received went to quarantine."""
    db = tmp_path / "d.db"
    make_db(db)
    daemon = Daemon(db, target_dsn)
    try:
        await wait_caught_up(target_dsn, db, daemon)
        sql(db, "CREATE TABLE late_table (id INTEGER PRIMARY KEY, body TEXT, "
                "at DATETIME DEFAULT CURRENT_TIMESTAMP, flag BOOLEAN, doc JSON, day DATE, "
                "amount NUMERIC, anything)")

        async def followed():
            return [e for e in await events_of(daemon, "table_resnapshot")
                    if e["table"] == "late_table" and e["rows"] == 0]

        await wait_for(followed, 60, "the new table followed while empty", daemon)
        conn = sqlite3.connect(db, isolation_level=None, timeout=30)
        for i in range(162):
            conn.execute("INSERT INTO late_table (body, flag, doc, day, amount, anything) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         (f"row {i}", i % 2, json.dumps({"n": i}), f"2026-11-{1 + i % 28:02d}",
                          i * 0.25, i))
        conn.close()
        await wait_for(lambda: matches(db, target_dsn, daemon), 60, "late_table copied", daemon)
        await compare_all(db, target_dsn, expect_quarantined={})
        pg = await asyncpg.connect(target_dsn)
        try:
            types = dict(await pg.fetch(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'late_table'"))
            assert types == {"id": "bigint", "body": "text", "at": "timestamp with time zone",
                             "flag": "boolean", "doc": "json", "day": "date",
                             "amount": "numeric", "anything": "bigint"}, types
            assert await pg.fetchval("SELECT count(*) FROM late_table") == 162
        finally:
            await pg.close()

        # Later evidence re-plans the column instead of quarantining: another date-time layout
        # (at -> text, every old value kept in its own layout) and an untyped column of integers
        # that now holds text (anything -> text, the integers written in their exact form).
        sql(db, "INSERT INTO late_table (body, at, anything) VALUES "
                "('iso', '2026-11-29T22:29:42.5Z', 'now text')")

        async def replanned():
            return {e["column"] for e in await events_of(daemon, "table_replanned")} >= {"at"}

        await wait_for(replanned, 60, "the at column re-planned", daemon)
        await wait_caught_up(target_dsn, db, daemon)
        await wait_for(lambda: matches(db, target_dsn, daemon), 60, "target equal to source",
                       daemon)
        event = next(e for e in await events_of(daemon, "table_replanned") if e["column"] == "at")
        assert (event["old_type"], event["new_type"]) == ("timestamptz", "text")
        assert "2026-11-29T22:29:42.5Z" in event["value"]
        await compare_all(db, target_dsn, expect_quarantined={})

        # A value no re-plan can take in a column whose declared type wins (REAL affinity
        # holding text) stays in quarantine, and cutover refuses to hide it.
        sql(db, "INSERT INTO items (name, price) VALUES ('odd', 'call us')")
        await wait_for(lambda: _quarantined(target_dsn, "items"), 60, "row quarantined", daemon)
        assert await events_of(daemon, "replan_kept_type")
        refused = cli("cutover", "--source", str(db), "--target", target_dsn)
        assert refused.returncode == 3, refused.stderr
        assert "items.price: 1 row(s)" in refused.stderr and "--accept-quarantine" in refused.stderr
        assert (await pg_state(target_dsn))["state"] == "streaming"  # the fence was never set
        sql(db, "INSERT INTO keep (id, v) VALUES (99, 'written after the refusal')")
        await wait_caught_up(target_dsn, db, daemon)

        cli("cutover", "--source", str(db), "--target", target_dsn, "--accept-quarantine",
            check=True)
        report = cli("report", "--source", str(db), "--target", target_dsn, "--format", "md",
                     check=True).stdout
        assert "'call us'" in report and "items" in report
        await compare_all(db, target_dsn, expect_quarantined={"items": 1})
    finally:
        daemon.stop()


async def _quarantined(dsn: str, table: str) -> bool:
    pg = await asyncpg.connect(dsn)
    try:
        return bool(await pg.fetchval("SELECT count(*) FROM _replicator.quarantine WHERE tbl = $1",
                                      table))
    finally:
        await pg.close()
