"""verify checks a signed subject with one digest pass, and refuses huge files unread.

* the disk is read once, with sha256 alone: the sha512 a statement or the
  labels carry is signed with the rest and not recomputed (issue 15, goal 3);
* a subject must carry a sha256, which is the one compared;
* an unsigned or mis-sized 1 TiB sparse disk is refused having read next to
  nothing of it: the process's own read counter (``/proc/self/io`` ``rchar``:
  every byte any ``read``/``pread`` returned) proves it (goal 4);
* a caller's digest of the bytes it holds open (pull) replaces the read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from imagefactory.attest.keys import load_signer, sign_envelope
from imagefactory.attest.statement import PAYLOAD_TYPE, image_subjects, statement_bytes
from imagefactory.model.imagedir import load_image_dir
from imagefactory.trust import TrustPolicy, load_policy
from imagefactory.verify import Verdict, VerifyOptions, verify_image
from tests.fakes.imagedirs import (
    NOW,
    key_sign,
    key_signer,
    make_image,
    new_key,
    read_labels,
    vo_rules,
    write_labels,
    write_policy,
)

RAW = "atlas-wn-debian12-1.0.raw"
TIB = 1 << 40
#: Bytes a refusal may read in all (keys, labels, the format check's header reads).
READ_BUDGET = 16 << 20


@pytest.fixture
def key(tmp_path: Path) -> Path:
    return new_key(tmp_path, "atlas")


def _policy(tmp_path: Path, key: Path, **top: Any) -> TrustPolicy:
    vos = {"atlas": vo_rules(key_signer("atlas-vo", key))}
    return load_policy(write_policy(tmp_path / "site.yaml", vos, **top))


def _verify(image: Path, trust: TrustPolicy, **options: Any) -> Verdict:
    return verify_image(image, trust, VerifyOptions(now=NOW, **options))


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[str, ...]]]:
    import imagefactory.digest

    calls: list[tuple[str, tuple[str, ...]]] = []
    real = imagefactory.digest.hash_file

    def spy(path: Any, algorithms: Any = ("sha256",), *args: Any, **kwargs: Any) -> Any:
        calls.append((Path(path).name, tuple(algorithms)))
        return real(path, algorithms, *args, **kwargs)

    monkeypatch.setattr("imagefactory.verify.pipeline.hash_file", spy)
    return calls


def _sign_subjects(image: Path, key: Path, edit: Any) -> None:
    """Sign a statement over the image whose subjects ``edit`` changed first."""
    subjects = [s.to_dict() for s in image_subjects(load_image_dir(image))]
    edit(subjects)
    body = json.loads(statement_bytes([], read_labels(image)))
    body["subject"] = subjects
    payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    envelope = sign_envelope(payload, PAYLOAD_TYPE, load_signer(str(key)))
    (image / "custom.dsse.json").write_text(json.dumps(envelope))


def _disk_subject(subjects: list[dict[str, Any]]) -> dict[str, str]:
    [digest] = [s["digest"] for s in subjects if s["name"] == RAW]
    return digest  # type: ignore[no-any-return]


def test_the_disk_is_read_once_with_sha256_alone(
    tmp_path: Path, key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust = _policy(tmp_path, key)
    image = make_image(tmp_path)
    key_sign(image, key)  # its disk subject carries sha256 and sha512
    statement = image_subjects(load_image_dir(image))
    assert {"sha256", "sha512"} <= set(next(s for s in statement if s.name == RAW).digests)
    calls = _spy(monkeypatch)
    verdict = _verify(image, trust)
    assert verdict.allowed, verdict.render()
    assert [c for c in calls if c[0] == RAW] == [(RAW, ("sha256",))]
    assert all(algorithms == ("sha256",) for _, algorithms in calls)


def test_a_subject_without_sha256_is_refused(tmp_path: Path, key: Path) -> None:
    trust = _policy(tmp_path, key)
    image = make_image(tmp_path)
    _sign_subjects(image, key, lambda subjects: _disk_subject(subjects).pop("sha256"))
    verdict = _verify(image, trust)
    assert not verdict.allowed
    assert "subject-missing" in verdict.codes, verdict.render()


def test_the_sha256_entry_is_the_one_compared(tmp_path: Path, key: Path) -> None:
    trust = _policy(tmp_path, key)
    image = make_image(tmp_path)
    _sign_subjects(image, key, lambda subjects: _disk_subject(subjects).update(sha256="0" * 64))
    verdict = _verify(image, trust)
    assert "subject-mismatch" in verdict.codes, verdict.render()


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def _grow_to_a_tebibyte(image: Path) -> None:
    with (image / RAW).open("r+b") as disk:
        disk.truncate(TIB)  # sparse: no block allocated
    assert os.stat(image / RAW).st_blocks * 512 < READ_BUDGET


def _refused_unread(image: Path, trust: TrustPolicy) -> Verdict:
    before = _rchar()
    verdict = _verify(image, trust)
    read = _rchar() - before
    assert not verdict.allowed, verdict.render()
    assert read < READ_BUDGET, f"verify read {read} bytes to refuse a 1 TiB disk"
    return verdict


def test_an_unsigned_sparse_tebibyte_is_refused_unread(tmp_path: Path, key: Path) -> None:
    trust = _policy(tmp_path, key, max_virtual_size="2T")  # the format step lets it through
    image = make_image(tmp_path)
    labels = read_labels(image)
    labels["disk"].update(size=TIB, virtual_size=TIB)
    write_labels(image, labels)
    _grow_to_a_tebibyte(image)
    verdict = _refused_unread(image, trust)
    assert verdict.codes == ["unsigned"], verdict.render()


def test_a_signed_disk_grown_to_a_tebibyte_is_refused_unread(tmp_path: Path, key: Path) -> None:
    trust = _policy(tmp_path, key, max_virtual_size="2T")
    image = make_image(tmp_path)
    key_sign(image, key)
    _grow_to_a_tebibyte(image)
    verdict = _refused_unread(image, trust)
    assert verdict.steps[-1] == "size", verdict.render()
    assert "labels-digest-mismatch" in verdict.codes


def test_a_tebibyte_over_the_policy_cap_is_refused_unread(tmp_path: Path, key: Path) -> None:
    trust = _policy(tmp_path, key)  # the default cap is far below 1 TiB
    image = make_image(tmp_path)
    key_sign(image, key)
    _grow_to_a_tebibyte(image)
    verdict = _refused_unread(image, trust)
    assert verdict.steps[-1] in ("format", "size"), verdict.render()


def test_the_callers_digest_of_the_open_disk_replaces_the_read(
    tmp_path: Path, key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust = _policy(tmp_path, key)
    image = make_image(tmp_path)
    key_sign(image, key)
    right = hashlib.sha256((image / RAW).read_bytes()).hexdigest()
    calls = _spy(monkeypatch)
    fd = os.open(image / RAW, os.O_RDONLY)
    try:
        verdict = _verify(image, trust, disk_fd=fd, disk_digests={"sha256": right})
        assert verdict.allowed, verdict.render()
        assert RAW not in [name for name, _ in calls]
        # The digest is really used: a wrong one is a refusal, with no read either.
        wrong = _verify(image, trust, disk_fd=fd, disk_digests={"sha256": "0" * 64})
        assert "labels-digest-mismatch" in wrong.codes, wrong.render()
        assert RAW not in [name for name, _ in calls]
    finally:
        os.close(fd)
