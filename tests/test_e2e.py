"""End to end: snapshot while a separate process writes, stream, cut over, compare every value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .support.apps import finish_writer, start_writer
from .support.helpers import Daemon, cli, compare_all, pg_state, wait_caught_up, wait_streaming
from .support.writer import create_app_db

pytestmark = pytest.mark.slow


async def _replicate_under_writer(db: Path, target_dsn: str, scenario: str, ops: int):
    writer, report = start_writer(db, scenario, ops)
    daemon = Daemon(db, target_dsn)
    try:
        await wait_streaming(target_dsn, daemon)
        result = finish_writer(writer, report)
        assert set(result["midway"]) == {"add_column", "create_table"}
        await wait_caught_up(target_dsn, db, daemon)
        cut = cli("cutover", "--source", str(db), "--target", target_dsn, "--json", check=True)
        summary = json.loads(cut.stdout)
        assert summary["state"] == "done"
        assert daemon.wait(30) == 0, daemon.log.read_text()[-3000:]
    finally:
        if writer.poll() is None:
            writer.kill()
        daemon.kill9_if_running()
    st = await pg_state(target_dsn)
    assert st["state"] == "done"
    counts = await compare_all(db, target_dsn, expect_quarantined={})
    check = cli("verify", "--source", str(db), "--target", target_dsn, "--json")
    assert check.returncode == 0, check.stdout[-3000:]  # the product's own verify agrees
    return result, counts, daemon


async def test_chinook_under_live_writes(chinook, target_dsn):
    result, counts, daemon = await _replicate_under_writer(chinook, target_dsn, "chinook", 1500)
    assert counts["Notes"] > 0 or result["ops"].get("c_delete_all")
    assert "Notes" in counts and counts["Track"] == 3503
    events = {e["event"] for e in daemon.events()}
    assert {"table_resnapshot", "columns_added", "cutover_done"} <= events


async def test_app_database_under_live_writes(tmp_path, target_dsn):
    db = tmp_path / "app.db"
    create_app_db(str(db), users=3000)
    result, counts, _daemon = await _replicate_under_writer(db, target_dsn, "app", 2500)
    assert result["ops"]["a_replace_clash"] > 0 and result["ops"]["a_pk_change"] > 0
    assert counts["users"] > 0 and "late" in counts
