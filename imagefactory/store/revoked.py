"""The revocation list as of the store's last pull, read offline from its TUF state.

``pull`` refreshes the catalog with ngclient, which keeps the verified
top-level ``targets`` metadata in ``STORE/.pull/metadata/targets.json`` and
the signed revocation list (target ``revoked.json``) in
``STORE/.pull/descriptors/``. Readers that must not touch the network
(``select``) take the list from there: the file is checked against the length
and hashes the trusted ``targets`` metadata signs for it, so what is read is
what the catalog signed. A revocation the catalog published after the last
pull is not known here; the next pull both learns it and removes the image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib import parse

from tuf.api.metadata import Metadata, Targets

from imagefactory.catalog.repo import REVOKED_TARGET
from imagefactory.errors import FileAccessError
from imagefactory.store.layout import Store

#: Larger trusted targets metadata is not read (the TUF client caps it the same).
_TARGETS_MAX = 16 * 1024 * 1024


@dataclass
class Revocations:
    """``vo/name/version`` -> the reason it was revoked; ``problem`` when unreadable."""

    reasons: dict[str, str] = field(default_factory=dict)
    #: Why the list could not be read (``None``: read, or the store has never pulled one).
    problem: str | None = None


def local_revocations(store: Store) -> Revocations:
    """The revocations the store's last pull verified.

    Raises :class:`FileAccessError` when the state cannot be read at all (no
    permission: no answer); a list that is not what the catalog signed, or
    is unreadable as metadata, comes back as ``problem`` (the caller refuses).
    """
    metadata = store.state_dir / "metadata" / "targets.json"
    cached = store.state_dir / "descriptors" / parse.quote(REVOKED_TARGET, "")
    try:
        if not metadata.exists():
            return Revocations()
        targets: Metadata[Targets] = Metadata.from_bytes(_read(metadata, _TARGETS_MAX))
        info = targets.signed.targets.get(REVOKED_TARGET)
        if info is None:
            return Revocations()
        data = _read(cached, info.length)
        info.verify_length_and_hashes(data)
        items = json.loads(data).get("revoked", [])
    except PermissionError as exc:
        raise FileAccessError.from_os_error(cached, "read the revocation list", exc) from exc
    except Exception as exc:  # anything else means "cannot tell": the caller refuses
        return Revocations(problem=f"{cached}: cannot read the revocation list: {exc}")
    out: dict[str, str] = {}
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict):
            out[_key(item)] = str(item.get("reason", ""))
    return Revocations(out)


def _key(item: dict[str, Any]) -> str:
    return f"{item.get('vo')}/{item.get('name')}/{item.get('version')}"


def _read(path: Path, cap: int) -> bytes:
    with path.open("rb") as stream:
        data = stream.read(cap + 1)
    if len(data) > cap:
        raise ValueError(f"larger than {cap} bytes")
    return data
