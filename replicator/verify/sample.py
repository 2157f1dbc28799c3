"""A sample: a random fraction of each table's keys, compared row by row."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time

import asyncpg

from .. import state
from ..plans import TablePlan
from ..quoting import qi, qualified
from .common import Side, TableReport, compare_keys, convert_chunk, quarantined_keys


async def verify_sample(pg: asyncpg.Connection, src: sqlite3.Connection, plan: TablePlan, schema: str,
                        fraction: float) -> TableReport:
    """Check a random fraction of SQLite rows by key, plus the row counts of both sides."""
    side = Side(plan, schema)
    rep = TableReport(plan.name, sampled=True)
    t0 = time.monotonic()
    rng = random.Random()
    qkeys = await quarantined_keys(pg, plan.name)
    both = await state.quarantine_keys(pg, plan.name, reverse=True)  # on both sides
    absent = 0  # quarantined rows Postgres does not hold
    after = None
    while True:
        good, bad, after_new = await asyncio.to_thread(convert_chunk, src, side, after, False)
        if after_new is None:
            break
        after = after_new
        picked = [g for g in good if rng.random() < fraction]
        held = [json.dumps(b[0]) for b in bad if json.dumps(b[0]) in qkeys]
        rep.quarantined += len(held)
        absent += sum(1 for k in held if k not in both)
        await compare_keys(pg, side, rep, picked)
    src_count = src.execute(f"SELECT count(*) FROM {qi(plan.name)}").fetchone()[0]
    pg_count = await pg.fetchval(f"SELECT count(*) FROM {qualified(schema, plan.pg_name)}")
    if pg_count > src_count - absent:
        rep.extra += pg_count - (src_count - absent)
    rep.seconds = time.monotonic() - t0
    return rep
