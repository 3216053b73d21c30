"""pull hands verify the digest it computed while the disk streamed in: no second read.

The hand-off holds only for the very file that was hashed, unwritten since:
a staged disk changed after its download is read and hashed by verify again
(and then refused), never judged by the streamed digest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import imagefactory.digest
import imagefactory.store.transport
from tests.catalog.world import World, make_world

KEY = "atlas/atlas-wn/1.0"


@pytest.fixture
def world(tmp_path: Path) -> World:
    return make_world(tmp_path)


def _verify_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files verify digests itself."""
    names: list[str] = []
    real = imagefactory.digest.hash_file

    def spy(path: Any, *args: Any, **kwargs: Any) -> Any:
        names.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr("imagefactory.verify.pipeline.hash_file", spy)
    return names


def test_verify_takes_the_streamed_digest_of_the_disk(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.publish(world.image())
    hashed = _verify_reads(monkeypatch)
    result = world.pull()
    assert result.by_action("installed") == [KEY], result.to_dict()
    assert hashed, "verify digested none of the small subjects"
    assert not [n for n in hashed if n.endswith(".raw")], hashed


def test_over_http_too_the_disk_is_read_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real HTTP server on 127.0.0.1, a resumed download: still one read of the disk."""
    from tests.store.httpserver import Server

    world.publish(world.image())
    part_dir = world.store / ".pull" / "partial"
    real = imagefactory.store.transport.download
    cut: list[str] = []

    def first_half_only(source: Any, relpath: str, dest: Path, length: int, **kw: Any) -> Any:
        if relpath.endswith(".raw") and not cut:
            cut.append(relpath)  # a transfer that stopped half-way: the next pull resumes
            dest.parent.mkdir(parents=True, exist_ok=True)
            whole = (world.catalog.directory / relpath).read_bytes()
            dest.write_bytes(whole[: length // 2])
        return real(source, relpath, dest, length, **kw)

    monkeypatch.setattr("imagefactory.store.pull.download", first_half_only)
    hashed = _verify_reads(monkeypatch)
    server = Server(world.catalog.directory).start()
    try:
        result = world.pull(server.url)
    finally:
        server.stop()
    assert cut, "the disk was not downloaded"
    assert result.by_action("installed") == [KEY], result.to_dict()
    assert not [n for n in hashed if n.endswith(".raw")], hashed
    assert not list(part_dir.iterdir())


def test_a_disk_changed_after_its_download_is_hashed_again_and_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same size, other bytes, written after the streamed hash: the digest is not handed on."""
    world.publish(world.image())
    real = imagefactory.store.transport.download

    def then_overwrite(source: Any, relpath: str, dest: Path, *args: Any, **kwargs: Any) -> Any:
        got = real(source, relpath, dest, *args, **kwargs)
        if relpath.endswith(".raw"):
            fd = os.open(dest, os.O_WRONLY)
            try:
                os.pwrite(fd, b"\xff" * 512, 0)
            finally:
                os.close(fd)
        return got

    monkeypatch.setattr("imagefactory.store.pull.download", then_overwrite)
    hashed = _verify_reads(monkeypatch)
    result = world.pull()
    assert world.installed() == []
    [event] = [e for e in result.events if e.image == KEY]
    assert event.code == "verify-denied", result.to_dict()
    assert "labels-digest-mismatch" in event.message or "sha256" in event.message
    assert [n for n in hashed if n.endswith(".raw")], "verify did not read the changed disk"


def test_the_download_reports_the_digests_and_identity_of_what_it_wrote(tmp_path: Path) -> None:
    import hashlib

    from imagefactory.store.transport import Source, download

    data = os.urandom(3 * (1 << 20) + 5)
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "disk.raw").write_bytes(data)
    dest = tmp_path / "disk.part"
    want = {"sha256": hashlib.sha256(data).hexdigest(), "sha512": hashlib.sha512(data).hexdigest()}
    got = download(
        Source.parse(str(tmp_path / "catalog")), "disk.raw", dest, len(data), hashes=want
    )
    assert got.hexdigests == want
    st = os.stat(dest)
    assert (got.st.st_ino, got.st.st_size, got.st.st_mtime_ns) == (
        st.st_ino,
        len(data),
        st.st_mtime_ns,
    )
    assert dest.read_bytes() == data
