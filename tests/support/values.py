"""Generated SQLite values for the property tests: every storage class with its extremes
(64-bit integers to both ends, floats with -0.0, infinities and subnormals, text with NUL bytes
and non-BMP characters, text that is not valid UTF-8, BLOBs), ISO-8601 date-times in every
layout, JSON and UUID text; ``columns_for(declared)`` draws a column as an app would fill one
of that declared type, sometimes with an intruder of another kind."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from hypothesis import strategies as st


class Raw(bytes):
    """Bytes stored as TEXT (``CAST(? AS TEXT)``): text that is not valid UTF-8."""


@dataclass(frozen=True)
class BadUtf8:
    """What SQLite holds when its TEXT is not valid UTF-8 (read back as raw bytes)."""

    raw: bytes


INT64 = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([-(2**63), 2**63 - 1, 0, 1, -1, 2**53, 2**53 + 1, -(2**53) - 1, 2**62]),
    st.integers(-1000, 1000),
)
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=True),
    st.sampled_from([-0.0, 0.0, 5e-324, -5e-324, 2.2250738585072014e-308, 1.7976931348623157e308,
                     math.inf, -math.inf, math.nan, 0.1, 1 / 3, 2.0**53, 2.0**63, 1e16, 12.0]),
)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)  # NUL included
NUL_TEXT = st.tuples(TEXT, TEXT).map(lambda t: t[0] + "\x00" + t[1])
NUMBER_TEXT = st.one_of(
    INT64.map(str), FLOATS.map(repr),
    st.sampled_from([" 12", "1e5", "0x10", "+7", "1.50", "-0", "007", "1e400", "-0.0", "Inf", "NaN"]),
)
BAD_UTF8 = st.one_of(
    st.sampled_from([b"\xff", b"\xc3\x28", b"abc\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"]),
    st.binary(min_size=1, max_size=12).filter(lambda b: not decodes_utf8(b)),
).map(Raw)
DATES = st.dates().map(date.isoformat)
NOT_DATES = st.sampled_from(["2024-02-30", "2023-02-29", "0000-01-01", "2024-1-01", "2024-01-01x",
                             "2024-13-01 10:00", "2024-01-01 24:00:00", "2024-01-01 10:00:60"])
JSON_SCALARS = st.one_of(st.none(), st.booleans(), INT64,
                         st.floats(allow_nan=False, allow_infinity=False), TEXT)
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)), max_leaves=6)
JSON_TEXT = st.one_of(
    st.tuples(st.one_of(st.lists(JSON_VALUES, max_size=3),
                        st.dictionaries(TEXT, JSON_VALUES, max_size=3)), st.booleans())
    .map(lambda t: json.dumps(t[0], ensure_ascii=t[1])),
    st.sampled_from(['[1e400]', '{"a":1,"a":2}', '["\\ud800"]', '["\\u0000"]', '[1] ', '[-0]',
                     '{"\\u00e9":"é"}', '{not json', '[NaN]', '[1,]', '{}', '[]']),
)
UUIDS = st.uuids().map(str)  # canonical lowercase (upper case: see the xfail test below)
BLOBS = st.binary(max_size=24)

# ISO-8601 layouts: separator, seconds, fraction digits (7+ cannot be kept), zone
LAYOUTS = st.tuples(st.sampled_from([" ", "T"]), st.booleans(), st.sampled_from([0, 1, 3, 6, 7, 9]),
                    st.sampled_from(["", "", "Z", "+00:00", "+0000", "+05:30", "-0800"]))
FRACTIONS = st.one_of(  # nine digits, cut to the layout's count
    st.tuples(st.sampled_from("123456789"), st.text("0123456789", min_size=8, max_size=8))
    .map("".join),
    st.sampled_from(["000000000", "999999999", "100000000", "000001000"]))


def _iso(dt: datetime, layout: tuple, fraction: str) -> str:
    sep, seconds, digits, zone = layout
    text = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}{sep}{dt.hour:02d}:{dt.minute:02d}"
    if seconds:
        text += f":{dt.second:02d}"
        if digits:
            text += "." + fraction[:digits]
    return text + zone


def _datetimes(layout: tuple) -> st.SearchStrategy[str]:
    return st.builds(_iso, st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
                     st.just(layout), FRACTIONS)



KINDS: dict[str, st.SearchStrategy[Any]] = {
    "int": INT64, "bit": st.sampled_from([0, 1]), "unix": st.integers(0, 4_102_444_800),
    "float": FLOATS, "julian": st.floats(1_721_425.5, 5_373_484.5), "text": TEXT,
    "nul": NUL_TEXT, "number_text": NUMBER_TEXT, "date": DATES, "not_date": NOT_DATES,
    "json": JSON_TEXT, "uuid": UUIDS,
    "blob": BLOBS, "bad_utf8": BAD_UTF8, "null": st.none(),
    "bool_text": st.sampled_from(["true", "false", "yes", "no", "T", "f"]),
}
ANY_VALUE = st.one_of(*KINDS.values(), LAYOUTS.flatmap(_datetimes))


def kind(name: str) -> st.SearchStrategy[Any]:
    """Values of one of KINDS, or ISO date-times ("datetime", one layout per draw)."""
    if name == "datetime":
        return LAYOUTS.flatmap(_datetimes)
    return KINDS[name]


def homogeneous(name: str) -> st.SearchStrategy[list[Any]]:
    """A column of one kind of value (date-times: all in one layout)."""
    if name == "datetime":
        return LAYOUTS.flatmap(lambda lay: st.lists(_datetimes(lay), min_size=1, max_size=10))
    return st.lists(kind(name), min_size=1, max_size=10)


HOMOGENEOUS = st.sampled_from([*KINDS, "datetime", "datetime"]).flatmap(homogeneous)
COLUMNS = st.one_of(
    HOMOGENEOUS,  # one kind: reaches boolean, timestamptz, date, json, uuid ...
    st.tuples(HOMOGENEOUS, st.lists(ANY_VALUE, min_size=1, max_size=2)).map(lambda t: t[0] + t[1]),
    st.lists(ANY_VALUE, max_size=10),
)
# What each declared type usually holds, so the typed paths are reached often.
USUAL = {"INTEGER": ["int"], "REAL": ["float"], "TEXT": ["text", "nul"], "BLOB": ["blob"],
         "NUMERIC": ["int", "float"], "DECIMAL(10,2)": ["int", "float"],
         "BOOLEAN": ["bit", "bool_text"], "DATETIME": ["datetime", "datetime", "unix", "julian"],
         "DATE": ["date", "date", "datetime"], "JSON": ["json"], "UUID": ["uuid"], "": ["int", "float"]}


def columns_for(declared: str) -> st.SearchStrategy[list[Any]]:
    usual = st.sampled_from(USUAL[declared]).flatmap(homogeneous)
    with_intruder = st.tuples(usual, st.lists(ANY_VALUE, min_size=1, max_size=1)).map(
        lambda t: t[0] + t[1])
    return st.one_of(usual, with_intruder, COLUMNS)


def decodes_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
