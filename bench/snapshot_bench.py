"""Snapshot benchmark: `replicator copy` against three anchors run side by side into the same server.

* ceiling: raw ``COPY FROM`` of pre-exported CSV files, 3 tables in parallel (3 psql sessions,
  ``\\copy``), each followed by that table's keys and indexes from the replicator's own DDL
  (``plan --emit-sql``: 002_keys_and_indexes.sql). Tables are created beforehand (not timed)
  from 001_tables.sql, so the ceiling loads exactly the types the replicator creates.
* pgloader with its defaults (it creates its own tables and indexes).
* DuckDB's bare copy (``duckdb_copy.py``: ATTACH both, CREATE TABLE AS SELECT per table; no keys,
  no indexes), when the extensions are installed; a file DuckDB refuses is recorded as such.
* replicator copy (wall time including process start; the time it logs and its census are
  reported too).

``plan_time`` times a plain ``replicator plan --source DB`` (issue 13: ≤ 5 s at 1.6M rows).
"""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path
from typing import Any

import asyncpg
from common import (
    BENCH,
    DATA,
    LOGS,
    PY,
    REPLICATOR,
    Child,
    Server,
    asyncio_run,
    med,
    rnd,
    run,
    say,
    with_db,
)

TABLE_RE = re.compile(r'CREATE TABLE "public"\."([^"]+)" \((.*?)\n\);', re.S)
COL_RE = re.compile(r'^\s+"([^"]+)"', re.M)
TARGET_RE = re.compile(r'"public"\."([^"]+)"')
PSQL_TIME_RE = re.compile(r"^Time: ([\d.]+) ms", re.M)


# --------------------------------------------------------------------------- preparation


def emitted_sql(db: Path) -> Path:
    """The replicator's own target DDL for ``db`` (`plan --emit-sql`), cached next to the data."""
    folder = DATA / f"{db.stem}.sql"
    if not (folder / "002_keys_and_indexes.sql").exists():
        say(f"replicator plan --emit-sql {folder.name}")
        run([*REPLICATOR, "plan", "--source", db, "--emit-sql", folder], check=False,
            log=LOGS / "plan.log")
        if not (folder / "002_keys_and_indexes.sql").exists():
            raise RuntimeError(f"plan --emit-sql wrote nothing to {folder}; see {LOGS / 'plan.log'}")
    return folder


def ddl_tables(sql_dir: Path) -> dict[str, list[str]]:
    """Table -> column names, in the order of 001_tables.sql."""
    text = (sql_dir / "001_tables.sql").read_text()
    return {m.group(1): COL_RE.findall(m.group(2)) for m in TABLE_RE.finditer(text)}


def index_statements(sql_dir: Path) -> dict[str, list[str]]:
    """Table -> its statements from 002_keys_and_indexes.sql (primary key first, as written)."""
    body = "\n".join(
        line for line in (sql_dir / "002_keys_and_indexes.sql").read_text().splitlines()
        if not line.startswith("--")
    )
    out: dict[str, list[str]] = {}
    for stmt in (s.strip() for s in body.split(";")):
        if stmt:
            m = TARGET_RE.search(stmt)
            if not m:
                raise RuntimeError(f"cannot tell the table of: {stmt}")
            out.setdefault(m.group(1), []).append(stmt + ";")
    return out


def _csv_value(v: Any) -> Any:
    if isinstance(v, bytes):
        return "\\x" + v.hex()
    if isinstance(v, float):
        return repr(v)
    return v


def export_csv(db: Path, sql_dir: Path) -> dict[str, Path]:
    """Each table as Postgres-compatible CSV (not timed; cached): floats via repr(), NULL as an
    unquoted empty field (every other field quoted), BLOBs as \\x-hex bytea text."""
    import sqlite3

    folder = DATA / f"{db.stem}.csv"
    tables = ddl_tables(sql_dir)
    files = {t: folder / f"{t}.csv" for t in tables}
    if (folder / ".ok").exists():
        return files
    folder.mkdir(parents=True, exist_ok=True)
    say(f"exporting CSV for the raw-COPY ceiling into {folder.name} (not timed, one-off)")
    t0 = time.monotonic()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    sqlite_names = {n.lower(): n for (n,) in conn.execute(
        "SELECT name FROM sqlite_schema WHERE type='table'")}
    try:
        for table, cols in tables.items():
            src = sqlite_names[table]
            sel = ", ".join(f'"{c}"' for c in cols)
            cur = conn.execute(f'SELECT {sel} FROM "{src}" ORDER BY rowid')
            with open(files[table], "w", newline="") as fh:
                w = csv.writer(fh, quoting=csv.QUOTE_NOTNULL, lineterminator="\n")
                while rows := cur.fetchmany(10000):
                    w.writerows([tuple(_csv_value(v) for v in r) for r in rows])
    finally:
        conn.close()
    (folder / ".ok").write_text(json.dumps({"seconds": round(time.monotonic() - t0, 1)}))
    say(f"exported in {time.monotonic() - t0:.1f}s")
    return files


# --------------------------------------------------------------------------- the three tools


def run_ceiling(server: Server, db: Path, sql_dir: Path, dbname: str) -> dict[str, Any]:
    files = export_csv(db, sql_dir)
    indexes = index_statements(sql_dir)
    dsn = server.fresh(dbname)
    run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", sql_dir / "001_tables.sql"],
        log=LOGS / "ceiling.log")
    server.checkpoint()
    scripts = []
    for table, path in files.items():
        script = DATA / f"{db.stem}.csv" / f"{table}.load.sql"
        script.write_text(
            "\\timing on\n"
            f"\\copy \"public\".\"{table}\" FROM '{path}' WITH (FORMAT csv)\n"
            + "\n".join(indexes.get(table, [])) + "\n"
        )
        scripts.append((table, script))
    t0 = time.monotonic()
    children = [(t, Child(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-f", s],
                          log=LOGS / "ceiling.log")) for t, s in scripts]
    results = [(t, c.wait(3600)) for t, c in children]
    wall = time.monotonic() - t0
    per_table = {}
    for t, r in results:
        if r.rc != 0:
            raise RuntimeError(f"ceiling: psql for {t} exited {r.rc}: {r.tail()}")
        times = [float(x) / 1000 for x in PSQL_TIME_RE.findall(r.stdout)]
        per_table[t] = {"copy_s": rnd(times[0]) if times else None,
                        "indexes_s": rnd(sum(times[1:])), "wall_s": rnd(r.seconds)}
    return {"seconds": wall, "maxrss_mb": max(r.maxrss_mb for _t, r in results),
            "peak_mb": sum(r.peak_mb for _t, r in results), "procs": len(results),
            "tables": per_table, "dsn_db": dbname}


PGLOADER_ROW_RE = re.compile(
    r"^\s*(.+?)\s{2,}(\S+)\s+(\d+)\s+(?:([\d.]+ [kMG]?B)\s+)?((?:\d+h)?(?:\d+m)?[\d.]+s)\s*$", re.M)


def _duration(text: str) -> float:
    """pgloader's durations: 0.552s, 32.264s, 2m40.772s, 1h2m3.000s."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?([\d.]+)s", text)
    if not m:
        raise ValueError(text)
    return int(m.group(1) or 0) * 3600 + int(m.group(2) or 0) * 60 + float(m.group(3))


def _errors(cell: str) -> int:
    """pgloader's errors column: a count, or a check mark on the total line when all went well."""
    return int(cell) if cell.isdigit() else (0 if cell == "✓" else 1)


def run_pgloader(server: Server, db: Path, dbname: str) -> dict[str, Any]:
    dsn = server.fresh(dbname)
    server.checkpoint()
    log = LOGS / "pgloader.log"
    res = run(["pgloader", db, dsn], log=log, check=False, timeout=7200)
    text = res.stdout + "\n" + res.tail(80)
    phases = {m.group(1).strip(): {"errors": _errors(m.group(2)), "rows": int(m.group(3)),
                                   "seconds": _duration(m.group(5))}
              for m in PGLOADER_ROW_RE.finditer(text)}
    total = phases.get("Total import time", {})
    if res.rc != 0 or total.get("errors", 1) != 0:
        # Recorded, not raised: a file pgloader cannot load must not hide the other tools' figures.
        say(f"pgloader failed (exit {res.rc}); see {log}")
        return {"error": f"pgloader failed (exit {res.rc}, {total.get('errors', '?')} errors): "
                         f"{text.strip()[-600:]}",
                "seconds": res.seconds, "maxrss_mb": res.maxrss_mb, "peak_mb": res.peak_mb,
                "procs": res.procs, "dsn_db": dbname}
    return {"seconds": res.seconds, "maxrss_mb": res.maxrss_mb, "peak_mb": res.peak_mb,
            "tree_rss_mb": res.tree_rss_mb, "procs": res.procs, "rows": total.get("rows"),
            "logged_seconds": total.get("seconds"),
            "copy_phase_s": phases.get("COPY Threads Completion", {}).get("seconds"),
            "index_phase_s": phases.get("Create Indexes", {}).get("seconds"), "dsn_db": dbname}


def run_duckdb(server: Server, db: Path, dbname: str, tables: list[str]) -> dict[str, Any]:
    """``duckdb_copy.py`` in its own process (wall time including process start, Python's and
    DuckDB's imports and the extension loads); afterwards (not timed) the rows that arrived."""
    dsn = server.fresh(dbname)
    server.checkpoint()
    log = LOGS / "duckdb.log"
    res = run([PY, BENCH / "duckdb_copy.py", db, dsn], log=log, check=False, timeout=7200)
    try:
        out = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out = {"error": f"exit {res.rc}, no result: {res.tail(5)}", "stage": "unknown"}
    r: dict[str, Any] = {"seconds": res.seconds, "maxrss_mb": res.maxrss_mb, "peak_mb": res.peak_mb,
                         "tree_rss_mb": res.tree_rss_mb, "procs": res.procs,
                         "logged_seconds": out.get("seconds"), "setup_s": out.get("setup_s"),
                         "tables": out.get("tables", {}), "duckdb": out.get("duckdb"),
                         "dsn_db": dbname}
    if res.rc != 0 or "error" in out:
        r["error"] = out.get("error") or f"exit {res.rc}: {res.tail(5)}"
        r["stage"] = out.get("stage")
        if out.get("table"):
            r["failed_table"] = out["table"]
        say(f"  duckdb stopped ({r['stage']}): {r['error'][:300]}")
        return r
    counts = row_counts(dsn, tables)
    r["rows"] = sum(counts.values())
    r["table_rows"] = counts
    r["column_types"] = column_types(dsn)  # the types DuckDB chose (it has no DDL of ours)
    return r


def row_counts(dsn: str, tables: list[str]) -> dict[str, int]:
    async def go() -> dict[str, int]:
        conn = await asyncpg.connect(dsn)
        try:
            return {t: await conn.fetchval(f'SELECT count(*) FROM "public"."{t}"') for t in tables}
        finally:
            await conn.close()

    return asyncio_run(go())


def plan_time(db: Path) -> dict[str, Any]:
    """Wall time (incl. process start) and peak memory of a plain ``replicator plan --source DB``
    (its output goes to a file, as when piped)."""
    say(f"replicator plan --source {db.name} (timed)")
    log = LOGS / f"plan-{db.stem}.log"
    log.write_text("")
    res = run([*REPLICATOR, "plan", "--source", db], log=log, check=False, timeout=7200)
    r = {"seconds": rnd(res.seconds), "peak_mb": rnd(res.peak_mb, 1), "rc": res.rc}
    if res.rc != 0:
        r["error"] = f"exit {res.rc}: {res.tail(5)}"
    say(f"  plan: {res.seconds:.2f}s wall, peak {res.peak_mb:.0f} MB, exit {res.rc}")
    return r


def run_replicator(server: Server, db: Path, dbname: str) -> dict[str, Any]:
    dsn = server.fresh(dbname)
    clean_state(db)
    server.checkpoint()
    log = LOGS / f"copy-{db.stem}.log"
    log.write_text("")
    res = run([*REPLICATOR, "copy", "--source", db, "--target", dsn, "--json", "--log-format", "json"],
              log=log, timeout=7200, check=False)
    if res.rc != 0:
        raise RuntimeError(f"replicator copy exited {res.rc}: {res.tail(30)}")
    out = json.loads(res.stdout)
    events = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
    tables = {e["table"]: {"seconds": e.get("seconds"), "rows_per_s": e.get("rows_per_s")}
              for e in events if e.get("event") == "table_copied"}
    taken = next((e.get("seconds") for e in events if e.get("event") == "snapshot_copy_taken"), None)
    census = next((e.get("seconds") for e in events if e.get("event") == "census_done"), None)
    warnings = [e for e in events if e.get("level") in ("warning", "error")]
    clean_state(db)
    return {"seconds": res.seconds, "maxrss_mb": res.maxrss_mb, "peak_mb": res.peak_mb,
            "tree_rss_mb": res.tree_rss_mb, "procs": res.procs, "rows": out.get("rows"),
            "logged_seconds": out.get("seconds"), "quarantined": out.get("quarantined"),
            "state": out.get("state"), "backup_copy_s": taken, "census_s": census, "tables": tables,
            "warnings": warnings[:10], "log": str(log), "dsn_db": dbname}


def clean_state(db: Path) -> None:
    import shutil

    shutil.rmtree(db.with_name(db.name + ".replicator"), ignore_errors=True)


# --------------------------------------------------------------------------- checks


CHECK_SQL = ("SELECT count(*) AS n, coalesce(sum(('x' || substr(md5(t::text), 1, 15))::bit(60)::bigint),"
             " 0)::text AS h FROM {t} AS t")


def content_hashes(dsn: str, tables: list[str]) -> dict[str, tuple[int, str]]:
    async def go() -> dict[str, tuple[int, str]]:
        conn = await asyncpg.connect(dsn)
        try:
            out = {}
            for t in tables:
                r = await conn.fetchrow(CHECK_SQL.format(t=f'"public"."{t}"'))
                out[t] = (r["n"], r["h"])
            return out
        finally:
            await conn.close()

    return asyncio_run(go())


# --------------------------------------------------------------------------- the benchmark


def bench(server: Server, db: Path, rows: int, reps: int, *, anchors: bool = True,
          check: bool = True, ddl_from: Path | None = None, duckdb: bool = False,
          label: str = "") -> dict[str, Any]:
    """``reps`` rounds; each round runs every tool once, in a rotating order.

    ``anchors``: the ceiling and pgloader (and DuckDB when ``duckdb``) besides the replicator.
    ``ddl_from``: take the DDL from another database made by the same generator (`plan` reads
    every value, which takes minutes at 16M rows); the column types the replicator actually
    created are compared with it after round 1. An anchor that cannot load the file (pgloader
    with errors, DuckDB refusing a value) is recorded with its error and not run again."""
    sql_dir = emitted_sql(ddl_from or db)
    tables = list(ddl_tables(sql_dir))
    if anchors:
        export_csv(db, sql_dir)
    tools = (["ceiling", "pgloader", *(["duckdb"] if duckdb else []), "replicator"] if anchors
             else ["replicator"])
    runs: dict[str, list[dict[str, Any]]] = {t: [] for t in tools}
    checked: dict[str, Any] = {}
    gave_up: set[str] = set()
    tag = f" {label}" if label else ""
    for rep in range(reps):
        order = tools[rep % len(tools):] + tools[: rep % len(tools)]
        for tool in order:
            if tool in gave_up:
                continue
            name = f"b_{tool}"
            say(f"snapshot{tag} {rows:,} rows, round {rep + 1}/{reps}: {tool}")
            if tool == "ceiling":
                r = run_ceiling(server, db, sql_dir, name)
            elif tool == "pgloader":
                r = run_pgloader(server, db, name)
            elif tool == "duckdb":
                r = run_duckdb(server, db, name, tables)
            else:
                r = run_replicator(server, db, name)
            say(f"  {tool}: {r['seconds']:.2f}s wall, peak {r['peak_mb']:.0f} MB "
                f"({r['procs']} processes; largest single {r['maxrss_mb']:.0f} MB)"
                + (" — FAILED, not run again" if "error" in r else ""))
            runs[tool].append(r)
            if "error" in r:
                gave_up.add(tool)
            if tool in ("pgloader", "duckdb") or not (check and rep == 0):
                server.drop(name)
        if check and rep == 0:
            # The ceiling must load exactly what the replicator loads: same rows, same values.
            rep_h = content_hashes(with_db(server.dsn, "b_replicator"), tables)
            checked["replicator_rows"] = {t: h[0] for t, h in rep_h.items()}
            duck = [r for r in runs.get("duckdb", []) if "table_rows" in r]
            if duck:
                checked["duckdb_rows_equal_replicator"] = duck[0]["table_rows"] == checked["replicator_rows"]
            if anchors:
                ct = column_types(with_db(server.dsn, "b_ceiling"))
                rt = column_types(with_db(server.dsn, "b_replicator"))
                checked["ceiling_types_equal_replicator"] = ct == rt
                if ct != rt:
                    say(f"WARNING: column types differ: ceiling {ct} vs replicator {rt}")
            if anchors:
                ceil_h = content_hashes(with_db(server.dsn, "b_ceiling"), tables)
                checked["ceiling_equals_replicator"] = ceil_h == rep_h
                if ceil_h != rep_h:
                    say(f"WARNING: ceiling content differs from replicator: {ceil_h} vs {rep_h}")
            for name in ("b_ceiling", "b_replicator"):
                server.drop(name)
    out = summarize(rows, runs, checked)
    out["ddl_from"] = (ddl_from or db).name
    out["db"] = db.name
    return out


def column_types(dsn: str) -> list[tuple[str, str, str]]:
    async def go() -> list[tuple[str, str, str]]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch(
                "SELECT table_name, column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY 1, ordinal_position")
            return [tuple(r) for r in rows]
        finally:
            await conn.close()

    return asyncio_run(go())


def _stats(rows: int, rs: list[dict[str, Any]]) -> dict[str, Any]:
    secs = [r["seconds"] for r in rs]
    return {"median_s": rnd(med(secs)), "min_s": rnd(min(secs)), "max_s": rnd(max(secs)),
            "peak_mb": rnd(max(r["peak_mb"] for r in rs), 1),
            "single_process_peak_mb": rnd(max(r["maxrss_mb"] for r in rs), 1),
            "procs": max(r.get("procs", 1) for r in rs),
            "rows_per_s": round(rows / med(secs))}


def _ratios(out: dict[str, Any], key: str, num: list[dict], den: list[dict]) -> None:
    """``ratio_<key>`` (of the medians) and ``paired_<key>`` (median of per-round ratios, only when
    both tools completed every round)."""
    a = [r["seconds"] for r in num if "error" not in r]
    b = [r["seconds"] for r in den if "error" not in r]
    if not a or not b:
        return
    out[f"ratio_{key}"] = rnd(med(a) / med(b), 2)
    if len(a) == len(num) == len(b) == len(den):
        out[f"paired_{key}"] = rnd(med([x / y for x, y in zip(a, b, strict=True)]), 2)


def summarize(rows: int, runs: dict[str, list[dict]], checked: dict) -> dict[str, Any]:
    out: dict[str, Any] = {"rows": rows, "reps": len(runs["replicator"]), "runs": runs, "check": checked}
    for tool, rs in runs.items():
        ok = [r for r in rs if "error" not in r]
        out[tool] = _stats(rows, ok) if ok else {}
        if len(ok) < len(rs):
            bad = next(r for r in rs if "error" in r)
            out[tool]["error"] = bad["error"]
            if bad.get("stage"):
                out[tool]["stage"] = bad["stage"]
        if tool == "replicator":
            out[tool]["logged_median_s"] = rnd(med([r["logged_seconds"] or 0 for r in rs]))
            census = [(r["census_s"], r["logged_seconds"]) for r in rs
                      if r.get("census_s") is not None and r.get("logged_seconds")]
            if census:
                out[tool]["census_median_s"] = rnd(med([c for c, _ in census]))
                out[tool]["census_share"] = rnd(med([c / t for c, t in census]), 4)
        if tool == "duckdb" and ok:
            out[tool]["duckdb"] = ok[0].get("duckdb")
    rep = runs["replicator"]
    if "ceiling" in runs:
        _ratios(out, "replicator_over_ceiling", rep, runs["ceiling"])
        _ratios(out, "pgloader_over_replicator", runs["pgloader"], rep)
        _ratios(out, "pgloader_over_ceiling", runs["pgloader"], runs["ceiling"])
        out.pop("paired_pgloader_over_ceiling", None)
    if "duckdb" in runs:
        _ratios(out, "replicator_over_duckdb", rep, runs["duckdb"])
        if "ceiling" in runs:
            _ratios(out, "duckdb_over_ceiling", runs["duckdb"], runs["ceiling"])
            out.pop("paired_duckdb_over_ceiling", None)
    return out


__all__ = ["bench", "emitted_sql", "export_csv", "plan_time", "PY"]
