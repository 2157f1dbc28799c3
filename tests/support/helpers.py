"""Shared test machinery: run the CLI as a real process, wait on the target, and compare every
table value by value with a comparator written independently of the product's converters."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from .compare import means_same
from .values import BadUtf8

ROOT = Path(__file__).resolve().parents[2]
WRITER = Path(__file__).resolve().parent / "writer.py"


def cli(*args: str, env: dict | None = None, timeout: float = 120, check: bool = False
        ) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "replicator", *args],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"replicator {args[0]} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


class Daemon:
    """``replicator run`` as a child process, logs to a file."""

    def __init__(self, source: Path, target: str, *extra: str, log: Path | None = None,
                 env: dict | None = None, config: str = "[verify]\ninterval = 0\n"):
        self.log = log or source.with_name(source.name + f".daemon-{time.time_ns()}.log")
        self.config = source.with_name(source.name + f".daemon-{time.time_ns()}.toml")
        self.config.write_text(config)  # background verification off unless a test asks for it
        self.fh = open(self.log, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "replicator", "run", "--source", str(source), "--target", target,
             "--metrics-addr", "off", "--log-format", "json", "--config", str(self.config), *extra],
            stdout=self.fh, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, **(env or {})},
        )

    def events(self) -> list[dict]:
        out = []
        for line in self.log.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    async def started(self, timeout: float = 30) -> None:
        """Until the daemon has its signal handlers (it logged that it started)."""
        deadline = time.monotonic() + timeout
        while not any(e.get("event") == "replicator_started" for e in self.events()):
            self.assert_alive()
            if time.monotonic() > deadline:
                raise AssertionError("daemon did not start")
            await asyncio.sleep(0.05)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.fh.close()

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            where = self.where()
            self.kill9()
            raise AssertionError(f"the daemon did not stop within {timeout}s of SIGTERM "
                                 f"(killed); it was waiting in:\n{where}") from None
        self.fh.close()
        return code

    def where(self) -> str:
        """A running daemon's task and thread stacks (its SIGUSR1 dump), for a failure message."""
        if self.proc.poll() is not None:
            return "(the daemon is not running)"
        before = len([e for e in self.events() if e.get("event") == "task_dump"])
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            dumps = [e for e in self.events() if e.get("event") == "task_dump"]
            if len(dumps) > before:  # this signal's dump, not an earlier one
                return json.dumps({k: dumps[-1].get(k) for k in ("tasks", "threads")}, indent=1)
            time.sleep(0.1)
        return "(no task dump: the daemon's event loop did not answer SIGUSR1 within 3s)"

    def kill9_if_running(self) -> None:
        """For ``finally:``: a daemon a failed test left running is killed, not leaked."""
        if self.proc.poll() is None:
            self.kill9()

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        self.fh.close()
        return code

    def assert_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log.read_text()[-4000:]}")


async def pg_state(dsn: str) -> dict[str, Any] | None:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('_replicator.state') IS NOT NULL"):
            return None
        row = await conn.fetchrow("SELECT state, cursor, error FROM _replicator.state")
        return dict(row) if row else None
    finally:
        await conn.close()


async def pg_value(dsn: str, sql: str, *args: Any) -> Any:
    """One value from the target, on a connection of its own."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()


async def quarantine_rows(dsn: str) -> int:
    return int(await pg_value(dsn, "SELECT count(*) FROM _replicator.quarantine"))


def log_high_water(path: Path) -> int:
    conn = sqlite3.connect(path, timeout=30)
    try:
        row = conn.execute("SELECT coalesce(max(seq), 0) FROM _replicator_log").fetchone()
        return int(row[0])
    finally:
        conn.close()


async def wait_for(pred, timeout: float = 60, what: str = "condition", daemon: Daemon | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if daemon is not None:
            daemon.assert_alive()
        value = await pred()
        if value:
            return value
        await asyncio.sleep(0.1)
    tail = daemon.log.read_text()[-3000:] if daemon is not None else ""
    where = f"\nthe daemon waits in:\n{daemon.where()}" if daemon is not None else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}{where}")


async def wait_streaming(dsn: str, daemon: Daemon | None = None, timeout: float = 120) -> None:
    async def ok():
        st = await pg_state(dsn)
        return st is not None and st["state"] == "streaming"

    await wait_for(ok, timeout, "state streaming", daemon)


async def wait_caught_up(dsn: str, source: Path, daemon: Daemon | None = None, timeout: float = 120):
    async def ok():
        st = await pg_state(dsn)
        return st is not None and st["state"] == "streaming" and st["cursor"] >= log_high_water(source)

    await wait_for(ok, timeout, "cursor at the log's high-water mark", daemon)


# -- independent comparison ----------------------------------------------------------------------


def _lower(name: str) -> str:
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in name)


# information_schema's type names -> the names the comparator knows
_TYPE_NAMES = {"timestamp with time zone": "timestamptz", "character varying": "text",
               "character": "text"}


def _same(sqlite_value: Any, pg_value: Any, pg_type: str) -> bool:
    """Does the Postgres value hold exactly the SQLite value (the one comparator, compare.py)?"""
    if isinstance(sqlite_value, tuple) and sqlite_value[:1] == ("BADUTF8",):
        sqlite_value = BadUtf8(sqlite_value[1])
    if pg_type == "uuid" and pg_value is not None:
        pg_value = str(pg_value)
    return means_same(sqlite_value, _TYPE_NAMES.get(pg_type, pg_type), pg_value)


async def matches(source: Path, dsn: str, daemon: Daemon | None = None) -> bool:
    """Caught up, and every value equal (compare_all); for ``wait_for`` while drift settles."""
    await wait_caught_up(dsn, source, daemon)
    try:
        await compare_all(source, dsn)
        return True
    except AssertionError:
        return False


async def compare_all(source: Path, dsn: str, schema: str = "public",
                      expect_quarantined: dict[str, int] | None = None) -> dict[str, int]:
    """Compare every user table of ``source`` with the target, value by value.

    Rows the product quarantined must be absent from the table and present in
    ``_replicator.quarantine``. Returns rows compared per table; raises on any difference."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    src.text_factory = bytes  # read raw bytes; decode ourselves so bad UTF-8 cannot hide
    pg = await asyncpg.connect(dsn)
    problems: list[str] = []
    counts: dict[str, int] = {}
    try:
        quarantine, written_back = Counter(), Counter()
        if await pg.fetchval("SELECT to_regclass('_replicator.quarantine') IS NOT NULL"):
            for r in await pg.fetch("SELECT tbl, reason FROM _replicator.quarantine"):
                # The fallback window's reverse apply writes a value SQLite cannot hold exactly in
                # its nearest form and quarantines the row: it is on both sides, maybe different.
                (written_back if r[1].startswith("reverse: ") else quarantine)[r[0]] += 1
        tables = [r[0].decode() for r in src.execute(
            "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' "
            "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '\\_replicator%' ESCAPE '\\'")]
        for table in tables:
            counts[table] = await _compare_table(src, pg, schema, table, quarantine[table], problems,
                                                 written_back[table])
        if expect_quarantined is not None:
            got = {k: v for k, v in (quarantine + written_back).items() if v}
            if got != expect_quarantined:
                problems.append(f"quarantine holds {got}, expected {expect_quarantined}")
    finally:
        src.close()
        await pg.close()
    if problems:
        raise AssertionError("target differs from source:\n" + "\n".join(problems[:40]))
    return counts


async def _compare_table(src, pg, schema, table, quarantined, problems, written_back=0) -> int:
    cols = [r[1].decode() for r in src.execute("SELECT * FROM pragma_table_xinfo(?)", (table,))]
    pg_table = _lower(table)
    types = {r[0]: r[1] for r in await pg.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = $1 AND table_name = $2", schema, pg_table)}
    if not types:
        problems.append(f"{table}: missing in target")
        return 0
    pg_cols = [_lower(c) for c in cols]
    missing = [c for c in pg_cols if c not in types]
    if missing:
        problems.append(f"{table}: columns {missing} missing in target")
        return 0
    rows = []
    for raw in src.execute(
        "SELECT " + ", ".join(f"{_q(c)}, typeof({_q(c)})" for c in cols) + f" FROM {_q(table)}"
    ):
        row = []
        for i in range(0, len(raw), 2):
            v, t = raw[i], raw[i + 1].decode()
            if t == "text":
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    v = ("BADUTF8", v)
            row.append(v)
        rows.append(tuple(row))
    pg_rows = [tuple(r) for r in await pg.fetch(
        "SELECT " + ", ".join(_q(c) for c in pg_cols) + f" FROM {_q(schema)}.{_q(pg_table)}")]
    col_types = [types[c] for c in pg_cols]
    # Multiset match: each SQLite row must find a Postgres row holding exactly its values.
    index: dict[Any, list[tuple]] = {}
    for r in pg_rows:
        index.setdefault(_fingerprint(r, col_types), []).append(r)
    unmatched = 0
    for row in rows:
        candidates = index.get(_fingerprint_sqlite(row, col_types), [])
        hit = next((c for c in candidates if all(
            _same(s, p, t) for s, p, t in zip(row, c, col_types, strict=True))), None)
        if hit is None:
            unmatched += 1
            if unmatched > quarantined and len(problems) < 40:
                problems.append(f"{table}: SQLite row not in target: {row!r:.300}")
        else:
            candidates.remove(hit)
    extra = sum(len(v) for v in index.values())
    allowed = min(written_back, unmatched - quarantined, extra)  # written back, and different
    unmatched, extra = unmatched - max(0, allowed), extra - max(0, allowed)
    if unmatched > quarantined:
        problems.append(f"{table}: {unmatched} rows missing or different ({quarantined} quarantined)")
    if unmatched < quarantined:
        problems.append(f"{table}: {quarantined} quarantined but only {unmatched} rows absent")
    if extra:
        sample = next(v for v in index.values() if v)[0]
        problems.append(f"{table}: {extra} extra rows in target, e.g. {sample!r:.300}")
    return len(rows)


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _norm(v: Any) -> Any:
    if isinstance(v, datetime):
        return "ts"
    if isinstance(v, (bool,)):
        return int(v)
    if hasattr(v, "isoformat") or type(v).__name__ == "UUID":
        return str(v)
    # Whole numbers in the 64-bit range as ints, the rest as floats (1e308 read from numeric
    # and from REAL must meet): both sides land on the same key. The range is SQLite's, ends
    # included: -2**63 once went to float on one side and stayed int on the other.
    if isinstance(v, Decimal):
        v = int(v) if v.is_finite() and v == v.to_integral_value() and -(2**63) <= v < 2**63 \
            else float(v)
    if isinstance(v, float) and v.is_integer() and -(2**63) <= v < 2**63:
        return int(v)
    if isinstance(v, (bytes, memoryview)):
        return bytes(v)
    return v


def _fingerprint(row: tuple, types: list[str]) -> tuple:
    # A coarse key that equal values share whatever their type; _same() decides exactly.
    return tuple(_numeric_text(v) if t in _TEXT_TYPES else
                 str(_norm(v)) if not isinstance(v, bytes) else v
                 for v, t in zip(row, types, strict=True))


def _fingerprint_sqlite(row: tuple, types: list[str]) -> tuple:
    out: list[Any] = []
    for v, t in zip(row, types, strict=True):
        if t == "timestamp with time zone" and v is not None:
            out.append("ts")
            continue
        if t in _TEXT_TYPES:
            out.append(_numeric_text(v))
            continue
        if t == "numeric" and type(v) is float:
            v = float(Decimal(repr(v)))
        out.append(str(_norm(v)) if not isinstance(v, (bytes, tuple)) else v)
    return tuple(out)


_TEXT_TYPES = ("text", "character varying", "character")


def _numeric_text(v: Any) -> Any:
    """Text columns hold numbers rendered as text: a number and any text that reads as the same
    number share a key (on both sides alike), so the exact check is _same()'s alone."""
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        try:
            f = float(v)
        except (ValueError, OverflowError):
            return v
        if math.isfinite(f) and f.is_integer() and abs(f) < 2**63:
            return str(int(f))
        return repr(f)  # also 'inf' for a REAL infinity rendered in a text column
    return v


# -- the daemon's /metrics -------------------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def http_status(port: int, path: str) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5).status
    except urllib.error.HTTPError as exc:
        return exc.code


def metric(m: dict[str, float], name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return m.get(f"{name}{{{want}}}" if labels else name, 0.0)
