"""Images pull retired (:mod:`imagefactory.store.layout`): what may still start from them.

A retired image stays in the store only for the instances made over it
before it left. The gate refuses the image itself, and every overlay made
over it after it was retired; a *revoked* image refuses every overlay over it
too, however old: a revocation says the image must not run.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from imagefactory.errors import StoreError
from imagefactory.gate.overlay import RECORD, read_record
from imagefactory.gate.text import shown
from imagefactory.store.layout import Store


def retired_problem(image_dir: Path, store: Path, overlay: Path | None) -> str | None:
    """Why nothing may start from ``image_dir`` (or ``overlay`` over it); ``None`` if it may."""
    the_store = Store(store)
    key = the_store.key_of(image_dir)
    if key is None:
        return None
    try:
        retired = the_store.retired().get(key)
    except StoreError as exc:
        return f"cannot tell whether {key} was retired: {exc.message}"
    if retired is None:
        return None
    since = str(retired.get("since", ""))
    why = f"{key} was retired from the store at {shown(since)} ({retired.get('code')}:" + (
        f" {retired.get('reason')})"
    )
    if retired.get("code") == "revoked":
        return f"{why}: a revoked image starts no instance"
    if overlay is None:
        return f"{why}: it stays only for the instances made before"
    record = read_record(overlay.parent / RECORD)
    made = _when(record.created) if record is not None else None
    retired_at = _when(since)
    if made is None or retired_at is None or made >= retired_at:
        return f"{why}: the overlay was made after it (or does not say when it was made)"
    return None


def _when(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
