"""The application never gets `database is locked` because of the replicator (issue 17).

SQLite fails a deferred transaction's first write at once (no busy handler) when another
connection holds the write lock, and, in WAL mode, when any commit happened since its read began.
So the daemon writes to the live file only at moments when no application transaction is in
flight (rollback journal: EXCLUSIVE granted without waiting), and in WAL mode not at all while
streaming. Each test runs a real application process of one transaction shape alone (the
control) and beside the daemon, and compares the error counts; values are compared one by one.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from replicator.source_write import lock_holder

from .support.app_shapes import create
from .support.helpers import Daemon, compare_all, wait_caught_up, wait_streaming

pytestmark = pytest.mark.slow

APP = Path(__file__).resolve().parent / "support" / "app_shapes.py"
SHAPES = ("deferred", "immediate", "autocommit")
# The apps pause ~1 ms between transactions, as request handlers do. A tight loop never leaves
# the file quiet, so the daemon would (rightly) not prune under it at all.
# Prune whenever 500 applied rows wait, so pruning happens many times during a test.
PRUNING = "[verify]\ninterval = 0\n[replication]\nprune_min_rows = 500\nprune_chunk = 2000\n"


def app(db: Path, shape: str, txns: int, report: Path, busy_ms: int = 5000, seed: int = 1,
        until: Path | None = None, pause_ms: float = 0) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(APP), str(db), "--shape", shape, "--txns",
                             str(txns), "--busy-ms", str(busy_ms), "--report", str(report),
                             "--seed", str(seed), "--pause-ms", str(pause_ms),
                             *(["--until", str(until)] if until else [])],
                            stdout=subprocess.DEVNULL)


def finish(proc: subprocess.Popen, report: Path) -> dict:
    assert proc.wait(300) == 0
    return json.loads(report.read_text())


def _exits(proc: subprocess.Popen) -> bool:
    """Whether the app ends by itself (it stops when the stop file appears) within 30 s."""
    try:
        proc.wait(30)
        return True
    except subprocess.TimeoutExpired:
        return False


def copies(tmp_path: Path, journal: str, rows: int = 20_000) -> tuple[Path, Path]:
    base = tmp_path / f"base-{journal}.db"
    create(base, rows, journal)
    control, replicated = tmp_path / "control.db", tmp_path / "replicated.db"
    for dest in (control, replicated):
        dest.write_bytes(base.read_bytes())
    return control, replicated


def writes(daemon: Daemon, what: str | None = None) -> list[dict]:
    return [e for e in daemon.events() if e.get("event") == "source_write"
            and (what is None or e["what"] == what)]


def nearest_writes(result: dict, daemon: Daemon) -> list[tuple[float, dict]]:
    """Each error the app saw, lined up with the daemon's nearest write to the file: (ms from
    that write's log line, which comes as it commits; the write's event)."""
    events = [(datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp(), e)
              for e in writes(daemon)]
    out = []
    for t in result.get("error_times", []):
        if events:
            at, e = min(events, key=lambda pair: abs(pair[0] - t))
            out.append((round(1000 * (t - at), 1), e))
    return out


def beside(result: dict, daemon: Daemon) -> list[str]:
    """The same, readable: a failure says which step each error came from."""
    return [f"error {offset:+.1f} ms from {e['what']} ({e['how']}, held {e.get('held_ms')} ms)"
            for offset, e in nearest_writes(result, daemon)]


async def wait_for_event(daemon: Daemon, pred, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not any(pred(e) for e in daemon.events()):
        daemon.assert_alive()
        assert time.monotonic() < deadline, "the daemon never got there"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("shape", SHAPES)
async def test_rollback_journal_the_app_sees_no_error_from_install_snapshot_streaming_or_pruning(
        tmp_path, target_dsn, shape):
    """The app runs before the daemon starts, so it lives through the backup, the capture
    install, the snapshot's file copy, streaming and several prunes."""
    control_db, db = copies(tmp_path, "delete")
    control = finish(app(control_db, shape, 3000, tmp_path / "control.json", pause_ms=1),
                     tmp_path / "control.json")
    stop = tmp_path / "stop"
    proc = app(db, shape, 3000, tmp_path / "app.json", until=stop, pause_ms=1)
    daemon = Daemon(db, target_dsn, config=PRUNING)
    try:
        # The app goes on until the daemon has streamed and pruned three times under it.
        await wait_for_event(daemon, lambda _e: len(writes(daemon, "prune")) >= 3, timeout=120)
        stop.touch()
        result = finish(proc, tmp_path / "app.json")
        await wait_caught_up(target_dsn, db, daemon)
    finally:
        stop.touch()
        if proc.poll() is None and not _exits(proc):
            proc.kill()
        daemon.stop()
    assert control["errors"] == 0
    # The one gap the design leaves (docs/locking.md, "Residual risk"): on its way to EXCLUSIVE
    # SQLite holds RESERVED for microseconds, and an app transaction that began reading just then
    # and writes inside them fails. Seen here only at a quiet write, rarely (bench/LOCKING.md:
    # 11 in 1,500,000 transactions); an error anywhere else (reads, the snapshot's copy,
    # streaming) fails the test.
    near = nearest_writes(result, daemon)
    assert len(near) == result["errors"], (result["messages"], near)
    # Within the write itself: from when it began waiting for a quiet moment to its log line
    # (written as it commits), with 20 ms for the two processes' clocks and log timing.
    assert all(-(e["waited_ms"] + e["held_ms"]) - 20 < offset < 20 and e["how"] == "quiet"
               for offset, e in near), near
    # At most one per quiet write (the app is one process: its one transaction that began
    # reading in those microseconds fails), so never more than the prunes it lived through; a
    # CI run saw 2 errors, at 2 different prunes of one run.
    assert len({e["timestamp"] for _offset, e in near}) == len(near), near
    assert result["errors"] <= len(writes(daemon, "prune")), (result["messages"], near)
    assert writes(daemon, "install")
    assert not [e for e in daemon.events() if e.get("event") == "source_write_forced"]
    await compare_all(db, target_dsn, expect_quarantined={})


@pytest.mark.parametrize("shape", SHAPES)
async def test_wal_the_app_sees_no_error_and_the_daemon_writes_nothing_while_streaming(
        tmp_path, target_dsn, shape):
    """In WAL mode the daemon's one write is the capture install; from then on (snapshot file
    copy, streaming, the log growing past the prune threshold) it only reads."""
    control_db, db = copies(tmp_path, "wal")
    control = finish(app(control_db, shape, 4000, tmp_path / "control.json", pause_ms=1),
                     tmp_path / "control.json")
    daemon = Daemon(db, target_dsn, config=PRUNING)
    stop = tmp_path / "stop"
    proc = None
    try:
        await wait_for_event(daemon, lambda e: e.get("event") == "source_write")
        proc = app(db, shape, 4000, tmp_path / "app.json", until=stop, pause_ms=1)
        await wait_streaming(target_dsn, daemon)
        await asyncio.sleep(2)  # streaming under the app
        stop.touch()
        result = finish(proc, tmp_path / "app.json")
        await wait_caught_up(target_dsn, db, daemon)
    finally:
        stop.touch()
        if proc is not None and proc.poll() is None and not _exits(proc):
            proc.kill()
        daemon.stop()
    assert control["errors"] == 0
    assert result["errors"] == control["errors"], (result["messages"], beside(result, daemon))
    assert [e["what"] for e in writes(daemon)] == ["install"]
    log_rows = sqlite3.connect(db).execute("SELECT count(*) FROM _replicator_log").fetchone()[0]
    assert log_rows >= result["txns"]  # every change kept: pruned at cutover, not while streaming
    await compare_all(db, target_dsn, expect_quarantined={})


@pytest.mark.parametrize("journal", ["delete", "wal"])
async def test_several_app_processes_at_once(tmp_path, target_dsn, journal):
    """Two IMMEDIATE writers, an autocommit writer and a reader, the control alone and then
    beside the daemon. DEFERRED writers are left out (two of them fail each other), and each
    process pauses between transactions as request handlers do: several writers in a tight
    loop starve each other past any busy timeout under a rollback journal, daemon or not."""
    control_db, db = copies(tmp_path, journal)
    mix = [("immediate", 1), ("immediate", 2), ("autocommit", 3), ("reader", 4)]

    def run_all(path: Path, tag: str) -> list[dict]:
        procs = [(app(path, shape, 1500, tmp_path / f"{tag}-{seed}.json", seed=seed,
                      busy_ms=20_000, pause_ms=2),
                  tmp_path / f"{tag}-{seed}.json") for shape, seed in mix]
        return [finish(p, r) for p, r in procs]

    control = run_all(control_db, "control")
    daemon = Daemon(db, target_dsn, config=PRUNING)
    try:
        await wait_for_event(daemon, lambda e: e.get("event") == "source_write")
        results = run_all(db, "app")
        await wait_caught_up(target_dsn, db, daemon)
    finally:
        daemon.stop()
    assert [r["errors"] for r in control] == [0, 0, 0, 0]
    assert [r["errors"] for r in results] == [0, 0, 0, 0], [r["messages"] for r in results]
    await compare_all(db, target_dsn, expect_quarantined={})


HOLD = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
conn.execute("BEGIN")
conn.execute("SELECT count(*) FROM accounts").fetchone()   # a read transaction is in flight
print("reading", flush=True)
sys.stdin.readline()
conn.execute("UPDATE accounts SET balance = balance + 1 WHERE id = 1")  # now it writes
conn.execute("COMMIT")
print("committed", flush=True)
"""


@pytest.mark.parametrize("journal", ["delete", "wal"])
async def test_an_app_transaction_in_flight_holds_off_the_capture_install(tmp_path, target_dsn,
                                                                           journal):
    """A deferred transaction that has read and will write: the daemon does not install capture
    until it has committed, so its write succeeds (before, it got `database is locked`)."""
    _control, db = copies(tmp_path, journal, rows=2000)
    with subprocess.Popen([sys.executable, "-c", HOLD, str(db)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, text=True) as holder:
        await _held_off(holder, db, journal, target_dsn)
    await compare_all(db, target_dsn, expect_quarantined={})


async def _held_off(holder: subprocess.Popen, db: Path, journal: str, target_dsn: str) -> None:
    daemon = None
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "reading"
        assert lock_holder(db, journal == "wal") is not None and "reader" in str(
            lock_holder(db, journal == "wal"))
        daemon = Daemon(db, target_dsn)
        await asyncio.sleep(2.0)
        daemon.assert_alive()
        assert not writes(daemon), "the daemon wrote while a transaction was in flight"
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "committed"
        assert holder.wait(10) == 0
        await wait_for_event(daemon, lambda e: e.get("event") == "source_write")
        await wait_caught_up(target_dsn, db, daemon)
        assert writes(daemon, "install")[0]["how"] == "quiet"
    finally:
        if holder.poll() is None:
            holder.kill()
        if daemon is not None:
            daemon.stop()


def test_the_lock_probe_names_readers_and_writers(tmp_path):
    for journal in ("delete", "wal"):
        db = tmp_path / f"probe-{journal}.db"
        create(db, 100, journal)
        wal = journal == "wal"
        keep = sqlite3.connect(db)  # in WAL mode the -shm exists while a connection is open
        keep.execute("SELECT 1 FROM accounts").fetchone()
        assert lock_holder(db, wal) is None
        for begin, expect in (("BEGIN; SELECT count(*) FROM accounts", "reader"),
                              ("BEGIN IMMEDIATE", "writer")):
            with subprocess.Popen(
                [sys.executable, "-c", "import sqlite3, sys\n"
                 "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
                 "for s in sys.argv[2].split('; '): c.execute(s).fetchall()\n"
                 "print('held', flush=True); sys.stdin.readline()", str(db), begin],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as holder:
                try:
                    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
                    seen = lock_holder(db, wal)
                    assert expect in str(seen), (journal, begin, seen)
                finally:
                    holder.kill()
        assert lock_holder(db, wal) is None
        keep.close()
