"""Census of stored values: what each column actually holds, counted in one scan per table.

Storage classes, NUL bytes, maximum sizes and number ranges are counted in SQL. Columns whose
values may carry a meaning beyond their class (text that could be a timestamp, a boolean, JSON
or a UUID) also pass through a Python aggregate that classifies every text value; ``plan``
runs it on every text column, the snapshot only where the declared type asks for it.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, cast

from .declared import affinity, type_hint
from .quoting import qi
from .source import Table

CLASSES = ("integer", "real", "text", "blob")
UNIX_MAX = 4_102_444_800  # 2100-01-01: integers in [0, this] can be unix seconds
JULIAN_MIN, JULIAN_MAX = 1_721_425.5, 5_373_484.5  # years 1..9999 as Julian day numbers
TEXT_TAGS = ("int", "float", "bool", "datetime", "date", "json", "uuid")

# ASCII digits only: \d would match any Unicode digit (full-width, Arabic-Indic), which int()
# reads, so such text would be taken for a date and rewritten with ASCII digits.
_INT = re.compile(r"[+-]?\d+", re.ASCII)
DATETIME_TEXT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})([ T])(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)
DATE_TEXT = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_BOOLS = {"true", "false", "t", "f", "yes", "no", "y", "n", "on", "off"}


@dataclass
class ColumnCensus:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*CLASSES, "null"), 0))
    nul_text: int | None = 0  # None when not looked for
    bad_utf8: int | None = None  # None when not checked
    max_bytes: int = 0
    int_beyond_2_53: int = 0
    int_01: int = 0  # integers that are 0 or 1
    int_unix: int = 0  # integers in the unix-seconds range
    real_julian: int = 0  # reals in the Julian-day range
    real_negzero: int = 0  # REAL -0.0 values (numeric has no negative zero)
    text_tags: dict[str, int] | None = None  # how many text values parse as each TEXT_TAGS kind
    datetime_formats: dict[str, int] | None = None  # layout signature -> count

    def present(self) -> set[str]:
        return {c for c in CLASSES if self.counts.get(c)}

    @property
    def non_null(self) -> int:
        return sum(self.counts[c] for c in CLASSES)


@dataclass
class TableCensus:
    rows: int
    columns: dict[str, ColumnCensus]
    samples: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # (column, problem) -> key


def datetime_signature(text: str) -> str | None:
    """The layout of an ISO-8601 date-time string, or None. Two strings with the same signature
    can be rebuilt exactly from their parsed values (e.g. 'YYYY-MM-DD HH:MM:SS.fff Z')."""
    m = DATETIME_TEXT.fullmatch(text)
    if not m:
        return None
    year, month, day, sep, hh, mm, ss, frac, zone = m.groups()
    try:
        datetime(int(year), int(month), int(day), int(hh), int(mm), int(ss or 0))
    except ValueError:
        return None
    sig = f"YYYY-MM-DD{sep}HH:MM" + (":SS" if ss is not None else "")
    if frac is not None:
        sig += "." + "f" * len(frac)
    if zone:
        sig += zone if zone in ("Z", "+00:00", "+0000") else "±zone"
    return sig


def classify_text(text: str) -> list[str]:
    """The TEXT_TAGS a string parses as."""
    tags = []
    stripped = text.strip()
    if _INT.fullmatch(stripped):
        tags.append("int")
    else:
        try:
            value = float(stripped)
            if value == value and abs(value) != float("inf"):
                tags.append("float")
        except ValueError:
            pass
    if stripped.lower() in _BOOLS:
        tags.append("bool")
    if datetime_signature(text):
        tags.append("datetime")
    elif DATE_TEXT.fullmatch(text) and _valid_date(text):
        tags.append("date")
    if text[:1] in ("{", "["):
        try:
            json.loads(text, parse_constant=_reject)
            tags.append("json")
        except ValueError:
            pass
    if _UUID.fullmatch(text):  # canonical (lower-case) only: uuid renders lower case
        tags.append("uuid")
    return tags


def _reject(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _valid_date(text: str) -> bool:
    try:
        date.fromisoformat(text)
    except ValueError:
        return False
    return True


class _TextCensus:
    """SQLite aggregate: counts TEXT_TAGS and datetime signatures over a column's text values."""

    def __init__(self) -> None:
        self.tags = dict.fromkeys(TEXT_TAGS, 0)
        self.formats: dict[str, int] = {}

    def step(self, value: object) -> None:
        if type(value) is not bytes:
            return
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            return
        tags = classify_text(text)
        for tag in tags:
            self.tags[tag] += 1
        sig = datetime_signature(text) if "datetime" in tags else None
        if sig is None and "date" in tags:
            sig = "YYYY-MM-DD"
        if sig:
            self.formats[sig] = self.formats.get(sig, 0) + 1

    def finalize(self) -> str:
        return json.dumps({"tags": self.tags, "formats": self.formats})


def _utf8_ok(value: bytes | None) -> int:
    if value is None:
        return 1
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return 0
    return 1


def _negative_zero(value: float) -> int:
    return int(math.copysign(1.0, value) < 0)


def census(
    conn: sqlite3.Connection,
    table: Table,
    *,
    check_utf8: bool = False,
    text_columns: set[str] | None = None,
) -> TableCensus:
    """One scan of ``table``. ``text_columns`` get the text classification (None: none)."""
    text_columns = text_columns or set()
    conn.create_function("_replicator_utf8_ok", 1, _utf8_ok, deterministic=True)
    conn.create_function("_replicator_negzero", 1, _negative_zero, deterministic=True)
    conn.create_aggregate("_replicator_text_census", 1, cast(Any, _TextCensus))
    exprs = ["count(*)"]
    for col in table.columns:
        q = qi(col.name)
        exprs += [f"sum(typeof({q}) = '{c}')" for c in CLASSES]
        exprs += [
            f"sum({q} IS NULL)",
            f"sum(typeof({q}) = 'text' AND instr(CAST({q} AS BLOB), X'00') > 0)",
            f"sum(typeof({q}) = 'text' AND NOT _replicator_utf8_ok(CAST({q} AS BLOB)))"
            if check_utf8 else "NULL",
            f"max(CASE WHEN typeof({q}) IN ('text', 'blob') THEN length(CAST({q} AS BLOB)) END)",
            f"sum(typeof({q}) = 'integer' AND {q} NOT BETWEEN -9007199254740992 AND 9007199254740992)",
            f"sum(typeof({q}) = 'integer' AND {q} IN (0, 1))",
            f"sum(typeof({q}) = 'integer' AND {q} BETWEEN 0 AND {UNIX_MAX})",
            f"sum(typeof({q}) = 'real' AND {q} BETWEEN {JULIAN_MIN} AND {JULIAN_MAX})",
            f"_replicator_text_census(CASE WHEN typeof({q}) = 'text' THEN CAST({q} AS BLOB) END)"
            if col.name in text_columns else "NULL",
            # Python sees only the zeros: SQL cannot tell -0.0 from 0.0.
            f"sum(CASE WHEN typeof({q}) = 'real' AND {q} = 0 THEN _replicator_negzero({q}) END)",
        ]
    row = conn.execute(f"SELECT {', '.join(exprs)} FROM {qi(table.name)}").fetchone()
    out: dict[str, ColumnCensus] = {}
    per = len(CLASSES) + 10
    for i, col in enumerate(table.columns):
        v = row[1 + i * per : 1 + (i + 1) * per]
        counts = {c: int(v[j] or 0) for j, c in enumerate(CLASSES)}
        counts["null"] = int(v[4] or 0)
        text = json.loads(v[12]) if v[12] else None
        out[col.name] = ColumnCensus(
            counts=counts,
            nul_text=int(v[5] or 0),
            bad_utf8=int(v[6] or 0) if check_utf8 else None,
            max_bytes=int(v[7] or 0),
            int_beyond_2_53=int(v[8] or 0),
            int_01=int(v[9] or 0),
            int_unix=int(v[10] or 0),
            real_julian=int(v[11] or 0),
            real_negzero=int(v[13] or 0),
            text_tags=text["tags"] if text else None,
            datetime_formats=text["formats"] if text else None,
        )
    return TableCensus(rows=int(row[0]), columns=out)


def sample_key(conn: sqlite3.Connection, table: Table, where: str) -> list[Any] | None:
    """The key of one row matching ``where`` (for the plan's "sample key")."""
    exprs = [table.rowid_name] if not table.key_columns else [qi(k) for k in table.key_columns]
    row = conn.execute(
        f"SELECT {', '.join(exprs)} FROM {qi(table.name)} WHERE {where} LIMIT 1"
    ).fetchone()
    return list(row) if row else None


_ORDER = ("blob", "integer", "null", "real", "text")  # typeof() names in sort order


def quick_census(conn: sqlite3.Connection, table: Table, *, text_columns: set[str] | None = None
                 ) -> TableCensus:
    """The census the snapshot needs, at a fraction of the cost of ``census``: which storage
    classes each column holds (min/max of typeof(), then exact counts only where a column mixes
    classes), plus the checks a column's declared type asks for. NUL bytes are not looked for
    (None): a text column copied as-is that holds one fails its COPY chunk, which is then
    converted again value by value."""
    text_columns = text_columns or set()
    conn.create_aggregate("_replicator_text_census", 1, cast(Any, _TextCensus))
    exprs = ["count(*)"]
    for col in table.columns:
        q, hint = qi(col.name), type_hint(col.declared)
        # Where integers and reals commonly mix (NUMERIC affinity, no type), count the integers
        # now: a mix of just those two then needs no second scan.
        ints = f"sum(typeof({q}) = 'integer')" if affinity(col.declared) in ("NUMERIC", "BLOB") \
            else "NULL"
        exprs += [f"count({q})", f"min(typeof({q}))", f"max(typeof({q}))", ints,
                  f"sum(typeof({q}) = 'integer' AND {q} IN (0, 1))" if hint == "bool" else "NULL",
                  f"sum(typeof({q}) = 'integer' AND {q} BETWEEN 0 AND {UNIX_MAX})"
                  if hint in ("datetime", "date") else "NULL",
                  f"sum(typeof({q}) = 'real' AND {q} BETWEEN {JULIAN_MIN} AND {JULIAN_MAX})"
                  if hint in ("datetime", "date") else "NULL",
                  f"_replicator_text_census(CASE WHEN typeof({q}) = 'text' THEN CAST({q} AS BLOB) END)"
                  if col.name in text_columns else "NULL"]
    row = conn.execute(f"SELECT {', '.join(exprs)} FROM {qi(table.name)}").fetchone()
    rows, out, mixed = int(row[0]), {}, []
    for i, col in enumerate(table.columns):
        count, lo, hi, ints, int01, unix, julian, text = row[1 + i * 8 : 1 + (i + 1) * 8]
        span = [] if lo is None else [c for c in _ORDER[_ORDER.index(lo):_ORDER.index(hi) + 1] if c != "null"]
        counts = dict.fromkeys((*CLASSES, "null"), 0)
        counts["null"] = rows - int(count)
        if len(span) == 1:
            counts[span[0]] = int(count)
        elif span == ["integer", "real"] and ints is not None:
            counts["integer"], counts["real"] = int(ints), int(count) - int(ints)
        elif span:
            mixed.append((col.name, span))
        t = json.loads(text) if text else None
        out[col.name] = ColumnCensus(
            counts=counts, nul_text=None, bad_utf8=None, max_bytes=0, int_beyond_2_53=0,
            int_01=int(int01 or 0), int_unix=int(unix or 0), real_julian=int(julian or 0),
            text_tags=t["tags"] if t else None, datetime_formats=t["formats"] if t else None,
        )
    if mixed:
        exprs = [f"sum(typeof({qi(name)}) = '{c}')" for name, span in mixed for c in span]
        values = iter(conn.execute(f"SELECT {', '.join(exprs)} FROM {qi(table.name)}").fetchone())
        for name, span in mixed:
            for c in span:
                out[name].counts[c] = int(next(values) or 0)
    return TableCensus(rows=rows, columns=out)
