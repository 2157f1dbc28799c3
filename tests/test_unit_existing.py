"""The conversions into an existing target schema (issue 11), on generated values.

Each converter either returns a value meaning exactly what SQLite held in the target type's
terms, or refuses (BadValue -> quarantine); rounding happens only where configured and stays
within half a unit of the scale. jsonb goes through real Postgres: what it returns must compare
equal to what was sent (verification's ``json_same``), and real differences must not.
"""

from __future__ import annotations

import asyncio
import decimal
import json
import math
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.config import ColumnOverride, Config, load_file
from replicator.convert import BadValue, converter
from replicator.errors import ConfigError
from replicator.existing import TargetColumn, TargetTable, conversion, fit_table
from replicator.plans import ColumnPlan
from replicator.schema import plan_table
from replicator.source import inspect, open_source
from replicator.verify.common import json_same

FLOATS = st.floats(allow_nan=False, allow_infinity=False)
MONEY = st.integers(-10**9, 10**9).map(lambda c: c / 100)  # what an app writes: 12.34


def conv(conv_id: str):
    return converter(ColumnPlan(name="c", pg_name="c", declared="", affinity="", pg_type="t",
                                conv=conv_id, notnull=False, generated=False, policy="quarantine",
                                reason="", exact=True))


@settings(max_examples=400, deadline=None)
@given(v=st.one_of(FLOATS, MONEY, st.integers(-10**14, 10**14)),
       scale=st.integers(0, 6), precision=st.integers(7, 20))
def test_numeric_scale_is_exact_or_refused_and_rounding_is_bounded(v, scale, precision):
    if precision < scale:
        return
    exact = Decimal(repr(v)) if type(v) is float else Decimal(v)
    limit = Decimal(10) ** (precision - scale)
    wide = decimal.Context(prec=100)
    try:
        got = conv(f"scaled:{precision}:{scale}")(v)
    except BadValue:
        fits = exact.as_tuple().exponent >= -scale and abs(exact) < limit
        assert not fits or (type(v) is float and v == 0 and math.copysign(1, v) < 0)
    else:
        assert got == exact and abs(got) < limit  # never altered
    for rule in ("django", "activerecord", "exact"):
        try:
            rounded = conv(f"scaled:{precision}:{scale}:{rule}")(v)
        except BadValue:
            assert abs(exact) >= limit or \
                abs(exact.quantize(Decimal(1).scaleb(-scale), context=wide)) >= limit or \
                (type(v) is float and v == 0 and math.copysign(1, v) < 0)
        else:
            # Django first rounds the float to 15 significant digits: that much more
            bound = Decimal(1).scaleb(-scale) / 2
            if rule == "django" and exact:
                bound += Decimal(1).scaleb(exact.adjusted() - 14) / 2
            assert abs(rounded - exact) <= bound
            assert rounded.as_tuple().exponent >= -scale


def test_money_after_float_arithmetic_rounds_to_what_the_app_reads():
    assert conv("scaled:10:2:django")(930.1899999999999) == Decimal("930.19")
    # near a half the frameworks differ: Django (15 digits, then half-even), ActiveRecord
    # (shortest form, half-up), SQLAlchemy ("%.2f": the float's exact value, half-even)
    for v, django, rails, sqla in ((0.125, "0.12", "0.13", "0.12"), (1.005, "1.00", "1.01", "1.00"),
                                   (12.345, "12.34", "12.35", "12.35"),
                                   (2.675, "2.68", "2.68", "2.67"), (5.025, "5.02", "5.03", "5.03")):
        assert conv("scaled:10:2:django")(v) == Decimal(django)
        assert conv("scaled:10:2:activerecord")(v) == Decimal(rails)
        assert conv("scaled:10:2:exact")(v) == Decimal(sqla) == Decimal(f"{v:.2f}")
    with pytest.raises(BadValue, match="cannot be stored exactly"):
        conv("scaled:10:2")(930.1899999999999)
    assert conv("scaled:10:2")(12.5) == Decimal("12.5") and conv("scaled:10:2")(7) == 7
    with pytest.raises(BadValue):
        conv("scaled:4:2")(100)  # numeric(4,2) holds at most 99.99


@given(u=st.uuids())
def test_uuid_from_every_sqlite_form(u):
    fn = conv("uuid_any")
    for form in (str(u), str(u).upper(), u.hex, u.hex.upper(), u.bytes):
        assert fn(form) == u
    for bad in (u.hex[:31], u.hex + "0", "{" + str(u) + "}", "urn:uuid:" + str(u), u.bytes[:15],
                str(u).replace("-", "_")):
        with pytest.raises(BadValue):
            fn(bad)


@given(n=st.integers(1, 40), text=st.text(max_size=60))
def test_varchar_checks_the_length_in_characters_never_truncates(n, text):
    if "\x00" in text:
        return
    fn = conv(f"varchar:{n}")
    if len(text) <= n:
        assert fn(text) == text
    else:
        with pytest.raises(BadValue):
            fn(text)
    assert conv(f"char:{n}")(text).rstrip(" ") == text.rstrip(" ") if len(text) <= n else True


@given(v=st.integers(-2**63, 2**63 - 1))
def test_integer_widths_are_range_checked(v):
    for bits, conv_id in ((32, "int4"), (16, "int2")):
        if -(2 ** (bits - 1)) <= v < 2 ** (bits - 1):
            assert conv(conv_id)(v) == v
        else:
            with pytest.raises(BadValue):
                conv(conv_id)(v)


def test_labels_bools_times():
    fn = conv('enum:["free", "pro"]')
    assert fn("pro") == "pro"
    with pytest.raises(BadValue):
        fn("Pro")
    assert conv("bool_lenient")("Yes") is True and conv("bool_lenient")(0) is False
    assert str(conv("time_text")("09:30:05.25")) == "09:30:05.250000"
    with pytest.raises(BadValue):
        conv("float4")(0.1)  # not exact in 4 bytes
    assert conv("float4")(0.5) == 0.5


CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), FLOATS,
              st.text(CHARS, max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(CHARS, max_size=5), inner, max_size=4)),
    max_leaves=12,
)


@settings(max_examples=15, deadline=None, database=None)
@given(docs=st.lists(JSON, min_size=1, max_size=30), indent=st.sampled_from([None, 2]))
def test_jsonb_round_trip_compares_equal_and_differences_are_seen(pg_env, docs, indent):
    texts = [json.dumps(d, indent=indent, ensure_ascii=False) for d in docs]
    returned = asyncio.run(_through_jsonb(pg_env, [conv("jsonb")(t) for t in texts]))
    for sent, back in zip(texts, returned, strict=True):
        assert json_same(sent, back), (sent, back)
    assert not json_same("[true]", "[1]") and not json_same('{"a": 1}', '{"a": 1.5}')
    assert not json_same('{"a": null}', "{}") and json_same('{"a": 1, "a": 2}', '{"a": 2}')
    with pytest.raises(BadValue):  # jsonb has no form for an escaped NUL: quarantined, named
        conv("jsonb")('{"\\u0000": 1}')


async def _through_jsonb(pg_env, texts: list[str]) -> list[str]:
    dsn = await pg_env.create_db()
    try:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE j (i int PRIMARY KEY, d jsonb)")
            await conn.copy_records_to_table("j", records=list(enumerate(texts)))
            return [r["d"] for r in await conn.fetch("SELECT d FROM j ORDER BY i")]
        finally:
            await conn.close()
    finally:
        await pg_env.drop_db(dsn)


def _db(tmp_path: Path, sql: str) -> Path:
    path = tmp_path / "a.db"
    conn = sqlite3.connect(path)
    conn.executescript(sql)
    conn.close()
    return path


def test_fit_names_every_misfit_at_once(tmp_path):
    path = _db(tmp_path, "CREATE TABLE Orders (id INTEGER PRIMARY KEY, Total decimal, note TEXT, "
                         "gone TEXT); CREATE TABLE nokey (a TEXT);")
    table = inspect(open_source(path, readonly=True)).tables
    col = lambda name, base, **kw: TargetColumn(name=name, pg_type=base, base=base,  # noqa: E731
                                                notnull=kw.get("notnull", False),
                                                has_default=False, generated=False)
    catalog = {"orders": TargetTable("orders", {
        "id": col("id", "int8"), "total_amount": col("total_amount", "numeric"),
        "note": col("note", "xml"), "must": col("must", "text", notnull=True)}),
        "nokey": TargetTable("nokey", {"a": col("a", "text")})}
    cfg = Config(source=path, schema_mode="existing",
                 columns={("Orders", "Total"): ColumnOverride(target="total_amount")})
    plan, why = fit_table(table["Orders"], None, cfg, catalog)
    assert plan is None
    text = "\n".join(why)
    assert "Orders.gone" in text and "no column 'gone'" in text
    assert "no exact conversion into the target type xml" in text
    assert "orders.must is NOT NULL without a default" in text
    assert "total_amount" not in text  # the rename map matched it
    assert "no primary key" in fit_table(table["nokey"], None, cfg, catalog)[1][0]


def test_config_for_existing_schemas(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[target]\nschema_mode = "existing"\n[replication]\nround_to_scale = true\n'
                    '[tables.Invoice]\ntarget = "invoices"\n[tables.Invoice.columns.Total]\n'
                    'target = "total"\nround_to_scale = false\ntype = "numeric(12,2)"\n')
    values = load_file(good)
    assert values["schema_mode"] == "existing" and values["table_targets"] == {"Invoice": "invoices"}
    assert values["columns"][("Invoice", "Total")] == ColumnOverride(
        type="numeric(12,2)", target="total", round_to_scale=False)
    for body, field in (('[target]\nschema_mode = "merge"\n', "target.schema_mode"),
                        ('[tables.T.columns.c]\ntype = "numeric(2,5)"\n', "tables.T.columns.c.type"),
                        ('[tables.T.columns.c]\nround_to_scale = "yes"\n', "round_to_scale"),
                        ('[replication]\nround_to_scale = "up"\n', "replication.round_to_scale"),
                        ('[tables.T.columns.c]\nepoch = "ns"\n', "tables.T.columns.c.epoch"),
                        ('[tables.T]\ntarget = ""\n', "tables.T.target")):
        bad = tmp_path / "bad.toml"
        bad.write_text(body)
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            load_file(bad)


def test_numeric_ps_override_in_the_inferred_schema(tmp_path):
    path = _db(tmp_path, "CREATE TABLE p (id INTEGER PRIMARY KEY, price decimal);"
                         "INSERT INTO p VALUES (1, 930.1899999999999), (2, 12.5);")
    table = inspect(open_source(path, readonly=True)).tables["p"]
    pin = {("p", "price"): ColumnOverride(type="numeric(10,2)")}
    plan = plan_table(table, None, Config(source=path, columns=pin, round_to_scale=True))
    assert plan.column("price").pg_type == "numeric(10,2)"
    assert plan.column("price").conv == "scaled:10:2:exact"
    rails = replace(table, framework="rails")  # ActiveRecord reads half-up
    assert plan_table(rails, None, Config(source=path, columns=pin, round_to_scale=True)
                      ).column("price").conv == "scaled:10:2:activerecord"
    assert plan_table(table, None, Config(source=path, columns=pin)).column("price").conv == \
        "scaled:10:2"
    assert conversion(TargetColumn("x", "uuid", "uuid", False, False, False), False)[0] == \
        "uuid_any"



@given(ms=st.integers(-62135596800 * 1000, 253402300799 * 1000),
       unit=st.sampled_from(["s", "ms", "us"]))
def test_epoch_numbers_are_exact_points_in_time(ms, unit):
    """Prisma keeps DateTime as unix milliseconds: every in-range integer is an exact instant."""
    per = {"s": 1, "ms": 1000, "us": 1_000_000}[unit]
    v = ms * per // 1000
    got = conv(f"ts_any:{unit}")(v)
    back = (got - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1_000_000 // per)
    assert back == v
    assert conv(f"ts_naive:{unit}")(v) == got.replace(tzinfo=None)
    with pytest.raises(BadValue):
        conv(f"ts_any:{unit}")(253402300800 * per)  # past year 9999
    assert conv(f"ts_any:{unit}")("2026-11-30 05:00:00") == datetime(2026, 11, 30, 5, tzinfo=UTC)


@given(jd=st.floats(2400000.5, 2500000.5))
def test_julian_days_only_where_the_instant_gives_the_same_float(jd):
    try:
        got = conv("ts_any:julian")(jd)
    except BadValue:
        return  # refused: no microsecond instant turns back into this float
    assert (got - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(days=1) + 2440587.5 == jd


def test_julian_days_that_are_instants_are_taken():
    assert conv("ts_any:julian")(2460000.5) == datetime(2023, 2, 25, tzinfo=UTC)  # as SQLite says
    assert conv("ts_any:julian")(2440587.75) == datetime(1970, 1, 1, 6, tzinfo=UTC)
