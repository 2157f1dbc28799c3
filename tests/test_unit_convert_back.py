"""Values going back, Postgres -> SQLite (the fallback window): generated columns of every
declared type are planned and converted forward as the snapshot does; each Postgres value is
converted back, written into a SQLite column of the same declared type (so SQLite's affinity has
its say), read again and converted forward: it must give the very same Postgres value, and, where
the column's values share one storage class and layout, the very value SQLite held before."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given

from replicator.convert import convert_rows, converter
from replicator.convert_back import back_converter
from replicator.plans import ColumnPlan

from .support.values import columns_for, homogeneous
from .test_unit_convert import DECLARED, PROPERTY, planned, read, store


def _bits_same(a: Any, b: Any) -> bool:
    if type(a) is float and type(b) is float:
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) ==
                                                       math.copysign(1, b))
    return type(a) is type(b) and a == b


def _through_sqlite(declared: str, values: list[Any]) -> list[Any]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute(f"CREATE TABLE t (id INTEGER PRIMARY KEY, v {declared})")
    conn.executemany("INSERT INTO t (id, v) VALUES (?, ?)", list(enumerate(values)))
    out = [r[0] for r in conn.execute("SELECT v FROM t ORDER BY id")]
    conn.close()
    return out


def check_back(tmp: Path, declared: str, values: list[Any], *, same_form: bool) -> None:
    s = store(tmp, declared, values)
    try:
        _full, plan, _quick = planned(s)
        rows, safe = read(s.conn, plan)
        good, _bad = convert_rows(plan, rows, safe=safe)
    finally:
        s.close()
    col = plan.column("v")
    back = back_converter(col)
    pg_values = [row[1] for row in good]
    sent = [back(p) for p in pg_values]
    assert all(b.exact for b in sent), [(p, b) for p, b in zip(pg_values, sent, strict=True)
                                       if not b.exact]
    stored = _through_sqlite(declared, [b.value for b in sent])
    forward = converter(col)
    for p, again in zip(pg_values, stored, strict=True):
        assert _bits_same(forward(again), p) or col.pg_type == "numeric" and forward(again) == p, (
            f"{declared or 'untyped'} ({col.conv}): Postgres {p!r} went back as {again!r}")
    if same_form:
        originals = [s.truth[row[0]] for row in good]
        for was, now in zip(originals, stored, strict=True):
            assert _bits_same(was, now), f"{declared} ({col.conv}): SQLite held {was!r}, now {now!r}"


@pytest.mark.parametrize("declared", DECLARED, ids=lambda d: d or "untyped")
def test_every_value_goes_back_to_the_same_postgres_value(tmp_path, declared):
    @PROPERTY
    @given(values=columns_for(declared))
    def prop(values):
        check_back(tmp_path, declared, values, same_form=False)

    prop()


@pytest.mark.parametrize(("declared", "kind"), [
    ("INTEGER", "int"), ("REAL", "float"), ("TEXT", "text"), ("BLOB", "blob"),
    ("DATETIME", "datetime"), ("DATE", "date"), ("BOOLEAN", "bit"), ("JSON", "json"),
    ("UUID", "uuid"), ("INTEGER", "unix"), ("", "int"),
])
def test_one_storage_class_and_layout_comes_back_as_it_was(tmp_path, declared, kind):
    @PROPERTY
    @given(values=homogeneous(kind))
    def prop(values):
        check_back(tmp_path, declared, values, same_form=True)

    prop()


def _col(conv: str, pg_type: str, declared: str = "") -> ColumnPlan:
    return ColumnPlan(name="v", pg_name="v", declared=declared, affinity="", pg_type=pg_type,
                      conv=conv,
                      notnull=False, generated=False, policy="quarantine", reason="", exact=True)


@pytest.mark.parametrize(("conv", "pg_type", "declared", "value", "written"), [
    # A timestamp with microseconds where the layout holds seconds: the whole fraction is kept.
    ("ts_text:YYYY-MM-DD HH:MM:SS", "timestamptz", "DATETIME",
     datetime(2025, 1, 2, 3, 4, 5, 120, tzinfo=UTC), "2025-01-02 03:04:05.000120"),
    # A numeric with more digits than a REAL holds: its decimal text where the column keeps
    # text (no affinity) ...
    ("numeric", "numeric", "", Decimal("0.12345678901234567890"), "0.12345678901234567890"),
    # ... and the nearest REAL where SQLite's NUMERIC affinity turns such text into one.
    ("numeric", "numeric", "NUMERIC(10,2)", Decimal("0.32000000000000004"), 0.32000000000000006),
    # Unix seconds cannot hold a fraction: ISO text with the instant in full.
    ("ts_unix", "timestamptz", "", datetime(2025, 1, 2, 3, 4, 5, 500000, tzinfo=UTC),
     "2025-01-02 03:04:05.500000+00:00"),
])
def test_a_value_without_an_exact_sqlite_form_follows_the_stated_rule(conv, pg_type, declared,
                                                                       value, written):
    back = back_converter(_col(conv, pg_type, declared))(value)
    assert back == (written, False)
