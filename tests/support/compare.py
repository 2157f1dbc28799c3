"""The independent comparator: does a Postgres value mean exactly what SQLite holds?

Written here, not taken from the product, so a conversion bug cannot hide behind itself: the
same integer; the same float bit for bit; the same string; a timestamp from which the very same
text is rebuilt in its own layout and zone; a date, JSON or UUID text unchanged. Used by the
type-layer property tests and by ``helpers.compare_all`` for every end-to-end test.
"""

from __future__ import annotations

import math
import re
import struct
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

from .values import BadUtf8


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


ISO = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})([ T])([0-9]{2}):([0-9]{2})"
                  r"(?::([0-9]{2})(?:\.([0-9]+))?)?(Z|[+-][0-9]{2}:?[0-9]{2})?")


def _rebuilt(src: str, ts: datetime) -> bool:
    """Does ``ts`` rebuild exactly the text ``src`` (in its own layout and zone)?"""
    m = ISO.fullmatch(src)  # ASCII digits only: other digits cannot be rebuilt from a number
    if m is None or ts.tzinfo is None:
        return False
    _y, _mo, _d, sep, _h, _mi, sec, frac, zone = m.groups()
    offset = timedelta(0)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    local = ts.astimezone(timezone(offset))
    text = f"{local.year:04d}-{local.month:02d}-{local.day:02d}{sep}{local.hour:02d}:{local.minute:02d}"
    micro = f"{local.microsecond:06d}"
    if sec is None:
        if local.second or local.microsecond:
            return False
    else:
        text += f":{local.second:02d}"
        if frac is None:
            if local.microsecond:
                return False
        else:
            text += "." + (micro + "0" * len(frac))[: len(frac)]
            if len(frac) < 6 and micro[len(frac):].strip("0"):
                return False
    return text + (zone or "") == src


def means_same(src: Any, pg_type: str, got: Any) -> bool:
    """Does ``got`` (a value bound for, or read back from, a Postgres column of ``pg_type``) mean
    exactly what SQLite holds (``src``)?"""
    if src is None or got is None:
        return src is None and got is None
    if isinstance(src, BadUtf8):
        return False  # Postgres text cannot hold it: only quarantine is right
    if pg_type == "bigint":
        return type(src) is int and type(got) is int and got == src
    if pg_type == "double precision":
        if type(got) is not float:
            return False
        if type(src) is float:
            return bits(got) == bits(src)
        return type(src) is int and math.isfinite(got) and Fraction(got) == src
    if pg_type == "numeric":
        if not isinstance(got, Decimal):
            return False
        if type(src) is int:
            return got.is_finite() and Fraction(got) == src
        if type(src) is float:
            if math.isinf(src):
                return got.is_infinite() and (got > 0) == (src > 0)
            return got.is_finite() and bits(float(got)) == bits(src)
        return False
    if pg_type == "text":
        if type(got) is not str:
            return False
        if type(src) is str:
            return got == src
        if type(src) is int:
            return got == str(src)
        if type(src) is float:
            try:
                return bits(float(got)) == bits(src)
            except ValueError:
                return False
        return False
    if pg_type == "bytea":
        return type(src) is bytes and type(got) is bytes and got == src
    if pg_type == "boolean":
        return type(src) is int and src in (0, 1) and type(got) is bool and got == bool(src)
    if pg_type == "timestamptz":
        if not isinstance(got, datetime) or got.tzinfo is None:
            return False
        if type(src) is int:
            return got - datetime(1970, 1, 1, tzinfo=UTC) == timedelta(seconds=src)
        return type(src) is str and _rebuilt(src, got)
    if pg_type == "date":
        return type(src) is str and type(got) is date and got.isoformat() == src
    if pg_type == "json":
        return type(src) is str and type(got) is str and got == src
    if pg_type == "uuid":
        return type(src) is str and str(got) == src
    raise AssertionError(f"the comparator does not know Postgres type {pg_type!r}")
