"""kill -9 of the daemon mid-snapshot and mid-batch; after a restart the target is exact."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import sys
from pathlib import Path

import asyncpg
import pytest

from .helpers import (
    WRITER,
    Daemon,
    cli,
    compare_all,
    log_high_water,
    pg_state,
    wait_caught_up,
    wait_for,
    wait_streaming,
)
from .test_e2e import finish_writer, start_writer

pytestmark = pytest.mark.slow


def big_app_db(path: Path, rows: int) -> None:
    sys.path.insert(0, str(WRITER.parent))
    from writer import create_app_db

    create_app_db(str(path), users=500)
    rng = random.Random(3)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, sensor TEXT, value REAL, raw BLOB)")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO readings (sensor, value, raw) VALUES (?, ?, ?)",
        ((f"s{i % 97}", rng.random() * 1e6, rng.randbytes(16)) for i in range(rows)),
    )
    conn.execute("COMMIT")
    conn.close()


async def _table_row(dsn: str, name: str):
    """A table's status and the rows its snapshot units have committed so far."""
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('_replicator.units') IS NOT NULL"):
            return None
        return await conn.fetchrow(
            "SELECT t.status, (SELECT coalesce(sum(rows), 0) FROM _replicator.units u "
            "WHERE u.tbl = t.name) AS rows_copied FROM _replicator.tables t WHERE t.name = $1", name)
    finally:
        await conn.close()


async def test_kill9_mid_snapshot_resumes_without_recopying(tmp_path, target_dsn):
    db = tmp_path / "app.db"
    big_app_db(db, 400_000)
    writer, report = start_writer(db, "app", 3000, pause=0.003)
    daemon = Daemon(db, target_dsn)

    async def copying():
        row = await _table_row(target_dsn, "readings")
        return row is not None and row["status"] == "copying" and row["rows_copied"] > 0

    await wait_for(copying, 120, "readings mid-copy", daemon)
    daemon.kill9()
    done_before = (await _table_row(target_dsn, "readings"))["rows_copied"]
    assert 0 < done_before < 400_000
    finished = {t for t in ("events", "order_items", "orders", "scratch", "tags", "users")
                if (await _table_row(target_dsn, t))["status"] == "streaming"}
    second = Daemon(db, target_dsn)
    try:
        await wait_streaming(target_dsn, second)
        resumed = {e["table"]: e for e in second.events() if e["event"] == "table_resume"}
        assert resumed["readings"]["rows_done"] == done_before  # committed chunks kept
        copied_again = {e["table"] for e in second.events() if e["event"] == "table_copied"}
        assert not copied_again & finished, "finished tables were copied again"
        assert "readings" in copied_again
        finish_writer(writer, report)
        await wait_caught_up(target_dsn, db, second)
        cli("cutover", "--source", str(db), "--target", target_dsn, check=True)
        assert second.wait(30) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
        second.kill9_if_running()
    counts = await compare_all(db, target_dsn, expect_quarantined={})
    assert counts["readings"] == 400_000


async def _writing_backend(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'replicator' "
            "AND backend_xid IS NOT NULL"))
    finally:
        await conn.close()


def write_backlog(db: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("BEGIN")
    ids = [r[0] for r in conn.execute("SELECT id FROM readings ORDER BY random() LIMIT ?", (n,))]
    for i, rid in enumerate(ids):
        if i % 10 == 0:
            conn.execute("DELETE FROM readings WHERE id = ?", (rid,))
        else:
            conn.execute("UPDATE readings SET value = ?, sensor = ? WHERE id = ?",
                         (rng.random(), f"k{seed}", rid))
    conn.execute("INSERT INTO readings (sensor, value) SELECT 'new', value FROM readings LIMIT ?",
                 (n // 5,))
    conn.execute("COMMIT")
    conn.close()


async def test_kill9_mid_batch_repeatedly_ends_exact(tmp_path, target_dsn):
    db = tmp_path / "app.db"
    big_app_db(db, 150_000)
    daemon = Daemon(db, target_dsn)
    await wait_caught_up(target_dsn, db, daemon)
    assert daemon.stop() == 0
    kills = 0
    for round_ in range(3):
        write_backlog(db, 60_000, seed=round_)
        cursor_before = (await pg_state(target_dsn))["cursor"]
        daemon = Daemon(db, target_dsn)
        await wait_for(lambda: _writing_backend(target_dsn), 60, "a batch mid-transaction", daemon)
        daemon.kill9()
        kills += 1
        # The batch never committed: the cursor did not move, nothing half-applied is visible.
        assert (await pg_state(target_dsn))["cursor"] == cursor_before
    daemon = Daemon(db, target_dsn)
    try:
        await wait_caught_up(target_dsn, db, daemon, timeout=180)
        assert (await pg_state(target_dsn))["cursor"] == log_high_water(db)
        out = cli("cutover", "--source", str(db), "--target", target_dsn, "--json", check=True)
        assert json.loads(out.stdout)["state"] == "done"
        assert daemon.wait(30) == 0
    finally:
        daemon.kill9_if_running()
    await compare_all(db, target_dsn, expect_quarantined={})
    assert kills == 3
    await asyncio.sleep(0)
