"""Census of stored values and the type mapping: the plan for each table and column.

SQLite stores whatever it is given, so the Postgres type is chosen from the declared type *and*
what the column actually holds. The rules (stated in the plan for every column):

* INTEGER, REAL and TEXT affinity: the declared type wins (bigint, double precision, text).
  Within numbers we widen when the census requires it (REAL values in an INTEGER column, or
  integers beyond 2^53 in a REAL column, give ``numeric``). Values of another storage class are
  quarantined, never coerced; a config override (``type = "text"``) takes them all.
* NUMERIC affinity (DECIMAL, BOOLEAN, DATETIME, ...) and no type: the census decides. Only
  integers: bigint; numbers with a DECIMAL/NUMERIC/MONEY declaration or a mix of integers and
  reals: numeric (exact for both); only reals: double precision; any text: text (numbers rendered
  in their shortest exact decimal form); only BLOBs: bytea.
* A BLOB in a column that is not bytea, a NUL byte or invalid UTF-8 in text: quarantine.
"""

from __future__ import annotations

import hashlib
import sqlite3
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import Config
from .errors import ConfigError
from .source import KEY_ROWID, Column, Table, qi

ROWID_COLUMN = "_replicator_rowid"
CLASSES = ("integer", "real", "text", "blob")
PG_MAX_IDENT = 63

# converter id -> the storage classes it passes through untouched (the snapshot fast path)
IDENTITY_INPUTS = {
    "bigint": {"integer"},
    "float": {"real"},
    "text": {"text"},
    "bytea": {"blob"},
}


def affinity(declared: str) -> str:
    """SQLite's affinity rules (sqlite.org/datatype3.html §3.1), in their order."""
    d = declared.upper()
    if "INT" in d:
        return "INTEGER"
    if "CHAR" in d or "CLOB" in d or "TEXT" in d:
        return "TEXT"
    if "BLOB" in d or not d.strip():
        return "BLOB"
    if "REAL" in d or "FLOA" in d or "DOUB" in d:
        return "REAL"
    return "NUMERIC"


@dataclass
class ColumnCensus:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*CLASSES, "null"), 0))
    nul_text: int = 0
    bad_utf8: int | None = None  # None when not checked
    max_bytes: int = 0
    int_beyond_2_53: int = 0

    def present(self) -> set[str]:
        return {c for c in CLASSES if self.counts.get(c)}


@dataclass
class TableCensus:
    rows: int
    columns: dict[str, ColumnCensus]


def census(conn: sqlite3.Connection, table: Table, *, check_utf8: bool = False) -> TableCensus:
    """One scan of ``table`` counting storage classes and problem values per column."""
    if check_utf8:
        conn.create_function("_replicator_utf8_ok", 1, _utf8_ok, deterministic=True)
    exprs = ["count(*)"]
    for col in table.columns:
        q = qi(col.name)
        exprs += [f"sum(typeof({q}) = '{c}')" for c in CLASSES]
        exprs += [
            f"sum({q} IS NULL)",
            f"sum(typeof({q}) = 'text' AND instr(CAST({q} AS BLOB), X'00') > 0)",
            f"sum(typeof({q}) = 'text' AND NOT _replicator_utf8_ok(CAST({q} AS BLOB)))"
            if check_utf8
            else "NULL",
            f"max(CASE WHEN typeof({q}) IN ('text', 'blob') THEN length(CAST({q} AS BLOB)) END)",
            f"sum(typeof({q}) = 'integer' AND abs({q}) > 9007199254740992)",
        ]
    row = conn.execute(f"SELECT {', '.join(exprs)} FROM {qi(table.name)}").fetchone()
    out: dict[str, ColumnCensus] = {}
    per = len(CLASSES) + 5
    for i, col in enumerate(table.columns):
        vals = row[1 + i * per : 1 + (i + 1) * per]
        counts = {c: int(vals[j] or 0) for j, c in enumerate(CLASSES)}
        counts["null"] = int(vals[4] or 0)
        out[col.name] = ColumnCensus(
            counts=counts,
            nul_text=int(vals[5] or 0),
            bad_utf8=None if vals[6] is None and not check_utf8 else int(vals[6] or 0),
            max_bytes=int(vals[7] or 0),
            int_beyond_2_53=int(vals[8] or 0),
        )
    return TableCensus(rows=int(row[0]), columns=out)


def _utf8_ok(value: bytes | None) -> int:
    if value is None:
        return 1
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return 0
    return 1


@dataclass(frozen=True)
class ColumnPlan:
    name: str
    pg_name: str
    declared: str
    affinity: str
    pg_type: str
    conv: str  # converter id, see convert.py
    notnull: bool
    generated: bool
    policy: str  # on_bad_value: quarantine | fail
    reason: str
    exact: bool  # every value in the census maps exactly
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class IndexPlan:
    name: str  # Postgres name
    sqlite_name: str
    unique: bool
    columns: tuple[str, ...]  # SQLite column names
    collations: tuple[str, ...]
    descending: tuple[bool, ...]
    primary: bool = False


@dataclass(frozen=True)
class TablePlan:
    name: str
    pg_name: str
    key_kind: str
    key_columns: tuple[str, ...]  # SQLite names; () for rowid-keyed tables
    rowid_name: str
    columns: tuple[ColumnPlan, ...]
    indexes: tuple[IndexPlan, ...]
    key_note: str
    notes: tuple[str, ...] = ()

    @property
    def rowid_keyed(self) -> bool:
        return self.key_kind == KEY_ROWID

    @property
    def pg_key_columns(self) -> tuple[str, ...]:
        if self.rowid_keyed:
            return (ROWID_COLUMN,)
        by_name = {c.name: c.pg_name for c in self.columns}
        return tuple(by_name[k] for k in self.key_columns)

    @property
    def key_plans(self) -> tuple[ColumnPlan, ...]:
        by_name = {c.name: c for c in self.columns}
        return tuple(by_name[k] for k in self.key_columns)

    def column(self, name: str) -> ColumnPlan:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TablePlan:
        data = dict(data)
        data["columns"] = tuple(
            ColumnPlan(**{**c, "problems": tuple(c.get("problems", ()))}) for c in data["columns"]
        )
        data["indexes"] = tuple(
            IndexPlan(
                **{
                    **i,
                    "columns": tuple(i["columns"]),
                    "collations": tuple(i["collations"]),
                    "descending": tuple(i["descending"]),
                }
            )
            for i in data["indexes"]
        )
        data["key_columns"] = tuple(data["key_columns"])
        data["notes"] = tuple(data.get("notes", ()))
        return cls(**data)


def pg_ident(name: str, policy: str) -> str:
    """The Postgres name for a SQLite identifier: ASCII-lowercased (as Postgres folds unquoted
    names, so the app's unquoted SQL keeps working) or preserved; always quoted when used."""
    if policy == "preserve":
        return name
    return name.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans({chr(c): chr(c + 32) for c in range(ord("A"), ord("Z") + 1)})


def check_ident(kind: str, sqlite_name: str, pg_name: str) -> None:
    if len(pg_name.encode()) > PG_MAX_IDENT:
        raise ConfigError(
            f"{kind} {sqlite_name!r}: the name is {len(pg_name.encode())} bytes; Postgres "
            f"truncates names beyond {PG_MAX_IDENT} bytes. Rename it in SQLite before migrating"
        )


def plan_column(table: Table, col: Column, cen: ColumnCensus | None, cfg: Config) -> ColumnPlan:
    override = cfg.column_override(table.name, col.name)
    aff = affinity(col.declared)
    present = cen.present() if cen else set()
    pg_type, conv, reason = _choose(aff, col.declared, present, cen)
    if override.type:
        pg_type, conv = override.type, _conv_for(override.type)
        reason = f"config override: type = {override.type!r}"
    problems = _problems(conv, present, cen) if cen else []
    pg_name = pg_ident(col.name, cfg.identifiers)
    check_ident(f"column {table.name}.", col.name, pg_name)
    return ColumnPlan(
        name=col.name,
        pg_name=pg_name,
        declared=col.declared,
        affinity=aff,
        pg_type=pg_type,
        conv=conv,
        notnull=col.notnull,
        generated=col.generated,
        policy=override.on_bad_value or cfg.on_bad_value,
        reason=reason,
        exact=not problems,
        problems=tuple(problems),
    )


def _choose(
    aff: str, declared: str, present: set[str], cen: ColumnCensus | None
) -> tuple[str, str, str]:
    """(pg_type, converter, reason) for a column; see the module docstring for the rules."""
    numbers = present & {"integer", "real"}
    big_ints = bool(cen and cen.int_beyond_2_53)
    decimal_name = any(w in declared.upper() for w in ("DEC", "NUM", "MONEY"))
    if aff == "INTEGER":
        if "real" in present:
            return "numeric", "numeric", "INTEGER affinity holding REAL values: numeric keeps both"
        return "bigint", "bigint", "INTEGER affinity: bigint (SQLite integers are 64-bit)"
    if aff == "REAL":
        if big_ints:
            return "numeric", "numeric", "REAL affinity with integers beyond 2^53: numeric"
        return "double precision", "float", "REAL affinity: double precision (never 4-byte real)"
    if aff == "TEXT":
        return "text", "text", "TEXT affinity: text (varchar(n) limits are not enforced by SQLite)"
    if present == {"blob"}:
        return "bytea", "bytea", "only BLOB values: bytea"
    if "text" in present:
        if numbers:
            return "text", "text_render", (
                "mixed text and numbers: text; numbers are written in their shortest exact "
                "decimal form"
            )
        return "text", "text", f"{aff} affinity holding text: text"
    if numbers == {"integer"} and not decimal_name:
        return "bigint", "bigint", f"{aff} affinity, only integers: bigint"
    if numbers == {"real"} and not decimal_name and not big_ints:
        return "double precision", "float", f"{aff} affinity, only reals: double precision"
    if numbers:
        return "numeric", "numeric", (
            f"{aff} affinity ({declared or 'no type'}) with numbers: numeric, exact for integers "
            "and for reals in their shortest round-trip form"
        )
    if aff == "BLOB":
        return "bytea", "bytea", "no declared type and no values yet: bytea holds anything"
    return "numeric", "numeric", f"{aff} affinity and no values yet: numeric"


def _conv_for(pg_type: str) -> str:
    return {
        "bigint": "bigint",
        "double precision": "float",
        "numeric": "numeric",
        "text": "text_render",
        "bytea": "bytea",
    }.get(pg_type, "text")


def _problems(conv: str, present: set[str], cen: ColumnCensus) -> list[str]:
    accepted = {
        "bigint": {"integer"},
        "float": {"real", "integer"},
        "numeric": {"integer", "real"},
        "text": {"text"},
        "text_render": {"text", "integer", "real"},
        "bytea": {"blob"},
    }.get(conv, set(CLASSES))
    out = []
    for cls in sorted(present - accepted):
        out.append(f"{cen.counts[cls]} {cls.upper()} value(s) cannot be stored as {conv}")
    if conv == "float" and cen.int_beyond_2_53:
        out.append(f"{cen.int_beyond_2_53} integer(s) beyond 2^53 are not exact in double precision")
    if conv in ("text", "text_render") and cen.nul_text:
        out.append(f"{cen.nul_text} text value(s) contain NUL bytes, which Postgres text rejects")
    if conv in ("text", "text_render") and cen.bad_utf8:
        out.append(f"{cen.bad_utf8} text value(s) are not valid UTF-8")
    return out


def plan_table(table: Table, cen: TableCensus | None, cfg: Config) -> TablePlan:
    pg_name = pg_ident(table.name, cfg.identifiers)
    check_ident("table", table.name, pg_name)
    cols = tuple(
        plan_column(table, c, cen.columns.get(c.name) if cen else None, cfg) for c in table.columns
    )
    _check_collisions(table.name, cols)
    by_name = {c.name: c.pg_name for c in cols}
    indexes, notes = [], []
    for idx in table.indexes:
        if not idx.plain:
            notes.append(
                f"index {idx.name}: partial or expression index not created in Postgres yet"
            )
            continue
        is_pk = idx.origin == "pk" and table.key_kind != KEY_ROWID
        indexes.append(
            IndexPlan(
                name=_index_name(pg_name, [by_name[c] for c in idx.columns if c], idx.unique, idx.name),
                sqlite_name=idx.name,
                unique=idx.unique,
                columns=tuple(c for c in idx.columns if c),
                collations=idx.collations,
                descending=idx.descending,
                primary=is_pk,
            )
        )
        if idx.unique and "NOCASE" in idx.collations:
            notes.append(
                f"unique index {idx.name} uses COLLATE NOCASE: Postgres enforces it case-sensitively"
            )
    return TablePlan(
        name=table.name,
        pg_name=pg_name,
        key_kind=table.key_kind,
        key_columns=table.key_columns,
        rowid_name=table.rowid_name,
        columns=cols,
        indexes=tuple(indexes),
        key_note=table.key_note,
        notes=tuple(notes),
    )


def _check_collisions(table: str, cols: tuple[ColumnPlan, ...]) -> None:
    seen: dict[str, str] = {}
    for col in cols:
        if col.pg_name in seen or col.pg_name == ROWID_COLUMN:
            other = seen.get(col.pg_name, ROWID_COLUMN)
            raise ConfigError(
                f"table {table!r}: columns {other!r} and {col.name!r} would both be named "
                f"{col.pg_name!r} in Postgres; set target.identifiers = \"preserve\" or rename one"
            )
        seen[col.pg_name] = col.name


def _index_name(table: str, cols: list[str], unique: bool, sqlite_name: str) -> str:
    if not sqlite_name.startswith("sqlite_autoindex_"):
        base = sqlite_name.translate(_ASCII_LOWER)
    else:
        base = f"{table}_{'_'.join(cols)}_{'key' if unique else 'idx'}"
    if len(base.encode()) <= PG_MAX_IDENT:
        return base
    digest = hashlib.sha1(base.encode()).hexdigest()[:8]
    return base.encode()[: PG_MAX_IDENT - 9].decode(errors="ignore") + "_" + digest
