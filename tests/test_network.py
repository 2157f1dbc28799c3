"""Neon's connection behaviour, with a TCP proxy we control between the daemon and Postgres:
the link cut mid-COPY and mid-commit (the acknowledgement lost), a partition, a cold start;
and a transaction-mode PgBouncer in front, as Neon's -pooler endpoints are."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import pytest

from replicator.dsn import parse_target

from .support.apps import big_app_db, finish_writer, start_writer, table_row
from .support.helpers import Daemon, cli, compare_all, pg_state, wait_caught_up, wait_for, wait_streaming
from .support.pgbouncer import pgbouncer  # noqa: F401 - the fixture
from .support.proxy import Proxy
from .support.writer import create_app_db

pytestmark = pytest.mark.slow
FAST = ("[verify]\ninterval = 0\n[target]\nconnect_timeout = 3\ndead_link_timeout = 3\n"
        "[replication]\nbatch_timeout = 3\n")


def proxy_for(dsn: str) -> Proxy:
    t = parse_target(dsn)
    return Proxy(t.host, t.port).start()


async def test_the_link_cut_mid_copy_is_retried_and_the_copy_resumes(tmp_path, target_dsn):
    db = tmp_path / "app.db"
    big_app_db(db, 300_000)
    with proxy_for(target_dsn) as proxy:
        dsn = proxy.dsn_for(target_dsn)
        proxy.cut_during_copy(after=3)
        daemon = Daemon(db, dsn, config=FAST)
        try:
            await wait_caught_up(target_dsn, db, daemon, timeout=120)
        finally:
            daemon.stop()
        assert proxy.stats()["copy_cuts"] >= 1
    assert any(e["event"] == "snapshot_retry" for e in daemon.events())
    await compare_all(db, target_dsn, expect_quarantined={})


async def test_a_commit_whose_acknowledgement_is_lost_is_not_applied_twice(tmp_path, target_dsn):
    db = tmp_path / "app.db"
    create_app_db(str(db), users=1000)
    with proxy_for(target_dsn) as proxy:
        dsn = proxy.dsn_for(target_dsn)
        daemon = Daemon(db, dsn, config=FAST)
        writer, report = start_writer(db, "app", 1500, pause=0.004)
        try:
            await wait_streaming(target_dsn, daemon)
            for _ in range(5):
                proxy.cut_after_commit(1)
                await asyncio.sleep(1.0)
            finish_writer(writer, report)
            await wait_caught_up(target_dsn, db, daemon, timeout=120)
            assert proxy.stats()["commit_cuts"] >= 3
            proxy.disarm()  # a cut still pending is not for the cutover's own connection
            cli("cutover", "--source", str(db), "--target", dsn, check=True)
            assert daemon.wait(30) == 0
        finally:
            if writer.poll() is None:
                writer.kill()
            daemon.kill9_if_running()
    assert any(e["event"] == "target_reconnected" for e in daemon.events())
    await compare_all(db, target_dsn, expect_quarantined={})


async def test_a_partition_is_noticed_and_healed(chinook, target_dsn):
    with proxy_for(target_dsn) as proxy:
        dsn = proxy.dsn_for(target_dsn)
        daemon = Daemon(chinook, dsn, config=FAST)
        try:
            await wait_caught_up(target_dsn, chinook, daemon)
            proxy.blackhole(True)
            conn = sqlite3.connect(chinook, isolation_level=None)
            conn.execute("UPDATE Track SET Milliseconds = Milliseconds + 1 WHERE TrackId < 100")
            t0 = time.monotonic()

            async def noticed():
                return any(e["event"] in ("target_error", "replication_error", "snapshot_retry")
                           for e in daemon.events())

            await wait_for(noticed, 30, "the dead link noticed", daemon)
            detected = time.monotonic() - t0
            proxy.blackhole(False)
            await wait_caught_up(target_dsn, chinook, daemon, timeout=60)
            conn.close()
            # An operator's view of a daemon that seems stuck: SIGUSR1 logs where it waits.
            assert "stream.py" in daemon.where()
        finally:
            daemon.stop()
    print(f"partition noticed after {detected:.1f}s (dead_link_timeout = 3s)")
    assert detected < 20
    await compare_all(chinook, target_dsn, expect_quarantined={})


async def test_a_cold_start_delays_but_does_not_fail_the_start(chinook, target_dsn):
    with proxy_for(target_dsn) as proxy:
        proxy.delay_connect(2.0)  # a suspended Neon compute waking up
        daemon = Daemon(chinook, proxy.dsn_for(target_dsn))
        try:
            await wait_caught_up(target_dsn, chinook, daemon, timeout=120)
        finally:
            daemon.stop()
    await compare_all(chinook, target_dsn, expect_quarantined={})


async def test_replication_through_a_transaction_mode_pgbouncer(tmp_path, target_dsn, pgbouncer):  # noqa: F811
    db = tmp_path / "app.db"
    big_app_db(db, 20_000)
    dsn = pgbouncer.dsn_for(target_dsn)
    daemon = Daemon(db, dsn, config="[verify]\ninterval = 0\n[target]\npooled = true\n")
    try:
        await wait_caught_up(target_dsn, db, daemon)
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("UPDATE readings SET value = value * 2 WHERE id % 5 = 0")
        conn.execute("DELETE FROM users WHERE id % 9 = 0")
        conn.close()
        await wait_caught_up(target_dsn, db, daemon)
        out = cli("cutover", "--source", str(db), "--target", dsn, "--json", "--config", str(daemon.config),
                  check=True)
        assert json.loads(out.stdout)["verification"]["ok"]
        assert daemon.wait(30) == 0
    finally:
        daemon.kill9_if_running()
    assert any(e["event"] == "no_target_lock" for e in daemon.events())
    await compare_all(db, target_dsn, expect_quarantined={})
    assert (await pg_state(target_dsn))["state"] == "done"


async def test_a_pooled_dsn_copies_too(chinook, target_dsn, pgbouncer):  # noqa: F811
    cfg = chinook.with_suffix(".toml")
    cfg.write_text("[target]\npooled = true\n")
    cli("copy", "--source", str(chinook), "--target", pgbouncer.dsn_for(target_dsn),
        "--config", str(cfg), check=True)
    await compare_all(chinook, target_dsn, expect_quarantined={})


__all__ = ["table_row"]


async def test_a_connection_cut_behind_a_silent_network_does_not_keep_its_locks(target_dsn):
    """A connection the daemon cut client-side (a statement that outlived ``batch_timeout``)
    can live on at the server behind a silent network, inside a transaction holding the state
    row, for as long as the server's own timeouts allow. After reconnecting, the daemon ends its
    old server process (``target.end_backend``), so the next write does not wait on it."""
    import asyncpg

    from replicator.target import connect, end_backend, server_pid

    target = parse_target(target_dsn)
    setup = await asyncpg.connect(target_dsn)
    await setup.execute("CREATE TABLE held (id int PRIMARY KEY); INSERT INTO held VALUES (1)")
    with proxy_for(target_dsn) as proxy:
        old = await connect(parse_target(proxy.dsn_for(target_dsn)))
        await old.execute("BEGIN; SELECT * FROM held WHERE id = 1 FOR UPDATE")
        proxy.blackhole(True)  # the link goes silent; the client gives up on the connection
        old.terminate()
        fresh = await connect(target)
        try:
            await fresh.execute("SET lock_timeout = '1s'")
            with pytest.raises(asyncpg.LockNotAvailableError):  # the orphan holds the row
                await fresh.execute("UPDATE held SET id = 1 WHERE id = 1")
            assert await end_backend(fresh, server_pid(old))
            await fresh.execute("UPDATE held SET id = 1 WHERE id = 1")  # at once now
            assert not await end_backend(fresh, server_pid(old))  # gone: nothing to end
            assert not await end_backend(fresh, setup.get_server_pid())  # not a replicator's
        finally:
            await fresh.close()
            await setup.close()
