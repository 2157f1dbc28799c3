"""A hostile SQLite database: everything SQLite lets an application store that Postgres does not
take as-is. Each table targets one category; the expected outcome is stated next to it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = r"""
-- Flexible typing: text in INTEGER, REAL in INTEGER, huge integers, odd type names.
CREATE TABLE "numbers" (
    id INTEGER PRIMARY KEY,
    qty INTEGER,                 -- 'N/A' and '' stored as text: quarantined
    ratio INTEGER,               -- 2.5 stored as REAL: widened to numeric
    big UNSIGNED BIG INT,        -- 2^64 stored as REAL: numeric
    price NUMERIC(10,2),         -- 1.1 (REAL) and 3 (INTEGER): numeric
    odd FLOATING POINT,          -- INT affinity (!), integers only: bigint
    code STRING,                 -- NUMERIC affinity: '0123' becomes 123
    short VARCHAR(3),            -- 'toolong' is kept: text, no length limit
    f REAL                       -- 0.1+0.2, 1e308, 5e-324, Infinity: double precision, exact
);

-- Text that Postgres text cannot hold.
CREATE TABLE texts (
    id INTEGER PRIMARY KEY,
    body TEXT,                   -- NUL bytes and invalid UTF-8: quarantined
    anything                     -- no type: text and blobs mixed
);

-- Dates, booleans, JSON, UUIDs as SQLite stores them.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    happened DATETIME,           -- one ISO layout: timestamptz
    day DATE,                    -- YYYY-MM-DD: date
    mixed_time DATETIME2,        -- unix seconds and Julian days in one column: text
    stamp TIMESTAMP,             -- unix seconds only: timestamptz
    done BOOLEAN,                -- 0/1 only: boolean
    flag BOOLEAN,                -- 'true' and 2: not boolean
    payload JSON,                -- valid JSON: json
    junk JSON,                   -- some invalid JSON: text
    uid UUID,                    -- canonical lowercase UUIDs: uuid
    at_text TEXT                 -- declared TEXT: stays text even if it looks like dates
);

-- Keys: composite, text, WITHOUT ROWID, none, nullable.
CREATE TABLE pairs (a TEXT NOT NULL, b INTEGER NOT NULL, v BLOB, PRIMARY KEY (b, a)) WITHOUT ROWID;
CREATE TABLE keyless (x, y REAL);
CREATE TABLE nullable_pk (code TEXT PRIMARY KEY, v INTEGER);

-- The schema's meaning: constraints, defaults, generated columns, indexes.
CREATE TABLE accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE COLLATE NOCASE,
    handle TEXT,
    status TEXT NOT NULL DEFAULT 'it''s new' CHECK (status IN ('it''s new', 'active', 'closed')),
    balance REAL NOT NULL DEFAULT -1.5 CHECK (balance >= -100),
    kind INTEGER CHECK (typeof(kind) = 'integer'),
    created_at TEXT DEFAULT CURRENT_TIMESTAMP,
    updated_at TEXT DEFAULT (datetime('now')),
    epoch INTEGER DEFAULT (strftime('%s', 'now')),
    token TEXT DEFAULT (lower(hex(randomblob(16)))),
    deleted_at TEXT,
    score_x2 REAL GENERATED ALWAYS AS (balance * 2) STORED,
    email_domain TEXT GENERATED ALWAYS AS (substr(email, instr(email, '@') + 1)) VIRTUAL,
    CONSTRAINT handle_len CHECK (length(handle) <= 20)
);
CREATE UNIQUE INDEX accounts_handle_live ON accounts (handle) WHERE deleted_at IS NULL;
CREATE INDEX accounts_lower_email ON accounts (lower(email));
CREATE INDEX accounts_balance_desc ON accounts (balance DESC, id);

CREATE TABLE posts (
    id INTEGER PRIMARY KEY,
    account_id INTEGER REFERENCES accounts (id) ON DELETE CASCADE,
    title TEXT NOT NULL
);
CREATE TABLE audit (id INTEGER PRIMARY KEY, what TEXT, at TEXT);
CREATE TRIGGER posts_audit AFTER INSERT ON posts BEGIN
    INSERT INTO audit (what, at) VALUES ('post ' || NEW.id, datetime('now'));
END;
CREATE VIEW live_accounts AS SELECT id, email, handle FROM accounts WHERE deleted_at IS NULL;
CREATE VIEW account_types AS SELECT id, typeof(kind) AS t FROM accounts;

-- Identifiers: reserved words, mixed case, spaces, quotes, semicolons, non-ASCII.
CREATE TABLE "user" ("UserId" INTEGER PRIMARY KEY, "order" TEXT, "end" INTEGER, "select" REAL);
CREATE TABLE "we""ird; name ✓" ("sp ace" INTEGER PRIMARY KEY, "qu""ote" TEXT, "ñandú" BLOB);

-- Not a table Postgres can take: skipped and named.
CREATE VIRTUAL TABLE docs USING fts5(body);
"""

# Rows whose values cannot move exactly (table -> count), for the quarantine checks.
QUARANTINED = {"numbers": 2, "texts": 3}


def create(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(SCHEMA)
    conn.execute("BEGIN")
    n = conn.executemany
    n("INSERT INTO numbers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        (1, 10, 1, 2**63 - 1, 1.1, 7, "0123", "toolong", 0.1 + 0.2),
        (2, "N/A", 2.5, float(2**64), 3, 8, "12.0", "ok", 1e308),
        (3, "", 3, -(2**63), None, None, "abc", None, 5e-324),
        (4, None, None, None, 0.07, None, None, "", float("inf")),
        (5, -4, -1, 0, -2.25, -9, "-0", "x", -1e-308),
    ])
    n("INSERT INTO texts VALUES (?, ?, ?)", [
        (1, "plain ✓", "text"),
        (2, "nul\x00inside", b"\x00\x01blob"),
        (3, None, 42),
        (4, "after", None),
        (5, "emoji 🦆 and 'quotes' \"double\"", "x" * 100_000),
    ])
    conn.execute("INSERT INTO texts VALUES (6, CAST(X'ff6261642075746638' AS TEXT), 'bad utf8')")
    conn.execute("INSERT INTO texts VALUES (7, 'ok', CAST(X'c328' AS TEXT))")
    n("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        (1, "2024-02-29 23:59:59", "2024-02-29", 1700000000, 1700000000, 1, "true",
         '{"a": 1, "a": 2}', '{"ok": true}', "4b0e7b6a-1f2c-4d5e-8f90-123456789abc", "2024-01-01"),
        (2, "1999-12-31 00:00:00", "1999-12-31", 2460000.5, 0, 0, 2,
         '[1, 2.50, "x"]', "{not json", "00000000-0000-4000-8000-000000000000", "yesterday"),
        (3, None, None, "2024-01-01 00:00:00", None, None, None, None, None, None, None),
    ])
    n("INSERT INTO pairs VALUES (?, ?, ?)", [("x", 1, b"\x00"), ("y", 1, None), ("x", 2, b"")])
    n("INSERT INTO keyless VALUES (?, ?)", [(1, 0.5), (1, 0.5), ("a", None), (None, None)])
    n("INSERT INTO nullable_pk VALUES (?, ?)", [("a", 1), (None, 2), (None, 3)])
    n("INSERT INTO accounts (id, email, handle, status, balance, kind, created_at, deleted_at) "
      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
        (1, "ann@example.com", "ann", "active", 10.0, 1, "2024-01-01 10:00:00", None),
        (2, "Bob@Example.com", "bob", "it's new", 0.5, 2, "2024-01-02 10:00:00", None),
        (3, "old@example.com", "bob", "closed", -2.0, 3, "2024-01-03 10:00:00", "2024-02-01"),
        (4, "zed@example.com", None, "active", 99.0, 4, "2024-01-04 10:00:00", None),
    ])
    conn.execute("DELETE FROM accounts WHERE id = 4")  # sqlite_sequence stays at 4 > max(id)
    n("INSERT INTO posts VALUES (?, ?, ?)", [(1, 1, "hello"), (2, 99, "orphan")])
    n('INSERT INTO "user" VALUES (?, ?, ?, ?)', [(1, "first", 0, 1.5), (2, "sec'ond", 1, None)])
    n('INSERT INTO "we""ird; name ✓" VALUES (?, ?, ?)', [(1, 'a"b', b"\xff"), (2, "é", None)])
    conn.execute("INSERT INTO docs VALUES ('full text')")
    conn.execute("COMMIT")
    conn.close()
