"""The application databases and writers the end-to-end and fault tests share."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg

from .helpers import WRITER
from .writer import create_app_db

# The application: one insert per transaction, as fast as it can, until the fence stops it.
FENCED_WRITER = r"""
import json, sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
ok, errors, i = [], [], 0
deadline = time.time() + float(sys.argv[3])
while time.time() < deadline and len(errors) < 20:
    i += 1
    name = f"genre-{i}"
    try:
        conn.execute("INSERT INTO Genre (Name) VALUES (?)", (name,))
        ok.append(name)
    except sqlite3.Error as exc:
        errors.append([time.time(), str(exc)])
    time.sleep(0.002)
json.dump({"ok": ok, "errors": errors}, open(sys.argv[2], "w"))
"""


def start_app(db, out, seconds=60):
    """The application on SQLite, one insert per transaction until the fence stops it; its
    report (``out``): the names it wrote and the errors it saw, each as [time, message]."""
    return subprocess.Popen([sys.executable, "-c", FENCED_WRITER, str(db), str(out), str(seconds)])


def big_app_db(path: Path, rows: int) -> None:
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


def start_writer(db: Path, scenario: str, ops: int, pause: float = 0.002, seed: int = 7):
    report = db.with_name(f"writer-{scenario}-{seed}.json")
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(db), "--scenario", scenario, "--ops", str(ops),
         "--pause", str(pause), "--seed", str(seed), "--report", str(report)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    return proc, report


def finish_writer(proc, report: Path) -> dict:
    _out, err = proc.communicate(timeout=300)
    data = json.loads(report.read_text())
    assert data["errors"] == [], f"the application saw errors: {data['errors'][:5]} {err[-2000:]}"
    return data


async def table_row(dsn: str, name: str):
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


async def writing_backend(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'replicator' "
            "AND backend_xid IS NOT NULL"))
    finally:
        await conn.close()
