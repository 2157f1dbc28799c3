"""What a column's declared type says, by SQLite's own rules (sqlite.org/datatype3.html): its
affinity, for NUMERIC-affinity names the meaning the census may confirm (a boolean, a
date/time, JSON, a UUID), and the scale of a DECIMAL(p,s)."""

from __future__ import annotations

import re

# declared-type words -> the meaning the census may confirm
_HINTS = (("BOOL", "bool"), ("DATETIME", "datetime"), ("TIMESTAMP", "datetime"),
          ("DATE", "date"), ("TIME", "datetime"), ("JSON", "json"), ("UUID", "uuid"),
          ("GUID", "uuid"))


def affinity(declared: str) -> str:
    """SQLite's affinity rules (sqlite.org/datatype3.html §3.1), in their order."""
    d = declared.upper()
    if "INT" in d:
        return "INTEGER"
    if "CHAR" in d or "CLOB" in d or "TEXT" in d:
        return "TEXT"
    if "BLOB" in d or not d.strip():
        return "BLOB"
    if "REAL" in d or "FLOA" in d or "DOUB" in d:
        return "REAL"
    return "NUMERIC"


_SCALED = re.compile(r"\s*(?:DECIMAL|NUMERIC)\s*\(\s*(\d+)\s*,\s*(\d+)\s*\)\s*", re.IGNORECASE)


def declared_scale(declared: str) -> tuple[int, int] | None:
    """(precision, scale) of a declared DECIMAL(p,s)/NUMERIC(p,s), which SQLite ignores but the
    application's ORM reads its values by; None for any other declaration."""
    m = _SCALED.fullmatch(declared)
    return (int(m[1]), int(m[2])) if m else None


def type_hint(declared: str) -> str | None:
    """What a NUMERIC-affinity declaration says the values mean (bool, datetime, date, json,
    uuid), for the census to confirm or refute."""
    if affinity(declared) != "NUMERIC":
        return None
    d = declared.upper()
    for word, hint in _HINTS:
        if word in d:
            return hint
    return None
