"""Rendering of scan, replay and advice reports: terminal text, Markdown and JSON."""

from __future__ import annotations

import json
import re
from typing import Any

from .advise import Advice
from .replay import QueryResult, ReplayReport
from .scan import Finding, ScanReport

FORMATS = ("text", "md", "json")
_MARK = {"fails": "FAILS", "differs": "DIFFERS", "review": "review"}


def one_line(sql: str | None) -> str:
    return re.sub(r"\s+", " ", sql or "").strip()


def render_scan(report: ScanReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.to_json(), indent=2, default=str)
    psycopg = report.driver == "psycopg"
    parts = [_scan_md(f, psycopg) if fmt == "md" else _scan_text(f, psycopg)
             for f in report.findings]
    summary = _scan_summary(report)
    if fmt == "md":
        return "# SQL found in the application\n\n" + summary + "\n\n" + "\n".join(parts)
    return "\n".join(parts + [summary])


def _params(f: Finding, psycopg: bool) -> str:
    params = f.translation.params
    if not params:
        return ""
    if psycopg:
        return "params (in order): " + ", ".join(params)
    return "params: " + ", ".join(f"${i + 1}={p}" for i, p in enumerate(params))


def _scan_text(f: Finding, psycopg: bool) -> str:
    tr = f.translation
    head = f"{f.file}:{f.line}  [{tr.severity or 'ok'}]"
    lines = [head, f"  sqlite:   {one_line(tr.original)}"]
    if tr.error:
        lines.append(f"  error:    {tr.error}")
    else:
        lines.append(f"  postgres: {one_line(tr.postgres) or '(no translation)'}")
    if _params(f, psycopg):
        lines.append(f"  {_params(f, psycopg)}" + ("  (tagged template: the driver binds "
                                                   "${...})" if f.tagged else ""))
    for t in tr.traps:
        state = "fixed" if t.fixed else _MARK[t.severity]
        lines.append(f"  - {state:7} {t.code}: {t.message}")
        if t.suggestion and not t.fixed:
            lines.append(f"            try: {t.suggestion}")
    return "\n".join(lines) + "\n"


def _scan_md(f: Finding, psycopg: bool) -> str:
    tr = f.translation
    out = [f"## `{f.file}:{f.line}` — {tr.severity or 'ok'}", "", "```sql", tr.original, "```",
           ""]
    if tr.error:
        out += [f"Not parsed: {tr.error}", ""]
    else:
        out += ["Postgres:", "", "```sql", tr.postgres or "-- no translation", "```", ""]
    if _params(f, psycopg):
        out += [_params(f, psycopg), ""]
    for t in tr.traps:
        state = "fixed" if t.fixed else t.severity
        out.append(f"- **{t.code}** ({state}): {t.message}"
                   + (f" Try `{t.suggestion}`." if t.suggestion and not t.fixed else ""))
    return "\n".join(out) + "\n"


def _scan_summary(report: ScanReport) -> str:
    c = report.counts()
    return (f"{len(report.findings)} statement(s) in {report.files_scanned} file(s) "
            f"(driver {report.driver}): {c['fails']} fail as written, {c['differs']} may return "
            f"different results, {c['review']} to review, {c['clean']} translated with nothing "
            "open.")


def render_replay(report: ReplayReport, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report.to_json(), indent=2, default=str)
    md = fmt == "md"
    parts = [(_replay_md if md else _replay_text)(r) for r in report.results]
    c = report.counts()
    summary = (f"{len(report.results)} queries replayed on {report.source} and {report.target}: "
               f"{c['same']} same, {c['different']} different, {c['failed']} failed, "
               f"{c['skipped']} skipped; "
               + ("all as expected." if report.ok else "some need attention."))
    advice = render_advice(report.advice, fmt) if report.advice else ""
    if md:
        return "# Query replay\n\n" + summary + "\n\n" + "\n".join(parts) + "\n" + advice
    return "\n".join(parts) + ("\n" + advice if advice else "") + "\n" + summary


def _timing(r: QueryResult) -> str:
    if r.sqlite_ms is None:
        return ""
    pg = f"{r.pg_ms} ms" if r.pg_ms is not None else "-"
    return f"sqlite {r.sqlite_ms} ms, postgres {pg}"


def _expect(r: QueryResult) -> str:
    if r.expect is None:
        return ""
    return "  (as expected)" if r.as_expected else f"  (EXPECTED {r.expect})"


def _replay_text(r: QueryResult) -> str:
    where = f"  [{r.origin}]" if r.origin != r.name and not r.origin.endswith(r.name) else ""
    lines = [f"{r.status:9} {r.name}{where}  {_timing(r)}{_expect(r)}"]
    if r.reason:
        lines.append(f"          {r.reason}")
    if r.status == "different":
        lines.append(f"          sqlite row:   {_row(r.sqlite_row)}")
        lines.append(f"          postgres row: {_row(r.pg_row)}")
    if r.status in ("different", "failed") and r.postgres_sql:
        lines.append(f"          postgres: {one_line(r.postgres_sql)}")
    if r.plan:
        lines.append(f"          plan: {_plan(r.plan)}")
    return "\n".join(lines)


def _replay_md(r: QueryResult) -> str:
    out = [f"## {r.name} — {r.status}{_expect(r)}", "", f"`{r.origin}` {_timing(r)}", "",
           "```sql", r.sqlite_sql, "```", ""]
    if r.postgres_sql:
        out += ["```sql", r.postgres_sql, "```", ""]
    if r.reason:
        out += [r.reason, ""]
    if r.status == "different":
        out += [f"- SQLite row: `{_row(r.sqlite_row)}`", f"- Postgres row: `{_row(r.pg_row)}`", ""]
    if r.plan:
        out += [f"Plan: {_plan(r.plan)}", ""]
    return "\n".join(out)


def _row(row: Any) -> str:
    text = repr(row) if row is not None else "(none)"
    return text if len(text) <= 200 else text[:197] + "..."


def _plan(p: dict) -> str:
    nodes = " > ".join(p.get("nodes", [])[:6])
    return (f"{nodes}; execution {p.get('execution_ms')} ms, rows {p.get('actual_rows')}, "
            f"buffers hit {p.get('shared_hit_blocks')} read {p.get('shared_read_blocks')}")


def render_advice(advice: list[Advice], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([a.to_json() for a in advice], indent=2)
    if not advice:
        return "Index advice: nothing to add.\n"
    head = "## Index advice\n" if fmt == "md" else "Index advice:\n"
    lines = [head]
    for a in advice:
        used = f" (queries: {', '.join(a.queries)})" if a.queries else ""
        if fmt == "md":
            lines.append(f"- {a.reason}{used}\n\n  ```sql\n  {a.statement}\n  ```")
        else:
            lines.append(f"  {a.kind:8} {a.reason}{used}\n           {a.statement}")
    return "\n".join(lines) + "\n"
