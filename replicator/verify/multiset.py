"""Tables keyed by rowid whose helper column is gone (after cutover): compared as multisets of
rows."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter

import asyncpg

from ..convert import (
    convert_rows,
    select_list,
)
from ..plans import TablePlan
from ..quoting import qi, qualified
from .common import TableReport


async def verify_multiset(pg: asyncpg.Connection, src: sqlite3.Connection, plan: TablePlan,
                          schema: str) -> TableReport:
    """Keyless tables after cutover (no rowid helper column): compare the multisets of rows."""
    rep = TableReport(plan.name)
    t0 = time.monotonic()
    conn = src
    raw = await asyncio.to_thread(
        lambda: conn.execute(f"SELECT NULL, {select_list(plan, True)} FROM {qi(plan.name)}").fetchall()
    )
    good, bad = convert_rows(plan, raw, safe=True)
    rep.quarantined = len(bad)
    want = Counter(tuple(g[: len(plan.columns)]) for g in good)
    cols = ", ".join(qi(c.pg_name) for c in plan.columns)
    have = Counter(tuple(r) for r in await pg.fetch(
        f"SELECT {cols} FROM {qualified(schema, plan.pg_name)}"))
    for row, n in (want - have).items():
        for _ in range(n):
            rep.note("missing", list(row)[:3])
    for row, n in (have - want).items():
        for _ in range(n):
            rep.note("extra", list(row)[:3])
    rep.matched = sum((want & have).values())
    rep.seconds = time.monotonic() - t0
    return rep
