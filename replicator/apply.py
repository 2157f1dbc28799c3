"""Apply a batch to Postgres: delete every logged key, reconcile unique keys, insert current rows.

The log holds keys only, so applying an entry means "make this row in Postgres what it is in
SQLite now": delete the key, then insert the row if it still exists. That is idempotent (a batch
applied twice leaves the same state), coalesces repeated changes of a row for free, and handles
key changes (the old key is logged too). ``INSERT OR REPLACE`` can delete rows that clash on a
unique key without firing any trigger (DESIGN invariant 6), so before inserting we also delete
Postgres rows that clash with an incoming row on any unique key and re-read them from SQLite.

The common batch goes as one statement (``write_one_statement``): one round trip instead of one
per statement, which is most of the lag against a remote target such as Neon. It does the same
delete-then-insert per table, gated on the cursor and state it expects and on there being no
unique clash; when anything needs more (quarantine, a clash to re-read, an ORM-made table) it
changes nothing and the caller takes the transaction of several statements (``write_page``).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from . import existing, log, metrics, state
from .convert import BadValue, convert_rows, converter, key_to_json, no_type_holds, to_sqlite_value
from .errors import BadValueError, DriftError
from .plans import ColumnPlan, TablePlan, write_columns, write_projection
from .quoting import qi, qualified
from .tail import ReadTxn, RowSet

_log = log.get("apply")
COPY_THRESHOLD = 2000


@dataclass
class TableTarget:
    """What apply needs to know about one replicated table."""

    plan: TablePlan
    schema: str
    snapshot_seq: int = 0
    streaming: bool = True


@dataclass
class Page:
    """One page of log entries, grouped by table, with the current rows they name."""

    keys: dict[str, list[tuple[Any, ...]]]
    rows: dict[str, RowSet]
    last_seq: int


RowReader = Callable[[TablePlan, Sequence[tuple[Any, ...]]], Awaitable[RowSet]]


@dataclass
class BatchResult:
    high: int
    entries: int = 0
    rows_written: int = 0
    rows_deleted: int = 0
    quarantined: int = 0
    oldest_ts: float | None = None
    per_table: Counter[str] = field(default_factory=Counter)
    ops: Counter[tuple[str, str]] = field(default_factory=Counter)  # (table, op) -> entries
    # table -> (column, its type, why): a value did not fit a type the census chose; the table
    # is planned and copied again after the batch (its rows wait in quarantine until then)
    replan: dict[str, tuple[str, str, str]] = field(default_factory=dict)


class Applier:
    """Applies log entries to Postgres inside the caller's transaction: for each table, deletes
    every logged key, removes rows that clash on a unique key, and inserts the rows as SQLite
    holds them now (read in the batch's read transaction), converted by the table's plan."""
    def __init__(self, pg: asyncpg.Connection, tables: dict[str, TableTarget], *,
                 track_dirty: bool = False, quarantined: dict[str, bool] | None = None):
        self.pg = pg
        self.tables = tables
        self.track_dirty = track_dirty  # after a full verification: remember what changes
        self.quarantined = quarantined if quarantined is not None else {}

    async def apply(self, txn: ReadTxn, cursor: int, result: BatchResult | None = None) -> BatchResult:
        """Apply entries (cursor, txn.high] page by page while the read transaction stays open
        (large catch-ups); the caller commits and advances the cursor."""
        result = result or BatchResult(high=txn.high)
        async for entries in txn.entries(cursor):
            page = await self._read_page(txn, entries, result)
            await self.write_page(page, result, txn.rows)
        return result

    async def read_all(self, txn: ReadTxn, cursor: int, result: BatchResult) -> list[Page]:
        """Everything the batch needs from SQLite, so the read transaction can end before any
        Postgres work (a long read would pin the WAL and starve checkpoints)."""
        return [await self._read_page(txn, entries, result) async for entries in txn.entries(cursor)]

    async def _read_page(self, txn: ReadTxn, entries: list[tuple[Any, ...]], result: BatchResult) -> Page:
        if result.oldest_ts is None:
            result.oldest_ts = entries[0][1]
        keys: dict[str, dict[tuple[Any, ...], None]] = defaultdict(dict)
        for seq, _ts, tbl, op, *k in entries:
            target = self.tables.get(tbl)
            if target is None:
                raise DriftError(
                    f"the change log names table {tbl!r}, which is not replicated (renamed?)"
                )
            result.entries += 1
            if not target.streaming or seq <= target.snapshot_seq:
                continue
            width = len(target.plan.key_columns) or 1
            keys[tbl][tuple(k[:width])] = None
            result.ops[(tbl, op)] += 1
        page = Page(keys={t: list(k) for t, k in keys.items()}, rows={}, last_seq=entries[-1][0])
        for tbl, tkeys in page.keys.items():
            page.rows[tbl] = await txn.rows(self.tables[tbl].plan, tkeys)
        return page

    async def write_one_statement(self, page: Page, result: BatchResult, expected: int,
                                  high: int) -> bool | None:
        """The common batch as one statement, one round trip, its own transaction: for every
        table the same delete-then-insert as ``write_page`` (the insert waits for the delete to
        finish), the cursor moved from ``expected`` to ``high``, the changes counted and, while
        tracked, marked dirty; all gated on ``state.batch_guard_cte``. None when the page needs
        more than that (a value to quarantine, a table with quarantined rows, an ORM-made
        table): nothing was sent. False when the guard refused (the cursor moved, a cutover, a
        unique key to reconcile): nothing changed. Either way the caller takes the long path."""
        prepared = []
        for name in sorted(page.keys):
            target = self.tables[name]
            if not _one_statement_fits(target, self.quarantined.get(name, False)):
                return None
            good, bad = convert_rows(target.plan, page.rows[name].rows, safe=page.rows[name].safe)
            if bad:
                return None
            prepared.append((target, page.keys[name], good))
        params = _Params()
        guard = (params.add(expected, "bigint"), params.add(high, "bigint"))
        ctes: list[str] = []
        clashes: list[str] = []
        counts: list[str] = []
        for n, (target, keys, good) in enumerate(prepared):
            plan = target.plan
            table = qualified(target.schema, plan.pg_name)
            mine = self._key_in(plan, self._pg_keys(plan, keys), params)
            clashes += self._no_clash(target, mine, good, params)
            gate = "EXISTS (SELECT FROM st)"
            if mine:
                ctes.append(f"d{n} AS (DELETE FROM {table} t WHERE {mine} AND {gate} RETURNING 1)")
                counts.append(f"(SELECT count(*) FROM d{n})")
                gate += f" AND (SELECT count(*) FROM d{n}) >= 0"  # the delete runs to its end first
            else:
                counts.append("0")
            if good:
                cols_w = write_columns(plan)
                types_w = _write_types(plan)
                project = write_projection(plan)
                rows = good if project is None else [project(r) for r in good]
                source = params.unnest(rows, types_w)
                ctes.append(f"i{n} AS (INSERT INTO {table} ({', '.join(qi(c) for c in cols_w)}) "
                            f"SELECT * FROM {source} WHERE {gate} RETURNING 1)")
            ctes.append(state.batch_dirty_cte(
                f"k{n}", params.add(plan.name, "text"),
                params.add([json.dumps(key_to_json(k)) for k in keys], "jsonb[]"),
                params.add(page.last_seq, "bigint")))
        ctes.insert(0, state.batch_guard_cte(*guard, also=clashes))
        ctes.append(state.batch_counts_cte(
            params.add([t.plan.name for t, _k, _g in prepared], "text[]"),
            params.add([len(k) for _t, k, _g in prepared], "bigint[]")))
        row = await self.pg.fetchrow(
            "WITH " + ",\n".join(ctes) + "\nSELECT (SELECT count(*) FROM st) AS applied"
            + "".join(f", {c} AS d{n}" for n, c in enumerate(counts)), *params.values)
        if row is None or not row["applied"]:
            return False
        for n, (target, keys, good) in enumerate(prepared):
            result.rows_written += len(good)
            result.rows_deleted += int(row[f"d{n}"])
            result.per_table[target.plan.name] += len(keys)
        return True

    def _no_clash(self, target: TableTarget, mine: str, good: list[tuple[Any, ...]],
                  params: _Params) -> list[str]:
        """Conditions for the one statement: no Postgres row outside the batch's keys (``mine``,
        a condition on ``t``) holds a unique value an incoming row brings (``_reconcile_unique``
        would delete it and re-read it from SQLite; when one does, the statement changes nothing
        and the long way runs)."""
        table = qualified(target.schema, target.plan.pg_name)
        return [f"NOT EXISTS (SELECT FROM {table} t, {params.unnest(rows, [c.pg_type for c in cols])} "
                f"AS d({_names(len(cols))}) WHERE {cond}{f' AND NOT ({mine})' if mine else ''})"
                for cols, cond, rows in _unique_probes(target.plan, good)]

    def _key_in(self, plan: TablePlan, pg_keys: list[tuple[Any, ...]], params: _Params) -> str:
        """A condition on the table's row ``t``: its key is one of ``pg_keys`` (empty: none is)."""
        if not pg_keys:
            return ""
        cols, types = plan.pg_key_columns, self._key_types(plan)
        if len(cols) == 1:
            keys = params.add([k[0] for k in pg_keys], types[0] + "[]")
            return f"t.{qi(cols[0])} = ANY({keys})"
        match = " AND ".join(f"t.{qi(c)} = k.c{i}" for i, c in enumerate(cols))
        return (f"EXISTS (SELECT FROM {params.unnest(pg_keys, types)} AS k({_names(len(cols))}) "
                f"WHERE {match})")

    async def write_page(self, page: Page, result: BatchResult, reread: RowReader) -> None:
        for tbl, tkeys in page.keys.items():
            await self._apply_table(self.tables[tbl], tkeys, page.rows[tbl], result, reread)
            if self.track_dirty:
                await state.mark_dirty(self.pg, tbl, [key_to_json(k) for k in tkeys], page.last_seq)

    async def _apply_table(
        self, target: TableTarget, keys: list[tuple[Any, ...]], raw: RowSet, result: BatchResult,
        reread: RowReader,
    ) -> None:
        plan = target.plan
        good, bad = convert_rows(plan, raw.rows, safe=raw.safe)
        for _k, _r, column, reason, key in bad:
            col = plan.column(column)
            if not col.pinned and not no_type_holds(reason):
                result.replan.setdefault(plan.name, (column, col.pg_type, f"key {key!r}: {reason}"))
            elif col.policy == "fail":
                raise BadValueError(
                    f"table {plan.name!r}, column {column!r}, key {key!r}: {reason} "
                    "(on_bad_value = \"fail\")"
                )
        deleted = await self._delete_keys(target, keys)
        resync = await self._reconcile_unique(target, good)
        if resync:
            again = await reread(plan, resync)
            extra_good, extra_bad = convert_rows(plan, again.rows, safe=again.safe)
            if extra_good:
                _log.warning(
                    "unique_clash_resync", table=plan.name, rows=len(extra_good),
                    why="a Postgres row clashed on a unique key but still exists in SQLite",
                )
            good += extra_good
            bad += extra_bad
        bad += await self._insert(target, good)
        if bad:
            await state.quarantine_put(self.pg, plan.name, [b[:4] for b in bad])
        if bad or self.quarantined.get(plan.name):
            # Rows fixed (or deleted) at the source leave the quarantine.
            bad_keys = {tuple(map(repr, b[4])) for b in bad}
            cleared = [key_to_json(k) for k in keys if tuple(map(repr, k)) not in bad_keys]
            await state.quarantine_clear(self.pg, plan.name, cleared)
            self.quarantined[plan.name] = True
        if bad:
            metrics.QUARANTINED.labels(plan.name).inc(len(bad))
            _log.warning(
                "rows_quarantined", table=plan.name, rows=len(bad),
                sample_key=bad[0][4], column=bad[0][2], reason=bad[0][3],
            )
        result.rows_written += len(good)
        result.rows_deleted += deleted
        result.quarantined += len(bad)
        result.per_table[plan.name] += len(keys)

    def _pg_keys(self, plan: TablePlan, keys: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Log keys (SQLite values) as Postgres values; a key that cannot convert is not there."""
        if plan.rowid_keyed:
            return [k for k in keys if type(k[0]) is int]
        if len(plan.key_plans) == 1 and plan.key_plans[0].conv == "bigint":
            return [k for k in keys if type(k[0]) is int]  # the common case, without closures
        convs = [converter(c) for c in plan.key_plans]
        out = []
        for key in keys:
            try:
                out.append(tuple(fn(v) for fn, v in zip(convs, key, strict=True)))
            except BadValue:
                continue
        return out

    def _key_types(self, plan: TablePlan) -> list[str]:
        if plan.rowid_keyed:
            return ["bigint"]
        return [c.pg_type for c in plan.key_plans]

    async def _delete_keys(self, target: TableTarget, keys: Sequence[tuple[Any, ...]]) -> int:
        params = _Params()
        mine = self._key_in(target.plan, self._pg_keys(target.plan, keys), params)
        if not mine:
            return 0
        status = await self.pg.execute(
            f"DELETE FROM {qualified(target.schema, target.plan.pg_name)} t WHERE {mine}",
            *params.values)
        return int(status.split()[-1])

    async def _reconcile_unique(self, target: TableTarget, good: list[tuple[Any, ...]]
                                ) -> list[tuple[Any, ...]]:
        """Delete Postgres rows that clash with incoming rows on a unique key (REPLACE deletes);
        returns their keys (as SQLite values) so they can be re-read."""
        plan = target.plan
        if not good:
            return []
        table = qualified(target.schema, plan.pg_name)
        resync: list[tuple[Any, ...]] = []
        for cols, cond, rows in _unique_probes(plan, good):
            returning = ", ".join(f"t.{qi(c)}" for c in plan.pg_key_columns)
            args = [list(col) for col in zip(*rows, strict=True)]
            found = await self.pg.fetch(
                f"DELETE FROM {table} t USING {_unnest([c.pg_type for c in cols])} "
                f"AS d({_names(len(cols))}) WHERE {cond} RETURNING {returning}",
                *args,
            )
            resync += [tuple(to_sqlite_value(v) for v in r) for r in found]
        return resync

    async def _insert(self, target: TableTarget, good: list[tuple[Any, ...]]) -> list[Any]:
        """Insert the converted rows. Into a table the ORM made, rows its own constraints refuse
        are found one by one and returned for quarantine (and for on_bad_value = "fail")."""
        if not good:
            return []
        if not target.plan.existing:
            await self._insert_all(target, good)
            return []
        try:
            async with self.pg.transaction():
                await self._insert_all(target, good)
            return []
        except existing.REFUSED_BY_TARGET:
            plan = target.plan
            rows = good if (project := write_projection(plan)) is None else [project(r) for r in good]
            refused = await existing.insert_each(self.pg, plan, target.schema,
                                                 write_columns(plan), rows)
            for _k, _r, column, reason, key in refused:
                if plan.column(column).policy == "fail":
                    raise BadValueError(f"table {plan.name!r}, key {key!r}: {reason} "
                                        "(on_bad_value = \"fail\")") from None
            return refused

    async def _insert_all(self, target: TableTarget, good: list[tuple[Any, ...]]) -> None:
        plan = target.plan
        cols = write_columns(plan)
        types = _write_types(plan)
        project = write_projection(plan)
        if project is not None:
            good = [project(r) for r in good]
        if len(good) >= COPY_THRESHOLD:
            await self.pg.copy_records_to_table(
                plan.pg_name, schema_name=target.schema, columns=cols, records=good
            )
            return
        args = [list(col) for col in zip(*good, strict=True)]
        await self.pg.execute(
            f"INSERT INTO {qualified(target.schema, plan.pg_name)} "
            f"({', '.join(qi(c) for c in cols)}) SELECT * FROM {_unnest(types)}",
            *args,
        )


def _write_types(plan: TablePlan) -> list[str]:
    """The Postgres types of ``write_columns(plan)``, in order."""
    return [c.pg_type for c in plan.columns if c.written] + (["bigint"] if plan.rowid_keyed else [])


def _unique_probes(plan: TablePlan, good: list[tuple[Any, ...]]
                   ) -> list[tuple[list[ColumnPlan], str, list[tuple[Any, ...]]]]:
    """For each unique key besides the primary one: its columns, the condition that a Postgres
    row ``t`` matches an incoming row ``d`` (c0, c1, ...) on it as SQLite's index would, and the
    incoming rows' values for it (rows with a NULL in it clash with nothing). Partial unique
    indexes are matched without their WHERE and expression ones not at all: over-matching is
    safe (the rows are re-read)."""
    index = {c.name: i for i, c in enumerate(plan.columns)}
    out = []
    for idx in plan.indexes:
        if not idx.unique or idx.primary or any(c is None for c in idx.columns):
            continue
        pos = [index[c] for c in idx.columns if c is not None]
        cols = [plan.columns[p] for p in pos]
        rows = [r for r in (tuple(g[p] for p in pos) for g in good) if None not in r]
        if rows:
            cond = " AND ".join(_match(f"t.{qi(c.pg_name)}", f"d.c{i}", coll, c.pg_type)
                                for i, (c, coll) in enumerate(zip(cols, idx.collations,
                                                                  strict=False)))
            out.append((cols, cond, rows))
    return out


def _one_statement_fits(target: TableTarget, quarantined: bool) -> bool:
    """Whether a table's part of a batch can go into the one statement: not into an ORM-made
    table (rows its constraints refuse are found one by one), no rows waiting in quarantine (a
    fixed row must leave it)."""
    return not target.plan.existing and not quarantined


class _Params:
    """Numbered, typed placeholders for one statement."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def add(self, value: Any, pg_type: str) -> str:
        self.values.append(value)
        return f"${len(self.values)}::{pg_type}"

    def unnest(self, rows: Sequence[tuple[Any, ...]], types: Sequence[str]) -> str:
        """``rows`` as a set of rows: one array parameter per column."""
        return "unnest(" + ", ".join(self.add(list(col), t + "[]") for col, t in
                                     zip(zip(*rows, strict=True), types, strict=True)) + ")"


def _unnest(types: Sequence[str]) -> str:
    return "unnest(" + ", ".join(f"${i + 1}::{t}[]" for i, t in enumerate(types)) + ")"


def _names(n: int) -> str:
    return ", ".join(f"c{i}" for i in range(n))


def _match(left: str, right: str, collation: str, pg_type: str) -> str:
    """Equality as SQLite's unique index sees it; over-matching is safe (rows are re-read)."""
    if pg_type == "text" and collation == "NOCASE":
        return f"lower({left}) = lower({right})"
    if pg_type == "text" and collation == "RTRIM":
        return f"rtrim({left}, ' ') = rtrim({right}, ' ')"
    return f"{left} = {right}"


def record_metrics(result: BatchResult, seconds: float) -> None:
    metrics.BATCH_SECONDS.observe(seconds)
    metrics.BATCH_CHANGES.observe(result.entries)
    for (tbl, op), n in result.ops.items():
        if op in ("I", "U", "D"):
            metrics.CHANGES_APPLIED.labels(tbl, {"I": "insert", "U": "update", "D": "delete"}[op]).inc(n)
    for tbl, n in result.per_table.items():
        metrics.ROWS_WRITTEN.labels(tbl).inc(n)
    metrics.LAST_APPLY.set(time.time())
    metrics.CURSOR.set(result.high)
