"""What every verification strategy shares: the per-table report, each side's view of a table
(key columns, select lists, converters), and fetching rows by key from both sides."""

from __future__ import annotations

import contextvars
import json
import math
import sqlite3
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg

from .. import state
from ..convert import (
    BadValue,
    convert_rows,
    converter,
    decode_safe_row,
    key_to_json,
    row_converter,
    select_list,
    to_sqlite_value,
)
from ..plans import ROWID_COLUMN, TablePlan
from ..quoting import qi, qualified

RATE: contextvars.ContextVar[float | None] = contextvars.ContextVar("verify_rate", default=None)
CHUNK = 20_000
MAX_SAMPLES = 5
MAX_RECHECK = 10_000
PARALLEL_FROM = 300_000  # rows: below this, starting worker processes costs more than it saves


def chunk_rows() -> int:
    """Rows per range: CHUNK, or about a twentieth of a second's worth at the background rate,
    so the daemon's event loop (which decodes Postgres rows) is never held for long."""
    rate = RATE.get()
    return CHUNK if rate is None else max(500, min(CHUNK, int(rate / 20)))



@dataclass
class TableReport:
    table: str
    matched: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    quarantined: int = 0
    sampled: bool = False
    samples: dict[str, list[Any]] = field(default_factory=lambda: {"missing": [], "extra": [],
                                                                     "different": []})
    suspects: dict[str, list[Any]] = field(default_factory=dict)  # kind -> keys (to re-check)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different)

    def note(self, kind: str, key: Any, **detail: Any) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        self.suspects.setdefault(kind, [])
        if key and len(self.suspects[kind]) < MAX_RECHECK:  # no key (a count): nothing to recheck
            self.suspects[kind].append(key)
        if len(self.samples[kind]) < MAX_SAMPLES:
            self.samples[kind].append({"key": list(key), **detail})

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table, "ok": self.ok, "matched": self.matched, "missing": self.missing,
            "extra": self.extra, "different": self.different, "quarantined": self.quarantined,
            "sampled": self.sampled, "samples": self.samples, "seconds": round(self.seconds, 3),
        }


def _shown(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


class Side:
    """Key order shared by both sides: text compares as UTF-8 bytes (code points) on both."""

    def __init__(self, plan: TablePlan, schema: str):
        self.plan = plan
        self.schema = schema
        names = [c.name for c in plan.columns]
        self.key_pos = [names.index(k) for k in plan.key_columns]
        self.float_pos = [i for i, c in enumerate(plan.columns) if c.pg_type == "double precision"]
        # jsonb keeps a document's meaning, not its text: compared parsed (an existing schema)
        self.json_pos = {i for i, c in enumerate(plan.columns) if c.pg_type == "jsonb"}
        self.sqlite_key = ([plan.rowid_name] if plan.rowid_keyed
                           else [f"{qi(k)} COLLATE BINARY" for k in plan.key_columns])
        by_name = {c.name: c for c in plan.columns}
        if plan.rowid_keyed:
            self.pg_key = [qi(ROWID_COLUMN)]
            self.pg_types = ["bigint"]
        else:
            self.pg_key = [
                qi(by_name[k].pg_name) + (' COLLATE "C"' if is_text_type(by_name[k].pg_type) else "")
                for k in plan.key_columns
            ]
            self.pg_types = [by_name[k].pg_type for k in plan.key_columns]

    def key_of(self, rowid: Any, row: tuple[Any, ...]) -> tuple[Any, ...]:
        if self.plan.rowid_keyed:
            return (rowid,)
        return tuple(row[i] for i in self.key_pos)

    def sqlite_chunk(self, conn: sqlite3.Connection, after: tuple[Any, ...] | None, safe: bool) -> list[Any]:
        rid = self.plan.rowid_name or "NULL"
        keys = self.sqlite_key
        where = ""
        params: list[Any] = []
        if after is not None:
            where = f"WHERE ({', '.join(keys)}) > ({', '.join('?' * len(keys))})"
            params = list(after)
        sql = (f"SELECT {rid}, {select_list(self.plan, safe)} FROM {qi(self.plan.name)} {where} "
               f"ORDER BY {', '.join(keys)} LIMIT {chunk_rows()}")
        conn.execute("BEGIN")
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.execute("COMMIT")

    async def pg_chunk(self, pg: asyncpg.Connection, after: tuple[Any, ...] | None) -> list[Any]:
        cols = ", ".join(qi(c.pg_name) for c in self.plan.columns)
        table = qualified(self.schema, self.plan.pg_name)
        where = ""
        args: list[Any] = []
        if after is not None:
            params = ", ".join(f"${i + 1}::{t}" for i, t in enumerate(self.pg_types))
            where = f"WHERE ({', '.join(self.pg_key)}) > ({params})"
            args = list(after)
        key_sel = ", ".join(self.pg_key)
        return list(await pg.fetch(
            f"SELECT {key_sel}, {cols} FROM {table} {where} ORDER BY {key_sel} LIMIT {chunk_rows()}", *args
        ))

    def differing(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> dict[str, Any]:
        """The first column whose values differ (bits included for floats), with both values
        (as SQLite's converts to Postgres's type, and as Postgres holds it), truncated."""
        for i, (col, x, y) in enumerate(zip(self.plan.columns, a, b, strict=True)):
            if i in self.json_pos and json_same(x, y):
                continue
            if x != y or (i in self.float_pos and x == 0 and x is not None
                          and math.copysign(1, x) != math.copysign(1, y)):
                return {"column": col.name, "sqlite": _shown(x), "postgres": _shown(y)}
        return {"column": "?"}

    def same(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
        if a != b and not (self.json_pos and all(
                x == y or i in self.json_pos and json_same(x, y)
                for i, (x, y) in enumerate(zip(a, b, strict=True)))):
            return False
        # == treats 0.0 and -0.0 as equal; the bits must match too.
        return all(a[i] != 0 or math.copysign(1, a[i]) == math.copysign(1, b[i])
                   for i in self.float_pos if a[i] is not None)


def is_text_type(pg_type: str) -> bool:
    """text, varchar(n), char(n): ordered by code point only under COLLATE "C"."""
    return pg_type == "text" or pg_type.startswith(("character", "varchar"))


def json_same(x: Any, y: Any) -> bool:
    """Two JSON texts with the same meaning (what jsonb keeps): objects by key (the last of a
    duplicated key wins, as in jsonb), numbers by value, true/false never equal to 1/0."""
    if x is None or y is None:
        return x is y
    try:
        return _json_equal(json.loads(x, parse_float=Decimal), json.loads(y, parse_float=Decimal))
    except (TypeError, ValueError):
        return False


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, Decimal)) and isinstance(b, (int, Decimal)):
        return a == b
    return type(a) is type(b) and a == b


async def has_rowid_column(pg: asyncpg.Connection, schema: str, plan: TablePlan) -> bool:
    return bool(await pg.fetchval(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 "
        "AND column_name = $3", schema, plan.pg_name, ROWID_COLUMN))


async def quarantined_keys(pg: asyncpg.Connection, table: str) -> set[str]:
    return await state.quarantine_keys(pg, table)


def convert_chunk(conn: sqlite3.Connection, side: Side, after: tuple[Any, ...] | None, safe: bool
                  ) -> tuple[list[Any], list[Any], tuple[Any, ...] | None]:
    """One chunk of SQLite rows in key order, through the copy's converters.

    Returns (good, bad, last raw key): good as (converted key, converted row), bad as
    (typed key, typed row, column, reason, raw key)."""
    try:
        raw = side.sqlite_chunk(conn, after, safe)
    except sqlite3.OperationalError as exc:
        if safe or "decode" not in str(exc).lower():
            raise
        return convert_chunk(conn, side, after, True)  # invalid UTF-8 ahead: read TEXT as bytes
    if not raw:
        return [], [], None
    convert = row_converter(side.plan)
    good, bad = [], []
    rate = RATE.get()
    if rate:
        time.sleep(len(raw) / rate)  # runs in a worker thread: throttles background verification
    for r in raw:
        values = decode_safe_row(r[1:]) if safe else r[1:]
        try:
            row = convert(values)
        except BadValue as exc:
            key = [r[0]] if side.plan.rowid_keyed else [values[i] for i in side.key_pos]
            bad.append((key_to_json(key), None, exc.column, exc.reason, key))
            continue
        good.append((side.key_of(r[0], row), row))
    last = raw[-1]
    values = decode_safe_row(last[1:]) if safe else last[1:]
    after_key = (last[0],) if side.plan.rowid_keyed else tuple(values[i] for i in side.key_pos)
    return good, bad, after_key


def pg_key(side: Side, raw_key: tuple[Any, ...]) -> tuple[Any, ...]:
    if side.plan.rowid_keyed:
        return tuple(raw_key)
    return tuple(converter(c)(v) for c, v in zip(side.plan.key_plans, raw_key, strict=True))


async def compare_keys(pg: asyncpg.Connection, side: Side, rep: TableReport, rows: list[Any]) -> None:
    if not rows:
        return
    found = await pg_rows(pg, side, [k for k, _r in rows])
    for key, row in rows:
        judge(rep, side, key, row, found.get(key))


def judge(rep: TableReport, side: Side, key: tuple[Any, ...], row: tuple[Any, ...],
          prow: tuple[Any, ...] | None) -> None:
    """One SQLite row against its Postgres row (None: not there): matched, missing or different,
    with both values named."""
    if prow is None:
        rep.note("missing", list(key))
    elif side.same(row, prow):
        rep.matched += 1
    else:
        rep.note("different", list(key), **side.differing(row, prow))


async def pg_rows(pg: asyncpg.Connection, side: Side, keys: list[tuple[Any, ...]]) -> dict[tuple[Any,
                  ...], tuple[Any, ...]]:
    cols = ", ".join(qi(c.pg_name) for c in side.plan.columns)
    table = qualified(side.schema, side.plan.pg_name)
    raw_keys = [k.split(' COLLATE')[0] for k in side.pg_key]
    nk = len(raw_keys)
    unnest = ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(side.pg_types))
    names = ", ".join(f"k{i}" for i in range(nk))
    cond = " AND ".join(f"t.{raw_keys[i]} = u.k{i}" for i in range(nk))
    rows = await pg.fetch(
        f"SELECT {', '.join('t.' + k for k in raw_keys)}, {cols} FROM {table} t "
        f"JOIN unnest({unnest}) AS u({names}) ON {cond}",
        *[list(col) for col in zip(*keys, strict=True)],
    )
    return {tuple(r[:nk]): tuple(r[nk:]) for r in rows}


def sqlite_rows_by_key(conn: sqlite3.Connection, side: Side, keys: list[tuple[Any,
                       ...]]) -> dict[tuple[Any, ...], Any]:
    """Current SQLite rows (converted) for converted keys; "bad" where conversion fails."""
    out: dict[tuple[Any, ...], Any] = {}
    plan = side.plan
    exprs = [plan.rowid_name] if plan.rowid_keyed else [qi(k) for k in plan.key_columns]
    conn.execute("BEGIN")
    try:
        for key in keys:
            where = " AND ".join(f"{e} = ?" for e in exprs)
            params = [to_sqlite_value(v) for v in key]
            raw = conn.execute(
                f"SELECT {plan.rowid_name or 'NULL'}, {select_list(plan, True)} "
                f"FROM {qi(plan.name)} WHERE {where}", params).fetchall()
            if not raw:
                continue
            good, bad = convert_rows(plan, raw, safe=True)
            out[key] = "bad" if bad else tuple(good[0][: len(plan.columns)])
    finally:
        conn.execute("COMMIT")
    return out
