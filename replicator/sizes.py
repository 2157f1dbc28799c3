"""Byte counts as people read them (the report's figures, the journal advice of plan and doctor)."""

from __future__ import annotations

from typing import Any


def human_bytes(n: Any) -> str:
    """``n`` bytes in B, kB, MB, GB or TB (powers of 1024, one decimal); "-" when not a number."""
    if not isinstance(n, (int, float)):
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
