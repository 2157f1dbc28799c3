"""Census of stored values: what each column actually holds, counted in SQL per table.

Everything is counted in SQL, at SQLite's speed: storage classes, NUL bytes, sizes, number
ranges, and for columns whose text may carry a meaning beyond its class, what that text is.
A text value that starts like a date is reduced to its *shape* (every digit written as 0, plus
whether it ends in a UTC offset), and the shapes found are turned into ISO-8601 layouts here,
once per distinct shape, with calendar validity checked in SQL; canonical UUIDs
are matched by a GLOB; JSON by ``json_valid``. Python sees a value only where SQL cannot decide
exactly: a JSON candidate holding a backslash escape, a control character or a non-ASCII
byte, and (for ``plan``) the UTF-8 validity of non-ASCII text. ``quick_census`` is what the
snapshot needs to choose types; ``plan_census`` is the same plus what ``plan`` counts beyond it,
so ``plan`` shows the very types the snapshot will choose.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from . import workers
from .conventions import census_hint
from .declared import affinity
from .quoting import qi
from .source import ForeignKey, Table, open_source, rowid_bounds, rowid_parent

T = TypeVar("T")

CLASSES = ("integer", "real", "text", "blob")
UNIX_MAX = 4_102_444_800  # 2100-01-01: integers in [0, this] can be unix seconds
JULIAN_MIN, JULIAN_MAX = 1_721_425.5, 5_373_484.5  # years 1..9999 as Julian day numbers
TEXT_TAGS = ("int", "bool", "datetime", "date", "json", "uuid", "uuid32")

# ASCII digits only: \d would match any Unicode digit (full-width, Arabic-Indic), which int()
# reads, so such text would be taken for a date and rewritten with ASCII digits.
DATETIME_TEXT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})([ T])(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:?\d{2})?",
    re.ASCII,
)
DATE_TEXT = re.compile(r"(\d{4})-(\d{2})-(\d{2})", re.ASCII)
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
    sampled: int = 0  # rows the counts come from when a sample (``sampled_census``); 0: every row


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


def _reject(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# -- text classification in SQL ------------------------------------------------------------------

_WS = "' ' || char(9, 10, 11, 12, 13)"  # ASCII whitespace, trim()med before the word check
_BOOL_WORDS = ", ".join(f"'{w}'" for w in sorted(_BOOLS))
_UUID_GLOB = "-".join("[0-9a-f]" * n for n in (8, 4, 4, 4, 12))
_UUID32_GLOB = "[0-9a-f]" * 32  # Django's UUIDField in SQLite
_DATED = "'[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*'"  # text that starts like a date
_UTC = "({q} GLOB '*+00:00' OR {q} GLOB '*+0000')"
_NON_ASCII = "'*[^' || char(1) || '-' || char(127) || ']*'"  # a byte >= 0x80, valid or not
# Up to 3.41 json_valid() is RFC 8259, as Python's json (checked value by value by the tests);
# from 3.42 it also accepts JSON5, which Postgres refuses: Python decides there.
_JSON_STRICT = sqlite3.sqlite_version_info < (3, 42, 0)
_TEXT_WIDTH = 8  # aggregates per classified column, see _text_exprs


def _dated(q: str) -> str:
    """Date-like text of column ``q`` as bytes (ordered alike: text that is not UTF-8 must not
    fail the census when read), else NULL."""
    return f"CASE WHEN typeof({q}) = 'text' AND {q} GLOB {_DATED} THEN CAST({q} AS BLOB) END"


def _text_exprs(q: str, wanted: frozenset[str], kind: str, dated: str) -> list[str]:
    """One scan's aggregates classifying the text of column ``q`` (``kind``: its typeof(),
    ``dated``: its ``_dated``, both computed once per row by ``quick_census``): the smallest and
    largest date-like text and how many there are (their layouts are settled after the scan),
    UUIDs, boolean words, JSON documents, and digit strings; NULL for a kind not ``wanted``."""
    text = f"{kind} = 'text'"
    json_ok = json_ok_sql(q)
    exprs = {
        # dates and date-times alike: their layouts are settled from the shapes
        "datetime": [f"min({dated})", f"max({dated})", f"count({dated})"],
        "uuid": [f"sum({text} AND {q} GLOB '{_UUID_GLOB}')"],
        "uuid32": [f"sum({text} AND {q} GLOB '{_UUID32_GLOB}')"],
        "bool": [f"sum(CASE WHEN {text} AND length({q}) <= 16 THEN lower(trim({q}, {_WS})) IN "
                 f"({_BOOL_WORDS}) END)"],
        "json": [f"sum(CASE WHEN {text} AND substr({q}, 1, 1) IN ('{{', '[') THEN {json_ok} END)"],
        "int": [f"sum(CASE WHEN {text} AND {q} GLOB '[0-9]*' THEN NOT {q} GLOB '*[^0-9]*' END)"],
    }
    out = []
    for kind, sql in exprs.items():
        if kind in wanted:
            out += sql if kind == "datetime" else [f"coalesce({e}, 0)" for e in sql]
        else:
            out += ["NULL"] * len(sql)  # not looked for
    return out


# What the snapshot's census classifies, by the declared type's hint (plan classifies it all).
HINTED_TAGS = {"datetime": frozenset({"datetime"}), "date": frozenset({"datetime"}),
               "json": frozenset({"json"}), "uuid": frozenset({"uuid", "uuid32"}),
               "bool": frozenset({"bool"})}


def shape(text: str) -> str:
    """Every ASCII digit written as 0, marked when the text ends in UTC written as an offset
    (+00:00, +0000), which the layout keeps apart from other offsets. The same in SQL: _SHAPE."""
    out = re.sub("[0-9]", "0", text)
    return out + "|utc" if text.endswith(("+00:00", "+0000")) else out


def _shape_sql(q: str) -> str:
    expr = q
    for digit in "123456789":
        expr = f"replace({expr}, '{digit}', '0')"
    return f"{expr} || CASE WHEN {_UTC.format(q=q)} THEN '|utc' ELSE '' END"


def layout_of_shape(text_shape: str) -> str | None:
    """The ISO-8601 layout (``datetime_signature``) shared by every text of this shape."""
    utc = text_shape.endswith("|utc")
    text_shape = text_shape.removesuffix("|utc")
    sample = text_shape.replace("0", "1")  # 1111-11-11 11:11:11 is a real date and time
    if utc:  # the offset is +00:00 / +0000 itself, not another offset
        zone = "+00:00" if text_shape.endswith("+00:00") else "+0000"
        sample = sample[: -len(zone)] + zone
    if DATE_TEXT.fullmatch(sample):
        return "YYYY-MM-DD"
    return datetime_signature(sample)


def _glob_of_shape(text_shape: str) -> str:
    """A GLOB (as a SQL string's body) matching the texts of this shape: a digit wherever it
    has a 0, except in a +00:00 / +0000 offset, which stays literal."""
    utc = text_shape.endswith("|utc")
    text_shape = text_shape.removesuffix("|utc")
    zone = ""
    if utc:
        zone = "+00:00" if text_shape.endswith("+00:00") else "+0000"
        text_shape = text_shape[: -len(zone)]
    special = {"*": "[*]", "?": "[?]", "[": "[[]", "'": "''"}
    return "".join("[0-9]" if c == "0" else special.get(c, c) for c in text_shape) + zone


def _calendar_ok(q: str) -> str:
    """A date-shaped text names a real date and time: month 1-12, a day the month has (leap
    years by the Gregorian rule; SQLite's date() would accept February 30), no year 0, hours
    < 24, minutes and seconds < 60."""
    year = f"CAST(substr({q}, 1, 4) AS INTEGER)"
    last_day = (f"CASE substr({q}, 6, 2) WHEN '02' THEN CASE WHEN {year} % 4 = 0 AND "
                f"({year} % 100 <> 0 OR {year} % 400 = 0) THEN '29' ELSE '28' END "
                "WHEN '04' THEN '30' WHEN '06' THEN '30' WHEN '09' THEN '30' WHEN '11' THEN '30' "
                "ELSE '31' END")
    return (f"substr({q}, 6, 2) BETWEEN '01' AND '12' AND substr({q}, 9, 2) BETWEEN '01' AND "
            f"{last_day} AND substr({q}, 1, 4) <> '0000' "
            f"AND (length({q}) = 10 OR substr({q}, 12, 2) < '24' AND substr({q}, 15, 2) < '60' "
            f"AND (substr({q}, 17, 1) <> ':' OR substr({q}, 18, 2) < '60'))")


def _text_results(conn: sqlite3.Connection, src: str, names: list[str], values: Sequence[Any]
                  ) -> dict[str, tuple[dict[str, int], dict[str, int]]]:
    """(tags, layouts) per classified column. Layouts: when the smallest and largest date-like
    text share a shape, one more scan counts the valid texts of that shape (usually all of them);
    otherwise the texts are grouped by shape (a column mixing layouts)."""
    rows = {name: values[i * _TEXT_WIDTH:(i + 1) * _TEXT_WIDTH] for i, name in enumerate(names)}
    single: dict[str, str] = {}  # column -> the one shape its date-like text may have
    for name, (low_bytes, high_bytes, dated, *_rest) in rows.items():
        if not dated:
            continue
        low, high = (b.decode("utf-8", "replace") for b in (low_bytes, high_bytes))
        if shape(low) == shape(high) and layout_of_shape(shape(low)):
            single[name] = shape(low)
    counted: dict[str, int] = {}
    if single:
        exprs = []
        for name, one in single.items():
            q = qi(name)
            utc = f"{_UTC.format(q=q)}" if one.endswith("|utc") else f"NOT {_UTC.format(q=q)}"
            # GLOB stops reading at a NUL byte: such text is never a date-time.
            exprs.append(f"sum(CASE WHEN typeof({q}) = 'text' AND {q} GLOB '{_glob_of_shape(one)}' "
                         f"AND {utc} AND instr(CAST({q} AS BLOB), X'00') = 0 "
                         f"THEN {_calendar_ok(q)} END)")
        found = conn.execute(f"SELECT {', '.join(exprs)} FROM {src}").fetchone()
        counted = {name: int(n or 0) for name, n in zip(single, found, strict=True)}
    out = {}
    for name, (_low, _high, dated, uuids, uuid32s, bools, jsons, ints) in rows.items():
        formats: dict[str, int] = {}
        if name in single and counted[name] == dated:  # every date-like text: one layout
            formats = {str(layout_of_shape(single[name])): counted[name]}
        elif dated:
            formats = _layouts_by_shape(conn, src, name)
        dates = formats.get("YYYY-MM-DD", 0)
        tags = {"int": ints, "bool": bools, "json": jsons, "uuid": uuids, "uuid32": uuid32s}
        out[name] = ({**{k: int(v) for k, v in tags.items() if v is not None},
                      "datetime": sum(formats.values()) - dates, "date": dates}, formats)
    return out


def _layouts_by_shape(conn: sqlite3.Connection, src: str, name: str) -> dict[str, int]:
    q = qi(name)
    formats: dict[str, int] = {}
    for shape_bytes, n in conn.execute(
            f"SELECT CAST({_shape_sql(q)} AS BLOB) AS s, sum({_calendar_ok(q)}) FROM {src} "
            f"WHERE typeof({q}) = 'text' AND {q} GLOB {_DATED} "
            f"AND instr(CAST({q} AS BLOB), X'00') = 0 GROUP BY s"):
        sig = layout_of_shape(shape_bytes.decode("utf-8", "replace"))  # a layout is ASCII
        if sig and n:
            formats[sig] = formats.get(sig, 0) + int(n)
    return formats


def _json_ok(value: bytes | None) -> int:
    """Python's json (as Postgres's json) accepts the text: where json_valid() is not RFC 8259."""
    if value is None:
        return 0
    try:
        json.loads(value.decode("utf-8"), parse_constant=_reject)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        return 0
    return 1


def _utf8_ok(value: bytes | None) -> int:
    if value is None:
        return 1
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return 0
    return 1


_FLAG_BITS = 40  # _text_flags: a table of up to 2^40 rows counts both kinds in one integer sum
_FLAG_MASK = (1 << _FLAG_BITS) - 1


def _text_flags(value: bytes | None) -> int:
    """1 for a NUL byte, plus 2^40 for invalid UTF-8: summed, one aggregate counts both."""
    if value is None:
        return 0
    return (b"\x00" in value) + ((not _utf8_ok(value)) << _FLAG_BITS)


def _negative_zero(value: float) -> int:
    return int(math.copysign(1.0, value) < 0)


def sample_key(conn: sqlite3.Connection, table: Table, where: str) -> list[Any] | None:
    """The key of one row matching ``where`` (for the plan's "sample key")."""
    exprs = [table.rowid_name] if not table.key_columns else [qi(k) for k in table.key_columns]
    row = conn.execute(
        f"SELECT {', '.join(exprs)} FROM {qi(table.name)} WHERE {where} LIMIT 1"
    ).fetchone()
    return list(row) if row else None


_ORDER = ("blob", "integer", "null", "real", "text")  # typeof() names in sort order


def quick_census(conn: sqlite3.Connection, table: Table, *, text_columns: set[str] | None = None,
                 src: str | None = None) -> TableCensus:
    """The census the snapshot needs (of every row, or of ``src``, a sample): which storage
    classes each column holds (min/max of typeof(), then exact counts only where a column mixes
    classes), plus the checks a column's declared type asks for. NUL bytes are not looked for
    (None): a text column copied as-is that holds one fails its COPY chunk, which is then
    converted again value by value."""
    text_columns = text_columns or set()
    src = src or qi(table.name)
    prepare(conn)
    exprs = ["count(*)"]
    # Each value's typeof() (and a date-like text) computed once, in a subquery SQLite must not
    # flatten (LIMIT -1), rather than in each aggregate that asks: a fifth less time.
    kinds = {c.name: f"_replicator_t{i}" for i, c in enumerate(table.columns)}
    wants = {c.name: HINTED_TAGS.get(census_hint(table, c) or "", frozenset(TEXT_TAGS))
             for c in table.columns if c.name in text_columns}
    dates = {c.name: f"_replicator_d{i}" for i, c in enumerate(table.columns)
             if "datetime" in wants.get(c.name, ())}
    inner = [qi(c.name) for c in table.columns] + \
        [f"typeof({qi(name)}) AS {alias}" for name, alias in kinds.items()] + \
        [f"{_dated(qi(name))} AS {alias}" for name, alias in dates.items()]
    for col in table.columns:
        q, hint = qi(col.name), census_hint(table, col)
        # Where integers and reals commonly mix (NUMERIC affinity, no type), count the integers
        # now: a mix of just those two then needs no second scan.
        t = kinds[col.name]
        ints = f"sum({t} = 'integer')" if affinity(col.declared) in ("NUMERIC", "BLOB") \
            else "NULL"
        exprs += [f"count({q})", f"min({t})", f"max({t})", ints,
                  f"sum({t} = 'integer' AND {q} IN (0, 1))" if hint == "bool" else "NULL",
                  f"sum({t} = 'integer' AND {q} BETWEEN 0 AND {UNIX_MAX})"
                  if hint in ("datetime", "date") else "NULL",
                  f"sum({t} = 'real' AND {q} BETWEEN {JULIAN_MIN} AND {JULIAN_MAX})"
                  if hint in ("datetime", "date") else "NULL"]
    classified = [c for c in table.columns if c.name in text_columns]
    for col in classified:
        exprs += _text_exprs(qi(col.name), wants[col.name], kinds[col.name],
                             dates.get(col.name, "NULL"))
    row = conn.execute(f"SELECT {', '.join(exprs)} FROM (SELECT {', '.join(inner)} FROM {src} "
                       "LIMIT -1)").fetchone()
    rows, out, mixed = int(row[0]), {}, []
    texts = _text_results(conn, src, [c.name for c in classified],
                          row[1 + 7 * len(table.columns):])
    for i, col in enumerate(table.columns):
        count, lo, hi, ints, int01, unix, julian = row[1 + i * 7 : 1 + (i + 1) * 7]
        span = [] if lo is None else [c for c in _ORDER[_ORDER.index(lo):_ORDER.index(hi) + 1] if c != "null"]
        counts = dict.fromkeys((*CLASSES, "null"), 0)
        counts["null"] = rows - int(count)
        if len(span) == 1:
            counts[span[0]] = int(count)
        elif span == ["integer", "real"] and ints is not None:
            counts["integer"], counts["real"] = int(ints), int(count) - int(ints)
        elif span:
            mixed.append((col.name, span))
        tags, formats = texts.get(col.name, (None, None))
        out[col.name] = ColumnCensus(
            counts=counts, nul_text=None, bad_utf8=None, max_bytes=0, int_beyond_2_53=0,
            int_01=int(int01 or 0), int_unix=int(unix or 0), real_julian=int(julian or 0),
            text_tags=tags, datetime_formats=formats,
        )
    if mixed:
        exprs = [f"sum(typeof({qi(name)}) = '{c}')" for name, span in mixed for c in span]
        values = iter(conn.execute(f"SELECT {', '.join(exprs)} FROM {src}").fetchone())
        for name, span in mixed:
            for c in span:
                out[name].counts[c] = int(next(values) or 0)
    return TableCensus(rows=rows, columns=out)


# A large table's census is taken of a sample; the copy then proves, row by row in its own SELECT,
# that every value is one the sample foresaw (``sample_holds``), and a value that is not stops the
# table's copy to be planned again from every row (snapshot.units).
SAMPLE_BLOCKS, SAMPLE_BLOCK_ROWS = 32, 512
SAMPLE_ABOVE = 4 * SAMPLE_BLOCKS * SAMPLE_BLOCK_ROWS  # a smaller table is counted whole
SPLIT_ABOVE = 200_000  # plan counts a table spanning more rowids than this in parts side by side


def sample_starts(lo: int, hi: int) -> list[int]:
    """The rowids where the sample's blocks start: spread evenly from ``lo`` to ``hi``."""
    return sorted({lo + (hi - lo) * i // SAMPLE_BLOCKS for i in range(SAMPLE_BLOCKS)})


def sampled_census(conn: sqlite3.Connection, table: Table, *, text_columns: set[str] | None = None
                   ) -> TableCensus:
    """``quick_census`` of SAMPLE_BLOCKS blocks of SAMPLE_BLOCK_ROWS consecutive rows spread over
    the rowids of a large table (``rows`` is still the table's own count); a small table, or one
    without rowid, is counted whole."""
    rows = int(conn.execute(f"SELECT count(*) FROM {qi(table.name)}").fetchone()[0])
    if not table.rowid_name or rows <= SAMPLE_ABOVE:
        return quick_census(conn, table, text_columns=text_columns)
    rid = table.rowid_name
    lo, hi = rowid_bounds(conn, table.name, rid)
    if lo is None or hi is None:
        return quick_census(conn, table, text_columns=text_columns)
    cols = ", ".join(qi(c.name) for c in table.columns)
    blocks = [f"SELECT * FROM (SELECT {cols} FROM {qi(table.name)} WHERE {rid} >= {start} "
              f"ORDER BY {rid} LIMIT {SAMPLE_BLOCK_ROWS})" for start in sample_starts(lo, hi)]
    out = quick_census(conn, table, text_columns=text_columns,
                       src=f"({' UNION ALL '.join(blocks)})")
    out.sampled, out.rows = out.rows, rows
    return out


def layout_glob(layout: str) -> str:
    """A GLOB (as a SQL string's body) matching the texts of an ISO layout (``datetime_signature``
    without "±zone"): a digit wherever the layout has a placeholder."""
    return "".join("[0-9]" if c in "YMDHSf" else c for c in layout)


def uuid_holds(q: str) -> str:
    """SQL true for a canonical lowercase UUID text (the form the plan maps to uuid)."""
    return f"{q} GLOB '{_UUID_GLOB}'"


def json_ok_sql(q: str) -> str:
    """SQL true for text Postgres's json takes (``prepare`` registers what it may call)."""
    return (f"json_valid({q}) AND instr(CAST({q} AS BLOB), X'00') = 0" if _JSON_STRICT
            else f"_replicator_json_ok(CAST({q} AS BLOB))")


def prepare(conn: sqlite3.Connection) -> None:
    """The functions the census's SQL calls, registered on ``conn``."""
    conn.create_function("_replicator_json_ok", 1, _json_ok, deterministic=True)
    conn.create_function("_replicator_utf8_ok", 1, _utf8_ok, deterministic=True)


def sample_holds(q: str, cen: ColumnCensus, checks: frozenset[str] = frozenset()) -> str:
    """SQL true for a value of column ``q`` that the sampled census ``cen`` foresaw: NULL, or of a
    storage class the sample held that passes ``checks`` (what the column's plan took from the
    sample: "unix" integers in the unix-seconds range, "json" text, "uuid32" text, "layouts":
    text in one of the sample's date-time layouts)."""
    classes = sorted(cen.present())
    if not classes:
        return f"{q} IS NULL"
    parts = [f"typeof({q}) IN ({', '.join(repr(c) for c in classes)})"]
    on_int, on_text = f"typeof({q}) <> 'integer' OR ", f"typeof({q}) <> 'text' OR "
    if "unix" in checks:
        parts.append(f"({on_int}{q} BETWEEN 0 AND {UNIX_MAX})")
    if "json" in checks:
        parts.append(f"({on_text}substr({q}, 1, 1) IN ('{{', '[') AND {json_ok_sql(q)})")
    if "uuid32" in checks:
        parts.append(f"({on_text}{q} GLOB '{_UUID32_GLOB}')")
    if "layouts" in checks:
        globs = " OR ".join(f"{q} GLOB '{layout_glob(f)}'" for f in sorted(cen.datetime_formats or {}))
        parts.append(f"({on_text}{globs or '0'})")
    return f"({q} IS NULL OR {' AND '.join(parts)})"


def rowid_ranges(conn: sqlite3.Connection, table: Table, parts: int) -> list[tuple[int | None, int | None]]:
    """``parts`` rowid ranges (None: open) that together cover every row, now or written later,
    for a table with rowids spanning more than SPLIT_ABOVE; else one range covering it all."""
    whole: list[tuple[int | None, int | None]] = [(None, None)]
    if parts < 2 or not table.rowid_name:
        return whole
    lo, hi = rowid_bounds(conn, table.name, table.rowid_name)
    if lo is None or hi is None or hi - lo < SPLIT_ABOVE:
        return whole
    cuts = [lo + (hi - lo) * i // parts for i in range(1, parts)]
    return [(None if i == 0 else cuts[i - 1] + 1, cuts[i] if i < len(cuts) else None)
            for i in range(parts)]


def merged(parts: Sequence[TableCensus]) -> TableCensus:
    """One census of the rows that ``parts`` (censuses of disjoint rows) counted."""
    def sums(dicts: list[dict[str, int] | None]) -> dict[str, int] | None:
        present = [d for d in dicts if d is not None]
        if not present:
            return None
        out: dict[str, int] = {}
        for d in present:
            for k, v in d.items():
                out[k] = out.get(k, 0) + v
        return out

    def opt(values: list[int | None]) -> int | None:
        return None if any(v is None for v in values) else sum(v or 0 for v in values)

    columns = {}
    for name in parts[0].columns:
        cs = [p.columns[name] for p in parts]
        columns[name] = ColumnCensus(
            counts=sums([c.counts for c in cs]) or {}, nul_text=opt([c.nul_text for c in cs]),
            bad_utf8=opt([c.bad_utf8 for c in cs]), max_bytes=max(c.max_bytes for c in cs),
            int_beyond_2_53=sum(c.int_beyond_2_53 for c in cs), int_01=sum(c.int_01 for c in cs),
            int_unix=sum(c.int_unix for c in cs), real_julian=sum(c.real_julian for c in cs),
            real_negzero=sum(c.real_negzero for c in cs), text_tags=sums([c.text_tags for c in cs]),
            datetime_formats=sums([c.datetime_formats for c in cs]))
    return TableCensus(rows=sum(p.rows for p in parts), columns=columns,
                       samples={k: v for p in parts for k, v in p.samples.items()})


def plan_census(conn: sqlite3.Connection, table: Table, *, text_columns: set[str] | None = None,
                rowids: tuple[int | None, int | None] = (None, None)) -> TableCensus:
    """What ``plan`` shows: the snapshot's own census (so ``plan`` chooses the very types the
    snapshot will), plus, in one more scan and only in the columns holding the class concerned,
    what ``plan`` counts beyond it: NUL bytes and invalid UTF-8 in text (Python looks only at
    text with a byte outside 0x01-0x7F), sizes, integers beyond 2^53, REAL -0.0. Text the census
    already proved ASCII without NUL (every text value a date-time layout) or without NUL (every
    one JSON it counted) is not looked at again for that. ``rowids``: only the rows in that range
    (``rowid_ranges``; ``merged`` adds the parts up)."""
    src = qi(table.name)
    if rowids != (None, None):
        rid, (lo, hi) = table.rowid_name, rowids
        where = " AND ".join([*([f"{rid} >= {int(lo)}"] if lo is not None else []),
                              *([f"{rid} <= {int(hi)}"] if hi is not None else [])])
        src = (f"(SELECT {', '.join(qi(c.name) for c in table.columns)} FROM {qi(table.name)} "
               f"WHERE {where})")
    out = quick_census(conn, table, text_columns=text_columns, src=src)
    conn.create_function("_replicator_text_flags", 1, _text_flags, deterministic=True)
    conn.create_function("_replicator_negzero", 1, _negative_zero, deterministic=True)
    exprs: list[str] = []
    asks: list[tuple[str, str]] = []
    for col in table.columns:
        q, present = qi(col.name), out.columns[col.name].present()
        cen = out.columns[col.name]
        cen.nul_text, cen.bad_utf8 = 0, 0
        texts, tags = cen.counts["text"], cen.text_tags or {}
        if "text" in present and tags.get("datetime", 0) + tags.get("date", 0) < texts:
            # One sum carries both counts (see _text_flags); NUL-free JSON needs no NUL test.
            nul = "0" if tags.get("json", 0) == texts else f"instr(CAST({q} AS BLOB), X'00') > 0"
            asks.append((col.name, "flags"))
            exprs.append(f"sum(CASE WHEN typeof({q}) = 'text' AND ({q} GLOB {_NON_ASCII} OR {nul}) "
                         f"THEN _replicator_text_flags(CAST({q} AS BLOB)) END)")
        if present & {"text", "blob"}:
            asks.append((col.name, "bytes"))
            exprs.append(f"max(CASE WHEN typeof({q}) IN ('text', 'blob') THEN "
                         f"length(CAST({q} AS BLOB)) END)")
        if "integer" in present:
            asks.append((col.name, "big"))
            exprs.append(f"sum(typeof({q}) = 'integer' AND {q} NOT BETWEEN -9007199254740992 AND "
                         "9007199254740992)")
        if "real" in present:
            asks.append((col.name, "negzero"))
            exprs.append(f"sum(CASE WHEN typeof({q}) = 'real' AND {q} = 0 THEN "
                         f"_replicator_negzero({q}) END)")
    if not exprs:
        return out
    row = conn.execute(f"SELECT {', '.join(exprs)} FROM {src}").fetchone()
    for (name, what), value in zip(asks, row, strict=True):
        cen, n = out.columns[name], int(value or 0)
        if what == "flags":
            cen.nul_text, cen.bad_utf8 = n & _FLAG_MASK, n >> _FLAG_BITS
        elif what == "bytes":
            cen.max_bytes = n
        elif what == "big":
            cen.int_beyond_2_53 = n
        else:
            cen.real_negzero = n
    return out


# -- what plan counts beyond the census, and where ---------------------------------------------

def apart(source: Path, busy_timeout_ms: int, count: Callable[..., T], table: Table, **kwargs: Any
          ) -> T:
    """``count(conn, table, **kwargs)`` on a connection and read transaction of its own (in a
    worker process, a failure comes back as a ``workers.WorkerError``)."""
    try:
        conn = open_source(source, readonly=True, busy_timeout_ms=busy_timeout_ms)
        try:
            conn.execute("BEGIN")
            return count(conn, table, **kwargs)
        finally:
            conn.close()
    except Exception as exc:  # noqa: BLE001 - carried back as text
        raise workers.carried(exc, f"table {table.name!r}") from None


def count_orphans(conn: sqlite3.Connection, table: Table) -> dict[str, int]:
    """Rows per foreign key whose parent row is missing, as ``PRAGMA foreign_key_check`` finds
    them. A key of an INTEGER column naming the parent's rowid (what ORMs make) is counted by one
    anti-join instead, which looks up each row's parent the same way at a fifth of the cost."""
    out: dict[str, int] = {}
    counted: set[int] = set()
    for fkid, fk in enumerate(table.foreign_keys):
        label = f"({', '.join(fk.columns)}) -> {fk.parent}"
        parent_col = _looked_up(conn, table, fk)
        if parent_col is None:
            continue
        counted.add(fkid)
        child = f"{qi(table.name)}.{qi(fk.columns[0])}"
        n = conn.execute(f"SELECT count(*) FROM {qi(table.name)} WHERE {child} IS NOT NULL AND "
                         f"NOT EXISTS (SELECT 1 FROM {qi(fk.parent)} AS _replicator_parent WHERE "
                         f"_replicator_parent.{qi(parent_col)} = {child})").fetchone()[0]
        if n:
            out[label] = int(n)
    if len(counted) == len(table.foreign_keys):
        return out
    try:
        rows = conn.execute(f"PRAGMA foreign_key_check({qi(table.name)})").fetchall()
    except sqlite3.DatabaseError:
        return out
    for _tbl, _rowid, parent, fkid in rows:
        if fkid in counted:
            continue
        known = table.foreign_keys[fkid] if fkid < len(table.foreign_keys) else None
        label = f"({', '.join(known.columns)}) -> {parent}" if known else f"#{fkid} -> {parent}"
        out[label] = out.get(label, 0) + 1
    return out


def _looked_up(conn: sqlite3.Connection, table: Table, fk: ForeignKey) -> str | None:
    """The parent's rowid column, where ``fk`` is one INTEGER column referring to it."""
    try:
        integer = affinity(table.column(fk.columns[0]).declared) == "INTEGER"
    except KeyError:
        return None
    return rowid_parent(conn, fk) if integer else None
