"""An application process with one transaction shape, counting the SQLite errors it sees.

Used by the locking tests and ``bench/locking_bench.py``: run it alone (the control) and while
the replicator streams, and compare the error counts. Shapes are the ones real apps use:

* ``deferred``   ``BEGIN``; read; write; ``COMMIT`` (Django, SQLAlchemy, Rails < 7.1, plain
  ``sqlite3``): the read takes a read lock, the first write must upgrade it, and SQLite answers
  an upgrade that meets another writer, or a stale snapshot, with SQLITE_BUSY at once,
  whatever the busy timeout.
* ``immediate``  ``BEGIN IMMEDIATE``; read; write; ``COMMIT`` (Rails >= 7.1, Django with
  transaction_mode=IMMEDIATE): waits for the write lock with the busy handler.
* ``autocommit`` single-statement writes, each its own transaction.
* ``reader``     ``BEGIN``; two reads; ``COMMIT``.

    python tests/support/app_shapes.py DB --shape deferred --txns 1000 --busy-ms 5000 \
        [--pause-ms 0] [--seed 1] [--report FILE] [--until FILE]
    python tests/support/app_shapes.py DB --create-rows N --journal wal|delete

Exit 0 always (errors are the measurement); the JSON report has ``txns``, ``errors`` (count),
``messages`` (distinct error texts with counts), ``error_times``, ``seconds`` and the
transactions' ``latency_ms`` (p50, p99, max: how long the app waited for locks).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import sys
import time
from collections import Counter
from pathlib import Path

SHAPES = ("deferred", "immediate", "autocommit", "reader")

SCHEMA = """
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    balance REAL NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE entries (
    id INTEGER PRIMARY KEY,
    account_id INTEGER NOT NULL,
    amount REAL NOT NULL,
    memo TEXT,
    at TEXT NOT NULL
);
CREATE INDEX entries_account ON entries (account_id);
"""


def create(path: Path, rows: int, journal: str, seed: int = 1) -> None:
    """An app database of ``rows`` rows (accounts : entries = 1 : 3) in ``journal`` mode."""
    rng = random.Random(seed)
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.executescript(SCHEMA)
    accounts = max(1, rows // 4)
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO accounts VALUES (?, ?, ?, ?, ?)",
        ((i, f"a{i}@example.com", f"Account {i}", round(rng.uniform(0, 1000), 2),
          "2026-01-01 00:00:00") for i in range(1, accounts + 1)),
    )
    conn.executemany(
        "INSERT INTO entries (account_id, amount, memo, at) VALUES (?, ?, ?, ?)",
        ((rng.randint(1, accounts), round(rng.uniform(-50, 50), 2), f"seed {i}",
          "2026-01-01 00:00:00") for i in range(rows - accounts)),
    )
    conn.execute("COMMIT")
    conn.close()


class App:
    def __init__(self, path: Path, shape: str, busy_ms: int, seed: int):
        # isolation_level=None: the transactions below are exactly the statements they send.
        self.conn = sqlite3.connect(path, timeout=busy_ms / 1000, isolation_level=None)
        self.conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
        self.shape = shape
        self.rng = random.Random(seed)
        self.accounts = self.conn.execute("SELECT max(id) FROM accounts").fetchone()[0]
        self.errors: Counter[str] = Counter()
        self.error_times: list[float] = []  # unix times, to line errors up with daemon events
        self.latencies: list[float] = []
        self.txns = 0

    def one(self) -> None:
        account = self.rng.randint(1, self.accounts)
        amount = round(self.rng.uniform(-20, 20), 2)
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        c = self.conn
        if self.shape == "autocommit":
            c.execute("UPDATE accounts SET balance = balance + ?, updated_at = ? WHERE id = ?",
                      (amount, now, account))
            return
        if self.shape == "reader":
            c.execute("BEGIN")
            c.execute("SELECT balance FROM accounts WHERE id = ?", (account,)).fetchone()
            c.execute("SELECT count(*) FROM entries WHERE account_id = ?", (account,)).fetchone()
            c.execute("COMMIT")
            return
        c.execute("BEGIN IMMEDIATE" if self.shape == "immediate" else "BEGIN")
        balance = c.execute("SELECT balance FROM accounts WHERE id = ?", (account,)).fetchone()[0]
        c.execute("UPDATE accounts SET balance = ?, updated_at = ? WHERE id = ?",
                  (balance + amount, now, account))
        c.execute("INSERT INTO entries (account_id, amount, memo, at) VALUES (?, ?, ?, ?)",
                  (account, amount, f"txn {self.txns}", now))
        c.execute("COMMIT")

    def run(self, txns: int, pause_ms: float, until: Path | None = None) -> None:
        """``txns`` transactions; with ``until``, more, until that file exists."""
        clock = time.perf_counter
        while self.txns < txns or (until is not None and not until.exists()):
            t = clock()
            try:
                self.one()
            except sqlite3.Error as exc:
                self.errors[f"{type(exc).__name__}: {exc}"] += 1
                if len(self.error_times) < 10_000:
                    self.error_times.append(time.time())
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
            self.latencies.append(clock() - t)
            self.txns += 1
            if pause_ms:
                time.sleep(self.rng.uniform(0, 2 * pause_ms) / 1000)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("db", type=Path)
    ap.add_argument("--shape", choices=SHAPES, default="deferred")
    ap.add_argument("--txns", type=int, default=1000)
    ap.add_argument("--busy-ms", type=int, default=5000)
    ap.add_argument("--pause-ms", type=float, default=0.0, help="mean think time between transactions")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report", type=Path)
    ap.add_argument("--until", type=Path, help="after --txns, go on until this file exists")
    ap.add_argument("--create-rows", type=int, default=0, help="create the database first")
    ap.add_argument("--journal", default="wal", choices=["wal", "delete"])
    args = ap.parse_args()
    if args.create_rows:
        create(args.db, args.create_rows, args.journal, args.seed)
        return 0
    app = App(args.db, args.shape, args.busy_ms, args.seed)
    started = time.monotonic()
    app.run(args.txns, args.pause_ms, args.until)
    lat = sorted(app.latencies) or [0.0]
    report = {"shape": args.shape, "busy_ms": args.busy_ms, "txns": app.txns,
              "errors": sum(app.errors.values()), "messages": dict(app.errors),
              "error_times": app.error_times, "seconds": round(time.monotonic() - started, 3),
              "latency_ms": {"p50": round(lat[len(lat) // 2] * 1000, 3),
                             "p99": round(lat[int(len(lat) * 0.99)] * 1000, 3),
                             "max": round(lat[-1] * 1000, 3)}}
    text = json.dumps(report)
    if args.report:
        args.report.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
