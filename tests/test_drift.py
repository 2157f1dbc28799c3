"""Schema drift while streaming: followed where it can be, a named error where it cannot."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from .support.helpers import Daemon, cli, compare_all, pg_state, wait_caught_up, wait_for, wait_streaming

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

        async def settled():
            await wait_caught_up(target_dsn, db, daemon)
            try:
                await compare_all(db, target_dsn)
                return True
            except AssertionError:
                return False

        await wait_for(settled, 60, "target equal to source", daemon)
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
