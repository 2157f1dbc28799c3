"""Operations: metrics through the phases, health endpoints, signals, the single-instance lock."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sqlite3
import time

import pytest

from replicator.embedded import free_port

from .support.apps import big_app_db, table_row, write_backlog, writing_backend
from .support.helpers import (
    Daemon,
    cli,
    compare_all,
    http_status,
    metric,
    pg_state,
    scrape,
    wait_caught_up,
    wait_for,
    wait_streaming,
)

pytestmark = pytest.mark.slow


async def test_metrics_move_through_snapshot_streaming_error_and_cutover(tmp_path, target_dsn):
    db = tmp_path / "app.db"
    big_app_db(db, 300_000)
    port = free_port()
    daemon = Daemon(db, target_dsn, "--metrics-addr", f"127.0.0.1:{port}", "--log-level", "debug")
    try:
        async def in_snapshot():
            try:
                m = scrape(port)
            except OSError:
                return False
            return metric(m, "replicator_state", state="snapshot") == 1 and \
                metric(m, "replicator_snapshot_rows_total", table="readings") > 0

        await wait_for(in_snapshot, 60, "a scrape during the snapshot", daemon)
        assert http_status(port, "/healthz") == 200 and http_status(port, "/readyz") == 503
        await wait_caught_up(target_dsn, db, daemon)

        async def streaming():
            m = scrape(port)
            return metric(m, "replicator_state", state="streaming") == 1 and \
                metric(m, "replicator_backlog_changes") == 0

        await wait_for(streaming, 30, "streaming metrics", daemon)
        before = scrape(port)
        assert metric(before, "replicator_snapshot_rows_total", table="readings") == 300_000
        assert metric(before, "replicator_snapshot_tables_remaining") == 0
        conn = sqlite3.connect(db, isolation_level=None, timeout=30)
        conn.execute("UPDATE users SET name = 'x' WHERE id <= 10")
        conn.execute("DELETE FROM orders WHERE id <= 3")
        await wait_caught_up(target_dsn, db, daemon)

        async def applied():
            m = scrape(port)
            return metric(m, "replicator_changes_applied_total", table="users", op="update") == 10 \
                and metric(m, "replicator_changes_applied_total", table="orders", op="delete") == 3

        await wait_for(applied, 30, "changes counted", daemon)
        m = scrape(port)
        assert metric(m, "replicator_lag_seconds") == 0 and metric(m, "replicator_up") == 1
        assert metric(m, "replicator_apply_batch_seconds_count") >= 1
        assert metric(m, "replicator_apply_batches_total", way="one_statement") >= 1
        assert metric(m, "replicator_last_apply_timestamp_seconds") > time.time() - 60
        assert http_status(port, "/readyz") == 200
        # An error the daemon cannot follow: a dropped table.
        conn.execute("DROP TABLE scratch")

        async def errored():
            m = scrape(port)
            return metric(m, "replicator_state", state="error") == 1 and \
                metric(m, "replicator_errors_total", kind="drift") >= 1

        await wait_for(errored, 30, "error metrics", daemon)
        assert http_status(port, "/readyz") == 503
        assert cli("status", "--source", str(db), "--target", target_dsn, "--check").returncode == 1
        conn.execute("CREATE TABLE scratch (v REAL)")  # put it back: the daemon recovers

        async def recovered():
            return metric(scrape(port), "replicator_state", state="streaming") == 1

        await wait_for(recovered, 60, "recovery", daemon)
        assert cli("status", "--source", str(db), "--target", target_dsn, "--check").returncode == 0
        conn.close()
        cli("cutover", "--source", str(db), "--target", target_dsn, check=True)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill9_if_running()
    await compare_all(db, target_dsn, expect_quarantined={})


async def test_the_snapshot_rows_metric_counts_every_row_of_every_table(chinook, target_dsn):
    """Also tables copied between two progress polls (Chinook's snapshot takes well under one)."""
    port = free_port()
    daemon = Daemon(chinook, target_dsn, "--metrics-addr", f"127.0.0.1:{port}")
    try:
        await wait_streaming(target_dsn, daemon)
        m = scrape(port)
        with sqlite3.connect(chinook) as src:
            names = [r[0] for r in src.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%' "
                "AND name NOT LIKE '\\_replicator%' ESCAPE '\\'")]
            counts = {n: src.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
        assert len(counts) == 11 and sum(counts.values()) == 15607
        assert {n: metric(m, "replicator_snapshot_rows_total", table=n) for n in names} == counts
        # status shows the same rows (pg_stat's n_live_tup read twice the count here)
        out = cli("status", "--source", str(chinook), "--target", target_dsn, "--json", check=True)
        shown = json.loads(out.stdout)["tables"]
        assert {n: (t["rows"], t["rows_exact"]) for n, t in shown.items()} == {
            n: (c, True) for n, c in counts.items()}
    finally:
        daemon.stop()


async def test_sigterm_mid_batch_commits_the_batch_and_resumes_exactly(tmp_path, target_dsn):
    db = tmp_path / "app.db"
    big_app_db(db, 150_000)
    daemon = Daemon(db, target_dsn)
    await wait_caught_up(target_dsn, db, daemon)
    assert daemon.stop() == 0
    write_backlog(db, 80_000, seed=9)
    daemon = Daemon(db, target_dsn, "--log-level", "debug")
    await wait_for(lambda: writing_backend(target_dsn), 60, "a batch mid-transaction", daemon)
    t0 = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait(60) == 0
    events = [e["event"] for e in daemon.events()]
    assert "stopping" in events and "replicator_stopped" in events
    batches = [e["cursor"] for e in daemon.events() if e["event"] == "batch_applied"]
    # The batch in flight was finished and committed, whole: the cursor is that batch's end.
    assert batches and (await pg_state(target_dsn))["cursor"] == batches[-1]
    print(f"SIGTERM to exit with the batch committed: {time.monotonic() - t0:.2f}s")
    daemon = Daemon(db, target_dsn)
    try:
        await daemon.started()
        await wait_caught_up(target_dsn, db, daemon)
    finally:
        assert daemon.stop() == 0
    await compare_all(db, target_dsn, expect_quarantined={})


async def test_sigterm_during_the_snapshot_stops_cleanly_and_resumes(tmp_path, target_dsn):
    db = tmp_path / "app.db"
    big_app_db(db, 400_000)
    daemon = Daemon(db, target_dsn)

    async def copying():
        st = await pg_state(target_dsn)
        row = await table_row(target_dsn, "readings")
        return st is not None and st["state"] == "snapshot" and row is not None \
            and 0 < row["rows_copied"] < 400_000

    await wait_for(copying, 60, "the snapshot under way", daemon)
    daemon.proc.send_signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    assert any(e["event"] == "snapshot_interrupted" for e in daemon.events())
    daemon = Daemon(db, target_dsn)
    try:
        await wait_caught_up(target_dsn, db, daemon)
        assert any(e["event"] == "table_resume" for e in daemon.events())
    finally:
        assert daemon.stop() == 0
    await compare_all(db, target_dsn, expect_quarantined={})


async def test_a_second_signal_forces_exit(tmp_path, target_dsn):
    db = tmp_path / "app.db"
    big_app_db(db, 150_000)
    daemon = Daemon(db, target_dsn)
    await wait_caught_up(target_dsn, db, daemon)
    assert daemon.stop() == 0
    write_backlog(db, 120_000, seed=4)
    cursor = (await pg_state(target_dsn))["cursor"]
    daemon = Daemon(db, target_dsn)
    await wait_for(lambda: writing_backend(target_dsn), 60, "a batch mid-transaction", daemon)
    daemon.proc.send_signal(signal.SIGTERM)  # the first waits for the batch in flight ...
    await asyncio.sleep(0.1)
    daemon.proc.send_signal(signal.SIGTERM)  # ... the second does not
    assert daemon.wait(10) == 1
    assert any(e["event"] == "forced_exit" for e in daemon.events())
    assert (await pg_state(target_dsn))["cursor"] == cursor  # the batch never committed


async def _state_is(dsn: str, want: str) -> bool:
    st = await pg_state(dsn)
    return st is not None and st["state"] == want


async def test_a_second_daemon_on_the_same_source_or_target_refuses_to_start(chinook, target_dsn,
                                                                              tmp_path):
    """Both refusals name the daemon already running, even when the second one was started with
    the first one's metrics port (the lock is taken before the port is bound)."""
    addr = f"127.0.0.1:{free_port()}"
    first = Daemon(chinook, target_dsn, "--metrics-addr", addr)
    try:
        await wait_streaming(target_dsn, first)
        out = cli("run", "--source", str(chinook), "--target", target_dsn, "--metrics-addr", addr)
        assert out.returncode == 3 and re.search(r"already running for .*chinook", out.stderr)
        other = tmp_path / "other.sqlite"
        other.write_bytes(chinook.read_bytes())
        out = cli("run", "--source", str(other), "--target", target_dsn, "--metrics-addr", addr)
        assert out.returncode == 3 and "already replicating into" in out.stderr
        first.assert_alive()
    finally:
        first.stop()


def test_the_daemon_screen_on_a_terminal_shows_the_live_state(chinook, target_dsn):
    """On a terminal, `replicator run` draws the snapshot bars, then a status line redrawn in
    place (state, lag, backlog, changes/s, errors, quarantine); read here through a real pty."""
    import os
    import pty
    import select
    import subprocess
    import sys

    from .support.helpers import ROOT

    parent, child = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "replicator", "run", "--source", str(chinook), "--target",
         target_dsn, "--metrics-addr", "off"],
        stdin=child, stdout=child, stderr=child, cwd=ROOT, env={**os.environ, "COLUMNS": "160"})
    os.close(child)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and b"streaming " not in seen:
            ready, _, _ = select.select([parent], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(parent, 65536)
                except OSError:
                    break
        conn = sqlite3.connect(chinook)
        conn.execute("UPDATE artist SET name = name || '.' WHERE artistid <= 5")
        conn.commit()
        conn.close()
        more = time.monotonic() + 5
        while time.monotonic() < more:
            ready, _, _ = select.select([parent], [], [], 0.5)
            if ready:
                seen += os.read(parent, 65536)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        os.close(parent)
    text = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", seen).decode("utf-8", "replace")
    assert "track" in text.lower() and "rows/s" in text  # the snapshot's bars
    assert "streaming" in text and "lag " in text and "backlog " in text, text[-2000:]
    assert "errors 0" in text and "quarantine 0" in text and "/s)" in text
