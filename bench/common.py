"""Shared helpers for the benchmarks: the private Postgres server, fresh databases, measured
subprocesses (wall time + peak RSS via wait4), reusable generated data, statistics, output files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DATA = BENCH / "data"
OUT = BENCH / "out"
LOGS = OUT / "logs"
PY = sys.executable
REPLICATOR = [PY, "-m", "replicator"]
SEED = 1


def say(*parts: object) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- measured processes


@dataclass
class Measured:
    argv: list[str]
    rc: int
    seconds: float
    maxrss_mb: float          # the largest single process of the tree (exact high-water mark)
    stdout: str = ""
    stderr_path: Path | None = None
    tree_pss_mb: float = 0.0  # sampled peak of the summed PSS of the process and its descendants
    tree_rss_mb: float = 0.0  # the same with RSS (counts shared pages once per process)
    procs: int = 1            # most processes seen at once in the tree

    @property
    def peak_mb(self) -> float:
        """Peak memory of the tool: the process tree's summed PSS (workers included), never
        below the largest single process' exact high-water mark."""
        return max(self.tree_pss_mb, self.maxrss_mb)

    def tail(self, n: int = 20) -> str:
        if not self.stderr_path or not self.stderr_path.exists():
            return ""
        return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-n:])


TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None
SAMPLE_S = 0.1


def _tree(root: int) -> list[int]:
    out, stack = [], [root]
    while stack:
        pid = stack.pop()
        out.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as fh:
                    stack += [int(x) for x in fh.read().split()]
        except OSError:
            pass
    return out


def _mem_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in kB; (0, 0) once it is gone."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, pss


class Child:
    """A started subprocess, wall-timed, with its own peak RSS in MB.

    Peak RSS comes from GNU time's %M: the ``ru_maxrss`` that wait4 reports for a direct child
    of this (large) Python process is at least this process' own RSS, because Linux carries the
    parent's high-water mark into a vfork/exec'd child. Under /usr/bin/time the measured command
    is forked from a ~2 MB process instead. Signals go to the measured command itself.
    """

    def __init__(self, argv: list[str], *, log: Path | None = None, env: dict | None = None,
                 cwd: Path = ROOT, stdin: Any = subprocess.DEVNULL):
        self.argv = [str(a) for a in argv]
        self.log = log
        self._out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _collect
        self._rss = Path(tempfile.mkstemp(prefix="bench-rss-")[1]) if TIME else None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
        err = open(log, "ab") if log is not None else subprocess.DEVNULL  # noqa: SIM115
        run_argv = [TIME, "-f", "%M", "-o", str(self._rss), *self.argv] if TIME else self.argv
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(run_argv, stdout=self._out, stderr=err, env=env, cwd=cwd,
                                     stdin=stdin)
        if log is not None:
            err.close()
        self.result: Measured | None = None
        self._target: int | None = None if TIME else self.proc.pid
        self._peak = [0, 0, 1]  # pss kB, rss kB, processes
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        root = self.pid
        while not self._stop.is_set():
            pids = _tree(root)
            mems = [_mem_kb(p) for p in pids]
            rss, pss = sum(m[0] for m in mems), sum(m[1] for m in mems)
            self._peak = [max(self._peak[0], pss), max(self._peak[1], rss),
                          max(self._peak[2], sum(1 for m in mems if m[0]))]
            self._stop.wait(SAMPLE_S)

    @property
    def pid(self) -> int:
        """The measured command's pid (the wrapper's child when wrapped)."""
        if self._target is None:
            path = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            for _ in range(500):
                with contextlib.suppress(OSError):
                    kids = path.read_text().split()
                    if kids:
                        self._target = int(kids[0])
                        break
                if self.proc.poll() is not None:
                    break
                time.sleep(0.002)
        return self._target if self._target is not None else self.proc.pid

    def send_signal(self, sig: int) -> None:
        if self.result is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def poll(self) -> bool:
        """True once the child has exited (collected)."""
        if self.result is not None:
            return True
        pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
        if pid == 0:
            return False
        self._collect(status, ru)
        return True

    def wait(self, timeout: float | None = None) -> Measured:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.poll():
            if deadline is not None and time.monotonic() > deadline:
                self.kill()
                raise TimeoutError(f"{self.argv[:4]} did not finish in {timeout}s")
            time.sleep(0.005)
        assert self.result is not None
        return self.result

    def _collect(self, status: int, ru: Any) -> None:
        seconds = time.monotonic() - self.t0
        rc = os.waitstatus_to_exitcode(status)
        self.proc.returncode = rc
        self._out.seek(0)
        out = self._out.read().decode(errors="replace")
        self._out.close()
        maxrss_kb = ru.ru_maxrss
        if self._rss is not None:
            lines = [x for x in self._rss.read_text(errors="replace").split() if x.isdigit()]
            if lines:
                maxrss_kb = int(lines[-1])
            self._rss.unlink(missing_ok=True)
        self._stop.set()
        if threading.current_thread() is not self._sampler:
            self._sampler.join(5)
        pss, rss, procs = self._peak
        self.result = Measured(self.argv, rc, seconds, maxrss_kb / 1024, out, self.log,
                               tree_pss_mb=pss / 1024, tree_rss_mb=rss / 1024, procs=procs)

    def terminate(self, timeout: float = 90) -> Measured:
        self.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        with contextlib.suppress(ChildProcessError):
            _pid, status, ru = os.wait4(self.proc.pid, 0)
            self._collect(status, ru)


def run(argv: list, *, log: Path | None = None, env: dict | None = None, timeout: float = 3600,
        check: bool = True) -> Measured:
    res = Child(argv, log=log, env=env).wait(timeout)
    if check and res.rc != 0:
        raise RuntimeError(
            f"{' '.join(res.argv[:6])} ... exited {res.rc}\n{res.tail()}\n{res.stdout[-2000:]}")
    return res


# --------------------------------------------------------------------------- Postgres


def with_db(dsn: str, db: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + db))


@dataclass
class Server:
    """A private embedded Postgres 17 (same settings for every tool) under a temp home."""

    home: Path
    dsn: str        # owner role 'replicator', database 'replicator'
    admin_dsn: str  # superuser, database 'postgres'
    owned: bool
    settings: dict[str, str] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, home: Path | None = None, settings: dict[str, str] | None = None) -> Server:
        from replicator import embedded

        owned = home is None
        if home is None:
            home = Path(tempfile.mkdtemp(prefix="replicator-bench-pg-"))
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o755)
        say(f"starting embedded Postgres under {home}")
        emb = embedded.ensure_running(home, settings=settings or {})
        return cls(home=home, dsn=emb.dsn, admin_dsn=emb.admin_dsn, owned=owned,
                   settings=settings or {})

    def stop(self) -> None:
        from replicator import embedded

        for db in list(self.created):
            with contextlib.suppress(Exception):
                self.drop(db)
        if self.owned:
            embedded.stop(self.home)
            shutil.rmtree(self.home, ignore_errors=True)

    def admin(self, sql: str, db: str = "postgres") -> Any:
        async def go() -> Any:
            conn = await asyncpg.connect(with_db(self.admin_dsn, db))
            try:
                return await conn.fetch(sql)
            finally:
                await conn.close()

        return asyncio_run(go())

    def fresh(self, name: str) -> str:
        """Drop and create database ``name`` owned by the replicator role; its owner DSN."""
        self.drop(name)
        self.admin(f'CREATE DATABASE "{name}" OWNER replicator')
        self.created.append(name)
        return with_db(self.dsn, name)

    def drop(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def checkpoint(self) -> None:
        """Flush dirty buffers between timed runs so one run does not pay for the previous one."""
        self.admin("CHECKPOINT")

    def info(self) -> dict[str, Any]:
        names = ("server_version", "shared_buffers", "max_wal_size", "wal_level", "fsync",
                 "synchronous_commit", "full_page_writes", "maintenance_work_mem", "work_mem",
                 "max_parallel_maintenance_workers", "checkpoint_timeout", "password_encryption")
        listed = ",".join(names)
        rows = self.admin(f"SELECT name, current_setting(name) AS v FROM pg_settings "
                          f"WHERE name = ANY('{{{listed}}}') ORDER BY name")
        return {r["name"]: r["v"] for r in rows}

    def rtt_ms(self, n: int = 2000) -> dict[str, float]:
        """Round trip of `SELECT 1` on an open connection (owner role)."""

        async def go() -> list[float]:
            conn = await asyncpg.connect(self.dsn)
            try:
                out = []
                for _ in range(n):
                    t = time.perf_counter()
                    await conn.fetchval("SELECT 1")
                    out.append((time.perf_counter() - t) * 1000)
                return out
            finally:
                await conn.close()

        samples = asyncio_run(go())
        return {"median_ms": round(statistics.median(samples), 4),
                "p90_ms": round(pct(samples, 90), 4), "n": n}


def asyncio_run(coro: Any) -> Any:
    """asyncio.run, also from inside a running loop (then in a helper thread, blocking)."""
    import asyncio
    import concurrent.futures

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


# --------------------------------------------------------------------------- data


DATA_SETS = {
    "gen": "`bench/generate.py`: mostly numbers (ints, decimals, REAL, integer times, short text, "
           "JSON, BLOBs)",
    "app": "`bench/generate_app.py`: app-shaped text (emails, names, UUID text, ISO timestamps in 3 "
           "layouts, JSON, REAL money, 0/1 flags)",
}


def db_path(rows: int, seed: int = SEED, kind: str = "gen") -> Path:
    return DATA / f"{kind}-{rows}-s{seed}.db"


def ensure_db(rows: int, seed: int = SEED, kind: str = "gen") -> Path:
    """The generated database of data set ``kind`` (``DATA_SETS``) for ``rows`` (created once,
    reused across runs; a ``.ok`` marker is written after a complete generation)."""
    if kind not in DATA_SETS:
        raise ValueError(f"unknown data set {kind!r} (known: {', '.join(DATA_SETS)})")
    path = db_path(rows, seed, kind)
    if path.exists() and (DATA / (path.name + ".ok")).exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    say(f"generating {path.name} ({rows:,} rows; one-off, reused afterwards)")
    sys.path.insert(0, str(BENCH))
    if kind == "app":
        from generate_app import generate
    else:
        from generate import generate

    t = time.monotonic()
    tmp = path.with_name(path.name + ".tmp")
    counts = generate(tmp, rows, seed)
    for suffix in ("-wal", "-shm"):
        Path(str(tmp) + suffix).unlink(missing_ok=True)
    os.replace(tmp, path)
    (DATA / (path.name + ".ok")).write_text(json.dumps({"rows": counts, "seed": seed}))
    say(f"generated in {time.monotonic() - t:.1f}s")
    return path


def scratch_copy(src: Path, name: str) -> Path:
    """A private copy of a generated database (for benchmarks that install capture)."""
    work = DATA / "work"
    work.mkdir(parents=True, exist_ok=True)
    dest = work / name
    clean_sqlite(dest)
    shutil.copyfile(src, dest)
    return dest


def clean_sqlite(path: Path) -> None:
    for p in (path, Path(str(path) + "-wal"), Path(str(path) + "-shm"), Path(str(path) + "-journal")):
        p.unlink(missing_ok=True)
    shutil.rmtree(path.with_name(path.name + ".replicator"), ignore_errors=True)


# --------------------------------------------------------------------------- stats and output


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rnd(x: float, n: int = 3) -> float:
    return round(x, n) if x == x else x


def save(name: str, data: dict[str, Any]) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "history").mkdir(exist_ok=True)
    data = {"benchmark": name, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **data}
    text = json.dumps(data, indent=2, default=str)
    path = OUT / f"{name}.json"
    path.write_text(text + "\n")
    (OUT / "history" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(text + "\n")
    return path


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table (also readable on a terminal)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
