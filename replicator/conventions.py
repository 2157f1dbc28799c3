"""What an ORM's conventions say a column means, beyond its declared type.

Frameworks store some types in SQLite in their own way and create other types on Postgres; an
application that moves to Postgres expects the types its framework's Postgres backend creates.
The framework is recognised by its migration-record table (``source.inspect`` sets
``Table.framework``). Each convention still needs the census's proof: every stored value must fit.

Django (``django_migrations``):

* ``UUIDField``: ``char(32)`` holding 32 hex digits in SQLite; ``uuid`` on Postgres.
* ``JSONField``: ``text`` with ``CHECK (JSON_VALID(col) ...)``; ``jsonb`` on Postgres (which keeps
  the document's meaning, not its bytes).
* ``DateTimeField``: ``datetime`` holding UTC text with microseconds written only when non-zero
  (two layouts); ``timestamptz`` on Postgres.
* ``DecimalField``: a bare ``decimal`` in SQLite (the scale lives only in the model): numeric,
  with a note to pin ``type = "numeric(p,s)"`` as the model declares it.
"""

from __future__ import annotations

import re

from .declared import type_hint
from .source import Column, Table

DJANGO = "django"
RAILS = "rails"
SQLALCHEMY = "sqlalchemy"
# convert._scaled: how a framework reads a REAL stored in a DECIMAL(p,s) column
ROUNDINGS = ("django", "activerecord", "exact")


def rounding(setting: bool | str | None, table: Table) -> str | None:
    """``round_to_scale`` as a rounding rule: true means the way the file's framework reads such
    a value (Django, ActiveRecord; otherwise "exact": the float's exact value rounded half-even,
    as SQLAlchemy and printf do); a rule may be named; false: none."""
    if setting is True:
        return {DJANGO: "django", RAILS: "activerecord"}.get(table.framework or "", "exact")
    return setting if setting in ROUNDINGS else None


def hint(table: Table, col: Column) -> str | None:
    """The meaning the census is asked to confirm: the declared type's (``declared.type_hint``)
    or the framework's convention for the column (``uuid32``, ``jsonb``, ``datetime_any``)."""
    if table.framework == DJANGO:
        d = col.declared.strip().lower()
        if d == "char(32)":
            return "uuid32"
        if _json_checked(table.sql, col.name):
            return "jsonb"
        if d == "datetime":
            return "datetime_any"
    return type_hint(col.declared)


def census_hint(table: Table, col: Column) -> str | None:
    """The census's classification for the column's hint (``census.HINTED_TAGS`` keys)."""
    found = hint(table, col)
    return {"uuid32": "uuid", "jsonb": "json", "datetime_any": "datetime"}.get(found or "", found)


def _json_checked(sql: str, column: str) -> bool:
    name = re.escape(column)
    return re.search(rf'JSON_VALID\(\s*(?:"{name}"|`{name}`|\[{name}\]|{name})\s*\)', sql,
                     re.IGNORECASE) is not None
