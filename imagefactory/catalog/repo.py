"""The catalog: a TUF repository of static files, and the one way to change it.

Layout of a catalog directory (everything in it may be served as is)::

    DIR/metadata/N.root.json, root.json     root (root.json: the newest, for sites to pin)
    DIR/metadata/N.targets.json             top-level targets: delegations, revoked list
    DIR/metadata/N.vo.<vo>.json             one delegated, terminating role per VO
    DIR/metadata/N.snapshot.json
    DIR/metadata/timestamp.json
    DIR/targets/<vo>/<name>/<sha256>.<version>.json   image descriptors (consistent names)
    DIR/targets/<sha256>.revoked.json       the signed revocation list
    DIR/images/<vo>/<name>/<version>/...    the disks, labels, SBOMs and attestations

The catalog's own keys live outside it, in ``DIR-keys/`` (root, targets,
snapshot, timestamp; PEM, mode 0600) with ``config.json`` (expiries), so
serving ``DIR`` never exposes them.

Every change is a :class:`Transaction` under an exclusive lock
(``DIR/.lock``): new files are written under new names (consistent
snapshots), and ``timestamp.json`` -- the only file a reader starts from -- is
replaced last in one rename. A change killed at any point leaves the previous
catalog intact; the next change removes its leftovers.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from securesystemslib.signer import Key, Signer
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization import DeserializationError
from tuf.api.serialization.json import JSONSerializer

from imagefactory.attest.keys import generate_key, load_public_key, load_signer
from imagefactory.catalog.descriptor import VO_RE
from imagefactory.errors import CatalogError
from imagefactory.fsutil import atomic_write, is_disk_full

TOP_ROLES = ("root", "targets", "snapshot", "timestamp")
REVOKED_TARGET = "revoked.json"
REVOKED_SCHEMA = "urn:imagefactory:catalog-revoked:v1"
#: Where a rotation keeps the keys it took out (in the keys directory).
RETIRED_DIR = "retired"

#: Default validity of each role, in days (root and targets are offline keys).
DEFAULT_EXPIRY_DAYS: dict[str, float] = {
    "root": 365,
    "targets": 90,
    "vo": 90,
    "snapshot": 7,
    "timestamp": 1,
}

SERIALIZER = JSONSerializer(compact=False)


def vo_role(vo: str) -> str:
    """The delegated role name of a VO."""
    return f"vo.{vo}"


def keys_dir_for(catalog: Path) -> Path:
    """Where ``catalog init`` keeps a catalog's keys: beside it, never inside it."""
    catalog = Path(catalog)
    return catalog.with_name(catalog.name + "-keys")


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class CatalogKeys:
    """The catalog owner's signers: every private key in the keys directory.

    ``ROLE.pem`` is a role's key; ``ROLE.next.pem`` a key a rotation is
    putting in its place; ``retired/`` the keys rotations took out. Which of
    them sign is decided by key id against the current root, never by file
    name, so a rotation killed between writing the new root and renaming the
    key files still signs with the key the root trusts.
    """

    directory: Path
    signers: dict[str, Signer] = field(default_factory=dict)
    #: Every key found, by key id.
    by_keyid: dict[str, Signer] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> CatalogKeys:
        keys = cls(Path(directory))
        for role in TOP_ROLES:
            path = keys.directory / f"{role}.pem"
            if path.exists():
                keys.signers[role] = load_signer(str(path))
        paths = [keys.directory / f"{role}.next.pem" for role in TOP_ROLES]
        retired = keys.directory / RETIRED_DIR
        if retired.is_dir():
            paths += sorted(retired.glob("*.pem"))
        for signer in keys.signers.values():
            keys.by_keyid[signer.public_key.keyid] = signer
        for path in paths:
            if path.is_file():
                signer = load_signer(str(path))
                keys.by_keyid.setdefault(signer.public_key.keyid, signer)
        return keys

    def signer(self, role: str) -> Signer:
        if role not in self.signers:
            raise CatalogError(
                f"{self.directory}: no {role} key here; this change needs the catalog's {role} key",
                code="catalog-no-key",
            )
        return self.signers[role]

    def trusted(self, role: str, root: Metadata[Root]) -> list[Signer]:
        """The keys here that ``root`` trusts for ``role`` (at least its threshold)."""
        spec = root.signed.roles[role]
        signers = [self.by_keyid[k] for k in sorted(spec.keyids) if k in self.by_keyid]
        if len(signers) < spec.threshold:
            raise CatalogError(
                f"{self.directory}: {len(signers)} of the {role} keys the root (version"
                f" {root.signed.version}) trusts are here; it needs {spec.threshold}",
                code="catalog-no-key",
                hint=f"put the catalog's {role} key into {self.directory}",
            )
        return signers


@dataclass(frozen=True)
class CatalogConfig:
    """Validity of each role in days; stored in the keys directory's ``config.json``."""

    expiry_days: dict[str, float]

    @classmethod
    def load(cls, directory: Path) -> CatalogConfig:
        path = directory / "config.json"
        days: dict[str, float] = dict(DEFAULT_EXPIRY_DAYS)
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                days.update({k: float(v) for k, v in data.get("expiry_days", {}).items()})
            except (OSError, ValueError, AttributeError, TypeError) as exc:
                raise CatalogError(f"{path}: unreadable catalog configuration: {exc}") from exc
        return cls(days)

    def expires(self, role: str, now: datetime) -> datetime:
        kind = "vo" if role.startswith("vo.") else role
        return now + timedelta(days=self.expiry_days[kind])


class Catalog:
    """A catalog directory and its keys directory."""

    def __init__(self, directory: Path, keys: Path | None = None) -> None:
        self.directory = Path(directory)
        self.keys_dir = Path(keys) if keys is not None else keys_dir_for(self.directory)
        self.metadata_dir = self.directory / "metadata"
        self.targets_dir = self.directory / "targets"
        self.images_dir = self.directory / "images"
        #: Temp files and staged image copies of changes in progress (one place to clean).
        self.tmp_dir = self.directory / ".tmp"
        #: The clock every expiry is computed from (tests move it).
        self.clock: Callable[[], datetime] = _utcnow

    # -- creating ----------------------------------------------------------------

    def init(self, expiry_days: dict[str, float] | None = None) -> Path:
        """Create an empty catalog and its four keys; returns the root metadata to pin."""
        if (self.metadata_dir / "timestamp.json").exists():
            raise CatalogError(f"{self.directory}: already a catalog", code="catalog-exists")
        _ensure_dir(self.directory)
        days: dict[str, float] = dict(DEFAULT_EXPIRY_DAYS)
        unknown = set(expiry_days or {}) - set(days)
        if unknown:
            raise CatalogError(f"unknown roles in the expiries: {', '.join(sorted(unknown))}")
        days.update(expiry_days or {})
        self.keys_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.keys_dir, 0o700)
        for role in TOP_ROLES:
            if not (self.keys_dir / f"{role}.pem").exists():
                generate_key(self.keys_dir / f"{role}.pem")
        atomic_write(
            self.keys_dir / "config.json", json.dumps({"expiry_days": days}).encode(), 0o600
        )
        for sub in (self.metadata_dir, self.targets_dir, self.images_dir):
            sub.mkdir(parents=True, exist_ok=True)
        keys = CatalogKeys.load(self.keys_dir)
        config = CatalogConfig(days)
        now = self.clock()
        root = Metadata(Root(expires=config.expires("root", now), consistent_snapshot=True))
        for role in TOP_ROLES:
            root.signed.add_key(keys.signer(role).public_key, role)
        root.sign(keys.signer("root"))
        with self.locked():
            data = root.to_bytes(SERIALIZER)
            self.write(self.metadata_dir / "1.root.json", data)
            self.write(self.metadata_dir / "root.json", data)
            tx = Transaction(self, keys, config, _State.empty(root))
            tx.dirty.add("targets")
            tx.set_revoked([])
            tx.commit()
        return self.metadata_dir / "root.json"

    # -- reading -----------------------------------------------------------------

    def exists(self) -> bool:
        return (self.metadata_dir / "timestamp.json").is_file()

    def load(self) -> _State:
        """The committed state, read from ``timestamp.json`` down, every signature checked."""
        if not self.exists():
            raise CatalogError(
                f"{self.directory}: not a catalog (no metadata/timestamp.json)",
                code="catalog-missing",
                hint="create one with: imagefactory catalog init DIR",
            )
        root = self.latest_root()
        timestamp = self._read("timestamp.json", Timestamp)
        self._check(root, "timestamp", timestamp)
        snapshot = self._read(f"{timestamp.signed.snapshot_meta.version}.snapshot.json", Snapshot)
        self._check(root, "snapshot", snapshot)
        targets_meta = snapshot.signed.meta["targets.json"]
        targets = self._read(f"{targets_meta.version}.targets.json", Targets)
        self._check(root, "targets", targets)

        def load_role(name: str) -> Metadata[Targets]:
            meta = snapshot.signed.meta[f"{name}.json"]
            md = self._read(f"{meta.version}.{name}.json", Targets)
            try:
                targets.verify_delegate(name, md)
            except (UnsignedMetadataError, ValueError) as exc:
                raise CatalogError(
                    f"{self.directory}: role {name} does not verify: {exc}", code="catalog-invalid"
                ) from exc
            return md

        roles = _Roles(load_role)
        return _State(root, timestamp, snapshot, targets, roles)

    def latest_root(self) -> Metadata[Root]:
        """The newest root: ``root.json``, then each ``N+1.root.json`` it signs on to.

        A rotation writes ``N+1.root.json`` before ``root.json``; following the
        chain (as a site's TUF client does) means a change killed between the
        two still signs for the root the sites already follow.
        """
        root = self._read("root.json", Root)
        self._check(root, "root", root)
        while True:
            name = f"{root.signed.version + 1}.root.json"
            if not (self.metadata_dir / name).exists():
                return root
            new = self._read(name, Root)
            self._check(root, "root", new)
            self._check(new, "root", new)
            if new.signed.version != root.signed.version + 1:
                raise CatalogError(
                    f"{self.metadata_dir / name}: says version {new.signed.version}",
                    code="catalog-invalid",
                )
            root = new

    def _read(self, name: str, kind: type[Any]) -> Metadata[Any]:
        path = self.metadata_dir / name
        try:
            md: Metadata[Any] = Metadata.from_bytes(path.read_bytes())
        except OSError as exc:
            raise CatalogError(
                f"{path}: cannot read: {exc.strerror}", code="catalog-invalid"
            ) from exc
        except DeserializationError as exc:
            raise CatalogError(f"{path}: not TUF metadata: {exc}", code="catalog-invalid") from exc
        if not isinstance(md.signed, kind):
            raise CatalogError(f"{path}: is not {kind.__name__} metadata", code="catalog-invalid")
        return md

    def _check(self, root: Metadata[Root], role: str, md: Metadata[Any]) -> None:
        try:
            root.verify_delegate(role, md)
        except (UnsignedMetadataError, ValueError) as exc:
            raise CatalogError(
                f"{self.directory}: {role} metadata does not verify: {exc}", code="catalog-invalid"
            ) from exc

    def revoked(self, state: _State | None = None) -> list[dict[str, Any]]:
        """The signed revocation list, checked against its target hashes."""
        state = state or self.load()
        info = state.targets.signed.targets.get(REVOKED_TARGET)
        if info is None:
            return []
        data = self.read_target(info)
        items = json.loads(data).get("revoked", [])
        return items if isinstance(items, list) else []

    def read_target(self, info: TargetFile) -> bytes:
        """A target file's bytes, checked against its signed length and hashes."""
        path = self.target_file(info)
        data = path.read_bytes()
        try:
            info.verify_length_and_hashes(data)
        except Exception as exc:
            raise CatalogError(f"{path}: does not match its signed digest: {exc}") from exc
        return data

    def target_file(self, info: TargetFile) -> Path:
        head, _, base = info.path.rpartition("/")
        name = f"{info.hashes['sha256']}.{base}"
        return self.targets_dir / head / name if head else self.targets_dir / name

    # -- changing ----------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the catalog's exclusive lock (publishes queue here)."""
        _ensure_dir(self.directory)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def transaction(
        self, extra_signers: dict[str, list[Signer]] | None = None
    ) -> Iterator[Transaction]:
        """Lock, load, let the caller change roles, then commit (or leave nothing behind)."""
        with self.locked():
            self.clean_leftovers()
            state = self.load()
            keys = CatalogKeys.load(self.keys_dir)
            tx = Transaction(self, keys, CatalogConfig.load(self.keys_dir), state)
            tx.role_signers.update(extra_signers or {})
            try:
                yield tx
                tx.commit()
            except OSError as exc:
                if is_disk_full(exc):
                    raise CatalogError(
                        f"{self.directory}: no space left ({exc.strerror}); the catalog is"
                        " unchanged",
                        code="catalog-disk-full",
                    ) from exc
                raise CatalogError(f"{self.directory}: cannot write: {exc}") from exc
            finally:
                self.clean_leftovers()

    def clean_leftovers(self) -> None:
        """Remove what a killed change left behind (only while holding the lock).

        Every temp file and staged copy lives in ``.tmp/``, so this costs the
        same whatever the catalog's size.
        """
        if self.tmp_dir.is_dir():
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(mode=0o700, exist_ok=True)

    def write(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        """:func:`atomic_write` with the temp file in ``.tmp/``."""
        self.tmp_dir.mkdir(mode=0o700, exist_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data, mode, tmp_dir=self.tmp_dir)


def _unversioned(signed: Any) -> Metadata[Any]:
    """New metadata before its first commit (which makes it version 1)."""
    signed.version = 0
    if isinstance(signed, Snapshot):
        signed.meta = {}
    return Metadata(signed)


class _Roles(dict[str, "Metadata[Targets]"]):
    """Delegated roles, each read and verified only when first used.

    A publish touches one VO's role; loading all of them would make its cost
    grow with the whole catalog.
    """

    def __init__(self, loader: Callable[[str], Metadata[Targets]] | None = None) -> None:
        super().__init__()
        self._loader = loader

    def __missing__(self, name: str) -> Metadata[Targets]:
        if self._loader is None:
            raise KeyError(name)
        md = self._loader(name)
        self[name] = md
        return md


@dataclass
class _State:
    root: Metadata[Root]
    timestamp: Metadata[Timestamp]
    snapshot: Metadata[Snapshot]
    targets: Metadata[Targets]
    roles: _Roles

    @classmethod
    def empty(cls, root: Metadata[Root]) -> _State:
        now = datetime.now(UTC)
        return cls(
            root,
            _unversioned(Timestamp(expires=now)),
            _unversioned(Snapshot(expires=now)),
            _unversioned(Targets(expires=now)),
            _Roles(),
        )

    def all_targets(self) -> Iterator[tuple[str, TargetFile]]:
        """(role, target) for every image descriptor, top-level role first."""
        for path, info in self.targets.signed.targets.items():
            if path != REVOKED_TARGET:
                yield "targets", info
        for role in self.role_names():
            for info in self.roles[role].signed.targets.values():
                yield role, info

    def role_names(self) -> list[str]:
        """Every delegated role that has metadata (written or being written)."""
        names = {f.removesuffix(".json") for f in self.snapshot.signed.meta} | set(self.roles)
        return sorted(names - {"targets"})

    def has_role(self, name: str) -> bool:
        return name in self.roles or f"{name}.json" in self.snapshot.signed.meta

    def delegation(self, vo: str) -> DelegatedRole | None:
        delegations = self.targets.signed.delegations
        if delegations is None or delegations.roles is None:
            return None
        return delegations.roles.get(vo_role(vo))


class Transaction:
    """One change of the catalog: edit roles, then :meth:`commit` signs and writes them."""

    def __init__(self, catalog: Catalog, keys: CatalogKeys, config: CatalogConfig, state: _State):
        self.catalog = catalog
        self.keys = keys
        self.config = config
        self.state = state
        self.dirty: set[str] = set()
        #: Signers of delegated roles (the VO's own keys), by role name.
        self.role_signers: dict[str, list[Signer]] = {}
        #: Re-sign snapshot and timestamp even when no role changed (``catalog refresh``).
        self.refresh = False
        #: Keys that sign a top-level role besides those the root trusts (a rotation's
        #: new key, so the role verifies under the old root and the new one).
        self.extra_signers: dict[str, list[Signer]] = {}

    def role_for(self, vo: str) -> tuple[str, Metadata[Targets]]:
        """The role that signs ``vo``'s images: its delegated role, or top-level targets."""
        delegation = self.state.delegation(vo)
        if delegation is None:
            return "targets", self.state.targets
        name = delegation.name
        if not self.state.has_role(name):
            self.state.roles[name] = _unversioned(Targets(expires=self.catalog.clock()))
        return name, self.state.roles[name]

    def add_target(self, role: str, path: str, data: bytes, custom: dict[str, Any]) -> TargetFile:
        """Write ``data`` as target ``path`` (consistent name) and list it in ``role``."""
        info = TargetFile.from_data(path, data, ["sha256", "sha512"])
        info.unrecognized_fields["custom"] = custom
        self.catalog.write(self.catalog.target_file(info), data)
        md = self.state.targets if role == "targets" else self.state.roles[role]
        md.signed.targets[path] = info
        self.dirty.add(role)
        return info

    def remove_target(self, role: str, path: str) -> None:
        md = self.state.targets if role == "targets" else self.state.roles[role]
        if md.signed.targets.pop(path, None) is not None:
            self.dirty.add(role)

    def set_revoked(self, items: list[dict[str, Any]]) -> None:
        doc = {"schema": REVOKED_SCHEMA, "revoked": items}
        self.add_target("targets", REVOKED_TARGET, json.dumps(doc, indent=1).encode(), {})

    def delegate(self, vo: str, keys: Sequence[Key], threshold: int) -> None:
        """Give ``vo`` its own terminating role for ``<vo>/*/*`` (new keys replace old ones)."""
        if not VO_RE.fullmatch(vo):
            raise CatalogError(f"{vo!r} is not a VO name", code="catalog-usage")
        if threshold < 1 or threshold > len(keys):
            raise CatalogError(
                f"threshold {threshold} needs between 1 and {len(keys)} keys", code="catalog-usage"
            )
        targets = self.state.targets.signed
        if targets.delegations is None:
            targets.delegations = Delegations(keys={}, roles={})
        name = vo_role(vo)
        old = targets.delegations.roles.get(name) if targets.delegations.roles else None
        if old is not None:
            for keyid in list(old.keyids):
                targets.revoke_key(keyid, name)
        role = DelegatedRole(name, [], threshold, True, paths=[f"{vo}/*/*"])
        roles = targets.delegations.roles if targets.delegations.roles is not None else {}
        roles[name] = role
        targets.delegations.roles = roles
        for key in keys:
            targets.add_key(key, name)
        # Images the top-level role signed for this VO move into the VO's role on its
        # next publish; until then the top-level entries stay valid (searched first).
        self.dirty.add("targets")

    def _sign(self, role: str, md: Metadata[Any]) -> None:
        md.signatures.clear()
        if role.startswith("vo."):
            delegation = self.state.targets.signed.get_delegated_role(role)
            signers = [
                s
                for s in self.role_signers.get(role, [])
                if s.public_key.keyid in delegation.keyids
            ]
            if len(signers) < delegation.threshold:
                raise CatalogError(
                    f"role {role} needs {delegation.threshold} of its keys; got {len(signers)}"
                    " (pass the VO's key with --key)",
                    code="catalog-no-key",
                )
            for signer in signers:
                md.sign(signer, append=True)
        else:
            signers = self.keys.trusted(role, self.state.root) + self.extra_signers.get(role, [])
            seen: set[str] = set()
            for signer in signers:
                if signer.public_key.keyid not in seen:
                    seen.add(signer.public_key.keyid)
                    md.sign(signer, append=True)

    def _write(self, role: str, md: Metadata[Any]) -> MetaFile:
        data = md.to_bytes(SERIALIZER)
        self.catalog.write(self.catalog.metadata_dir / f"{md.signed.version}.{role}.json", data)
        return MetaFile(
            md.signed.version,
            length=len(data),
            hashes={"sha256": hashlib.sha256(data).hexdigest()},
        )

    def commit(self) -> None:
        """Sign and write every changed role, then a new snapshot and timestamp."""
        now = self.catalog.clock()
        state = self.state
        snapshot = state.snapshot.signed
        if not self.dirty and not self.refresh:
            return
        for role in sorted(self.dirty):
            md = state.targets if role == "targets" else state.roles[role]
            md.signed.version += 1
            md.signed.expires = self.config.expires(role, now)
            self._sign(role, md)
            snapshot.meta[f"{role}.json"] = self._write(role, md)
        snapshot.version += 1
        snapshot.expires = self.config.expires("snapshot", now)
        self._sign("snapshot", state.snapshot)
        snap_meta = self._write("snapshot", state.snapshot)
        timestamp = state.timestamp.signed
        timestamp.snapshot_meta = snap_meta
        timestamp.version += 1
        timestamp.expires = self.config.expires("timestamp", now)
        self._sign("timestamp", state.timestamp)
        # The one file readers start from: replaced last, in one rename.
        self.catalog.write(
            self.catalog.metadata_dir / "timestamp.json", state.timestamp.to_bytes(SERIALIZER)
        )
        self.dirty.clear()


def load_public_keys(paths: list[Path]) -> list[Key]:
    """Public keys (PEM files) for a delegation."""
    return [load_public_key(p) for p in paths]


def _ensure_dir(path: Path) -> None:
    """``path`` as a directory (made if missing), or a :class:`CatalogError` naming it."""
    if path.exists() and not path.is_dir():
        raise CatalogError(
            f"{path}: not a directory", hint="a catalog is a directory; name another path"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CatalogError(f"{path}: cannot create the catalog directory: {exc.strerror}") from exc
