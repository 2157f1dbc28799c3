"""Chaos: kill -9 the daemon at random moments (during the snapshot and while streaming) while an
application writes; after the last restart the target must be exact, value by value, and the
application must never have seen an error. ``REPLICATOR_CHAOS_KILLS`` sets the number of kills
(default 8); ``python -m tests.support.chaos --kills 100`` runs a long one outside pytest."""

from __future__ import annotations

import json
import os

import asyncpg
import pytest

from .support import chaos
from .support.helpers import Daemon, cli, compare_all, pg_state, wait_caught_up, wait_streaming

pytestmark = pytest.mark.slow


async def test_kill9_at_random_moments_ends_exact(tmp_path, target_dsn):
    kills = int(os.environ.get("REPLICATOR_CHAOS_KILLS", "8"))
    seed = int(os.environ.get("REPLICATOR_CHAOS_SEED", "7"))
    source = tmp_path / "app.db"
    chaos.build_source(source, users=3000, bulk_rows=300_000)
    try:
        summary = await chaos.run_async(source, target_dsn, kills=kills, seed=seed,
                                        workdir=tmp_path, progress=print)
    except chaos.ChaosFailure as exc:
        print(json.dumps(exc.summary, indent=2, default=str))
        raise
    print(json.dumps(summary, indent=2, default=str))
    assert summary["exact"] is True
    assert summary["kills_survived"] == kills
    assert summary["writer"]["errors"] == []
    assert summary["writer_ops"] > 0
    assert summary["final_cursor"] == summary["log_high_water"]
    assert summary["rows"]["readings"] == 300_000


async def _finishing(admin: asyncpg.Connection, table: str) -> bool:
    """Every unit of the table is copied but the table is not marked done yet: its keys and
    indexes are being built."""
    try:
        return bool(await admin.fetchval(
            "SELECT NOT EXISTS (SELECT 1 FROM _replicator.units WHERE tbl = $1 AND NOT done) "
            "AND EXISTS (SELECT 1 FROM _replicator.units WHERE tbl = $1) "
            "AND (SELECT status FROM _replicator.tables WHERE name = $1) <> 'streaming'", table))
    except asyncpg.UndefinedTableError:
        return False


async def test_kill9_while_a_table_is_being_finished(tmp_path, target_dsn):
    """Regression: finishing a table (primary key, indexes, status) once committed the key on
    its own, so a kill -9 before the status update made every restart fail with 'multiple
    primary keys'. Now it is one transaction: a restart finishes the table again."""
    source = tmp_path / "app.db"
    chaos.build_source(source, users=500, bulk_rows=300_000)
    admin = await asyncpg.connect(target_dsn)
    daemon = Daemon(source, target_dsn)
    try:
        while not await _finishing(admin, "readings"):
            daemon.assert_alive()
            st = await pg_state(target_dsn)
            if st and st["state"] == "streaming":
                pytest.skip("missed the window in which the table is being finished")
        daemon.kill9()
        assert not await admin.fetchval(  # nothing of the unfinished transaction is visible
            "SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass('public.readings') "
            "AND contype = 'p'")
        daemon = Daemon(source, target_dsn)
        await wait_streaming(target_dsn, daemon, timeout=60)
        await wait_caught_up(target_dsn, source, daemon)
        cli("cutover", "--source", str(source), "--target", target_dsn, check=True)
        assert daemon.wait(30) == 0
    finally:
        await admin.close()
        if daemon.proc.poll() is None:
            daemon.kill9()
        else:
            daemon.fh.close()
    await compare_all(source, target_dsn, expect_quarantined={})
