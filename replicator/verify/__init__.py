"""``replicator verify``: prove the target holds exactly what SQLite holds, value by value.

Both sides are streamed in key order in chunks (short read transactions, flat memory) and merged.
SQLite rows pass through the same converters as the copy, so "equal" means "what the replicator
would have written". Rows the converters reject must be in ``_replicator.quarantine`` and absent
from the table; they are reported apart and do not count as differences.

While replication runs, a row can differ only because its change is not applied yet: differing
keys are re-checked after the target's cursor has passed the log position seen at the end of
the pass, up to a few times. Only differences that persist are reported.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

from .. import log, metrics, state
from ..config import Config
from ..dsn import TargetDSN
from ..errors import ConfigError, StateError
from ..source import open_source
from ..target import connect
from .changed import dirty_keys, verify_changed
from .common import RATE, TableReport, has_rowid_column
from .merge import merge_all
from .multiset import verify_multiset
from .recheck import recheck
from .sample import verify_sample

_log = log.get("verify")


async def verify(
    cfg: Config, target: TargetDSN, *, tables: list[str] | None = None,
    sample: float | None = None, recheck_rounds: int = 3, changed_only: bool = False,
    rate: float | None = None,
) -> dict[str, Any]:
    """Compare the target with SQLite. ``changed_only``: only the keys changed since the last
    full verification (plus row counts of every table). ``rate``: at most this many rows per
    second (background verification)."""
    if sample is not None and not 0 < sample <= 1:
        raise ConfigError(f"--sample: expected a fraction in (0, 1], got {sample}")
    RATE.set(rate)
    pg = await connect(target, timeout=cfg.connect_timeout, tls_verify=cfg.tls_verify)
    src = open_source(cfg.source, readonly=True, busy_timeout_ms=cfg.busy_timeout_ms)
    started = time.monotonic()
    try:
        known = await state.tables(pg)
        st = await state.load(pg)
        if not known or st is None:
            raise StateError("verify: the target holds no replicated tables (run `replicator run` "
                             "or `replicator copy` first)")
        names = tables or sorted(known)
        unknown = [n for n in names if n not in known]
        if unknown:
            raise StateError(f"verify: not replicated: {', '.join(unknown)}")
        by_name: dict[str, TableReport] = {}
        dirty = await dirty_keys(pg) if changed_only else {}
        merge = []
        for name in names:
            plan = known[name].plan
            if changed_only:
                rep = await verify_changed(pg, src, plan, cfg.target_schema, dirty.get(name, []))
            elif plan.rowid_keyed and not await has_rowid_column(pg, cfg.target_schema, plan):
                rep = await verify_multiset(pg, src, plan, cfg.target_schema)
            elif sample:
                rep = await verify_sample(pg, src, plan, cfg.target_schema, sample)
            else:
                merge.append(known[name])
                continue
            by_name[name] = rep
        by_name.update(await merge_all(cfg, target, pg, src, merge))
        reports = [by_name[n] for n in names]
        await recheck(pg, src, cfg, reports, known, recheck_rounds)
        rows = sum(r.matched + r.missing + r.different + r.quarantined for r in reports)
        seconds = time.monotonic() - started
        report: dict[str, Any] = {
            "ok": all(r.ok for r in reports),
            "mode": "changed since the last full verification, plus row counts" if changed_only
            else "sample" if sample else "full",
            "tables": [r.to_json() for r in reports],
            "rows": rows,
            "quarantined": sum(r.quarantined for r in reports),
            "seconds": round(seconds, 3),
            "rows_per_s": round(rows / seconds) if seconds else 0,
            "sample": sample,
            "state": st.state,
        }
        metrics.VERIFY_ROWS.inc(rows)
        for r in reports:
            if not r.ok:
                metrics.VERIFY_MISMATCHES.labels(r.table).inc(r.missing + r.extra + r.different)
        full = sample is None and tables is None and not changed_only
        if full:
            await _record_full(pg, report["ok"], rows, st.cursor)
        return report
    finally:
        src.close()
        await pg.close()


async def _record_full(pg: asyncpg.Connection, ok: bool, rows: int, cursor: int) -> None:
    """A full pass covers every change up to the cursor it started at: forget those as dirty,
    and start tracking what changes from now on (the applier does, once this is recorded)."""
    async with pg.transaction():
        if ok:
            await state.forget_dirty(pg, cursor)
        await state.merge_info(pg, last_verify={"at": time.time(), "ok": ok, "rows": rows,
                                                "full": ok, "cursor": cursor})


def render(report: dict[str, Any]) -> str:
    lines = []
    for t in report["tables"]:
        mark = "ok  " if t["ok"] else "DIFF"
        extra = f", {t['quarantined']} quarantined" if t["quarantined"] else ""
        lines.append(
            f"{mark} {t['table']:30} matched {t['matched']:>9}  missing {t['missing']:>5}  "
            f"extra {t['extra']:>5}  different {t['different']:>5}{extra}"
        )
        if not t["ok"]:
            for kind in ("missing", "extra", "different"):
                for s in t["samples"][kind]:
                    where = f"{kind}: key {s['key']}"
                    if kind == "different" and "sqlite" in s:
                        where += (f", column {s['column']}: SQLite {s['sqlite']}, "
                                  f"Postgres {s['postgres']}")
                    lines.append(f"       {where}")
    verdict = "everything matches" if report["ok"] else "DIFFERENCES FOUND"
    lines.append(
        f"\n{verdict}: {report['rows']} rows in {report['seconds']}s "
        f"({report['rows_per_s']} rows/s){' (sampled)' if report['sample'] else ''}"
    )
    return "\n".join(lines)
