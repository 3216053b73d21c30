"""``pull``: make the store hold exactly the verified images the site accepts.

In order, under the store's lock:

1. ``refresh``  -- TUF refresh against the pinned root; the offered images
   (each a target verified by TUF, with its selection labels) and the signed
   revocation list;
2. ``select``   -- drop what is revoked, expired, for a VO the policy does not
   know, not matching ``--select``, or below the site's minimum version for
   that image; keep the newest version per image. Only the chosen images'
   descriptors are then downloaded (each checked by TUF against its target);
3. ``fetch``    -- for each image not yet in the store: every file, resumable,
   capped at its signed length and hashed while it streams, into the store's
   private state; an image already in the store from the same descriptor
   transfers nothing;
4. ``verify``   -- the full ``verify`` against the site policy on the staged
   directory (format check first), then one rename into the store; the
   image's version becomes the new minimum for that image;
5. ``prune``    -- every image the catalog no longer offers (revoked, expired,
   superseded, withdrawn) or that fails verify now leaves the store; one that
   a job's overlay still uses is *retired* instead (kept in place, named in
   the result with the jobs holding it; see :mod:`.layout`). The holders are
   looked at, and each image removed or retired and the state saved, under
   the run directory's lock (``PullOptions.instances``), so no instantiate
   publishes an overlay over an image in between; downloads and verify happen
   before, without that lock.

An image whose download or verify fails this time is reported; the version
the store already held stays until a newer one is in.
"""

from __future__ import annotations

import dataclasses
import os
from collections import defaultdict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imagefactory.catalog.descriptor import FileEntry
from imagefactory.catalog.versions import version_key
from imagefactory.errors import ImageFactoryError, InputError, StoreError, UsageError
from imagefactory.model.imagedir import LayoutError, load_image_dir
from imagefactory.store.layout import Instances, Store, StoreState, rmtree_readonly
from imagefactory.store.transport import ByteSource, Downloaded, Source, download
from imagefactory.store.updater import CatalogClient, Offer
from imagefactory.trust.model import TrustPolicy
from imagefactory.verify.cache import VerifiedCache, image_key, verify_cached
from imagefactory.verify.pipeline import VerifyOptions, verify_image
from imagefactory.verify.verdict import Verdict

if TYPE_CHECKING:
    from imagefactory.oci.registry import Registry

#: The labels ``--select`` may name (the catalog target's ``custom``).
SELECT_KEYS = (
    "name",
    "version",
    "vo",
    "distro",
    "release",
    "codename",
    "arch",
    "format",
    "model",
    "root_policy",
)

#: ``on_progress(what, done_bytes, total_bytes)``
PullProgress = Callable[[str, int, int], None]


def parse_select(text: str | None) -> dict[str, set[str]]:
    """``distro=debian,release=12,vo=atlas`` -> {key: allowed values}; a key may repeat."""
    out: dict[str, set[str]] = {}
    for raw in (text or "").split(","):
        item = raw.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise UsageError(f"--select: {item!r} is not KEY=VALUE")
        if key not in SELECT_KEYS:
            raise UsageError(f"--select: unknown key {key!r}; known: {', '.join(SELECT_KEYS)}")
        out.setdefault(key, set()).add(value.strip())
    return out


def _matches(custom: dict[str, Any], select: dict[str, set[str]]) -> bool:
    return all(str(custom.get(key)) in values for key, values in select.items())


@dataclass
class Event:
    """Something pull did or refused, per image (``vo/name/version``)."""

    image: str
    action: str  # installed, kept, removed, refused, skipped
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {
            "image": self.image,
            "action": self.action,
            "code": self.code,
            "message": self.message,
        }


@dataclass
class PullResult:
    events: list[Event] = field(default_factory=list)
    image_bytes: int = 0
    metadata_bytes: int = 0

    def add(self, image: str, action: str, code: str, message: str) -> None:
        self.events.append(Event(image, action, code, message))

    def by_action(self, action: str) -> list[str]:
        return [e.image for e in self.events if e.action == action]

    @property
    def ok(self) -> bool:
        return not any(e.action == "refused" for e in self.events)

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": [e.to_dict() for e in self.events],
            "image_bytes": self.image_bytes,
            "metadata_bytes": self.metadata_bytes,
        }


def _parse_time(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _descriptor_digest(offer: Offer) -> str:
    return str(offer.info.hashes["sha256"])


@dataclass
class PullOptions:
    select: dict[str, set[str]] = field(default_factory=dict)
    verify: VerifyOptions = field(default_factory=VerifyOptions)
    timeout: float = 30.0
    on_progress: PullProgress | None = None
    #: The time expiry is judged at (tests pin it); verify has its own in ``verify.now``.
    now: datetime | None = None
    #: Fetch each file from the OCI registry the descriptor names (by digest), where it names one.
    oci: bool = False
    #: The instances over store images (the run directory): who holds an image, and the
    #: lock an image is removed or retired under.
    instances: Instances | None = None


def pull(
    catalog: str,
    root: bytes,
    policy: TrustPolicy,
    store_dir: Path,
    options: PullOptions | None = None,
) -> PullResult:
    """Bring ``store_dir`` in line with the catalog at ``catalog`` (a directory or URL)."""
    options = options or PullOptions()
    store = Store(store_dir)
    store.create()
    with store.locked():
        store.clean_leftovers()
        return _Pull(Source.parse(catalog, options.timeout), root, policy, store, options).run()


class _Pull:
    def __init__(
        self, source: Source, root: bytes, policy: TrustPolicy, store: Store, options: PullOptions
    ) -> None:
        self.source = source
        self.root = root
        self.policy = policy
        self.store = store
        self.options = options
        self.result = PullResult()
        self.state: StoreState = store.load_state()
        self.now = options.now or datetime.now(UTC)
        self.cache = VerifiedCache(store.state_dir / "verify-cache")
        self.registries: dict[str, Registry] = {}
        self.client: CatalogClient | None = None

    def run(self) -> PullResult:
        client = self.client = CatalogClient(self.source, self.root, self.store.state_dir)
        vos = set(self.policy.vos)
        if "vo" in self.options.select:
            vos &= self.options.select["vo"]
        refresh = client.refresh(vos)
        self.result.metadata_bytes = refresh.metadata_bytes
        for path, code, message in refresh.refused:
            self.result.add(path, "refused", code, message)
        revoked = {
            f"{r.get('vo')}/{r.get('name')}/{r.get('version')}": str(r.get("reason", ""))
            for r in refresh.revoked
        }
        wanted = self._select(refresh.offers, revoked)
        installed = self.store.installed()
        # Entries whose directory is gone (a pull killed before its rename) are not installed.
        self.state.images = {k: v for k, v in self.state.images.items() if k in installed}
        keep: set[str] = set()
        for name_key, offer in sorted(wanted.items()):
            key = offer.key
            have = self._have(key, offer, installed)
            if have == "denied":
                continue
            if have == "have":
                keep.add(key)
                continue
            if self._fetch_and_install(key, offer):
                keep.add(key)
                self._raise_minimum(name_key, offer.version)
            else:
                # Keep what the store held for this image until a newer one is in.
                keep.update(
                    k
                    for k in installed
                    if k.rsplit("/", 1)[0] == name_key
                    and k not in revoked
                    and self._still_offered(k, refresh.offers)
                )
        instances = self.options.instances
        leaving = any(k not in keep for k in installed)
        # Only a pull that removes or retires something takes (and may create) the lock.
        with instances.locked() if instances is not None and leaving else nullcontext():
            self._prune(installed, keep, revoked, refresh.offers)
            self.store.save_state(self.state)
        self._clean_partials(wanted)
        self.result.metadata_bytes = client.fetcher.fetched_bytes
        return self.result

    def _still_offered(self, key: str, offers: list[Offer]) -> bool:
        for offer in offers:
            if offer.key == key:
                expires = _parse_time(offer.expires)
                return expires is not None and expires > self.now
        return False

    def _select(self, offers: list[Offer], revoked: dict[str, str]) -> dict[str, Offer]:
        best: dict[str, Offer] = {}
        offered: defaultdict[str, list[Offer]] = defaultdict(list)
        for offer in offers:
            key = offer.key
            name_key = f"{offer.vo}/{offer.name}"
            if key in revoked:
                self.result.add(key, "skipped", "revoked", f"revoked: {revoked[key]}")
                continue
            if not _matches(offer.custom, self.options.select):
                continue
            if offer.vo not in self.policy.vos:
                self.result.add(
                    key,
                    "skipped",
                    "not-in-policy",
                    f"the site policy has no rules for VO {offer.vo}",
                )
                continue
            expires = _parse_time(offer.expires)
            if expires is None or expires <= self.now:
                self.result.add(key, "skipped", "expired", f"expired at {offer.expires}")
                continue
            current = best.get(name_key)
            if current is None or version_key(offer.version) > version_key(current.version):
                best[name_key] = offer
            offered[name_key].append(offer)
        # Versions below the site's minimum are old ones a catalog still lists
        # (superseded: nothing to report) unless nothing at or above the minimum
        # is offered any more: then the catalog is going back, and each is refused.
        for name_key, offer in list(best.items()):
            minimum = self.state.minimum.get(name_key)
            if minimum is None or version_key(offer.version) >= version_key(minimum):
                continue
            del best[name_key]
            for old in offered[name_key]:
                self.result.add(
                    old.key,
                    "refused",
                    "below-minimum-version",
                    f"version {old.version} is below this site's minimum {minimum}"
                    " for the image (versions never go back)",
                )
        return best

    def _have(self, key: str, offer: Offer, installed: dict[str, Path]) -> str:
        """``have`` (installed from this descriptor, still verifies), ``missing`` or ``denied``."""
        entry = self.state.images.get(key)
        if key not in installed or entry is None:
            return "missing"
        if entry.get("descriptor") != _descriptor_digest(offer):
            self.result.add(
                key,
                "refused",
                "store-descriptor-changed",
                "the catalog describes this installed version differently now; reinstalling it",
            )
            return "missing"
        verdict = verify_cached(installed[key], self.policy, self.cache, self.options.verify)
        if not verdict.allowed:
            reasons = "; ".join(r.render() for r in verdict.denials)
            self.result.add(key, "refused", "verify-denied", reasons)
            return "denied"
        self.result.add(key, "kept", "unchanged", "already in the store, verified")
        return "have"

    def _fetch_and_install(self, key: str, offer: Offer) -> bool:
        parts: list[tuple[str, Path]] = []
        fetched: dict[str, Downloaded] = {}
        try:
            if self.client is None:
                raise RuntimeError("fetch before refresh")
            descriptor = self.client.descriptor(offer)
            for entry in descriptor.files:
                part = self.store.partial_dir / f"{entry.hashes['sha256']}.part"
                progress = _progress_for(self.options.on_progress, f"{key} {entry.name}")
                source, where = self._source_for(entry)
                got = download(
                    source,
                    where,
                    part,
                    entry.length,
                    hashes=_streamed_hashes(entry),
                    on_progress=progress,
                )
                self.result.image_bytes += got.transferred
                parts.append((entry.name, part))
                fetched[entry.name] = got
        except ImageFactoryError as exc:
            code = getattr(exc, "code", "transport")
            self.result.add(key, "refused", code, exc.message)
            if isinstance(exc, StoreError):
                raise
            return False
        staging = self.store.staging()
        try:
            for name, part in parts:
                os.link(part, staging / name)
            self.store.seal(staging)
            verdict = _verify_streamed(staging, self.policy, self.options.verify, fetched)
            if not verdict.allowed:
                reasons = "; ".join(r.render() for r in verdict.denials)
                self.result.add(key, "refused", "verify-denied", reasons)
                return False
            instances = self.options.instances
            replacing = self.store.image_dir(key).exists()
            # Replacing an installed version in place (its descriptor changed) would
            # change the base under the overlays made on it: under the run directory's
            # lock, a held one is kept, and the new one waits until nothing holds it.
            with instances.locked() if instances is not None and replacing else nullcontext():
                held = (
                    instances.holders(self.store.image_dir(key)) if instances and replacing else []
                )
                if held:
                    self.result.add(
                        key,
                        "refused",
                        "store-in-use",
                        "the installed version is the base of the instances of "
                        f"{', '.join(held)}: it stays until they end, and a later pull"
                        " installs the changed one",
                    )
                    return False
                self.state.images[key] = {
                    "descriptor": _descriptor_digest(offer),
                    "installed": self.now.isoformat(),
                }
                for _name, part in parts:
                    part.unlink()  # the staged links stay; a denied image keeps its partials
                self.store.save_state(self.state)
                final = self.store.install(staging, key)
            # The files just verified, renamed in a private directory: the next pull (and
            # only this store's pulls) answer from the cache instead of re-hashing them.
            final_key = image_key(final, self.policy)
            if final_key is not None:
                self.cache.store(final_key, verdict, self.now)
        except OSError as exc:
            raise StoreError(f"{self.store.directory}: cannot install {key}: {exc}") from exc
        finally:
            if staging.exists():
                rmtree_readonly(staging)
        self.result.add(key, "installed", "verified", "downloaded, verified and installed")
        return True

    def _source_for(self, entry: FileEntry) -> tuple[ByteSource, str]:
        if not self.options.oci or entry.oci is None:
            return self.source, entry.path
        from imagefactory.oci.registry import Registry

        repository = entry.oci.rpartition("@")[0]
        if repository not in self.registries:
            self.registries[repository] = Registry(repository, timeout=self.options.timeout)
        return self.registries[repository], entry.oci

    def _raise_minimum(self, name_key: str, version: str) -> None:
        current = self.state.minimum.get(name_key)
        if current is None or version_key(version) > version_key(current):
            self.state.minimum[name_key] = version

    def _prune(
        self,
        installed: dict[str, Path],
        keep: set[str],
        revoked: dict[str, str],
        offers: list[Offer],
    ) -> None:
        offered = {o.key for o in offers}
        for key in sorted(installed):
            if key in keep:
                self.state.retired.pop(key, None)
                continue
            if key in revoked:
                code, why = "revoked", f"revoked: {revoked[key]}"
            elif key not in offered:
                code, why = "withdrawn", "no longer in the catalog"
            elif not self._still_offered(key, offers):
                code, why = "expired", "its catalog entry expired"
            else:
                code, why = "superseded", "a newer version is in the store, or it failed verify"
            held = self.options.instances.holders(installed[key]) if self.options.instances else []
            if held:
                self._retire(key, code, why, held)
                continue
            self.state.retired.pop(key, None)
            try:
                self.store.remove(key)
            except OSError as exc:
                raise StoreError(f"{self.store.directory}: cannot remove {key}: {exc}") from exc
            self.state.images.pop(key, None)
            self.result.add(key, "removed", code, why)

    def _retire(self, key: str, code: str, why: str, held: list[str]) -> None:
        # The time it is retired at, under the run directory's lock: every overlay made
        # before (its record's time is taken before it is published) stays usable.
        since = self.state.retired.get(key, {}).get("since") or datetime.now(UTC).isoformat()
        self.state.retired[key] = {"code": code, "reason": why, "since": since, "held_by": held}
        jobs = ", ".join(held)
        self.result.add(
            key,
            "retired",
            code,
            f"{why}; kept for the instances of job(s) {jobs} until they are discarded"
            " (nothing new starts from it)",
        )

    def _clean_partials(self, wanted: dict[str, Offer]) -> None:
        needed = {
            f"{e.hashes['sha256']}.part"
            for o in wanted.values()
            if o.descriptor is not None
            for e in o.descriptor.files
        }
        for part in self.store.partial_dir.iterdir():
            if part.name not in needed:
                part.unlink(missing_ok=True)


def _verify_streamed(
    staging: Path, policy: TrustPolicy, options: VerifyOptions, fetched: dict[str, Downloaded]
) -> Verdict:
    """The full verify of the staged image, the disk's digest taken from its download.

    The disk was hashed while it was written (the very bytes, from the same
    buffer) and fsync'd; its staged name is a link to that file in pull's
    private state. It is opened here once, and only if that descriptor is
    the downloaded file, unwritten since (device, inode, size, mtime), does
    verify get the streamed digest with it instead of reading the disk again;
    else verify hashes what the descriptor holds. Either way everything verify
    reads of the disk (format check, digest) comes through that descriptor.
    """
    try:
        disk = load_image_dir(staging).disk
    except LayoutError:
        return verify_image(staging, policy, options)  # which names the layout problem
    got = fetched.get(disk.name)
    try:
        fd = os.open(disk, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return verify_image(staging, policy, options)  # which names what is wrong with it
    try:
        st = os.fstat(fd)
        digests = dict(got.hexdigests) if got is not None and _same_file(st, got.st) else None
        handed = dataclasses.replace(options, disk_fd=fd, disk_digests=digests)
        return verify_image(staging, policy, handed)
    finally:
        os.close(fd)


def _same_file(now: os.stat_result, then: os.stat_result) -> bool:
    """The same inode, not written since ``then`` (linking and chmod change only its ctime)."""
    return (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) == (
        then.st_dev,
        then.st_ino,
        then.st_size,
        then.st_mtime_ns,
    )


def _streamed_hashes(entry: FileEntry) -> dict[str, str]:
    """The digests checked while a file streams in.

    The disk's sha256 only: one digest binds the bytes. It is checked against
    the descriptor here and handed to verify, which checks it against the
    signed statement and labels without reading the disk again; the sha512 the
    descriptor also names (for HEPiX image lists) would cost a core and add
    nothing.
    """
    if entry.kind == "disk":
        return {"sha256": entry.hashes["sha256"]}
    return dict(entry.hashes)


def _progress_for(report: PullProgress | None, what: str) -> Callable[[int, int], None] | None:
    if report is None:
        return None

    def progress(done: int, total: int) -> None:
        report(what, done, total)

    return progress


def read_root(path: Path) -> bytes:
    """The pinned root metadata a site got out of band."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the pinned root: {exc.strerror}") from exc
    if len(data) > 512 * 1024:
        raise InputError(f"{path}: too large for root metadata")
    return data
