"""Every Prometheus metric the replicator exports, declared in one place (README lists them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()  # the *_created series only add noise to every scrape
REGISTRY = CollectorRegistry(auto_describe=True)

STATES = ("new", "snapshot", "streaming", "waiting", "cutover", "fallback", "done", "error")

STATE = Gauge(
    "replicator_state", "1 for the daemon's current state, 0 for the others", ["state"],
    registry=REGISTRY,
)
LAG_SECONDS = Gauge(
    "replicator_lag_seconds",
    "Age of the oldest change in SQLite not yet applied to Postgres (0 when none)",
    registry=REGISTRY,
)
BACKLOG = Gauge(
    "replicator_backlog_changes", "Changes logged in SQLite and not yet applied",
    registry=REGISTRY,
)
LOG_ROWS = Gauge(
    "replicator_change_log_rows", "Rows currently held in the SQLite change log (before pruning)",
    registry=REGISTRY,
)
CHANGES_APPLIED = Counter(
    "replicator_changes_applied", "Logged changes applied to Postgres", ["table", "op"],
    registry=REGISTRY,
)
ROWS_WRITTEN = Counter(
    "replicator_rows_written", "Rows written to Postgres by streaming (after coalescing)",
    ["table"], registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "replicator_apply_batch_seconds", "Time to read and apply one batch (one Postgres commit)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
BATCH_CHANGES = Histogram(
    "replicator_apply_batch_changes", "Logged changes per applied batch",
    buckets=(1, 10, 100, 1_000, 10_000, 100_000, 1_000_000), registry=REGISTRY,
)
BATCHES = Counter(
    "replicator_apply_batches", "Batches applied, by how: one statement (one round trip) or a "
    "transaction of several statements (quarantine, unique keys, ORM-made tables, catch-up)",
    ["way"], registry=REGISTRY,
)
LAST_APPLY = Gauge(
    "replicator_last_apply_timestamp_seconds", "Unix time of the last committed batch",
    registry=REGISTRY,
)
CURSOR = Gauge(
    "replicator_cursor_seq", "Highest change-log sequence number applied to Postgres",
    registry=REGISTRY,
)
ERRORS = Counter(
    "replicator_errors", "Errors by kind (target, source, drift, bad_value, ...)", ["kind"],
    registry=REGISTRY,
)
QUARANTINED = Counter(
    "replicator_quarantined_rows", "Rows put into _replicator.quarantine", ["table"],
    registry=REGISTRY,
)
QUARANTINE_SIZE = Gauge(
    "replicator_quarantine_rows", "Rows currently held in _replicator.quarantine",
    registry=REGISTRY,
)
SNAPSHOT_ROWS = Counter(
    "replicator_snapshot_rows", "Rows copied into Postgres by the snapshot", ["table"],
    registry=REGISTRY,
)
SNAPSHOT_TABLES_REMAINING = Gauge(
    "replicator_snapshot_tables_remaining", "Tables whose snapshot has not finished",
    registry=REGISTRY,
)
TARGET_RECONNECTS = Counter(
    "replicator_target_reconnects", "Reconnections to Postgres after a lost connection",
    registry=REGISTRY,
)
SQLITE_BUSY_RETRIES = Counter(
    "replicator_sqlite_busy_retries", "Times a replicator write to SQLite found the file busy",
    registry=REGISTRY,
)
SOURCE_WRITES = Counter(
    "replicator_source_writes",
    "Write transactions the replicator made to the live SQLite file, by what and how "
    "(quiet: at a moment no application transaction was in flight; forced: none came in time)",
    ["what", "how"], registry=REGISTRY,
)
SOURCE_WRITE_HOLD = Histogram(
    "replicator_source_write_hold_seconds",
    "How long each replicator write held the SQLite write lock (the application waits that long)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
    registry=REGISTRY,
)
SCHEMA_CHANGES = Counter(
    "replicator_schema_changes", "Schema changes followed in SQLite", ["action"],
    registry=REGISTRY,
)
RESNAPSHOTS = Counter(
    "replicator_table_resnapshots", "Tables copied again (rebuilt, altered, or VACUUM)",
    ["table"], registry=REGISTRY,
)
REPLANS = Counter(
    "replicator_column_replans", "Columns planned again because a streamed value did not fit the "
    "type the census chose (the table is copied again)", ["table"], registry=REGISTRY,
)
SNAPSHOT_REPLANS = Counter(
    "replicator_snapshot_replans", "Tables planned again during the snapshot from every row, "
    "because a value was not one the census's sample foresaw", ["table"], registry=REGISTRY,
)
VERIFY_ROWS = Counter(
    "replicator_verify_rows", "Rows compared value by value by background verification",
    registry=REGISTRY,
)
VERIFY_MISMATCHES = Counter(
    "replicator_verify_mismatches", "Rows found different by verification", ["table"],
    registry=REGISTRY,
)
WAL_BYTES = Gauge(
    "replicator_sqlite_wal_bytes", "Size of the SQLite -wal file", registry=REGISTRY,
)
REVERSE_LAG_SECONDS = Gauge(
    "replicator_reverse_lag_seconds",
    "Fallback window: age of the oldest change on Postgres not yet applied back to SQLite",
    registry=REGISTRY,
)
REVERSE_BACKLOG = Gauge(
    "replicator_reverse_backlog_changes",
    "Fallback window: changes logged on Postgres and not yet applied back to SQLite",
    registry=REGISTRY,
)
REVERSE_APPLIED = Counter(
    "replicator_reverse_changes_applied",
    "Fallback window: logged Postgres changes applied back to the SQLite file", registry=REGISTRY,
)
REVERSE_LAST_APPLY = Gauge(
    "replicator_reverse_last_apply_timestamp_seconds",
    "Fallback window: Unix time of the last reverse batch committed to SQLite", registry=REGISTRY,
)
UP = Gauge(
    "replicator_up", "1 while the daemon's loop is turning", registry=REGISTRY,
)


def set_state(state: str) -> None:
    for name in STATES:
        STATE.labels(name).set(1 if name == state else 0)


ERROR_KINDS = ("target", "source", "drift", "bad_value", "runtime", "verify", "startup", "state",
               "reverse")


def initialize() -> None:
    """Create every labelled series at 0, so rules can use increase() from the first error."""
    for kind in ERROR_KINDS:
        ERRORS.labels(kind)
    set_state("new")
