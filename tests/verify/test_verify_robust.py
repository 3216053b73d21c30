"""verify against the robustness findings of issue 10: each a clear deny, never a traceback."""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

import imagefactory.digest
from imagefactory.attest.keys import load_signer, sign_envelope
from imagefactory.attest.sign import sign_with_key
from imagefactory.attest.statement import PAYLOAD_TYPE, image_subjects, statement_bytes
from imagefactory.errors import LabelError
from imagefactory.model.imagedir import load_image_dir
from imagefactory.trust import TrustPolicy, load_policy
from imagefactory.verify import Verdict, VerifyOptions, verify_image
from imagefactory.verify.cache import VerifiedCache, verify_cached
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


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    return {name: new_key(tmp_path, name) for name in ("atlas", "cms", "site")}


def policy(tmp_path: Path, vos: dict[str, Any]) -> TrustPolicy:
    return load_policy(write_policy(tmp_path / "site.yaml", vos))


def verify(image: Path, trust: TrustPolicy, **options: Any) -> Verdict:
    return verify_image(image, trust, VerifyOptions(now=NOW, **options))


def no_hashing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every disk digest; the tests below assert none happens."""
    hashed: list[str] = []
    real = imagefactory.digest.hash_file

    def spy(path: Any, *args: Any, **kwargs: Any) -> Any:
        hashed.append(os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr("imagefactory.verify.pipeline.hash_file", spy)
    return hashed


def test_threshold_counts_keys_not_names(tmp_path: Path, keys: dict[str, Path]) -> None:
    """One key listed under two names does not meet a threshold of two."""
    trust = policy(
        tmp_path,
        {
            "atlas": vo_rules(
                key_signer("atlas-vo", keys["atlas"]),
                key_signer("atlas-again", keys["atlas"]),
                threshold=2,
            )
        },
    )
    image = make_image(tmp_path)
    key_sign(image, keys["atlas"])
    verdict = verify(image, trust)
    assert "threshold-not-met" in verdict.codes, verdict.render()


def test_endorser_key_trusted_only_for_another_vo(tmp_path: Path, keys: dict[str, Path]) -> None:
    """The labels name the CMS key as endorser; it signed, but is trusted only for CMS."""
    cms_keyid = load_signer(str(keys["cms"])).public_key.keyid
    trust = policy(
        tmp_path,
        {
            "atlas": vo_rules(key_signer("atlas-vo", keys["atlas"])),
            "cms": vo_rules(key_signer("cms-vo", keys["cms"])),
        },
    )
    image = make_image(tmp_path, edit=lambda labels: labels.update(endorser={"keyid": cms_keyid}))
    key_sign(image, keys["atlas"])
    key_sign(image, keys["cms"])
    verdict = verify(image, trust)
    assert "endorser-mismatch" in verdict.codes, verdict.render()


def test_unsigned_huge_sparse_disk_is_not_hashed(
    tmp_path: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    trust = policy(tmp_path, {"atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]))})
    image = make_image(tmp_path)
    with (image / RAW).open("r+b") as disk:
        disk.truncate(100 << 30)  # 100 GiB, sparse (under the format step's cap)
    hashed = no_hashing(monkeypatch)
    verdict = verify(image, trust)
    assert "unsigned" in verdict.codes, verdict.render()
    assert hashed == []


def test_signed_disk_grown_is_refused_by_size_before_hashing(
    tmp_path: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    trust = policy(tmp_path, {"atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]))})
    image = make_image(tmp_path)
    key_sign(image, keys["atlas"])
    with (image / RAW).open("r+b") as disk:
        disk.truncate(1 << 30)
    hashed = no_hashing(monkeypatch)
    verdict = verify(image, trust)
    assert verdict.steps[-1] == "size"
    assert "labels-digest-mismatch" in verdict.codes, verdict.render()
    assert hashed == []


def test_disk_over_the_size_cap_is_refused_before_hashing(
    tmp_path: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    trust = load_policy(
        write_policy(
            tmp_path / "site.yaml",
            {"atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]))},
            max_virtual_size="1G",
        )
    )
    image = make_image(tmp_path)
    key_sign(image, keys["atlas"])
    with (image / RAW).open("r+b") as disk:
        disk.truncate(2 << 30)
    hashed = no_hashing(monkeypatch)
    verdict = verify(image, trust)
    assert not verdict.allowed
    assert hashed == []


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_deeply_nested_labels_are_a_layout_denial(tmp_path: Path, keys: dict[str, Path]) -> None:
    trust = policy(tmp_path, {"atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]))})
    image = make_image(tmp_path)
    (image / "labels.json").write_bytes(b'{"a":' + _nested(200_000) + b"}")
    verdict = verify(image, trust)
    assert verdict.codes == ["layout"], verdict.render()


def test_deeply_nested_envelope_is_a_denial(tmp_path: Path, keys: dict[str, Path]) -> None:
    trust = policy(tmp_path, {"atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]))})
    image = make_image(tmp_path)
    (image / "x.dsse.json").write_bytes(_nested(200_000))
    verdict = verify(image, trust)
    assert verdict.codes == ["envelope-invalid"], verdict.render()


@pytest.mark.parametrize(
    "edit",
    [
        lambda e: e.update(payload=5),
        lambda e: e.update(signatures="x"),
        lambda e: e.update(signatures=[5]),
        lambda e: e.update(payloadType=["x"]),
    ],
    ids=["payload-int", "signatures-str", "signature-int", "payload-type-list"],
)
def test_envelope_field_of_the_wrong_type_is_a_denial(
    tmp_path: Path, keys: dict[str, Path], edit: Any
) -> None:
    trust = policy(tmp_path, {"atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]))})
    image = make_image(tmp_path)
    attestation = key_sign(image, keys["atlas"])
    envelope = json.loads(attestation.read_text())
    edit(envelope)
    attestation.write_text(json.dumps(envelope))
    verdict = verify(image, trust)
    assert not verdict.allowed
    assert verdict.codes == ["envelope-invalid"], verdict.render()


def test_signed_labels_of_the_wrong_type_are_a_denial(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    """Validly signed labels whose vo is a string and expiry a number: denied, not a crash."""
    trust = policy(tmp_path, {"atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]))})
    image = make_image(tmp_path)
    labels = read_labels(image)
    labels["vo"] = "atlas"
    labels["image"]["expires"] = 5
    write_labels(image, labels)
    with pytest.raises(LabelError):  # sign checks the schema first
        sign_with_key(image, load_signer(str(keys["atlas"])))
    # Signed anyway, by other means: verify denies it cleanly.
    payload = statement_bytes(image_subjects(load_image_dir(image)), labels)
    envelope = sign_envelope(payload, PAYLOAD_TYPE, load_signer(str(keys["atlas"])))
    (image / "forced.dsse.json").write_text(json.dumps(envelope))
    verdict = verify(image, trust)
    assert not verdict.allowed, verdict.render()
    assert verdict.steps[-1] in ("authority", "labels"), verdict.render()


def test_fifo_in_place_of_the_disk_does_not_hang(tmp_path: Path, keys: dict[str, Path]) -> None:
    trust = policy(tmp_path, {"atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]))})
    image = make_image(tmp_path)
    key_sign(image, keys["atlas"])
    (image / RAW).unlink()
    os.mkfifo(image / RAW)
    result: list[Verdict] = []
    worker = threading.Thread(target=lambda: result.append(verify(image, trust)), daemon=True)
    worker.start()
    worker.join(60)
    if worker.is_alive():  # unblock the hung reader so the test run can end
        fd = os.open(image / RAW, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("verify blocked on a FIFO")
    assert not result[0].allowed


def test_verify_through_a_descriptor_checks_the_open_file(
    tmp_path: Path, keys: dict[str, Path]
) -> None:
    """The path is swapped after the gate opened the disk: verify reads the descriptor."""
    trust = policy(tmp_path, {"atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]))})
    image = make_image(tmp_path)
    key_sign(image, keys["atlas"])
    fd = os.open(image / RAW, os.O_RDONLY)
    try:
        (image / RAW).rename(tmp_path / "moved.raw")
        (image / RAW).write_bytes(b"\0" * 65536)
        assert not verify(image, trust).allowed
        verdict = verify(image, trust, disk_fd=fd)
        assert verdict.allowed, verdict.render()
    finally:
        os.close(fd)


def test_envelope_payload_swapped_keeps_size_check(tmp_path: Path, keys: dict[str, Path]) -> None:
    """The size check reads only the signed payload: labels.json's claim does not count."""
    trust = policy(tmp_path, {"atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]))})
    image = make_image(tmp_path)
    key_sign(image, keys["atlas"])
    with (image / RAW).open("ab") as disk:
        disk.write(b"\0" * 512)
    labels = read_labels(image)
    labels["disk"]["size"] += 512
    write_labels(image, labels)
    verdict = verify(image, trust)
    assert verdict.steps[-1] == "size", verdict.render()
    envelope = json.loads(next(image.glob("*.dsse.json")).read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["predicate"]["disk"]["size"] == 65536


def test_cache_write_failure_keeps_the_allow(
    tmp_path: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full or read-only cache file system costs speed, never the verdict."""
    trust = policy(tmp_path, {"atlas": vo_rules(key_signer("atlas-vo", keys["atlas"]))})
    image = make_image(tmp_path)
    key_sign(image, keys["atlas"])
    cache = VerifiedCache(tmp_path / "cache")

    def full(*args: Any, **kwargs: Any) -> Any:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("imagefactory.verify.cache.atomic_write", full)
    verdict = verify_cached(image, trust, cache, VerifyOptions(now=NOW))
    assert verdict.allowed, verdict.render()
    assert not verdict.cached


def test_oversized_or_fifo_key_files_are_clear_errors(tmp_path: Path) -> None:
    from imagefactory.attest.keys import KeyFileError, load_public_key

    big = tmp_path / "big.pub"
    with big.open("wb") as stream:
        stream.truncate(64 * 1024 * 1024)
    with pytest.raises(KeyFileError, match="larger than"):
        load_public_key(big)
    fifo = tmp_path / "fifo.pub"
    os.mkfifo(fifo)
    with pytest.raises(KeyFileError, match="not a regular file"):
        load_public_key(fifo)


def test_terminal_escapes_in_names_are_printed_escaped(tmp_path: Path) -> None:
    """An upload named to clear the screen and retitle the terminal: shown, not obeyed."""
    trust = policy(tmp_path, {"atlas": vo_rules(key_signer("atlas-vo", new_key(tmp_path, "k")))})
    image = make_image(tmp_path, "evil\x1b[2J\x1b]0;pwned\x07\u202e")
    text = verify(image, trust).render()
    assert "unsigned" in text
    for raw in ("\x1b", "\x07", "\u202e"):
        assert raw not in text
    assert "\\x1b[2J" in text
