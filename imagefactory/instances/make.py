"""``instantiate``: a job's copy-on-write overlay on a verified store image.

:func:`instantiate` refuses a base that is not a complete entry of the store
(``STORE/<vo>/<name>/<version>/``, the path resolved first), that pull has
retired (revoked, expired, superseded or withdrawn while an instance used it),
whose signed expiry has passed, or that changed since it was verified: the
verified cache's key (:func:`imagefactory.verify.cache.image_key`: ``lstat``
of every file, the policy's digest) must find an entry in the configured
verified cache or the store's own, so nothing on this path reads the disk and
the cost does not grow with the image size.

:func:`make_overlay` then builds ``.new-PID-RAND-JOB/`` in the run
directory: ``qemu-img create -f qcow2 -b BASE -F FORMAT`` (the base's signed
format written into the overlay, never probed), the record
(``overlay.json``), and renames it to ``JOB/`` under the run directory's lock,
after checking again, under that lock, that the base is still the store entry
it checked (installed, in the pull state, not retired, the same disk file):
pull removes and retires images under the same lock, so an overlay never
appears over an image pull is removing (which would dangle) or has retired.
The long work (the checks, ``qemu-img``) happens outside the lock.
"""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from imagefactory.errors import StoreError
from imagefactory.gate.disks import inside
from imagefactory.gate.overlay import OVERLAY, RECORD, OverlayRecord, sha256_fd, write_record
from imagefactory.gate.text import shown
from imagefactory.instances.rundir import InstanceError, RunDir, boot_id, check_job
from imagefactory.model.imagedir import LayoutError, load_image_dir
from imagefactory.run import run
from imagefactory.store.layout import Store, rmtree_readonly
from imagefactory.trust.model import TrustPolicy
from imagefactory.verify.cache import VerifiedCache, image_key
from imagefactory.verify.labels import now_utc


@dataclass(frozen=True)
class Instance:
    """A job's instance as :func:`instantiate` made it."""

    job: str
    overlay: Path
    image: str
    base: Path
    base_format: str

    def to_dict(self) -> dict[str, str]:
        return {
            "job": self.job,
            "overlay": str(self.overlay),
            "image": self.image,
            "base": str(self.base),
            "base_format": self.base_format,
        }


def _store_key(image: Path, store: Store) -> str:
    """The image's ``vo/name/version`` if it is a complete entry of ``store``."""
    hint = "give an image directory of the store, as 'imagefactory select' prints it"
    real = Path(os.path.realpath(image))
    root = Path(os.path.realpath(store.directory))
    if not inside(real, root) or real == root:
        raise InstanceError(f"{shown(str(image))}: not in the image store {root}", hint=hint)
    key = store.key_of(real)
    if key is None:
        raise InstanceError(
            f"{shown(str(image))}: not an image directory of the store"
            " (STORE/<vo>/<name>/<version>)",
            hint=hint,
        )
    try:
        state = store.load_state()
    except StoreError as exc:
        raise InstanceError(exc.message) from exc
    if key not in store.installed() or key not in state.images:
        raise InstanceError(
            f"{key}: not a complete entry of the store {root} (pull did not install it,"
            " or has removed it)",
            hint="run 'imagefactory pull' to install it, or select another image",
        )
    retired = state.retired.get(key)
    if retired is not None:
        raise InstanceError(
            f"{key}: retired from the store since {retired.get('since')}"
            f" ({retired.get('code')}: {retired.get('reason')}); no new instances start from it",
            hint="select another image ('imagefactory select')",
        )
    return key


def _check_verified(
    image: Path, key: str, policy: TrustPolicy, caches: list[VerifiedCache]
) -> None:
    now = now_utc()
    try:
        loaded = load_image_dir(image)
    except LayoutError as exc:
        raise InstanceError(f"{key}: {exc.message}") from exc
    expires = str(loaded.labels.get("image", {}).get("expires", ""))
    try:
        when = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is not None and when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when is None or when <= now:
        raise InstanceError(
            f"{key}: its signed endorsement expired at {shown(expires)}",
            hint="pull a newer version ('imagefactory pull')",
        )
    cache_key = image_key(image, policy)
    if cache_key is not None and any(c.lookup(cache_key, now) for c in caches):
        return
    raise InstanceError(
        f"{key}: not verified as it is now (changed since it was verified, or verified under"
        " another policy, or its verdict has run out)",
        hint=f"run 'imagefactory verify {image} --policy POLICY --cache CACHE' with the"
        " policy and cache given here, or pull again",
    )


def instantiate(
    image: Path,
    job: str,
    *,
    store: Path,
    policy: TrustPolicy,
    run_dir: Path,
    cache: VerifiedCache | None = None,
    owner: str | None = None,
) -> Instance:
    """A fresh overlay for ``job`` over the verified store image ``image``.

    ``owner``: the user the hypervisor runs qemu as (libvirt's ``libvirt-qemu``)
    gets the overlay file, so that a domain told not to relabel its disks can write
    it; the job's directory stays root's.
    """
    check_job(job)
    ids = _owner_ids(owner)
    the_store = Store(store)
    key = _store_key(image, the_store)
    real = Path(os.path.realpath(image))
    caches = [c for c in (cache, VerifiedCache(the_store.state_dir / "verify-cache")) if c]
    _check_verified(real, key, policy, caches)
    loaded = load_image_dir(real)
    disk = _identity(loaded.disk)

    def still_there() -> None:
        # Under the run directory's lock: pull may have removed or retired it meanwhile.
        _store_key(image, the_store)
        if _identity(loaded.disk) != disk:
            raise InstanceError(
                f"{key}: its disk was replaced in the store while the overlay was made",
                hint="run instantiate again",
            )

    overlay = make_overlay(real, run_dir, job, image=key, owner=ids, recheck=still_there)
    return Instance(job, overlay, key, Path(os.path.realpath(loaded.disk)), loaded.declared_format)


def _identity(disk: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(disk)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _owner_ids(owner: str | None) -> tuple[int, int] | None:
    if owner is None:
        return None
    try:
        entry = pwd.getpwnam(owner)
    except (KeyError, ValueError) as exc:
        raise InstanceError(
            f"--owner {shown(owner)}: no such user on this host",
            hint="name the user the hypervisor runs qemu as (libvirt: libvirt-qemu)",
        ) from exc
    return entry.pw_uid, entry.pw_gid


def make_overlay(
    base_image: Path,
    run_dir: Path,
    job: str,
    *,
    image: str = "",
    owner: tuple[int, int] | None = None,
    recheck: Callable[[], None] | None = None,
) -> Path:
    """A fresh qcow2 overlay over ``base_image``'s disk for ``job``; returns its path.

    No checks of the base beyond its being an image directory: :func:`instantiate`
    makes them (tests make overlays over image directories outside a store).
    ``recheck`` runs under the run directory's lock just before the overlay is
    published; it raises to refuse it.
    """
    check_job(job)
    try:
        loaded = load_image_dir(base_image)
    except LayoutError as exc:
        raise InstanceError(f"{base_image}: not an image directory: {exc.message}") from exc
    base = Path(os.path.realpath(loaded.disk))
    fmt = loaded.declared_format
    runs = RunDir(run_dir)
    runs.create()
    final = runs.job_dir(job)
    if final.exists():
        raise _exists(final)
    work = runs.temp("new", job)
    try:
        work.mkdir(mode=0o755)
        _create(base, fmt, work / OVERLAY)
        if owner is not None:
            os.chown(work / OVERLAY, *owner)
        fd = os.open(work / OVERLAY, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            sha = sha256_fd(fd)
        finally:
            os.close(fd)
        created = datetime.now(UTC).isoformat()
        record = OverlayRecord(OVERLAY, str(base), fmt, sha, False, job, image, created, boot_id())
        write_record(work / RECORD, record)
        _publish(runs, work, final, recheck)
    except BaseException:
        rmtree_readonly(work)
        raise
    return final / OVERLAY


def _exists(final: Path) -> InstanceError:
    return InstanceError(
        f"{final}: the job already has an instance",
        hint=f"discard it first ('imagefactory discard --job {final.name}')",
    )


def _create(base: Path, fmt: str, overlay: Path) -> None:
    # -F: the base's signed format is written into the overlay, so nothing ever probes it.
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", fmt, str(overlay)])


def _publish(
    runs: RunDir, work: Path, final: Path, recheck: Callable[[], None] | None = None
) -> None:
    """Rename the finished ``work`` to the job's name, unless another instantiate was first."""
    # No fsync: an instance never outlives the host's boot (gc removes what an earlier
    # boot left), so only what other processes see matters, and the rename decides that.
    with runs.locked():
        if final.exists():
            raise _exists(final)
        if recheck is not None:
            recheck()
        os.rename(work, final)
