"""Compare a query's rows from SQLite and from Postgres, with the value rules of ``verify``.

* integers equal integers; a Postgres numeric (Decimal) equals a SQLite integer or float when
  numerically equal, the float taken in its shortest round-trip form (``Decimal(repr(f))``);
  floats compare exactly; text, bytes and NULL compare as themselves;
* a Postgres boolean never equals SQLite's 0/1, and a date, time or UUID never equals text:
  the application would receive a different type, so that is reported as a type difference.

Rows are compared as ordered lists when the query has a top-level ORDER BY, else as multisets.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any


@dataclass
class Outcome:
    same: bool
    reason: str = ""
    sqlite_row: list | None = None  # the first differing row from each side
    pg_row: list | None = None
    row_index: int | None = None


def key(value: Any) -> tuple:
    """A hashable key; two values are equal under the rules iff their keys are equal."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("num", Decimal(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            return ("float", repr(value))
        return ("num", Decimal(repr(value)))
    if isinstance(value, Decimal):
        if not value.is_finite():
            return ("float", repr(float(value)))
        return ("num", value)
    if isinstance(value, str):
        return ("text", value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ("bytes", bytes(value))
    return ("other", type(value).__name__, str(value))


def row_key(row: list | tuple) -> tuple:
    return tuple(_norm(key(v)) for v in row)


def _norm(k: tuple) -> tuple:
    if k[0] == "num":
        try:
            return ("num", k[1].normalize() if k[1] else Decimal(0))
        except InvalidOperation:
            return k
    return k


def type_name(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "boolean"
    return {int: "integer", float: "float", Decimal: "numeric", str: "text", bytes: "bytes"}.get(
        type(value), type(value).__name__)


def explain(sqlite_row: list, pg_row: list) -> str:
    """Why two rows differ: the first differing column, its values and types."""
    if len(sqlite_row) != len(pg_row):
        return f"{len(sqlite_row)} columns in SQLite, {len(pg_row)} in Postgres"
    for i, (a, b) in enumerate(zip(sqlite_row, pg_row, strict=True)):
        if _norm(key(a)) == _norm(key(b)):
            continue
        return f"column {i + 1}: {_why(a, b)}"
    return "rows are equal"


def _why(a: Any, b: Any) -> str:
    shown = f"SQLite {_short(a)} vs Postgres {_short(b)}"
    if a is None or b is None:
        return shown + " (NULL on one side only)"
    if isinstance(b, bool) and isinstance(a, int):
        return shown + " (type: Postgres boolean where SQLite returns integer 0/1)"
    ka, kb = key(a)[0], key(b)[0]
    if ka != kb:
        return shown + f" (type: {type_name(a)} vs {type_name(b)})"
    if isinstance(a, str) and a.lower() == b.lower():
        return shown + " (differs in case only)"
    if ka == "num":
        return shown + " (numbers differ" + (
            "; a float's rounding error vs an exact numeric)" if isinstance(a, float)
            and isinstance(b, Decimal) else ")")
    return shown


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def compare(sqlite_rows: list, pg_rows: list, ordered: bool) -> Outcome:
    """Rows from both sides under the rules; ordered when the query has a top-level ORDER BY."""
    if ordered:
        out = _ordered(sqlite_rows, pg_rows)
        if not out.same and _multiset(sqlite_rows, pg_rows).same:
            out.reason = ("same rows in a different order (rows with equal sort keys may come in "
                          "any order; add a tie-breaker to ORDER BY)")
        return out
    return _multiset(sqlite_rows, pg_rows)


def _ordered(a: list, b: list) -> Outcome:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if row_key(x) != row_key(y):
            return Outcome(False, f"row {i + 1}: {explain(list(x), list(y))}", list(x), list(y), i)
    if len(a) != len(b):
        i = min(len(a), len(b))
        return Outcome(False, f"{len(a)} rows in SQLite, {len(b)} in Postgres",
                       list(a[i]) if i < len(a) else None, list(b[i]) if i < len(b) else None, i)
    return Outcome(True)


def _multiset(a: list, b: list) -> Outcome:
    ca = Counter(row_key(r) for r in a)
    cb = Counter(row_key(r) for r in b)
    if ca == cb:
        return Outcome(True)
    only_a = next((r for r in a if ca[row_key(r)] > cb.get(row_key(r), 0)), None)
    only_b = next((r for r in b if cb[row_key(r)] > ca.get(row_key(r), 0)), None)
    counts = "" if len(a) == len(b) else f"{len(a)} rows in SQLite, {len(b)} in Postgres; "
    if only_a is not None and only_b is not None:
        why = explain(list(only_a), list(only_b))
    elif only_a is not None:
        why = "a SQLite row has no match in Postgres"
    else:
        why = "a Postgres row has no match in SQLite"
    return Outcome(False, counts + why, list(only_a) if only_a is not None else None,
                   list(only_b) if only_b is not None else None)
