"""A stand-in application: a separate process writing to a SQLite file while it replicates.

It exercises everything capture must see: single- and multi-row transactions, updates, deletes,
primary-key changes, REPLACE clashing on a UNIQUE column (its delete is invisible to triggers),
UPSERT, DELETE without WHERE, ALTER TABLE ADD COLUMN and CREATE TABLE midway. Every SQLite
error is recorded: the replicator must never cause one.

    python tests/support/writer.py DB --scenario app|chinook --ops N [--seed S] [--report FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import string
import sys
import time
import traceback


def rand_text(rng: random.Random, n: int = 12) -> str:
    alphabet = string.ascii_letters + "äöü—✓漢字 '\""
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, n)))


def rand_float(rng: random.Random) -> float:
    return rng.choice([rng.random() * 10 ** rng.randint(-5, 12), 0.1 + 0.2, -rng.random(), 1e308,
                       float(rng.randint(-10**6, 10**6)) / 7])


class Writer:
    def __init__(self, path: str, seed: int, scenario: str):
        self.conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        self.conn.execute("PRAGMA busy_timeout = 10000")
        self.rng = random.Random(seed)
        self.scenario = scenario
        self.ops: dict[str, int] = {}
        self.errors: list[str] = []
        self.midway_done: set[str] = set()

    def run(self, ops: int, pause: float) -> None:
        for i in range(ops):
            self.step(i, add_at=ops // 3, create_at=ops // 2)
            if pause:
                time.sleep(pause)

    def step(self, i: int, *, add_at: int, create_at: int) -> None:
        """Operation number ``i``: the schema changes at their turn, then one random operation;
        a failure is recorded (the application saw it), never raised."""
        if i == add_at:
            self.midway("add_column")
        if i == create_at:
            self.midway("create_table")
        kind = self.rng.choice(self.kinds())
        try:
            getattr(self, kind)()
            self.ops[kind] = self.ops.get(kind, 0) + 1
        except sqlite3.Error as exc:
            self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")

    def x(self, sql: str, params=()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def txn(self, fn) -> None:
        self.x("BEGIN IMMEDIATE")
        try:
            fn()
            self.x("COMMIT")
        except BaseException:
            self.x("ROLLBACK")
            raise

    def pick(self, table: str, key: str):
        row = self.x(f'SELECT "{key}" FROM "{table}" ORDER BY random() LIMIT 1').fetchone()
        return row[0] if row else None

    def midway(self, what: str) -> None:
        try:
            getattr(self, "mid_" + what + "_" + self.scenario)()
            self.midway_done.add(what)
        except sqlite3.Error as exc:
            self.errors.append(f"midway {what}: {exc}")

    # -- the app scenario -----------------------------------------------------------------------

    def kinds(self) -> list[str]:
        if self.scenario == "chinook":
            return ["c_insert", "c_update", "c_delete", "c_multi", "c_pk_change", "c_replace",
                    "c_upsert", "c_delete_all"]
        return ["a_insert_user", "a_update_user", "a_delete_user", "a_multi", "a_pk_change",
                "a_replace_clash", "a_upsert_tag", "a_event", "a_delete_all", "a_order"]

    def a_insert_user(self) -> None:
        self.x("INSERT INTO users (email, name, balance, created_at, prefs, avatar) "
               "VALUES (?, ?, ?, ?, ?, ?)",
               (f"u{self.rng.randrange(10**9)}@x.io", rand_text(self.rng), rand_float(self.rng),
                "2026-11-24 10:00:00", json.dumps({"k": self.rng.random()}),
                self.rng.randbytes(self.rng.randint(0, 64))))

    def a_update_user(self) -> None:
        uid = self.pick("users", "id")
        if uid is not None:
            self.x("UPDATE users SET name = ?, balance = ? WHERE id = ?",
                   (rand_text(self.rng), rand_float(self.rng), uid))

    def a_delete_user(self) -> None:
        uid = self.pick("users", "id")
        if uid is not None:
            self.x("DELETE FROM users WHERE id = ?", (uid,))

    def a_multi(self) -> None:
        def work():
            for _ in range(self.rng.randint(2, 20)):
                getattr(self, self.rng.choice(["a_insert_user", "a_update_user", "a_order",
                                               "a_event"]))()
        self.txn(work)

    def a_pk_change(self) -> None:
        uid = self.pick("users", "id")
        if uid is not None:
            self.x("UPDATE users SET id = (SELECT max(id) + 1000 FROM users) WHERE id = ?", (uid,))

    def a_replace_clash(self) -> None:
        # REPLACE deletes the row holding this email without firing any delete trigger.
        email = self.pick("users", "email")
        if email is not None:
            self.x("INSERT OR REPLACE INTO users (id, email, name, balance) VALUES "
                   "((SELECT max(id) + 1 FROM users), ?, 'replaced', 1.5)", (email.upper(),))

    def a_upsert_tag(self) -> None:
        self.x("INSERT INTO tags (name, n) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET n = n + 1",
               (self.rng.choice(["red", "green", "blue", "ß", "漢"]),))

    def a_event(self) -> None:
        self.x("INSERT INTO events (kind, payload, at) VALUES (?, ?, ?)",
               (self.rng.choice("abc"), rand_text(self.rng, 40), time.time()))
        if self.rng.random() < 0.2:
            self.x("DELETE FROM events WHERE rowid IN (SELECT rowid FROM events ORDER BY random() "
                   "LIMIT 1)")

    def a_delete_all(self) -> None:
        if self.rng.random() < 0.3:
            self.x("DELETE FROM scratch")
        else:
            self.x("INSERT INTO scratch (v) VALUES (?)", (self.rng.random(),))

    def a_order(self) -> None:
        uid = self.pick("users", "id")
        cur = self.x("INSERT INTO orders (user_id, total, status, placed_at) VALUES (?, ?, ?, ?)",
                     (uid, round(self.rng.random() * 500, 2), "new", int(time.time())))
        oid = cur.lastrowid
        for line in range(self.rng.randint(1, 3)):
            self.x("INSERT INTO order_items (order_id, line, sku, qty) VALUES (?, ?, ?, ?)",
                   (oid, line, rand_text(self.rng, 6), self.rng.randint(1, 9)))

    def mid_add_column_app(self) -> None:
        self.x("ALTER TABLE users ADD COLUMN nickname TEXT DEFAULT 'none'")
        self.x("UPDATE users SET nickname = 'nick' WHERE id % 7 = 0")

    def mid_create_table_app(self) -> None:
        self.x("CREATE TABLE late (id INTEGER PRIMARY KEY, note TEXT, score REAL)")
        for i in range(50):
            self.x("INSERT INTO late (note, score) VALUES (?, ?)", (f"n{i}", i / 3))

    # -- the chinook scenario -------------------------------------------------------------------

    def c_insert(self) -> None:
        self.x("INSERT INTO Artist (Name) VALUES (?)", (rand_text(self.rng),))
        if "create_table" in self.midway_done:
            self.x("INSERT INTO Notes (body, at) VALUES (?, ?)", (rand_text(self.rng), time.time()))

    def c_update(self) -> None:
        tid = self.pick("Track", "TrackId")
        self.x("UPDATE Track SET UnitPrice = ?, Milliseconds = Milliseconds + 1 WHERE TrackId = ?",
               (rand_float(self.rng), tid))

    def c_delete(self) -> None:
        lid = self.pick("InvoiceLine", "InvoiceLineId")
        if lid is not None:
            self.x("DELETE FROM InvoiceLine WHERE InvoiceLineId = ?", (lid,))

    def c_multi(self) -> None:
        def work():
            inv = self.x("INSERT INTO Invoice (CustomerId, InvoiceDate, Total) VALUES (1, "
                         "'2026-11-24 00:00:00', 0)").lastrowid
            total = 0.0
            for _ in range(self.rng.randint(1, 10)):
                price = round(self.rng.random() * 2, 2)
                total += price
                self.x("INSERT INTO InvoiceLine (InvoiceId, TrackId, UnitPrice, Quantity) "
                       "VALUES (?, ?, ?, 1)", (inv, self.rng.randint(1, 3000), price))
            self.x("UPDATE Invoice SET Total = ? WHERE InvoiceId = ?", (total, inv))
        self.txn(work)

    def c_pk_change(self) -> None:
        gid = self.pick("Genre", "GenreId")
        self.x("UPDATE Genre SET GenreId = (SELECT max(GenreId) + 1 FROM Genre) WHERE GenreId = ?",
               (gid,))

    def c_replace(self) -> None:
        aid = self.pick("Artist", "ArtistId")
        self.x("INSERT OR REPLACE INTO Artist (ArtistId, Name) VALUES (?, ?)",
               (aid, "replaced " + rand_text(self.rng)))

    def c_upsert(self) -> None:
        self.x("INSERT INTO PlaylistTrack (PlaylistId, TrackId) VALUES (?, ?) "
               "ON CONFLICT DO NOTHING", (self.rng.randint(1, 18), self.rng.randint(1, 3503)))

    def c_delete_all(self) -> None:
        if "create_table" not in self.midway_done:
            return
        if self.rng.random() < 0.3:
            self.x("DELETE FROM Notes")

    def mid_add_column_chinook(self) -> None:
        self.x("ALTER TABLE Customer ADD COLUMN Loyalty INTEGER DEFAULT 0")
        self.x("UPDATE Customer SET Loyalty = CustomerId * 10 WHERE CustomerId % 3 = 0")

    def mid_create_table_chinook(self) -> None:
        self.x("CREATE TABLE Notes (NoteId INTEGER PRIMARY KEY, body TEXT, at REAL)")


def create_app_db(path: str, users: int = 2000, seed: int = 1) -> None:
    """The generated application database used by the end-to-end tests."""
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript("""
        CREATE TABLE users (
            id INTEGER PRIMARY KEY,
            email TEXT NOT NULL UNIQUE COLLATE NOCASE,
            name TEXT,
            balance NUMERIC(12, 2),
            created_at TEXT,
            prefs TEXT,
            avatar BLOB
        );
        CREATE TABLE orders (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id INTEGER,
            total REAL,
            status TEXT,
            placed_at INTEGER
        );
        CREATE TABLE order_items (
            order_id INTEGER NOT NULL,
            line INTEGER NOT NULL,
            sku TEXT,
            qty INTEGER,
            PRIMARY KEY (order_id, line)
        );
        CREATE TABLE tags (name TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE events (kind TEXT, payload TEXT, at REAL);
        CREATE TABLE scratch (v REAL);
        CREATE INDEX users_name ON users (name);
    """)
    conn.execute("BEGIN")
    for i in range(users):
        conn.execute(
            "INSERT INTO users (email, name, balance, created_at, prefs, avatar) VALUES (?,?,?,?,?,?)",
            (f"user{i}@example.com", rand_text(rng), rand_float(rng), "2026-01-01 00:00:00",
             json.dumps({"i": i}), rng.randbytes(rng.randint(0, 32)) if i % 3 else None))
        if i % 2 == 0:
            conn.execute("INSERT INTO orders (user_id, total, status, placed_at) VALUES (?,?,?,?)",
                         (i + 1, round(rng.random() * 100, 2), "paid", 1700000000 + i))
            conn.execute("INSERT INTO order_items VALUES (?, 0, ?, ?)", (i // 2 + 1, "sku", 2))
        if i % 5 == 0:
            conn.execute("INSERT INTO events VALUES (?, ?, ?)", ("seed", rand_text(rng, 30), i * 1.5))
    conn.execute("INSERT INTO tags VALUES ('red', 1), ('green', 2)")
    conn.execute("COMMIT")
    conn.close()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("db")
    ap.add_argument("--scenario", choices=["app", "chinook"], default="app")
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--pause", type=float, default=0.0)
    ap.add_argument("--report")
    args = ap.parse_args()
    w = Writer(args.db, args.seed, args.scenario)
    try:
        w.run(args.ops, args.pause)
    except Exception:  # noqa: BLE001
        w.errors.append(traceback.format_exc())
    report = {"ops": w.ops, "errors": w.errors, "midway": sorted(w.midway_done)}
    if args.report:
        with open(args.report, "w") as fh:
            json.dump(report, fh)
    print(json.dumps(report))
    return 1 if w.errors else 0


if __name__ == "__main__":
    sys.exit(main())
