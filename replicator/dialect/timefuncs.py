"""SQLite's date and time functions in Postgres terms.

SQLite has no date type: ``date()``, ``time()``, ``datetime()`` and ``strftime()`` return text,
``julianday()`` a float and ``unixepoch()`` an integer, all computed in UTC. The translation keeps
those result types (``to_char`` for text, a double, a bigint) so the values compare equal, and
turns the time value and its modifiers into a ``timestamp`` expression. sqlglot leaves these
functions untouched (they fail in Postgres) or maps ``strftime`` with the wrong codes for
``%s``, ``%w``, ``%f``, ``%u`` and ``%%``, hence this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sqlglot import exp

from .build import cast, func, string_value, template

TEXT_FORMATS = {"date": "YYYY-MM-DD", "time": "HH24:MI:SS", "datetime": "YYYY-MM-DD HH24:MI:SS"}
TIME_FUNCS = {"date", "time", "datetime", "julianday", "unixepoch", "strftime"}

_MOD_DELTA = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s+(day|hour|minute|second|month|year)s?\s*$",
                        re.I)
_MOD_START = re.compile(r"\s*start\s+of\s+(day|month|year)\s*$", re.I)

# strftime code -> a to_char pattern, or a function of the timestamp giving text
_CODES: dict[str, str | Callable[[exp.Expression], exp.Expression]] = {
    "d": "DD", "H": "HH24", "j": "DDD", "m": "MM", "M": "MI", "S": "SS", "Y": "YYYY",
    "f": "SS.MS", "u": "ID", "I": "HH12", "p": "AM",
    "w": lambda ts: template("CAST(CAST(EXTRACT(DOW FROM _1) AS INT) AS TEXT)", ts),
    "s": lambda ts: template("CAST(CAST(FLOOR(EXTRACT(EPOCH FROM _1)) AS BIGINT) AS TEXT)", ts),
    "J": lambda ts: cast(julian(ts), "text"),
}


class Unsupported(Exception):
    """A time value, modifier or format code with no translation; the message says which."""


class TimeResult:
    """A translated call plus what the caller should flag."""

    def __init__(self, node: exp.Expression, target: str, uses_now: bool, month_math: bool,
                 ts: exp.Expression | None = None):
        self.node, self.target, self.ts = node, target, ts
        self.uses_now, self.month_math = uses_now, month_math


def translate_call(name: str, args: list[exp.Expression], value_type: str | None) -> TimeResult:
    """Translate ``name(args)``; ``value_type`` is the Postgres type of a column time value, if
    known (a number there is a Julian day in SQLite). Raises Unsupported."""
    name = name.lower()
    fmt = None
    if name == "strftime":
        if not args:
            raise Unsupported("strftime() without a format")
        fmt = string_value(args[0])
        if fmt is None:
            raise Unsupported("a format that is not a string literal")
        args = args[1:]
    value = args[0] if args else exp.Literal.string("now")
    ts, uses_now, month_math = timestamp(value, args[1:], value_type)
    if name in TEXT_FORMATS:
        if name == "date":
            ts = func("DATE_TRUNC", exp.Literal.string("day"), ts)
        return TimeResult(func("TO_CHAR", ts, exp.Literal.string(TEXT_FORMATS[name])),
                          "to_char", uses_now, month_math, ts)
    if name == "julianday":
        return TimeResult(julian(ts), "extract(epoch)", uses_now, month_math)
    if name == "unixepoch":
        node = template("CAST(FLOOR(EXTRACT(EPOCH FROM _1)) AS BIGINT)", ts)
        return TimeResult(node, "extract(epoch)", uses_now, month_math)
    assert fmt is not None
    return TimeResult(strftime(fmt, ts), "to_char", uses_now, month_math)


def julian(ts: exp.Expression) -> exp.Expression:
    """SQLite divides whole milliseconds since the Julian epoch by 86400000.0; so does this
    (the integer is exact in a double), which gives the same float bit for bit."""
    return template("CAST(EXTRACT(EPOCH FROM _1) * 1000 + 210866760000000 AS DOUBLE PRECISION)"
                    " / 86400000.0", ts)


def timestamp(value: exp.Expression, modifiers: list[exp.Expression], value_type: str | None
              ) -> tuple[exp.Expression, bool, bool]:
    """(timestamp expression, uses 'now', does month arithmetic) for a time value + modifiers."""
    mods = []
    for m in modifiers:
        text = string_value(m)
        if text is None:
            raise Unsupported("a modifier that is not a string literal")
        mods.append(text)
    unix = any(m.strip().lower() == "unixepoch" for m in mods)
    lit = string_value(value)
    uses_now = lit is not None and lit.strip().lower() == "now"
    if uses_now:
        ts: exp.Expression = template("now() AT TIME ZONE 'UTC'")
    elif value_type == "timestamptz":  # the copy made the column a point in time: read it in UTC
        ts = template("_1 AT TIME ZONE 'UTC'", value)
    elif value_type == "timestamp":
        ts = value
    elif value_type == "date":
        ts = cast(value, "timestamp")
    elif unix:
        ts = template("TO_TIMESTAMP(CAST(_1 AS DOUBLE PRECISION)) AT TIME ZONE 'UTC'", value)
    elif (isinstance(value, exp.Literal) and not value.is_string) or value_type in (
            "bigint", "numeric", "double precision"):
        raise Unsupported("a numeric time value (a Julian day number in SQLite)")
    else:
        ts = cast(value, "timestamp")
    month_math = False
    for mod in mods:
        if mod.strip().lower() == "unixepoch":
            continue
        ts, is_month = _modifier(ts, mod)
        month_math = month_math or is_month
    return ts, uses_now, month_math


def _modifier(ts: exp.Expression, mod: str) -> tuple[exp.Expression, bool]:
    delta = _MOD_DELTA.match(mod)
    if delta:
        amount, unit = delta.group(1), delta.group(2).lower()
        interval = exp.Literal.string(f"{amount} {unit}")
        node = template("_1 + CAST(_2 AS INTERVAL)", ts, interval)
        return node, unit in ("month", "year")
    start = _MOD_START.match(mod)
    if start:
        return func("DATE_TRUNC", exp.Literal.string(start.group(1).lower()), ts), False
    raise Unsupported(f"the modifier {mod!r}")


def strftime(fmt: str, ts: exp.Expression) -> exp.Expression:
    """A strftime format as to_char patterns, with computed parts concatenated where to_char
    has no equivalent code."""
    parts: list[exp.Expression] = []
    pattern: list[str] = []
    literal: list[str] = []

    def flush_literal() -> None:
        if literal:
            pattern.append(_quote(literal))
            literal.clear()

    def flush_pattern() -> None:
        flush_literal()
        if pattern:
            parts.append(func("TO_CHAR", ts, exp.Literal.string("".join(pattern))))
            pattern.clear()

    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c != "%":
            literal.append(c)
            i += 1
            continue
        code = fmt[i + 1:i + 2]
        i += 2
        if code == "%":
            literal.append("%")
            continue
        target = _CODES.get(code)
        if target is None:
            raise Unsupported(f"the strftime code %{code}")
        flush_literal()
        if isinstance(target, str):
            pattern.append(target)
        else:
            flush_pattern()
            parts.append(target(ts))
    flush_pattern()
    if not parts:
        return exp.Literal.string("")
    node = parts[0]
    for p in parts[1:]:
        node = exp.DPipe(this=node, expression=p)
    return node


def _quote(chars: list[str]) -> str:
    """Literal text inside a to_char pattern: letters must be double-quoted."""
    text = "".join(chars)
    if not re.search(r"[A-Za-z0-9\"\\]", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
