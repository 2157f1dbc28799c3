"""Frozen reads of the source: a consistent view of the file and the change-log position it
reflects (DESIGN invariant 4). By default a copy taken with SQLite's online backup API in one
step (the live file is read-locked only for that copy, and the copy can be read again after a
crash); with ``snapshot_method = "direct"`` (WAL files only) one read transaction on the file.
``online_copy`` is the one file-copy helper: the first-run backup uses it too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path

from ..capture import installed, log_high_water
from ..errors import StartupError
from ..source import open_source
from ..source_write import is_wal


@dataclass
class Frozen:
    """A consistent read of the source: a connection and the log position it reflects."""

    conn: sqlite3.Connection
    mark: int
    path: Path | None  # the frozen copy, when there is one
    temporary: bool = False  # the copy is deleted on close

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        self.conn.close()
        if self.temporary and self.path is not None:
            self.path.unlink(missing_ok=True)


def open_frozen_brief(source: Path, state_dir: Path, busy_timeout_ms: int) -> Frozen:
    """A consistent read of the live file that never holds its lock for long. In WAL mode a
    read transaction on the file (readers never block the application's writers); with a
    rollback journal, where a reader holds off every application commit, a file copy (locked
    only while it is taken) that is deleted on close."""
    probe = open_source(source, readonly=True, busy_timeout_ms=busy_timeout_ms)
    try:
        wal = is_wal(probe)
    finally:
        probe.close()
    if wal:
        return open_frozen_direct(source, busy_timeout_ms)
    path = take_copy(source, state_dir / "table-copy.sqlite")
    return replace(open_frozen_copy(path), temporary=True)


def take_copy(source: Path, dest: Path) -> Path:
    """Copy the live file with the online backup API in one step (one read transaction)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    need = source.stat().st_size + file_size(source.with_name(source.name + "-wal"))
    free = shutil.disk_usage(dest.parent).free
    if free < need * 1.1:
        raise StartupError(
            f"snapshot: {dest.parent} has {free >> 20} MiB free but the copy needs about "
            f"{need >> 20} MiB; free space, set source.state_dir elsewhere, or set "
            "source.snapshot_method = \"direct\""
        )
    tmp = dest.with_name(dest.name + ".tmp")
    tmp.unlink(missing_ok=True)
    online_copy(source, tmp)
    for suffix in ("-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    os.replace(tmp, dest)
    return dest


def online_copy(source: Path, dest: Path) -> None:
    """``source`` copied into a new database file ``dest`` by SQLite's online backup API, in
    one step: one read transaction, so the copy is consistent and the live file is read-locked
    only while it is taken."""
    live = open_source(source, readonly=True)
    try:
        out = sqlite3.connect(dest)
        try:
            live.backup(out)
        finally:
            out.close()
    finally:
        live.close()


def file_size(path: Path) -> int:
    """The file's size in bytes, 0 if it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def open_frozen_copy(path: Path) -> Frozen:
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True, isolation_level=None,
                           check_same_thread=False)
    mark = log_high_water(conn) if installed(conn) else 0
    return Frozen(conn=conn, mark=mark, path=path)


def open_frozen_direct(source: Path, busy_timeout_ms: int) -> Frozen:
    """A read transaction on the live file: the mark and every table from one snapshot."""
    conn = open_source(source, readonly=True, busy_timeout_ms=busy_timeout_ms)
    conn.execute("BEGIN")
    mark = log_high_water(conn) if installed(conn) else 0
    return Frozen(conn=conn, mark=mark, path=None)
