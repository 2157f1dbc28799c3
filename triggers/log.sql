-- The replicator's own objects in the SQLite file. Every name starts with _replicator.
--
-- _replicator_log holds one row per changed key, never row images: the apply step reads the row's
-- current state, so values never pass through SQLite's text rendering (15-digit floats, BLOBs).
-- A pruned log must never hand out a sequence number at or below the cursor. SQLite gives a new
-- row max(seq) + 1, and pruning never deletes the newest row, so numbers only grow: the same
-- guarantee as AUTOINCREMENT, without its rewrite of sqlite_sequence on every insert (which made
-- each application write half again as slow).
-- The key columns k1..kN have no declared type: a key keeps its exact storage class.
-- ts is unix seconds (REAL) at the time of the write; it measures replication lag.
CREATE TABLE IF NOT EXISTS "_replicator_log" (
    seq INTEGER PRIMARY KEY,
    ts  REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
    tbl TEXT NOT NULL,
    op  TEXT NOT NULL
    {key_columns}
);

CREATE TABLE IF NOT EXISTS "_replicator_meta" (
    key   TEXT PRIMARY KEY,
    value
);
