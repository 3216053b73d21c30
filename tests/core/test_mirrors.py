"""Mirror selection and the archive consistency preflight, against a real HTTP
server on 127.0.0.1 serving a tiny fake archive."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from imagefactory.errors import ArchiveError, InconsistentArchiveError
from imagefactory.mirrors import (
    AptEntry,
    BaseArchive,
    check_indexes,
    each_at_once,
    fetch_releases,
    indexed_sizes,
    mirror_from_apt,
    parse_apt_sources,
    release_fingerprint,
    resolve_archive,
)
from imagefactory.vocab import Arch, Distro


def _inrelease(files: dict[str, bytes]) -> bytes:
    lines = ["-----BEGIN PGP SIGNED MESSAGE-----", "Hash: SHA512", "", "Origin: Test", "MD5Sum:"]
    lines += [f" 0123 {len(data)} {name}" for name, data in files.items()]
    lines.append("SHA256:")
    lines += [f" abcd {len(data)} {name}" for name, data in files.items()]
    lines.append("-----BEGIN PGP SIGNATURE-----")
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def archive_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A directory served over HTTP on loopback; yields (root, base URL)."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _publish(root: Path, path: str, suite: str, index: bytes, listed: bytes) -> None:
    """A suite whose InRelease lists ``listed`` while the mirror serves ``index``."""
    dists = root / path / "dists" / suite
    (dists / "main" / "binary-amd64").mkdir(parents=True)
    (dists / "main" / "binary-amd64" / "Packages.xz").write_bytes(index)
    (dists / "InRelease").write_bytes(_inrelease({"main/binary-amd64/Packages.xz": listed}))


def _archive(base: str) -> BaseArchive:
    return BaseArchive(
        Distro.DEBIAN, "bookworm", f"{base}/debian", f"{base}/debian-security", "settings"
    )


def _publish_all(root: Path, security_index: bytes, security_listed: bytes) -> None:
    _publish(root, "debian", "bookworm", b"x" * 10, b"x" * 10)
    _publish(root, "debian", "bookworm-updates", b"y" * 5, b"y" * 5)
    _publish(root, "debian-security", "bookworm-security", security_index, security_listed)


def test_consistent_archive_passes_and_is_fingerprinted(archive_root: tuple[Path, str]) -> None:
    root, base = archive_root
    _publish_all(root, b"z" * 7, b"z" * 7)
    archive = _archive(base)
    releases = fetch_releases(archive)
    check_indexes(archive, Arch.X86_64, releases)
    fingerprint = release_fingerprint(releases)
    assert sorted(fingerprint) == ["bookworm", "bookworm-security", "bookworm-updates"]
    assert all(v.startswith("sha256:") for v in fingerprint.values())


def test_index_of_another_size_than_listed_names_the_url(archive_root: tuple[Path, str]) -> None:
    root, base = archive_root
    _publish_all(root, b"z" * 7, b"z" * 9)  # a mirror caught mid-sync
    archive = _archive(base)
    with pytest.raises(ArchiveError, match="do not match its signed InRelease") as info:
        check_indexes(archive, Arch.X86_64, fetch_releases(archive))
    message = str(info.value)
    assert (
        f"{base}/debian-security/dists/bookworm-security/main/binary-amd64/Packages.xz" in message
    )
    assert "7 bytes served, 9 listed in InRelease" in message
    assert "bookworm-updates" not in message
    assert "mirrors:" in (info.value.hint or "")
    assert isinstance(info.value, InconsistentArchiveError)
    assert "bookworm-security/amd64" in info.value.suites


def test_unreachable_archive_is_an_archive_error(archive_root: tuple[Path, str]) -> None:
    _root, base = archive_root  # nothing published: every InRelease is 404
    with pytest.raises(ArchiveError, match="cannot reach the package archive"):
        fetch_releases(_archive(base))


def test_architecture_the_suite_does_not_list_is_not_checked(
    archive_root: tuple[Path, str],
) -> None:
    root, base = archive_root
    _publish_all(root, b"z" * 7, b"z" * 9)
    archive = _archive(base)
    check_indexes(archive, Arch.I386, fetch_releases(archive))  # only amd64 is listed


def test_indexed_sizes_reads_only_the_sha256_list() -> None:
    text = _inrelease({"main/binary-amd64/Packages.xz": b"abc", "main/Contents-all": b"de"})
    assert indexed_sizes(text) == {"main/binary-amd64/Packages.xz": 3, "main/Contents-all": 2}


def test_apt_sources_both_formats() -> None:
    one_line = (
        "deb [signed-by=/k.gpg] http://m.test/debian bookworm main\n"
        "# deb http://old.test/debian bookworm main\n"
        "deb-src http://m.test/debian bookworm main\n"
        "deb file:///srv/local bookworm main\n"
    )
    deb822 = (
        "Types: deb\nURIs: http://m.test/debian-security/\nSuites: bookworm-security\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://off.test/debian\nSuites: bookworm\nEnabled: no\n"
    )
    entries = parse_apt_sources([("a.list", one_line), ("b.sources", deb822)])
    assert entries == [
        AptEntry("http://m.test/debian", "bookworm"),
        AptEntry("http://m.test/debian-security", "bookworm-security"),
    ]
    assert mirror_from_apt(entries, Distro.DEBIAN) == (
        "http://m.test/debian",
        "http://m.test/debian-security",
    )
    assert mirror_from_apt(entries, Distro.UBUNTU) == (None, None)


def test_settings_win_over_apt_and_security_defaults_next_to_the_mirror() -> None:
    apt = [AptEntry("http://apt.test/debian", "bookworm")]
    chosen = resolve_archive(
        Distro.DEBIAN, "bookworm", Arch.X86_64, {"debian": "http://set.test/debian"}, apt
    )
    assert (chosen.mirror, chosen.security_mirror, chosen.origin) == (
        "http://set.test/debian",
        "http://set.test/debian-security",
        "settings",
    )
    from_apt = resolve_archive(Distro.DEBIAN, "bookworm", Arch.X86_64, {}, apt)
    assert (from_apt.mirror, from_apt.origin) == ("http://apt.test/debian", "host apt sources")


def test_every_suite_is_asked_at_once(tmp_path: Path) -> None:
    """The InRelease files and the index HEADs are requested concurrently: the server
    answers none until all three suites' requests are in (a barrier, not a timing)."""
    root = tmp_path / "www"
    _publish_all(root, b"z" * 7, b"z" * 7)
    barrier = threading.Barrier(3, timeout=10)
    seen: list[tuple[str, str]] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def _together(self) -> None:
            seen.append((self.command, self.path))
            barrier.wait()  # BrokenBarrierError (no answer) if the three came one by one

        def do_GET(self) -> None:
            self._together()
            super().do_GET()

        def do_HEAD(self) -> None:
            self._together()
            super().do_HEAD()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        archive = _archive(f"http://127.0.0.1:{server.server_address[1]}")
        releases = fetch_releases(archive)
        check_indexes(archive, Arch.X86_64, releases)
    finally:
        server.shutdown()
        server.server_close()
    assert list(releases) == archive.suites()  # in the archive's order, whatever came first
    assert sorted(method for method, _ in seen) == ["GET"] * 3 + ["HEAD"] * 3


def test_each_at_once_keeps_the_order_and_raises_the_first_error() -> None:
    assert each_at_once(lambda n: n * 2, [3, 1, 2]) == [6, 2, 4]

    def fail(n: int) -> int:
        if n:
            raise ArchiveError(f"suite {n}")
        return n

    with pytest.raises(ArchiveError, match="suite 1"):
        each_at_once(fail, [0, 1, 2])
