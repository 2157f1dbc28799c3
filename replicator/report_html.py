"""The migration report as a page people read: one self-contained HTML file (no script, no font,
no request to anywhere), styled for a screen and for print.

What needs a human comes first, each item with the command or SQL that fixes it; then the key
figures, the charts (lag and backlog over the migration window, snapshot throughput per table,
per-query latency SQLite vs Postgres, drawn as inline SVG), and the sections of ``report``.
"""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime
from typing import Any

from .convert import from_typed_json
from .sizes import human_bytes

esc = html.escape

CSS = """
:root{--ink:#1d2330;--muted:#5b6474;--line:#d9dee7;--bg:#f5f7fa;--ok:#1e7f4f;--warn:#b35c00;
--bad:#b3261e;--accent:#2f5fb3;--rev:#7b3fb3}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
background:var(--bg)}
main{max-width:1120px;margin:0 auto;padding:20px 24px 60px}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:8px 16px;margin-bottom:12px}
h1{font-size:22px;margin:0}h2{font-size:18px;margin:28px 0 8px}h3{font-size:15px;margin:14px 0 6px}
.sub{color:var(--muted);font-size:13px}
.badge{display:inline-block;padding:1px 10px;border-radius:10px;font-size:13px;font-weight:600;
color:#fff;background:var(--accent)}
.badge.done{background:var(--ok)}.badge.error{background:var(--bad)}.badge.fallback{background:var(--rev)}
section.card,#attention{background:#fff;border:1px solid var(--line);border-radius:8px;padding:14px 18px;
margin:12px 0}
#attention{border-left:6px solid var(--warn)}#attention.clear{border-left-color:var(--ok)}
#attention h2{margin-top:0}
#attention ol{margin:6px 0 0;padding-left:22px}#attention li{margin:0 0 10px}
.what{font-weight:600}.detail{color:var(--muted);font-size:13px;word-break:break-word}
.fix{font-size:13px}.fix code{background:#eef2f8;padding:1px 4px;border-radius:4px;word-break:break-word}
.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(130px,1fr));gap:10px;margin:12px 0}
.figure{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 14px}
.figure b{display:block;font-size:20px}.figure span{color:var(--muted);font-size:12px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:12px}
.chart{background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px 12px}
.chart svg{width:100%;height:auto}.chart .none{color:var(--muted);font-size:13px}
table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef2f8;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#fff;border:1px solid var(--line);border-radius:6px;padding:10px;overflow:auto;font-size:12px}
details{margin:8px 0}summary{cursor:pointer;color:var(--accent)}
.ok{color:var(--ok)}.bad{color:var(--bad)}
@media print{body{background:#fff}details{display:block}}
"""


def _when(at: Any) -> str:
    if isinstance(at, (int, float)):
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(at) if at else "-"


def _num(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else "-" if n is None else str(n)


def _table(head: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    cls = [" class='num'" if i in numeric else "" for i in range(len(head))]
    out = ["<table><tr>" + "".join(f"<th{cls[i]}>{esc(h)}</th>" for i, h in enumerate(head))
           + "</tr>"]
    out += ["<tr>" + "".join(f"<td{cls[i]}>{esc(str(c))}</td>" for i, c in enumerate(row))
            + "</tr>" for row in rows]
    return "".join(out) + "</table>"


# -- charts (inline SVG) ---------------------------------------------------------------------------

_W, _H, _PAD = 520, 170, 36


def _line_chart(title: str, series: list[tuple[str, str, list[tuple[float, float]]]],
                unit: str) -> str:
    points = [p for _n, _c, pts in series for p in pts]
    if len(points) < 2:
        return (f"<div class='chart'><h3>{esc(title)}</h3><p class='none'>Not enough samples yet "
                "(one every 10 s while the daemon streams).</p></div>")
    t0, t1 = min(p[0] for p in points), max(p[0] for p in points)
    top = max(p[1] for p in points) or 1.0  # all zero: a flat line on a scale of 1
    span = max(t1 - t0, 1e-9)

    def xy(t: float, v: float) -> str:
        x = _PAD + (t - t0) / span * (_W - _PAD - 8)
        y = _H - 22 - v / top * (_H - 40)
        return f"{x:.1f},{y:.1f}"

    parts = [f"<svg viewBox='0 0 {_W} {_H}' role='img' aria-label='{esc(title)}'>",
             f"<line x1='{_PAD}' y1='{_H - 22}' x2='{_W - 8}' y2='{_H - 22}' stroke='#d9dee7'/>",
             f"<text x='2' y='22' font-size='11' fill='#5b6474'>{esc(_short(top))}{esc(unit)}</text>",
             f"<text x='2' y='{_H - 24}' font-size='11' fill='#5b6474'>0</text>",
             f"<text x='{_PAD}' y='{_H - 6}' font-size='11' fill='#5b6474'>{esc(_clock(t0))}</text>",
             f"<text x='{_W - 8}' y='{_H - 6}' font-size='11' fill='#5b6474' text-anchor='end'>"
             f"{esc(_clock(t1))}</text>"]
    for i, (name, colour, pts) in enumerate(series):
        if pts:
            parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='1.8' points='"
                         + " ".join(xy(t, v) for t, v in pts) + "'/>")
        parts.append(f"<rect x='{_PAD + 8 + i * 150}' y='6' width='10' height='10' "
                     f"fill='{colour}'/><text x='{_PAD + 22 + i * 150}' y='15' font-size='11'>"
                     f"{esc(name)}</text>")
    parts.append("</svg>")
    return f"<div class='chart'><h3>{esc(title)}</h3>{''.join(parts)}</div>"


def _bar_chart(title: str, bars: list[tuple[str, list[tuple[str, str, float]]]], unit: str,
               empty: str) -> str:
    """Horizontal bars: per label, one or more (series name, colour, value)."""
    if not bars:
        return f"<div class='chart'><h3>{esc(title)}</h3><p class='none'>{esc(empty)}</p></div>"
    top = max((v for _l, vals in bars for _n, _c, v in vals), default=0) or 1
    per = max(len(vals) for _l, vals in bars)
    row_h = 10 * per + 8
    height = 24 + row_h * len(bars)
    label_w = 150
    parts = [f"<svg viewBox='0 0 {_W} {height}' role='img' aria-label='{esc(title)}'>"]
    names = {(n, c) for _l, vals in bars for n, c, _v in vals}
    for i, (name, colour) in enumerate(sorted(names)):
        parts.append(f"<rect x='{label_w + i * 150}' y='4' width='10' height='10' fill='{colour}'/>"
                     f"<text x='{label_w + 14 + i * 150}' y='13' font-size='11'>{esc(name)}</text>")
    for i, (label, vals) in enumerate(bars):
        y = 22 + i * row_h
        parts.append(f"<text x='{label_w - 6}' y='{y + row_h / 2 + 2:.0f}' font-size='11' "
                     f"text-anchor='end'>{esc(label[:24])}</text>")
        for j, (_n, colour, v) in enumerate(vals):
            w = max(1.0, v / top * (_W - label_w - 90))
            parts.append(f"<rect x='{label_w}' y='{y + j * 10}' width='{w:.1f}' height='9' "
                         f"fill='{colour}'/><text x='{label_w + w + 4:.1f}' y='{y + j * 10 + 8}' "
                         f"font-size='10' fill='#5b6474'>{esc(_short(v))}{esc(unit)}</text>")
    parts.append("</svg>")
    return f"<div class='chart'><h3>{esc(title)}</h3>{''.join(parts)}</div>"


def _short(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.1f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.3g}"


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S")


def charts(r: dict[str, Any]) -> str:
    samples = r["charts"]["samples"]

    def series(direction: str, key: str) -> list[tuple[float, float]]:
        return [(float(s["at"]), float(s[key])) for s in samples if s["direction"] == direction]

    lag = _line_chart("Lag over the migration window", [
        ("SQLite → Postgres", "#2f5fb3", series("forward", "lag_seconds")),
        ("Postgres → SQLite", "#7b3fb3", series("reverse", "lag_seconds"))], " s")
    backlog = _line_chart("Backlog over the migration window", [
        ("SQLite → Postgres", "#2f5fb3", series("forward", "backlog")),
        ("Postgres → SQLite", "#7b3fb3", series("reverse", "backlog"))], "")
    snap = _bar_chart("Snapshot throughput per table", [
        (t["table"], [("rows/s", "#2f5fb3", t["rows"] / t["seconds"])])
        for t in r["charts"]["snapshot"] if t.get("seconds") and t.get("rows")], " rows/s",
        "No table was copied with a recorded time.")
    replay = (r.get("validation") or {}).get("results") or []
    queries = _bar_chart("Per-query latency, SQLite vs Postgres", [
        (q["name"], [("SQLite", "#8a94a6", q["sqlite_ms"] or 0), ("Postgres", "#2f5fb3",
                                                                  q["pg_ms"] or 0)])
        for q in replay[:15] if q.get("sqlite_ms") is not None or q.get("pg_ms") is not None],
        " ms", "No `replicator queries replay` run recorded for this migration.")
    return f"<div class='charts'>{lag}{backlog}{snap}{queries}</div>"


# -- the page --------------------------------------------------------------------------------------


def _attention(r: dict[str, Any]) -> str:
    items = r.get("attention") or []
    if not items:
        return ("<section id='attention' class='clear'><h2>Nothing needs a human</h2><p>Every "
                "table arrived, no row is in quarantine, no object was left undone.</p></section>")
    lis = []
    for item in items:
        fix = esc(item.get("fix") or "")
        fix = fix.replace("`", "") if fix.count("`") % 2 else _code(fix)
        lis.append(f"<li><div class='what'>{esc(item['what'])}</div>"
                   + (f"<div class='detail'>{esc(' '.join(str(item['detail']).split())[:400])}"
                      "</div>" if item.get("detail") else "")
                   + (f"<div class='fix'>Fix: {fix}</div>" if fix else "") + "</li>")
    return (f"<section id='attention'><h2>Needs attention ({len(items)})</h2><ol>{''.join(lis)}"
            "</ol></section>")


def _code(text: str) -> str:
    """`backticks` (already escaped text) as <code>."""
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _figures(r: dict[str, Any]) -> str:
    t = r["timings"]
    moved = r["moved"]
    v = r["verification"]
    cut = v.get("at_cutover") or {}
    last = v.get("last") or {}
    checked = "ok" if (cut or last).get("ok") else "differences" if (cut or last) else "not run"
    cells = [
        (_num(sum(m["rows"] for m in moved)), f"rows in {len(moved)} tables"),
        (human_bytes(sum(m["bytes"] or 0 for m in moved)), "in Postgres"),
        (f"{t['snapshot_seconds']} s" if t["snapshot_seconds"] is not None else "-", "snapshot"),
        (f"{t['catch_up_seconds']} s" if t["catch_up_seconds"] is not None else "-",
         "catch-up after it"),
        (f"{t['freeze_window_ms']} ms" if t["freeze_window_ms"] is not None else "-",
         "write freeze at cutover"),
        (checked, "verification, value by value"),
        (str(len(r["quarantine"])), "rows in quarantine"),
    ]
    return "<div class='figures'>" + "".join(
        f"<div class='figure'><b>{esc(a)}</b><span>{esc(b)}</span></div>" for a, b in cells) + "</div>"


def _verification(v: dict[str, Any]) -> str:
    rows = []
    for label, rec in (("At cutover", v.get("at_cutover")), ("Last full verification",
                                                           v.get("last"))):
        if rec:
            result = "equal" if rec.get("ok") else "DIFFERENCES"
            rows.append([label, result, _num(rec.get("rows")), rec.get("mode", "full"),
                         _when(rec.get("at")) if rec.get("at") else "-",
                         f"{rec.get('seconds', '-')} s"])
    if not rows:
        return "<p>No verification recorded yet (`replicator verify`).</p>"
    return _table(["when", "result", "rows", "mode", "at", "took"], rows, {2})


# -- what the page and the markdown report both say (report.py renders the markdown) ---------

REPLAY_HEAD = ["query", "result", "SQLite ms", "Postgres ms", "why"]


def replay_rows(replay: dict[str, Any]) -> list[list[Any]]:
    return [[q["name"], q["status"], q["sqlite_ms"], q["pg_ms"], q.get("reason") or ""]
            for q in replay["results"]]


def replay_counts(replay: dict[str, Any]) -> str:
    return (", ".join(f"{n} {k}" for k, n in replay["counts"].items() if n)
            + f" ({_when(replay.get('at'))})")


def security_rows(s: dict[str, Any]) -> list[list[str]]:
    return [["target", s["target"]],
            ["TLS", ("yes" if s["tls"] else "no") + f" (sslmode: {s['tls_mode']})"],
            ["role", f"{s['role']}" + (" (SUPERUSER)" if s["superuser"] else " (not a superuser)")
             + (f"; can {', '.join(s['privileges'])}" if s["privileges"] else "")],
            ["secrets", s["secrets"]]]


def freeze_breakdown(t: dict[str, Any]) -> str:
    """The cutover's write freeze by phase, in words ("drain 11.7 ms, verify 87.9 ms, ...")."""
    return ", ".join(f"{k.removesuffix('_ms')} {v} ms"
                     for k, v in (t["freeze_breakdown_ms"] or {}).items())


def _validation(r: dict[str, Any]) -> str:
    replay = r.get("validation")
    if not replay:
        return ("<p>No run of <code>replicator queries replay</code> recorded: replay the "
                "application's queries on both databases to see that they answer the same.</p>")
    return (f"<p>{esc(replay_counts(replay))}</p>"
            + _table(REPLAY_HEAD, replay_rows(replay), {2, 3}))


def _security(s: dict[str, Any]) -> str:
    return _table(["", ""], security_rows(s))


def render_html(r: dict[str, Any]) -> str:
    state = r["state"]
    quarantine = [[q["table"], json.dumps(q["key"]), q["column"], q["reason"],
                   repr([from_typed_json(v) for v in q["raw"]])[:300]] for q in r["quarantine"]]
    mapping = [[f"{m['table']}.{m['column']}", m["declared"] or "-", m["pg_type"], m["rule"],
                "; ".join(m["notes"])] for m in r["mapping"]]
    converted = [m for m in mapping if m[3] not in ("declared", "exact") or m[4]]
    objects = [[o.get("object"), o.get("status"), o.get("detail") or ""]
               for o in r["schema"]["objects"]]
    trouble = [[x["at"] or "-", x["what"], x["table"] or "-", str(x["detail"]), x["hint"]]
               for x in r["troubleshooting"]]
    t = r["timings"]
    body = [
        f"<header><h1>Migration report</h1><span class='badge {esc(state)}'>{esc(state)}</span>"
        f"<span class='sub'>{esc(r['source'])} → {esc(r['target'])}</span>"
        f"<span class='sub'>generated {esc(r['generated_at'])} by {esc(r['tool'])}</span></header>",
        _attention(r),
        _figures(r),
        charts(r),
        "<h2>What moved</h2>",
        _table(["table", "Postgres table", "rows", "size", "changes applied while streaming"],
               [[m["table"], m["pg_table"], _num(m["rows"]), human_bytes(m["bytes"]),
                 _num(m["changes_applied"])] for m in r["moved"]], {2, 3, 4}),
        "<h2>Type conversions</h2>",
        f"<p>{len(r['mapping'])} columns; every value converted exactly or named in the quarantine. "
        f"Columns with a conversion or a note: {len(converted)}.</p>",
        _table(["column", "declared in SQLite", "Postgres", "rule", "notes"], converted or mapping),
        f"<details><summary>All {len(mapping)} columns</summary>"
        + _table(["column", "declared in SQLite", "Postgres", "rule", "notes"], mapping)
        + "</details>",
        "<h2>Quarantined rows</h2>",
        (_table(["table", "key", "column", "reason", "raw values (lossless)"], quarantine)
         if quarantine else "<p>None: every row moved exactly.</p>"),
        "<h2>Verification</h2>", _verification(r["verification"]),
        "<h2>Application validation</h2>", _validation(r),
        "<h2>Schema objects</h2>",
        (_table(["object", "status", "detail"], objects) if objects
         else "<p>Added at cutover (none yet).</p>"),
        "<h2>Performance</h2>",
        _table(["", ""], [["snapshot", f"{t['snapshot_seconds']} s"],
                          ["catch-up after the snapshot", f"{t['catch_up_seconds']} s"],
                          ["write freeze at cutover", f"{t['freeze_window_ms']} ms"],
                          ["freeze breakdown", freeze_breakdown(t) or "-"]]),
        "<h2>Security</h2>", _security(r["security"]),
        *(["<h2>Fallback window</h2>", "".join(f"<p>{esc(p)}</p>" for p in r["fallback"])]
          if r.get("fallback") else []),
        "<h2>Rollback procedure</h2>",
        "<ol>" + "".join(f"<li>{_code(esc(p))}</li>" for p in r["rollback"]) + "</ol>",
        "<h2>Troubleshooting</h2>",
        (_table(["when", "what", "table", "detail", "hint"], trouble) if trouble
         else "<p>No error or schema change during this migration.</p>"),
        "<h2>Schema</h2>",
        "<details><summary>Before (SQLite, as it was before the first write)</summary><pre>"
        + esc("\n".join(r["schema"]["before"])) + "</pre></details>",
        "<details><summary>After (Postgres)</summary><pre>"
        + esc("\n".join(s + ";" for s in r["schema"]["after"])) + "</pre></details>",
    ]
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>Migration report: {esc(r['source'])}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(body)}</main></body></html>\n")
