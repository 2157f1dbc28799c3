"""While replication runs, a row can differ only because its change is not applied yet: the
differing keys are re-checked after the target's cursor has passed the log position seen at the
end of the pass, up to a few times. Only differences that persist are reported."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import asyncpg

from .. import capture, state
from ..config import Config
from ..convert import (
    key_to_json,
)
from ..plans import TablePlan
from .common import (
    Side,
    TableReport,
    has_rowid_column,
    judge,
    pg_rows,
    quarantined_keys,
    sqlite_rows_by_key,
)


async def recheck(pg: asyncpg.Connection, src: sqlite3.Connection, cfg: Config, reports: list[TableReport],
                  known: dict[str, state.TableState], rounds: int) -> None:
    """Re-compare suspect keys once the target has applied what SQLite held at the pass's end."""
    for attempt in range(rounds):
        suspects = [r for r in reports if r.suspects and not r.ok]
        if not suspects:
            return
        if capture.installed(src):
            await _wait_for_cursor(pg, capture.log_high_water(src), timeout=10 + 10 * attempt)
        for rep in suspects:
            plan = known[rep.table].plan
            if plan.rowid_keyed and not await has_rowid_column(pg, cfg.target_schema, plan):
                continue
            await recheck_table(pg, src, plan, cfg.target_schema, rep)


async def _wait_for_cursor(pg: asyncpg.Connection, goal: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await state.load(pg)
        if st is None or st.cursor >= goal or st.state not in ("streaming", "cutover"):
            return
        await asyncio.sleep(0.2)


async def recheck_table(pg: asyncpg.Connection, src: sqlite3.Connection, plan: TablePlan, schema: str,
                        rep: TableReport) -> None:
    side = Side(plan, schema)
    keys = [tuple(k) for kind in ("missing", "extra", "different") for k in rep.suspects.get(kind, [])]
    qkeys = await quarantined_keys(pg, plan.name)
    # Rows the fallback window wrote back in a wider form: quarantined (counted once by the pass),
    # yet present on both sides.
    both = await state.quarantine_keys(pg, plan.name, reverse=True)
    fresh = TableReport(plan.name, sampled=rep.sampled)
    sqlite_rows = await asyncio.to_thread(sqlite_rows_by_key, src, side, keys)
    found = await pg_rows(pg, side, keys) if keys else {}
    for key in keys:
        srow = sqlite_rows.get(key)
        prow = found.get(key)
        written_back = json.dumps(key_to_json(list(key))) in both
        if written_back and prow is not None and srow is not None:
            # A value SQLite could not hold exactly went back by the stated rule, reported with
            # its row: counted once as quarantined, not as a difference.
            if srow != "bad":
                fresh.quarantined += 1
            continue
        if srow == "bad":
            if prow is None and json.dumps(key_to_json(list(key))) in qkeys:
                fresh.quarantined += 1
            else:
                fresh.note("missing", list(key))
        elif srow is None and prow is None:
            continue  # deleted on both sides
        elif srow is None:
            fresh.note("extra", list(key))
        else:
            judge(fresh, side, key, srow, prow)
    rep.matched += fresh.matched
    rep.quarantined += fresh.quarantined
    for kind in ("missing", "extra", "different"):
        unchecked = getattr(rep, kind) - len(rep.suspects.get(kind, []))
        setattr(rep, kind, getattr(fresh, kind) + unchecked)
        rep.samples[kind] = fresh.samples[kind]
    rep.suspects = fresh.suspects
