"""Every write the replicator makes to the live SQLite file, made so no application transaction
fails because of it.

Why a busy timeout is not enough: SQLite answers two lock conflicts with SQLITE_BUSY at once,
without calling the application's busy handler. A connection that already holds a read
transaction and tries to write while another connection holds the write lock gets it
(deadlock avoidance); in WAL mode, a read transaction whose snapshot is older than the latest
commit gets SQLITE_BUSY_SNAPSHOT when it tries to write. So any write of ours, however short,
can fail the most common application transaction: ``BEGIN`` (deferred); read; write.

The rules, by journal mode:

* **Rollback journal** (delete, truncate, persist): a write starts only with ``BEGIN EXCLUSIVE``
  granted *without waiting* (busy timeout 0), at a quiet moment: a lock probe has seen no other
  process hold any lock on the file for ``SETTLE`` (the application is between transactions).
  EXCLUSIVE is granted only when no other connection holds a read lock, so no application
  transaction is in flight; until we commit, new ones wait in their busy handler exactly as
  they would behind one of their own writers (a few milliseconds). The one gap: on its way to
  EXCLUSIVE, SQLite holds RESERVED for some microseconds; a transaction that began reading in
  the microseconds since the probe and tries to write inside them fails, and only then.
* **WAL**: readers cannot be held off, so a deferred transaction that *begins reading during our
  write* and writes after it fails, whatever we do. A write starts (``BEGIN IMMEDIATE`` without
  waiting) at a quiet moment as above, which removes the transactions already in flight; what
  remains is that window, the write's own duration (about 2 ms for a capture install; its SQL is
  rendered before the lock is taken). That is why, in WAL mode, the daemon writes nothing while
  streaming except the capture of a table the application itself created or rebuilt, and
  prunes the change log only at cutover (``replication.prune``).

Writes that must happen (capture install, the cutover fence, uninstall) wait up to
``source.quiet_write_timeout`` for a quiet moment; then, logged as ``forced``, they take any
instant no lock is held, and at last an ordinary ``BEGIN IMMEDIATE`` with the busy timeout.
Optional ones (pruning) never go ahead: they raise ``NotQuiet`` and are tried after a later
batch.

The probe uses POSIX ``F_GETLK`` on the lock bytes SQLite's unix VFS uses (the file's
pending/reserved/shared range; in WAL mode the ``-shm`` write, checkpoint, recovery and
read-mark bytes). It sees other processes' locks, never this process's own; on a platform
without the Linux ``struct flock`` layout it reports nothing, and only the non-waiting BEGIN
decides.
"""

from __future__ import annotations

import fcntl
import os
import random
import sqlite3
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from . import log, metrics
from .errors import is_busy_sqlite
from .sizes import human_bytes
from .source import open_source

_log = log.get("source_write")
T = TypeVar("T")

PENDING_BYTE = 0x40000000  # rollback journal: pending, reserved, then the 510-byte shared range
ROLLBACK_LOCKS = (PENDING_BYTE, 512)
WAL_LOCKS = (120, 8)  # -shm: write, checkpoint, recovery, read marks 0-4
_FLOCK = "@hhqqi4x"  # Linux struct flock: type, whence, start, len, pid (+ padding)
OPTIONAL_WAIT = 0.5  # seconds an optional write (pruning) looks for a quiet moment per try
SETTLE = 0.0005  # no lock seen for this long: the application is between transactions
FORCED_WAIT = 5.0  # a forced write first tries any instant no lock is held, this long
_PROBE = sys.platform == "linux" and struct.calcsize(_FLOCK) == 32
# Descriptors are never closed: closing any descriptor of a file drops every POSIX lock this
# process holds on it, SQLite's own included.
_fds: dict[str, int] = {}


class NotQuiet(Exception):
    """No quiet moment came within the wait; the optional write was not made."""


@dataclass(frozen=True)
class LiveFile:
    """The replicator's writing connection to the live file, and how long a write waits for a
    quiet moment (``source.quiet_write_timeout``)."""

    conn: sqlite3.Connection
    path: Path
    busy_timeout_ms: int = 5000
    quiet_wait: float = 30.0

    @classmethod
    def open(cls, path: Path, *, busy_timeout_ms: int = 5000, quiet_wait: float = 30.0) -> LiveFile:
        conn = open_source(path, busy_timeout_ms=busy_timeout_ms)
        return cls(conn, path, busy_timeout_ms, quiet_wait)

    def write(self, fn: Callable[[sqlite3.Connection], T], *, what: str, force: bool = True) -> T:
        """``fn(conn)`` in one write transaction begun at a quiet moment (see ``write``). An
        optional write (``force=False``) looks for one only briefly: the caller retries later."""
        wait = self.quiet_wait if force else min(self.quiet_wait, OPTIONAL_WAIT)
        return write(self.conn, fn, db=self.path, what=what, wait=wait, force=force,
                     busy_timeout_ms=self.busy_timeout_ms)


def is_wal(conn: sqlite3.Connection) -> bool:
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"


def lock_holder(db: Path, wal: bool) -> str | None:
    """Which lock another process holds on ``db`` right now ('reader', 'writer', ...), or None."""
    if not _PROBE:
        return None
    path, (start, length) = (Path(str(db) + "-shm"), WAL_LOCKS) if wal else (db, ROLLBACK_LOCKS)
    fd = _descriptor(path)
    if fd is None:
        return None  # no -shm: nobody has the file open in WAL mode
    probe = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
    kind, _whence, at, _len, pid = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, probe))
    if kind == fcntl.F_UNLCK:
        return None
    return f"{_describe(at, wal, kind)} (pid {pid})"


def _describe(at: int, wal: bool, kind: int) -> str:
    if wal:
        return {120: "writer", 121: "checkpointer", 122: "recovery"}.get(at, "reader")
    if at == PENDING_BYTE:
        return "writer committing"
    if at == PENDING_BYTE + 1:
        return "writer"
    return "writer committing" if kind == fcntl.F_WRLCK else "reader"


def _descriptor(path: Path) -> int | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    fd = _fds.get(str(path))
    if fd is not None:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            return fd
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    _fds[str(path)] = fd  # a replaced file's old descriptor stays open, on purpose (see above)
    return fd


def write(
    conn: sqlite3.Connection,
    fn: Callable[[sqlite3.Connection], T],
    *,
    db: Path,
    what: str,
    wait: float,
    force: bool,
    busy_timeout_ms: int,
) -> T:
    """Run ``fn(conn)`` in one write transaction that begins at a quiet moment (module doc).

    For up to ``wait`` seconds, a moment counts as quiet once no other process has held a lock
    for ``SETTLE`` seconds: the application is between transactions, not in the microseconds
    between two of a busy loop. Then, with ``force``, any instant with no lock held will do
    (for ``FORCED_WAIT`` seconds), and at last an ordinary ``BEGIN IMMEDIATE`` that waits
    ``busy_timeout_ms``; without ``force``, ``NotQuiet`` is raised."""
    started = time.monotonic()
    wal = is_wal(conn)
    begin = "BEGIN IMMEDIATE" if wal else "BEGIN EXCLUSIVE"
    conn.execute("PRAGMA busy_timeout = 0")  # a lock not granted at once is not waited for
    try:
        got = _when_quiet(conn, fn, begin, db, wal, until=started + wait, settle=SETTLE)
        if got is None and force:
            _log.warning("source_write_forced", what=what, waited_s=round(wait, 1),
                         holder=lock_holder(db, wal), detail="the file was never quiet for "
                         f"{SETTLE * 1000:.1f} ms; writing at the next instant no lock is held")
            got = _when_quiet(conn, fn, begin, db, wal, until=time.monotonic() + FORCED_WAIT,
                              settle=0.0)
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    if got is not None:
        granted, result = got
        _record(what, "quiet" if time.monotonic() - started < wait else "forced", wal, started,
                granted)
        return result
    if not force:
        raise NotQuiet(f"{what}: the file was not quiet for {wait:.1f}s "
                       f"({lock_holder(db, wal) or 'busy'})")
    t0 = time.monotonic()
    result = with_write(conn, fn, attempts=3)
    _record(what, "forced", wal, started, t0)
    return result


def _when_quiet(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], begin: str,
                db: Path, wal: bool, *, until: float, settle: float) -> tuple[float, T] | None:
    """(when the lock was granted, fn's result) at the first quiet moment before ``until``."""
    quiet_since: float | None = None
    while True:
        now = time.monotonic()
        if lock_holder(db, wal) is not None:
            quiet_since = None
        else:
            quiet_since = now if quiet_since is None else quiet_since
            if now - quiet_since >= settle:
                got = _attempt(conn, fn, begin)
                if got is not None:
                    return got
                quiet_since = None
        if now >= until:
            return None
        # While it looks quiet, look again soon; otherwise back off a little (jittered).
        time.sleep(SETTLE / 4 if quiet_since is not None else random.uniform(0.0005, 0.003))


def with_write(
    conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], *, attempts: int = 50
) -> T:
    """Run ``fn`` in an ordinary short BEGIN IMMEDIATE transaction, retrying while the file is
    busy. Only for files no application writes to (a fenced file, a copy) and for forced writes."""
    for attempt in range(attempts):
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not is_busy_sqlite(exc) or attempt == attempts - 1:
                raise
            metrics.SQLITE_BUSY_RETRIES.inc()
            time.sleep(min(0.05 * (attempt + 1), 0.5))
            continue
        try:
            result = fn(conn)
            conn.execute("COMMIT")
            return result
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    raise AssertionError("unreachable")


def _attempt(conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T],
             begin: str) -> tuple[float, T] | None:
    """(when the lock was granted, result), or None if it was not granted at once (the
    connection's busy timeout is 0 here)."""
    try:
        conn.execute(begin)
    except sqlite3.OperationalError as exc:
        if not is_busy_sqlite(exc):
            raise
        return None  # not counted as busy: a quiet moment that ended is expected
    granted = time.monotonic()
    try:
        result = fn(conn)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return granted, result


def _record(what: str, how: str, wal: bool, started: float, granted: float) -> None:
    held = time.monotonic() - granted
    metrics.SOURCE_WRITES.labels(what, how).inc()
    metrics.SOURCE_WRITE_HOLD.observe(held)
    _log.info("source_write", what=what, how=how, journal="wal" if wal else "rollback",
              waited_ms=round((granted - started) * 1000, 1), held_ms=round(held * 1000, 2))


def journal_advice(conn: sqlite3.Connection, path: Path) -> tuple[str, str]:
    """('ok' | 'warn', what the file's journal mode means for the application while the
    replicator runs), for ``plan`` and ``doctor``."""
    mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
    if mode == "wal":
        return "ok", (
            "journal WAL: while streaming the replicator only reads the file, and readers never "
            "hold off the application's writers. It writes once to install capture (and when "
            "the application creates or rebuilds a table), each time at a moment no application "
            "transaction is in flight; the change log is pruned at cutover, so it grows by about "
            "30 bytes per logged change (more for long text keys) until then "
            "(replicator_change_log_rows)")
    size = human_bytes(path.stat().st_size)
    return "warn", (
        f"journal {mode} (rollback journal): every read holds off the application's commits "
        "until it ends. The replicator's reads are short (a batch: milliseconds; the snapshot's "
        f"file copy: one pass over this {size} file), so an application with a busy "
        "timeout only waits, but one with busy_timeout 0 gets `database is locked`. Its writes "
        "(capture, pruning) start only when no application transaction is in flight. To remove "
        "the waits: PRAGMA journal_mode = WAL (persistent; every process using the file must be "
        "on the same host)")
