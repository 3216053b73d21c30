"""Debian package version ordering (deb-version(7)), for "upgraded" or "downgraded".

``[epoch:]upstream[-revision]``: epochs compare as numbers; upstream and
revision part by part, non-digits by a modified ASCII order in which ``~``
sorts before everything (even the end of the string) and letters before
other characters, digits as numbers.
"""

from __future__ import annotations

import re


def _order(char: str) -> int:
    if char == "~":
        return -1
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _compare_string(a: str, b: str) -> int:
    i = 0
    while i < len(a) or i < len(b):
        ca = _order(a[i]) if i < len(a) else 0
        cb = _order(b[i]) if i < len(b) else 0
        if ca != cb:
            return -1 if ca < cb else 1
        i += 1
    return 0


def _lead(pattern: re.Pattern[str], text: str) -> str:
    match = pattern.match(text)
    return match.group() if match else ""


_NON_DIGITS = re.compile(r"\D*")
_DIGITS = re.compile(r"\d*")


def _compare_part(a: str, b: str) -> int:
    while a or b:
        na, nb = _lead(_NON_DIGITS, a), _lead(_NON_DIGITS, b)
        if c := _compare_string(na, nb):
            return c
        a, b = a[len(na) :], b[len(nb) :]
        da, db = _lead(_DIGITS, a), _lead(_DIGITS, b)
        if (ia := int(da or 0)) != (ib := int(db or 0)):
            return -1 if ia < ib else 1
        a, b = a[len(da) :], b[len(db) :]
    return 0


def _split(version: str) -> tuple[int, str, str]:
    epoch, colon, rest = version.partition(":")
    if not colon:
        epoch, rest = "0", version
    upstream, dash, revision = rest.rpartition("-")
    if not dash:
        upstream, revision = rest, ""
    return (int(epoch) if epoch.isdigit() else 0), upstream, revision


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian version ``a`` sorts before, with or after ``b``."""
    ea, ua, ra = _split(a)
    eb, ub, rb = _split(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)
