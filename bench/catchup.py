"""Catch-up rate: apply a backlog of mixed changes logged while the daemon was stopped.

    python bench/catchup.py DB --target DSN [--changes 100000]

Runs the daemon until it streams, stops it, writes the backlog (updates, inserts, deletes in
1000-row transactions), starts the daemon again and times how long the backlog takes to apply.
The backlog's values follow the database's data set (``data_set()``): ``gen`` (bench/generate.py)
or ``app`` (bench/generate_app.py: statuses, REAL totals, notes, JSON payloads, ISO timestamps).
``bench/run.py catchup`` uses ``measure()`` below and adds two anchors measured in the same run:
the rate at which the app wrote the backlog into SQLite, and a statement-by-statement replay of
the same changes into a clone of the target (one connection, 1000 statements per transaction).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from generate_app import KINDS, STATUSES, WORDS  # bench/ is on sys.path (script dir or run.py)

ROOT = Path(__file__).resolve().parent.parent


def start(db: Path, dsn: str, log: Path, extra: list[str] | None = None):
    """The daemon as a subprocess (a bench ``Child`` when available: it measures peak RSS)."""
    argv = [sys.executable, "-m", "replicator", "run", "--source", str(db), "--target", dsn,
            "--metrics-addr", "off", "--log-format", "json", *(extra or [])]
    try:
        from common import Child
    except ImportError:
        return subprocess.Popen(argv, stdout=open(log, "a"), stderr=subprocess.STDOUT, cwd=ROOT)  # noqa: SIM115
    return Child(argv, log=log)


def stop(proc: Any) -> Any:
    if hasattr(proc, "terminate") and hasattr(proc, "result"):
        return proc.terminate(90)
    proc.send_signal(signal.SIGTERM)
    proc.wait(90)
    return None


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
    """The highest change-log sequence number handed out (the log may or may not use
    AUTOINCREMENT, i.e. sqlite_sequence may not exist)."""
    conn = sqlite3.connect(db)
    try:
        top = conn.execute('SELECT coalesce(max(seq), 0) FROM "_replicator_log"').fetchone()[0]
        if conn.execute("SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_sequence'").fetchone():
            row = conn.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = '_replicator_log'").fetchone()
            top = max(top, row[0] if row else 0)
        return top
    finally:
        conn.close()


def data_set(db: Path) -> str:
    """Which generator made ``db``: ``gen`` (orders.amount) or ``app`` (orders.total)."""
    conn = sqlite3.connect(db)
    try:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(orders)")}
    finally:
        conn.close()
    if "amount" in cols:
        return "gen"
    if "total" in cols:
        return "app"
    raise ValueError(f"{db}: not a bench/generate.py or bench/generate_app.py database")


def write_backlog(db: Path, changes: int, seed: int = 5,
                  record: list | None = None, kind: str | None = None) -> int:
    """Mixed changes (50% updates, 30% inserts, 20% deletes) in 1000-change transactions, with
    values shaped like data set ``kind``'s (default: found from the schema, ``data_set()``).

    With ``record``, appends one list of (postgres sql, args) per transaction, for the replay."""
    kind = kind or data_set(db)
    rng = random.Random(seed)
    conn = sqlite3.connect(db, isolation_level=None)
    max_order = conn.execute("SELECT max(id) FROM orders").fetchone()[0]
    max_event = conn.execute("SELECT max(id) FROM events").fetchone()[0]
    max_user = conn.execute("SELECT max(id) FROM users").fetchone()[0]
    change = _gen_change if kind == "gen" else _app_change
    done = 0
    while done < changes:
        conn.execute("BEGIN")
        txn: list = []
        for _ in range(1000):
            r = rng.random()
            if r < 0.8:
                if r >= 0.5:
                    max_event += 1
                sql, args, pg_sql, pg_args = change(rng, r < 0.5, max_order, max_event, max_user)
            else:
                sql, args = "DELETE FROM events WHERE id = ?", (rng.randint(1, max_event),)
                pg_sql, pg_args = "DELETE FROM events WHERE id = $1", args
            conn.execute(sql, args)
            txn.append((pg_sql, pg_args))
            done += 1
        conn.execute("COMMIT")
        if record is not None:
            record.append(txn)
    conn.close()
    return done


def _gen_change(rng: random.Random, update: bool, max_order: int, event_id: int, _max_user: int
                ) -> tuple[str, tuple, str, tuple]:
    """bench/generate.py's tables: (sqlite sql, args, postgres sql, args) of one UPDATE orders or
    INSERT events (the same random draws as before the app data set existed)."""
    if update:
        args = (rng.choice(["paid", "shipped"]), round(rng.uniform(1, 99), 2), rng.randint(1, max_order))
        # NUMERIC affinity stores a whole 11.0 as the integer 11, which the daemon sends as 11
        amount = Decimal(int(args[1])) if args[1].is_integer() else Decimal(repr(args[1]))
        return ("UPDATE orders SET status = ?, amount = ? WHERE id = ?", args,
                "UPDATE orders SET status = $1, amount = $2 WHERE id = $3", (args[0], amount, args[2]))
    args = (event_id, rng.randint(1, 1000), int(time.time()), rng.random())
    return ("INSERT INTO events VALUES (?, ?, 'bench', '{}', ?, ?)", args,
            "INSERT INTO events VALUES ($1, $2, 'bench', '{}', $3, $4)", args)


def _app_change(rng: random.Random, update: bool, max_order: int, event_id: int, max_user: int
                ) -> tuple[str, tuple, str, tuple]:
    """bench/generate_app.py's tables, values shaped like its own: an order's status, REAL total
    and notes (tabs, newlines, or NULL); an event with a user (or NULL), a kind, a JSON payload and
    a 'YYYY-MM-DD HH:MM:SS' time. The Postgres side gets what the replicator made of the columns
    (double precision, text, json as text, timestamptz: the naive text is UTC)."""
    if update:
        notes = (("\t".join(rng.sample(WORDS, 3))
                  + ("\n" + " ".join(rng.sample(WORDS, 4)) if rng.random() < 0.5 else ""))
                 if rng.random() < 0.4 else None)
        args = (rng.choice(STATUSES), round(rng.uniform(1, 900), 2), notes, rng.randint(1, max_order))
        return ("UPDATE orders SET status = ?, total = ?, notes = ? WHERE id = ?", args,
                "UPDATE orders SET status = $1, total = $2, notes = $3 WHERE id = $4", args)
    user = rng.randint(1, max_user) if rng.random() < 0.95 else None
    payload = json.dumps({"path": f"/p/{rng.randrange(1000)}", "ms": rng.randrange(5, 3000),
                          "ref": rng.choice([None, "google", "newsletter"])})
    at = datetime.now(UTC).replace(microsecond=0)
    args = (event_id, user, rng.choice(KINDS), payload, at.strftime("%Y-%m-%d %H:%M:%S"))
    return ('INSERT INTO events (id, user_id, kind, payload, "at") VALUES (?, ?, ?, ?, ?)', args,
            'INSERT INTO events (id, user_id, kind, payload, "at") VALUES ($1, $2, $3, $4, $5)',
            (*args[:4], at))


async def replay(dsn: str, txns: list) -> float:
    """The naive anchor: the same statements, one round trip each, 1000 per transaction."""
    conn = await asyncpg.connect(dsn)
    try:
        stmts = {sql: await conn.prepare(sql) for txn in txns[:1] for sql, _ in txn}
        t0 = time.monotonic()
        for txn in txns:
            async with conn.transaction():
                for sql, args in txn:
                    st = stmts.get(sql) or stmts.setdefault(sql, await conn.prepare(sql))
                    await st.fetch(*args)
        return time.monotonic() - t0
    finally:
        await conn.close()


def exited(proc: Any) -> bool:
    if isinstance(proc, subprocess.Popen):
        return proc.poll() is not None
    return bool(proc.poll())


async def wait_streaming(dsn: str, proc: Any, timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while (await cursor(dsn))[0] != "streaming":
        if exited(proc):
            raise RuntimeError("the daemon exited before streaming")
        if time.monotonic() > deadline:
            raise TimeoutError("the daemon did not reach streaming")
        await asyncio.sleep(0.2)


async def drain(db: Path, dsn: str, log: Path, goal: int, extra: list[str] | None = None
                ) -> dict[str, Any]:
    """Start the daemon and time until the target cursor reaches ``goal``."""
    conn = await asyncpg.connect(dsn)  # one polling connection (no reconnect cost per poll)
    try:
        t0 = time.monotonic()
        proc = start(db, dsn, log, extra)
        while True:
            cur = await conn.fetchval("SELECT cursor FROM _replicator.state")
            if cur >= goal:
                end_wall = time.time()
                break
            if exited(proc):
                raise RuntimeError(f"the daemon exited during the drain; see {log}")
            await asyncio.sleep(0.02)
        seconds = time.monotonic() - t0
    finally:
        await conn.close()
    res = stop(proc)
    started = last_event_time(log, "replicator_started")
    return {"seconds": seconds, "after_started_s": (end_wall - started) if started else None,
            "daemon_maxrss_mb": round(res.maxrss_mb, 1) if res else None,
            "daemon_peak_mb": round(res.peak_mb, 1) if res else None}


def last_event_time(log: Path, event: str) -> float | None:
    """Unix time of the last ``event`` in the daemon's JSON log."""
    from datetime import datetime

    when = None
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and f'"{event}"' in line:
            with contextlib.suppress(ValueError, KeyError):
                rec = json.loads(line)
                if rec.get("event") == event:
                    when = datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()
    return when


async def measure(db: Path, dsn: str, changes: int, log: Path, *, seed: int = 5,
                  replay_dsn_factory: Any = None, extra: list[str] | None = None) -> dict[str, Any]:
    """One catch-up measurement on a database the daemon has already snapshotted (or not: then
    the first start does the snapshot, untimed). ``replay_dsn_factory(template_db)`` returns a DSN
    of a clone of the target taken while the daemon is stopped (for the replay anchor)."""
    proc = start(db, dsn, log, extra)
    await wait_streaming(dsn, proc)
    # Let it settle into streaming (the first batch after the snapshot) before stopping.
    await asyncio.sleep(1.0)
    stop(proc)
    record: list = [] if replay_dsn_factory else None  # type: ignore[assignment]
    t0 = time.monotonic()
    written = write_backlog(db, changes, seed=seed, record=record)
    app_seconds = time.monotonic() - t0
    goal = high_water(db)
    backlog = goal - (await cursor(dsn))[1]
    replay_dsn = replay_dsn_factory() if replay_dsn_factory else None
    d = await drain(db, dsn, log, goal, extra)
    out = {"data_set": data_set(db), "changes_written": written, "log_entries": backlog,
           "seconds": round(d["seconds"], 3),
           "changes_per_s": round(backlog / d["seconds"]),
           "after_started_s": round(d["after_started_s"], 3) if d["after_started_s"] else None,
           "daemon_maxrss_mb": d["daemon_maxrss_mb"], "daemon_peak_mb": d["daemon_peak_mb"],
           "app_write_seconds": round(app_seconds, 3),
           "app_changes_per_s": round(written / app_seconds)}
    if d["after_started_s"]:
        out["changes_per_s_after_start"] = round(backlog / d["after_started_s"])
    if replay_dsn:
        secs = await replay(replay_dsn, record)
        out["replay_seconds"] = round(secs, 3)
        out["replay_changes_per_s"] = round(written / secs)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("db", type=Path)
    ap.add_argument("--target", required=True)
    ap.add_argument("--changes", type=int, default=100_000)
    args = ap.parse_args()
    log = args.db.with_suffix(".catchup.log")
    print(json.dumps(await measure(args.db, args.target, args.changes, log)))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    asyncio.run(main())
