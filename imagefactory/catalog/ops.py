"""The catalog owner's operations: list, revoke, refresh, delegate."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from securesystemslib.signer import Key, Signer

from imagefactory.catalog.descriptor import parse_descriptor
from imagefactory.catalog.repo import Catalog, vo_role
from imagefactory.catalog.versions import version_key
from imagefactory.errors import CatalogError


def list_images(catalog: Catalog) -> dict[str, Any]:
    """Every image the catalog offers (with its role and selection labels), and the revoked."""
    state = catalog.load()
    images = []
    for role, info in state.all_targets():
        custom = info.custom if isinstance(info.custom, dict) else {}
        images.append({"path": info.path, "role": role, "length": info.length, **custom})
    images.sort(
        key=lambda i: (i.get("vo", ""), i.get("name", ""), version_key(i.get("version", "")))
    )
    delegations = state.targets.signed.delegations
    roles = {}
    for name, delegated in (delegations.roles or {}).items() if delegations else ():
        roles[name] = {
            "keyids": sorted(delegated.keyids),
            "threshold": delegated.threshold,
            "paths": list(delegated.paths or []),
        }
    return {
        "version": state.timestamp.signed.version,
        "expires": {
            "timestamp": state.timestamp.signed.expires.isoformat(),
            "snapshot": state.snapshot.signed.expires.isoformat(),
            "targets": state.targets.signed.expires.isoformat(),
            "root": state.root.signed.expires.isoformat(),
        },
        "roles": roles,
        "images": images,
        "revoked": catalog.revoked(state),
    }


def revoke(
    catalog: Catalog,
    name: str,
    version: str,
    reason: str,
    signers: list[Signer] | None = None,
) -> dict[str, Any]:
    """Add ``name`` ``version`` to the signed revocation list and withdraw its target.

    The list is signed by the catalog's targets key and overrides any VO
    role: an image listed there is never installed and leaves every store on
    its next pull. A VO role's entry is also removed when its key is given.
    """
    if not reason.strip():
        raise CatalogError("a revocation needs a reason (--reason)", code="catalog-usage")
    extra = {}
    with catalog.transaction() as probe_tx:
        matches = [
            (role, info)
            for role, info in probe_tx.state.all_targets()
            if info.path.split("/")[1:] == [name, f"{version}.json"]
        ]
        if not matches:
            raise CatalogError(f"{name} {version}: not in the catalog", code="catalog-not-found")
        vos = {info.path.split("/")[0] for _, info in matches}
        for vo in vos:
            extra[vo_role(vo)] = list(signers or [])
        probe_tx.role_signers.update(extra)
        revoked = catalog.revoked(probe_tx.state)
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        items = []
        for role, info in matches:
            vo = info.path.split("/")[0]
            descriptor = parse_descriptor(catalog.read_target(info), info.path)
            item = {
                "vo": vo,
                "name": name,
                "version": version,
                "reason": reason,
                "revoked": now,
                "disk_sha256": descriptor.disk.hashes["sha256"],
                # What the image was, signed with the revocation: the catalog page still
                # shows a withdrawn version under its OS, arch and model.
                "selection": descriptor.selection(),
            }
            items.append(item)
            revoked = [
                r
                for r in revoked
                if (r.get("vo"), r.get("name"), r.get("version")) != (vo, name, version)
            ]
            revoked.append(item)
            if role == "targets" or any(s for s in (signers or [])):
                probe_tx.remove_target(role, info.path)
        probe_tx.set_revoked(revoked)
    return {"revoked": items}


def refresh(catalog: Catalog) -> dict[str, Any]:
    """Re-sign snapshot and timestamp with fresh expiries (from a timer, before they expire)."""
    with catalog.transaction() as tx:
        tx.refresh = True
    state = catalog.load()
    return {
        "version": state.timestamp.signed.version,
        "timestamp_expires": state.timestamp.signed.expires.isoformat(),
        "snapshot_expires": state.snapshot.signed.expires.isoformat(),
    }


def delegate(catalog: Catalog, vo: str, keys: Sequence[Key], threshold: int = 1) -> dict[str, Any]:
    """Give ``vo`` its own terminating role, signed by ``keys`` (``threshold`` of them)."""
    with catalog.transaction() as tx:
        tx.delegate(vo, keys, threshold)
    return {
        "vo": vo,
        "role": vo_role(vo),
        "threshold": threshold,
        "keyids": sorted(str(k.keyid) for k in keys),
    }
