"""The migration report: every section, in the three formats, without the password."""

from __future__ import annotations

import json
from html.parser import HTMLParser

from .support import hostile
from .support.helpers import cli


def test_report_in_three_formats(tmp_path, target_dsn):
    db = tmp_path / "hostile.db"
    hostile.create(db)
    cli("copy", "--source", str(db), "--target", target_dsn, check=True)
    password = target_dsn.split(":")[2].split("@")[0]
    md = cli("report", "--source", str(db), "--target", target_dsn, check=True).stdout
    for section in ("What was migrated", "Type mapping and conversions", "Quarantined rows",
                    "Schema objects", "Verification", "Application validation", "Performance",
                    "Security", "Rollback procedure",
                    "Troubleshooting", "Schema before (SQLite)", "Schema after (Postgres)"):
        assert f"## {section}" in md
    assert "TEXT containing a NUL byte" in md and "replicator uninstall --source" in md
    assert "events.happened | DATETIME | timestamptz" in md
    assert password not in md
    assert md.index("## Needs attention") < md.index("## Summary")  # what needs a human first
    assert "{'" not in md and "Write freeze at cutover: not yet cut over" in md  # no raw dicts
    data = json.loads(cli("report", "--source", str(db), "--target", target_dsn, "--format", "json",
                          check=True).stdout)
    assert len(data["quarantine"]) == sum(hostile.QUARANTINED.values())
    assert {m["table"] for m in data["moved"]} >= {"numbers", "texts", "accounts"}
    assert data["timings"]["snapshot_seconds"] is not None
    out = tmp_path / "report.html"
    cli("report", "--source", str(db), "--target", target_dsn, "--format", "html", "--output",
        str(out), check=True)
    parser = HTMLParser()
    parser.feed(out.read_text())
    assert "<h2>Rollback procedure</h2>" in out.read_text() and password not in out.read_text()


def test_a_report_before_anything_moved_says_what_to_run(tmp_path, target_dsn):
    """Nothing replicated yet: exit 3 (startup), naming the target without its password and the
    command that makes a report possible; no traceback."""
    db = tmp_path / "app.db"
    hostile.create(db)
    res = cli("report", "--source", str(db), "--target", target_dsn)
    password = target_dsn.split(":")[2].split("@")[0]
    assert res.returncode == 3, res.stderr
    assert "holds no replication to report on" in res.stderr
    assert "`replicator run` (or `replicator copy`)" in res.stderr and str(db) in res.stderr
    assert "Traceback" not in res.stderr and password not in res.stderr
