"""Capture overhead: how much longer the app's write transactions take with the replicator's
capture triggers installed than without.

On a private copy of a generated database (WAL mode), blocks of write transactions are timed
without capture (A) and with capture (B), in the order A B B A A B ... (every round runs both,
alternating which goes first, so drift on a noisy machine hits both sides). Capture is installed
with ``replicator.capture.install`` (what the daemon runs first) and removed with
``replicator uninstall`` between blocks.

Workloads (each statement its own transaction unless noted):
  insert       INSERT one events row
  insert_uniq  INSERT one users row (UNIQUE email: the table also gets the REPLACE-guard triggers)
  update       UPDATE one orders row by primary key
  delete       DELETE one events row by primary key
  insert_x100  100 events INSERTs in one transaction
  update_x100  100 orders UPDATEs in one transaction
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from common import LOGS, PY, REPLICATOR, med, pct, rnd, run, say, scratch_copy

INSTALL = (
    "import sys; from pathlib import Path; from replicator import capture, source, source_write; "
    "c = source.open_source(Path(sys.argv[1])); "
    "capture.install(source_write.LiveFile(c, Path(sys.argv[1])), "
    "source.inspect(c).tables.values()); c.close()"
)

KINDS = ["insert", "insert_uniq", "update", "delete", "insert_x100", "update_x100"]


class Workload:
    def __init__(self, conn: sqlite3.Connection, seed: int):
        self.rng = random.Random(seed)
        self.next_event = conn.execute("SELECT max(id) FROM events").fetchone()[0] + 1
        self.next_user = conn.execute("SELECT max(id) FROM users").fetchone()[0] + 1
        self.max_order = conn.execute("SELECT max(id) FROM orders").fetchone()[0]
        self.next_delete = 1  # deletes walk the original events from the bottom: all exist

    def one(self, conn: sqlite3.Connection, kind: str) -> None:
        r = self.rng
        if kind == "insert":
            conn.execute("INSERT INTO events VALUES (?, ?, 'bench', '{\"k\": 1}', ?, ?)",
                         (self.next_event, r.randint(1, 1000), 1_700_000_000, r.random()))
            self.next_event += 1
        elif kind == "insert_uniq":
            i = self.next_user
            conn.execute("INSERT INTO users VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                         (i, f"bench{i}@example.com", f"Bench {i}", 10.5, r.random(),
                          "2024-01-01 00:00:00", '{"theme": "dark"}'))
            self.next_user += 1
        elif kind == "update":
            conn.execute("UPDATE orders SET status = ?, amount = ? WHERE id = ?",
                         (r.choice(["paid", "shipped"]), round(r.uniform(1, 99), 2),
                          r.randint(1, self.max_order)))
        elif kind == "delete":
            conn.execute("DELETE FROM events WHERE id = ?", (self.next_delete,))
            self.next_delete += 1
        else:
            raise ValueError(kind)


def block(db: Path, kind: str, n: int, synchronous: str, wl: Workload) -> list[float]:
    """``n`` transactions of ``kind``; seconds per transaction."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=5.0)
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()  # load the schema
    out = []
    clock = time.perf_counter
    try:
        if kind.endswith("_x100"):
            base = kind[: -len("_x100")]
            for _ in range(n):
                t = clock()
                conn.execute("BEGIN")
                for _ in range(100):
                    wl.one(conn, base)
                conn.execute("COMMIT")
                out.append(clock() - t)
        else:
            for _ in range(n):
                t = clock()
                wl.one(conn, kind)
                out.append(clock() - t)
    finally:
        conn.close()
    return out


def set_capture(db: Path, on: bool) -> None:
    if on:
        run([PY, "-c", INSTALL, db], log=LOGS / "overhead.log")
    else:
        run([*REPLICATOR, "uninstall", "--source", db], log=LOGS / "overhead.log")


def bench(src: Path, *, rounds: int, n_single: int, synchronous_modes: list[str]) -> dict[str, Any]:
    db = scratch_copy(src, "overhead.db")
    conn = sqlite3.connect(db)
    mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    conn.close()
    results: dict[str, Any] = {"journal_mode": mode, "rounds": rounds, "modes": {}}
    wl = Workload(sqlite3.connect(db), seed=11)
    capture_on = False
    for sync in synchronous_modes:
        # FULL syncs the WAL on every commit: far slower per transaction, so fewer of them.
        n1 = n_single if sync == "NORMAL" else max(50, n_single // 5)
        nx = max(20, n1 // 10)
        times: dict[str, dict[str, list[list[float]]]] = {k: {"A": [], "B": []} for k in KINDS}
        for rnd_i in range(rounds):
            order = ["A", "B"] if rnd_i % 2 == 0 else ["B", "A"]
            for side in order:
                want = side == "B"
                if capture_on != want:
                    set_capture(db, want)
                    capture_on = want
                for kind in KINDS:
                    n = nx if kind.endswith("_x100") else n1
                    times[kind][side].append(block(db, kind, n, sync, wl))
            say(f"overhead synchronous={sync}: round {rnd_i + 1}/{rounds} done")
        results["modes"][sync] = summarize(times, n1, nx)
    if capture_on:
        set_capture(db, False)
    return results


def summarize(times: dict[str, dict[str, list[list[float]]]], n1: int, nx: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n_single": n1, "n_multi": nx}
    for kind, sides in times.items():
        a_all = [x for blk in sides["A"] for x in blk]
        b_all = [x for blk in sides["B"] for x in blk]
        # Ratio of medians per round, then the median over rounds (paired, robust to drift).
        paired = [med(b) / med(a) for a, b in zip(sides["A"], sides["B"], strict=True)]
        paired_mean = [(sum(b) / len(b)) / (sum(a) / len(a))
                       for a, b in zip(sides["A"], sides["B"], strict=True)]
        out[kind] = {
            "without_median_us": rnd(med(a_all) * 1e6, 1),
            "with_median_us": rnd(med(b_all) * 1e6, 1),
            "without_mean_us": rnd(sum(a_all) / len(a_all) * 1e6, 1),
            "with_mean_us": rnd(sum(b_all) / len(b_all) * 1e6, 1),
            "without_p99_us": rnd(pct(a_all, 99) * 1e6, 1),
            "with_p99_us": rnd(pct(b_all, 99) * 1e6, 1),
            "ratio_median": rnd(med(b_all) / med(a_all), 3),
            "ratio_mean": rnd((sum(b_all) / len(b_all)) / (sum(a_all) / len(a_all)), 3),
            "ratio_paired_rounds": rnd(med(paired), 3),
            "ratio_paired_rounds_mean": rnd(med(paired_mean), 3),
            "ratio_per_round": [rnd(x, 3) for x in paired],
        }
    return out
