"""The ranks of ``select``: how matching images are ordered (the first is chosen).

Kept apart (standard library only) so the command line can list them without
importing the store and verify code.
"""

from __future__ import annotations

from enum import StrEnum


class Rank(StrEnum):
    """How matching images are ordered; every rank ends in the key, ascending."""

    #: latest ``image.created``, then highest version
    NEWEST = "newest"
    #: highest image version (``1.10`` above ``1.9``), then newest
    VERSION = "version"
    #: highest distribution release (``24.04`` above ``22.04``), then newest
    RELEASE = "release"
    #: smallest disk file, then newest
    SMALLEST = "smallest"
