"""Cutover under a live writer, cutover that fails verification, backup, rollback."""

from __future__ import annotations

import gzip
import json
import sqlite3
import time

import asyncpg
import pytest

from .support.apps import start_app
from .support.helpers import Daemon, cli, compare_all, pg_state, wait_caught_up, wait_for, wait_streaming

pytestmark = pytest.mark.slow

async def test_cutover_under_a_live_writer(chinook, target_dsn, tmp_path):
    daemon = Daemon(chinook, target_dsn)
    out = tmp_path / "app.json"
    try:
        await wait_streaming(target_dsn, daemon)
        app = start_app(chinook, out)
        time.sleep(2)
        cut = cli("cutover", "--source", str(chinook), "--target", target_dsn, "--json", check=True)
        assert app.wait(90) == 0
        summary = json.loads(cut.stdout)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill9_if_running()
    result = json.loads(out.read_text())
    assert len(result["ok"]) > 100 and result["errors"], "the writer must run into the fence"
    for _at, message in result["errors"]:
        assert "migrated to Postgres" in message and "postgresql://replicator:***@" in message
    assert summary["verification"]["ok"] and summary["freeze_window_ms"] > 0
    # Every write the application saw succeed is in Postgres, value by value.
    await compare_all(chinook, target_dsn, expect_quarantined={})
    pg = await asyncpg.connect(target_dsn)
    try:
        names = {r[0] for r in await pg.fetch("SELECT name FROM genre")}
        assert set(result["ok"]) <= names
        top = await pg.fetchval("SELECT max(genreid) FROM genre")
        assert await pg.fetchval("INSERT INTO genre (name) VALUES ('next') RETURNING genreid") == top + 1
    finally:
        await pg.close()
    print(f"freeze window under a live writer: {summary['freeze_window_ms']} ms "
          f"({summary['freeze_breakdown_ms']}), {len(result['ok'])} app writes before the fence")


async def test_a_cutover_that_fails_verification_goes_back_to_streaming(chinook, target_dsn):
    daemon = Daemon(chinook, target_dsn)
    try:
        await wait_caught_up(target_dsn, chinook, daemon)
        pg = await asyncpg.connect(target_dsn)
        try:
            await pg.execute("UPDATE track SET name = 'tampered' WHERE trackid = 7")
        finally:
            await pg.close()
        cut = cli("cutover", "--source", str(chinook), "--target", target_dsn)
        assert cut.returncode == 1 and "verification found differences in Track" in cut.stderr
        assert (await pg_state(target_dsn))["state"] == "streaming"
        conn = sqlite3.connect(chinook, isolation_level=None)
        conn.execute("INSERT INTO Genre (Name) VALUES ('after a failed cutover')")  # fence lifted
        conn.close()
        await wait_caught_up(target_dsn, chinook, daemon)
        daemon.assert_alive()
    finally:
        daemon.stop()


async def test_cutover_verifies_only_what_changed_after_a_full_pass(chinook, target_dsn):
    daemon = Daemon(chinook, target_dsn)
    try:
        await wait_caught_up(target_dsn, chinook, daemon)
        full = json.loads(cli("verify", "--source", str(chinook), "--target", target_dsn, "--json",
                              check=True).stdout)
        assert full["mode"] == "full" and full["rows"] == 15607
        conn = sqlite3.connect(chinook, isolation_level=None)
        conn.execute("UPDATE Track SET Name = Name || '!' WHERE TrackId <= 25")
        conn.execute("DELETE FROM PlaylistTrack WHERE PlaylistId = 18")
        conn.close()
        await wait_caught_up(target_dsn, chinook, daemon)
        summary = json.loads(cli("cutover", "--source", str(chinook), "--target", target_dsn,
                                 "--json", check=True).stdout)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill9_if_running()
    v = summary["verification"]
    assert v["ok"] and v["mode"].startswith("changed") and v["rows"] < 100
    await compare_all(chinook, target_dsn, expect_quarantined={})


async def test_backup_before_the_first_write_and_uninstall_after_cutover(chinook, target_dsn):
    original = chinook.read_bytes()
    daemon = Daemon(chinook, target_dsn)
    try:
        await wait_streaming(target_dsn, daemon)
        backups = list((chinook.parent / (chinook.name + ".replicator") / "backups").glob("*.gz"))
        assert len(backups) == 1
        restored = chinook.parent / "restored.sqlite"
        restored.write_bytes(gzip.decompress(backups[0].read_bytes()))
        conn = sqlite3.connect(restored)
        assert conn.execute("SELECT count(*) FROM Track").fetchone()[0] == 3503
        assert not conn.execute("SELECT name FROM sqlite_schema WHERE name LIKE '_replicator%'").fetchall()
        conn.close()
        cli("cutover", "--source", str(chinook), "--target", target_dsn, check=True)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill9_if_running()
    conn = sqlite3.connect(chinook, isolation_level=None)
    with pytest.raises(sqlite3.IntegrityError, match="migrated to Postgres"):
        conn.execute("DELETE FROM Genre WHERE GenreId = 1")
    conn.close()
    # Rolling back: uninstall lifts the fence and removes every replicator object.
    cli("uninstall", "--source", str(chinook), "--target", target_dsn, "--target-schema", check=True)
    conn = sqlite3.connect(chinook, isolation_level=None)
    conn.execute("INSERT INTO Genre (Name) VALUES ('back on SQLite')")
    assert not conn.execute("SELECT name FROM sqlite_schema WHERE name LIKE '_replicator%'").fetchall()
    conn.close()
    assert len(original) > 0
    assert await pg_state(target_dsn) is None  # _replicator schema dropped in the target


async def test_cutover_refuses_while_lagging_or_in_error(chinook, target_dsn):
    out = cli("cutover", "--source", str(chinook), "--target", target_dsn)
    assert out.returncode == 3 and "no running replication" in out.stderr
    daemon = Daemon(chinook, target_dsn)
    try:
        await wait_streaming(target_dsn, daemon)
        assert daemon.stop() == 0
        conn = sqlite3.connect(chinook, isolation_level=None)
        conn.execute("INSERT INTO Genre (Name) VALUES ('while stopped')")
        conn.close()
        time.sleep(1.2)
        out = cli("cutover", "--source", str(chinook), "--target", target_dsn, "--max-lag", "1")
        assert out.returncode == 3 and "lags" in out.stderr

        async def still_streaming():
            return (await pg_state(target_dsn))["state"] == "streaming"

        await wait_for(still_streaming, 5, "state unchanged")
    finally:
        daemon.kill9_if_running()


async def test_the_human_output_says_what_is_left_and_how_to_fix_it(chinook, target_dsn):
    conn = sqlite3.connect(chinook, isolation_level=None)  # SQLite does not enforce FKs by default
    conn.execute("INSERT INTO Track (Name, AlbumId, MediaTypeId, Milliseconds, UnitPrice) "
                 "VALUES ('orphan', 99999, 1, 1000, 0.99)")
    conn.close()
    daemon = Daemon(chinook, target_dsn)
    try:
        await wait_caught_up(target_dsn, chinook, daemon)
        cut = cli("cutover", "--source", str(chinook), "--target", target_dsn, check=True)
    finally:
        daemon.stop()
    out = cut.stdout
    assert "cutover done:" in out and "thing(s) left for a human:" in out, out
    line = next(x for x in out.splitlines() if "foreign_key" in x and "track" in x.lower())
    assert "not valid" in line, out
    assert "fix: fix the rows it names, then: ALTER TABLE" in out and "VALIDATE CONSTRAINT" in out
