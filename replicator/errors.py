"""A shallow error taxonomy: one base class, a few kinds, each with an exit code and a retry flag.

The CLI turns these into a message and an exit code at the edge; the daemon's loop uses
``retryable`` to decide between backing off and stopping in state ``error``.
"""

from __future__ import annotations

import asyncio
import sqlite3

import asyncpg

EXIT_OK = 0
EXIT_RUNTIME = 1
EXIT_USAGE = 2
EXIT_STARTUP = 3


class ReplicatorError(Exception):
    """Base of every error the replicator raises on purpose."""

    exit_code = EXIT_RUNTIME
    retryable = False
    kind = "runtime"
    fatal = False  # the daemon stops instead of retrying


class ConfigError(ReplicatorError):
    """A bad flag, config field or value; the message names the field."""

    exit_code = EXIT_USAGE
    kind = "config"


class StartupError(ReplicatorError):
    """The source or target cannot be opened, or another instance holds the lock."""

    exit_code = EXIT_STARTUP
    kind = "startup"


class SourceError(ReplicatorError):
    """Something about the SQLite file stops replication (replaced, corrupt, log missing)."""

    kind = "source"


class SourceReplaced(SourceError):
    """The file under the daemon is not the one it was replicating: stop, do not retry."""

    fatal = True


class TargetError(ReplicatorError):
    """A Postgres failure; ``retryable`` when the connection or server went away."""

    kind = "target"

    def __init__(self, message: str, *, retryable: bool = False):
        super().__init__(message)
        self.retryable = retryable


class DriftError(ReplicatorError):
    """A schema change the daemon cannot follow; names the table."""

    kind = "drift"


class AwaitingTarget(DriftError):
    """SQLite gained a table or column that the target schema (made by the application's ORM)
    does not have yet: the daemon waits, and resumes by itself once the user applies the same
    migration to the target."""


class SchemaInMotion(DriftError):
    """A table seen by one look at the schema was gone by the next (a migration that commits
    step by step, like Alembic's batch mode on SQLite: a temporary table created, filled,
    renamed): nothing is wrong; the schema is looked at again after a short pause."""


class BadValueError(ReplicatorError):
    """A value that no column of the chosen type can hold exactly, with on_bad_value = "fail"."""

    kind = "bad_value"


class StateError(ReplicatorError):
    """The target's bookkeeping is in a state that forbids the command (e.g. already cut over)."""

    exit_code = EXIT_STARTUP
    kind = "state"


# SQLSTATE classes that mean "the connection or server went away; try again".
_RETRYABLE_SQLSTATE_PREFIXES = ("08", "57P", "53", "40")


def is_retryable_pg(exc: BaseException) -> bool:
    """Classify a Postgres-side failure by type and SQLSTATE class, never by message text."""
    if isinstance(exc, TargetError):
        return exc.retryable
    if isinstance(
        exc,
        (
            asyncpg.exceptions.ConnectionDoesNotExistError,
            asyncpg.exceptions.InterfaceError,
            asyncpg.exceptions.InvalidCachedStatementError,
            asyncpg.exceptions.OutdatedSchemaCacheError,
            ConnectionError,
            OSError,
            asyncio.TimeoutError,
            TimeoutError,
        ),
    ):
        return True
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return sqlstate.startswith(_RETRYABLE_SQLSTATE_PREFIXES)


def is_busy_sqlite(exc: BaseException) -> bool:
    """SQLITE_BUSY / SQLITE_LOCKED: another connection holds a lock; retry later."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return False


POOLER_HINT = (
    "the target behaves like a transaction-mode pooler (PgBouncer, a Neon -pooler endpoint): "
    "prepared statements and session state do not survive between transactions. Use the direct "
    "endpoint (drop -pooler from the host), or set target.pooled = true"
)


def pooler_symptom(exc: BaseException) -> bool:
    """26000 (prepared statement does not exist) / 42P05 (already exists): named statements were
    lost or shared between clients, which only a transaction pooler does."""
    return getattr(exc, "sqlstate", None) in ("26000", "42P05")


def startup_message(exc: BaseException, what: str) -> str | None:
    """A clear message for a Postgres refusal while setting up, or None."""
    sqlstate = getattr(exc, "sqlstate", "") or ""
    if sqlstate == "42501":
        return (f"{what}: permission denied ({exc}); the role needs CREATE on the database (for "
                "schema _replicator) and on the target schema, as Neon's owner role has")
    if pooler_symptom(exc):
        return f"{what}: {POOLER_HINT}"
    if sqlstate == "25006":
        return f"{what}: the target is read-only (a standby or a read replica endpoint)"
    return None


class NothingReplicated(StateError):
    """The embedded target holds no database for this source: nothing was replicated from it."""

    kind = "nothing_replicated"


class QuarantineBlocks(StateError):
    """Cutover refused: rows sit in quarantine and the operator has not accepted them."""

    kind = "quarantine"


class SnapshotIncomplete(ReplicatorError):
    """A table's copy does not account for every row of the frozen copy (a bug, never ignored)."""

    kind = "snapshot"
