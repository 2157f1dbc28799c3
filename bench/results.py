"""Render the benchmark JSON in bench/out/ as tables (terminal) and as bench/RESULTS.md."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from common import BENCH, DATA_SETS, OUT, ROOT, table

ORDER = ["snapshot", "catchup", "lag", "overhead", "verify", "scaling"]


def _cmd(argv: list[str]) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (p.stdout or p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({exc})"


def _pkg(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine(server_info: dict[str, Any] | None = None) -> dict[str, Any]:
    lscpu = _cmd(["lscpu"])
    model = re.search(r"Model name:\s*(.+)", lscpu)
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    du = shutil.disk_usage(BENCH)
    df = _cmd(["df", "-h", str(BENCH)]).splitlines()
    git = _cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _cmd(["git", "-C", str(ROOT), "status", "--porcelain", "--", "replicator", "triggers"])
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu_model": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "lscpu_flags_hypervisor": "hypervisor" in lscpu,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "disk": df[-1] if df else "",
        "disk_free_gb": round(du.free / 1e9, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "pgloader": _cmd(["pgloader", "--version"]).splitlines()[0],
        "psql": _cmd(["psql", "--version"]),
        "duckdb": {"duckdb": _pkg("duckdb"), "duckdb-ext-sqlite": _pkg("duckdb-ext-sqlite"),
                   "duckdb-ext-postgres": _pkg("duckdb-ext-postgres")},
        "replicator_commit": git,
        "replicator_uncommitted_files": len([x for x in dirty.splitlines() if x.strip()]),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    if server_info:
        info["postgres"] = server_info
    return info


def code_version() -> dict[str, Any]:
    """Which product code a benchmark measured: HEAD plus a hash of replicator/ and triggers/ as
    they were on disk (the code is edited while benchmarks run)."""
    import hashlib

    h = hashlib.sha1()
    files = sorted([*(ROOT / "replicator").rglob("*.py"), *(ROOT / "triggers").glob("*")])
    for p in files:
        if p.is_file():
            h.update(str(p.relative_to(ROOT)).encode())
            h.update(p.read_bytes())
    dirty = _cmd(["git", "-C", str(ROOT), "status", "--porcelain", "--", "replicator", "triggers"])
    return {"head": _cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
            "source_sha1": h.hexdigest()[:12],
            # (split, not x[3:]: _cmd strips the output, and with it the first line's status column)
            "uncommitted": [x.split(maxsplit=1)[1] for x in dirty.splitlines() if x.strip()]}


def load(name: str) -> dict[str, Any] | None:
    path = OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**NOT met**")


def f(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    if isinstance(x, int):
        return f"{x:,}"
    return str(x)


# --------------------------------------------------------------------------- sections


# Issue 13's snapshot targets (issue 7 had asked ≤ 1.3× the ceiling and ≥ 2.5× faster than pgloader).
SNAP_CEILING = 1.5   # replicator / raw-COPY ceiling, at most
SNAP_PGLOADER = 2.0  # pgloader / replicator, at least
SNAP_DUCKDB = 1.5    # replicator / DuckDB's bare copy, at most (where DuckDB loads the file)
SNAP_CENSUS = 0.10   # census seconds / replicator's logged seconds, at most
SNAP_PLAN_S = 5.0    # `replicator plan` wall seconds, at most
SNAP_PEAK_MB = 256   # replicator peak memory, below

TOOL_LABELS = (("ceiling", "raw COPY ceiling (3 parallel `\\copy` + keys/indexes)"),
               ("pgloader", "pgloader 3.6.7, defaults"),
               ("duckdb", "DuckDB bare copy (`CREATE TABLE AS SELECT`, no keys/indexes)"),
               ("replicator", "`replicator copy` (wall, incl. process start)"))


def _duckdb_why(t: dict[str, Any]) -> str:
    """Why DuckDB has no time, by the stage its script stopped at (``duckdb_copy.py``)."""
    if t.get("stage") in ("import", "extensions"):
        return "DuckDB anchor not measured: DuckDB or its extensions could not be loaded"
    if t.get("stage") == "attach":
        return "DuckDB anchor failed at ATTACH"
    return "DuckDB could not load this file"


def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + " …"


def _duckdb_failure(t: dict[str, Any]) -> str:
    return f"{_duckdb_why(t)}: `{_one_line(t['error'])}`"


def sec_snapshot(d: dict[str, Any]) -> tuple[str, list[tuple[str, str, bool | None]]]:
    sets = d.get("data_sets")
    if sets is None:  # a snapshot.json from before issue 13: one data set (gen) at the top level
        sets = {"gen": d}
    text = ["Targets of issue 13, judged on each data set: `replicator copy` ≤ "
            f"{SNAP_CEILING:g}× the raw-COPY ceiling, ≥ {SNAP_PGLOADER:g}× faster than pgloader 3.6.7, "
            f"≤ {SNAP_DUCKDB:g}× DuckDB's bare copy where DuckDB can load the file (the replicator "
            "also builds keys, indexes and constraints; DuckDB does not), census ≤ "
            f"{SNAP_CENSUS:.0%} of the snapshot's time, `replicator plan` ≤ {SNAP_PLAN_S:g} s, "
            f"peak memory < {SNAP_PEAK_MB} MB. (Issue 7 had asked ≤ 1.3× the ceiling and ≥ 2.5× "
            "faster than pgloader.)", "",
            "Peak MB: the tool's process tree, summed PSS sampled every 0.1 s (worker processes "
            "included; for the ceiling, the three psql clients), never below the largest single "
            "process' exact high-water mark (GNU time %M).", ""]
    targets: list[tuple[str, str, bool | None]] = []
    for kind, s in sets.items():
        part, tg = _snapshot_one(kind, s)
        text += [part, ""]
        targets += tg
    return "\n".join(text).rstrip(), targets


def _snapshot_one(kind: str, d: dict[str, Any]) -> tuple[str, list[tuple[str, str, bool | None]]]:
    head = f"### data set `{kind}`: {DATA_SETS.get(kind, kind)}"
    if "error" in d:
        return "\n".join([head, "", f"**This data set's benchmark failed:** `{_one_line(d['error'])}`"]), [
            (f"snapshot ({kind})", "failed", False)]
    rows = []
    notes = []
    for tool, label in TOOL_LABELS:
        t = d.get(tool)
        if t is None:
            continue
        if "median_s" not in t:  # failed in its first run (the error is recorded)
            rows.append([label, "failed", "", "", "", "", ""])
        else:
            rows.append([label, f(t["median_s"]), f"{f(t['min_s'])}–{f(t['max_s'])}",
                         f(t["rows_per_s"]), f(t["peak_mb"], 0), f(t.get("procs")),
                         f(t.get("single_process_peak_mb"), 0)])
        if "error" in t:
            notes.append(_duckdb_failure(t) if tool == "duckdb"
                         else f"{tool} failed: `{_one_line(t['error'])}`")
    r = d["replicator"]
    rows.append(["`replicator copy`, time it logs (`seconds`)", f(r.get("logged_median_s")),
                 "", "", "", "", ""])
    if r.get("census_median_s") is not None:
        rows.append(["  of which the census (`census_done`)", f(r["census_median_s"]), "", "", "", "", ""])
    n = d["rows"]
    text = [head, "",
            f"{n:,} rows{' (`' + d['db'] + '`)' if d.get('db') else ''}, median of {d['reps']} rounds "
            "(tools interleaved, rotating order).", "",
            table(["tool", "median s", "range s", "rows/s", "peak MB (all processes)", "processes",
                   "largest single process MB"], rows), ""]
    if notes:
        text += [*notes, ""]

    ratio_rows, targets = [], []

    def target(row: str, goal: str, target_text: str, measured: str, ok: bool | None,
               of_medians: str = "", paired: str = "") -> None:
        """One row of this data set's ratio table and one of the Targets table."""
        ratio_rows.append([row, of_medians or measured, paired, target_text, verdict(ok)])
        targets.append((f"{goal} (data set {kind}, {n:,} rows)", measured, ok))

    def ratio(key: str, row: str, goal: str, limit: float, at_most: bool) -> None:
        v = d.get(f"ratio_{key}")
        if v is None:
            return
        ok = v <= limit if at_most else v >= limit
        target(row, goal, f"{'≤' if at_most else '≥'} {limit:.2f}", f"{v:.2f}×", ok, f(v),
               f(d.get(f"paired_{key}")))

    if "ceiling" in d:
        ratio("replicator_over_ceiling", "replicator / ceiling",
              f"snapshot ≤ {SNAP_CEILING:g}× raw-COPY ceiling", SNAP_CEILING, True)
        goal = f"snapshot ≥ {SNAP_PGLOADER:g}× faster than pgloader 3.6.7"
        ratio("pgloader_over_replicator", "pgloader / replicator", goal, SNAP_PGLOADER, False)
        if "ratio_pgloader_over_replicator" not in d and "error" in d.get("pgloader", {}):
            target("pgloader / replicator", goal, f"≥ {SNAP_PGLOADER:.2f}", "pgloader failed", None)
    duck = d.get("duckdb")
    if duck is not None:
        goal = f"snapshot ≤ {SNAP_DUCKDB:g}× DuckDB's bare copy"
        if "ratio_replicator_over_duckdb" in d:
            ratio("replicator_over_duckdb", "replicator / DuckDB", goal, SNAP_DUCKDB, True)
        else:
            target("replicator / DuckDB", goal, f"≤ {SNAP_DUCKDB:.2f}", _duckdb_why(duck), None)
    if r.get("census_share") is not None:
        share = r["census_share"]
        target("census / replicator's logged seconds", f"census ≤ {SNAP_CENSUS:.0%} of snapshot time",
               f"≤ {SNAP_CENSUS:.0%}",
               f"{share:.1%} ({r['census_median_s']:.2f} of {r['logged_median_s']:.2f} s)",
               share <= SNAP_CENSUS)
    plan = d.get("plan")
    if plan:
        goal = f"`replicator plan` ≤ {SNAP_PLAN_S:g} s"
        if plan.get("median_s") is not None:
            target("`replicator plan` wall s", goal, f"≤ {SNAP_PLAN_S:g} s",
                   f"{plan['median_s']:.2f} s", plan["median_s"] <= SNAP_PLAN_S,
                   f"{plan['median_s']:.2f} s (runs: {len(plan['runs'])}; peak {plan['peak_mb']:.0f} MB)")
        else:
            target("`replicator plan` wall s", goal, f"≤ {SNAP_PLAN_S:g} s", "plan failed", False,
                   plan["runs"][0].get("error", "failed"))
    peak = r.get("peak_mb")
    if peak is not None:
        target("replicator peak MB", f"snapshot peak memory < {SNAP_PEAK_MB} MB", f"< {SNAP_PEAK_MB} MB",
               f"{peak:.0f} MB", peak < SNAP_PEAK_MB)
    if "ratio_pgloader_over_ceiling" in d:
        ratio_rows.append(["pgloader / ceiling", f(d["ratio_pgloader_over_ceiling"]), "", "", ""])
    if "ratio_duckdb_over_ceiling" in d:
        ratio_rows.append(["DuckDB / ceiling", f(d["ratio_duckdb_over_ceiling"]), "", "", ""])
    text += [table(["figure", "of medians", "median of per-round ratios", "target (issue 13)", "verdict"],
                   ratio_rows), ""]

    chk = d.get("check", {})
    if "ceiling_equals_replicator" in chk:
        text.append(f"Content check (round 1): ceiling and replicator databases hold identical rows "
                    f"(count + md5 sum per table): **{chk['ceiling_equals_replicator']}**; column "
                    f"types equal: **{chk.get('ceiling_types_equal_replicator')}**.")
    if "duckdb_rows_equal_replicator" in chk:
        text.append(f"DuckDB loaded the same row counts per table as the replicator: "
                    f"**{chk['duckdb_rows_equal_replicator']}** (counts only: DuckDB picks its own types).")
    runs = d.get("runs", {})
    if runs.get("replicator"):
        r0 = runs["replicator"][0]
        per = ", ".join(f"{t} {v['seconds']} s" for t, v in r0.get("tables", {}).items())
        census = f"census {r0['census_s']} s; " if r0.get("census_s") is not None else ""
        text.append(f"Replicator phases (round 1, from its log): online-backup copy of the file "
                    f"{r0.get('backup_copy_s')} s; {census}per table: {per}; wall {r0['seconds']:.2f} s "
                    f"vs logged {r0.get('logged_seconds')} s.")
    if runs.get("ceiling"):
        c = runs["ceiling"][0]["tables"]
        text.append("Ceiling per table (round 1): " + ", ".join(
            f"{t} COPY {v['copy_s']} s + indexes {v['indexes_s']} s" for t, v in c.items()) + ".")
    if runs.get("pgloader") and "error" not in runs["pgloader"][0]:
        p = runs["pgloader"][0]
        text.append(f"pgloader phases (round 1, its own summary): COPY {p.get('copy_phase_s')} s, "
                    f"indexes {p.get('index_phase_s')} s, total {p.get('logged_seconds')} s.")
    if runs.get("duckdb") and "error" not in runs["duckdb"][0]:
        k = runs["duckdb"][0]
        per = ", ".join(f"{t} {v['seconds']} s" for t, v in k.get("tables", {}).items())
        text.append(f"DuckDB {k.get('duckdb')} (round 1, its own timing): start, extension loads and "
                    f"ATTACH {k.get('setup_s')} s; per table: {per}; wall {k['seconds']:.2f} s.")
        if k.get("column_types"):
            by_table: dict[str, list[str]] = {}
            for t, c, ty in k["column_types"]:
                by_table.setdefault(t, []).append(f"{c} {ty}")
            text.append("Column types DuckDB created (round 1): " + "; ".join(
                f"{t} ({', '.join(cols)})" for t, cols in by_table.items()) + ".")
    return "\n".join(text), targets


CATCHUP_CHANGES = 20_000  # catch-up target, changes/s (local and through the delay proxy)
LAG_P99_S, LAG_P50_S, LAG_RTT_P99_S = 1.0, 0.2, 0.15  # lag targets at ~500 tx/s

# What the catch-up backlog's UPDATEs and INSERTs write on each data set (catchup.py).
CATCHUP_WORKLOAD = {
    "gen": "`UPDATE orders SET status, amount` (NUMERIC) by key; `INSERT INTO events` (kind "
           "'bench', payload '{}', integer time, REAL weight)",
    "app": "`UPDATE orders SET status, total, notes` (REAL total; notes with tabs and newlines, or "
           "NULL) by key; `INSERT INTO events` (a user or NULL, a kind, a JSON payload, 'YYYY-MM-DD "
           "HH:MM:SS' time)",
}


def _data_sets(d: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-data-set entries of a benchmark's JSON; a JSON from before issue 13's data sets
    (one run at the top level) is data set ``gen``."""
    sets = d.get("data_sets")
    return sets if sets is not None else {"gen": d}


def _failed(name: str, kind: str, d: dict[str, Any]) -> tuple[str, list] | None:
    if "error" not in d:
        return None
    return (f"### data set `{kind}`\n\n**This data set's benchmark failed:** `{_one_line(d['error'])}`",
            [(f"{name} (data set {kind})", "failed", False)])


def sec_catchup(d: dict[str, Any]) -> tuple[str, list]:
    text = [f"Per data set: a private copy of the database; a mixed backlog (50% UPDATE orders, 30% "
            f"INSERT events, 20% DELETE events, by key) written in 1000-change transactions while the "
            f"daemon was stopped; then the daemon is started and timed until the target cursor reaches "
            f"the log's high-water mark. Target: ≥ {CATCHUP_CHANGES:,} changes/s, locally and with "
            f"+20 ms RTT between the daemon and Postgres.", ""]
    targets: list = []
    for kind, one in _data_sets(d).items():
        part, tg = _failed("catchup", kind, one) or _catchup_one(kind, one)
        text += [part, ""]
        targets += tg
    return "\n".join(text).rstrip(), targets


def _catchup_one(kind: str, d: dict[str, Any]) -> tuple[str, list]:
    rows, targets = [], []
    where = f"data set {kind}, {d['rows']:,} rows"
    for size, s in d["sizes"].items():
        rows.append([f(int(size)), f(s["log_entries"]), f(s["changes_per_s"]),
                     f(s.get("changes_per_s_after_start")), f(s.get("app_changes_per_s")),
                     f(s.get("replay_changes_per_s")), f(s.get("ratio_vs_replay")),
                     f(s.get("daemon_peak_mb"), 0)])
        targets.append((f"catch-up ≥ {CATCHUP_CHANGES:,} changes/s ({int(size):,} changes; {where})",
                        f"{s['changes_per_s']:,}/s", s["changes_per_s"] >= CATCHUP_CHANGES))
    journal = f", journal_mode={d['journal_mode']}" if d.get("journal_mode") else ""
    text = [f"### data set `{kind}`: {DATA_SETS.get(kind, kind)}", "",
            f"Database {d['rows']:,} rows{' (`' + d['db'] + '`' + journal + ')' if d.get('db') else ''}; "
            f"changes: {CATCHUP_WORKLOAD.get(kind, '?')}; `DELETE FROM events` by key. "
            f"Median of {d['reps']} per size.", "",
            table(["changes", "log entries", "drain changes/s (from process start)",
                   "changes/s after `replicator_started`", "anchor: app wrote to SQLite /s",
                   "anchor: statement replay into PG /s", "drain / replay", "daemon peak MB"], rows)]
    rtt = d.get("rtt")
    if rtt:
        text += ["", f"Through the delay proxy ({rtt['rtt_ms_added']:g} ms RTT added between the "
                 f"daemon and Postgres), {rtt['changes']:,} changes: {rtt['changes_per_s']:,} "
                 f"changes/s, {rtt['seconds']} s (median of {len(rtt['runs'])})."]
        targets.append((f"catch-up with +{rtt['rtt_ms_added']:g} ms RTT ≥ {CATCHUP_CHANGES:,} changes/s "
                        f"({rtt['changes']:,} changes; {where})",
                        f"{rtt['changes_per_s']:,}/s", rtt["changes_per_s"] >= CATCHUP_CHANGES))
    return "\n".join(text), targets


def sec_lag(d: dict[str, Any]) -> tuple[str, list]:
    sets = _data_sets(d)
    first = next(iter(sets.values()))
    rate, seconds = d.get("rate", first.get("rate", 500)), d.get("seconds", first.get("seconds", 30))
    text = [f"Per data set: a private copy of the 0.1x database plus a table `lagprobe`. App: one INSERT "
            f"per transaction into `lagprobe` at ~{rate:.0f}/s for {seconds:.0f} s (synchronous=NORMAL), "
            f"each row carrying `time.time()` at write; observer polls Postgres every ~5 ms and records "
            f"now − t_write (same host clock). The daemon snapshots the data set's tables and verifies "
            f"them in the background (variant `default`) while it streams. Targets at ~{rate:.0f} tx/s: "
            f"p99 ≤ {LAG_P99_S:g} s and p50 ≤ {LAG_P50_S:g} s locally, p99 ≤ {LAG_RTT_P99_S:g} s with "
            f"+20 ms RTT between the daemon and Postgres.", ""]
    targets: list = []
    for kind, one in sets.items():
        part, tg = _failed("lag", kind, one) or _lag_one(kind, one)
        text += [part, ""]
        targets += tg
    return "\n".join(text).rstrip(), targets


def _lag_one(kind: str, d: dict[str, Any]) -> tuple[str, list]:
    rows, targets = [], []
    where = f"data set {kind}, {d['rows']:,} rows"
    for label, v in d["variants"].items():
        app = v["app"]
        rows.append([label, f(app.get("rate"), 0), f(v["rows_observed"]), f(v["lag_p50_s"], 3),
                     f(v["lag_p90_s"], 3), f(v["lag_p99_s"], 3), f(v["lag_max_s"], 3),
                     f(v.get("steady_p99_s"), 3), f(v["poll_error_bound_p99_ms"], 1),
                     f(v["batches_seen"]), f(v.get("round_trips_per_batch")),
                     f(v.get("daemon_peak_mb") or v["daemon_maxrss_mb"], 0)])
    journal = d.get("journal_mode") or "wal"  # lag.json before data sets: generate.py's WAL file
    text = [f"### data set `{kind}`: {DATA_SETS.get(kind, kind)}", "",
            f"Database: {d['rows']:,} rows{' (`' + d['db'] + '`)' if d.get('db') else ''} + lagprobe, "
            f"journal_mode={journal}; app at ~{d['rate']:.0f}/s for {d['seconds']:.0f} s.",
            "", table(["variant", "app rows/s", "rows", "p50 s", "p90 s", "p99 s", "max s",
                       "p99 after 2 s warm-up", "poll error bound p99 ms", "batches",
                       "round trips/batch", "daemon peak MB"], rows), ""]
    rtt = d.get("rtt", {})
    text.append(f"Local Postgres round trip (`SELECT 1`, asyncpg): median {rtt.get('median_ms')} ms, "
                f"p90 {rtt.get('p90_ms')} ms.")
    base = d["variants"].get("default")
    if base:
        targets += [(f"lag p99 ≤ {LAG_P99_S:g} s (local Postgres, ~{d['rate']:.0f} tx/s; {where})",
                     f"{base['lag_p99_s']:.3f} s", base["lag_p99_s"] <= LAG_P99_S),
                    (f"lag p50 ≤ {LAG_P50_S:g} s (local Postgres; {where})", f"{base['lag_p50_s']:.3f} s",
                     base["lag_p50_s"] <= LAG_P50_S)]
    for label, v in d["variants"].items():
        if v.get("rtt_ms_added"):
            targets.append((f"lag p99 ≤ {LAG_RTT_P99_S:g} s with +{v['rtt_ms_added']:g} ms RTT "
                            f"(~{d['rate']:.0f} tx/s; {where})",
                            f"{v['lag_p99_s']:.3f} s", v["lag_p99_s"] <= LAG_RTT_P99_S))
        if v.get("rtt_ms_added") and base:
            added = v["rtt_ms_added"]
            k50 = (v["lag_p50_s"] - base["lag_p50_s"]) * 1000 / added
            k99 = (v["lag_p99_s"] - base["lag_p99_s"]) * 1000 / added
            text.append(
                f"With {added:g} ms RTT added between the daemon and Postgres (variant `{label}`, "
                f"delay proxy): p50 {v['lag_p50_s']:.3f} s vs {base['lag_p50_s']:.3f} s locally "
                f"(+{k50 * added:.0f} ms ≈ {k50:.1f} × RTT), p99 {v['lag_p99_s']:.3f} s vs "
                f"{base['lag_p99_s']:.3f} s (+{k99 * added:.0f} ms ≈ {k99:.1f} × RTT); batches "
                f"{v['batches_seen']} vs {base['batches_seen']} locally. The proxy counted "
                f"{v.get('round_trips_per_batch', '?')} request/response turns per batch (every query "
                f"the daemon sent during the run, background verification and bookkeeping "
                f"included, divided by the batches seen; a batch itself is one statement when "
                f"`replicator_apply_batches_total{{way=\"one_statement\"}}` counts it). "
                f"Estimate for Neon: local lag + about {k50:.0f}–{k99:.0f} × the "
                f"client→Neon RTT (p50–p99). The RTT to Neon was not measured here; it depends on "
                f"where the daemon runs relative to the Neon region.")
    return "\n".join(text), targets


def sec_overhead(d: dict[str, Any]) -> tuple[str, list]:
    text, targets = [], []
    for sync, m in d["modes"].items():
        rows = []
        for kind in ("insert", "insert_uniq", "update", "delete", "insert_x100", "update_x100"):
            k = m.get(kind)
            if not k:
                continue
            rows.append([kind, f(k["without_mean_us"], 1), f(k["with_mean_us"], 1),
                         f(k["ratio_paired_rounds_mean"]), f(k["without_median_us"], 1),
                         f(k["with_median_us"], 1), f(k["ratio_paired_rounds"]),
                         f(k["without_p99_us"], 0), f(k["with_p99_us"], 0)])
        text += [f"**journal_mode={d['journal_mode']}, synchronous={sync}** ({m['n_single']} single-row "
                 f"transactions per block, {m['n_multi']} for ×100; {d['rounds']} rounds A/B "
                 "alternating):", "",
                 table(["transaction", "without µs (mean)", "with µs (mean)", "ratio (mean)",
                        "without µs (median)", "with µs (median)", "ratio (median)",
                        "without p99 µs", "with p99 µs"], rows), ""]
        singles = [m[k]["ratio_paired_rounds_mean"]
                   for k in ("insert", "insert_uniq", "update", "delete") if k in m]
        worst = max(singles)
        targets.append((f"capture overhead ≤ 1.5× on single-row writes (synchronous={sync})",
                        f"worst {worst:.2f}× (insert {m['insert']['ratio_paired_rounds_mean']:.2f}, "
                        f"update {m['update']['ratio_paired_rounds_mean']:.2f})", worst <= 1.5))
    return "\n".join(text), targets


def sec_verify(d: dict[str, Any]) -> tuple[str, list]:
    v = d["runs"]["verify"]
    rows = [["`replicator verify --json` (rows_per_s it reports)", f(d["verify_rows_per_s"]),
             f(d["verify_peak_mb"], 0)],
            ["`replicator verify`, rows / wall time incl. process start", f(d["verify_rows_per_s_wall"]), ""],
            ["anchor: read both sides into Python values, no comparison", f(d["anchor_rows_per_s"]),
             f(d["anchor_peak_mb"], 0)]]
    per = ", ".join(f"{t} {s} s" for t, s in v[0]["tables"].items())
    text = [f"{d['rows']:,} rows after a `replicator copy`; median of {d['reps']} (interleaved).", "",
            table(["what", "rows/s", "peak MB"], rows), "",
            f"verify / anchor time ratio: {d['ratio_verify_over_anchor_time']}×. Per table (run 1): {per}; "
            f"mode `{v[0].get('mode')}`."]
    ok = d["verify_rows_per_s"] >= 300_000
    return "\n".join(text), [("verify ≥ 300,000 rows/s", f"{d['verify_rows_per_s']:,}/s", ok)]


def sec_scaling(d: dict[str, Any]) -> tuple[str, list]:
    rows, targets = [], []
    sizes = sorted(d["sizes"].items(), key=lambda kv: int(kv[0]))
    base_rows = d.get("base_rows") or int(sizes[0][0])
    base = d["sizes"].get(str(base_rows)) or sizes[0][1]
    base_per = base["replicator"]["median_s"] / (base_rows / 1e6)
    prev = None
    slopes = []
    for size, s in sizes:
        n = int(size)
        r = s["replicator"]
        per_m = r["median_s"] / (n / 1e6)
        slope = None
        if prev is not None:
            slope = (r["median_s"] - prev[1]) / ((n - prev[0]) / 1e6)
            slopes.append((prev[0], n, slope))
        prev = (n, r["median_s"])
        rows.append([f(n), f(r["median_s"]), f(r["rows_per_s"]), f(per_m), f(slope),
                     f(per_m / base_per), f(r["peak_mb"], 0), f(r.get("single_process_peak_mb"), 0),
                     f(s.get("ceiling", {}).get("median_s")), f(s.get("ratio_replicator_over_ceiling")),
                     f(s.get("pgloader", {}).get("median_s")), f(s.get("ratio_pgloader_over_replicator")),
                     f(s.get("pgloader", {}).get("peak_mb"), 0)])
    text = ["`replicator copy` at each size, anchors in the same run (rounds per size: "
            + ", ".join(f"{int(k):,}: {v['reps']}" for k, v in sizes) + "). "
            "\"marginal s per M rows\" is the slope from the previous size: the per-row cost once the "
            "fixed start-up cost (process start, imports, connection, DDL) is taken out.", "",
            table(["rows", "replicator s", "rows/s", "s per M rows", "marginal s per M rows",
                   "per-row cost vs 1x", "peak MB (all processes)", "largest process MB", "ceiling s",
                   "repl/ceiling", "pgloader s", "pgloader/repl", "pgloader peak MB"], rows), ""]
    for size, s in sizes:
        chk = s.get("check", {})
        if "ceiling_types_equal_replicator" in chk:
            text.append(f"{int(size):,} rows: ceiling DDL from `{s.get('ddl_from')}`; column types equal "
                        f"to the replicator's: **{chk['ceiling_types_equal_replicator']}**; content equal: "
                        f"**{chk.get('ceiling_equals_replicator')}**.")
    peaks = [s["replicator"]["peak_mb"] for _k, s in sizes]
    targets.append(("peak memory < 256 MB at every size", f"max {max(peaks):.0f} MB ("
                    + ", ".join(f"{int(k):,}: {v['replicator']['peak_mb']:.0f}" for k, v in sizes) + ")",
                    max(peaks) < 256))
    big_n, big = sizes[-1]
    if int(big_n) > base_rows and len(slopes) >= 2:
        lin = slopes[-1][2] / slopes[-2][2]
        mem = big["replicator"]["peak_mb"] / base["replicator"]["peak_mb"]
        targets.append((f"time linear in rows (marginal cost {slopes[-1][0]:,}→{slopes[-1][1]:,} within "
                        f"1.25× of {slopes[-2][0]:,}→{slopes[-2][1]:,})", f"{lin:.2f}×", lin <= 1.25))
        targets.append((f"memory flat (peak at {int(big_n):,} within 1.25× of {base_rows:,})",
                        f"{mem:.2f}×", mem <= 1.25))
    if not any(int(k) >= 10 * base_rows for k, _v in sizes):
        text.append("The 10× size was not run in this invocation (add `--with-10x`).")
    return "\n".join(text), targets


SECTIONS = {"snapshot": sec_snapshot, "catchup": sec_catchup, "lag": sec_lag,
            "overhead": sec_overhead, "verify": sec_verify, "scaling": sec_scaling}


def render_one(name: str, data: dict[str, Any]) -> tuple[str, list]:
    return SECTIONS[name](data)


def _previous(path: Path) -> tuple[dict[str, str], dict[str, list[tuple[str, str, str, str]]]]:
    """The sections and target rows of an earlier RESULTS.md, by benchmark name, so that a run of
    some benchmarks re-renders the file without dropping the others (their JSON may be gone)."""
    if not path.exists():
        return {}, {}
    sections: dict[str, str] = {}
    targets: dict[str, list[tuple[str, str, str, str]]] = {}
    chunks = path.read_text().split("\n## ")
    for chunk in chunks[1:]:
        head, _, text = chunk.partition("\n")
        if head in ORDER:
            sections[head] = text.strip()
        elif head.startswith("Targets"):
            for line in text.splitlines():
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if len(cells) == 4 and cells[0] in ORDER:
                    targets.setdefault(cells[0], []).append((cells[0], cells[1], cells[2], cells[3]))
    return sections, targets


def write_results(path: Path | None = None) -> Path:
    """Render bench/RESULTS.md (or ``path``) from bench/out/*.json; sections of benchmarks with no
    JSON are kept from the current bench/RESULTS.md."""
    mach = load("machine") or {}
    parts = ["# Benchmark results", "",
             "Generated by `python bench/run.py ... --write-results` from the JSON in `bench/out/` "
             "(re-render without running: `python bench/run.py results`). See `bench/README.md` for "
             "what each benchmark does.", "", "## Machine", ""]
    pg = mach.get("postgres", {})
    parts.append(table(["item", "value"], [
        ["date", mach.get("date")], ["CPU", mach.get("cpu_model")],
        ["cores", mach.get("cores")], ["RAM", f"{mach.get('ram_gb')} GB"],
        ["disk (df -h bench/)", f"`{mach.get('disk')}`"],
        ["kernel", mach.get("kernel")], ["Python", mach.get("python")],
        ["SQLite (Python's)", mach.get("sqlite")],
        ["Postgres (embedded, private to the run)", pg.get("server_version")],
        ["Postgres settings", ", ".join(f"{k}={v}" for k, v in pg.items() if k != "server_version")],
        ["pgloader", mach.get("pgloader")], ["psql", mach.get("psql")],
        ["DuckDB (snapshot anchor; extensions from PyPI)",
         ", ".join(f"{k} {v}" for k, v in (mach.get("duckdb") or {}).items()) or "-"],
        ["replicator commit", f"{mach.get('replicator_commit')} (+{mach.get('replicator_uncommitted_files')} "
                              "uncommitted files in replicator/ or triggers/ at run time)"],
        ["load average at start", mach.get("loadavg")],
    ]))
    parts += ["", "The machine is shared: other jobs ran during these measurements. Anchors and the "
              "replicator were measured in the same run, interleaved, and ratios are the figures to "
              "trust; absolute times move with the load. Each section notes when it ran.", ""]
    all_targets = []
    body = []
    kept_sections, kept_targets = _previous(BENCH / "RESULTS.md")
    for name in ORDER:
        d = load(name)
        if d is None and name in kept_sections:  # not re-run here: the last rendering stays
            body += [f"## {name}", "", kept_sections[name], ""]
            all_targets += kept_targets.get(name, [])
            continue
        if d is None:
            body += [f"## {name}", "", "_not run yet_", ""]
            continue
        text, targets = render_one(name, d)
        all_targets += [(name, *t) for t in targets]
        load_note = d.get("loadavg_before"), d.get("loadavg_after")
        cv = d.get("code") or {}
        code = (f"; code {cv.get('head')} + {len(cv.get('uncommitted', []))} uncommitted files "
                f"(source hash {cv.get('source_sha1')})") if cv else ""
        if cv.get("changed_during_run"):
            code += " — **the product code changed on disk during this benchmark**"
        body += [f"## {name}", "", f"_run finished {d.get('finished_at')}; load average before/after "
                 f"{load_note[0]} / {load_note[1]}{code}; command `{d.get('command', '')}`_", "",
                 text, ""]
    parts += ["## Targets (issues 7 and 13)", "",
              table(["benchmark", "target", "measured", "verdict"],
                    [[n, t, m, ok if isinstance(ok, str) else verdict(ok)]
                     for n, t, m, ok in all_targets]), "",
              "Targets not listed were not measured. Notes and oddities: see the end of this file.", ""]
    parts += body
    locking = BENCH / "LOCKING.md"  # bench/locking_bench.py writes it (issue 17)
    if locking.exists():
        parts += ["## locking: does the replicator make the application see `database is locked`?",
                  "", locking.read_text().strip(), ""]
    fallback = BENCH / "FALLBACK.md"  # bench/fallback_bench.py writes it (issue 15)
    if fallback.exists():
        parts += ["## fallback window: reverse capture overhead and reverse lag (issue 15)", "",
                  fallback.read_text().strip(), ""]
    notes = BENCH / "NOTES.md"
    if notes.exists():
        parts += ["## Notes", "", notes.read_text().strip(), ""]
    path = path or BENCH / "RESULTS.md"
    path.write_text("\n".join(str(p) for p in parts) + "\n")
    return path
