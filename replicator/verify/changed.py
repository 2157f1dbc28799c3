"""Only what changed since the last full verification (the keys the applier recorded as dirty),
plus the row counts of both sides: what cutover checks inside its write freeze."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import asyncpg

from .. import state
from ..convert import (
    BadValue,
    converter,
    from_typed_json,
)
from ..plans import TablePlan
from ..quoting import qi, qualified
from .common import TableReport
from .recheck import recheck_table


async def dirty_keys(pg: asyncpg.Connection) -> dict[str, list[Any]]:
    return {table: [[from_typed_json(v) for v in key] for key in keys]
            for table, keys in (await state.dirty_keys(pg)).items()}


async def verify_changed(pg: asyncpg.Connection, src: sqlite3.Connection, plan: TablePlan, schema: str,
                         raw_keys: list[Any]) -> TableReport:
    """The keys changed since the last full pass, row by row, and the row counts of both sides."""
    rep = TableReport(plan.name)
    t0 = time.monotonic()
    keys = []
    convs = None if plan.rowid_keyed else [converter(c) for c in plan.key_plans]
    for raw in raw_keys:
        try:
            keys.append(tuple(raw) if convs is None else tuple(f(v) for f, v in zip(convs, raw, strict=True)))
        except BadValue:
            rep.quarantined += 1  # a key no column can hold: its row is in quarantine
    rep.suspects = {"different": keys}
    rep.different = len(keys)
    await recheck_table(pg, src, plan, schema, rep)
    src_count = src.execute(f"SELECT count(*) FROM {qi(plan.name)}").fetchone()[0]
    pg_count = await pg.fetchval(f"SELECT count(*) FROM {qualified(schema, plan.pg_name)}")
    q_count = await state.quarantine_rows(pg, plan.name)
    if src_count != pg_count + q_count:
        kind = "missing" if src_count > pg_count + q_count else "extra"
        rep.note(kind, [], detail=f"row counts: SQLite {src_count}, Postgres {pg_count} + "
                 f"{q_count} quarantined")
    rep.seconds = time.monotonic() - t0
    return rep
