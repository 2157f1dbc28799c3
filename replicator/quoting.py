"""Quoting names and literals for SQLite and Postgres (both accept the same forms)."""

from __future__ import annotations


def qi(name: str) -> str:
    """Quote an identifier for SQLite or Postgres (both accept double quotes)."""
    return '"' + name.replace('"', '""') + '"'


def ql(value: str) -> str:
    """Quote a string literal."""
    return "'" + value.replace("'", "''") + "'"


def qualified(schema: str, name: str) -> str:
    """``"schema"."name"``."""
    return f"{qi(schema)}.{qi(name)}"
