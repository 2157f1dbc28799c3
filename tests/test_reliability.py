"""Reliability: the server drops us, restarts, times out idle transactions; the app contends for the
file; the file is replaced under the daemon; the input is hostile. Every run ends value-exact."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from replicator import embedded
from replicator.dsn import parse_target

from .support.apps import big_app_db, finish_writer, start_writer
from .support.helpers import Daemon, cli, compare_all, pg_state, wait_caught_up, wait_streaming
from .support.writer import create_app_db

pytestmark = pytest.mark.slow


async def terminate_daemon_backends(admin_dsn: str, database: str) -> int:
    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'replicator' AND datname = $1", database)
        return len(rows)
    finally:
        await conn.close()


async def test_connections_terminated_by_the_server_are_survived(tmp_path, target_dsn, pg_env):
    """pg_terminate_backend, as on a Neon compute suspend or a weekly restart (57P01)."""
    db = tmp_path / "app.db"
    create_app_db(str(db), users=2000)
    writer, report = start_writer(db, "app", 2500, pause=0.003)
    daemon = Daemon(db, target_dsn)
    database = parse_target(target_dsn).database
    terminated = 0
    try:
        await wait_streaming(target_dsn, daemon)
        for _ in range(40):
            time.sleep(0.5)
            terminated += await terminate_daemon_backends(pg_env.admin_dsn, database)
            if terminated >= 5:
                break
        finish_writer(writer, report)
        await wait_caught_up(target_dsn, db, daemon, timeout=120)
        cli("cutover", "--source", str(db), "--target", target_dsn, check=True)
        assert daemon.wait(30) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
        daemon.kill9_if_running()
    assert terminated >= 5
    assert any(e["event"] == "target_reconnected" for e in daemon.events())
    await compare_all(db, target_dsn, expect_quarantined={})


async def test_a_server_restart_is_survived(tmp_path, target_dsn, pg_env):
    if pg_env.home is None:
        pytest.skip("needs the embedded server (TEST_DATABASE_URL points elsewhere)")
    db = tmp_path / "app.db"
    big_app_db(db, 50_000)
    daemon = Daemon(db, target_dsn)
    try:
        await wait_caught_up(target_dsn, db, daemon)
        conn = sqlite3.connect(db, isolation_level=None, timeout=30)
        embedded.stop(pg_env.home)
        conn.execute("UPDATE readings SET value = -value WHERE id % 10 = 0")  # written while down
        time.sleep(3)
        embedded.ensure_running(pg_env.home)
        conn.execute("DELETE FROM readings WHERE id % 7 = 0")
        conn.close()
        await wait_caught_up(target_dsn, db, daemon, timeout=120)
    finally:
        daemon.stop()
    assert any(e["event"] in ("target_error", "target_retry") for e in daemon.events())
    await compare_all(db, target_dsn, expect_quarantined={})


async def test_idle_in_transaction_timeout_never_fires(tmp_path, target_dsn, pg_env):
    """Neon kills sessions idle in a transaction for 5 minutes; we never hold one open while
    reading: with a 1-second limit, a snapshot and a large catch-up still go through."""
    admin = await asyncpg.connect(pg_env.admin_dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{parse_target(target_dsn).database}" '
                            "SET idle_in_transaction_session_timeout = '1s'")
    finally:
        await admin.close()
    db = tmp_path / "app.db"
    big_app_db(db, 200_000)
    daemon = Daemon(db, target_dsn)
    try:
        await wait_caught_up(target_dsn, db, daemon)
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("UPDATE readings SET sensor = 'x' WHERE id % 3 = 0")
        conn.close()
        await wait_caught_up(target_dsn, db, daemon)
    finally:
        daemon.stop()
    assert not [e for e in daemon.events() if e["event"] in ("target_error", "replication_error")]
    await compare_all(db, target_dsn, expect_quarantined={})


CONTENDER = r"""
import json, sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=0.2, isolation_level=None)  # an impatient app
pause = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
errors, n, wal = [], 0, 0
deadline = time.time() + float(sys.argv[2])
while time.time() < deadline:
    try:
        conn.execute("BEGIN IMMEDIATE")
        for _ in range(5):
            conn.execute("INSERT INTO readings (sensor, value) VALUES ('c', ?)", (time.time(),))
        conn.execute("COMMIT")
        n += 1
        time.sleep(pause)
    except sqlite3.Error as exc:
        errors.append(str(exc))
        if conn.in_transaction:
            conn.execute("ROLLBACK")
    try:
        wal = max(wal, __import__("os").path.getsize(sys.argv[1] + "-wal"))
    except OSError:
        pass
json.dump({"txns": n, "errors": errors, "max_wal": wal}, open(sys.argv[3], "w"))
"""


async def test_the_app_never_sees_database_is_locked_and_the_wal_stays_bounded(tmp_path, target_dsn):
    db = tmp_path / "app.db"
    big_app_db(db, 20_000)
    daemon = Daemon(db, target_dsn)
    out = tmp_path / "contender.json"
    try:
        await wait_caught_up(target_dsn, db, daemon)
        # ~600 transactions/s of 5 rows: well within what the replicator sustains.
        proc = subprocess.run([sys.executable, "-c", CONTENDER, str(db), "15", str(out), "0.001"],
                              timeout=60)
        assert proc.returncode == 0
        await wait_caught_up(target_dsn, db, daemon)
    finally:
        daemon.stop()
    result = json.loads(out.read_text())
    assert result["errors"] == [] and result["txns"] > 500
    assert result["max_wal"] < 32 * 1024 * 1024, result["max_wal"]  # checkpoints keep up
    print(f"contention: {result['txns']} app transactions, 0 errors, WAL peak {result['max_wal']} B")
    await compare_all(db, target_dsn, expect_quarantined={})


async def test_a_file_replaced_under_the_daemon_stops_it(chinook, target_dsn, tmp_path):
    daemon = Daemon(chinook, target_dsn)
    try:
        await wait_caught_up(target_dsn, chinook, daemon)
        backup = tmp_path / "old.sqlite"
        shutil.copy(chinook, backup)
        conn = sqlite3.connect(chinook, isolation_level=None)
        conn.execute("INSERT INTO Genre (Name) VALUES ('after the backup')")
        conn.close()
        await wait_caught_up(target_dsn, chinook, daemon)
        os.replace(backup, chinook)  # "restored from a backup": a different file, an older log
        assert daemon.wait(30) == 1
    finally:
        daemon.kill9_if_running()
    st = await pg_state(target_dsn)
    assert st["state"] == "error" and "was replaced under the daemon" in st["error"]


async def test_a_file_restored_in_place_is_detected(chinook, target_dsn, tmp_path):
    daemon = Daemon(chinook, target_dsn)
    try:
        await wait_caught_up(target_dsn, chinook, daemon)
        old = tmp_path / "old.sqlite"
        src = sqlite3.connect(chinook)
        src.backup(sqlite3.connect(old))
        src.close()
        conn = sqlite3.connect(chinook, isolation_level=None)
        for i in range(20):
            conn.execute("INSERT INTO Genre (Name) VALUES (?)", (f"g{i}",))
        conn.close()
        await wait_caught_up(target_dsn, chinook, daemon)
        dst = sqlite3.connect(chinook)
        sqlite3.connect(old).backup(dst)  # the backup API writes into the same inode
        dst.close()
        assert daemon.wait(30) == 1
    finally:
        daemon.kill9_if_running()
    assert "restored from an older copy" in (await pg_state(target_dsn))["error"]


def test_hostile_sources_are_refused_with_a_clear_error(tmp_path, target_dsn):
    corrupt = tmp_path / "corrupt.db"
    shutil.copy(Path(__file__).parent.parent / "examples" / "chinook.sqlite", corrupt)
    with open(corrupt, "r+b") as fh:
        fh.seek(300_000)
        fh.write(b"\x0d\xff" * 20_000)
    before = corrupt.read_bytes()
    out = cli("run", "--source", str(corrupt), "--target", target_dsn, "--metrics-addr", "off")
    assert out.returncode == 3 and "is damaged" in out.stderr
    assert corrupt.read_bytes() == before  # nothing written

    locked = tmp_path / "locked.db"
    shutil.copy(Path(__file__).parent.parent / "examples" / "chinook.sqlite", locked)
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        cfg = tmp_path / "fast.toml"
        cfg.write_text("[source]\nbusy_timeout_ms = 300\nquiet_write_timeout = 1\nbackup = false\n")
        out = cli("run", "--source", str(locked), "--target", target_dsn, "--metrics-addr", "off",
                  "--config", str(cfg))
        assert out.returncode == 3 and "locked" in out.stderr
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    conn = sqlite3.connect(locked)
    assert not conn.execute("SELECT 1 FROM sqlite_schema WHERE name LIKE '_replicator%'").fetchall()


def test_a_read_only_source_is_refused_before_anything_is_written(tmp_path, target_dsn):
    ro = tmp_path / "ro.db"
    shutil.copy(Path(__file__).parent.parent / "examples" / "chinook.sqlite", ro)
    if subprocess.run(["chattr", "+i", str(ro)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this filesystem")
    try:
        cfg = tmp_path / "c.toml"
        cfg.write_text("[source]\nstate_dir = '" + str(tmp_path / "state") + "'\n")
        out = cli("run", "--source", str(ro), "--target", target_dsn, "--metrics-addr", "off",
                  "--config", str(cfg))
        assert out.returncode == 3 and "cannot write to" in out.stderr
        assert cli("copy", "--source", str(ro), "--target", target_dsn,
                   "--config", str(cfg)).returncode == 0  # a copy needs no write access
    finally:
        subprocess.run(["chattr", "-i", str(ro)])


async def test_a_role_without_privileges_gets_a_clear_error(chinook, pg_env):
    admin = await asyncpg.connect(pg_env.admin_dsn)
    try:
        await admin.execute("DROP ROLE IF EXISTS weak")
        await admin.execute("CREATE ROLE weak LOGIN PASSWORD 'weak-pass-123'")
        await admin.execute("DROP DATABASE IF EXISTS weakdb")
        await admin.execute("CREATE DATABASE weakdb")
        await admin.execute("REVOKE ALL ON DATABASE weakdb FROM PUBLIC")
        await admin.execute("GRANT CONNECT ON DATABASE weakdb TO weak")
    finally:
        await admin.close()
    dsn = f"postgresql://weak:weak-pass-123@127.0.0.1:{pg_env.port}/weakdb"
    out = cli("run", "--source", str(chinook), "--target", dsn, "--metrics-addr", "off")
    assert out.returncode == 3 and "permission denied" in out.stderr and "CREATE" in out.stderr
    assert "weak-pass-123" not in out.stderr + out.stdout
    conn = sqlite3.connect(chinook)
    assert not conn.execute("SELECT 1 FROM sqlite_schema WHERE name LIKE '_replicator%'").fetchall()


async def test_another_file_against_a_used_target_is_refused(chinook, tmp_path, target_dsn):
    """The target holds chinook's replication; a file that was never captured (another database,
    or this one restored from before the install) must not continue it."""
    daemon = Daemon(chinook, target_dsn)
    try:
        await wait_caught_up(target_dsn, chinook, daemon)
    finally:
        assert daemon.stop() == 0
    other = tmp_path / "other.sqlite"
    shutil.copy(Path(__file__).parent.parent / "examples" / "chinook.sqlite", other)
    before = other.read_bytes()
    out = cli("run", "--source", str(other), "--target", target_dsn, "--metrics-addr", "off")
    assert out.returncode == 3, out.stderr
    assert "holds a replication of" in out.stderr and str(chinook.resolve()) in out.stderr
    assert other.read_bytes() == before  # nothing installed, no backup taken into it
    assert not list(tmp_path.glob("other.sqlite.replicator/backups/*"))
    st = await pg_state(target_dsn)
    assert st["state"] == "streaming"  # the real replication is untouched
