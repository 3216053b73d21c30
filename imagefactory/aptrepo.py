"""A recipe's third-party apt repositories, verified on the build host first.

Before diskimage-builder starts, every repository a recipe adds is checked the
way apt in the image will check it, with nothing but the pinned key:

1. the key: the recipe's key file (its fingerprint already checked against
   the pin by the recipe's validation), or, for a repository pinned by
   fingerprint alone, the one key of that fingerprint in the build host's
   ``build.repository_keys`` directory. A key is never fetched.
2. each suite's ``InRelease`` (or ``Release`` with ``Release.gpg``) is
   verified by ``gpgv`` against a keyring holding that key alone, in an empty
   home directory; the signature must be a good one by the pinned key
   (primary or one of its subkeys) with a hash apt accepts. What gpgv
   verified (the signed text it writes out, not the file fetched) is what is
   read afterwards. An unsigned, tampered or otherwise-signed Release is
   refused with gpgv's reason, as is one for another suite or past its
   ``Valid-Until``.
3. each component's ``Packages`` index for the image's architecture (and
   ``all``, if the Release lists it) is fetched and checked against the
   sha256 and size the verified Release lists
   (:func:`imagefactory.packageindex.fetch_index`).

The verified Release digests go into the build cache key, so a repository
that publishes a new package rebuilds; the index's packages join the
archive's for the recipe's package-name check.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imagefactory.errors import ArchiveError, HostError
from imagefactory.fsutil import read_bounded
from imagefactory.mirrors import fetch_optional, release_index
from imagefactory.packageindex import PackageIndex, fetch_index, unpack_index
from imagefactory.pgpkey import KeyFileError, PublicKey, read_public_key
from imagefactory.recipe.model import Repository
from imagefactory.run import run
from imagefactory.sbom import ARCHIVE, REPOSITORY_PREFIX, OriginSource
from imagefactory.vocab import Arch

#: Key files the site's ``build.repository_keys`` directory may hold.
KEY_SUFFIXES = (".asc", ".gpg", ".pgp")
MAX_KEY_BYTES = 1024 * 1024
#: OpenPGP hash algorithms (RFC 4880 9.4) apt refuses for a Release signature: MD5, SHA-1.
WEAK_HASHES = {"1": "MD5", "2": "SHA-1"}


class RepositoryError(ArchiveError):
    """A recipe's third-party repository failed verification (key, signature or index)."""


@dataclass
class VerifiedRepository:
    """A repository whose Release files verified against its pinned key."""

    repository: Repository
    key: PublicKey
    #: Suite -> the Release text gpgv verified.
    releases: dict[str, bytes] = field(default_factory=dict)
    #: Index URL -> its text, for the package-name check.
    indexes: dict[str, str] = field(default_factory=dict)

    def digests(self) -> dict[str, str]:
        """Suite -> ``sha256:`` of its verified Release: changes when the repository updates."""
        return {
            suite: "sha256:" + hashlib.sha256(data).hexdigest()
            for suite, data in sorted(self.releases.items())
        }

    def to_dict(self) -> dict[str, Any]:
        repo = self.repository
        return {
            "name": repo.name,
            "url": repo.url,
            "suites": list(repo.suites),
            "components": list(repo.components),
            "fingerprint": repo.fingerprint,
            "release": self.digests(),
        }


def repository_key(repository: Repository, keys_dir: Path | None) -> PublicKey:
    """The pinned key: shipped with the recipe, or from the site's key directory."""
    pinned = repository.fingerprint
    if repository.key is not None:
        key = read_public_key(repository.key)
        if key.fingerprint != pinned:  # the recipe's validation checked this already
            raise RepositoryError(
                f"repository '{repository.name}': the key file holds {key.fingerprint},"
                f" not the pinned {pinned}"
            )
        return key
    setting = "build.repository_keys"
    if keys_dir is None:
        raise HostError(
            f"repository '{repository.name}' pins key {pinned} by fingerprint alone, and"
            f" this build host has no key directory ({setting})",
            hint=f"ship the key with the recipe (key: {{file: ..., fingerprint: {pinned}}}),"
            f" or set {setting} in the settings to a directory holding it",
        )
    try:
        candidates = sorted(p for p in keys_dir.iterdir() if p.suffix in KEY_SUFFIXES)
    except OSError as exc:
        raise HostError(
            f"{keys_dir}: cannot read the repository key directory ({setting}): {exc.strerror}"
        ) from exc
    for path in candidates:
        try:
            key = read_public_key(read_bounded(path, MAX_KEY_BYTES))
        except OSError as exc:
            raise HostError(f"{path}: cannot read this repository key: {exc.strerror}") from exc
        except KeyFileError as exc:
            raise HostError(
                f"{path}: not a usable repository key: {exc}",
                hint=f"every *.asc/*.gpg file in {setting} holds one OpenPGP public key",
            ) from exc
        if key.fingerprint == pinned:
            return key
    raise HostError(
        f"repository '{repository.name}' pins key {pinned}, which is not in {keys_dir} ({setting})",
        hint="the site puts the key there (exported alone: gpg --export --armor FINGERPRINT),"
        " or the recipe ships it as key.file",
    )


def _status(output: str) -> list[list[str]]:
    return [line.split()[1:] for line in output.splitlines() if line.startswith("[GNUPG:] ")]


def _get(url: str, name: str) -> bytes | None:
    try:
        return fetch_optional(url)
    except RepositoryError:
        raise
    except ArchiveError as exc:
        raise RepositoryError(
            f"{name}: {exc.message}",
            hint="check the repository's url in the recipe; the build host must reach it",
        ) from exc


def verify_release(
    repository: Repository, suite: str, key: PublicKey, workdir: Path
) -> tuple[bytes, str]:
    """The verified Release text of ``suite`` and its URL; else :class:`RepositoryError`."""
    base = f"{repository.url}/dists/{suite}"
    name = f"repository '{repository.name}' suite '{suite}'"
    keyring = workdir / "pinned.gpg"
    keyring.write_bytes(key.binary)
    home = workdir / "gnupg"
    home.mkdir(mode=0o700, exist_ok=True)
    gpgv = ["gpgv", "--homedir", str(home), "--status-fd", "1", "--keyring", str(keyring)]
    inrelease = _get(f"{base}/InRelease", name)
    if inrelease is not None:
        source = f"{base}/InRelease"
        signed = workdir / "InRelease"
        signed.write_bytes(inrelease)
        out = workdir / "Release.verified"
        out.unlink(missing_ok=True)
        result = run([*gpgv, "--output", str(out), str(signed)], capture=True, check=False)
        _judge(result.returncode, result.stdout, key, name, source)
        verified = out.read_bytes()
    else:
        release = _get(f"{base}/Release", name)
        if release is None:
            raise RepositoryError(
                f"{name}: no InRelease or Release at {base}/",
                hint="check the repository's url and suites in the recipe",
            )
        signature = _get(f"{base}/Release.gpg", name)
        if signature is None:
            raise RepositoryError(
                f"{name}: the Release file is not signed ({base}/ has no InRelease and no"
                " Release.gpg): refused",
                hint="only signed repositories can be added; their key is pinned in the recipe",
            )
        source = f"{base}/Release"
        (workdir / "Release").write_bytes(release)
        (workdir / "Release.gpg").write_bytes(signature)
        result = run(
            [*gpgv, str(workdir / "Release.gpg"), str(workdir / "Release")],
            capture=True,
            check=False,
        )
        _judge(result.returncode, result.stdout, key, name, source)
        verified = release
    _check_release_fields(verified, suite, name, source)
    return verified, source


def _judge(returncode: int, output: str, key: PublicKey, name: str, source: str) -> None:
    """Accept only a good signature by the pinned key with a hash apt accepts.

    Like apt, a Release signed by the pinned key and also by keys we do not
    have (a repository rotating its key signs with both) is accepted: gpgv
    then exits non-zero for the unknown key alone. A bad signature, or an
    expired or revoked key, refuses it whatever else is there.
    """
    status = _status(output)
    allowed = {key.fingerprint, *key.subkeys}
    good = [
        s
        for s in status
        if len(s) > 1 and s[0] == "VALIDSIG" and (s[1] in allowed or s[-1] == key.fingerprint)
    ]
    words = {s[0] for s in status if s}
    unknown = [s for s in status if s and s[0] in ("NO_PUBKEY", "ERRSIG")]
    only_unknown_others = all(s[0] == "NO_PUBKEY" or (len(s) > 6 and s[6] == "9") for s in unknown)
    fatal = words & {"BADSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG"}
    pinned = f"the pinned key {key.fingerprint}"
    if good and not fatal and (returncode == 0 or only_unknown_others):
        for signature in good:
            algo = signature[8] if len(signature) > 8 else ""
            if algo in WEAK_HASHES:
                raise RepositoryError(
                    f"{name}: {source} is signed with {WEAK_HASHES[algo]}, which apt refuses"
                )
        return
    if "BADSIG" in fatal:
        raise RepositoryError(
            f"{name}: {source} has a BAD signature by {pinned} (changed after signing): refused",
            hint="a tampered file, or a proxy that rewrites it",
        )
    if fatal:
        reason = {"EXPKEYSIG": "has expired", "REVKEYSIG": "is revoked", "EXPSIG": "expired"}
        word = sorted(fatal)[0]
        raise RepositoryError(f"{name}: {source}: the signature or {pinned} {reason[word]}")
    if unknown and only_unknown_others:
        signers = ", ".join(dict.fromkeys(s[1] for s in unknown if len(s) > 1))
        raise RepositoryError(
            f"{name}: {source} is signed by key {signers}, not by {pinned}: refused",
            hint="the recipe pins the wrong key, or the repository is not who it claims to be",
        )
    said = "; ".join(" ".join(s) for s in status) or "no signature found"
    raise RepositoryError(
        f"{name}: {source} does not verify against {pinned} (gpgv: {said}): refused",
        hint="only signed repositories can be added; an InRelease must be clearsigned",
    )


def _fields(release: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in release.decode("utf-8", "replace").splitlines():
        if line[:1].isspace() or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key.strip().lower()] = value.strip()
    return fields


def _check_release_fields(release: bytes, suite: str, name: str, source: str) -> None:
    """The Release is for this suite and still valid (what apt checks too)."""
    fields = _fields(release)
    names = {fields.get("suite"), fields.get("codename")} - {None}
    if names and suite not in names:
        raise RepositoryError(
            f"{name}: {source} is the Release of {' / '.join(sorted(n for n in names if n))},"
            f" not of '{suite}': refused",
            hint="a Release file of another suite, served in its place",
        )
    until = fields.get("valid-until")
    if until:
        try:
            when = email.utils.parsedate_to_datetime(until)
        except (TypeError, ValueError):
            raise RepositoryError(f"{name}: {source}: unreadable Valid-Until '{until}'") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        if when < dt.datetime.now(dt.UTC):
            raise RepositoryError(
                f"{name}: {source} expired at {until} (Valid-Until): refused",
                hint="a stale Release (a replay, or a repository that stopped publishing)",
            )


def index_names(component: str, arch: str) -> tuple[str, ...]:
    """The index files of one component and architecture, in apt's order of preference."""
    stem = f"{component}/binary-{arch}/Packages"
    return (f"{stem}.xz", f"{stem}.gz", stem)


def verify_repository(
    repository: Repository,
    arch: Arch,
    *,
    keys_dir: Path | None,
    cache_dir: Path,
    on_status: Callable[[str], None] = lambda text: None,
) -> VerifiedRepository:
    """Verify one repository (key, every suite's Release, every index it needs)."""
    key = repository_key(repository, keys_dir)
    verified = VerifiedRepository(repository, key)
    with tempfile.TemporaryDirectory(prefix="imagefactory-repo-") as tmp:
        for suite in repository.suites:
            on_status(f"verifying {repository.name} {suite} with key {key.fingerprint[-16:]}")
            release, source = verify_release(repository, suite, key, Path(tmp))
            verified.releases[suite] = release
            listed = release_index(release)
            for component in repository.components:
                found = False
                for index_arch in (arch.dib_arch, "all"):
                    names = [n for n in index_names(component, index_arch) if n in listed]
                    name = names[0] if names else None
                    if name is None:
                        continue
                    found = found or index_arch == arch.dib_arch
                    digest, size = listed[name]
                    url = f"{repository.url}/dists/{suite}/{name}"
                    try:
                        data = fetch_index(
                            url, digest, size, cache_dir=cache_dir, on_status=on_status
                        )
                    except ArchiveError as exc:
                        raise RepositoryError(
                            f"repository '{repository.name}': {exc.message}: refused",
                            hint="the index does not match the Release the pinned key signed",
                        ) from exc
                    verified.indexes[url] = unpack_index(data, url)
                if not found:
                    raise RepositoryError(
                        f"repository '{repository.name}' suite '{suite}': {source} lists no"
                        f" {component}/binary-{arch.dib_arch} package index",
                        hint=f"the repository does not serve component '{component}' for"
                        f" {arch}; check components and arch in the recipe",
                    )
    return verified


def verify_repositories(
    repositories: Sequence[Repository],
    arch: Arch,
    *,
    keys_dir: Path | None,
    cache_dir: Path,
    on_status: Callable[[str], None] = lambda text: None,
) -> list[VerifiedRepository]:
    """Verify every repository of a recipe, in order (the first failure stops)."""
    return [
        verify_repository(r, arch, keys_dir=keys_dir, cache_dir=cache_dir, on_status=on_status)
        for r in repositories
    ]


def add_indexes(index: PackageIndex, verified: Sequence[VerifiedRepository]) -> str:
    """Add the repositories' packages to ``index``; what was added, for messages."""
    for repo in verified:
        for url, text in repo.indexes.items():
            index.add(text, url)
    return ", ".join(f"repository '{r.repository.name}'" for r in verified)


def origin_sources(
    archive: PackageIndex, verified: Sequence[VerifiedRepository]
) -> list[OriginSource]:
    """The verified indexes an installed package is matched in, for the SBOM's origin.

    The archive's (every suite the build uses) and each repository's own, from
    the very index texts whose digests the verified Release files list.
    """
    sources = [OriginSource(ARCHIVE, None, archive.lists, archive.knows)]
    for repo in verified:
        index = PackageIndex()
        for url, text in repo.indexes.items():
            index.add(text, url)
        name = f"{REPOSITORY_PREFIX}{repo.repository.name}"
        sources.append(OriginSource(name, repo.repository.url, index.lists, index.knows))
    return sources
