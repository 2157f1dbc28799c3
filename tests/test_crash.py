"""kill -9 of the daemon mid-snapshot and mid-batch; after a restart the target is exact."""

from __future__ import annotations

import asyncio
import json

import pytest

from .support.apps import big_app_db, finish_writer, start_writer, table_row, write_backlog, writing_backend
from .support.helpers import (
    Daemon,
    cli,
    compare_all,
    log_high_water,
    pg_state,
    wait_caught_up,
    wait_for,
    wait_streaming,
)

pytestmark = pytest.mark.slow


async def test_kill9_mid_snapshot_resumes_without_recopying(tmp_path, target_dsn):
    db = tmp_path / "app.db"
    big_app_db(db, 400_000)
    writer, report = start_writer(db, "app", 3000, pause=0.003)
    daemon = Daemon(db, target_dsn)

    async def copying():
        row = await table_row(target_dsn, "readings")
        return row is not None and row["status"] == "copying" and row["rows_copied"] > 0

    await wait_for(copying, 120, "readings mid-copy", daemon)
    daemon.kill9()
    done_before = (await table_row(target_dsn, "readings"))["rows_copied"]
    assert 0 < done_before < 400_000
    finished = {t for t in ("events", "order_items", "orders", "scratch", "tags", "users")
                if (await table_row(target_dsn, t))["status"] == "streaming"}
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
        await wait_for(lambda: writing_backend(target_dsn), 60, "a batch mid-transaction", daemon)
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
