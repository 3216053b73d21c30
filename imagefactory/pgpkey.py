"""An OpenPGP public key file, read without running gpg: its packets and fingerprint.

A recipe pins a third-party apt repository's signing key by its v4
fingerprint (40 hex digits). To check a key file against that pin at
``validate`` time (which runs nothing), this module reads the file itself:
ASCII armor (``-----BEGIN PGP PUBLIC KEY BLOCK-----``) or binary, split into
packets (RFC 4880 section 4.2), and the fingerprint of the primary key packet
is the SHA-1 of ``0x99``, its two-byte length and its body (section 12.2).

Only what a signing key for apt needs is accepted: one primary public key
(version 4) with its user IDs, signatures and subkeys. A file with two
primary keys, a secret key, a v3/v5/v6 key or anything not understood is
refused, naming it: the keyring built from the file must hold exactly the
pinned key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

#: Packet tags (RFC 4880 section 4.3) a public key file may hold.
TAG_SIGNATURE = 2
TAG_SECRET_KEY = 5
TAG_PUBLIC_KEY = 6
TAG_SECRET_SUBKEY = 7
TAG_MARKER = 10
TAG_TRUST = 12
TAG_USER_ID = 13
TAG_PUBLIC_SUBKEY = 14
TAG_USER_ATTRIBUTE = 17
ALLOWED_TAGS = {
    TAG_SIGNATURE,
    TAG_PUBLIC_KEY,
    TAG_MARKER,
    TAG_TRUST,
    TAG_USER_ID,
    TAG_PUBLIC_SUBKEY,
    TAG_USER_ATTRIBUTE,
}
FINGERPRINT_PATTERN = r"^[0-9A-Fa-f]{40}$"
_ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_ARMOR_END = "-----END PGP PUBLIC KEY BLOCK-----"


class KeyFileError(ValueError):
    """A key file that is not one v4 OpenPGP public key; the message says why."""


@dataclass(frozen=True)
class PublicKey:
    """One OpenPGP public key: its binary packets and its primary key's fingerprint."""

    #: The key as binary OpenPGP packets (what ``gpgv --keyring`` and apt's Signed-By read).
    binary: bytes
    #: The v4 fingerprint of the primary key, 40 upper-case hex digits.
    fingerprint: str
    #: The fingerprints of its subkeys (a repository may sign with one).
    subkeys: tuple[str, ...] = ()


def normalise_fingerprint(text: str) -> str:
    """A fingerprint as recorded everywhere: upper-case hex without spaces."""
    return text.upper()


def dearmor(data: bytes) -> bytes:
    """The binary packets of an ASCII-armored key block (binary data is returned as is)."""
    if not data.lstrip().startswith(b"-----BEGIN"):
        return data
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise KeyFileError("the armored key block has non-ASCII characters") from exc
    lines = [line.strip() for line in text.splitlines()]
    try:
        start = lines.index(_ARMOR_BEGIN)
        end = lines.index(_ARMOR_END, start)
    except ValueError:
        raise KeyFileError(
            f"expected one '{_ARMOR_BEGIN}' ... '{_ARMOR_END}' block (a public key)"
        ) from None
    if any(line.startswith("-----BEGIN") for line in lines[end + 1 :]):
        raise KeyFileError("expected one armored key block, found more")
    body = lines[start + 1 : end]
    # Armor headers ("Comment: ...") end at the first empty line, if any.
    if "" in body and any(":" in line for line in body[: body.index("")]):
        body = body[body.index("") + 1 :]
    payload = [line for line in body if line and not line.startswith("=")]
    try:
        return base64.b64decode("".join(payload), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"the armored key block is not valid base64: {exc}") from exc


def packets(data: bytes) -> list[tuple[int, bytes]]:
    """(tag, body) of every packet; partial or indeterminate lengths are refused."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(data):
        first = data[pos]
        pos += 1
        if not first & 0x80:
            raise KeyFileError(f"byte {pos - 1}: not an OpenPGP packet header")
        if first & 0x40:  # new format
            tag = first & 0x3F
            if pos >= len(data):
                raise KeyFileError("a packet header is cut short")
            octet = data[pos]
            if octet < 192:
                length, pos = octet, pos + 1
            elif octet < 224:
                if pos + 1 >= len(data):
                    raise KeyFileError("a packet header is cut short")
                length, pos = ((octet - 192) << 8) + data[pos + 1] + 192, pos + 2
            elif octet == 255:
                length, pos = int.from_bytes(data[pos + 1 : pos + 5], "big"), pos + 5
            else:
                raise KeyFileError("a packet of partial length (not a key file)")
        else:  # old format
            tag = (first >> 2) & 0x0F
            size = {0: 1, 1: 2, 2: 4}.get(first & 0x03)
            if size is None:
                raise KeyFileError("a packet of indeterminate length (not a key file)")
            length, pos = int.from_bytes(data[pos : pos + size], "big"), pos + size
        if pos + length > len(data):
            raise KeyFileError("a packet is cut short: the key file is truncated")
        out.append((tag, data[pos : pos + length]))
        pos += length
    return out


def _fingerprint(body: bytes) -> str:
    if not body or body[0] != 4:
        version = body[0] if body else "?"
        raise KeyFileError(f"expected a version 4 OpenPGP key, found version {version}")
    digest = hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body, usedforsecurity=False)
    return digest.hexdigest().upper()


def read_public_key(data: bytes) -> PublicKey:
    """The one public key in ``data`` (armored or binary), or :class:`KeyFileError`."""
    binary = dearmor(data)
    found = packets(binary)
    if not found:
        raise KeyFileError("the key file is empty")
    primaries: list[str] = []
    subkeys: list[str] = []
    for tag, body in found:
        if tag in (TAG_SECRET_KEY, TAG_SECRET_SUBKEY):
            raise KeyFileError("the file holds a secret key: pin the public key only")
        if tag not in ALLOWED_TAGS:
            raise KeyFileError(f"an OpenPGP packet of tag {tag}, not part of a public key")
        if tag == TAG_PUBLIC_KEY:
            primaries.append(_fingerprint(body))
        elif tag == TAG_PUBLIC_SUBKEY:
            subkeys.append(_fingerprint(body))
    if found[0][0] != TAG_PUBLIC_KEY:
        raise KeyFileError("expected the file to start with a public key packet")
    if len(primaries) != 1:
        raise KeyFileError(
            f"expected exactly one public key, found {len(primaries)}: " + ", ".join(primaries)
        )
    return PublicKey(binary=binary, fingerprint=primaries[0], subkeys=tuple(subkeys))


def is_fingerprint(text: str) -> bool:
    return re.fullmatch(FINGERPRINT_PATTERN, text) is not None
