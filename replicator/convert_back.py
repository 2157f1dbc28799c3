"""Value conversion back, Postgres -> SQLite: the fallback window's reverse apply.

Each column goes back in the storage class and text form its converter (``convert``) took in,
so that converting it forward again gives the very same Postgres value: a timestamp back to the
column's ISO layout, a boolean to 0/1, a uuid to the text its column held, a numeric to INTEGER
or REAL. That round trip is checked for every value; a value with no exact SQLite form (a
timestamp the application wrote on Postgres with microseconds where the SQLite layout held
seconds, a numeric with more digits than a REAL keeps) follows the rule of ``_fallback`` — the
nearest form the column can hold: a wider text layout keeps a timestamp whole, while a NUMERIC
column turns number-shaped text into the nearest REAL — and is reported with the row and both
values, never dropped.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, NamedTuple

from .convert import JULIAN_UNIX, PER_SECOND, BadValue, converter
from .declared import affinity
from .plans import ColumnPlan

_DATED_KINDS = ("ts_unix", "ts_any", "ts_naive", "ts_text", "date_text")  # into date/timestamp

_INT64 = 2**63
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Back(NamedTuple):
    """A value for SQLite and whether it converts forward to exactly the Postgres value."""
    value: Any
    exact: bool


def _int(v: Any) -> Any:
    return int(v)


def _float(v: Any) -> Any:
    return float(v)


def _number(v: Decimal) -> Any:
    """numeric: INTEGER when integral and in range, else the REAL that prints as the same
    decimal; failing both, its decimal text (not exact: reported)."""
    if not v.is_finite():
        return float(v)
    if v == v.to_integral_value() and -_INT64 <= v < _INT64:
        return int(v)
    real = float(v)
    return real if Decimal(repr(real)) == v else str(v)


def _text(v: Any) -> Any:
    return str(v)


def _rendered(v: Any) -> Any:
    """``text_render`` (a column that held numbers and text): text that is exactly a number's
    rendering goes back as that number, other text as text."""
    with contextlib.suppress(ValueError):
        if str(int(v)) == v:
            return int(v)
    with contextlib.suppress(ValueError):
        if math.isfinite(float(v)) and repr(float(v)) == v:
            return float(v)
    return str(v)


def _char(v: Any) -> Any:
    return str(v).rstrip(" ")  # char(n) pads; the forward converter pads again


def _bool(v: Any) -> Any:
    return int(bool(v))


def _utc(v: datetime) -> datetime:
    return v.astimezone(UTC) if v.tzinfo is not None else v


def _iso(v: datetime, sep: str = " ", seconds: bool = True, digits: int | None = None,
         zone: str = "") -> str:
    """``v`` in an ISO layout: ``digits`` fractional digits (None: 6 when there is a fraction,
    else none), and ``zone`` appended as given."""
    v = _utc(v)
    # Formatted by hand: strftime's %Y does not pad years before 1000 on every platform.
    out = f"{v.year:04d}-{v.month:02d}-{v.day:02d}{sep}{v.hour:02d}:{v.minute:02d}"
    if seconds or v.second or v.microsecond:
        out += f":{v.second:02d}"
    frac = f"{v.microsecond:06d}"
    if digits is None:
        digits = 6 if v.microsecond else 0
    elif frac[digits:].strip("0"):
        digits = 6  # the layout's digits cannot hold it: the whole fraction (reported)
    if digits:
        out += "." + frac[:digits]
    return out + zone


def _layout(signature: str) -> Callable[[Any], Any]:
    """``ts_text:<signature>`` (``census.datetime_signature``): the same layout again."""
    sep = signature[10]
    seconds = ":SS" in signature
    digits = signature.count("f")
    zone = ""
    for suffix in ("Z", "+00:00", "+0000", "±zone"):
        if signature.endswith(suffix):
            zone = "+00:00" if suffix == "±zone" else suffix
    return lambda v: _iso(v, sep, seconds, digits, zone)


def _epoch(unit: str) -> Callable[[Any], Any]:
    """A number in ``unit`` since 1970 when the timestamp is whole in it, else ISO text (which
    the same converter also reads)."""

    def back(v: Any) -> Any:
        aware = v if v.tzinfo is not None else v.replace(tzinfo=UTC)
        delta = aware - _EPOCH
        if unit == "julian":
            return delta / timedelta(days=1) + JULIAN_UNIX
        micros = delta // timedelta(microseconds=1)
        per = 1_000_000 // PER_SECOND[unit]
        return micros // per if micros % per == 0 else _iso(v)

    return back


def _unix(v: Any) -> Any:
    micros = (_utc(v).replace(tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
    return micros // 1_000_000 if micros % 1_000_000 == 0 else _iso(v, zone="+00:00")


def _time(v: time) -> Any:
    out = f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    return out + f".{v.microsecond:06d}" if v.microsecond else out


def _date(v: date) -> Any:
    return v.isoformat()


def _uuid(v: uuid.UUID) -> Any:
    return str(v)


def _uuid_hex(v: uuid.UUID) -> Any:
    return v.hex  # Django's form in SQLite: 32 hex digits


_BY_KIND: dict[str, Callable[[Any], Any]] = {
    "bigint": _int, "int4": _int, "int2": _int,
    "float": _float, "float4": _float,
    "numeric": _number, "scaled": _number,
    "text": _text, "text_render": _rendered, "varchar": _text, "char": _char, "enum": _text,
    "json": _text, "jsonb": _text,
    "bytea": bytes,
    "bool": _bool, "bool_lenient": _bool,
    "ts_unix": _unix, "ts_any": _iso, "ts_naive": _iso,
    "date_text": _date, "time_text": _time,
    "uuid": _uuid, "uuid_any": _uuid_hex,
}


def _back_fn(conv: str) -> Callable[[Any], Any]:
    kind, _, arg = conv.partition(":")
    if kind == "ts_text":
        return _layout(arg)
    if kind in ("ts_any", "ts_naive") and arg:
        return _epoch(arg)
    return _BY_KIND.get(kind, _text)


def _same(a: Any, b: Any) -> bool:
    """Equal as the comparator sees them: floats bit for bit (NaN equal to NaN, -0.0 not 0.0)."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


# What SQLite stores for a value written into a column of each affinity, asked of SQLite itself
# (numeric-looking text becomes a number in a NUMERIC column, numbers become text in a TEXT one).
_AFFINITY = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
_AFFINITY.execute("CREATE TABLE a (i INTEGER, t TEXT, b BLOB, r REAL, n NUMERIC)")
_AFFINITY_COLUMN = {"INTEGER": "i", "TEXT": "t", "BLOB": "b", "REAL": "r", "NUMERIC": "n"}
_AFFINITY_LOCK = threading.Lock()


def stored_as(value: Any, aff: str) -> Any:
    """``value`` as a column of affinity ``aff`` stores it."""
    kind = type(value)
    if kind is bytes or aff == "BLOB" or (kind is str and aff == "TEXT") or (
            kind is int and aff in ("INTEGER", "NUMERIC")) or (kind is float and aff == "REAL"):
        return value
    col = _AFFINITY_COLUMN[aff]
    with _AFFINITY_LOCK:
        out = _AFFINITY.execute(f"INSERT INTO a ({col}) VALUES (?) RETURNING {col}",
                                (value,)).fetchone()[0]
        _AFFINITY.execute("DELETE FROM a")
    return out


def back_converter(col: ColumnPlan) -> Callable[[Any], Back]:
    """Postgres value -> ``Back``: the SQLite value, and whether the forward converter turns what
    the column then stores (its affinity applied) into the very same Postgres value (checked per
    value; NULL is always exact)."""
    back, forward = _back_fn(col.conv), converter(col)
    aff = affinity(col.declared)
    dated = col.conv.partition(":")[0] in _DATED_KINDS

    def convert(v: Any) -> Back:
        if v is None:
            return Back(None, True)
        if dated and isinstance(v, str):  # Postgres's infinity (target.exact_times): no
            return Back(v, False)             # SQLite form means it; its name goes, reported
        out = stored_as(back(v), aff)  # what the column will hold: say that, check that
        try:
            again = forward(out)
        except BadValue:
            return Back(out, False)
        return Back(out, _same(again, v))

    return convert
