"""Where the package's data files are: the label schema and vocabularies
(``labels/`` at the top of the source tree, linked into the package) and the
hardening profiles."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
#: The published label schema and vocabularies (``labels/`` in the source tree).
LABELS_DIR = DATA_DIR / "labels"
#: Hardening profiles, ``<id>.yaml``.
PROFILES_DIR = DATA_DIR / "profiles"
