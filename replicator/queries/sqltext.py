"""Lexical helpers for SQLite SQL text: comments, quotes, statements and bind parameters.

These work on the raw text (before any parser), because the decisions they serve come first:
is a string literal SQL at all, where does each statement of a ``.sql`` file start, and which
bind parameters does a statement use (sqlglot cannot parse ``?1``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SQL_KEYWORDS = ("SELECT", "WITH", "INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "ALTER",
                "DROP", "PRAGMA")
_QUOTES = {"'": "'", '"': '"', "`": "`", "[": "]"}
_KINDS = {"'": "squote", '"': "dquote", "`": "bquote", "[": "bracket"}


@dataclass(frozen=True)
class Span:
    kind: str  # squote | dquote | bquote | bracket | comment
    start: int
    end: int  # exclusive


def spans(sql: str) -> list[Span]:
    """Quoted tokens and comments, in order. An unterminated one runs to the end of the text."""
    out: list[Span] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c == "-" and sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(Span("comment", i, j))
        elif c == "/" and sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(Span("comment", i, j))
        elif c in _QUOTES:
            j = _close(sql, i, _QUOTES[c])
            out.append(Span(_KINDS[c], i, j))
        else:
            i += 1
            continue
        i = j
    return out


def _close(sql: str, i: int, q: str) -> int:
    """End (exclusive) of the quoted token opened at ``i``; a doubled quote is an escape."""
    j = i + 1
    while True:
        k = sql.find(q, j)
        if k < 0:
            return len(sql)
        if q != "]" and sql.startswith(q + q, k):
            j = k + 2
            continue
        return k + 1


def masked(sql: str) -> str:
    """The text with every quoted token and comment blanked (newlines kept), same length."""
    chars = list(sql)
    for sp in spans(sql):
        for k in range(sp.start, sp.end):
            if chars[k] != "\n":
                chars[k] = " "
    return "".join(chars)


def code_start(sql: str) -> int:
    """Index of the first character that is neither whitespace nor part of a comment."""
    comments = {s.start: s.end for s in spans(sql) if s.kind == "comment"}
    i = 0
    while True:
        while i < len(sql) and sql[i].isspace():
            i += 1
        if i not in comments:
            return i
        i = comments[i]


def first_keyword(sql: str) -> str | None:
    """The statement's first word, upper-cased, if it is one of SQL_KEYWORDS."""
    rest = sql[code_start(sql):]
    m = re.match(r"[A-Za-z]+", rest)
    if not m:
        return None
    word = m.group(0).upper()
    return word if word in SQL_KEYWORDS else None


def line_of(text: str, offset: int) -> int:
    """1-based line number of ``offset`` in ``text``."""
    return text.count("\n", 0, offset) + 1


@dataclass(frozen=True)
class Statement:
    start: int  # offset of the statement's text (its leading comments included)
    code: int  # offset of its first keyword
    text: str  # without the terminating semicolon


_TRIGGER = re.compile(r"\s*CREATE\s+(TEMP\s+|TEMPORARY\s+)?TRIGGER\b", re.I)
_END = re.compile(r"\bEND\s*;", re.I)


def split_statements(text: str) -> list[Statement]:
    """Split a ``.sql`` file on top-level semicolons (a CREATE TRIGGER body is kept whole)."""
    m = masked(text)
    out: list[Statement] = []
    start = 0
    while start < len(text):
        code = start + code_start(text[start:])
        if code >= len(text):
            break
        if _TRIGGER.match(m, code):
            end_m = _END.search(m, code)
            end = end_m.end() - 1 if end_m else len(text)
        else:
            semi = m.find(";", code)
            end = semi if semi >= 0 else len(text)
        out.append(Statement(start, code, text[start:end]))
        start = end + 1
    return out


@dataclass(frozen=True)
class Param:
    start: int
    end: int
    token: str  # as written: ?, ?3, :name, @name, $name
    index: int  # SQLite's parameter number for it


_PARAM = re.compile(r"\?(\d*)|(?<![:\w]):([A-Za-z_]\w*)|@([A-Za-z_]\w*)|\$(\w+)")


def find_params(sql: str) -> list[Param]:
    """Bind parameters in order of appearance, numbered as SQLite numbers them: ``?`` takes the
    largest number so far plus one, ``?N`` is N, a name keeps the number of its first use."""
    out: list[Param] = []
    names: dict[str, int] = {}
    largest = 0
    for m in _PARAM.finditer(masked(sql)):
        token = m.group(0)
        if token.startswith("?") and m.group(1):
            index = int(m.group(1))
        elif token == "?":
            index = largest + 1
        else:
            index = names.get(token) or largest + 1
            names.setdefault(token, index)
        largest = max(largest, index)
        out.append(Param(m.start(), m.end(), token, index))
    return out


def double_quoted(sql: str) -> set[str]:
    """Contents of the double-quoted tokens (a double-quoted word may be a string in SQLite)."""
    return {sql[s.start + 1:s.end - 1].replace('""', '"') for s in spans(sql) if s.kind == "dquote"}


def header_comments(sql: str) -> list[str]:
    """The ``--`` comment lines before the statement's first keyword, without the dashes."""
    head = sql[:code_start(sql)]
    return [ln.strip()[2:].strip() for ln in head.splitlines() if ln.strip().startswith("--")]
