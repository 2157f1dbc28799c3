"""``replicator status``: where replication stands, from both sides, daemon running or not."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from . import capture, pidfile, state
from .config import Config
from .dsn import TargetDSN
from .errors import ReplicatorError
from .quoting import qualified
from .source import open_source
from .target import connect


def _pid(cfg: Config) -> int | None:
    pid = pidfile.holder(cfg.state_path)
    return None if pid is None else int(pid) if pid.isdigit() else -1


def _source(cfg: Config, cursor: int) -> dict[str, Any]:
    conn = open_source(cfg.source, readonly=True, busy_timeout_ms=cfg.busy_timeout_ms)
    try:
        conn.execute("BEGIN")
        out: dict[str, Any] = {"path": str(cfg.source), "capture_installed": capture.installed(conn)}
        out["journal_mode"] = conn.execute("PRAGMA journal_mode").fetchone()[0]
        wal = Path(str(cfg.source) + "-wal")
        out["wal_bytes"] = wal.stat().st_size if wal.exists() else 0
        if out["capture_installed"]:
            out["fenced"] = capture.fenced(conn)
            polled = capture.position(conn, cursor)
            out["log_rows"] = polled.rows
            out["log_high_water"] = polled.high
            out["backlog_changes"] = polled.backlog
            out["lag_seconds"] = round(polled.lag, 3)
            meta = capture.read_meta(conn)
            out["source_id"] = meta.get("source_id")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return out


async def gather(cfg: Config, target: TargetDSN) -> dict[str, Any]:
    open_source(cfg.source, readonly=True).close()  # a missing or foreign file fails here
    data: dict[str, Any] = {"state": "new", "backlog_changes": 0, "lag_seconds": 0.0,
                            "target": target.masked, "daemon_pid": _pid(cfg)}
    cursor = 0
    try:
        pg = await connect(target, timeout=cfg.connect_timeout, tls_verify=cfg.tls_verify,
                           retry_for=5)
    except ReplicatorError as exc:
        # What only the target knows (state, cursor, hence backlog and lag) is unknown, not zero.
        data.update(target_error=str(exc), state="unknown", backlog_changes=None, lag_seconds=None)
        pg = None
    tables: dict[str, Any] = {}
    if pg is not None:
        try:
            st = await state.load(pg)
            if st is not None:
                cursor = st.cursor
                data.update(state=st.state, mode=st.mode, cursor=st.cursor, error=st.error,
                            source_path=st.source_path, info=st.info)
            if st is not None and st.state == "fallback":
                backlog, lag = await state.rlog_position(pg)
                data["fallback"] = {
                    "reverse_backlog_changes": backlog, "reverse_lag_seconds": round(lag, 3),
                    "rows_moved_back": int(st.info.get("reverse_rows", 0)),
                    "last_reverse_apply_at": st.info.get("reverse_applied_at")}
            quarantined = await state.quarantine_count(pg)
            stats = await _row_counts(pg, cfg.target_schema)
            for name, t in (await state.tables(pg)).items():
                rows, exact = stats.get(t.pg_name, (None, False))
                tables[name] = {
                    # in the fallback window a table follows Postgres, not the SQLite file
                    "status": "fallback" if data["state"] == "fallback" and t.status == "streaming"
                    else t.status,
                    "pg_name": t.pg_name,
                    "rows_copied": t.rows_copied,
                    "rows": rows,
                    "rows_exact": exact,
                    "changes_applied": t.changes_applied,
                    "quarantined": quarantined.get(name, 0),
                    "last_change_at": t.last_change_at.isoformat() if t.last_change_at else None,
                }
            data["quarantined_rows"] = sum(quarantined.values())
        finally:
            await pg.close()
    with contextlib.suppress(ReplicatorError):
        src = _source(cfg, cursor)
        data["source"] = src
        if "backlog_changes" in src and data["state"] in ("streaming", "cutover", "error"):
            data["backlog_changes"] = src["backlog_changes"]
            data["lag_seconds"] = src["lag_seconds"]
    data["tables"] = tables
    back = data.get("fallback")
    data["ready"] = (
        data["state"] in ("streaming", "fallback") and not data.get("error")
        and bool(data["daemon_pid"]) and "target_error" not in data
        and (back["reverse_lag_seconds"] if back else data["lag_seconds"]) <= cfg.ready_max_lag
    )
    src = data.get("source", {})
    if back and not data["daemon_pid"]:
        data["unattended"] = (
            f"the fallback window is open but no daemon is running: the application's changes on "
            f"Postgres ({back['reverse_backlog_changes']} waiting) do not reach {cfg.source}. "
            f"Start `replicator run --source {cfg.source}`; `replicator rollback` drains them too")
    elif not data["daemon_pid"] and src.get("capture_installed") and data["state"] not in (
            "done", "fallback"):
        waiting = (f"{src.get('log_rows', 0)} entries in it; how many are applied is known only "
                   "to the target" if "target_error" in data
                   else f"{src.get('backlog_changes', 0)} changes waiting")
        data["unattended"] = (
            f"no daemon is running, but capture is installed in {cfg.source}: the change log "
            f"grows ({waiting}) with nothing applying it. "
            f"Start `replicator run --source {cfg.source}`, or remove capture with "
            f"`replicator uninstall --source {cfg.source}`")
    return data


EXACT_COUNT_BELOW = 64 << 20  # bytes of table data: below this, count(*) is cheap


async def _row_counts(pg, schema: str) -> dict[str, tuple[int, bool]]:
    """Rows per target table: exact (count(*)) for tables under 64 MB, the planner's estimate
    (shown with ~) for larger ones. pg_stat's n_live_tup is not used: right after a COPY and an
    ANALYZE in one transaction it reads twice the real count."""
    out: dict[str, tuple[int, bool]] = {}
    for name, estimate, size in await pg.fetch(
            "SELECT c.relname, c.reltuples::bigint, pg_relation_size(c.oid) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')", schema):
        if size < EXACT_COUNT_BELOW or estimate < 0:
            out[name] = (await pg.fetchval(f"SELECT count(*) FROM {qualified(schema, name)}"), True)
        else:
            out[name] = (int(estimate), False)
    return out


def render(data: dict[str, Any]) -> str:
    lines = [
        f"state:      {data['state']}" + (f"  (error: {data['error']})" if data.get("error") else "")
        + ("  (the target could not be read)" if "target_error" in data else ""),
        f"target:     {data['target']}",
        "daemon:     " + (f"running, pid {data['daemon_pid']}" if data.get("daemon_pid") else "not running"),
    ]
    if data["lag_seconds"] is None:  # the target could not be read
        lines.append("lag:        unknown (the target could not be read)")
    else:
        lines += [f"lag:        {data['lag_seconds']:.3f} s",
                  f"backlog:    {data['backlog_changes']} changes"]
    back = data.get("fallback")
    if back:
        lines.append(f"fallback:   Postgres -> SQLite, lag {back['reverse_lag_seconds']:.3f} s, "
                     f"backlog {back['reverse_backlog_changes']} changes, "
                     f"{back['rows_moved_back']} rows moved back so far "
                     "(`replicator rollback` or `replicator finish` ends the window)")
    if "target_error" in data:
        lines.append(f"target error: {data['target_error']}")
    if data.get("unattended"):
        lines.append(f"attention:  {data['unattended']}")
    src = data.get("source", {})
    if src:
        lines.append(
            f"source:     {src['path']} (journal {src['journal_mode']}, capture "
            f"{'installed' if src['capture_installed'] else 'not installed'}"
            f"{', FENCED' if src.get('fenced') else ''})"
        )
    if data.get("quarantined_rows"):
        lines.append(f"quarantine: {data['quarantined_rows']} rows (see _replicator.quarantine)")
    if data["tables"]:
        lines.append("")
        lines.append(f"{'table':30} {'status':10} {'rows':>12} {'changes':>10} {'quar.':>6}  last change")
        for name, t in data["tables"].items():
            rows = t["rows"] if t["rows"] is not None else t["rows_copied"]
            rows = f"{rows}" if t["rows_exact"] or t["rows"] is None else f"~{rows}"
            lines.append(
                f"{name[:30]:30} {t['status']:10} {rows:>12} {t['changes_applied']:>10} "
                f"{t['quarantined']:>6}  {t.get('last_change_at') or '-'}"
            )
    return "\n".join(lines)
