"""Crash-safety chaos: kill -9 the daemon at random moments while an application writes, restart it
each time, then let a last daemon catch up, cut over and compare every value.

As a library (the source file and the target database are the caller's)::

    summary = chaos.run(source, target_dsn, kills=8, seed=7, workdir=tmp_path)

As a script (builds its own SQLite file and, unless ``--target`` is given, its own embedded
Postgres in a temp dir, which it stops at the end)::

    python -m tests.support.chaos --kills 100 --seed 7 [--target DSN] [--keep]

Prints the summary as JSON; exit status 0 only when the target ended exact and the application
never saw an error.

The application is ``tests/support/writer.py``'s ``Writer`` (app scenario) in its own process, driven until
told to stop (SIGTERM) instead of for a fixed number of operations, so it writes through every kill
and through the final catch-up; its schema changes (ADD COLUMN, CREATE TABLE) happen at fixed
operation counts, mid-chaos.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from .helpers import (
    ROOT,
    Daemon,
    cli,
    compare_all,
    log_high_water,
    pg_state,
    wait_caught_up,
    wait_for,
)


class ChaosFailure(AssertionError):
    """The product did not survive; ``summary`` holds what happened up to then."""

    def __init__(self, message: str, summary: dict[str, Any]):
        super().__init__(message)
        self.summary = summary


# -- the source database -----------------------------------------------------------------------


def build_source(path: Path, users: int = 3000, bulk_rows: int = 300_000, seed: int = 3) -> None:
    """The generated app database plus a bulk ``readings`` table, so the snapshot takes seconds."""
    from .writer import create_app_db

    create_app_db(str(path), users=users, seed=seed)
    rng = random.Random(seed)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, sensor TEXT, value REAL, raw BLOB)")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO readings (sensor, value, raw) VALUES (?, ?, ?)",
            ((f"s{i % 97}", rng.random() * 1e6, rng.randbytes(16)) for i in range(bulk_rows)),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


# -- the application writer (child process) ----------------------------------------------------


def start_writer(source: Path, workdir: Path, seed: int, pause: float,
                 midway: tuple[int, int]) -> tuple[subprocess.Popen, Path]:
    report = workdir / f"writer-{seed}.json"
    report.unlink(missing_ok=True)
    with open(workdir / "writer.stderr", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.chaos", "writer", str(source), "--seed", str(seed),
             "--pause", str(pause), "--report", str(report),
             "--midway", f"{midway[0]},{midway[1]}"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
        )
    return proc, report


def stop_writer(proc: subprocess.Popen, report: Path, timeout: float = 60) -> dict:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise AssertionError("the writer did not stop on SIGTERM") from None
    if not report.exists():
        raise AssertionError(f"the writer exited {proc.returncode} without a report")
    return json.loads(report.read_text())


def _writer_main(argv: list[str]) -> int:
    """Child process: run ``Writer`` (app scenario) until SIGTERM, then write its report."""

    from .writer import Writer

    ap = argparse.ArgumentParser(prog="tests.support.chaos writer")
    ap.add_argument("db")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--pause", type=float, default=0.005)
    ap.add_argument("--report", required=True)
    ap.add_argument("--midway", default="300,900", help="op counts of ADD COLUMN, CREATE TABLE")
    args = ap.parse_args(argv)
    add_at, create_at = (int(x) for x in args.midway.split(","))
    stop = False

    def on_term(_sig, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    w = Writer(args.db, args.seed, "app")
    i = 0
    started = time.monotonic()
    try:
        while not stop:
            w.step(i, add_at=add_at, create_at=create_at)
            i += 1
            if args.pause:
                time.sleep(args.pause)
    except Exception:  # noqa: BLE001 - recorded, like writer.py does
        import traceback

        w.errors.append(traceback.format_exc())
    report = {"ops": w.ops, "errors": w.errors, "midway": sorted(w.midway_done),
              "seconds": round(time.monotonic() - started, 2)}
    Path(args.report).write_text(json.dumps(report))
    return 1 if w.errors else 0


# -- the chaos run -----------------------------------------------------------------------------


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text()[-n:]
    except OSError:
        return ""


async def run_async(source: Path, target_dsn: str, kills: int, seed: int, workdir: Path, *,
                    min_delay: float = 0.2, max_delay: float = 3.0, pause: float = 0.005,
                    midway: tuple[int, int] = (300, 900), catch_up_timeout: float = 180,
                    snapshot_share: float = 0.25, progress=None) -> dict[str, Any]:
    source, workdir = Path(source), Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    say = progress or (lambda _msg: None)
    t0 = time.monotonic()
    kill_log: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"seed": seed, "kills_planned": kills, "kills": kill_log}

    def fail(message: str, daemon: Daemon | None = None) -> ChaosFailure:
        summary["elapsed_s"] = round(time.monotonic() - t0, 1)
        summary["failure"] = message
        if daemon is not None:
            summary["daemon_log"] = str(daemon.log)
            message += f"\n--- {daemon.log} (tail) ---\n{_tail(daemon.log)}"
        return ChaosFailure(message, summary)

    writer, report = start_writer(source, workdir, seed, pause, midway)
    daemon: Daemon | None = None
    try:
        snapshot_quota = max(1, round(kills * snapshot_share))
        for n in range(1, kills + 1):
            daemon = Daemon(source, target_dsn, log=workdir / f"daemon-{n:03d}.log")
            started = time.monotonic()

            def check_alive(daemon: Daemon = daemon, n: int = n) -> None:
                if daemon.proc.poll() is not None:
                    raise fail(f"daemon #{n} (restart after {n - 1} kills) exited "
                               f"{daemon.proc.returncode} on its own", daemon)
                if writer.poll() is not None:
                    raise fail(f"the writer died (exit {writer.returncode}): "
                               f"{_tail(workdir / 'writer.stderr')}")

            if sum(k["state"] == "snapshot" for k in kill_log) >= snapshot_quota:
                # Enough kills landed in the snapshot: let this one finish it, kill while streaming.
                deadline = time.monotonic() + catch_up_timeout
                while (st := await pg_state(target_dsn)) is None or st["state"] != "streaming":
                    check_alive()
                    if time.monotonic() > deadline:
                        raise fail(f"daemon #{n} did not reach streaming in {catch_up_timeout}s "
                                   f"(state {st})", daemon)
                    await asyncio.sleep(0.1)
                started = time.monotonic()
            delay = rng.uniform(min_delay, max_delay)
            while time.monotonic() - started < delay:
                check_alive()
                await asyncio.sleep(0.02)
            st = await pg_state(target_dsn)
            check_alive()
            daemon.kill9()
            state = st["state"] if st else "none"
            up = any(e.get("event") == "replicator_started" for e in daemon.events())
            kill_log.append({"n": n, "after_s": round(time.monotonic() - started, 2),
                             "state": state, "cursor": st["cursor"] if st else None,
                             "daemon_started": up})
            say(f"kill {n}/{kills}: {state} after {kill_log[-1]['after_s']}s"
                f"{'' if up else ' (daemon still starting)'}")
            if state == "error":
                raise fail(f"target state 'error' before kill #{n}: {st['error']}", daemon)

        say("final daemon: catching up under the writer")
        daemon = Daemon(source, target_dsn, log=workdir / "daemon-final.log")
        caught = time.monotonic()
        mark = log_high_water(source)  # the writer keeps writing: catch up to a fixed mark first

        async def reached_mark() -> bool:
            st = await pg_state(target_dsn)
            return st is not None and st["state"] == "streaming" and st["cursor"] >= mark

        try:
            await wait_for(reached_mark, catch_up_timeout, f"cursor >= {mark}", daemon)
        except AssertionError as exc:
            raise fail(f"the final daemon did not catch up: {str(exc)[:300]}", daemon) from None
        summary["catch_up_under_writer_s"] = round(time.monotonic() - caught, 1)
        writer_report = stop_writer(writer, report)
        summary["writer"] = {"ops": sum(writer_report["ops"].values()),
                             "by_kind": writer_report["ops"], "midway": writer_report["midway"],
                             "seconds": writer_report["seconds"],
                             "errors": writer_report["errors"][:10]}
        if writer_report["errors"]:
            raise fail(f"the application saw {len(writer_report['errors'])} SQLite errors: "
                       f"{writer_report['errors'][:5]}")
        try:
            await wait_caught_up(target_dsn, source, daemon, timeout=catch_up_timeout)
        except AssertionError as exc:
            raise fail(f"the final daemon did not catch up: {str(exc)[:300]}", daemon) from None
        summary["catch_up_total_s"] = round(time.monotonic() - caught, 1)
        say("cutover")
        out = cli("cutover", "--source", str(source), "--target", target_dsn, "--json", timeout=300)
        if out.returncode != 0:
            raise fail(f"cutover exited {out.returncode}: {out.stdout[-1500:]} {out.stderr[-1500:]}",
                       daemon)
        code = daemon.wait(60)
        if code != 0:
            raise fail(f"the final daemon exited {code} after cutover", daemon)
        st = await pg_state(target_dsn)
        if not st or st["state"] != "done":
            raise fail(f"state after cutover: {st}", daemon)
        say("comparing every value")
        try:
            counts = await compare_all(source, target_dsn, expect_quarantined={})
        except AssertionError as exc:
            raise fail(f"value-by-value comparison failed: {exc}", daemon) from None
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(10)
        if daemon is not None:
            daemon.kill9_if_running()
            daemon.fh.close()  # a daemon that died on its own still holds its log open
    states = Counter(k["state"] for k in kill_log)
    summary.update({
        "kills_survived": len(kill_log),
        "kills_in_snapshot": states.get("snapshot", 0),
        "kills_in_streaming": states.get("streaming", 0),
        "kills_before_snapshot": states.get("none", 0) + states.get("new", 0),
        "kills_before_daemon_logged_start": sum(not k["daemon_started"] for k in kill_log),
        "kill_states": dict(states),
        "writer_ops": summary["writer"]["ops"],
        "final_cursor": st["cursor"],
        "log_high_water": log_high_water(source),
        "rows": counts,
        "rows_total": sum(counts.values()),
        "exact": True,
        "elapsed_s": round(time.monotonic() - t0, 1),
    })
    summary["kills"] = [f"{k['n']}:{k['state']}@{k['after_s']}s{'' if k['daemon_started'] else '*'}"
                        for k in kill_log]  # *: killed before it logged replicator_started
    return summary


def run(source: Path, target_dsn: str, kills: int, seed: int, workdir: Path, **kw) -> dict[str, Any]:
    """Synchronous entry point (for sync tests and scripts); see ``run_async``."""
    return asyncio.run(run_async(source, target_dsn, kills, seed, workdir, **kw))


# -- script ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "writer":
        return _writer_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m tests.support.chaos", description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=100)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--target", help="an empty target database (default: a fresh embedded server)")
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--bulk-rows", type=int, default=300_000)
    ap.add_argument("--min-delay", type=float, default=0.2)
    ap.add_argument("--max-delay", type=float, default=3.0)
    ap.add_argument("--workdir", type=Path, help="keep the files here (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir and embedded server")
    args = ap.parse_args(argv)

    tmp = args.workdir or Path(tempfile.mkdtemp(prefix="replicator-chaos-"))
    tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o755)  # the embedded server may run as an unprivileged user
    pg_home = tmp / "pg"
    own_server = args.target is None
    ok = False
    try:
        if own_server:
            cli("embedded", "start", "--dir", str(pg_home), check=True, timeout=180)
            target = cli("embedded", "dsn", "--dir", str(pg_home), check=True).stdout.strip()
        else:
            target = args.target
        source = tmp / "app.db"
        source.unlink(missing_ok=True)
        build_source(source, users=args.users, bulk_rows=args.bulk_rows)
        try:
            summary = run(source, target, args.kills, args.seed, tmp,
                          min_delay=args.min_delay, max_delay=args.max_delay,
                          progress=lambda m: print(m, file=sys.stderr, flush=True))
            ok = True
        except ChaosFailure as exc:
            summary = {**exc.summary, "exact": False, "error": str(exc)}
        summary["workdir"] = str(tmp)
        print(json.dumps(summary, indent=2, default=str))
        return 0 if ok else 1
    finally:
        keep = args.keep or not ok or args.workdir is not None
        if own_server and not keep:
            cli("embedded", "stop", "--dir", str(pg_home))
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif own_server:
            print(f"kept {tmp} (stop its server: replicator embedded stop --dir {pg_home})",
                  file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
