"""A second benchmark database, shaped like a typical web app's file rather than a generator's:
text-heavy, with the declared types frameworks write (DATETIME, JSON, BOOLEAN, VARCHAR(n)).

    python bench/generate_app.py OUT.db --rows 1600000 [--seed 1]

users (emails, names, UUID text, ISO timestamps 'YYYY-MM-DD HH:MM:SS.ffffff', JSON profiles,
REAL balances, 0/1 flags), orders (statuses, REAL totals, notes with tabs and newlines,
'YYYY-MM-DDTHH:MM:SSZ' timestamps), events (JSON payloads, 'YYYY-MM-DD HH:MM:SS' timestamps,
kinds). Rows split 1 : 3 : 4 as in ``generate.py``; the census has real text to classify here,
which the other data set (mostly numbers) hides.
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from generate import fresh_db  # bench/ is on sys.path when run as a script

SCHEMA = """
CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    uid VARCHAR(36) NOT NULL,
    email VARCHAR(254) NOT NULL UNIQUE,
    name VARCHAR(100) NOT NULL,
    created_at DATETIME NOT NULL,
    profile JSON,
    balance REAL NOT NULL DEFAULT 0,
    is_active BOOLEAN NOT NULL DEFAULT 1
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id),
    status VARCHAR(16) NOT NULL,
    total REAL NOT NULL,
    notes TEXT,
    placed_at DATETIME NOT NULL
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    user_id INTEGER REFERENCES users (id),
    kind VARCHAR(32) NOT NULL,
    payload JSON,
    at TIMESTAMP NOT NULL
);
CREATE INDEX orders_user ON orders (user_id);
CREATE INDEX events_user ON events (user_id);
"""

FIRST = ["Ana", "Ben", "Chloé", "Dmitri", "Eun-ji", "Fatima", "George", "Hana", "Ibrahim", "José",
         "Kai", "Léa", "Mateo", "Nora", "Oskar", "Priya", "Quinn", "Rosa", "Søren", "Yuki"]
LAST = ["Smith", "García", "Müller", "Nakamura", "O'Brien", "Kowalski", "Dubois", "Rossi",
        "Andersen", "Silva", "Chen", "Ivanova", "Haddad", "Novak", "Kim"]
STATUSES = ["pending", "paid", "shipped", "delivered", "refunded", "cancelled"]
KINDS = ["page_view", "click", "add_to_cart", "checkout", "login", "logout", "search"]
WORDS = ["please", "leave", "at", "the", "door", "ring", "twice", "gift", "wrap", "fragile",
         "call", "before", "delivery", "no", "plastic", "thanks", "back", "entrance", "weekend",
         "only"]
START = datetime(2019, 1, 1, tzinfo=UTC)


def generate(path: Path, rows: int, seed: int = 1) -> dict[str, int]:
    rng = random.Random(seed)
    conn, n_users, n_orders, n_events = fresh_db(path, SCHEMA, rows)

    def when() -> datetime:
        return START + timedelta(seconds=rng.randrange(0, 7 * 365 * 86400),
                                 microseconds=rng.randrange(0, 1_000_000))

    conn.execute("BEGIN")
    conn.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (
        (i, str(uuid.UUID(int=rng.getrandbits(128), version=4)),
         f"{rng.choice(FIRST).lower()}.{i}@example.{rng.choice(['com', 'org', 'io'])}",
         f"{rng.choice(FIRST)} {rng.choice(LAST)}",
         when().strftime("%Y-%m-%d %H:%M:%S.%f"),
         json.dumps({"theme": rng.choice(["dark", "light"]), "lang": rng.choice(["en", "de", "ja"]),
                     "newsletter": rng.random() < 0.3,
                     "tags": rng.sample(WORDS, rng.randrange(0, 4))}, ensure_ascii=False)
         if rng.random() < 0.9 else None,
         round(rng.uniform(0, 5000), 2) + (0.01 if rng.random() < 0.1 else 0),
         int(rng.random() < 0.85))
        for i in range(1, n_users + 1)))
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?)", (
        (i, rng.randrange(1, n_users + 1), rng.choice(STATUSES), round(rng.uniform(1, 900), 2),
         ("\t".join(rng.sample(WORDS, 3)) + ("\n" + " ".join(rng.sample(WORDS, 4))
                                             if rng.random() < 0.5 else ""))
         if rng.random() < 0.4 else None,
         when().strftime("%Y-%m-%dT%H:%M:%SZ"))
        for i in range(1, n_orders + 1)))
    conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", (
        (i, rng.randrange(1, n_users + 1) if rng.random() < 0.95 else None, rng.choice(KINDS),
         json.dumps({"path": f"/p/{rng.randrange(1000)}", "ms": rng.randrange(5, 3000),
                     "ref": rng.choice([None, "google", "newsletter"])}),
         when().strftime("%Y-%m-%d %H:%M:%S"))
        for i in range(1, n_events + 1)))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()
    return {"users": n_users, "orders": n_orders, "events": n_events}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=1_600_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    t0 = time.monotonic()
    counts = generate(args.out, args.rows, args.seed)
    print(f"{args.out}: {counts} in {time.monotonic() - t0:.1f}s")


if __name__ == "__main__":
    main()
