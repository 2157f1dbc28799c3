"""Verify benchmark: `replicator verify --json` (value by value) after a `replicator copy`, against
an anchor measured in the same run: reading every row of both sides into Python values, in key
order, with no comparison at all (SQLite in a thread, Postgres through an asyncpg cursor,
concurrently, one table after another). The anchor is what any Python verifier pays to read.

    python bench/verify_bench.py readboth DB DSN     (the anchor, as a subprocess)
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg


async def readboth(db: Path, dsn: str) -> dict[str, Any]:
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)
    pg = await asyncpg.connect(dsn)
    tables = [r[0] for r in src.execute(
        "SELECT name FROM sqlite_schema WHERE type='table' AND name NOT LIKE 'sqlite_%' "
        "AND name NOT LIKE '\\_replicator%' ESCAPE '\\' ORDER BY name")]
    rows = 0
    t0 = time.monotonic()
    try:
        for t in tables:
            def read_sqlite(t: str = t) -> int:
                n = 0
                cur = src.execute(f'SELECT * FROM "{t}" ORDER BY rowid')
                while chunk := cur.fetchmany(5000):
                    n += len(chunk)
                return n

            async def read_pg(t: str = t) -> int:
                n = 0
                async with pg.transaction(isolation="repeatable_read", readonly=True):
                    cur = await pg.cursor(f'SELECT * FROM "public"."{t.lower()}" ORDER BY id')
                    while chunk := await cur.fetch(5000):
                        n += len(chunk)
                return n

            a, b = await asyncio.gather(asyncio.to_thread(read_sqlite), read_pg())
            if a != b:
                raise RuntimeError(f"{t}: {a} rows in SQLite, {b} in Postgres")
            rows += a
    finally:
        await pg.close()
        src.close()
    secs = time.monotonic() - t0
    return {"rows": rows, "seconds": round(secs, 3), "rows_per_s": round(rows / secs)}


def bench(server, db: Path, reps: int) -> dict[str, Any]:
    from common import LOGS, PY, REPLICATOR, med, rnd, run, say
    from snapshot_bench import clean_state

    dsn = server.fresh("b_verify")
    clean_state(db)
    say("verify: replicator copy (setup, not timed)")
    run([*REPLICATOR, "copy", "--source", db, "--target", dsn, "--json"], log=LOGS / "verify.log")
    clean_state(db)
    server.checkpoint()
    runs: dict[str, list[dict[str, Any]]] = {"verify": [], "anchor": []}
    for rep in range(reps):
        order = ["verify", "anchor"] if rep % 2 == 0 else ["anchor", "verify"]
        for tool in order:
            if tool == "verify":
                res = run([*REPLICATOR, "verify", "--source", db, "--target", dsn, "--json"],
                          log=LOGS / "verify.log", check=False)
                rep_json = json.loads(res.stdout)
                if res.rc != 0 or not rep_json.get("ok"):
                    raise RuntimeError(f"verify failed (exit {res.rc}): {res.stdout[-2000:]}")
                runs["verify"].append({
                    "wall_s": res.seconds, "maxrss_mb": res.maxrss_mb, "peak_mb": res.peak_mb,
                    "rows": rep_json["rows"],
                    "logged_seconds": rep_json["seconds"], "rows_per_s": rep_json["rows_per_s"],
                    "mode": rep_json.get("mode"),
                    "tables": {t["table"]: t["seconds"] for t in rep_json["tables"]},
                })
            else:
                res = run([PY, Path(__file__), "readboth", db, dsn], log=LOGS / "verify.log")
                a = json.loads(res.stdout)
                runs["anchor"].append({"wall_s": res.seconds, "maxrss_mb": res.maxrss_mb,
                                        "peak_mb": res.peak_mb, **a})
            r = runs[tool][-1]
            say(f"  {tool}: {r['rows_per_s']:,} rows/s, peak {r['peak_mb']:.0f} MB")
    server.drop("b_verify")
    clean_state(db)
    v = runs["verify"]
    a = runs["anchor"]
    rows = v[0]["rows"]
    return {
        "rows": rows, "reps": reps, "runs": runs,
        "verify_rows_per_s": round(med([x["rows_per_s"] for x in v])),
        "verify_rows_per_s_wall": round(rows / med([x["wall_s"] for x in v])),
        "verify_peak_mb": rnd(max(x["peak_mb"] for x in v), 1),
        "anchor_rows_per_s": round(med([x["rows_per_s"] for x in a])),
        "anchor_peak_mb": rnd(max(x["peak_mb"] for x in a), 1),
        "ratio_verify_over_anchor_time": rnd(med([x["rows_per_s"] for x in a])
                                             / med([x["rows_per_s"] for x in v]), 2),
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "readboth":
        print(json.dumps(asyncio.run(readboth(Path(sys.argv[2]), sys.argv[3]))))
    else:
        sys.exit(__doc__)
