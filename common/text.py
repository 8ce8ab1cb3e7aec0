"""Small helpers for the sentences the commands print."""

from __future__ import annotations


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun in the right number, with thousands separators: ``1 image``, ``2,004 files``."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


__all__ = ["counted"]
