"""Lag benchmark: end-to-end delay from an app's commit in SQLite to the row being visible in
Postgres, with the app writing ~500 single-row transactions per second.

Roles (this file is also run as a subprocess):
    python bench/lag_bench.py app DB --rate 500 --seconds 30 --out FILE
    python bench/lag_bench.py proxy --listen PORT --to PORT --rtt-ms 20 --out FILE

The orchestration (``bench()``) starts the daemon on a copy of a small database (either data set;
``bench/run.py lag`` runs each of ``--data`` and switches the copy to WAL) that has an extra
table ``lagprobe(id INTEGER PRIMARY KEY, t_write REAL)``, starts the app, and polls Postgres every
~5 ms from the bench process for new lagprobe rows, recording ``time.time() - t_write`` for each
(same host, same clock). A row is seen at most one poll period after it became visible, so the
figures overstate the lag by at most the poll period (reported as ``poll_error_bound``).

With ``rtt_ms`` the daemon reaches Postgres through a delay proxy (half the RTT each way) while
the observer stays direct: the difference shows what a remote target such as Neon adds, and the
proxy counts request/response turns (round trips) to give round trips per batch.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from replicator.embedded import free_port

# --------------------------------------------------------------------------- the app


def app(db: Path, rate: float, seconds: float, out: Path, synchronous: str = "NORMAL") -> None:
    conn = sqlite3.connect(db, isolation_level=None, timeout=5.0)
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    n = int(rate * seconds)
    t0 = time.time() + 0.05
    late = 0
    busy = 0
    commit_ms = []
    for i in range(n):
        due = t0 + i / rate
        delay = due - time.time()
        if delay > 0:
            time.sleep(delay)
        elif delay < -0.05:
            late += 1
        t = time.time()
        try:
            conn.execute("INSERT INTO lagprobe (t_write) VALUES (?)", (t,))
        except sqlite3.OperationalError as exc:
            busy += 1
            print(f"app write failed: {exc}", file=sys.stderr)
            continue
        commit_ms.append((time.time() - t) * 1000)
    elapsed = time.time() - t0
    conn.close()
    commit_ms.sort()
    out.write_text(json.dumps({
        "rows": len(commit_ms), "seconds": round(elapsed, 3), "rate": round(len(commit_ms) / elapsed, 1),
        "late_over_50ms": late, "write_errors": busy,
        "commit_ms_p50": round(commit_ms[len(commit_ms) // 2], 3) if commit_ms else None,
        "commit_ms_p99": round(commit_ms[int(len(commit_ms) * 0.99)], 3) if commit_ms else None,
        "commit_ms_max": round(commit_ms[-1], 3) if commit_ms else None,
    }))


# --------------------------------------------------------------------------- the delay proxy


class Stats:
    def __init__(self) -> None:
        self.turns = 0          # client->server flights that follow a server reply (round trips)
        self.connections = 0
        self.bytes_up = 0
        self.bytes_down = 0


async def proxy(listen: int, to: int, rtt_ms: float, out: Path) -> None:
    one_way = rtt_ms / 2000
    stats = Stats()

    async def pump(reader, writer, up: bool, last: list) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(Exception):
                writer.close()

        task = asyncio.create_task(deliver())
        try:
            while data := await reader.read(65536):
                if up:
                    stats.bytes_up += len(data)
                    if last[0] != "up":
                        stats.turns += 1
                else:
                    stats.bytes_down += len(data)
                last[0] = "up" if up else "down"
                queue.put_nowait((time.monotonic() + one_way, data))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait((0, None))
            with contextlib.suppress(Exception):
                await task

    async def handle(cr, cw) -> None:
        stats.connections += 1
        try:
            sr, sw = await asyncio.open_connection("127.0.0.1", to)
        except OSError:
            cw.close()
            return
        last = ["down"]
        await asyncio.gather(pump(cr, sw, True, last), pump(sr, cw, False, last))

    server = await asyncio.start_server(handle, "127.0.0.1", listen)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, lambda: write())

    def write() -> None:
        out.write_text(json.dumps({"turns": stats.turns, "connections": stats.connections,
                                   "bytes_up": stats.bytes_up, "bytes_down": stats.bytes_down,
                                   "at": time.time()}))

    write()
    async with server:
        await stop.wait()
    write()


# --------------------------------------------------------------------------- orchestration


def prepare_db(src: Path, name: str, journal_mode: str | None = None) -> Path:
    """A private copy of ``src`` with the probe table (and in ``journal_mode``, e.g. ``wal``;
    default: the file's own)."""
    from common import scratch_copy

    db = scratch_copy(src, name)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE lagprobe (id INTEGER PRIMARY KEY, t_write REAL)")
    if journal_mode:
        conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    conn.close()
    return db


def journal_mode_of(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()


async def observe(dsn: str, expected_rows: int, app_done, timeout_after_app: float = 60
                  ) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    lags: list[float] = []
    polls: list[float] = []   # time from a poll's start to the next poll's end (error bound)
    cursors: set[int] = set()
    last_id = 0
    prev_start = None
    stmt = await conn.prepare(
        "SELECT (SELECT cursor FROM _replicator.state) AS c, id, t_write FROM "
        "(SELECT 0 AS k) AS one LEFT JOIN lagprobe ON id > $1 ORDER BY id")
    done_at = None
    try:
        while True:
            start = time.time()
            rows = await stmt.fetch(last_id)
            now = time.time()
            if prev_start is not None:
                polls.append(now - prev_start)
            prev_start = start
            if rows:
                cursors.add(rows[0]["c"])
            for r in rows:
                if r["id"] is not None:
                    lags.append(now - r["t_write"])
                    last_id = r["id"]
            if app_done() and done_at is None:
                done_at = time.monotonic()
            if len(lags) >= expected_rows and app_done():
                break
            if done_at is not None and time.monotonic() - done_at > timeout_after_app:
                break
            await asyncio.sleep(0.005)
    finally:
        await conn.close()
    return {"lags": lags, "polls": polls, "batches": len(cursors) - 1}


def files_name(label: str, tag: str | None = None) -> str:
    """The stem of a variant's files (``bench/data/work/<stem>.db``, ``bench/out/logs/<stem>*``):
    ``lag-<tag>-<label>`` (tag: the data set), or ``lag-<label>`` without a tag."""
    return f"lag-{tag}-{label}" if tag else f"lag-{label}"


async def _bench(server, src: Path, seconds: float, rate: float, rtt_ms: float, config: str,
                 label: str, tag: str | None = None, journal_mode: str | None = None
                 ) -> dict[str, Any]:
    from catchup import exited, start, stop, wait_streaming
    from common import LOGS, PY, Child, pct, rnd, say

    stem = files_name(label, tag)
    db = prepare_db(src, f"{stem}.db", journal_mode)
    pg_db = f"b_lag_{tag}_{label}" if tag else f"b_lag_{label}"
    dsn = server.fresh(pg_db)
    cfg = LOGS / f"{stem}.toml"
    cfg.write_text(config)
    log = LOGS / f"{stem}.log"
    log.write_text("")
    proxy_child = None
    daemon_dsn = dsn
    proxy_out = LOGS / f"{stem}-proxy.json"
    if rtt_ms:
        proxy_child, daemon_dsn = start_delay_proxy(dsn, rtt_ms, proxy_out)
    extra = ["--config", str(cfg)]
    daemon = start(db, daemon_dsn, log, extra)
    try:
        await wait_streaming(dsn, daemon)
        await asyncio.sleep(2.0)
        app_out = LOGS / f"{stem}-app.json"
        app_out.unlink(missing_ok=True)
        turns0 = _proxy_turns(proxy_child, proxy_out)
        say(f"lag[{tag + ', ' if tag else ''}{label}]: app writing {rate:.0f} rows/s for {seconds:.0f}s"
            + (f" (daemon through a {rtt_ms} ms RTT proxy)" if rtt_ms else ""))
        app_child = Child([PY, Path(__file__), "app", db, "--rate", rate, "--seconds", seconds,
                           "--out", app_out], log=LOGS / f"{stem}-app.log")
        obs = await observe(dsn, int(rate * seconds), app_child.poll)
        app_res = app_child.wait(60)
        turns1 = _proxy_turns(proxy_child, proxy_out)
        if exited(daemon):
            raise RuntimeError(f"the daemon exited during the lag run; see {log}")
    finally:
        res = stop(daemon)
        if proxy_child is not None:
            proxy_child.terminate(10)
        server.drop(pg_db)
    appstats = json.loads(app_out.read_text()) if app_out.exists() else {"error": app_res.tail()}
    lags, polls = obs["lags"], obs["polls"]
    out = {
        "label": label, "rtt_ms_added": rtt_ms, "config": config.strip(),
        "journal_mode": journal_mode_of(db),
        "rows_observed": len(lags), "app": appstats,
        "lag_p50_s": rnd(pct(lags, 50), 4), "lag_p90_s": rnd(pct(lags, 90), 4),
        "lag_p99_s": rnd(pct(lags, 99), 4), "lag_max_s": rnd(max(lags), 4) if lags else None,
        "lag_mean_s": rnd(sum(lags) / len(lags), 4) if lags else None,
        "poll_period_median_ms": rnd(pct(polls, 50) * 1000, 2),
        "poll_error_bound_p99_ms": rnd(pct(polls, 99) * 1000, 2),
        "poll_error_bound_max_ms": rnd(max(polls) * 1000, 2) if polls else None,
        "batches_seen": obs["batches"],
        "daemon_maxrss_mb": round(res.maxrss_mb, 1) if res else None,
        "daemon_peak_mb": round(res.peak_mb, 1) if res else None,
        "log": str(log),
    }
    # Lag excluding the first 2 s of the app (warm-up).
    skip = int(rate * 2)
    if len(lags) > skip:
        rest = lags[skip:]
        out["steady_p50_s"] = rnd(pct(rest, 50), 4)
        out["steady_p99_s"] = rnd(pct(rest, 99), 4)
    if proxy_child is not None and turns0 is not None and turns1 is not None and obs["batches"] > 0:
        out["round_trips_during_app"] = turns1 - turns0
        out["round_trips_per_batch"] = rnd((turns1 - turns0) / obs["batches"], 2)
    warn = []
    for line in log.read_text(errors="replace").splitlines():
        if '"level": "warning"' in line or '"level": "error"' in line:
            warn.append(line[:400])
    out["daemon_warnings"] = warn[:10]
    return out


def start_delay_proxy(dsn: str, rtt_ms: float, out: Path) -> tuple[Any, str]:
    """The delay proxy as a child process in front of ``dsn``'s server: (child, proxied DSN)."""
    from common import LOGS, PY, Child

    port = free_port()
    pg_port = int(dsn.rsplit(":", 1)[1].split("/")[0])
    child = Child([PY, Path(__file__), "proxy", "--listen", port, "--to", pg_port,
                   "--rtt-ms", rtt_ms, "--out", out], log=LOGS / f"{out.stem}.log")
    time.sleep(0.5)
    return child, dsn.replace(f":{pg_port}/", f":{port}/")


def _proxy_turns(child, path: Path) -> int | None:
    if child is None:
        return None
    mtime = path.stat().st_mtime if path.exists() else 0
    child.send_signal(signal.SIGUSR1)
    for _ in range(200):
        time.sleep(0.01)
        if path.exists() and path.stat().st_mtime != mtime:
            break
    with contextlib.suppress(Exception):
        return json.loads(path.read_text())["turns"]
    return None


def bench(server, src: Path, *, seconds: float, rate: float, rtt_ms: float,
          variants: list[str], tag: str | None = None, journal_mode: str | None = None
          ) -> dict[str, Any]:
    """One result per variant, keyed by its label. ``tag`` (the data set) goes into the names of
    the variant's files and database; ``journal_mode`` sets the copy's (default: the file's)."""
    configs = {
        "default": "[log]\nsummary_interval = 5\n",
        "verify_off": "[log]\nsummary_interval = 5\n[verify]\ninterval = 0\n",
    }
    results = {}
    for v in variants:
        if v == "rtt":
            if rtt_ms:
                label = f"rtt{rtt_ms:g}ms"
                results[label] = asyncio.run(_bench(server, src, seconds, rate, rtt_ms, configs["default"],
                                                    label, tag, journal_mode))
            continue
        results[v] = asyncio.run(_bench(server, src, seconds, rate, 0, configs[v], v, tag, journal_mode))
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="role", required=True)
    a = sub.add_parser("app")
    a.add_argument("db", type=Path)
    a.add_argument("--rate", type=float, default=500)
    a.add_argument("--seconds", type=float, default=30)
    a.add_argument("--out", type=Path, required=True)
    a.add_argument("--synchronous", default="NORMAL")
    p = sub.add_parser("proxy")
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--to", type=int, required=True)
    p.add_argument("--rtt-ms", type=float, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.role == "app":
        app(args.db, args.rate, args.seconds, args.out, args.synchronous)
    else:
        asyncio.run(proxy(args.listen, args.to, args.rtt_ms, args.out))


if __name__ == "__main__":
    main()
