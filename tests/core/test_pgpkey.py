"""OpenPGP key files read without gpg: the fingerprint is gpg's, anything else is refused."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagefactory.pgpkey import KeyFileError, dearmor, packets, read_public_key
from tests.fakes.aptrepo import SigningKey, make_key


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SigningKey, SigningKey]]:
    base = tmp_path_factory.mktemp("keys")
    one, two = make_key(base / "one"), make_key(base / "two", "two")
    yield one, two
    one.stop()
    two.stop()


def test_armored_and_binary_give_gpgs_fingerprint_and_the_same_packets(
    keys: tuple[SigningKey, SigningKey],
) -> None:
    key = keys[0]
    armored, binary = read_public_key(key.export()), read_public_key(key.export(armor=False))
    assert armored.fingerprint == binary.fingerprint == key.fingerprint
    assert armored.binary == binary.binary == key.export(armor=False)


def test_a_subkey_is_listed(keys: tuple[SigningKey, SigningKey], tmp_path: Path) -> None:
    key = keys[1]
    subprocess.run(
        [
            *key.gpg("--pinentry-mode", "loopback", "--passphrase", ""),
            "--quick-add-key",
            key.fingerprint,
            "ed25519",
            "sign",
            "never",
        ],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        key.gpg("--with-colons", "--list-keys", key.fingerprint),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fprs = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")]
    parsed = read_public_key(key.export())
    assert parsed.fingerprint == fprs[0]
    assert parsed.subkeys == tuple(fprs[1:])


def test_two_keys_in_one_file_are_refused(keys: tuple[SigningKey, SigningKey]) -> None:
    both = keys[0].export(armor=False) + keys[1].export(armor=False)
    with pytest.raises(KeyFileError, match="expected exactly one public key, found 2"):
        read_public_key(both)


def test_a_secret_key_is_refused(keys: tuple[SigningKey, SigningKey]) -> None:
    key = keys[0]
    secret = subprocess.run(
        [
            *key.gpg("--pinentry-mode", "loopback", "--passphrase", ""),
            "--export-secret-keys",
            key.fingerprint,
        ],
        check=True,
        capture_output=True,
    ).stdout
    with pytest.raises(KeyFileError, match="secret key"):
        read_public_key(secret)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"hello", "not an OpenPGP packet header"),
        (b"\x99\x00\xff\x04", "cut short"),
        (
            b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!\n-----END PGP PUBLIC KEY BLOCK-----\n",
            "not valid base64",
        ),
        (b"\xc6\x03\x03ab", "version 4"),  # a v3 key packet
        (b"\xcd\x01x", "start with a public key packet"),  # a user ID first
        (b"\xc1\x01x", "tag 1"),  # a public-key encrypted session key
    ],
)
def test_what_is_not_one_public_key_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(KeyFileError, match=reason):
        read_public_key(data)


def test_armor_headers_and_checksum_are_skipped(keys: tuple[SigningKey, SigningKey]) -> None:
    binary = keys[0].export(armor=False)
    body = base64.b64encode(binary).decode()
    text = (
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: a comment\n\n"
        + "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        + "\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n"
    )
    assert dearmor(text.encode()) == binary
    assert next(tag for tag, _ in packets(binary)) == 6
