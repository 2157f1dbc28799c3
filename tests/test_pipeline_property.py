"""The whole pipeline on generated inputs: random schemas, random values, random application
operations during the snapshot and while streaming, with ``replicator run`` as a real process.

Each example builds a SQLite file: one to three tables with declared types drawn from the
real-world zoo (none, odd names, lengths, DATETIME, JSON ...) and key shapes (INTEGER PRIMARY
KEY, no key, WITHOUT ROWID text and composite keys), filled with values of every storage class
at their extremes. The daemon starts; a first list of operations runs at once (while the
snapshot is under way or just after), a second once it streams: inserts, updates, deletes,
REPLACE, UPSERT, key changes, ADD COLUMN, a new table, a table rebuild, VACUUM. The oracle is
the harness's comparator, written independently of the product: every value of every row in
Postgres is exactly the SQLite value, or the row is absent from its table and held in
``_replicator.quarantine`` with its column and reason.

The suite runs a bounded number of examples (``PIPELINE_EXAMPLES``, 6 by default, derandomized
as every property test here); ``bench/pipeline_campaign.sh`` runs a long campaign with fresh
draws.
"""

from __future__ import annotations

import asyncio
import copy
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from .support.helpers import Daemon, compare_all, matches, wait_for, wait_streaming
from .support.values import ANY_VALUE, USUAL, Raw, kind

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("PIPELINE_EXAMPLES", "6"))
# Each example runs a daemon: shrinking a failure takes many minutes, so only on request.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate] + (
    [Phase.shrink] if os.environ.get("PIPELINE_SHRINK") else [])
ZOO = ["INTEGER", "INT8", "BIGINT", "REAL", "DOUBLE", "FLOAT", "TEXT", "VARCHAR(20)", "CLOB",
       "BLOB", "NUMERIC", "DECIMAL(10,2)", "BOOLEAN", "DATETIME", "TIMESTAMP", "DATE", "JSON",
       "UUID", "", "STRANGE THING", "CHARACTER VARYING(5)"]
SHAPES = ("alias", "rowid", "text_pk", "composite")


def _usual(declared: str) -> str:
    d = declared.upper()
    for name, kinds in USUAL.items():
        if name and name.split("(")[0] in d:
            return kinds[0]
    return "int"


def cell(declared: str) -> st.SearchStrategy[Any]:
    """A value as an app would write it to such a column, now and then anything at all."""
    return st.one_of(kind(_usual(declared)), kind(_usual(declared)), ANY_VALUE)


@dataclass
class TableSpec:
    name: str
    shape: str
    columns: list[tuple[str, str]]  # (name, declared)

    def create_sql(self, name: str | None = None) -> str:
        name = name or self.name
        cols = ", ".join(f'"{c}" {d}'.rstrip() for c, d in self.columns)
        if self.shape == "alias":
            return f'CREATE TABLE "{name}" (id INTEGER PRIMARY KEY, {cols})'
        if self.shape == "rowid":
            return f'CREATE TABLE "{name}" ({cols})'
        if self.shape == "text_pk":
            return f'CREATE TABLE "{name}" (k TEXT PRIMARY KEY NOT NULL, {cols}) WITHOUT ROWID'
        return (f'CREATE TABLE "{name}" (a TEXT NOT NULL, b INTEGER NOT NULL, {cols}, '
                "PRIMARY KEY (a, b)) WITHOUT ROWID")

    @property
    def key(self) -> list[str]:
        return {"alias": ["id"], "rowid": ["rowid"], "text_pk": ["k"], "composite": ["a", "b"]}[
            self.shape]


def key_values(shape: str) -> st.SearchStrategy[tuple[Any, ...]]:
    ints = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-20, 20),
                     st.sampled_from([-(2**63), 2**63 - 1]))
    if shape in ("alias", "rowid"):
        return st.tuples(ints)
    if shape == "text_pk":
        return st.tuples(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                                 max_size=6))
    return st.tuples(st.sampled_from(["", "a", "é", "𝄞"]), ints)


@st.composite
def table_specs(draw, name: str) -> TableSpec:
    declared = draw(st.lists(st.sampled_from(ZOO), min_size=1, max_size=3))
    return TableSpec(name, draw(st.sampled_from(SHAPES)),
                     [(f"c{i}", d) for i, d in enumerate(declared)])


@st.composite
def rows_for(draw, spec: TableSpec, max_size: int = 12) -> list[tuple[tuple, tuple]]:
    keys = draw(st.lists(key_values(spec.shape), max_size=max_size, unique=True))
    return [(k, tuple(draw(cell(d)) for _c, d in spec.columns)) for k in keys]


@st.composite
def operations(draw, specs: list[TableSpec]) -> list[tuple]:
    ops = []
    for _ in range(draw(st.integers(0, 8))):
        spec = draw(st.sampled_from(specs))
        op = draw(st.sampled_from(["insert", "insert", "update", "update", "delete", "replace",
                                   "upsert", "key_change", "add_column", "new_table", "rebuild",
                                   "vacuum"]))
        pick = draw(st.integers(0, 100))
        if op in ("insert", "replace", "upsert"):
            ops.append((op, spec.name, draw(rows_for(spec, 3)), pick))
        elif op == "update":
            col, declared = draw(st.sampled_from(spec.columns))
            ops.append((op, spec.name, col, draw(cell(declared)), pick))
        elif op == "key_change":
            ops.append((op, spec.name, draw(key_values(spec.shape)), pick))
        elif op == "add_column":
            ops.append((op, spec.name, draw(st.sampled_from(ZOO)),
                        draw(st.lists(cell("TEXT"), max_size=3)), pick))
        elif op == "new_table":
            fresh = draw(table_specs(f"new{draw(st.integers(0, 10**6))}"))
            ops.append((op, fresh, draw(rows_for(fresh, 5))))
        else:
            ops.append((op, spec.name, pick))
    return ops


@st.composite
def scenarios(draw) -> tuple[list[TableSpec], dict[str, list], list[tuple], list[tuple]]:
    specs = [draw(table_specs(f"t{i}")) for i in range(draw(st.integers(1, 3)))]
    rows = {s.name: draw(rows_for(s)) for s in specs}
    return specs, rows, draw(operations(specs)), draw(operations(specs))


# -- carrying a scenario out in SQLite -------------------------------------------------------------


def _bind(value: Any) -> tuple[str, Any]:
    if isinstance(value, Raw):  # text that is not valid UTF-8
        return "CAST(? AS TEXT)", bytes(value)
    return "?", value


class App:
    """The application: plain sqlite3 with a busy timeout, as most apps write."""

    def __init__(self, path: Path, specs: list[TableSpec]):
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        # Copies: ADD COLUMN changes a spec, and hypothesis may run a drawn scenario again.
        self.specs = {s.name: copy.deepcopy(s) for s in specs}

    def close(self) -> None:
        self.conn.close()

    def insert(self, spec: TableSpec, rows: list, verb: str = "INSERT OR IGNORE") -> None:
        key_cols = [] if spec.shape == "rowid" and verb != "REPLACE" else spec.key
        for key, values in rows:
            # Rows drawn before an ADD COLUMN fill the columns they knew.
            cols = [*key_cols, *(f'"{c}"' for c, _d in spec.columns[:len(values)])]
            binds = [_bind(v) for v in ([*key, *values] if key_cols else values)]
            sql = (f'{verb} INTO "{spec.name}" ({", ".join(cols)}) '
                   f'VALUES ({", ".join(b[0] for b in binds)})')
            self.conn.execute(sql, [b[1] for b in binds])

    def _pick(self, spec: TableSpec, pick: int) -> tuple | None:
        keys = ", ".join(spec.key)
        n = self.conn.execute(f'SELECT count(*) FROM "{spec.name}"').fetchone()[0]
        if not n:
            return None
        return self.conn.execute(f'SELECT {keys} FROM "{spec.name}" ORDER BY {keys} '
                                 f"LIMIT 1 OFFSET ?", (pick % n,)).fetchone()

    def _where(self, spec: TableSpec) -> str:
        return " AND ".join(f"{k} = ?" for k in spec.key)

    def run(self, op: tuple) -> None:
        kind_, rest = op[0], op[1:]
        if kind_ == "new_table":
            spec, rows = copy.deepcopy(rest[0]), rest[1]
            if spec.name in self.specs:
                return
            self.conn.execute(spec.create_sql())
            self.specs[spec.name] = spec
            self.insert(spec, rows)
            return
        spec = self.specs.get(rest[0])
        if spec is None:
            return
        if kind_ == "insert":
            self.insert(spec, rest[1])
        elif kind_ == "replace":
            self.insert(spec, rest[1], "REPLACE")
        elif kind_ == "upsert":
            if spec.shape == "rowid":
                return self.insert(spec, rest[1])
            for key, values in rest[1]:
                known = spec.columns[:len(values)]
                sets = ", ".join(f'"{c}" = excluded."{c}"' for c, _d in known)
                binds = [_bind(v) for v in (*key, *values)]
                cols = [*spec.key, *(f'"{c}"' for c, _d in known)]
                self.conn.execute(
                    f'INSERT INTO "{spec.name}" ({", ".join(cols)}) VALUES '
                    f'({", ".join(b[0] for b in binds)}) ON CONFLICT ({", ".join(spec.key)}) '
                    f"DO UPDATE SET {sets}", [b[1] for b in binds])
        elif kind_ == "update":
            col, value, pick = rest[1:]
            key = self._pick(spec, pick)
            if key is not None:
                sql, param = _bind(value)
                self.conn.execute(f'UPDATE "{spec.name}" SET "{col}" = {sql} WHERE '
                                  f"{self._where(spec)}", (param, *key))
        elif kind_ == "delete":
            key = self._pick(spec, rest[1])
            if key is not None:
                self.conn.execute(f'DELETE FROM "{spec.name}" WHERE {self._where(spec)}', key)
        elif kind_ == "key_change":
            new, pick = rest[1:]
            key = self._pick(spec, pick)
            if key is not None:
                sets = ", ".join(f"{k} = ?" for k in spec.key)
                self.conn.execute(f'UPDATE OR IGNORE "{spec.name}" SET {sets} WHERE '
                                  f"{self._where(spec)}", (*new, *key))
        elif kind_ == "add_column":
            declared, values, pick = rest[1:]
            col = f"c{len(spec.columns)}"
            self.conn.execute(f'ALTER TABLE "{spec.name}" ADD COLUMN "{col}" {declared}')
            spec.columns.append((col, declared))
            for i, value in enumerate(values):
                key = self._pick(spec, pick + i)
                if key is not None:
                    sql, param = _bind(value)
                    self.conn.execute(f'UPDATE "{spec.name}" SET "{col}" = {sql} WHERE '
                                      f"{self._where(spec)}", (param, *key))
        elif kind_ == "rebuild":  # as Django and Alembic alter a table
            cols = ", ".join(spec.key + [f'"{c}"' for c, _d in spec.columns]) \
                if spec.shape != "rowid" else ", ".join(f'"{c}"' for c, _d in spec.columns)
            self.conn.execute("BEGIN")
            self.conn.execute(spec.create_sql(f"{spec.name}__new"))
            self.conn.execute(f'INSERT INTO "{spec.name}__new" ({cols}) SELECT {cols} '
                              f'FROM "{spec.name}"')
            self.conn.execute(f'DROP TABLE "{spec.name}"')
            self.conn.execute(f'ALTER TABLE "{spec.name}__new" RENAME TO "{spec.name}"')
            self.conn.execute("COMMIT")
        elif kind_ == "vacuum":
            self.conn.execute("VACUUM")


def build(path: Path, specs: list[TableSpec], rows: dict[str, list], journal: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    conn.close()
    app = App(path, specs)
    try:
        for spec in specs:
            app.conn.execute(spec.create_sql())
            app.insert(spec, rows[spec.name])
    finally:
        app.close()


async def quarantine_is_named(dsn: str) -> None:
    pg = await asyncpg.connect(dsn)
    try:
        bad = await pg.fetch("SELECT tbl, key FROM _replicator.quarantine "
                             "WHERE column_name IS NULL OR reason = ''")
    finally:
        await pg.close()
    assert not bad, f"quarantined rows without a column or reason: {bad}"


def test_the_pipeline_moves_every_value_exactly_or_names_it(tmp_path, pg_env):
    loop = asyncio.new_event_loop()
    runs = iter(range(10**6))

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
              phases=PHASES)
    @given(scenario=scenarios(), journal=st.sampled_from(["wal", "delete"]))
    def prop(scenario, journal):
        specs, rows, during_snapshot, while_streaming = scenario
        note(f"journal={journal}\nschema={[s.create_sql() for s in specs]}\nrows={rows}\n"
             f"during_snapshot={during_snapshot}\nwhile_streaming={while_streaming}")
        source = tmp_path / f"app{next(runs)}.db"
        build(source, specs, rows, journal)
        dsn = loop.run_until_complete(pg_env.create_db())
        daemon = Daemon(source, dsn)
        app = App(source, specs)
        try:
            for op in during_snapshot:
                app.run(op)
            loop.run_until_complete(wait_streaming(dsn, daemon))
            for op in while_streaming:
                app.run(op)
            try:
                loop.run_until_complete(
                    wait_for(lambda: matches(source, dsn, daemon), 90, "target equal to source",
                             daemon))
            except AssertionError:
                loop.run_until_complete(compare_all(source, dsn))  # the difference, in detail
                raise
            loop.run_until_complete(quarantine_is_named(dsn))
        finally:
            app.close()
            daemon.stop()
            loop.run_until_complete(pg_env.drop_db(dsn))

    try:
        prop()
    finally:
        loop.close()
