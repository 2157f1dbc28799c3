"""What a column's declared type says, by SQLite's own rules (sqlite.org/datatype3.html): its
affinity, and for NUMERIC-affinity names the meaning the census may confirm (a boolean, a
date/time, JSON, a UUID)."""

from __future__ import annotations

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
