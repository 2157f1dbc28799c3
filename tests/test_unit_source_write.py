"""The quiet-write layer as a unit: the lock probe and ``LiveFile.write``, against other processes.

POSIX locks are per process, so the application is a child process holding a real transaction
open (stdin and stdout pipes sequence it). Proven, for both journal modes: ``lock_holder`` names
a reader and a writer and sees nothing once they are gone; an optional write (``force=False``)
raises ``NotQuiet`` without running while a read transaction is in flight and goes ahead once it
ends; a forced write waits ``quiet_wait``, then goes ahead and is recorded as forced (WAL: past
a reader that never ends; rollback journal: at the first instant the reader is gone, and never
by breaking into its transaction); and ``capture.install`` on a file where everything is in
place takes no lock at all, returning at once while another process holds the write lock.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import structlog

from replicator import capture, metrics
from replicator.source import inspect, open_source
from replicator.source_write import LiveFile, NotQuiet, journal_advice, lock_holder

JOURNALS = ["delete", "wal"]

# The application: runs its statements, says "held", waits for a line, runs the statements
# after "--then" in the same transaction, commits, says "done" (or dies with the error).
HOLDER = r"""
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)
args = sys.argv[2:]
now, later = (args[:args.index("--then")], args[args.index("--then") + 1:]) \
    if "--then" in args else (args, [])
for stmt in now:
    conn.execute(stmt).fetchall()
print("held", flush=True)
sys.stdin.readline()
for stmt in later:
    conn.execute(stmt)
if conn.in_transaction:
    conn.execute("COMMIT")
print("done", flush=True)
sys.stdin.readline()
"""
READ = ("BEGIN", "SELECT count(*) FROM t")
WRITE = ("BEGIN IMMEDIATE", "INSERT INTO t (v) VALUES ('app')")


def make_db(path: Path, journal: str) -> Path:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(100)])
    conn.close()
    return path


class Holder:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def say(self, expect: str) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == expect, (line, self.proc.poll())

    def release(self) -> None:
        """Commit (or end) the held transaction; the process stays, holding no lock."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()
        self.say("done")


@contextmanager
def holding(db: Path, statements: tuple[str, ...]) -> Iterator[Holder]:
    """Another process with ``statements`` run and its transaction open."""
    with subprocess.Popen([sys.executable, "-c", HOLDER, str(db), *statements],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as proc:
        try:
            holder = Holder(proc)
            holder.say("held")
            yield holder
        finally:
            proc.kill()


def writes(what: str, how: str) -> float:
    return metrics.REGISTRY.get_sample_value(
        "replicator_source_writes_total", {"what": what, "how": how}) or 0.0


def mark(value: str):
    """A write of ours: one row in t; ``calls`` shows whether it ran at all."""
    calls: list[str] = []

    def fn(conn: sqlite3.Connection) -> str:
        calls.append(value)
        conn.execute("INSERT INTO t (v) VALUES (?)", (value,))
        return value

    return fn, calls


def rows(db: Path, value: str) -> int:
    conn = sqlite3.connect(db, timeout=10)
    try:
        return conn.execute("SELECT count(*) FROM t WHERE v = ?", (value,)).fetchone()[0]
    finally:
        conn.close()


@pytest.fixture
def live(tmp_path, request):
    """The replicator's writer on a file in the journal mode the test is parametrized with."""
    files = []

    def open_live(journal: str, quiet_wait: float = 30.0, busy_timeout_ms: int = 5000) -> LiveFile:
        db = make_db(tmp_path / f"{journal}-{len(files)}.db", journal)
        lf = LiveFile.open(db, busy_timeout_ms=busy_timeout_ms, quiet_wait=quiet_wait)
        files.append(lf)
        return lf

    yield open_live
    for lf in files:
        lf.conn.close()


# -- the probe -------------------------------------------------------------------------------------


@pytest.mark.parametrize("journal", JOURNALS)
def test_the_probe_names_a_reader_and_a_writer_of_another_process(live, journal):
    lf = live(journal)
    wal = journal == "wal"
    assert lock_holder(lf.path, wal) is None  # our own connection is invisible to it
    with holding(lf.path, READ) as reader:
        seen = lock_holder(lf.path, wal)
        assert seen is not None and seen.startswith("reader") and f"pid {reader.proc.pid}" in seen
        reader.release()
        assert lock_holder(lf.path, wal) is None  # the process lives on, its transaction is over
    with holding(lf.path, WRITE) as writer:
        seen = lock_holder(lf.path, wal)
        assert seen is not None and seen.startswith("writer") and f"pid {writer.proc.pid}" in seen
        writer.release()
        assert lock_holder(lf.path, wal) is None
    assert rows(lf.path, "app") == 1


def test_the_probe_sees_nothing_without_a_wal_index(tmp_path):
    db = make_db(tmp_path / "closed.db", "wal")
    assert not Path(str(db) + "-shm").exists()  # nobody has it open: no -shm
    assert lock_holder(db, wal=True) is None
    assert lock_holder(db, wal=False) is None


# -- optional writes -------------------------------------------------------------------------------


@pytest.mark.parametrize("journal", JOURNALS)
def test_an_optional_write_waits_for_no_reader_and_never_runs_under_one(live, journal):
    lf = live(journal, quiet_wait=30.0)
    fn, calls = mark("ours")
    with holding(lf.path, READ) as reader:
        t0 = time.monotonic()
        with pytest.raises(NotQuiet, match="reader"):
            lf.write(fn, what="unit_optional", force=False)
        waited = time.monotonic() - t0
        assert 0.4 <= waited < 5, waited  # OPTIONAL_WAIT, not quiet_wait
        assert calls == [] and rows(lf.path, "ours") == 0
        reader.release()
        quiet = writes("unit_optional", "quiet")
        assert lf.write(fn, what="unit_optional", force=False) == "ours"
    assert calls == ["ours"] and rows(lf.path, "ours") == 1
    assert writes("unit_optional", "quiet") == quiet + 1


# -- forced writes ---------------------------------------------------------------------------------


def test_a_forced_write_goes_ahead_past_a_reader_that_never_ends_in_wal_mode(live):
    lf = live("wal", quiet_wait=0.3)
    fn, calls = mark("forced")
    forced = writes("unit_forced", "forced")
    with holding(lf.path, READ) as reader:
        t0 = time.monotonic()
        with structlog.testing.capture_logs() as logs:
            assert lf.write(fn, what="unit_forced", force=True) == "forced"
        assert time.monotonic() - t0 >= 0.3
        assert calls == ["forced"] and rows(lf.path, "forced") == 1
        assert writes("unit_forced", "forced") == forced + 1
        warning = [e for e in logs if e["event"] == "source_write_forced"]
        assert warning and warning[0]["what"] == "unit_forced" and "reader" in warning[0]["holder"]
        assert [e["how"] for e in logs if e["event"] == "source_write"] == ["forced"]
        reader.release()  # the application's read transaction was never broken into


def test_a_forced_write_takes_the_first_instant_the_reader_is_gone_in_rollback_mode(live):
    """Rollback journal: the write needs EXCLUSIVE, which a reader's SHARED lock forbids; the
    forced write waits past quiet_wait and goes ahead as soon as the reader ends."""
    lf = live("delete", quiet_wait=0.2)
    fn, calls = mark("forced")
    forced = writes("unit_forced_rollback", "forced")
    with holding(lf.path, READ) as reader:
        def end_reader_later() -> None:
            time.sleep(1.0)
            reader.release()

        ender = threading.Thread(target=end_reader_later)
        ender.start()
        t0 = time.monotonic()
        try:
            assert lf.write(fn, what="unit_forced_rollback", force=True) == "forced"
        finally:
            ender.join()
        assert 1.0 <= time.monotonic() - t0 < 5.0
    assert calls == ["forced"] and rows(lf.path, "forced") == 1
    assert writes("unit_forced_rollback", "forced") == forced + 1


def test_a_forced_write_never_breaks_a_reader_that_never_ends_in_rollback_mode(live):
    """With a rollback journal nothing can commit while another process reads: after
    quiet_wait and the forced wait, the write fails (busy) and leaves nothing behind, and the
    application's deferred transaction (read, then write) carries on and commits."""
    lf = live("delete", quiet_wait=0.1, busy_timeout_ms=200)
    fn, calls = mark("never")
    deferred = (*READ, "--then", "INSERT INTO t (v) VALUES ('app')")
    with holding(lf.path, deferred) as reader:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            lf.write(fn, what="unit_forced_fails", force=True)
        assert calls == ["never"]  # it ran, and was rolled back
        assert "reader" in str(lock_holder(lf.path, wal=False))
        reader.release()
    assert rows(lf.path, "never") == 0 and rows(lf.path, "app") == 1
    lf.conn.execute("INSERT INTO t (v) VALUES ('after')")  # our connection is usable again
    assert rows(lf.path, "after") == 1


# -- install writes nothing when nothing is missing ------------------------------------------------


@pytest.mark.parametrize("journal", JOURNALS)
def test_an_install_that_changes_nothing_takes_no_lock(live, journal):
    lf = live(journal, quiet_wait=3.0, busy_timeout_ms=3000)
    tables = list(inspect(lf.conn).tables.values())
    assert capture.install(lf, tables) == {"t": "created"}
    version = lf.conn.execute("PRAGMA schema_version").fetchone()[0]
    with holding(lf.path, WRITE) as writer:
        assert "writer" in str(lock_holder(lf.path, journal == "wal"))
        before = {how: writes("install", how) for how in ("quiet", "forced")}
        t0 = time.monotonic()
        assert capture.install(lf, tables) == {"t": "kept"}
        assert time.monotonic() - t0 < 1.0  # no wait for a quiet moment (3 s), no busy timeout
        assert {how: writes("install", how) for how in ("quiet", "forced")} == before
        writer.release()  # the application's write transaction commits undisturbed
    assert rows(lf.path, "app") == 1
    check = open_source(lf.path)
    try:
        assert check.execute("PRAGMA schema_version").fetchone()[0] == version
        logged = check.execute("SELECT tbl, op, k1 FROM _replicator_log").fetchall()
        assert logged == [("t", "I", 101)]  # the app's insert, captured
    finally:
        check.close()


@pytest.mark.parametrize("journal", JOURNALS)
def test_an_uninstall_with_nothing_to_remove_takes_no_lock(live, journal):
    """A second ``replicator uninstall`` (or one on a file never captured) writes nothing: it
    neither waits for the application's writer nor takes a write lock after it."""
    lf = live(journal, quiet_wait=3.0, busy_timeout_ms=3000)
    version = lf.conn.execute("PRAGMA schema_version").fetchone()[0]
    with holding(lf.path, WRITE) as writer:
        before = {how: writes("uninstall", how) for how in ("quiet", "forced")}
        t0 = time.monotonic()
        assert capture.uninstall(lf) == {"triggers": 0, "tables": 0}
        assert time.monotonic() - t0 < 1.0
        assert {how: writes("uninstall", how) for how in ("quiet", "forced")} == before
        writer.release()
    assert rows(lf.path, "app") == 1
    assert lf.conn.execute("PRAGMA schema_version").fetchone()[0] == version


@pytest.mark.parametrize("journal", JOURNALS)
def test_an_install_with_something_missing_waits_for_the_writer(live, journal):
    """The contrast: a missing trigger must be written, so install waits for the application's
    transaction to end (and then does not disturb it)."""
    lf = live(journal, quiet_wait=10.0)
    tables = list(inspect(lf.conn).tables.values())
    capture.install(lf, tables)
    lf.conn.execute('DROP TRIGGER "_replicator_cd_t"')
    with holding(lf.path, WRITE) as writer:
        def commit_later() -> None:
            time.sleep(0.8)
            writer.release()

        committer = threading.Thread(target=commit_later)
        committer.start()
        t0 = time.monotonic()
        try:
            assert capture.install(lf, tables) == {"t": "created"}
        finally:
            committer.join()
        assert time.monotonic() - t0 >= 0.7
    assert rows(lf.path, "app") == 1
    names = {r[0] for r in lf.conn.execute(
        "SELECT name FROM sqlite_schema WHERE type = 'trigger'")}
    assert set(capture.trigger_names("t")) <= names


def test_the_journal_advice_names_a_small_file_by_its_size(tmp_path):
    """``plan``/``doctor`` advice for a rollback-journal file names its size as the report does
    (a 900,000-byte BLOB: "884.0 kB"; two pages: "8.0 kB"), not "0 MB"; WAL is "ok" and says the
    daemon only reads while streaming."""
    db = tmp_path / "small.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
    conn.execute("INSERT INTO t(body) VALUES (zeroblob(900000))")
    conn.commit()
    level, text = journal_advice(conn, db)
    assert level == "warn"
    assert "this 884.0 kB file" in text and "busy_timeout 0" in text
    conn.execute("DELETE FROM t")
    conn.commit()
    conn.execute("VACUUM")
    assert "this 8.0 kB file" in journal_advice(conn, db)[1]
    conn.execute("PRAGMA journal_mode = WAL")
    level, text = journal_advice(conn, db)
    assert level == "ok" and "only reads the file" in text
    conn.close()
