"""Capture objects in the SQLite file: the change log, the capture triggers, the cutover fence.

These are the only writes the replicator ever makes to the SQLite file (DESIGN invariant 1). Each
is one short write transaction that ``source_write`` starts at a quiet moment, so no application
transaction fails because of it; installs that would change nothing write nothing.
"""

from __future__ import annotations

import functools
import sqlite3
import time
import uuid
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from . import log
from .errors import SourceError
from .quoting import qi, ql
from .source import KEY_ROWID, LOG_TABLE, META_TABLE, Index, Table, split_statements
from .source_write import LiveFile, NotQuiet

_log = log.get("capture")
MIN_KEY_COLUMNS = 4
FENCE_MESSAGE = (
    "replicator: this SQLite database was migrated to Postgres and is now read-only; "
    "the data lives in {where}. Point the application at the new database."
)


@functools.cache
def template(name: str) -> str:
    """A SQL template from ``triggers/`` (inside the wheel, or the source tree when editable)."""
    packaged = resources.files("replicator") / "triggers" / name
    if packaged.is_file():
        return packaged.read_text()
    return (Path(__file__).resolve().parent.parent / "triggers" / name).read_text()


def trigger_names(table: str, kind: str = "c") -> tuple[str, str, str]:
    """Names of a table's capture ('c') or fence ('f') triggers: insert, update, delete."""
    return tuple(f"_replicator_{kind}{op}_{table}" for op in "iud")  # type: ignore[return-value]


def guard_names(table: str) -> tuple[str, str]:
    """Names of a table's REPLACE-guard triggers (before insert, before update)."""
    return (f"_replicator_cri_{table}", f"_replicator_cru_{table}")


def replace_keys(table: Table) -> list[Index]:
    """UNIQUE indexes (on plain columns) whose clashes REPLACE resolves by deleting other rows.
    The primary key counts only where another row can clash with it: when rows are tracked by
    rowid, or when a collation (NOCASE, RTRIM) makes different keys equal."""
    return [
        i for i in table.indexes
        if i.unique and all(c is not None for c in i.columns)
        and not (i.origin == "pk" and table.key_kind != KEY_ROWID
                 and all(c == "BINARY" for c in i.collations))
    ]


def guard_sql(table: Table) -> list[str]:
    """BEFORE triggers logging the keys of rows an incoming row would REPLACE; [] if none can."""
    keys = replace_keys(table)
    if not keys:
        return []

    def body(self_ref: str) -> str:
        stmts = []
        own = " AND ".join(  # the row itself, compared exactly (not by the key's collation)
            f"{e} IS {self_ref}.{e} COLLATE BINARY" for e in table.key_exprs
        )
        for idx in keys:
            cond = " AND ".join(
                f"{qi(c)} COLLATE {coll} = NEW.{qi(c)}"
                for c, coll in zip(idx.columns, idx.collations, strict=False) if c is not None
            )
            stmts.append(
                f'    INSERT INTO "_replicator_log" (tbl, op{_klist(table)}) SELECT '
                f"{ql(table.name)}, 'R', {', '.join(table.key_exprs)} FROM {qi(table.name)} "
                f"WHERE {cond} AND NOT ({own});"
            )
        return "\n".join(stmts)

    names = guard_names(table.name)
    sql = template("capture_replace.sql").format(
        trigger_insert=qi(names[0]),
        trigger_update=qi(names[1]),
        table=qi(table.name),
        insert_body=body("NEW"),
        update_body=body("OLD"),
    )
    return split_statements(sql)


def _klist(table: Table) -> str:
    return "".join(f", k{i + 1}" for i in range(len(table.key_exprs)))


def key_refs(table: Table, which: str) -> list[str]:
    """``NEW."a"`` / ``OLD."a"`` expressions for the table's key (its rowid when keyless)."""
    return [f"{which}.{expr}" for expr in table.key_exprs]


def capture_sql(table: Table) -> list[str]:
    """The three CREATE TRIGGER statements for ``table``."""
    new, old = key_refs(table, "NEW"), key_refs(table, "OLD")
    names = trigger_names(table.name)
    sql = template("capture.sql").format(
        trigger_insert=qi(names[0]),
        trigger_update=qi(names[1]),
        trigger_delete=qi(names[2]),
        table=qi(table.name),
        table_literal=ql(table.name),
        key_list=_klist(table),
        new_keys="".join(f", {k}" for k in new),
        old_keys="".join(f", {k}" for k in old),
        # BINARY: under the key's own collation (NOCASE, RTRIM) a case-only change is "equal",
        # but Postgres keys compare exactly, so the old key must be logged too.
        key_changed=" OR ".join(f"{o} IS NOT {n} COLLATE BINARY"
                                for o, n in zip(old, new, strict=True)),
    )
    return split_statements(sql)


def _log_key_columns(conn: sqlite3.Connection) -> int:
    cols = [r[1] for r in conn.execute(f"PRAGMA table_info({qi(LOG_TABLE)})")]
    return sum(1 for c in cols if c.startswith("k") and c[1:].isdigit())


def install(live: LiveFile, tables: Iterable[Table]) -> dict[str, str]:
    """Create the log and meta tables and each table's triggers, atomically and idempotently.

    Only triggers that are missing or differ are (re)created, and when nothing is missing nothing
    is written at all (no write lock taken), so a restart leaves the file alone. Returns
    ``{table: "created" | "replaced" | "kept"}``.
    """
    tables = list(tables)
    width = max([MIN_KEY_COLUMNS, *(len(t.key_exprs) for t in tables)])
    # Rendered before the write: the write lock is held only for the statements themselves.
    wanted = {t.name: wanted_triggers(t) for t in tables}
    if _in_place(live.conn, tables, wanted, width):
        return {t.name: "kept" for t in tables}
    cols = "".join(f",\n    k{i + 1}" for i in range(width))
    log_ddl = split_statements(template("log.sql").format(key_columns=cols))

    def work(c: sqlite3.Connection) -> dict[str, str]:
        if not _has_table(c, LOG_TABLE):
            for stmt in log_ddl:
                c.execute(stmt)
            _set_meta(c, "source_id", str(uuid.uuid4()))
            _set_meta(c, "installed_at", time.time())
            _set_meta(c, "pruned_through", 0)
        for i in range(_log_key_columns(c), width):
            c.execute(f"ALTER TABLE {qi(LOG_TABLE)} ADD COLUMN k{i + 1}")
        existing = _capture_triggers(c)
        return {t.name: _install_table(c, t.name, wanted[t.name], existing) for t in tables}

    result = live.write(work, what="install")
    _log.debug("capture_installed", tables=len(tables))
    return result


def _in_place(conn: sqlite3.Connection, tables: list[Table], wanted: dict[str, dict[str, str]],
              width: int) -> bool:
    """Everything ``install`` would create is there already, exactly (a read, no lock held)."""
    if not _has_table(conn, LOG_TABLE) or _log_key_columns(conn) < width:
        return False
    existing = _capture_triggers(conn)
    for table in tables:
        ours = {n for n in (*trigger_names(table.name), *guard_names(table.name)) if n in existing}
        if ours != set(wanted[table.name]) or any(
            existing[n].strip() != stmt.rstrip(";").strip() for n, stmt in wanted[table.name].items()
        ):
            return False
    return True


def _capture_triggers(conn: sqlite3.Connection) -> dict[str, str]:
    return dict(
        conn.execute(
            "SELECT name, sql FROM sqlite_schema WHERE type='trigger' "
            "AND name LIKE '\\_replicator\\_c%' ESCAPE '\\'"
        ).fetchall()
    )


def wanted_triggers(table: Table) -> dict[str, str]:
    """Every capture trigger ``table`` needs: name -> CREATE statement."""
    out = dict(zip(trigger_names(table.name), capture_sql(table), strict=True))
    guards = guard_sql(table)
    if guards:
        out.update(zip(guard_names(table.name), guards, strict=True))
    return out


def _install_table(c: sqlite3.Connection, table: str, wanted: dict[str, str],
                   existing: dict[str, str]) -> str:
    outcome = "kept"
    for name in (*trigger_names(table), *guard_names(table)):
        if name in existing and name not in wanted:
            c.execute(f"DROP TRIGGER {qi(name)}")
            outcome = "replaced"
    for name, stmt in wanted.items():
        current = existing.get(name)
        if current is not None and current.strip() == stmt.rstrip(";").strip():
            continue
        if current is not None:
            c.execute(f"DROP TRIGGER {qi(name)}")
            outcome = "replaced"
        elif outcome == "kept":
            outcome = "created"
        c.execute(stmt)
    return outcome


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type='table' AND name=?", (name,)
    ).fetchone()
    return row is not None


def _set_meta(conn: sqlite3.Connection, key: str, value: object) -> None:
    conn.execute(
        f"INSERT INTO {qi(META_TABLE)} (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def read_meta(conn: sqlite3.Connection) -> dict[str, Any]:
    if not _has_table(conn, META_TABLE):
        return {}
    return dict(conn.execute(f"SELECT key, value FROM {qi(META_TABLE)}").fetchall())


def installed(conn: sqlite3.Connection) -> bool:
    return _has_table(conn, LOG_TABLE)


class LogPosition(NamedTuple):
    """Where the change log stands relative to a cursor, read in one statement."""

    schema_version: int
    high: int  # the highest sequence number handed out (0: none)
    backlog: int  # entries after the cursor
    oldest: float | None  # ts of the oldest entry after the cursor
    rows: int  # entries in the log, applied or not

    @property
    def lag(self) -> float:
        return max(0.0, time.time() - self.oldest) if self.oldest else 0.0


# One statement (one short read lock: under a rollback journal every read holds off the
# application's commit). Sequence numbers have no gaps (a rolled-back insert rolls its number
# back too), so counts come from the ends of the primary key, never from a scan of the log.
POSITION_SQL = (
    f"SELECT (SELECT schema_version FROM pragma_schema_version), max(seq), min(seq), "
    f"(SELECT ts FROM {qi(LOG_TABLE)} WHERE seq > ? ORDER BY seq LIMIT 1) FROM {qi(LOG_TABLE)}"
)


def position_from(row: tuple[Any, ...], cursor: int) -> LogPosition:
    version, high, low, oldest = row
    if high is None:
        return LogPosition(int(version), 0, 0, None, 0)
    return LogPosition(int(version), high, max(0, high - cursor), oldest, high - low + 1)


def position(conn: sqlite3.Connection, cursor: int) -> LogPosition:
    return position_from(conn.execute(POSITION_SQL, (cursor,)).fetchone(), cursor)


def log_high_water(conn: sqlite3.Connection) -> int:
    """The highest sequence number ever handed out; 0 when none. Pruning keeps the newest row,
    so it is the table's maximum."""
    return int(conn.execute(f"SELECT coalesce(max(seq), 0) FROM {qi(LOG_TABLE)}").fetchone()[0])


def prune(live: LiveFile, through: int, chunk: int, *, optional: bool = True) -> int:
    """Delete applied log rows (seq <= through), one chunk per quiet write; returns rows deleted.

    ``optional`` (streaming): stops at the first moment that is not quiet (``NotQuiet`` is
    raised only if nothing was deleted). The newest row is never deleted: SQLite numbers a new
    row max(seq) + 1, so keeping it is what guarantees that sequence numbers are never handed
    out twice."""
    total = 0
    while True:

        def work(c: sqlite3.Connection) -> int:
            n = c.execute(
                f"DELETE FROM {qi(LOG_TABLE)} WHERE seq IN (SELECT seq FROM {qi(LOG_TABLE)} "
                f"WHERE seq <= ? AND seq < (SELECT max(seq) FROM {qi(LOG_TABLE)}) "
                "ORDER BY seq LIMIT ?)",
                (through, chunk),
            ).rowcount
            if n < chunk:
                _set_meta(c, "pruned_through", through)
            return n

        try:
            deleted = live.write(work, what="prune", force=not optional)
        except NotQuiet:
            if total:
                return total
            raise
        total += deleted
        if deleted < chunk:
            return total


def install_fence(live: LiveFile, tables: Iterable[str], where: str) -> None:
    """Make every write to the listed tables fail with a message saying where the data went."""
    message = ql(FENCE_MESSAGE.format(where=where))
    fences = []
    for table in tables:
        names = trigger_names(table, "f")
        sql = template("fence.sql").format(
            trigger_insert=qi(names[0]),
            trigger_update=qi(names[1]),
            trigger_delete=qi(names[2]),
            table=qi(table),
            message=message,
        )
        fences.append((names, split_statements(sql)))

    def work(c: sqlite3.Connection) -> None:
        for names, statements in fences:
            for name in names:
                c.execute(f"DROP TRIGGER IF EXISTS {qi(name)}")
            for stmt in statements:
                c.execute(stmt)
        _set_meta(c, "fenced_at", time.time())

    live.write(work, what="fence")


def remove_fence(live: LiveFile) -> None:
    def work(c: sqlite3.Connection) -> None:
        _drop_triggers_like(c, "\\_replicator\\_f%")
        if _has_table(c, META_TABLE):
            c.execute(f"DELETE FROM {qi(META_TABLE)} WHERE key = 'fenced_at'")

    live.write(work, what="unfence")


def fenced(conn: sqlite3.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE type='trigger' AND name LIKE '\\_replicator\\_f%' "
        "ESCAPE '\\' LIMIT 1"
    ).fetchone()
    return row is not None


def _drop_triggers_like(c: sqlite3.Connection, pattern: str) -> int:
    names = [
        r[0]
        for r in c.execute(
            "SELECT name FROM sqlite_schema WHERE type='trigger' AND name LIKE ? ESCAPE '\\'",
            (pattern,),
        )
    ]
    for name in names:
        c.execute(f"DROP TRIGGER IF EXISTS {qi(name)}")
    return len(names)


def uninstall(live: LiveFile) -> dict[str, int]:
    """Remove every replicator object from the file in one transaction."""

    def work(c: sqlite3.Connection) -> dict[str, int]:
        triggers = _drop_triggers_like(c, "\\_replicator%")
        tables = sum(1 for t in (LOG_TABLE, META_TABLE) if _has_table(c, t))
        for stmt in split_statements(template("uninstall.sql")):
            c.execute(stmt)
        return {"triggers": triggers, "tables": tables}

    # Nothing to remove: no write lock is taken.
    result = live.write(work, what="uninstall") if _left_over(live.conn) else {
        "triggers": 0, "tables": 0}
    _log.info("capture_uninstalled", **result)
    return result


def _left_over(conn: sqlite3.Connection) -> bool:
    """Any replicator object in the file (what ``uninstall`` removes)."""
    return conn.execute(
        "SELECT 1 FROM sqlite_schema WHERE name LIKE '\\_replicator%' ESCAPE '\\'"
    ).fetchone() is not None


def check_log(conn: sqlite3.Connection) -> None:
    if not installed(conn):
        raise SourceError(
            f"source: the change log {LOG_TABLE} is missing (dropped or the file was replaced); "
            "replication cannot continue: run `replicator uninstall` and start again"
        )


