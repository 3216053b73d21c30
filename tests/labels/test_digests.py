"""disk_digests hashes on two threads: the result must be the plain digests, in order."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from imagefactory.digest import CHUNK
from imagefactory.labels.make import disk_digests


def test_disk_digests_match_hashlib_over_several_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * CHUNK + 12345)
    path = tmp_path / "disk.raw"
    path.write_bytes(data)
    assert disk_digests(path) == (
        hashlib.sha256(data).hexdigest(),
        hashlib.sha512(data).hexdigest(),
    )


def test_disk_digests_of_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.raw"
    path.write_bytes(b"")
    assert disk_digests(path) == (hashlib.sha256().hexdigest(), hashlib.sha512().hexdigest())
