"""Reproducible benchmark database: users / orders / events with ints, text, decimals,
timestamps, JSON and blobs.

    python bench/generate.py OUT.db --rows 1600000 [--seed 1]

Rows split 1 : 3 : 4 between users, orders and events (1.6M rows = 200k / 600k / 800k).
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    balance NUMERIC(12, 2),
    score REAL,
    created_at TEXT NOT NULL,
    settings TEXT,
    avatar BLOB
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL,
    status TEXT NOT NULL,
    amount NUMERIC(10, 2) NOT NULL,
    quantity INTEGER NOT NULL,
    placed_at TEXT NOT NULL,
    note TEXT
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    user_id INTEGER,
    kind TEXT NOT NULL,
    payload TEXT,
    happened_at INTEGER NOT NULL,
    weight REAL
);
CREATE INDEX orders_user ON orders (user_id);
CREATE INDEX events_user ON events (user_id);
"""

KINDS = ["click", "view", "purchase", "signup", "logout", "search"]
STATUSES = ["new", "paid", "shipped", "cancelled"]


def fresh_db(path: Path, schema: str, rows: int) -> tuple[sqlite3.Connection, int, int, int]:
    """A new file holding ``schema`` (fast, unsafe writes: it is generated again if cut short),
    and the rows per table: users, orders, events as 1 : 3 : 4."""
    path.unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.executescript(schema)
    n_users, n_orders = rows // 8, rows * 3 // 8
    return conn, n_users, n_orders, rows - n_users - n_orders


def generate(path: Path, rows: int, seed: int = 1) -> dict[str, int]:
    rng = random.Random(seed)
    conn, n_users, n_orders, n_events = fresh_db(path, SCHEMA, rows)
    t0 = 1_700_000_000
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            (i, f"user{i}@example.com", f"User {i} {rng.choice(['Ann', 'Bo', 'Čeněk', '李'])}",
             round(rng.uniform(-500, 5000), 2), rng.random() * 100,
             time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t0 + i)),
             json.dumps({"theme": rng.choice(["dark", "light"]), "n": i}),
             rng.randbytes(32) if i % 4 == 0 else None)
            for i in range(1, n_users + 1)
        ),
    )
    conn.executemany(
        "INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            (i, rng.randint(1, n_users), rng.choice(STATUSES), round(rng.uniform(1, 999), 2),
             rng.randint(1, 20), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + i * 7)),
             None if i % 3 else f"note {i}")
            for i in range(1, n_orders + 1)
        ),
    )
    conn.executemany(
        "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
        (
            (i, rng.randint(1, n_users), rng.choice(KINDS),
             json.dumps({"path": f"/p/{i % 1000}", "ms": rng.randint(1, 5000)}),
             t0 + i * 3, rng.random())
            for i in range(1, n_events + 1)
        ),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return {"users": n_users, "orders": n_orders, "events": n_events}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=1_600_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    t = time.monotonic()
    counts = generate(args.out, args.rows, args.seed)
    print(json.dumps({"db": str(args.out), "rows": counts, "seconds": round(time.monotonic() - t, 1)}))


if __name__ == "__main__":
    main()
