"""Ordering of image versions: ``1.9 < 1.10 < 2.0``, as a site admin reads them.

Versions are the recipe's free-form strings (``1.0``, ``2026.11.25``,
``1.2-rc1``); they are compared piece by piece, numbers as numbers, words as
words, a number above a word (``1.0 > 1.rc``). Equal keys mean equal versions.
"""

from __future__ import annotations

import re

_PIECE = re.compile(r"\d+|[A-Za-z]+")


def version_key(version: str) -> tuple[tuple[int, int, str], ...]:
    """A sort key for ``version``."""
    return tuple(
        (1, int(p), "") if p.isdigit() else (0, 0, p.lower()) for p in _PIECE.findall(version)
    )
