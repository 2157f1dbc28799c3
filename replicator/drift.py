"""Schema drift: compare what is replicated with what the SQLite file holds now.

Runs whenever ``PRAGMA schema_version`` moves (any DDL, and VACUUM). The result is a list of
actions the daemon follows: capture and copy a new table, add columns, copy a rebuilt or
altered table again, refresh indexes, check rowid-keyed tables (VACUUM may have renumbered
their rowids: their rowid sets are compared and the table re-copied only when they differ).
What cannot be followed raises ``DriftError`` naming the table.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from .capture import trigger_names
from .errors import DriftError
from .plans import TablePlan
from .source import KEY_ROWID, Schema, Table, normalize_sql


@dataclass
class Drift:
    new: list[str] = field(default_factory=list)
    add_columns: dict[str, list[str]] = field(default_factory=dict)  # table -> new column names
    recopy: dict[str, str] = field(default_factory=dict)  # table -> reason
    indexes: list[str] = field(default_factory=list)  # tables whose index set changed
    dropped: list[str] = field(default_factory=list)
    rowid_check: list[str] = field(default_factory=list)  # rowid-keyed: compare rowid sets

    @property
    def empty(self) -> bool:
        return not (self.new or self.add_columns or self.recopy or self.indexes or self.dropped)


def detect(
    conn: sqlite3.Connection,
    schema: Schema,
    known: dict[str, tuple[TablePlan, str]],
    wanted: set[str],
    *,
    follow_drops: bool = False,
) -> Drift:
    """``known`` maps table name -> (plan, the CREATE TABLE text it was planned from)."""
    drift = Drift()
    for name, (plan, sql) in known.items():
        table = schema.tables.get(name)
        if table is None:
            renamed = _renamed_to(conn, name)
            if renamed:
                raise DriftError(
                    f"table {name!r} was renamed to {renamed!r} in SQLite; renames are not "
                    "followed. Rename it back, or uninstall and start the migration again"
                )
            if not follow_drops:
                raise DriftError(
                    f"table {name!r} was dropped in SQLite; set replication.follow_drops = true "
                    "to drop it in Postgres too, or restore the table"
                )
            drift.dropped.append(name)
            continue
        if not set(trigger_names(name)) <= schema.triggers:
            drift.recopy[name] = "capture triggers disappeared (table rebuilt)"
        elif normalize_sql(table.sql) != normalize_sql(sql):
            added = _added_columns(plan, table)
            if added is None:
                drift.recopy[name] = "table definition changed"
            else:
                drift.add_columns[name] = added
        elif _index_names(plan) != _sqlite_index_names(table):
            drift.indexes.append(name)
        if name not in drift.recopy and table.key_kind == KEY_ROWID:
            drift.rowid_check.append(name)
    for name in schema.tables:
        if name not in known and name in wanted:
            drift.new.append(name)
    return drift


def _renamed_to(conn: sqlite3.Connection, name: str) -> str | None:
    row = conn.execute(
        "SELECT tbl_name FROM sqlite_schema WHERE type = 'trigger' AND name = ?",
        (trigger_names(name)[0],),
    ).fetchone()
    return row[0] if row and row[0] != name else None


def _added_columns(plan: TablePlan, table: Table) -> list[str] | None:
    """New column names if ``table`` is ``plan`` plus appended columns (ALTER TABLE ADD COLUMN)."""
    old = [(c.name, c.declared) for c in plan.columns]
    new = [(c.name, c.declared) for c in table.columns]
    if len(new) <= len(old) or new[: len(old)] != old:
        return None
    if tuple(table.key_columns) != plan.key_columns or table.key_kind != plan.key_kind:
        return None
    return [n for n, _d in new[len(old) :]]


def _index_names(plan: TablePlan) -> set[str]:
    return {i.sqlite_name for i in plan.indexes}


def _sqlite_index_names(table: Table) -> set[str]:
    return {i.name for i in table.indexes}
