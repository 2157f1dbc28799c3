"""Replay input: a ``.sql`` corpus (one query per statement, ``-- name:``, ``-- expect:`` and
``-- params:`` comments before each) or the JSON written by ``queries scan --format json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .sqltext import code_start, header_comments, line_of, split_statements

EXPECTATIONS = ("same", "different", "failed", "skipped")


@dataclass
class Query:
    name: str
    sql: str  # SQLite text, header comments removed
    origin: str  # file:line
    expect: str | None = None
    params: list | None = None


def load(path: Path) -> list[Query]:
    """Queries from a corpus file; ConfigError naming the file and line when malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"queries: cannot read {path}: {exc.strerror}") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith("{"):
        return _from_scan_json(path, text)
    return _from_sql(path, text)


def _from_sql(path: Path, text: str) -> list[Query]:
    out = []
    for st in split_statements(text):
        body = st.text[code_start(st.text):].strip()
        if not body:
            continue
        line = line_of(text, st.code)
        q = Query(f"{path.name}:{line}", body, f"{path}:{line}")
        for comment in header_comments(st.text):
            _header(q, comment)
        out.append(q)
    return out


def _header(q: Query, comment: str) -> None:
    field, sep, value = comment.partition(":")
    field, value = field.strip().lower(), value.strip()
    if not sep:
        return
    if field == "name" and value:
        q.name = value
    elif field == "expect":
        word = value.split()[0].lower() if value else ""
        if word not in EXPECTATIONS:
            raise ConfigError(f"{q.origin}: expect must be one of {', '.join(EXPECTATIONS)}, "
                              f"got {value!r}")
        q.expect = word
    elif field == "params":
        try:
            params = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{q.origin}: params must be a JSON list ({exc.msg})") from None
        if not isinstance(params, list):
            raise ConfigError(f"{q.origin}: params must be a JSON list")
        q.params = params


def _from_scan_json(path: Path, text: str) -> list[Query]:
    try:
        data = json.loads(text)
        findings = data["findings"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(f"queries: {path} is neither a .sql corpus nor scan JSON output") from None
    return [Query(f"{f['file']}:{f['line']}", f["original"], f"{f['file']}:{f['line']}")
            for f in findings if isinstance(f, dict) and f.get("original")]
