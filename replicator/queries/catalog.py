"""What the translator knows about the database: SQLite tables and columns, the Postgres type
``replicator copy`` gives each column, and which storage classes each column really holds.

Several traps depend on it: ``a / b`` differs only when a column that Postgres holds as
``numeric`` stores integers in SQLite; ``WHERE active`` needs ``<> 0`` only for a non-boolean
column; ``rowid`` can be replaced only by a table's INTEGER PRIMARY KEY. The types come from the
product's own planner (census + mapping), so they are exactly what the copy creates.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..census import quick_census
from ..config import Config
from ..plans import pg_ident
from ..schema import plan_table, text_census_columns
from ..source import KEY_ALIAS, inspect, open_source

# information_schema.columns.data_type -> the short names the rules use
PG_TYPE_NAMES = {
    "timestamp with time zone": "timestamptz",
    "timestamp without time zone": "timestamp",
    "character varying": "text",
    "character": "text",
    "integer": "bigint",
    "smallint": "bigint",
    "real": "double precision",
}
TEMPORAL = ("timestamptz", "timestamp", "date")


@dataclass(frozen=True)
class ColumnInfo:
    name: str  # SQLite spelling
    pg_name: str
    declared: str
    pg_type: str
    classes: frozenset[str]  # storage classes present in SQLite: integer, real, text, blob
    notnull: bool
    conv: str = ""  # the copy's converter id (e.g. ts_text:YYYY-MM-DD HH:MM:SS)

    @property
    def text_layout(self) -> str | None:
        """The to_char format that rebuilds SQLite's text from the Postgres value, if known."""
        if self.conv == "date_text":
            return "YYYY-MM-DD"
        if not self.conv.startswith("ts_text:"):
            return None
        sig = self.conv.split(":", 1)[1]
        layout = sig.replace("HH:MM:SS", "HH24:MI:SS").replace("HH:MM", "HH24:MI")
        layout = layout.replace("DDTHH24", 'DD"T"HH24').replace(".ffffff", ".US")
        layout = layout.replace(".fff", ".MS")
        if "f" in layout.split("YYYY-MM-DD", 1)[1].replace('"', ""):
            return None  # an unusual number of fraction digits
        return layout.replace("Z", '"Z"')


@dataclass(frozen=True)
class ForeignKey:
    table: str
    columns: tuple[str, ...]  # SQLite names
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class TableInfo:
    name: str
    pg_name: str
    columns: dict[str, ColumnInfo]  # key: lower-cased SQLite name
    key: tuple[str, ...]  # primary key (SQLite names), () when none
    rowid_alias: str | None  # the INTEGER PRIMARY KEY column, if any
    uniques: tuple[tuple[str, ...], ...]
    foreign_keys: tuple[ForeignKey, ...]
    rows: int

    def column(self, name: str) -> ColumnInfo | None:
        return self.columns.get(name.lower())


@dataclass
class Catalog:
    tables: dict[str, TableInfo] = field(default_factory=dict)  # key: lower-cased name
    identifiers: str = "lower"

    def table(self, name: str) -> TableInfo | None:
        return self.tables.get(name.lower())

    def column_names(self) -> set[str]:
        return {c for t in self.tables.values() for c in t.columns}

    def pg_name(self, name: str) -> str:
        return pg_ident(name, self.identifiers)


def load(path: Path, cfg: Config | None = None) -> Catalog:
    """Read the schema and a census of ``path`` (opened read-only) into a Catalog."""
    cfg = cfg or Config(source=path)
    conn = open_source(path, readonly=True)
    try:
        return _load(conn, cfg)
    finally:
        conn.close()


def _load(conn: sqlite3.Connection, cfg: Config) -> Catalog:
    schema = inspect(conn)
    cat = Catalog(identifiers=cfg.identifiers)
    for table in schema.tables.values():
        cen = quick_census(conn, table, text_columns=text_census_columns(table))
        plan = plan_table(table, cen, cfg)
        cols = {}
        for col, cp in zip(table.columns, plan.columns, strict=True):
            present = cen.columns[col.name].present() if col.name in cen.columns else set()
            cols[col.name.lower()] = ColumnInfo(
                col.name, cp.pg_name, col.declared, short_type(cp.pg_type), frozenset(present),
                col.notnull, cp.conv,
            )
        cat.tables[table.name.lower()] = TableInfo(
            name=table.name,
            pg_name=plan.pg_name,
            columns=cols,
            key=tuple(c.name for c in sorted((c for c in table.columns if c.pk),
                                             key=lambda c: c.pk)),
            rowid_alias=table.key_columns[0] if table.key_kind == KEY_ALIAS else None,
            uniques=tuple(tuple(c for c in i.columns if c is not None) for i in table.unique_keys),
            foreign_keys=_foreign_keys(conn, table.name),
            rows=cen.rows,
        )
    return cat


def short_type(pg_type: str) -> str:
    return PG_TYPE_NAMES.get(pg_type, pg_type)


def with_target_types(cat: Catalog, rows: list[tuple[str, str, str]]) -> Catalog:
    """Replace the planned Postgres types by the target's own (table, column, data_type) rows:
    the target is the truth when it exists (config overrides, an older copy)."""
    actual = {(t, c): short_type(d) for t, c, d in rows}
    for table in cat.tables.values():
        for key, col in list(table.columns.items()):
            found = actual.get((table.pg_name, col.pg_name))
            if found and found != col.pg_type:
                table.columns[key] = replace(col, pg_type=found)
    return cat


def _foreign_keys(conn: sqlite3.Connection, table: str) -> tuple[ForeignKey, ...]:
    groups: dict[int, list[tuple]] = {}
    for row in conn.execute("SELECT id, seq, \"table\", \"from\", \"to\" "
                            "FROM pragma_foreign_key_list(?) ORDER BY id, seq", (table,)):
        groups.setdefault(row[0], []).append(row)
    out = []
    for rows in groups.values():
        out.append(ForeignKey(table, tuple(r[3] for r in rows), rows[0][2],
                              tuple(r[4] or "" for r in rows)))
    return tuple(out)
