"""THREATS.md "Transport": pull over HTTP from a static server on 127.0.0.1 that misbehaves."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagefactory.errors import CatalogError
from imagefactory.fsutil import WRITEBACK_STEP
from imagefactory.store.pull import PullResult
from imagefactory.store.transport import CHUNK, Source, download
from tests.catalog.world import World, make_world
from tests.conftest import require_or_skip
from tests.store.httpserver import Server

KEY = "atlas/atlas-wn/1.0"
DISK = "atlas-wn-debian12-1.0.raw"
SIZE = 1024 * 1024  # big enough to span chunks


@pytest.fixture
def world(tmp_path: Path) -> World:
    world = make_world(tmp_path)
    world.publish(world.image(disk=os.urandom(SIZE)))
    return world


@pytest.fixture
def server(world: World) -> Iterator[Server]:
    server = Server(world.catalog.directory).start()
    yield server
    server.stop()


def _event(result: PullResult, image: str = KEY) -> str:
    return next(e.code for e in result.events if e.image == image)


def _partials(world: World) -> list[Path]:
    return list((world.store / ".pull" / "partial").iterdir())


def test_pull_over_http_installs_the_image(world: World, server: Server) -> None:
    result = world.pull(server.url)
    assert result.by_action("installed") == [KEY]
    assert world.installed() == [KEY]


def test_endless_body_is_cut_at_the_signed_length(world: World, server: Server) -> None:
    server.faults[DISK] = ("endless",)
    result = world.pull(server.url)
    assert _event(result) == "transport-too-long"
    assert world.installed() == []
    assert _partials(world) == []
    assert server.bytes_sent < SIZE + 4 * 1024 * 1024


def test_truncated_download_is_refused_then_resumed(world: World, server: Server) -> None:
    server.faults[DISK] = ("truncate", SIZE // 2)
    first = world.pull(server.url)
    assert _event(first) == "transport-truncated"
    assert world.installed() == []
    [part] = _partials(world)
    assert part.stat().st_size == SIZE // 2
    second = world.pull(server.url)
    assert world.installed() == [KEY]
    assert (f"/images/{KEY}/{DISK}", f"bytes={SIZE // 2}-") in server.requests
    assert second.image_bytes < SIZE


def test_stalled_download_times_out(world: World, server: Server) -> None:
    # The timeout leaves room for the metadata requests before it on a loaded
    # machine (at 0.3 s one of them could time out first); the stall is longer.
    server.faults[DISK] = ("stall", 4096, 8.0)
    result = world.pull(server.url, timeout=2.0)
    assert _event(result) == "transport-timeout"
    assert world.installed() == []


def test_stalled_metadata_times_out(world: World, server: Server) -> None:
    server.faults["timestamp.json"] = ("stall", 10, 8.0)
    with pytest.raises(CatalogError) as err:
        world.pull(server.url, timeout=2.0)
    assert err.value.code == "transport-timeout"


def test_redirect_to_another_host_is_refused(world: World, server: Server) -> None:
    other = server.url.replace("127.0.0.1", "localhost")
    server.faults[DISK] = ("redirect", f"{other}/images/{KEY}/{DISK}")
    result = world.pull(server.url)
    assert _event(result) == "transport-redirect"
    assert world.installed() == []


def test_redirect_to_file_scheme_is_refused(world: World, server: Server) -> None:
    server.faults[DISK] = ("redirect", "file:///etc/shadow")
    result = world.pull(server.url)
    assert _event(result) == "transport-redirect"


def test_redirect_on_the_same_host_is_followed(world: World, server: Server) -> None:
    real = f"/images/{KEY}/{DISK}"
    os.link(world.catalog.directory / real.lstrip("/"), world.catalog.directory / "moved.raw")
    server.faults[DISK] = ("redirect", "/moved.raw")
    world.pull(server.url)
    assert world.installed() == [KEY]


def test_digest_mismatch_is_refused_and_discarded(world: World, server: Server) -> None:
    disk = world.catalog.directory / "images" / KEY / DISK
    data = bytearray(disk.read_bytes())
    data[100] ^= 1
    disk.write_bytes(bytes(data))
    result = world.pull(server.url)
    assert _event(result) == "transport-digest-mismatch"
    assert world.installed() == []
    assert _partials(world) == []


def test_right_digest_under_another_images_name_is_refused(world: World, server: Server) -> None:
    # Another signed image's disk served at this image's place: a valid disk, the wrong one.
    world.publish(world.image("atlas-other", disk=os.urandom(SIZE)))
    ours = world.catalog.directory / "images" / KEY / DISK
    theirs = world.catalog.directory / "images/atlas/atlas-other/1.0" / DISK
    ours.unlink()
    os.link(theirs, ours)
    result = world.pull(server.url)
    assert _event(result) == "transport-digest-mismatch"
    assert world.installed() == ["atlas/atlas-other/1.0"]


def test_a_missing_disk_is_reported(world: World, server: Server) -> None:
    server.faults[DISK] = ("status", 404)
    result = world.pull(server.url)
    assert _event(result) == "transport-not-found"


def test_a_download_leaves_the_page_cache_as_it_reaches_the_disk(tmp_path: Path) -> None:
    fincore = shutil.which("fincore")
    require_or_skip(fincore is not None, "fincore (util-linux) is not installed")
    assert fincore is not None
    served = tmp_path / "served"
    served.mkdir()
    step = b"".join(i.to_bytes(4, "big") * (CHUNK // 4) for i in range(WRITEBACK_STEP // CHUNK))
    size = 5 * WRITEBACK_STEP
    with (served / "disk.raw").open("wb") as out:
        for _ in range(size // len(step)):
            out.write(step)
    sha = hashlib.sha256(step * (size // len(step))).hexdigest()
    dest = tmp_path / "disk.part"
    got = download(Source.parse(str(served)), "disk.raw", dest, size, hashes={"sha256": sha})
    assert got.hexdigests["sha256"] == sha
    resident = subprocess.run(
        [fincore, "--bytes", "--noheadings", "--output", "RES", str(dest)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # Only the last steps (not yet waited for when the file ended) stay cached.
    assert int(resident) <= 2 * WRITEBACK_STEP, resident
