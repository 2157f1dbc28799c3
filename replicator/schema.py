"""The plan for each table and column: the Postgres type chosen from the declared type and the
census of stored values, and why.

SQLite stores whatever it is given, so the Postgres type is chosen from the declared type *and*
what the column actually holds. The rules (stated in the plan for every column):

* INTEGER, REAL and TEXT affinity: the declared type wins (bigint, double precision, text).
  Within numbers we widen when the census requires it (REAL values in an INTEGER column, or
  integers beyond 2^53 in a REAL column, give ``numeric``). Values of another storage class are
  quarantined, never coerced; a config override (``type = "text"``) takes them all.
* NUMERIC affinity (DECIMAL, BOOLEAN, DATETIME, JSON, UUID ...) and no type: the census decides.
  A BOOLEAN holding only 0/1 becomes boolean; a DATE/TIME column whose text values all share one
  ISO-8601 layout becomes timestamptz (naive text is UTC, SQLite's own convention) or date, and
  one holding only unix seconds becomes timestamptz; a JSON column holding only valid JSON
  becomes json (not jsonb, which drops duplicate keys and reorders them); a UUID column holding
  only canonical UUIDs becomes uuid. Otherwise: only integers give bigint; numbers with a
  DECIMAL/NUMERIC/MONEY declaration or a mix of integers and reals give numeric (exact for
  both); only reals give double precision; any text gives text (numbers rendered in their
  shortest exact decimal form); only BLOBs give bytea.
* No stored value (an empty or new table, an added column): the declared type decides.
  DATETIME/TIMESTAMP give timestamptz in SQLite's own layout (YYYY-MM-DD HH:MM:SS), DATE date,
  BOOLEAN boolean, JSON json, UUID uuid, any other name its affinity's type (no type: bytea).
  A value that arrives later and does not fit such a census-chosen type re-plans the column
  (``stream`` copies the table again with the new evidence) instead of being quarantined.
* A BLOB in a column that is not bytea, a NUL byte or invalid UTF-8 in text: quarantine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .census import ColumnCensus, TableCensus
from .config import NUMERIC_PS, Config
from .conventions import hint, rounding
from .convert import accepts
from .declared import affinity, declared_scale, type_hint
from .errors import ConfigError
from .objects import table_objects
from .plans import (
    ROWID_COLUMN,
    ColumnPlan,
    TablePlan,
    check_ident,
    pg_ident,
)
from .source import KEY_ALIAS, Column, Table


@dataclass
class _Choice:
    pg_type: str
    conv: str
    reason: str
    notes: list[str] = field(default_factory=list)


def plan_column(table: Table, col: Column, cen: ColumnCensus | None, cfg: Config) -> ColumnPlan:
    override = cfg.column_override(table.name, col.name)
    aff = affinity(col.declared)
    present = cen.present() if cen else set()
    choice = _convention(hint(table, col), col.declared, present, cen) or \
        _choose(aff, col.declared, present, cen)
    if override.type:
        setting = override.round_to_scale if override.round_to_scale is not None \
            else cfg.round_to_scale
        conv = _conv_for(override.type, rounding(setting, table))
        if override.epoch and conv in ("ts_any", "ts_naive"):
            conv = f"{conv}:{override.epoch}"
        choice = _Choice(override.type, conv,
                         f"config override: type = {override.type!r}")
    problems = _problems(choice.conv, present, cen) if cen else []
    pg_name = pg_ident(col.name, cfg.identifiers)
    check_ident(f"column {table.name}.", col.name, pg_name)
    identity = table.key_kind == KEY_ALIAS and table.key_columns == (col.name,) and \
        choice.pg_type == "bigint"
    return ColumnPlan(
        name=col.name,
        pg_name=pg_name,
        declared=col.declared,
        affinity=aff,
        pg_type=choice.pg_type,
        conv=choice.conv,
        notnull=col.notnull or identity,
        generated=col.generated,
        policy=override.on_bad_value or cfg.on_bad_value,
        reason=choice.reason,
        exact=not problems,
        problems=tuple(problems),
        identity=identity,
        notes=tuple(choice.notes),
        pinned=bool(override.type),
    )


def _choose(aff: str, declared: str, present: set[str], cen: ColumnCensus | None) -> _Choice:
    """The Postgres type and converter for a column; see the module docstring for the rules."""
    numbers = present & {"integer", "real"}
    big_ints = bool(cen and cen.int_beyond_2_53)
    if aff == "INTEGER":
        if "real" in present:
            return _Choice("numeric", "numeric", "INTEGER affinity holding REAL values: numeric keeps both")
        return _Choice("bigint", "bigint", "INTEGER affinity: bigint (SQLite integers are 64-bit)")
    if aff == "REAL":
        if big_ints:
            return _Choice("numeric", "numeric", "REAL affinity with integers beyond 2^53: numeric")
        return _Choice("double precision", "float", "REAL affinity: double precision (never 4-byte real)")
    if aff == "TEXT":
        return _Choice("text", "text", "TEXT affinity: text (varchar(n) limits are not enforced by SQLite)")
    hinted = _hinted(type_hint(declared), declared, present, cen)
    if hinted is not None:
        return hinted
    return _by_census(aff, declared, present, numbers, big_ints)


def _convention(found: str | None, declared: str, present: set[str], cen: ColumnCensus | None
                ) -> _Choice | None:
    """Django's conventions (``conventions``): the type its Postgres backend creates, when every
    stored value fits it; None lets the ordinary rules decide."""
    if found not in ("uuid32", "jsonb", "datetime_any") or cen is None:
        return None
    texts, tags = cen.counts["text"], cen.text_tags or {}
    if found == "uuid32" and present <= {"text"} and tags.get("uuid32", 0) == texts:
        return _Choice("uuid", "uuid_any", "Django convention: a UUIDField, char(32) hex digits in "
                       "SQLite, is uuid on Postgres" + ("" if present else _LATER))
    if found == "jsonb" and present <= {"text"} and tags.get("json", 0) == texts:
        return _Choice("jsonb", "jsonb", "Django convention: a JSONField (text with CHECK "
                       "JSON_VALID) is jsonb on Postgres, which keeps the document's meaning, not "
                       "its bytes (key order, spaces)" + ("" if present else _LATER))
    formats = cen.datetime_formats or {}
    if found == "datetime_any" and present == {"text"} and sum(formats.values()) == texts and \
            all("±zone" not in f and f.count("f") <= 6 and f != "YYYY-MM-DD" for f in formats):
        return _Choice("timestamptz", "ts_any", "Django convention: a DateTimeField stores UTC "
                       "text, microseconds only when non-zero "
                       f"({', '.join(sorted(formats))}): timestamptz")
    return None


def _by_census(aff: str, declared: str, present: set[str], numbers: set[str], big_ints: bool) -> _Choice:
    decimal_name = any(w in declared.upper() for w in ("DEC", "NUM", "MONEY"))
    if present == {"blob"}:
        return _Choice("bytea", "bytea", "only BLOB values: bytea")
    if "text" in present:
        if numbers:
            return _Choice("text", "text_render", "mixed text and numbers: text; numbers are "
                           "written in their shortest exact decimal form")
        return _Choice("text", "text", f"{aff} affinity holding text: text")
    if numbers == {"integer"} and not decimal_name:
        return _Choice("bigint", "bigint", f"{aff} affinity, only integers: bigint")
    if numbers == {"real"} and not decimal_name and not big_ints:
        return _Choice("double precision", "float", f"{aff} affinity, only reals: double precision")
    if numbers:
        notes = []
        if declared.strip().lower() == "decimal":
            notes.append("a bare DECIMAL (Django's DecimalField) keeps its scale in the app's "
                         "model only: pin type = \"numeric(p,s)\" as the model declares it, "
                         "with round_to_scale = true, so Postgres answers as the app read SQLite")
        scaled = declared_scale(declared)
        if scaled and "real" in present:
            p, s = scaled
            notes.append(f"declared {declared.strip()} holding REALs: an ORM reads each one "
                         f"rounded to {s} decimal places (ActiveRecord, Django), while numeric "
                         "keeps the float's own digits (930.1899999999999, not 930.19); to "
                         f"store what the app reads, pin type = \"numeric({p},{s})\" with "
                         "round_to_scale = true (plan then counts the values that change, and by "
                         "how much)")
        return _Choice("numeric", "numeric", f"{aff} affinity ({declared or 'no type'}) with "
                       "numbers: numeric, exact for integers and for reals in their shortest "
                       "round-trip form", notes=notes)
    if aff == "BLOB":
        return _Choice("bytea", "bytea", _NO_DATA.format(declared=declared or "no type",
                       pg_type="bytea") + " (BLOB affinity)" + _LATER)
    return _Choice("numeric", "numeric", _NO_DATA.format(declared=declared, pg_type="numeric")
                   + f" ({aff} affinity)" + _LATER)


def _hinted(hint: str | None, declared: str, present: set[str], cen: ColumnCensus | None
            ) -> _Choice | None:
    """Booleans, timestamps, dates, JSON and UUIDs: only when every stored value fits exactly."""
    if hint is None or cen is None:
        return None
    empty = not present
    if empty:
        return _declared_only(hint, declared)
    texts = cen.counts["text"]
    tags = cen.text_tags or {}
    if hint == "bool":
        if present == {"integer"} and cen.int_01 == cen.counts["integer"]:
            return _Choice("boolean", "bool", "BOOLEAN holding only 0 and 1: boolean")
        if tags.get("bool"):
            return _Choice(*_general_note(cen, "BOOLEAN"), notes=[
                f"{tags['bool']} text value(s) like 'true'/'false': not converted, so the column "
                "is not boolean; set type = \"boolean\" to convert them"])
        return None
    if hint in ("datetime", "date"):
        return _temporal(present, cen, texts)
    if hint == "json" and present == {"text"} and tags.get("json") == texts:
        return _Choice("json", "json", "JSON holding only valid JSON text: json, which keeps the "
                       "text exactly (jsonb would drop duplicate keys and reorder them)")
    if hint == "json" and present == {"text"}:
        return _Choice("text", "text", f"JSON with {texts - tags.get('json', 0)} of {texts} "
                       "value(s) not valid JSON: text (Postgres json would reject them)")
    if hint == "uuid" and present == {"text"} and tags.get("uuid") == texts:
        return _Choice("uuid", "uuid", "UUID holding only canonical lowercase UUID text: uuid")
    return None


# SQLite's own date-time layout (datetime(), CURRENT_TIMESTAMP): the guess for a column that is
# declared a date-time but holds no values yet.
SQLITE_DATETIME = "YYYY-MM-DD HH:MM:SS"
_NO_DATA = "declared {declared}, no data yet: {pg_type}"
_LATER = " (a later value that does not fit re-plans the column)"


def _declared_only(hint: str, declared: str) -> _Choice | None:
    """No stored value to look at (an empty table, a new table, an added column): the declared
    type decides; values that arrive later and do not fit re-plan the column (see stream)."""
    d = declared.upper()
    if hint == "datetime" and ("DATETIME" in d or "TIMESTAMP" in d):
        return _Choice("timestamptz", "ts_text:" + SQLITE_DATETIME, _NO_DATA.format(
            declared=declared, pg_type="timestamptz") + f" in SQLite's own layout {SQLITE_DATETIME}"
            + _LATER)
    known = {"date": ("date", "date_text"), "bool": ("boolean", "bool"),
             "json": ("json", "json"), "uuid": ("uuid", "uuid")}
    if hint in known:
        pg_type, conv = known[hint]
        return _Choice(pg_type, conv, _NO_DATA.format(declared=declared, pg_type=pg_type) + _LATER)
    return None


def _general_note(cen: ColumnCensus, what: str) -> tuple[str, str, str]:
    present = cen.present()
    numbers = present & {"integer", "real"}
    if "text" in present and numbers:
        return "text", "text_render", f"{what} holding text and numbers: text"
    if "text" in present:
        return "text", "text", f"{what} holding text: text"
    return "bigint", "bigint", f"{what} holding integers other than 0/1: bigint"


def _temporal(present: set[str], cen: ColumnCensus, texts: int) -> _Choice | None:
    formats = cen.datetime_formats or {}
    if present == {"text"} and len(formats) == 1 and next(iter(formats.values())) == texts:
        sig = next(iter(formats))
        if sig == "YYYY-MM-DD":
            return _Choice("date", "date_text", "every value is an ISO date (YYYY-MM-DD): date")
        if "±zone" not in sig and sig.count("f") <= 6:
            return _Choice("timestamptz", "ts_text:" + sig, f"every value has the layout {sig}: "
                           "timestamptz; naive values are UTC, SQLite's own convention "
                           "(datetime('now') and CURRENT_TIMESTAMP are UTC)")
        return _Choice("text", "text", f"ISO date-times in the layout {sig}: kept as text",
                       notes=["mixed UTC offsets or sub-microsecond digits cannot be rebuilt "
                              "exactly from a timestamptz"])
    if present == {"integer"} and cen.int_unix == cen.counts["integer"]:
        return _Choice("timestamptz", "ts_unix", "every value is an integer in the unix-seconds "
                       "range: timestamptz (UTC)")
    if present == {"real"} and cen.real_julian == cen.counts["real"]:
        return _Choice("double precision", "float", "Julian day numbers: kept as double "
                       "precision, which holds them bit-exactly (a timestamp would round them)")
    if len(present) > 1 or len(formats) > 1:
        kinds = ", ".join(f"{cen.counts[c]} {c}" for c in sorted(present))
        layouts = f"; text layouts: {', '.join(sorted(formats))}" if formats else ""
        return _Choice("text", "text_render" if present & {"integer", "real"} else "text",
                       f"mixed date representations ({kinds}{layouts}): text",
                       notes=["no single rule parses every value: kept as text, numbers written "
                              "in their shortest exact form"])
    return None


def _conv_for(pg_type: str, rule: str | None = None) -> str:
    scaled = NUMERIC_PS.fullmatch(pg_type)
    if scaled:  # numeric(p,s): reals beyond the scale refused, or rounded when configured
        return f"scaled:{scaled[1]}:{scaled[2]}" + (f":{rule}" if rule else "")
    return {
        "bigint": "bigint",
        "double precision": "float",
        "numeric": "numeric",
        "text": "text_render",
        "bytea": "bytea",
        "boolean": "bool_lenient",
        "timestamptz": "ts_any",
        "timestamp": "ts_naive",
        "date": "date_text",
        "json": "json",
        "jsonb": "json",
    }.get(pg_type, "text")




def _problems(conv: str, present: set[str], cen: ColumnCensus) -> list[str]:
    base = conv.split(":")[0]
    accepted = accepts(conv)
    out = []
    for cls in sorted(present - accepted):
        out.append(f"{cen.counts[cls]} {cls.upper()} value(s) cannot be stored as {conv}")
    if base == "float" and cen.int_beyond_2_53:
        out.append(f"{cen.int_beyond_2_53} integer(s) beyond 2^53 are not exact in double precision")
    if base == "numeric" and cen.real_negzero:
        out.append(f"{cen.real_negzero} REAL -0.0 value(s): numeric has no negative zero")
    if base == "bool" and cen.counts["integer"] != cen.int_01:
        out.append(f"{cen.counts['integer'] - cen.int_01} integer(s) other than 0/1")
    if base in ("text", "text_render") and cen.nul_text:
        out.append(f"{cen.nul_text} text value(s) contain NUL bytes, which Postgres text rejects")
    if base in ("text", "text_render", "json", "uuid", "date_text", "ts_text") and cen.bad_utf8:
        out.append(f"{cen.bad_utf8} text value(s) are not valid UTF-8")
    if cen.text_tags is not None and cen.counts["text"]:
        fits = {"json": cen.text_tags.get("json"), "uuid": cen.text_tags.get("uuid"),
                "date_text": (cen.datetime_formats or {}).get("YYYY-MM-DD")}.get(base)
        if base == "ts_text":
            fits = (cen.datetime_formats or {}).get(conv.split(":", 1)[1], 0)
        if fits is not None and fits < cen.counts["text"]:
            out.append(f"{cen.counts['text'] - fits} text value(s) do not parse as {base}")
    return out


def plan_table(table: Table, cen: TableCensus | None, cfg: Config) -> TablePlan:
    """Columns and types (this module), then keys, indexes, defaults, constraints (objects)."""
    pg_name = pg_ident(table.name, cfg.identifiers)
    check_ident("table", table.name, pg_name)
    cols = tuple(
        plan_column(table, c, cen.columns.get(c.name) if cen else None, cfg) for c in table.columns
    )
    _check_collisions(table.name, cols)
    plan = TablePlan(
        name=table.name,
        pg_name=pg_name,
        key_kind=table.key_kind,
        key_columns=table.key_columns,
        rowid_name=table.rowid_name,
        columns=cols,
        indexes=(),
        key_note=table.key_note,
        autoincrement="AUTOINCREMENT" in table.sql.upper(),
        declared_key=tuple(c.name for c in sorted((c for c in table.columns if c.pk),
                                                  key=lambda c: c.pk)),
    )
    return table_objects(plan, table, cfg)


def _check_collisions(table: str, cols: tuple[ColumnPlan, ...]) -> None:
    seen: dict[str, str] = {}
    for col in cols:
        if col.pg_name == ROWID_COLUMN:
            raise ConfigError(
                f"table {table!r}: column {col.name!r} takes the name of the replicator's helper "
                "column for tables without a usable key; rename it in SQLite"
            )
        if col.pg_name in seen:
            raise ConfigError(
                f"table {table!r}: columns {seen[col.pg_name]!r} and {col.name!r} would both be "
                f"named {col.pg_name!r} in Postgres; set target.identifiers = \"preserve\" or "
                "rename one"
            )
        seen[col.pg_name] = col.name


def check_names(tables: list[Table], cfg: Config) -> None:
    """Every name Postgres would truncate or that would collide, for all tables at once, before
    anything is written anywhere."""
    problems = []
    for table in tables:
        try:
            check_ident("table", table.name, pg_ident(table.name, cfg.identifiers))
            cols = tuple(replace_name(c, cfg) for c in table.columns)
            for c in cols:
                check_ident(f"column {table.name}.", c[0], c[1])
            _check_collisions(table.name, tuple(
                ColumnPlan(name=n, pg_name=p, declared="", affinity="", pg_type="", conv="",
                           notnull=False, generated=False, policy="", reason="", exact=True)
                for n, p in cols))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("identifiers Postgres cannot take as they are:\n  " + "\n  ".join(problems))


def replace_name(col: Column, cfg: Config) -> tuple[str, str]:
    return col.name, pg_ident(col.name, cfg.identifiers)


def text_census_columns(table: Table, everything: bool = False) -> set[str]:
    """Columns whose text values the census classifies (all, for plan; hinted ones otherwise)."""
    return {c.name for c in table.columns if everything or hint(table, c)}

