"""Benchmark runner for issue 7 (snapshot, catch-up, lag, capture overhead, verify, scaling).

    python bench/run.py all --write-results            # everything (10x scaling only with --with-10x)
    python bench/run.py snapshot --reps 5              # one benchmark (both data sets: gen, app)
    python bench/run.py snapshot --data app            # one data set (also catchup, lag)
    python bench/run.py lag overhead --write-results   # several, then regenerate RESULTS.md
    python bench/run.py results                        # re-render RESULTS.md from bench/out/*.json

Every run starts its own embedded Postgres 17 under a temp home (same settings for every tool) and
creates a fresh database per tool run. Generated SQLite databases and CSV exports are kept in
bench/data/ and reused. Raw JSON goes to bench/out/<benchmark>.json (and bench/out/history/).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402
from common import LOGS, Server, ensure_db, med, rnd, save, say, scratch_copy  # noqa: E402

BENCHES = ["snapshot", "catchup", "lag", "overhead", "verify", "scaling"]


def _ints(text: str) -> list[int]:
    return [int(float(x)) for x in text.split(",") if x.strip()]


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="+", choices=[*BENCHES, "all", "results"])
    ap.add_argument("--reps", type=int, default=3, help="repetitions (median reported); default 3")
    ap.add_argument("--rows", type=int, default=1_600_000, help="the 1x database size (default 1.6M)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--write-results", action="store_true", help="regenerate bench/RESULTS.md at the end")
    ap.add_argument("--results-path", type=Path,
                    help="with --write-results or `results`: write the rendering here instead of "
                         "bench/RESULTS.md (sections not re-run are still taken from bench/RESULTS.md)")
    ap.add_argument("--pg-home", type=Path,
                    help="reuse/keep an embedded Postgres home (default: temp, removed)")
    g = ap.add_argument_group("snapshot / catchup / lag / scaling")
    g.add_argument("--data", default="gen,app",
                   help="snapshot, catchup, lag: data sets, comma-separated (default gen,app: "
                        "bench/generate.py and bench/generate_app.py); scaling, overhead and verify "
                        "always use gen")
    g.add_argument("--source-journal", choices=["wal", "keep"], default="wal",
                   help="catchup, lag: journal mode of the private copy the daemon replicates: wal "
                        "(default; generate.py's files are WAL already, generate_app.py's use a "
                        "rollback journal) or keep the file's own")
    g.add_argument("--no-duckdb", action="store_true", help="snapshot: skip the DuckDB anchor")
    g.add_argument("--plan-reps", type=int, default=1,
                   help="snapshot: timed runs of `replicator plan` per data set (default 1; 0 skips)")
    g.add_argument("--sizes", default="0.1,1", help="scaling sizes as multiples of --rows (default 0.1,1)")
    g.add_argument("--with-10x", action="store_true", help="add the 10x size to scaling (16M rows: minutes)")
    g.add_argument("--scaling-reps", type=int,
                   help="repetitions per scaling size (default: --reps, 1 for >=10x)")
    g.add_argument("--no-scaling-anchors", action="store_true", help="scaling: replicator only")
    g = ap.add_argument_group("catchup")
    g.add_argument("--changes", default="100000,300000", help="backlog sizes (default 100000,300000)")
    g.add_argument("--no-replay", action="store_true", help="skip the statement-replay anchor")
    g = ap.add_argument_group("lag")
    g.add_argument("--lag-seconds", type=float, default=30)
    g.add_argument("--lag-rate", type=float, default=500)
    g.add_argument("--lag-rows", type=int, help="database size for the lag run (default 0.1x)")
    g.add_argument("--rtt-ms", type=float, default=20, help="RTT added by the proxy variant (0: skip)")
    g.add_argument("--lag-variants", default="default,verify_off,rtt")
    g = ap.add_argument_group("overhead")
    g.add_argument("--overhead-n", type=int, default=10_000,
                   help="single-row transactions per block (many: rare checkpoint stalls move the mean)")
    g.add_argument("--overhead-rows", type=int, help="database size (default --rows)")
    g.add_argument("--sync", default="NORMAL,FULL", help="synchronous modes (default NORMAL,FULL)")
    args = ap.parse_args()
    args.data_sets = [x.strip() for x in args.data.split(",") if x.strip()]
    unknown = [x for x in args.data_sets if x not in common.DATA_SETS]
    if unknown or not args.data_sets:
        ap.error(f"--data: unknown data set(s) {unknown} (known: {', '.join(common.DATA_SETS)})")
    if "all" in args.what:
        args.what = BENCHES
    return args


def pg_settings() -> dict[str, str]:
    """The server settings every tool gets (the embedded defaults; nothing tuned for anyone)."""
    return {}


def _each_data_set(name: str, a: argparse.Namespace, top: dict[str, Any],
                   one: Any) -> dict[str, Any]:
    """``top`` plus one entry per data set of ``--data`` under ``data_sets``: what ``one(kind)``
    returns, with ``data_set``. A data set whose benchmark fails is recorded with its error (the
    other data sets still run and are saved); the benchmark fails when every data set failed."""
    out: dict[str, Any] = {**top, "data_sets": {}}
    for kind in a.data_sets:
        say(f"--- {name}, data set {kind}")
        try:
            r = one(kind)
        except Exception as exc:
            import traceback

            traceback.print_exc()
            say(f"{name}, data set {kind} FAILED: {type(exc).__name__}: {exc}")
            r = {"error": f"{type(exc).__name__}: {exc}"}
        r["data_set"] = kind
        out["data_sets"][kind] = r
    if all("error" in r for r in out["data_sets"].values()):
        raise RuntimeError(f"{name} failed on every data set: " + "; ".join(
            f"{k}: {r['error']}" for k, r in out["data_sets"].items()))
    return out


def run_snapshot(server: Server, a: argparse.Namespace) -> dict[str, Any]:
    """One entry per data set under ``data_sets``, each with the per-run structure that
    ``snapshot_bench.bench`` returns (what ``scaling`` reuses), plus ``plan`` (timed plain
    ``replicator plan`` runs). A data set whose benchmark fails is recorded with its error."""
    import snapshot_bench

    def one(kind: str) -> dict[str, Any]:
        db = ensure_db(a.rows, a.seed, kind)
        r = snapshot_bench.bench(server, db, a.rows, a.reps, duckdb=not a.no_duckdb, label=kind)
        plans = [snapshot_bench.plan_time(db) for _ in range(a.plan_reps)]
        if plans:
            ok = [p["seconds"] for p in plans if "error" not in p]
            r["plan"] = {"runs": plans, "median_s": rnd(med(ok)) if ok else None,
                         "peak_mb": max(p["peak_mb"] for p in plans)}
        return r

    return _each_data_set("snapshot", a, {"rows": a.rows, "reps": a.reps}, one)


def _journal(db: Path, a: argparse.Namespace) -> str:
    """Switch a private copy to WAL (``--source-journal wal``, the default) and return its
    journal mode."""
    import sqlite3

    conn = sqlite3.connect(db, isolation_level=None)
    try:
        if a.source_journal == "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        return conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()


def run_catchup(server: Server, a: argparse.Namespace) -> dict[str, Any]:
    """One entry per data set under ``data_sets``, each with the structure a catchup.json had
    before there were data sets (``rows``, ``reps``, ``sizes``, ``rtt``)."""
    return _each_data_set("catchup", a, {"rows": a.rows, "reps": a.reps},
                          lambda kind: _catchup_one(server, a, kind))


def _catchup_one(server: Server, a: argparse.Namespace, kind: str) -> dict[str, Any]:
    import catchup

    src = ensure_db(a.rows, a.seed, kind)
    db = scratch_copy(src, f"catchup-{kind}.db")
    journal = _journal(db, a)
    dsn = server.fresh("b_catchup")
    log = LOGS / f"catchup-{kind}.log"
    log.write_text("")

    def clone() -> str:
        server.drop("b_replay")
        server.admin('CREATE DATABASE "b_replay" TEMPLATE "b_catchup" OWNER replicator')
        server.created.append("b_replay")
        return common.with_db(server.dsn, "b_replay")

    say(f"catchup[{kind}]: initial snapshot by the daemon (not timed)")
    sizes: dict[str, Any] = {}
    seed = 5
    try:
        for n in _ints(a.changes):
            runs = []
            for rep in range(a.reps):
                seed += 1
                say(f"catchup[{kind}]: {n:,} changes, run {rep + 1}/{a.reps}")
                r = asyncio.run(catchup.measure(db, dsn, n, log, seed=seed,
                                                replay_dsn_factory=None if a.no_replay else clone))
                say(f"  drained {r['log_entries']:,} entries in {r['seconds']}s = {r['changes_per_s']:,}/s"
                    + (f"; replay {r['replay_changes_per_s']:,}/s" if "replay_changes_per_s" in r else ""))
                runs.append(r)
                server.drop("b_replay")
            s: dict[str, Any] = {"runs": runs}
            for key in ("log_entries", "changes_per_s", "changes_per_s_after_start", "app_changes_per_s",
                        "replay_changes_per_s"):
                vals = [r[key] for r in runs if r.get(key) is not None]
                if vals:
                    s[key] = round(med(vals))
            s["seconds"] = rnd(med([r["seconds"] for r in runs]))
            s["daemon_peak_mb"] = max((r.get("daemon_peak_mb") or r["daemon_maxrss_mb"] or 0) for r in runs)
            if s.get("replay_changes_per_s"):
                s["ratio_vs_replay"] = rnd(s["changes_per_s"] / s["replay_changes_per_s"], 2)
            sizes[str(n)] = s
        out: dict[str, Any] = {"rows": a.rows, "reps": a.reps, "db": src.name, "journal_mode": journal,
                               "sizes": sizes}
        if a.rtt_ms:
            out["rtt"] = _catchup_through_rtt(db, dsn, log, a, seed, kind)
    finally:
        server.drop("b_replay")
        server.drop("b_catchup")
        common.clean_sqlite(db)
    return out


def _catchup_through_rtt(db: Path, dsn: str, log: Path, a: argparse.Namespace, seed: int,
                         kind: str) -> dict[str, Any]:
    """The smallest backlog again, the daemon reaching Postgres through the delay proxy."""
    import catchup
    import lag_bench

    n = min(_ints(a.changes))
    child, proxied = lag_bench.start_delay_proxy(dsn, a.rtt_ms, LOGS / f"catchup-{kind}-rtt-proxy.json")
    try:
        runs = []
        for rep in range(a.reps):
            say(f"catchup[{kind}]: {n:,} changes through a {a.rtt_ms:g} ms RTT proxy, "
                f"run {rep + 1}/{a.reps}")
            r = asyncio.run(catchup.measure(db, proxied, n, log, seed=seed + 100 + rep))
            say(f"  drained {r['log_entries']:,} entries in {r['seconds']}s = {r['changes_per_s']:,}/s")
            runs.append(r)
    finally:
        child.terminate(10)
    return {"rtt_ms_added": a.rtt_ms, "changes": n, "runs": runs,
            "changes_per_s": round(med([r["changes_per_s"] for r in runs])),
            "seconds": rnd(med([r["seconds"] for r in runs]))}


def run_lag(server: Server, a: argparse.Namespace) -> dict[str, Any]:
    """One entry per data set under ``data_sets``, each with the structure a lag.json had before
    there were data sets (``rows``, ``rate``, ``seconds``, ``rtt``, ``variants``)."""
    import lag_bench

    rows = a.lag_rows or max(1000, a.rows // 10)
    variants = [v.strip() for v in a.lag_variants.split(",") if v.strip()]
    journal = "wal" if a.source_journal == "wal" else None

    def one(kind: str) -> dict[str, Any]:
        src = ensure_db(rows, a.seed, kind)
        rtt = server.rtt_ms()
        try:
            res = lag_bench.bench(server, src, seconds=a.lag_seconds, rate=a.lag_rate, rtt_ms=a.rtt_ms,
                                  variants=variants, tag=kind, journal_mode=journal)
        finally:
            for v in [*variants, f"rtt{a.rtt_ms:g}ms"]:
                common.clean_sqlite(common.DATA / "work" / f"{lag_bench.files_name(v, kind)}.db")
        modes = sorted({v.get("journal_mode") for v in res.values()} - {None})
        return {"rows": rows, "db": src.name, "journal_mode": ", ".join(modes), "rate": a.lag_rate,
                "seconds": a.lag_seconds, "rtt": rtt, "variants": res}

    return _each_data_set("lag", a, {"rows": rows, "rate": a.lag_rate, "seconds": a.lag_seconds}, one)


def run_overhead(server: Server, a: argparse.Namespace) -> dict[str, Any]:
    import overhead_bench

    rows = a.overhead_rows or a.rows
    src = ensure_db(rows, a.seed)
    res = overhead_bench.bench(src, rounds=max(2, a.reps * 2), n_single=a.overhead_n,
                               synchronous_modes=[s.strip().upper() for s in a.sync.split(",")])
    common.clean_sqlite(common.DATA / "work" / "overhead.db")
    return {"rows": rows, **res}


def run_verify(server: Server, a: argparse.Namespace) -> dict[str, Any]:
    import verify_bench

    return verify_bench.bench(server, ensure_db(a.rows, a.seed), a.reps)


def run_scaling(server: Server, a: argparse.Namespace) -> dict[str, Any]:
    import snapshot_bench

    mults = [float(x) for x in a.sizes.split(",") if x.strip()]
    if a.with_10x and 10.0 not in mults:
        mults.append(10.0)
    sizes = sorted({int(a.rows * m) for m in mults})
    out: dict[str, Any] = {"base_rows": a.rows, "sizes": {}}
    for n in sizes:
        reps = a.scaling_reps or (1 if n >= 10 * a.rows else a.reps)
        done = _DONE.get("snapshot", {}).get("data_sets", {}).get("gen", {})
        if n == a.rows and "replicator" in done and not a.scaling_reps:
            say(f"scaling: {n:,} rows: reusing the snapshot benchmark of this run (data set gen)")
            out["sizes"][str(n)] = done
            continue
        db = ensure_db(n, a.seed)
        say(f"scaling: {n:,} rows, {reps} round(s)")
        # `plan --emit-sql` reads every value (minutes at 16M rows): above 1x, the ceiling uses
        # the 1x database's DDL (same generator); round 1 checks the types match.
        base = ensure_db(a.rows, a.seed) if n > a.rows and not a.no_scaling_anchors else None
        r = snapshot_bench.bench(server, db, n, reps, anchors=not a.no_scaling_anchors, ddl_from=base)
        out["sizes"][str(n)] = r
    out["reps"] = a.scaling_reps or a.reps
    return out


_DONE: dict[str, Any] = {}  # results of this invocation (scaling reuses the 1x snapshot)

RUNNERS = {"snapshot": run_snapshot, "catchup": run_catchup, "lag": run_lag,
           "overhead": run_overhead, "verify": run_verify, "scaling": run_scaling}


def main() -> int:
    a = parse()
    import results

    if a.what == ["results"]:
        print(f"wrote {results.write_results(a.results_path)}")
        return 0
    LOGS.mkdir(parents=True, exist_ok=True)
    command = "python bench/run.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    server = Server.start(a.pg_home, pg_settings())
    failed = []
    try:
        info = server.info()
        common.save("machine", results.machine(info))
        for name in [w for w in a.what if w in RUNNERS]:
            say(f"=== {name}")
            before = os.getloadavg()
            code = results.code_version()
            t0 = time.monotonic()
            try:
                data = RUNNERS[name](server, a)
            except Exception as exc:  # keep going: one broken benchmark must not hide the others
                import traceback

                traceback.print_exc()
                failed.append(name)
                say(f"{name} FAILED: {type(exc).__name__}: {exc}")
                continue
            code["changed_during_run"] = results.code_version()["source_sha1"] != code["source_sha1"]
            data.update({"code": code, "command": command, "loadavg_before": [round(x, 2) for x in before],
                         "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                         "bench_seconds": round(time.monotonic() - t0, 1)})
            _DONE[name] = data
            path = save(name, data)
            text, targets = results.render_one(name, data)
            print(f"\n## {name}\n\n{text}\n")
            for t, m, ok in targets:
                print(f"  target: {t}: {m} -> {results.verdict(ok).strip('*')}")
            print(f"\n(raw: {path})\n", flush=True)
    finally:
        server.stop()
    if a.write_results:
        print(f"wrote {results.write_results(a.results_path)}")
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
