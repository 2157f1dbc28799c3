"""``replicator report``: the migration report a team keeps.

What moved (tables, rows, bytes), the type mapping and every conversion, quarantined rows, the
schema before and after, verification, timings (snapshot, catch-up, write freeze), how to roll
this migration back, and what went wrong in this run. One data structure, three renderings.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from . import __version__, ddl, state
from .config import Config
from .convert import from_typed_json
from .dsn import TargetDSN
from .errors import StateError
from .quoting import qualified
from .report_html import (
    REPLAY_HEAD,
    freeze_breakdown,
    render_html,
    replay_counts,
    replay_rows,
    security_rows,
)
from .source import inspect, open_source
from .target import connect

_HINTS = {
    "drift": "A schema change in SQLite that the daemon does not follow (a dropped or renamed "
             "table). Undo it, or uninstall and start the migration again.",
    "target": "Postgres was unreachable or dropped the connection (Neon suspends idle computes "
              "and restarts for updates). The daemon retries with backoff; check `doctor`.",
    "source": "The SQLite file changed under the daemon (replaced, restored, log dropped).",
    "bad_value": "A value no Postgres column can hold exactly, with on_bad_value = \"fail\". Fix "
                 "the row in SQLite or switch the column to quarantine.",
}


async def gather(cfg: Config, target: TargetDSN) -> dict[str, Any]:
    pg = await connect(target, timeout=cfg.connect_timeout, tls_verify=cfg.tls_verify)
    try:
        st = await state.load(pg)
        if st is None:
            raise StateError(f"report: {target.masked} holds no replication to report on; run "
                             f"`replicator run` (or `replicator copy`) for {cfg.source} first")
        tables = await state.tables(pg)
        quarantine = await _quarantine(pg)
        data = {
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "tool": f"replicator {__version__}",
            "source": str(cfg.source),
            "target": target.masked,
            "state": st.state,
            "mode": st.mode,
            "error": st.error,
            "moved": await _moved(pg, cfg, tables),
            "mapping": _mapping(tables),
            "quarantine": quarantine,
            "schema": {"before": _before(cfg, st), "after": _after(cfg, tables),
                       "objects": (st.info.get("cutover") or {}).get("objects")
                       or st.info.get("final_objects") or []},
            "verification": {"last": st.info.get("last_verify"),
                             "at_cutover": (st.info.get("cutover") or {}).get("verification")},
            "timings": _timings(st.info),
            "fallback": _fallback(st.info, quarantine),
            "finished": bool(st.info.get("finished_at")),
            "rollback": _rollback(cfg, st),
            "troubleshooting": await _trouble(pg, st, tables),
            "validation": st.info.get("last_replay"),
            "security": await _security(pg, target),
            "charts": {"samples": await state.samples(pg),
                       "snapshot": [{"table": n, "rows": t.rows_copied,
                                     "seconds": t.copy_seconds} for n, t in tables.items()]},
        }
        data["attention"] = _attention(cfg, st, data, await state.quarantine_summary(pg))
        return data
    finally:
        await pg.close()


async def _moved(pg: asyncpg.Connection, cfg: Config, tables) -> list[dict[str, Any]]:
    out = []
    for name, t in tables.items():
        rel = qualified(cfg.target_schema, t.pg_name)
        row = await pg.fetchrow(f"SELECT count(*), pg_total_relation_size('{rel}') FROM {rel}")
        out.append({"table": name, "pg_table": t.pg_name, "rows": row[0], "bytes": row[1],
                    "copied_at_snapshot": t.rows_copied, "changes_applied": t.changes_applied})
    return out


def _mapping(tables) -> list[dict[str, Any]]:
    return [{"table": name, "column": c.name, "declared": c.declared, "pg_column": c.pg_name,
             "pg_type": c.pg_type, "rule": c.reason, "exact": c.exact,
             "notes": list(c.notes) + list(c.problems)}
            for name, t in tables.items() for c in t.plan.columns]


async def _quarantine(pg: asyncpg.Connection) -> list[dict[str, Any]]:
    return [{**q, "since": q["since"].isoformat(timespec="seconds")}
            for q in await state.quarantine_list(pg, None)]  # raw: typed JSON, lossless


def _before(cfg: Config, st: state.State) -> list[str]:
    """The SQLite schema as it was before the replicator first wrote to the file: read from the
    backup made then (the live file may have changed since), else from the file itself."""
    backup = Path(str(st.info.get("backup") or ""))
    with tempfile.TemporaryDirectory() as tmp:
        path = cfg.source
        if backup.is_file():
            path = Path(tmp) / "before.sqlite"
            with gzip.open(backup, "rb") as packed, open(path, "wb") as out:
                shutil.copyfileobj(packed, out)
        try:
            conn = open_source(path, readonly=True)
        except Exception:  # noqa: BLE001 - the report still renders without the source
            return ["(the SQLite file could not be opened)"]
        try:
            return [o[3] + ";" for o in inspect(conn).objects
                    if o[3] and not o[1].startswith(("sqlite_", "_replicator"))]
        finally:
            conn.close()


def _after(cfg: Config, tables) -> list[str]:
    out = []
    for t in tables.values():
        out.append(ddl.create_table_sql(t.plan, cfg.target_schema))
        out += ddl.default_sql(t.plan, cfg.target_schema)
        out += ddl.snapshot_ddl(t.plan, cfg.target_schema)
        out += ddl.final_ddl(t.plan)
    return out


async def _security(pg: asyncpg.Connection, target: TargetDSN) -> dict[str, Any]:
    """How the replicator reached the target, with which rights, and where secrets appear."""
    role = await pg.fetchrow(
        "SELECT current_user AS name, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
        "FROM pg_roles WHERE rolname = current_user")
    tls = await pg.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    return {
        "target": target.masked,
        "tls": bool(tls),
        "tls_mode": target.sslmode or ("disable (loopback)" if target.loopback
                                       else "verify-full (default)"),
        "role": role["name"] if role else None,
        "superuser": bool(role and role["rolsuper"]),
        "privileges": [k[3:] for k in ("rolcreaterole", "rolcreatedb", "rolbypassrls")
                       if role and role[k]],
        "secrets": "the password is masked (***) in this report, the logs, status, metrics and "
                   "errors; it is read from the DSN or the environment only",
    }


def _attention(cfg: Config, st: state.State, r: dict[str, Any],
               held: list[dict[str, Any]]) -> list[dict[str, str]]:
    """What is left for a human, most urgent first, each with the command or SQL that fixes it."""
    src = cfg.source
    out: list[dict[str, str]] = []
    if st.error:
        out.append({"what": "Replication is in error", "detail": st.error,
                    "fix": f"`replicator status --source {src}`; the daemon's log says why"})
    for q in held:
        if q["reverse"]:  # in Postgres as the application wrote it; SQLite holds the nearest form
            out.append({"what": f"{q['rows']} row(s) of {q['table']}.{q['column']} went back to "
                                "SQLite inexactly", "detail": q["reason"],
                        "fix": "nothing on Postgres, which holds the value the application wrote; "
                               "the form SQLite holds is listed below, and matters only if the "
                               "application goes back to SQLite (then correct those rows there)"})
            continue
        out.append({"what": f"{q['rows']} row(s) of {q['table']}.{q['column']} in quarantine",
                    "detail": q["reason"],
                    "fix": "fix them in SQLite (they leave when changed), or set the column's type "
                           "in the config; their raw values are listed below"})
    for item in (st.info.get("cutover") or {}).get("for_a_human", []):
        if str(item.get("object", "")).startswith("quarantine "):
            continue  # named above, as it stands now
        fix = str(item.get("fix") or "")
        if "then: " in fix and "`" not in fix:  # the statement to run, shown as code
            head, _, sql = fix.partition("then: ")
            fix = f"{head}then: `{sql}`"
        out.append({"what": f"{item.get('object')}: {item.get('status')}",
                    "detail": str(item.get("detail") or ""), "fix": fix})
    last = st.info.get("last_verify") or {}
    if last and not last.get("ok"):
        out.append({"what": "The last verification found differences", "detail": "",
                    "fix": f"`replicator verify --source {src}` names each key and both values"})
    replay = r.get("validation") or {}
    bad = {k: v for k, v in (replay.get("counts") or {}).items()
           if k in ("different", "failed") and v}
    if bad:
        out.append({"what": "Application queries answer differently on Postgres",
                    "detail": ", ".join(f"{v} {k}" for k, v in bad.items()),
                    "fix": "`replicator queries replay` shows each query on both sides"})
    if st.state == "fallback":
        out.append({"what": "The fallback window is open",
                    "detail": "Postgres is the source of truth; its changes flow back to SQLite",
                    "fix": f"`replicator finish --source {src}` when the application is fine on "
                           f"Neon, or `replicator rollback --source {src}`"})
    return out


def _timings(info: dict[str, Any]) -> dict[str, Any]:
    cut = info.get("cutover") or {}
    return {"snapshot_seconds": info.get("snapshot_seconds"),
            "catch_up_seconds": info.get("catch_up_seconds"),
            "freeze_window_ms": cut.get("freeze_window_ms"),
            "freeze_breakdown_ms": cut.get("freeze_breakdown_ms")}


def _fallback(info: dict[str, Any], quarantine: list[dict[str, Any]]) -> list[str]:
    """The fallback window, when one was opened: what flowed back, what went back inexactly,
    rollbacks, the end."""
    cut = info.get("cutover") or {}
    if not (cut.get("fallback_window") or info.get("rollback") or info.get("finished_at")):
        return []
    lines = ["Opened at cutover (`--fallback`): the application's changes on Postgres were applied "
             "back into the SQLite file.",
             "Rows moved back to SQLite: "
             f"{info.get('fallback_rows_moved_back', info.get('reverse_rows', 0))}"]
    inexact = [q for q in quarantine if q["reverse"]]
    if inexact:
        lines.append(f"{len(inexact)} row(s) had a value with no exact SQLite form: written back "
                     "by the stated rule, and listed with the Postgres value under Quarantined "
                     "rows (Postgres holds the value the application wrote)")
    rb = info.get("rollback")
    if rb:
        lines.append(f"Rolled back to SQLite at {_when(info.get('rolled_back_at'))}: write freeze "
                     f"{rb.get('freeze_window_ms')} ms, {rb.get('verification', {}).get('rows')} "
                     "rows verified equal value by value")
    if info.get("finished_at"):
        lines.append(f"Window closed by `replicator finish` at {_when(info['finished_at'])}")
    return lines


def _when(at: Any) -> str:
    if not isinstance(at, (int, float)):
        return "-"
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")


def _rollback(cfg: Config, st: state.State) -> list[str]:
    if st.state == "fallback":
        return [f"The fallback window is open: `replicator rollback --source {cfg.source}` fences "
                "Postgres, drains its changes back into the SQLite file, verifies every value and "
                "lifts the SQLite fence; point the application back at the file. Nothing written "
                "on Postgres is lost.",
                f"`replicator finish --source {cfg.source}` ends the window instead."]
    closed = st.info.get("finished_at")
    since = (f"after the fallback window closed ({_when(closed)}; the SQLite file as it was then, "
             "with every change made on Postgres until that moment, is archived next to the "
             "backups, gzip + .sha256, as `finish` said)" if closed else "after cutover")
    steps = [
        f"Stop writes to Postgres, then lift the fence and remove every replicator object from "
        f"SQLite: `replicator uninstall --source {cfg.source}` (the application's schema is left "
        f"byte-identical). Rows written to Postgres {since} exist only there: export them "
        "first if the application wrote any.",
        "Point the application back at the SQLite file.",
    ]
    if st.info.get("backup"):
        steps.append(f"The file as it was before the replicator first wrote to it is backed up at "
                     f"{st.info['backup']} (gunzip it to restore).")
    steps.append("On Neon, a branch created just before cutover is the rollback point for the "
                 "Postgres side (reset the branch, or delete the migration branch).")
    steps.append("`replicator uninstall --target-schema` also drops the _replicator bookkeeping.")
    return steps


async def _trouble(pg: asyncpg.Connection, st: state.State, tables) -> list[dict[str, Any]]:
    events = await state.events_of(pg, ("error", "resnapshot", "add_columns"))
    out = []
    for e in events:
        at, kind, tbl, d = e["at"], e["kind"], e["table"], e["detail"]
        hint = _HINTS.get(d.get("kind", ""), "") if kind == "error" else \
            "A schema change was followed by copying the table again." if kind == "resnapshot" \
            else "ALTER TABLE ADD COLUMN was followed."
        out.append({"at": at.isoformat(timespec="seconds"), "what": kind, "table": tbl,
                    "detail": d.get("error") or d.get("reason") or d.get("columns"), "hint": hint})
    if st.error:
        out.append({"at": None, "what": "current error", "table": None, "detail": st.error,
                    "hint": "`replicator status` shows it until the daemon recovers."})
    for t in tables.values():
        for idx in t.plan.indexes:
            if idx.error:
                out.append({"at": None, "what": "index", "table": t.name, "detail": idx.error,
                            "hint": f"Original: {idx.original}"})
    return out


# -- rendering -------------------------------------------------------------------------------------


def _sections(r: dict[str, Any]) -> list[tuple[str, list[str], list[list[Any]] | None]]:
    """(title, paragraphs, table rows with a header row) for both text renderings."""
    t = r["timings"]
    moved = [["table", "Postgres table", "rows", "bytes", "changes applied"]] + [
        [m["table"], m["pg_table"], m["rows"], m["bytes"], m["changes_applied"]] for m in r["moved"]]
    mapping = [["column", "declared", "Postgres", "rule", "notes"]] + [
        [f"{m['table']}.{m['column']}", m["declared"] or "-", m["pg_type"], m["rule"],
         "; ".join(m["notes"])] for m in r["mapping"]]
    quarantine = [["table", "key", "column", "reason", "raw values"]] + [
        [q["table"], json.dumps(q["key"]), q["column"], q["reason"],
         repr([from_typed_json(v) for v in q["raw"]])]
        for q in r["quarantine"]]
    objects = [["object", "status", "detail"]] + [
        [o.get("object"), o.get("status"), o.get("detail") or ""] for o in r["schema"]["objects"]]
    trouble = [["when", "what", "table", "detail", "hint"]] + [
        [x["at"] or "-", x["what"], x["table"] or "-", str(x["detail"]), x["hint"]]
        for x in r["troubleshooting"]]
    v = r["verification"]
    replay = r.get("validation")
    validation = [REPLAY_HEAD] + (replay_rows(replay) if replay else [])
    breakdown = freeze_breakdown(t)
    return [
        ("Needs attention", [
            f"**{a['what']}**" + (f": {' '.join(a['detail'].split())[:300]}" if a["detail"] else "")
            + (f" Fix: {a['fix']}" if a["fix"] else "") for a in r["attention"]]
         or ["Nothing needs a human."], None),
        ("Summary", [f"Source: {r['source']}", f"Target: {r['target']}",
                     f"State: {r['state']}" + (f" (error: {r['error']})" if r["error"] else ""),
                     f"Generated {r['generated_at']} by {r['tool']}"], None),
        ("What was migrated", [f"{sum(m['rows'] for m in r['moved'])} rows in "
                               f"{len(r['moved'])} tables"], moved),
        ("Type mapping and conversions", [], mapping),
        ("Quarantined rows", [_held(r)], quarantine),
        ("Schema objects", ["Constraints, triggers, views and sequences as created at cutover"],
         objects),
        ("Verification", [_verified("At cutover", v["at_cutover"]),
                          _verified("Last full verification", v["last"])], None),
        ("Application validation", [replay_counts(replay)] if replay else
         ["No run of `replicator queries replay` recorded: replay the application's queries on "
          "both databases to see that they answer the same."], validation),
        ("Performance", [_seconds("Snapshot", t["snapshot_seconds"]),
                         _seconds("Catch-up after the snapshot", t["catch_up_seconds"]),
                         "Write freeze at cutover: " + (
                             f"{t['freeze_window_ms']} ms" + (f" ({breakdown})" if breakdown else "")
                             if t["freeze_window_ms"] is not None else "not yet cut over")], None),
        ("Security", [f"{label}: {text}" for label, text in security_rows(r["security"])], None),
        *([("Fallback window", r["fallback"], None)] if r.get("fallback") else []),
        ("Rollback procedure", r["rollback"], None),
        ("Troubleshooting", ["Errors and schema changes seen in this run:" if len(trouble) > 1
                             else "No error or schema change during this migration."], trouble),
        ("Schema before (SQLite)", ["```sql", *r["schema"]["before"], "```"], None),
        ("Schema after (Postgres)", ["```sql", *[s + ";" for s in r["schema"]["after"]], "```"], None),
    ]


def _held(r: dict[str, Any]) -> str:
    both = sum(1 for q in r["quarantine"] if q["reverse"])
    absent = len(r["quarantine"]) - both
    return (f"{absent} row(s) could not move exactly to Postgres"
            + (f"; {both} row(s) went back to SQLite in the nearest form it holds (Postgres keeps "
               "the value the application wrote)" if both else "")
            + "; their raw values are listed here"
            + ("" if r.get("finished") else " and kept losslessly in _replicator.quarantine"))


def _seconds(label: str, value: Any) -> str:
    return f"{label}: " + (f"{value} s" if value is not None else "not recorded")


def _verified(label: str, rec: dict[str, Any] | None) -> str:
    if not rec:
        return f"{label}: not recorded"
    at = (f", at {datetime.fromtimestamp(rec['at'], UTC).isoformat(timespec='seconds')}"
          if isinstance(rec.get("at"), (int, float)) else "")
    return (f"{label}: {'equal' if rec.get('ok') else 'DIFFERENCES'}, {rec.get('rows')} rows "
            f"({rec.get('mode', 'full')}{at})")


def render_markdown(r: dict[str, Any]) -> str:
    out = [f"# Migration report: {r['source']}", ""]
    for title, paras, rows in _sections(r):
        out += [f"## {title}", ""]
        in_code = False
        for p in paras:
            in_code = not in_code if p.startswith("```") else in_code
            out.append(p if in_code or p.startswith("```") else f"- {p}" if title in (
                "Summary", "Needs attention", "Performance", "Security", "Rollback procedure") else p)
        if rows and len(rows) > 1:
            out.append("")
            out.append("| " + " | ".join(map(str, rows[0])) + " |")
            out.append("|" + "---|" * len(rows[0]))
            out += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |"
                    for row in rows[1:]]
        out.append("")
    return "\n".join(out)


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, default=str)
    return render_html(report) if fmt == "html" else render_markdown(report)


__all__ = ["gather", "render", "time"]
