"""Does the replicator make the application see `database is locked`? (issue 17)

For each journal mode (rollback journal `delete`, and `wal`), transaction shape (`deferred`
read-then-write, `immediate`, `autocommit`) and busy timeout (0, 5 s, 20 s), an application
process (tests/support/app_shapes.py) runs N transactions against a private copy of an app
database, twice:

* control: alone;
* daemon:  `replicator run` is started once the app is running, so the app lives through the
  daemon's install, backup, snapshot file copy, census, streaming and pruning; when the app is
  done the daemon catches up, `replicator verify` compares every value, and the daemon stops.

The app counts every SQLite error it gets; the table reports both counts per cell, how many
of the daemon run's errors fell within 50 ms of one of the daemon's writes to the file, and the
longest app transaction (how long it waited for a lock). The app pauses between transactions
(`--pause-ms`, mean; default 0.5 ms) as request handlers do; `--pause-ms 0` is a tight loop.

    python bench/locking_bench.py [--txns 100000] [--rows 160000] [--journals wal,delete]
        [--shapes deferred,immediate,autocommit] [--busy 0,5000,20000] [--pg-home DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    DATA,
    LOGS,
    PY,
    REPLICATOR,
    ROOT,
    Server,
    clean_sqlite,
    save,
    say,
    scratch_copy,
    table,
)

APP = ROOT / "tests" / "support" / "app_shapes.py"
DAEMON_CONFIG = "[verify]\ninterval = 0\n[metrics]\naddr = \"off\"\n"


def base_db(rows: int, journal: str) -> Path:
    path = DATA / f"locking-{rows}-{journal}.db"
    if not path.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        subprocess.run([PY, str(APP), str(path), "--create-rows", str(rows), "--journal", journal],
                       check=True)
    return path


def app(db: Path, shape: str, busy: int, txns: int, report: Path,
        pause_ms: float) -> subprocess.Popen:
    return subprocess.Popen([PY, str(APP), str(db), "--shape", shape, "--txns", str(txns),
                             "--busy-ms", str(busy), "--report", str(report),
                             "--pause-ms", str(pause_ms)], stdout=subprocess.DEVNULL)


def daemon_events(log: Path) -> list[dict[str, Any]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def wait_event(log: Path, name: str, proc: subprocess.Popen, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("event") == name for e in daemon_events(log)):
            return time.monotonic()
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited {proc.returncode}; see {log}")
        time.sleep(0.05)
    raise RuntimeError(f"no {name} within {timeout}s; see {log}")


def caught_up(db: Path, dsn: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([*REPLICATOR, "status", "--source", str(db), "--target", dsn, "--json"],
                             capture_output=True, text=True, cwd=ROOT)
        if out.returncode == 0:
            st = json.loads(out.stdout)
            if st["state"] == "streaming" and st["backlog_changes"] == 0:
                return
        time.sleep(0.5)
    raise RuntimeError("the daemon did not catch up")


def cell(server: Server, src: Path, journal: str, shape: str, busy: int, txns: int,
         with_daemon: bool, pause_ms: float) -> dict[str, Any]:
    tag = f"{journal}-{shape}-{busy}-{'daemon' if with_daemon else 'control'}"
    db = scratch_copy(src, f"locking-{tag}.db")
    report = LOGS / f"locking-{tag}.json"
    LOGS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = app(db, shape, busy, txns, report, pause_ms)
    result: dict[str, Any] = {"journal": journal, "shape": shape, "busy_ms": busy,
                              "daemon": with_daemon}
    if with_daemon:
        dsn = server.fresh(f"locking_{journal}_{shape}_{busy}")
        cfg = db.with_name(db.name + ".toml")
        cfg.write_text(DAEMON_CONFIG)
        log = LOGS / f"locking-{tag}.log"
        time.sleep(0.5)  # the app is running when the daemon starts, as in production
        with open(log, "w") as fh:
            daemon = subprocess.Popen([*REPLICATOR, "run", "--source", str(db), "--target", dsn,
                                       "--config", str(cfg), "--log-format", "json"],
                                      stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            wait_event(log, "caught_up", daemon, 600)
            result["caught_up_s"] = round(time.monotonic() - started, 2)
            app_rc = proc.wait(3600)
            caught_up(db, dsn)
            verify = subprocess.run([*REPLICATOR, "verify", "--source", str(db), "--target", dsn,
                                     "--json"], capture_output=True, text=True, cwd=ROOT)
            result["verify_ok"] = verify.returncode == 0
            if verify.returncode != 0:
                result["verify_output"] = verify.stdout[-2000:] + verify.stderr[-2000:]
        finally:
            daemon.terminate()
            daemon.wait(60)
        events = daemon_events(log)
        result["daemon_writes"] = _writes(events)
        result["write_windows"] = _windows(events)
        server.drop(f"locking_{journal}_{shape}_{busy}")
    else:
        app_rc = proc.wait(3600)
    if app_rc != 0:
        raise RuntimeError(f"app exited {app_rc}")
    rep = json.loads(report.read_text())
    result.update(txns=rep["txns"], errors=rep["errors"], messages=rep["messages"],
                  app_seconds=rep["seconds"], latency_ms=rep["latency_ms"])
    if with_daemon:
        # Errors within 50 ms of one of the daemon's writes to the file, and the others.
        near = [t for t in rep["error_times"]
                if any(a - 0.05 <= t <= b + 0.05 for a, b in result["write_windows"])]
        result["errors_at_writes"] = len(near)
    clean_sqlite(db)
    say(f"{tag}: {rep['txns']} txns, {rep['errors']} errors, {rep['seconds']}s "
        + (f"verify {'ok' if result.get('verify_ok') else 'FAILED'}" if with_daemon else ""))
    return result


def _writes(events: list[dict[str, Any]]) -> dict[str, int]:
    """What the daemon wrote to the live file, by kind (from its log)."""
    out: dict[str, int] = {}
    for e in events:
        if e.get("event") == "source_write":
            out[e.get("what", "?")] = out.get(e.get("what", "?"), 0) + 1
    return out


def _windows(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """(start, end) unix times of each write the daemon made to the file (lock held)."""
    from datetime import datetime

    out = []
    for e in events:
        if e.get("event") == "source_write" and "timestamp" in e:
            end = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
            out.append((end - e.get("held_ms", 0) / 1000, end))
    return out


def render(cells: list[dict[str, Any]]) -> str:
    by = {(c["journal"], c["shape"], c["busy_ms"], c["daemon"]): c for c in cells}
    rows = []
    for (journal, shape, busy, daemon), c in sorted(by.items()):
        if daemon:
            continue
        d = by.get((journal, shape, busy, True))
        rows.append([journal, shape, f"{busy / 1000:g} s", f"{c['txns']:,}", c["errors"],
                     f"{d['txns']:,}" if d else "", d["errors"] if d else "",
                     d.get("errors_at_writes", "") if d else "",
                     f"{c['latency_ms']['max']:.0f} / {d['latency_ms']['max']:.0f}" if d else "",
                     ("ok" if d.get("verify_ok") else "FAILED") if d else ""])
    return table(["journal", "shape", "busy timeout", "control txns", "control errors",
                  "daemon txns", "daemon errors", "of which at a daemon write",
                  "max app txn ms (control / daemon)", "values"], rows)


def write_markdown(cells: list[dict[str, Any]], a: argparse.Namespace, seconds: float,
                   commit: str | None = None) -> Path:
    """bench/LOCKING.md: the table, with the machine and the command (RESULTS.md includes it)."""
    import os
    import platform

    commit = commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                      capture_output=True, text=True).stdout.strip()
    daemon = [c for c in cells if c["daemon"]]
    # A rollback journal with busy timeout 0 fails the application's commit at any reader.
    no_wait = [c for c in daemon if c["journal"] != "wal" and c["busy_ms"] == 0]
    others = [c for c in daemon if c not in no_wait]

    def errors(group: list[dict[str, Any]]) -> str:
        n, txns = sum(c["errors"] for c in group), sum(c["txns"] for c in group)
        near = sum(c.get("errors_at_writes", 0) for c in group)
        return (f"{n:,} app errors in {txns:,} transactions ({n / max(1, txns):.4%}), {near:,} of "
                "them within 50 ms of one of the daemon's writes to the file")
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, SQLite "
        f"{__import__('sqlite3').sqlite_version}; replicator at {commit}; {a.rows:,}-row app "
        f"database; {a.txns:,} app "
        f"transactions per cell, {a.pause_ms} ms mean pause between them; {seconds / 60:.0f} min. "
        f"Command: `python bench/locking_bench.py --txns {a.txns} --rows {a.rows} --journals "
        f"{a.journals} --shapes {a.shapes} --busy {a.busy} --pause-ms {a.pause_ms}`.", "",
        render(cells), "",
        f"Daemon runs, WAL at every busy timeout and rollback journal with one: {errors(others)}. "
        f"Rollback journal with busy timeout 0: {errors(no_wait)} (every read holds the "
        "application's commit off, and with no busy timeout the commit fails at once). Controls: "
        f"{sum(c['errors'] for c in cells if not c['daemon']):,} errors. Every daemon run ended "
        "with `replicator verify` "
        + ("exact." if all(c.get("verify_ok") for c in daemon) else "**reporting differences**."),
    ]
    path = ROOT / "bench" / "LOCKING.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--txns", type=int, default=100_000)
    ap.add_argument("--rows", type=int, default=160_000)
    ap.add_argument("--journals", default="wal,delete")
    ap.add_argument("--shapes", default="deferred,immediate,autocommit")
    ap.add_argument("--busy", default="0,5000,20000")
    ap.add_argument("--pause-ms", type=float, default=0.5,
                    help="mean think time between the app's transactions (0: a tight loop)")
    ap.add_argument("--pg-home", type=Path)
    ap.add_argument("--name", default="locking")
    a = ap.parse_args()
    server = Server.start(a.pg_home)
    started = time.monotonic()
    cells = []
    try:
        for journal in a.journals.split(","):
            src = base_db(a.rows, journal)
            for shape in a.shapes.split(","):
                for busy in (int(b) for b in a.busy.split(",")):
                    for with_daemon in (False, True):
                        cells.append(cell(server, src, journal, shape, busy, a.txns, with_daemon,
                                          a.pause_ms))
                        save(a.name, {"txns": a.txns, "rows": a.rows, "pause_ms": a.pause_ms,
                                      "cells": cells})
    finally:
        server.stop()
    print(render(cells))
    say(f"wrote {write_markdown(cells, a, time.monotonic() - started)}")


if __name__ == "__main__":
    main()
