"""Catch-up rate: apply a backlog of mixed changes logged while the daemon was stopped.

    python bench/catchup.py DB --target DSN [--changes 100000]

Runs the daemon until it streams, stops it, writes the backlog (updates, inserts, deletes in
1000-row transactions), starts the daemon again and times how long the backlog takes to apply.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parent.parent


def start(db: Path, dsn: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "replicator", "run", "--source", str(db), "--target", dsn,
         "--metrics-addr", "off", "--log-format", "json"],
        stdout=open(log, "a"), stderr=subprocess.STDOUT, cwd=ROOT,  # noqa: SIM115
    )


async def cursor(dsn: str) -> tuple[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('_replicator.state') IS NOT NULL"):
            return "new", 0
        row = await conn.fetchrow("SELECT state, cursor FROM _replicator.state")
        return (row[0], row[1]) if row else ("new", 0)
    finally:
        await conn.close()


def high_water(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(
            "SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name='_replicator_log'),0),"
            " coalesce((SELECT max(seq) FROM _replicator_log), 0))").fetchone()[0]
    finally:
        conn.close()


def write_backlog(db: Path, changes: int, seed: int = 5) -> int:
    rng = random.Random(seed)
    conn = sqlite3.connect(db, isolation_level=None)
    max_order = conn.execute("SELECT max(id) FROM orders").fetchone()[0]
    max_event = conn.execute("SELECT max(id) FROM events").fetchone()[0]
    done = 0
    while done < changes:
        conn.execute("BEGIN")
        for _ in range(1000):
            r = rng.random()
            if r < 0.5:
                conn.execute("UPDATE orders SET status = ?, amount = ? WHERE id = ?",
                             (rng.choice(["paid", "shipped"]), round(rng.uniform(1, 99), 2),
                              rng.randint(1, max_order)))
            elif r < 0.8:
                max_event += 1
                conn.execute("INSERT INTO events VALUES (?, ?, 'bench', '{}', ?, ?)",
                             (max_event, rng.randint(1, 1000), int(time.time()), rng.random()))
            else:
                conn.execute("DELETE FROM events WHERE id = ?", (rng.randint(1, max_event),))
            done += 1
        conn.execute("COMMIT")
    conn.close()
    return done


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db", type=Path)
    ap.add_argument("--target", required=True)
    ap.add_argument("--changes", type=int, default=100_000)
    args = ap.parse_args()
    log = args.db.with_suffix(".catchup.log")
    proc = start(args.db, args.target, log)
    while (await cursor(args.target))[0] != "streaming":
        await asyncio.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    written = write_backlog(args.db, args.changes)
    goal = high_water(args.db)
    backlog = goal - (await cursor(args.target))[1]
    t0 = time.monotonic()
    proc = start(args.db, args.target, log)
    while (await cursor(args.target))[1] < goal:
        await asyncio.sleep(0.05)
    seconds = time.monotonic() - t0
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    print(json.dumps({"changes_written": written, "log_entries": backlog,
                      "seconds": round(seconds, 2), "changes_per_s": round(backlog / seconds)}))


if __name__ == "__main__":
    asyncio.run(main())
