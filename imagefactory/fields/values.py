"""Value syntaxes several field tables share (recipes, trust policies, settings)."""

from __future__ import annotations

from imagefactory.fields.types import Problem
from imagefactory.fsutil import SIZE_PATTERN, parse_size

__all__ = ["DURATION_PATTERN", "MAX_DAYS", "SIZE_PATTERN", "VO_PATTERN", "to_days", "to_size"]

#: A VO's name as the grid writes it (lower case: ``atlas``, ``cms``, ``lhcb``).
VO_PATTERN = r"^[a-z0-9][a-z0-9.-]{0,63}$"
#: A duration in days or weeks: ``30d``, ``4w``.
DURATION_PATTERN = r"^[1-9][0-9]{0,4}[dw]$"
#: The longest duration (expiry, maximum age) any document may give.
MAX_DAYS = 365


def to_days(text: str) -> int:
    """``"30d"`` or ``"4w"`` -> days, at most a year."""
    days = int(text[:-1]) * (7 if text.endswith("w") else 1)
    if days > MAX_DAYS:
        raise Problem(f"expected at most {MAX_DAYS}d, found '{text}' ({days} days)")
    return days


def to_size(text: str) -> int:
    """``"64G"`` -> bytes (for a field whose pattern is :data:`SIZE_PATTERN`)."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise Problem(str(exc)) from exc
