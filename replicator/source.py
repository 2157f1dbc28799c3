"""The SQLite side: opening the file safely and reading its schema into plain dataclasses.

Inspection is synchronous (it runs in a worker thread or a snapshot process) and happens inside
one read transaction, so the schema and its ``schema_version`` always belong together.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import SourceError, StartupError
from .quoting import qi

PREFIX = "_replicator"
LOG_TABLE = "_replicator_log"
META_TABLE = "_replicator_meta"

# How a table's rows are identified in the change log and in Postgres.
KEY_ALIAS = "rowid_alias"  # INTEGER PRIMARY KEY: the rowid itself, stable across VACUUM
KEY_PK = "pk"  # a declared primary key whose columns can never be NULL
KEY_ROWID = "rowid"  # no usable key: the rowid, which VACUUM may renumber (see plan)


@dataclass(frozen=True)
class Column:
    """A column as SQLite declares it (``pragma_table_xinfo``)."""
    name: str
    declared: str
    notnull: bool
    default: str | None
    pk: int  # 1-based position in the primary key, 0 when not part of it
    hidden: int  # 0 ordinary, 2 virtual generated, 3 stored generated

    @property
    def generated(self) -> bool:
        return self.hidden in (2, 3)


@dataclass(frozen=True)
class Index:
    name: str
    unique: bool
    origin: str  # 'pk', 'u' (UNIQUE constraint), 'c' (CREATE INDEX)
    partial: bool
    columns: tuple[str | None, ...]  # None for an expression
    collations: tuple[str, ...]
    descending: tuple[bool, ...]
    sql: str | None

    @property
    def plain(self) -> bool:
        """Only ordinary columns, no WHERE clause: can be mirrored and matched directly."""
        return not self.partial and all(c is not None for c in self.columns)


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str | None, ...]  # None: the parent's primary key
    on_update: str
    on_delete: str


@dataclass(frozen=True)
class Table:
    """A SQLite table as inspected: columns, indexes, foreign keys, the app's triggers, and how
    its rows are identified (``key_kind``: rowid alias, declared key, or rowid)."""
    name: str
    sql: str
    without_rowid: bool
    strict: bool
    columns: tuple[Column, ...]
    indexes: tuple[Index, ...]
    key_kind: str
    key_columns: tuple[str, ...]  # the columns that identify a row; () for KEY_ROWID
    rowid_name: str  # a spelling of the rowid that no column shadows; "" for WITHOUT ROWID
    key_note: str = ""
    foreign_keys: tuple[ForeignKey, ...] = ()
    triggers: tuple[tuple[str, str], ...] = ()  # the application's own triggers: (name, sql)
    framework: str | None = None  # the ORM whose migration records the file holds (conventions)

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def key_exprs(self) -> tuple[str, ...]:
        """SQL expressions (quoted) for the key, in order."""
        if self.key_kind == KEY_ROWID:
            return (self.rowid_name,)
        return tuple(qi(c) for c in self.key_columns)

    @property
    def unique_keys(self) -> tuple[Index, ...]:
        return tuple(i for i in self.indexes if i.unique and i.plain)

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)


@dataclass(frozen=True)
class Schema:
    """Every table of the file read in one read transaction, with the ``schema_version`` it
    belongs to, what is skipped and why, and the replicator's own triggers present."""
    schema_version: int
    tables: dict[str, Table] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> reason
    triggers: frozenset[str] = frozenset()  # our trigger names present
    objects: tuple[tuple[str, str, str, str | None], ...] = ()  # app objects (type,name,tbl,sql)
    views: tuple[tuple[str, str], ...] = ()  # (name, CREATE VIEW sql)


def open_source(
    path: Path, *, readonly: bool = False, busy_timeout_ms: int = 5000
) -> sqlite3.Connection:
    """Open the live SQLite file, refusing anything that is not an existing SQLite database."""
    if not path.exists():
        raise StartupError(f"source: {path} does not exist")
    if not path.is_file():
        raise StartupError(f"source: {path} is not a regular file")
    uri = f"file:{_uri_path(path)}?mode={'ro' if readonly else 'rw'}"
    try:
        conn = sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False, timeout=busy_timeout_ms / 1000
        )
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StartupError(f"source: {path} is not a readable SQLite database ({exc})") from None
    return conn


def _uri_path(path: Path) -> str:
    from urllib.parse import quote

    return quote(str(path.resolve()))


def is_ours(name: str) -> bool:
    return name.startswith(PREFIX)


def inspect(conn: sqlite3.Connection) -> Schema:
    """Read every user table's shape in one read transaction."""
    own_txn = not conn.in_transaction
    if own_txn:
        conn.execute("BEGIN")
    try:
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
        tables: dict[str, Table] = {}
        skipped: dict[str, str] = {}
        for _schema, name, kind, _ncol, wr, strict in conn.execute(
            "SELECT schema, name, type, ncol, wr, strict FROM pragma_table_list WHERE schema='main'"
        ).fetchall():
            if name.startswith("sqlite_") or is_ours(name):
                continue
            if kind == "virtual":
                skipped[name] = "virtual table (FTS/R*Tree...): not replicated, nor its shadow tables"
            if kind != "table":
                continue
            tables[name] = _inspect_table(conn, name, bool(wr), bool(strict))
        triggers = frozenset(
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type='trigger' AND name LIKE '\\_replicator%' "
                "ESCAPE '\\'"
            )
        )
        objects = tuple(
            conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_schema "
                "WHERE name NOT LIKE '\\_replicator%' ESCAPE '\\' ORDER BY type, name"
            ).fetchall()
        )
    except sqlite3.DatabaseError as exc:
        raise SourceError(f"source: cannot read the schema: {exc}") from None
    finally:
        if own_txn:
            conn.execute("COMMIT")
    views = tuple((o[1], o[3]) for o in objects if o[0] == "view" and o[3])
    framework = FRAMEWORKS.get(next((n for n in FRAMEWORKS if n in tables), ""))
    if framework:
        tables = {n: replace(t, framework=framework) for n, t in tables.items()}
    return Schema(version, dict(sorted(tables.items())), skipped, triggers, objects, views)


# An ORM's migration-record table -> the framework (whose conventions ``conventions`` knows)
FRAMEWORKS = {"django_migrations": "django", "ar_internal_metadata": "rails",
              "alembic_version": "sqlalchemy"}


def _inspect_table(conn: sqlite3.Connection, name: str, wr: bool, strict: bool) -> Table:
    sql = conn.execute(
        "SELECT sql FROM sqlite_schema WHERE type='table' AND name=?", (name,)
    ).fetchone()[0]
    cols = tuple(
        Column(n, t or "", bool(nn), d, pk, hid)
        for _cid, n, t, nn, d, pk, hid in conn.execute(
            "SELECT cid, name, type, \"notnull\", dflt_value, pk, hidden "
            "FROM pragma_table_xinfo(?) ORDER BY cid",
            (name,),
        )
    )
    indexes = tuple(_inspect_indexes(conn, name))
    names = {c.name.lower() for c in cols}
    rowid_name = "" if wr else next((r for r in ("rowid", "_rowid_", "oid") if r not in names), "")
    pk_cols = tuple(c.name for c in sorted((c for c in cols if c.pk), key=lambda c: c.pk))
    kind, note = _key_kind(conn, name, wr, cols, pk_cols, rowid_name)
    triggers = tuple(
        conn.execute(
            "SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ? "
            "AND name NOT LIKE '\\_replicator%' ESCAPE '\\' ORDER BY name",
            (name,),
        ).fetchall()
    )
    return Table(
        name=name,
        sql=sql,
        without_rowid=wr,
        strict=strict,
        columns=cols,
        indexes=indexes,
        key_kind=kind,
        key_columns=pk_cols if kind != KEY_ROWID else (),
        rowid_name=rowid_name,
        key_note=note,
        foreign_keys=_foreign_keys(conn, name),
        triggers=triggers,
    )


def _foreign_keys(conn: sqlite3.Connection, table: str) -> tuple[ForeignKey, ...]:
    groups: dict[int, list[Any]] = {}
    for fid, _seq, parent, frm, to, on_update, on_delete, _match in conn.execute(
        "SELECT id, seq, \"table\", \"from\", \"to\", on_update, on_delete, \"match\" "
        "FROM pragma_foreign_key_list(?) ORDER BY id, seq",
        (table,),
    ):
        groups.setdefault(fid, []).append((parent, frm, to, on_update, on_delete))
    return tuple(
        ForeignKey(
            columns=tuple(r[1] for r in rows),
            parent=rows[0][0],
            parent_columns=tuple(r[2] for r in rows),
            on_update=rows[0][3],
            on_delete=rows[0][4],
        )
        for _fid, rows in sorted(groups.items())
    )


def _key_kind(
    conn: sqlite3.Connection,
    name: str,
    wr: bool,
    cols: tuple[Column, ...],
    pk_cols: tuple[str, ...],
    rowid_name: str,
) -> tuple[str, str]:
    if wr:
        return KEY_PK, "WITHOUT ROWID primary key"
    if len(pk_cols) == 1 and _is_rowid_alias(conn, name, pk_cols[0]):
        return KEY_ALIAS, "INTEGER PRIMARY KEY (the rowid; stable across VACUUM)"
    if pk_cols and all(c.notnull for c in cols if c.pk):
        return KEY_PK, "declared primary key (NOT NULL)"
    if not rowid_name:
        raise SourceError(
            f"table {name!r}: no usable key and every rowid spelling (rowid, _rowid_, oid) is a "
            "column name; add a PRIMARY KEY"
        )
    if pk_cols:
        nullable = ", ".join(c.name for c in cols if c.pk and not c.notnull)
        why = f"primary key column(s) {nullable} can hold NULL in SQLite"
    else:
        why = "no primary key"
    return KEY_ROWID, (
        f"{why}: rows are tracked by rowid (a helper column in Postgres until cutover); VACUUM "
        "may renumber rowids, so after any schema-version change (VACUUM bumps it) the rowid "
        "sets of both sides are compared and the table is copied again if they differ"
    )


def _is_rowid_alias(conn: sqlite3.Connection, table: str, column: str) -> bool:
    """Ask SQLite's planner: an alias of the rowid compiles to the Rowid opcode."""
    ops = [r[1] for r in conn.execute(f"EXPLAIN SELECT {qi(column)} FROM {qi(table)} NOT INDEXED")]
    return "Rowid" in ops and "Column" not in ops


def rowid_parent(conn: sqlite3.Connection, fk: ForeignKey) -> str | None:
    """The parent column of a one-column foreign key when it is the parent's rowid (its INTEGER
    PRIMARY KEY), else None. SQLite checks such a key by a rowid lookup of the child's value
    made an integer if it losslessly can, which ``parent.<column> = child`` also compiles to."""
    if len(fk.columns) != 1:
        return None
    col = fk.parent_columns[0]
    try:
        if col is None:
            pk = [r[0] for r in conn.execute(
                "SELECT name FROM pragma_table_info(?) WHERE pk > 0", (fk.parent,))]
            col = pk[0] if len(pk) == 1 else None
        return col if col is not None and _is_rowid_alias(conn, fk.parent, col) else None
    except sqlite3.DatabaseError:  # no such parent table
        return None


def _inspect_indexes(conn: sqlite3.Connection, table: str) -> list[Index]:
    out = []
    for _seq, iname, unique, origin, partial in conn.execute(
        "SELECT seq, name, \"unique\", origin, partial FROM pragma_index_list(?)", (table,)
    ).fetchall():
        info = [
            r
            for r in conn.execute(
                "SELECT seqno, cid, name, \"desc\", coll, key FROM pragma_index_xinfo(?) "
                "ORDER BY seqno",
                (iname,),
            )
            if r[5]
        ]
        row = conn.execute(
            "SELECT sql FROM sqlite_schema WHERE type='index' AND name=?", (iname,)
        ).fetchone()
        out.append(
            Index(
                name=iname,
                unique=bool(unique),
                origin=origin,
                partial=bool(partial),
                columns=tuple(r[2] if r[1] >= 0 else None for r in info),
                collations=tuple((r[4] or "BINARY").upper() for r in info),
                descending=tuple(bool(r[3]) for r in info),
                sql=row[0] if row else None,
            )
        )
    return sorted(out, key=lambda i: i.name)


def rowid_bounds(conn: sqlite3.Connection, table: str, rowid_name: str
                 ) -> tuple[int | None, int | None]:
    """The smallest and largest rowid: two b-tree lookups (one query asking min and max at once
    would read every row), or (None, None) without rowid or rows."""
    if not rowid_name:
        return None, None
    lo, hi = conn.execute(f"SELECT (SELECT min({rowid_name}) FROM {qi(table)}), "
                          f"(SELECT max({rowid_name}) FROM {qi(table)})").fetchone()
    return lo, hi


def journal_mode(conn: sqlite3.Connection) -> str:
    return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()


_WS = re.compile(r"\s+")


def normalize_sql(sql: str | None) -> str:
    return _WS.sub(" ", sql or "").strip()


def split_statements(sql: str) -> list[str]:
    """Statements of a SQL script, as SQLite splits them (a trigger's ``;`` inside ``BEGIN ...
    END`` does not end it); ``--`` comment lines dropped, blank statements skipped."""
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    out, buf = [], ""
    for piece in body.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n\t;"):
                out.append(buf.strip())
            buf = ""
    return out
