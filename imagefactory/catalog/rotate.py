"""Key rotation: replace one of the catalog's own keys without breaking any site.

A site pins one ``root.json`` and follows the chain ``N.root.json`` ->
``N+1.root.json`` (each signed by the keys of the one before and its own),
so a rotation is a new root version. The order makes every step safe to kill:

1. the new key is written as ``ROLE.next.pem`` in the keys directory;
2. for ``targets``, ``snapshot`` and ``timestamp``: a new version of the role
   (and of snapshot and timestamp) is signed by the old key *and* the new
   one, so it verifies under the old root and the new;
3. ``N+1.root.json`` (trusting the new key instead of the old, signed by the
   old root keys and -- for a root rotation -- the new one), then
   ``root.json``;
4. the old key moves to ``retired/ROLE.<keyid>.pem``, the new one becomes
   ``ROLE.pem``.

Which key signs is chosen by key id against the newest root
(:meth:`CatalogKeys.trusted`), so a rotation killed after step 3 still signs
with the right key, and rerunning it finishes steps 3-4 first.
"""

from __future__ import annotations

import os
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.metadata import Metadata

from imagefactory.attest.keys import generate_key, load_signer
from imagefactory.catalog.repo import (
    RETIRED_DIR,
    SERIALIZER,
    TOP_ROLES,
    Catalog,
    CatalogConfig,
    CatalogKeys,
    Transaction,
)
from imagefactory.errors import CatalogError
from imagefactory.fsutil import fsync_dir


def rotate_key(catalog: Catalog, role: str) -> dict[str, Any]:
    """Replace the catalog's ``role`` key with a new one; returns what changed."""
    if role not in TOP_ROLES:
        raise CatalogError(
            f"{role!r} is not one of the catalog's roles ({', '.join(TOP_ROLES)})",
            code="catalog-usage",
            hint="a VO's key is replaced with: imagefactory catalog delegate VO --key NEW.pub",
        )
    with catalog.locked():
        catalog.clean_leftovers()
        state = catalog.load()
        root = state.root
        keys = CatalogKeys.load(catalog.keys_dir)
        next_path = catalog.keys_dir / f"{role}.next.pem"
        if _finish_interrupted(catalog, keys, role, root):
            keys = CatalogKeys.load(catalog.keys_dir)
        old = keys.trusted(role, root)
        for leftover in (next_path, next_path.with_name(next_path.name + ".pub")):
            leftover.unlink(missing_ok=True)
        generate_key(next_path)
        new = load_signer(str(next_path))
        config = CatalogConfig.load(catalog.keys_dir)
        now = catalog.clock()

        if role != "root":
            tx = Transaction(catalog, keys, config, state)
            tx.extra_signers[role] = [new]
            tx.refresh = True
            if role == "targets":
                tx.dirty.add("targets")
            tx.commit()

        new_root = Metadata.from_bytes(root.to_bytes(SERIALIZER))
        signed = new_root.signed
        for signer in old:
            signed.revoke_key(signer.public_key.keyid, role)
        signed.add_key(new.public_key, role)
        signed.version += 1
        signed.expires = config.expires("root", now)
        new_root.signatures.clear()
        root_signers: list[Signer] = keys.trusted("root", root)
        if role == "root":
            root_signers = [*root_signers, new]
        for signer in root_signers:
            new_root.sign(signer, append=True)
        try:
            root.verify_delegate("root", new_root)
            new_root.verify_delegate("root", new_root)
        except Exception as exc:  # a bug here must never reach the sites
            raise CatalogError(f"the new root does not verify: {exc}") from exc
        data = new_root.to_bytes(SERIALIZER)
        catalog.write(catalog.metadata_dir / f"{signed.version}.root.json", data)
        catalog.write(catalog.metadata_dir / "root.json", data)
        _swap_key_files(catalog, role, [s.public_key.keyid for s in old])
    return {
        "role": role,
        "root_version": signed.version,
        "retired": sorted(s.public_key.keyid for s in old),
        "keyid": new.public_key.keyid,
        "root": str(catalog.metadata_dir / "root.json"),
    }


def _finish_interrupted(catalog: Catalog, keys: CatalogKeys, role: str, root: Any) -> bool:
    """Complete step 4 of a rotation whose new root was written; ``True`` if it did."""
    next_path = catalog.keys_dir / f"{role}.next.pem"
    if not next_path.exists():
        return False
    pending = load_signer(str(next_path))
    trusted = root.signed.roles[role].keyids
    if pending.public_key.keyid not in trusted:
        return False
    current = keys.signers.get(role)
    retiring = [] if current is None else [current.public_key.keyid]
    _swap_key_files(catalog, role, [k for k in retiring if k not in trusted])
    return True


def _swap_key_files(catalog: Catalog, role: str, retired_keyids: list[str]) -> None:
    """``ROLE.pem`` -> ``retired/ROLE.<keyid>.pem``; ``ROLE.next.pem`` -> ``ROLE.pem``."""
    keys_dir = catalog.keys_dir
    retired = keys_dir / RETIRED_DIR
    retired.mkdir(mode=0o700, exist_ok=True)
    current = keys_dir / f"{role}.pem"
    if current.exists() and retired_keyids:
        tag = retired_keyids[0][:16]
        for suffix in (".pem", ".pem.pub"):
            source = keys_dir / f"{role}{suffix}"
            if source.exists():
                os.replace(source, retired / f"{role}.{tag}{suffix}")
    for suffix in (".pem", ".pem.pub"):
        source = keys_dir / f"{role}.next{suffix}"
        if source.exists():
            os.replace(source, keys_dir / f"{role}{suffix}")
    fsync_dir(keys_dir)
