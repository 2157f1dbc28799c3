"""Value conversion, SQLite -> Postgres: one code path for snapshot, streaming and verify.

A converter either returns the exact Postgres value or raises ``BadValue`` with a reason; it never
coerces. (asyncpg's integer encoders call ``int()`` on a float, so a REAL 2.9 would silently
arrive as 2; its numeric encoder writes a float's full binary expansion. Both are avoided here.)
"""

from __future__ import annotations

import json
import math
import re
import struct
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Context, Decimal
from typing import Any

from .census import (
    DATE_TEXT,
    DATETIME_TEXT,
    TableCensus,
    datetime_signature,
    json_ok_sql,
    layout_glob,
    sample_holds,
    uuid_holds,
)
from .census import prepare as census_functions
from .plans import IDENTITY_INPUTS, ColumnPlan, TablePlan
from .quoting import qi

_MAX_EXACT_FLOAT_INT = 2**53


class BadText(bytes):
    """A TEXT value whose bytes are not valid UTF-8 (kept raw for quarantine)."""


class BadValue(Exception):
    def __init__(self, column: str, reason: str):
        super().__init__(f"{column}: {reason}")
        self.column = column
        self.reason = reason


_BAD_UTF8 = "TEXT that is not valid UTF-8"
_NUL_TEXT = "TEXT containing a NUL byte (Postgres text cannot hold it)"


def no_type_holds(reason: str) -> bool:
    """Whether a BadValue's reason is one no Postgres type can fix (re-planning cannot help)."""
    return reason == _NUL_TEXT or reason.startswith(_BAD_UTF8)


def _describe(value: Any) -> str:
    if isinstance(value, BadText):
        return _BAD_UTF8
    kind = {int: "INTEGER", float: "REAL", str: "TEXT", bytes: "BLOB"}.get(type(value), "value")
    shown = repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{kind} {shown}"


def _bigint(v: Any) -> int:
    if type(v) is int:
        return v
    raise ValueError


def _float(v: Any) -> float:
    if type(v) is float:
        return v
    if type(v) is int and (-_MAX_EXACT_FLOAT_INT <= v <= _MAX_EXACT_FLOAT_INT or float(v) == v):
        return float(v)
    raise ValueError


def _numeric(v: Any) -> Decimal:
    if type(v) is int:
        return Decimal(v)
    if type(v) is float:
        if math.isnan(v) or (v == 0 and math.copysign(1.0, v) < 0):
            raise ValueError  # NaN, and -0.0: numeric has no negative zero
        return Decimal(repr(v)) if math.isfinite(v) else Decimal("Infinity" if v > 0 else "-Infinity")
    raise ValueError


def _text(v: Any) -> str:
    if type(v) is str and "\x00" not in v:
        return v
    raise ValueError


def _text_render(v: Any) -> str:
    if type(v) is str:
        return _text(v)
    if type(v) is int:
        return str(v)
    if type(v) is float:
        return repr(v)
    raise ValueError


def _bytea(v: Any) -> bytes:
    if type(v) is bytes:
        return v
    raise ValueError


def _bool(v: Any) -> bool:
    if type(v) is int and v in (0, 1):
        return bool(v)
    raise ValueError


_TRUE, _FALSE = {"true", "t", "yes", "y", "on", "1"}, {"false", "f", "no", "n", "off", "0"}


def _bool_lenient(v: Any) -> bool:
    """Only under a type = "boolean" override: 'true'/'false' and friends are converted."""
    if type(v) is str:
        low = v.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
    return _bool(v)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ts_unix(v: Any) -> datetime:
    if type(v) is int and -62135596800 <= v <= 253402300799:
        return _EPOCH + timedelta(seconds=v)
    raise ValueError


def _parse_iso(v: str, naive: bool = False) -> datetime:
    m = DATETIME_TEXT.fullmatch(v)
    if not m:
        raise ValueError
    year, month, day, _sep, hh, mm, ss, frac, zone = m.groups()
    if frac is not None and len(frac) > 6:
        raise ValueError
    micro = int((frac or "0").ljust(6, "0"))
    out = datetime(int(year), int(month), int(day), int(hh), int(mm), int(ss or 0), micro)
    if naive:
        if zone:
            raise ValueError
        return out
    if zone and zone not in ("Z", "+00:00", "+0000"):
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        return (out - sign * offset).replace(tzinfo=UTC)
    return out.replace(tzinfo=UTC)


def _ts_text(signature: str) -> Callable[[Any], datetime]:
    """Text in exactly one ISO layout (so the text can be rebuilt from the timestamp)."""
    if "±zone" not in signature and "fffffff" not in signature:
        return _ts_layout(signature)

    def convert(v: Any) -> datetime:
        if type(v) is str and datetime_signature(v) == signature:
            return _parse_iso(v)
        raise ValueError

    return convert


def _ts_layout(signature: str) -> Callable[[Any], datetime]:
    """``_ts_text`` for a layout naive or in UTC with at most microseconds (every layout the plan
    maps to timestamptz), four times faster: the layout's own ASCII pattern, then
    datetime.fromisoformat, which checks the calendar as datetime_signature does and reads
    these layouts as _parse_iso does (naive text with "Z" appended: UTC)."""
    pattern = re.escape(signature)
    for token, digits in (("YYYY", 4), ("MM", 2), ("DD", 2), ("HH", 2), ("SS", 2)):
        pattern = pattern.replace(token, rf"\d{{{digits}}}")
    layout = re.compile(re.sub("f+", lambda m: rf"\d{{{len(m.group())}}}", pattern), re.ASCII)
    match, parse = layout.fullmatch, datetime.fromisoformat
    suffix = "" if signature.endswith(("Z", "+00:00", "+0000")) else "Z"

    def convert(v: Any) -> datetime:
        if type(v) is str and match(v):
            return parse(v + suffix)
        raise ValueError

    return convert


def _ts_any(v: Any) -> datetime:
    """Only under a type = "timestamptz" override: any ISO layout (naive = UTC) or unix seconds."""
    if type(v) is int:
        return _ts_unix(v)
    if type(v) is str:
        return _parse_iso(v)
    raise ValueError


def _ts_naive(v: Any) -> datetime:
    if type(v) is str:
        return _parse_iso(v, naive=True)
    raise ValueError


# Numbers as points in time (``epoch`` per column): unix seconds, milliseconds (Prisma's DateTime
# in SQLite), microseconds, or Julian day numbers (SQLite's julianday()).
EPOCHS = ("s", "ms", "us", "julian")
PER_SECOND = {"s": 1, "ms": 1000, "us": 1_000_000}
JULIAN_UNIX = 2440587.5  # the Julian day of 1970-01-01 00:00 UTC


def _from_number(v: Any, unit: str) -> datetime:
    """An integer in ``unit`` since 1970 (UTC), exact to the microsecond; a Julian day (REAL)
    only when the timestamp, turned back into a Julian day, gives the very same float."""
    if unit == "julian":
        if type(v) not in (int, float) or not math.isfinite(v):
            raise ValueError
        micros = round((v - JULIAN_UNIX) * 86_400_000_000)
        out = _EPOCH + timedelta(microseconds=micros)
        if (out - _EPOCH) / timedelta(days=1) + JULIAN_UNIX != v:
            raise ValueError
        return out
    if type(v) is not int:
        raise ValueError
    per = PER_SECOND[unit]
    if not -62135596800 * per <= v <= 253402300799 * per:
        raise ValueError
    return _EPOCH + timedelta(microseconds=v * (1_000_000 // per))


def _ts_epoch(unit: str, naive: bool) -> Callable[[Any], datetime]:
    """ISO text in any layout, or a number in ``unit`` (``EPOCHS``)."""

    def convert(v: Any) -> datetime:
        if type(v) is str:
            return _parse_iso(v, naive=naive)
        out = _from_number(v, unit)
        return out.replace(tzinfo=None) if naive else out

    return convert


def _date_text(v: Any) -> date:
    if type(v) is str and DATE_TEXT.fullmatch(v):
        return date.fromisoformat(v)
    raise ValueError


def _json(v: Any) -> str:
    if type(v) is str and "\x00" not in v:
        json.loads(v, parse_constant=_no_constant)
        return v
    raise ValueError


def _no_constant(name: str) -> None:
    raise ValueError(name)


def _uuid(v: Any) -> uuid.UUID:
    if type(v) is str:
        out = uuid.UUID(v)
        if str(out) == v:
            return out
    raise ValueError


# Into a column of an existing target schema (``existing``): the target type is the contract, and
# the value goes in when its meaning survives exactly, never truncated or rounded silently.


def _uuid_any(v: Any) -> uuid.UUID:
    """Canonical text in either case, 32 hex digits (Django's SQLite form) or a 16-byte BLOB."""
    if type(v) is bytes and len(v) == 16:
        return uuid.UUID(bytes=v)
    if type(v) is str and (len(v) == 36 and v.count("-") == 4 and v[8] == v[13] == v[18] == v[23]
                           == "-" or len(v) == 32) and v.replace("-", "").isalnum():
        return uuid.UUID(v)
    raise ValueError


def _jsonb(v: Any) -> str:
    """JSON text (jsonb keeps its meaning, not its bytes: key order, spaces and duplicate keys go;
    verification compares the parsed values). An escaped NUL has no jsonb form."""
    if type(v) is str and "\x00" not in v and "\\u0000" not in v:
        json.loads(v, parse_constant=_no_constant)
        return v
    if type(v) is int or (type(v) is float and math.isfinite(v)):
        return repr(v)
    raise ValueError


def _int_range(bits: int) -> Callable[[Any], int]:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def convert(v: Any) -> int:
        if type(v) is int and low <= v <= high:
            return v
        raise ValueError

    return convert


def _float4(v: Any) -> float:
    out = _float(v)
    if struct.unpack("f", struct.pack("f", out))[0] == out or not math.isfinite(out):
        return out
    raise ValueError


def _chars(limit: int, pad: bool) -> Callable[[Any], str]:
    """varchar(n) / char(n): the text (numbers in their shortest exact form) when it fits; char(n)
    pads with spaces as Postgres stores and returns it."""

    def convert(v: Any) -> str:
        out = _text_render(v)
        if len(out) > limit:
            raise ValueError
        return out.ljust(limit) if pad else out

    return convert


# How a framework reads a REAL stored in a DECIMAL(p,s) column (round_to_scale, conventions):
# "django": the float rounded to 15 significant digits, then to the scale half-even;
# "activerecord": its shortest decimal form rounded half-up (0.125 -> 0.13, 1.005 -> 1.01);
# "exact": the float's exact binary value rounded half-even, as printf("%.2f") and SQLAlchemy
# (2.675, which is 2.67499999..., -> 2.67). The three differ only near a half.


def _scaled(precision: int, scale: int, rounding: str | None) -> Callable[[Any], Decimal]:
    """numeric(p,s): integers, and REALs whose shortest decimal form has at most ``scale``
    fractional digits; with ``rounding`` (configured, and counted by ``plan``) a REAL with more
    digits is rounded to the scale the way the framework reads it (``ROUNDINGS``)."""
    step = Decimal(1).scaleb(-scale)
    context = Context(prec=precision + 2)
    limit = context.power(10, precision - scale)
    django = Context(prec=15)

    def convert(v: Any) -> Decimal:
        out = _numeric(v)
        if not out.is_finite() or abs(out) >= limit:
            raise ValueError
        if out.as_tuple().exponent < -scale:  # type: ignore[operator]
            if rounding == "django":
                out = django.create_decimal_from_float(v) if type(v) is float else out
                out = out.quantize(step, rounding=ROUND_HALF_EVEN, context=context)
            elif rounding == "activerecord":
                out = out.quantize(step, rounding=ROUND_HALF_UP, context=context)
            elif rounding == "exact":
                out = Decimal(v).quantize(step, rounding=ROUND_HALF_EVEN, context=context)
            else:
                raise ValueError
        if abs(out) >= limit:  # 99.995 rounds to 100.00
            raise ValueError
        return out

    return convert


_TIME_TEXT = re.compile(r"(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?", re.ASCII)


def _time_text(v: Any) -> time:
    m = _TIME_TEXT.fullmatch(v) if type(v) is str else None
    if not m:
        raise ValueError
    hh, mm, ss, frac = m.groups()
    return time(int(hh), int(mm), int(ss or 0), int((frac or "0").ljust(6, "0")))


def _labels(labels: tuple[str, ...]) -> Callable[[Any], str]:
    allowed = frozenset(labels)

    def convert(v: Any) -> str:
        if type(v) is str and v in allowed:
            return v
        raise ValueError

    return convert


CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "bigint": _bigint,
    "float": _float,
    "numeric": _numeric,
    "text": _text,
    "text_render": _text_render,
    "bytea": _bytea,
    "bool": _bool,
    "bool_lenient": _bool_lenient,
    "ts_unix": _ts_unix,
    "ts_any": _ts_any,
    "ts_naive": _ts_naive,
    "date_text": _date_text,
    "json": _json,
    "uuid": _uuid,
    "uuid_any": _uuid_any,
    "jsonb": _jsonb,
    "int4": _int_range(32),
    "int2": _int_range(16),
    "float4": _float4,
    "time_text": _time_text,
}


# converter id (before any argument) -> the storage classes it can take at all (plan: a value of
# another class is counted as not movable before anything is copied)
ACCEPTS: dict[str, set[str]] = {
    "bigint": {"integer"}, "int4": {"integer"}, "int2": {"integer"},
    "float": {"integer", "real"}, "float4": {"integer", "real"},
    "numeric": {"integer", "real"}, "scaled": {"integer", "real"},
    "text": {"text"}, "text_render": {"integer", "real", "text"},
    "varchar": {"integer", "real", "text"}, "char": {"integer", "real", "text"},
    "bytea": {"blob"}, "bool": {"integer"}, "bool_lenient": {"integer", "text"},
    "ts_unix": {"integer"}, "ts_any": {"integer", "text"}, "ts_naive": {"text"},
    "ts_text": {"text"}, "date_text": {"text"}, "time_text": {"text"}, "json": {"text"},
    "jsonb": {"integer", "real", "text"}, "uuid": {"text"}, "uuid_any": {"text", "blob"},
    "enum": {"text"},
}


def accepts(conv: str) -> set[str]:
    """The storage classes a converter id (with its arguments) can take at all."""
    out = set(ACCEPTS.get(conv.split(":")[0], {"text"}))
    return out | {"real"} if conv.endswith(":julian") else out


def _base_converter(conv: str) -> Callable[[Any], Any]:
    """A converter id, with its arguments after the first colon where it has any:
    ``ts_text:<layout>``, ``ts_any:<epoch>``, ``ts_naive:<epoch>``, ``varchar:<n>``,
    ``char:<n>``, ``scaled:<p>:<s>[:<rounding>]``, ``enum:<JSON list of labels>``."""
    kind, _, arg = conv.partition(":")
    if kind == "ts_text":
        return _ts_text(arg)
    if kind in ("ts_any", "ts_naive") and arg:  # ts_any:ms -- numbers in that unit
        return _ts_epoch(arg, naive=kind == "ts_naive")
    if kind in ("varchar", "char"):
        return _chars(int(arg), pad=kind == "char")
    if kind == "scaled":
        p, s, *mode = arg.split(":")
        return _scaled(int(p), int(s), mode[0] if mode else None)
    if kind == "enum":
        return _labels(tuple(json.loads(arg)))
    return CONVERTERS[conv]


def converter(col: ColumnPlan) -> Callable[[Any], Any]:
    """The checking converter for a column; NULL passes through."""
    fn = _base_converter(col.conv)
    name, pg_type = col.name, col.pg_type

    def convert(v: Any) -> Any:
        if v is None:
            return None
        try:
            return fn(v)
        except (ValueError, OverflowError):
            reason = f"{_describe(v)} cannot be stored exactly in {pg_type}"
            if type(v) is str and "\x00" in v:
                reason = _NUL_TEXT
            raise BadValue(name, reason) from None

    return convert


def row_converter(
    plan: TablePlan, census: TableCensus | None = None
) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """Convert a row (in plan column order). With a census that proves a column holds only values
    its converter passes through unchanged, that column is not touched (the snapshot fast path)."""
    convs: list[tuple[int, Callable[[Any], Any]]] = []
    for i, col in enumerate(plan.columns):
        if census is not None and _identity(col, census):
            continue
        convs.append((i, converter(col)))
    if not convs:
        return tuple

    def convert_row(row: Sequence[Any]) -> tuple[Any, ...]:
        out = list(row)
        for i, fn in convs:
            out[i] = fn(out[i])
        return tuple(out)

    return convert_row


def as_is(v: Any) -> Any:
    """The converter of a value that goes to Postgres unchanged."""
    return v


_BOOL_OF = {0: False, 1: True, None: None}.__getitem__  # 0/1 (and NULL) only: any other raises


def _or_null(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda v: None if v is None else fn(v)


def proven(col: ColumnPlan, census: TableCensus) -> Callable[[Any], Any] | None:
    """A converter that gives the checking converter's result for every value the census counted
    in this column, at C speed (the census made, in SQL, the checks the column's form needs), or
    None when the census does not prove the column; ``as_is`` where values pass unchanged. Used
    by the snapshot, column by column, on the very rows the census counted (one frozen copy); a
    proven converter still raises on a value it cannot take, and the chunk is then converted
    with the checks."""
    cen = census.columns.get(col.name)
    if cen is None:
        return None
    if _identity(col, census):
        return as_is
    kind, _, arg = col.conv.partition(":")
    present, texts = cen.present(), cen.counts["text"]
    nulls = cen.counts["null"] > 0 or bool(census.sampled)
    tags, formats = cen.text_tags or {}, cen.datetime_formats or {}
    if kind == "bool" and present <= {"integer"} and cen.int_01 == cen.counts["integer"]:
        return _BOOL_OF
    if kind == "json" and present <= {"text"} and tags.get("json") == texts:
        return as_is  # json_valid (RFC 8259, no NUL) counted every one; json keeps the text
    # One ISO layout for every value: the checking converter itself, which is a pattern match
    # and a C parse for these layouts (``_ts_layout``), mapped over the column.
    if kind in ("ts_text", "date_text") and present <= {"text"} and \
            formats.get(arg or "YYYY-MM-DD") == texts:
        fn = _base_converter(col.conv)
        return _or_null(fn) if nulls else fn
    return None


# What a proven converter raises on a value the census did not count (a KeyError from the 0/1
# lookup, a ValueError from a layout's converter).
UNFORESEEN = (ValueError, TypeError, OverflowError, LookupError)


# What a column's plan took from the census beyond storage classes and its converter does not
# check itself, by converter: a sample's census must be proven to hold for every row
# (``sample_proofs``). (bool's 0/1 lookup, uuid, ts_text and date_text refuse any other value.)
_SAMPLE_CHECKS = {"ts_unix": frozenset({"unix"}), "json": frozenset({"json"}),
                  "jsonb": frozenset({"json"}), "uuid_any": frozenset({"uuid32"}),
                  "ts_any": frozenset({"layouts"})}


def sample_proofs(plan: TablePlan, census: TableCensus) -> list[tuple[str, str]]:
    """(column, SQL true for a value the sampled census foresaw) for every column: a storage
    class the sample held, and what the column's plan took from the sample that its converter
    does not check (the unix range, JSON, Django's UUID text, the date-time layouts); none when
    the census counted every row. Where they hold for every row and every value converts, the
    census of every row chooses the same plan (tests/test_sampled_census.py)."""
    if not census.sampled:
        return []
    return [(col.name, sample_holds(qi(col.name), cen, _SAMPLE_CHECKS.get(col.conv, frozenset())))
            for col in plan.columns if (cen := census.columns.get(col.name)) is not None]


def proven_columns(plan: TablePlan, census: TableCensus) -> list[Callable[[Any], Any]] | None:
    """``proven`` for every column of the plan, or None when one column is not proven."""
    out = [proven(col, census) for col in plan.columns]
    return None if any(fn is None for fn in out) else out  # type: ignore[return-value]


def convert_columns(rows: Sequence[Sequence[Any]], fns: Sequence[Callable[[Any], Any]],
                    drop_last: bool = False) -> list[tuple[Any, ...]]:
    """Rows converted column by column (``proven_columns``): a C loop per converted column and
    none for a column that passes as it is; columns beyond ``fns`` pass as they are, the last one
    dropped with ``drop_last``."""
    if not rows:
        return []
    cols: list[Any] = list(zip(*rows, strict=True))
    if drop_last:
        cols.pop()
    for i, fn in enumerate(fns):
        if fn is not as_is:
            cols[i] = map(fn, cols[i])
    return list(zip(*cols, strict=True))


def _identity(col: ColumnPlan, census: TableCensus) -> bool:
    cen = census.columns.get(col.name)
    if cen is None:
        return False
    inputs = IDENTITY_INPUTS.get(col.conv)
    if inputs is None or not cen.present() <= inputs:
        return False
    return not (col.conv == "text" and (cen.nul_text or cen.bad_utf8))


def select_list(plan: TablePlan, safe: bool) -> str:
    """Columns to SELECT. The safe form reads TEXT as bytes plus its typeof, so invalid UTF-8
    cannot fail the whole query; ``decode_safe_row`` turns it back into values."""
    if not safe:
        return ", ".join(qi(c.name) for c in plan.columns)
    parts = []
    for c in plan.columns:
        q = qi(c.name)
        parts.append(f"CASE WHEN typeof({q}) = 'text' THEN CAST({q} AS BLOB) ELSE {q} END")
        parts.append(f"typeof({q}) = 'text'")
    return ", ".join(parts)


def decode_safe_row(row: Sequence[Any]) -> list[Any]:
    out = []
    for i in range(0, len(row), 2):
        value, is_text = row[i], row[i + 1]
        if is_text:
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                value = BadText(value)
        out.append(value)
    return out


def to_sqlite_value(value: Any) -> Any:
    """A Postgres key value back in SQLite terms (numeric keys come back as Decimal)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def key_to_json(values: Sequence[Any]) -> list[Any]:
    """A key or row as typed JSON, lossless (floats as hex, bytes and bad text as hex)."""
    return [typed_json(v) for v in values]


def typed_json(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, BadText):
        return {"text_hex": bytes(v).hex()}
    if type(v) is int:
        return {"int": str(v)}
    if type(v) is float:
        return {"real": v.hex()}
    if type(v) is str:
        return {"text": v} if "\x00" not in v else {"text_hex": v.encode().hex()}
    if type(v) is bytes:
        return {"blob": v.hex()}
    return {"repr": repr(v)}


def from_typed_json(v: Any) -> Any:
    if v is None:
        return None
    (kind, raw), = v.items()
    decoders: dict[str, Callable[[Any], Any]] = {
        "int": int,
        "real": float.fromhex,
        "text": str,
        "text_hex": lambda h: bytes.fromhex(h).decode("utf-8", "surrogateescape"),
        "blob": bytes.fromhex,
    }
    return decoders[kind](raw)


def convert_rows(
    plan: TablePlan, rows: Sequence[Sequence[Any]], *, safe: bool, census: TableCensus | None = None
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Convert rows read as ``(rowid, *columns)`` (safe or fast form) for Postgres.

    Returns ``(good, bad)``: good rows in Postgres column order (plus the rowid for rowid-keyed
    tables); bad rows as ``(typed key, typed raw row, column, reason, raw key)``.
    """
    convert = row_converter(plan, None if safe else census)
    rowid_keyed = plan.rowid_keyed
    names = [c.name for c in plan.columns]
    key_idx = [names.index(k) for k in plan.key_columns]
    good, bad = [], []
    for raw in rows:
        rowid = raw[0]
        values = decode_safe_row(raw[1:]) if safe else raw[1:]
        try:
            row = convert(values)
        except BadValue as exc:
            key = [rowid] if rowid_keyed else [values[i] for i in key_idx]
            bad.append((key_to_json(key), key_to_json(values), exc.column, exc.reason, key))
            continue
        good.append((*row, rowid) if rowid_keyed else row)
    return good, bad


# -- a row as a line of COPY's CSV format, written by SQLite -------------------------------------
# Where every column of a table has a rendering, SQLite writes each row as a line of COPY CSV
# and each chunk as one string: the snapshot's fastest path, with no Python object per value
# (``render_line``). A rendering takes exactly what its converter takes and gives the text of
# the very value the converter gives; for any other value it writes the byte 0xFF, never valid
# UTF-8, so Postgres refuses the chunk, which then goes through the checking converters. Postgres
# itself refuses the impossible dates and times (February 30, minute 60, year 0) but takes hour
# 24 and second 60, which the renderings refuse first.

_REJECT = "X'FF'"


def _real_text(v: Any) -> Any:
    """A REAL for double precision: its shortest round-trip text (Postgres reads it back to the
    same double, -0.0 and infinities included)."""
    return repr(v) if type(v) is float else b"\xff"


def _numeric_text(v: Any) -> Any:
    """A REAL for numeric, as ``_numeric`` converts it; 0xFF where it refuses."""
    try:
        out = _numeric(v)
    except ValueError:
        return b"\xff"
    return str(out) if out.is_finite() else ("Infinity" if out > 0 else "-Infinity")


def render_functions(conn: Any) -> None:
    """The functions ``render_line``'s SQL calls, registered on a SQLite connection."""
    conn.create_function("_replicator_real_text", 1, _real_text, deterministic=True)
    conn.create_function("_replicator_numeric_text", 1, _numeric_text, deterministic=True)
    census_functions(conn)


def _quoted(q: str) -> str:
    return f"'\"' || replace({q}, '\"', '\"\"') || '\"'"


def _render(col: ColumnPlan, classes: set[str] | None, unproven: bool) -> str | None:
    """SQL writing one value of ``col`` as a CSV field, or None where no rendering exists.
    ``classes``: the storage classes to take (a sample's; None: all the converter takes);
    ``unproven``: no census counted every value, so JSON validity is checked too."""
    q = qi(col.name)
    kind, _, arg = col.conv.partition(":")
    exact_int = f"{q} BETWEEN -{_MAX_EXACT_FLOAT_INT} AND {_MAX_EXACT_FLOAT_INT}"
    cases: dict[str, str]
    if kind == "bigint" and not arg:
        cases = {"integer": q}
    elif kind == "float" and not arg:
        cases = {"real": f"_replicator_real_text({q})",
                 "integer": f"CASE WHEN {exact_int} THEN {q} ELSE {_REJECT} END"}
    elif kind == "numeric":
        cases = {"integer": q, "real": f"_replicator_numeric_text({q})"}
    elif kind == "text":
        cases = {"text": _quoted(q)}
    elif kind == "json":
        checked = f"substr({q}, 1, 1) IN ('{{', '[') AND {json_ok_sql(q)}"
        cases = {"text": f"CASE WHEN {checked} THEN {_quoted(q)} ELSE {_REJECT} END"
                 if unproven else _quoted(q)}
    elif kind == "text_render":
        cases = {"text": _quoted(q), "integer": q, "real": f"_replicator_real_text({q})"}
    elif kind == "bytea":
        cases = {"blob": f"'\\x' || hex({q})"}
    elif kind == "bool":
        cases = {"integer": f"CASE {q} WHEN 1 THEN 't' WHEN 0 THEN 'f' ELSE {_REJECT} END"}
    elif kind == "uuid":
        cases = {"text": f"CASE WHEN {uuid_holds(q)} THEN {q} ELSE {_REJECT} END"}
    elif kind in ("ts_text", "date_text"):
        layout = arg or "YYYY-MM-DD"
        if "±zone" in layout or layout.count("f") > 6 or layout.endswith("+0000"):
            return None
        zone = "" if kind == "date_text" or layout.endswith(("Z", "+00:00")) else " || '+00'"
        # the layout, and what Postgres would take but the converter refuses: 24:00, second 60
        check = f"{q} GLOB '{layout_glob(layout)}'"
        if "HH" in layout:
            check += f" AND substr({q}, 12, 2) < '24'"
        if ":SS" in layout:
            check += f" AND substr({q}, 18, 2) < '60'"
        cases = {"text": f"CASE WHEN {check} THEN {q}{zone} ELSE {_REJECT} END"}
    else:
        return None
    whens = " ".join(f"WHEN '{cls}' THEN {sql}" for cls, sql in cases.items()
                     if classes is None or cls in classes)
    return f"CASE typeof({q}) WHEN 'null' THEN '' {whens} ELSE {_REJECT} END"


def render_line(plan: TablePlan, census: TableCensus | None) -> str | None:
    """SQL writing a row of ``plan`` as a line of COPY CSV in ``plans.write_columns`` order (the
    rowid last for a rowid-keyed table), or None when a column has no rendering. With a sampled
    census, only the storage classes the sample held are taken (any other is refused, and the
    copier then finds what the sample missed)."""
    sampled = census is not None and census.sampled > 0
    parts = []
    for col in plan.columns:
        cen = census.columns.get(col.name) if census is not None else None
        part = _render(col, cen.present() if sampled and cen is not None else None,
                       census is None or sampled)
        if part is None:
            return None
        parts.append(part)
    if plan.rowid_keyed:
        parts.append(plan.rowid_name)
    return " || ',' || ".join(parts) + " || char(10)"
