"""The verified cache: unchanged verified images skip hashing; any change forces a full verify."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from imagefactory.trust import TrustPolicy, load_policy
from imagefactory.verify import Verdict, VerifyOptions, pipeline
from imagefactory.verify.cache import VerifiedCache, verify_cached
from tests.fakes.imagedirs import (
    NOW,
    key_sign,
    key_signer,
    make_image,
    new_key,
    vo_rules,
    write_policy,
)

DISK = "atlas-wn-debian12-1.0.raw"


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, TrustPolicy, VerifiedCache]:
    key = new_key(tmp_path, "atlas")
    image = make_image(tmp_path)
    key_sign(image, key)
    trust = load_policy(
        write_policy(tmp_path / "site.yaml", {"atlas": vo_rules(key_signer("atlas-vo", key))})
    )
    return image, trust, VerifiedCache(tmp_path / "cache")


def check(image: Path, trust: TrustPolicy, cache: VerifiedCache, days: int = 0) -> Verdict:
    return verify_cached(image, trust, cache, VerifyOptions(now=NOW + timedelta(days=days)))


def test_second_verify_of_unchanged_image_is_cached(
    setup: tuple[Path, TrustPolicy, VerifiedCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    image, trust, cache = setup
    first = check(image, trust, cache)
    assert first.allowed
    assert not first.cached
    assert (cache.directory.stat().st_mode & 0o777) == 0o700
    assert (cache.file.stat().st_mode & 0o777) == 0o600

    def no_hashing(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached verify must not hash")

    monkeypatch.setattr(pipeline, "hash_file", no_hashing)
    second = check(image, trust, cache)
    assert second.allowed
    assert second.cached
    assert second.signers == ["atlas: atlas-vo"]


Change = Callable[[Path], None]


def _rewrite_same_bytes(image: Path) -> None:
    disk = image / DISK
    st = disk.stat()
    disk.write_bytes(disk.read_bytes())
    os.utime(disk, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime restored; ctime cannot be


def _replace_inode(image: Path) -> None:
    disk = image / DISK
    copy = image / "copy"
    copy.write_bytes(disk.read_bytes())
    st = disk.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    copy.replace(disk)


def _chmod(image: Path) -> None:
    (image / DISK).chmod(0o600)


def _chown(image: Path) -> None:
    os.chown(image / DISK, 1234, 1234)


def _append(image: Path) -> None:
    with (image / DISK).open("ab") as stream:
        stream.write(b"\0")


def _new_attestation(image: Path) -> None:
    (image / "extra.dsse.json").write_text("{}")


@pytest.mark.parametrize(
    "change",
    [_append, _rewrite_same_bytes, _replace_inode, _chmod, _chown, _new_attestation],
    ids=["size", "content-same-mtime", "inode", "mode", "owner", "attestation-added"],
)
def test_any_change_to_the_files_forces_a_full_verify(
    setup: tuple[Path, TrustPolicy, VerifiedCache], change: Change
) -> None:
    image, trust, cache = setup
    assert check(image, trust, cache).allowed
    change(image)
    again = check(image, trust, cache)
    assert not again.cached
    # A full verify ran: past the signatures (a changed size stops it before hashing).
    assert again.steps[:3] == ["layout", "format", "signatures"]


def test_modified_disk_is_not_smuggled_through_the_cache(
    setup: tuple[Path, TrustPolicy, VerifiedCache],
) -> None:
    image, trust, cache = setup
    assert check(image, trust, cache).allowed
    disk = image / DISK
    st = disk.stat()
    disk.write_bytes(disk.read_bytes()[:-1] + b"X")
    os.utime(disk, ns=(st.st_atime_ns, st.st_mtime_ns))
    verdict = check(image, trust, cache)
    assert not verdict.allowed
    assert not verdict.cached
    assert set(verdict.codes) == {"labels-digest-mismatch"}


def test_policy_change_forces_a_full_verify(
    tmp_path: Path, setup: tuple[Path, TrustPolicy, VerifiedCache]
) -> None:
    image, trust, cache = setup
    assert check(image, trust, cache).allowed
    policy_file = tmp_path / "site.yaml"
    policy_file.write_text(policy_file.read_text() + "max_virtual_size: 64G\n")
    changed = load_policy(policy_file)
    assert changed.digest != trust.digest
    assert not check(image, changed, cache).cached


def test_trusted_key_file_change_forces_a_full_verify(
    tmp_path: Path, setup: tuple[Path, TrustPolicy, VerifiedCache]
) -> None:
    """Same policy text, other key file contents: a different trust root digest."""
    image, trust, cache = setup
    assert check(image, trust, cache).allowed
    (tmp_path / "atlas.pub").write_bytes(
        (new_key(tmp_path, "other").with_suffix(".pub")).read_bytes()
    )
    changed = load_policy(tmp_path / "site.yaml")
    verdict = check(image, changed, cache)
    assert not verdict.cached
    assert verdict.codes == ["untrusted-key"]


def test_denials_are_never_cached(tmp_path: Path) -> None:
    image = make_image(tmp_path)
    key = new_key(tmp_path, "atlas")
    trust = load_policy(
        write_policy(tmp_path / "site.yaml", {"atlas": vo_rules(key_signer("atlas-vo", key))})
    )
    cache = VerifiedCache(tmp_path / "cache")
    assert check(image, trust, cache).codes == ["unsigned"]
    assert not cache.file.exists()


def test_cached_answer_expires_with_the_labels(
    setup: tuple[Path, TrustPolicy, VerifiedCache],
) -> None:
    image, trust, cache = setup
    assert check(image, trust, cache).allowed
    assert check(image, trust, cache, days=1).cached
    late = check(image, trust, cache, days=30)
    assert not late.cached
    assert late.codes == ["expired"]


def test_cache_file_writable_by_others_is_ignored(
    setup: tuple[Path, TrustPolicy, VerifiedCache],
) -> None:
    image, trust, cache = setup
    assert check(image, trust, cache).allowed
    cache.file.chmod(0o666)
    assert not check(image, trust, cache).cached


def test_forged_cache_entry_for_another_key_is_useless(
    setup: tuple[Path, TrustPolicy, VerifiedCache],
) -> None:
    """An entry only answers for the exact (file stats, policy) key it was stored under."""
    image, trust, cache = setup
    cache.directory.mkdir(mode=0o700)
    forged = {"format": "imagefactory-verified-cache-v1", "entries": {"0" * 64: {"signers": []}}}
    cache.file.write_text(json.dumps(forged))
    cache.file.chmod(0o600)
    assert not check(image, trust, cache).cached
