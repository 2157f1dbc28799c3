"""The catalogue of SQLite -> Postgres traps: one code per construct, each explained in one or
two sentences that say what differs and what to do.

Severities: ``fails`` (Postgres rejects the SQLite form), ``differs`` (both run, results can
differ), ``review`` (same results in the usual case; worth a look). ``fixed`` on a finding means
the translation already handles it; the explanation is kept so a reviewer knows why the
translation does not read like the original.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

SEVERITIES = ("fails", "differs", "review")

CATALOGUE: dict[str, tuple[str, str]] = {
    "like-case": ("differs", "SQLite's LIKE ignores the case of ASCII letters, Postgres LIKE does "
                  "not, so {snippet} can match fewer rows. Use ILIKE (or lower(x) LIKE lower(p)) "
                  "if the application relies on it."),
    "like-backslash": ("differs", "Postgres LIKE treats a backslash as the escape character by "
                       "default, SQLite does not; the translation adds ESCAPE ''."),
    "like-nontext": ("fails", "LIKE on {what} ({pg_type} in Postgres) has no Postgres operator; "
                     "the translation casts it to text."),
    "int-division": ("differs", "{detail}"),
    "numeric-float": ("differs", "{col} is exact numeric in Postgres but holds binary floats "
                      "(REAL) in SQLite, so {snippet} carries float rounding in SQLite (0.99*3 = "
                      "2.9699999999999998) and is exact in Postgres; round() both sides or compare "
                      "with a tolerance."),
    "avg-type": ("differs", "avg() of integers is a double in SQLite and a numeric with about 20 "
                 "significant digits in Postgres; the translation casts it to double precision."),
    "concat-null": ("review", "`||` gives NULL when any operand is NULL, in both databases; the "
                    "translation keeps `||` (concat() would skip NULLs and change results); wrap "
                    "nullable operands in coalesce() if NULL is not wanted."),
    "concat-nontext": ("fails", "`||` needs a text operand in Postgres ({types}); the "
                       "translation casts to text."),
    "time-func": ("fails", "{func}() is SQLite-only; translated to {target} over a timestamp. "
                  "Text that is not a valid date gives NULL in SQLite but an error in Postgres."),
    "time-now": ("review", "SQLite's 'now' is UTC and fixed per statement; the translation uses "
                 "now() AT TIME ZONE 'UTC' (a bare now() follows the session time zone), and "
                 "now() is the transaction's start time."),
    "time-month": ("differs", "Month and year arithmetic differ at month ends: SQLite "
                   "normalises 2024-01-31 +1 month to 2024-03-02, Postgres clamps to "
                   "2024-02-29."),
    "time-unsupported": ("fails", "{func}(): {detail} has no translation; rewrite it by hand "
                         "(to_char, extract, date_trunc, interval arithmetic)."),
    "current-time": ("differs", "{func} is text 'YYYY-MM-DD HH:MM:SS' in UTC in SQLite and a "
                     "{pg} in Postgres; translated to to_char(now() AT TIME ZONE 'UTC', ...)."),
    "group-concat": ("differs", "group_concat() becomes string_agg(); neither database "
                     "guarantees the order of the pieces, so the strings can differ. Add an "
                     "ORDER BY inside the aggregate: {suggestion}."),
    "bool-column": ("fails", "{what} used as a condition: SQLite treats any nonzero number as "
                    "true, Postgres wants a boolean; {action}"),
    "bool-literal": ("fails", "TRUE/FALSE compared with {what}: SQLite stores booleans as 1/0 "
                     "and Postgres has no bigint = boolean operator; translated to 1/0."),
    "bool-string": ("differs", "{snippet}: booleans are stored as 1/0 in SQLite, so a "
                    "comparison with the text '{text}' matches only rows that hold that text; "
                    "in Postgres it is an error on a numeric column. Compare with 1/0."),
    "bool-number": ("fails", "{what} is boolean in Postgres (0/1 in SQLite), and Postgres has no "
                    "boolean = integer operator; the number is translated to TRUE/FALSE."),
    "mapped-type": ("differs", "{col} holds {sqlite} in SQLite and is {pg_type} in Postgres, so "
                    "the driver returns {returns}; {advice}"),
    "mapped-text": ("fails", "{col} is {pg_type} in Postgres; text operations need SQLite's "
                    "text form, so the translation renders it with {how}."),
    "temporal-compare": ("review", "{col} is {pg_type} in Postgres, so the other side is read "
                         "as a point in time (text literals in the session time zone; bind a "
                         "datetime, not a string) and compared as time, not text: '2009-01-01' "
                         "equals '2009-01-01 00:00:00' only in Postgres."),
    "bool-result": ("differs", "{snippet} returns boolean true/false in Postgres and integer "
                    "1/0 in SQLite; cast it (::int) if the application expects numbers."),
    "bool-arith": ("fails", "{snippet} adds or aggregates a comparison; Postgres has no "
                   "arithmetic on booleans, so the translation casts it to integer."),
    "ifnull": ("review", "ifnull() is SQLite-only; translated to coalesce() (same meaning)."),
    "iif": ("review", "iif() is SQLite-only; translated to CASE WHEN (same meaning)."),
    "upsert-replace": ("differs", "INSERT OR REPLACE deletes every row that clashes on any "
                       "UNIQUE key and inserts a new one (unlisted columns get their defaults, "
                       "the rowid changes); ON CONFLICT ({keys}) DO UPDATE updates the row that "
                       "clashes on that one key in place."),
    "upsert-ignore": ("differs", "INSERT OR IGNORE also skips rows that break NOT NULL or CHECK "
                      "constraints; ON CONFLICT DO NOTHING only skips unique-key clashes, other "
                      "violations raise an error in Postgres."),
    "upsert-key": ("review", "The conflict target ({keys}) is a guess; {why}."),
    "insert-or": ("review", "INSERT OR {alt} has no Postgres form; the translation is a plain "
                  "INSERT (a constraint violation raises an error and rolls back)."),
    "typeof": ("differs", "typeof() is per value in SQLite and per column in Postgres; the "
               "translation maps pg_typeof() to SQLite's names (numeric counts as 'integer' when "
               "whole), which matches only values the copy stored unchanged."),
    "glob": ("fails", "GLOB is SQLite-only; {action}"),
    "limit-negative": ("fails", "LIMIT {value} means 'no limit' in SQLite and is an error in "
                       "Postgres; the translation drops the LIMIT."),
    "substr-negative": ("differs", "substr() with a negative start counts from the end in "
                        "SQLite; Postgres substring() does not. {action}"),
    "dq-string": ("fails", "\"{text}\" is not a column, so SQLite reads it as a string; Postgres "
                  "reads double quotes as an identifier. Translated to '{text}'."),
    "dq-ambiguous": ("review", "\"{text}\" is a string in SQLite when no column has that name, "
                     "an identifier in Postgres; use single quotes for strings (run with "
                     "--source to decide)."),
    "rowid": ("fails", "Postgres tables have no rowid; {action}"),
    "autoincrement": ("review", "AUTOINCREMENT becomes an identity column (bigint); after "
                      "copying the data, set it past the largest id (replicator cutover does "
                      "this for replicated tables)."),
    "pragma": ("fails", "PRAGMA is SQLite-only: {advice}"),
    "last-insert-rowid": ("fails", "last_insert_rowid() is SQLite-only; the translation uses "
                          "lastval() (the session's last sequence value), but INSERT ... "
                          "RETURNING id is the reliable form."),
    "random": ("differs", "SQLite's random() is a 64-bit signed integer, Postgres random() a "
               "double in [0, 1); {action}"),
    "minmax-scalar": ("differs", "{func}(a, b, ...) returns NULL if any argument is NULL in "
                      "SQLite; Postgres {pg}() ignores NULLs. The translation keeps SQLite's "
                      "NULL rule with a CASE."),
    "collate-nocase": ("fails", "COLLATE NOCASE does not exist in Postgres; {action} (NOCASE "
                       "folds only ASCII letters, lower() all of Unicode)."),
    "collate-other": ("fails", "COLLATE {name}: {action}"),
    "cast-int-text": ("differs", "CAST({what} AS INTEGER): SQLite takes the longest numeric "
                      "prefix ('12abc' -> 12, 'abc' -> 0), Postgres raises an error for anything "
                      "but a clean integer. If values may have junk, use {suggestion}."),
    "cast-int-width": ("fails", "INTEGER is 64-bit in SQLite; INT is 32-bit in Postgres and "
                       "overflows past 2147483647, so the translation uses BIGINT."),
    "total": ("fails", "total() is SQLite-only (a float sum that is 0.0 on no rows); "
              "translated to CAST(COALESCE(SUM(x), 0) AS DOUBLE PRECISION)."),
    "bare-column": ("fails", "{cols} {verb} neither grouped nor aggregated: SQLite picks a value "
                    "from an arbitrary row of each group, Postgres raises an error (unless "
                    "grouped by the table's primary key). Add it to GROUP BY or aggregate it."),
    "order-text": ("review", "ORDER BY on text ({cols}): SQLite orders by bytes, Postgres by "
                   "the database collation (which may ignore case and punctuation); add "
                   "COLLATE \"C\" if the order must match."),
    "no-function": ("fails", "{name}() has no Postgres equivalent{hint}."),
    "json": ("review", "{name}() works on text in SQLite; in Postgres the value must be json or "
             "jsonb (cast the text column: col::jsonb)."),
    "interpolated": ("review", "Built with string interpolation: pass values as bind parameters "
                     "(SQL injection, and interpolated parts cannot be checked here)."),
    "unparsed": ("review", "sqlglot could not parse this statement fully; the translation is "
                 "the text unchanged and unchecked."),
    "alias-case": ("review", "Alias {alias} becomes lower-case in Postgres unless quoted; code "
                   "that reads result columns by name must use the new spelling."),
    "psycopg-percent": ("review", "With bind parameters psycopg treats % as a placeholder "
                        "marker, so literal % signs are doubled in the translation."),
}


@dataclass
class Trap:
    """One finding in one statement."""

    code: str
    severity: str
    message: str
    snippet: str = ""
    fixed: bool = False
    suggestion: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def make(code: str, snippet: str = "", *, fixed: bool = False, suggestion: str | None = None,
         severity: str | None = None, **kw: str) -> Trap:
    """A Trap from the catalogue, its message filled from ``kw`` (and ``snippet``)."""
    default_sev, template = CATALOGUE[code]
    message = template.format(snippet=snippet, suggestion=suggestion or "", **kw)
    return Trap(code, severity or default_sev, message, snippet, fixed, suggestion)


def worst(traps: list[Trap]) -> str | None:
    """The most serious severity among traps that the translation does not fix."""
    open_ = {t.severity for t in traps if not t.fixed}
    return next((s for s in SEVERITIES if s in open_), None)
