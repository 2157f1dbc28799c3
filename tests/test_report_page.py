"""The migration report as a page: a real migration with things left for a human (an orphan row
that keeps a foreign key NOT VALID, a value in quarantine, queries that answer differently),
rendered to HTML and opened in a real headless Chromium: it renders without a console error or a
request leaving the file, the attention summary sits in the first screenful and names each item
with its fix, the charts are drawn, and the password appears nowhere."""

from __future__ import annotations

import json
import sqlite3

import pytest

from .support.browser import CHROMIUM, open_page
from .support.helpers import ROOT, Daemon, cli, wait_caught_up

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian package 'chromium'; CI installs it)")]

EXPRESSIONS = {
    "title": "document.title",
    "attention_top": "document.getElementById('attention').getBoundingClientRect().top",
    "attention_bottom": "document.getElementById('attention').getBoundingClientRect().bottom",
    "viewport": "window.innerHeight",
    "attention_text": "document.getElementById('attention').innerText",
    "items": "document.querySelectorAll('#attention li').length",
    "charts": "document.querySelectorAll('.chart svg').length",
    "polylines": "document.querySelectorAll('.chart polyline').length",
    "scripts": "document.scripts.length",
    "external": "[...document.querySelectorAll('[src],[href]')].map(e => e.src || e.href)"
                ".filter(u => u && !u.startsWith('file:')).length",
    "body": "document.body.innerText",
}


async def test_the_report_page_in_a_real_browser(chinook, target_dsn, tmp_path):
    conn = sqlite3.connect(chinook, isolation_level=None)
    conn.execute("INSERT INTO InvoiceLine VALUES (90001, 99999, 1, 0.99, 1)")  # no invoice 99999
    conn.execute("INSERT INTO Genre (Name) VALUES ('nul' || char(0) || 'byte')")  # no text holds it
    conn.close()
    daemon = Daemon(chinook, target_dsn)
    try:
        await wait_caught_up(target_dsn, chinook, daemon)
        conn = sqlite3.connect(chinook, isolation_level=None)
        for i in range(30):
            conn.execute("UPDATE Track SET Name = Name || '.' WHERE TrackId = ?", (i + 1,))
        conn.close()
        await wait_caught_up(target_dsn, chinook, daemon)
        replay = cli("queries", "replay", str(ROOT / "tests" / "corpus" / "chinook_traps.sql"),
                     "--source", str(chinook), "--target", target_dsn)
        assert replay.returncode in (0, 1), replay.stderr[-2000:]
        cli("cutover", "--source", str(chinook), "--target", target_dsn, "--accept-quarantine",
            check=True)
        assert daemon.wait(30) == 0
    finally:
        daemon.kill9_if_running()
    out = tmp_path / "report.html"
    cli("report", "--source", str(chinook), "--target", target_dsn, "--format", "html",
        "--output", str(out), check=True)
    page = await open_page(out, EXPRESSIONS)
    (tmp_path / "report.png").write_bytes(page.screenshot)
    v = page.values
    assert page.console_errors == [] and page.requests == [] and v["external"] == 0
    assert v["scripts"] == 0 and v["title"].startswith("Migration report")
    # What needs a human is the first thing on the page, whole, without scrolling.
    assert v["attention_top"] >= 0 and v["attention_bottom"] <= v["viewport"], v
    text = v["attention_text"]
    assert v["items"] >= 3, text
    assert "Genre.Name in quarantine" in text and "NUL" in text
    assert "foreign_key invoiceline_invoiceid_fkey" in text.lower() and "VALIDATE CONSTRAINT" in text
    assert "queries answer differently" in text and "queries replay" in text
    assert v["charts"] == 4 and v["polylines"] >= 1  # lag/backlog drawn from the daemon's samples
    password = target_dsn.split(":")[2].split("@")[0]
    assert password not in out.read_text() and password not in v["body"]
    for heading in ("What moved", "Type conversions", "Quarantined rows", "Verification",
                    "Application validation", "Security", "Performance", "Rollback procedure",
                    "Troubleshooting", "Schema"):
        assert heading in v["body"], heading
    print("attention summary as the browser shows it:\n" + text)
    print(json.dumps({k: v[k] for k in ("attention_top", "attention_bottom", "viewport", "items",
                                        "charts", "polylines")}))
