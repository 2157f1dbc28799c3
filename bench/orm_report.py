"""One real-framework app through the whole migration, reported as Markdown (issue 11's evidence).

    .venv/bin/python bench/orm_report.py django|sqlalchemy|activerecord|django-inferred

The app (tests/apps) writes its SQLite file through its ORM; its ORM makes the Postgres schema
(except django-inferred, where the replicator infers it); the daemon streams while the app keeps
writing and a migration reaches SQLite first; cutover; then the same app reads and writes on
Postgres. The target is the embedded Postgres, a fresh database per run.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.helpers import cli  # noqa: E402
from tests.support.orm_apps import (  # noqa: E402
    AR_STORE,
    DJANGO,
    DJANGO_PINNED,
    EXISTING,
    LEDGER,
    App,
    migrate_live_and_cut_over,
    stream_and_cut_over,
)

APPS = {"django": (DJANGO, "revenue"), "sqlalchemy": (LEDGER, "total"),
        "activerecord": (AR_STORE, "price_total"), "django-inferred": (DJANGO, "revenue")}


async def story(name: str, work: Path) -> None:
    app, summed = APPS[name]
    inferred = name == "django-inferred"
    db = work / "app.sqlite3"
    target = cli("embedded", "dsn", "--source", str(db), check=True).stdout.strip()
    config = work / "replicator.toml"
    if inferred:
        app.run(db, "migrate", stage=2)
        app.run(db, "seed", "150", stage=2)
        config.write_text(DJANGO_PINNED)
        plan = cli("plan", "--source", str(db), "--config", str(config))
        print(f"## {name}: `replicator plan` (inferred, Django conventions)\n\n```\n"
              f"{_app_tables(plan.stdout)}\n```\n")
        await stream_and_cut_over(app, db, target, config)
    else:
        app.run(db, "migrate", app.first)
        app.run(db, "seed", "150")
        app.run(target, "migrate", app.first)
        config.write_text(EXISTING)
        plan = cli("plan", "--source", str(db), "--target", target, "--config", str(config))
        print(f"## {name}: `replicator plan --target` (exit {plan.returncode})\n\n```\n"
              f"{_app_tables(plan.stdout)}\n```\n")
        await migrate_live_and_cut_over(app, db, target, config, "nickname")
    _compare(app, db, target, summed)
    cli("embedded", "drop", "--source", str(db))


def _app_tables(text: str) -> str:
    """The plan's lines for the app's own tables and its summary (not auth_*, content types)."""
    keep, out = True, []
    for line in text.splitlines():
        if line and not line.startswith(" "):
            keep = not line.startswith(("auth_", "django_content_type"))
        if keep:
            out.append(line)
    return "\n".join(out)


def _compare(app: App, db: Path, target: str, summed: str) -> None:
    s_dump, p_dump = app.json(db, "dump", stage=2), app.json(target, "dump", stage=2)
    rows = sum(len(v) for v in s_dump.values())
    values = sum(len(r) if isinstance(r, (list, dict)) else 1 for v in s_dump.values() for r in v)
    same = s_dump == p_dump
    print(f"**Value by value** (every row of every model read through the ORM on both sides): "
          f"{'equal' if same else 'DIFFERENT'}: {rows} rows, {values} values, "
          f"{len(s_dump)} models/tables.\n")
    s_reads, p_reads = app.json(db, "reads", stage=2), app.json(target, "reads", stage=2)
    print("| read query | SQLite | Postgres | same |\n|---|---|---|---|")
    for key in s_reads:
        a, b = s_reads[key], p_reads.get(key)
        close = key == summed and abs(Decimal(str(a)) - Decimal(str(b))) <= Decimal("0.02")
        verdict = "yes" if a == b else "≈ (sum of floats vs exact)" if close else "NO"
        print(f"| {key} | {_short(a)} | {_short(b)} | {verdict} |")
    writes = app.json(target, "writes", stage=2)
    print(f"\n**Writes on Postgres**: {', '.join(f'{k}: {v}' for k, v in writes.items())}\n")


def _short(v: object) -> str:
    text = json.dumps(v, ensure_ascii=False)
    return (text if len(text) <= 60 else text[:57] + "...").replace("|", "\\|")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(story(sys.argv[1], Path(tmp)))
