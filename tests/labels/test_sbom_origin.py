"""The SBOM says where each package came from: the archive, a named repository, or not known.

Matched by name, version and architecture in real ``Packages`` texts parsed by
:class:`~imagefactory.packageindex.PackageIndex`, as the build parses the
indexes it verified; the real signed repository's build is checked in
tests/integration/test_repository_real.py.
"""

from __future__ import annotations

import datetime as dt
import json

from packageurl import PackageURL

from imagefactory.aptrepo import VerifiedRepository, origin_sources
from imagefactory.guest.facts import OsFacts, Package
from imagefactory.packageindex import PackageIndex
from imagefactory.pgpkey import PublicKey
from imagefactory.recipe.model import Repository
from imagefactory.sbom import (
    AMBIGUOUS,
    ARCHIVE,
    UNKNOWN,
    Origin,
    make_sbom,
    package_origins,
    unverified_repository_packages,
)

FACTS = OsFacts("debian", "12", "bookworm", "Debian 12", "x86_64", "6.1.0-28-amd64", "none")
URL = "http://127.0.0.1:8080/cvmfs/debian"


def stanza(name: str, version: str, arch: str) -> str:
    return (
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\n"
        "Description: one line\n more\n .\n and more\n\n"
    )


def index(*stanzas: str) -> PackageIndex:
    found = PackageIndex()
    found.add("".join(stanzas), "test")
    return found


def verified(name: str, url: str, text: str) -> VerifiedRepository:
    """A repository as verify_repository returns it: its index texts by URL."""
    repository = Repository(name, url, ("stable",), ("main",), "0" * 40, None)
    return VerifiedRepository(
        repository,
        PublicKey(b"", "0" * 40),
        indexes={f"{url}/dists/stable/main/binary-amd64/Packages": text},
    )


ARCHIVE_INDEX = index(
    stanza("libc6", "2.36-9", "amd64"),
    stanza("adduser", "3.134", "all"),
    stanza("fuse3", "3.14.0-4", "amd64"),
    stanza("cvmfs", "2.10.0-1", "amd64"),  # the archive has an older cvmfs of its own
)
REPO_TEXT = stanza("cvmfs", "2.11.5~1", "amd64") + stanza("fuse3", "3.14.0-4", "amd64")
SOURCES = origin_sources(ARCHIVE_INDEX, [verified("cvmfs", URL, REPO_TEXT)])

INSTALLED = [
    Package("libc6", "2.36-9", "amd64", "glibc"),
    Package("adduser", "3.134", "all", "adduser"),
    Package("cvmfs", "2.11.5~1", "amd64", "cvmfs"),
    Package("fuse3", "3.14.0-4", "amd64", "fuse3"),  # in both, the very same package
    Package("dkms-thing", "1.0", "amd64", "dkms-thing"),  # in no verified index
]


def test_each_package_is_matched_by_name_version_and_architecture() -> None:
    origins = package_origins(INSTALLED, SOURCES)
    assert origins == {
        "libc6": Origin(ARCHIVE),
        "adduser": Origin(ARCHIVE),
        "cvmfs": Origin("repository:cvmfs", URL),
        "fuse3": Origin(AMBIGUOUS, candidates=("archive", "repository:cvmfs")),
        "dkms-thing": Origin(UNKNOWN),
    }


def test_another_architecture_or_version_is_no_match() -> None:
    origins = package_origins(
        [
            Package("libc6", "2.36-9", "i386", "glibc"),
            Package("adduser", "3.135", "all", "adduser"),
        ],
        SOURCES,
    )
    assert {n: o.origin for n, o in origins.items()} == {"libc6": UNKNOWN, "adduser": UNKNOWN}


def test_sbom_components_carry_their_origin_and_a_repository_purl() -> None:
    text = make_sbom(
        "wn",
        "1",
        FACTS,
        INSTALLED,
        disk_sha256="0" * 64,
        created=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        origins=package_origins(INSTALLED, SOURCES),
    )
    components = {c["name"]: c for c in json.loads(text)["components"]}
    props = {
        name: {p["name"]: p["value"] for p in c.get("properties", [])}
        for name, c in components.items()
    }
    assert props["libc6"] == {"imagefactory:origin": "archive"}
    assert props["cvmfs"] == {"imagefactory:origin": "repository:cvmfs"}
    assert props["fuse3"] == {
        "imagefactory:origin": "ambiguous",
        "imagefactory:origin-candidates": "archive, repository:cvmfs",
    }
    assert props["dkms-thing"] == {"imagefactory:origin": "unknown"}
    purl = PackageURL.from_string(components["cvmfs"]["purl"])
    assert purl.qualifiers == {"arch": "amd64", "distro": "debian-12", "repository_url": URL}
    assert components["cvmfs"]["bom-ref"] == components["cvmfs"]["purl"]
    for name in ("libc6", "fuse3", "dkms-thing"):  # the archive's: the distro qualifier says so
        assert "repository_url" not in PackageURL.from_string(components[name]["purl"]).qualifiers


def test_without_origins_the_sbom_says_nothing_about_them() -> None:
    text = make_sbom(
        "wn", "1", FACTS, INSTALLED, disk_sha256="0" * 64, created=dt.datetime.now(dt.UTC)
    )
    for component in json.loads(text)["components"]:
        assert "properties" not in component
        assert "repository_url" not in component["purl"]


def test_a_repository_package_in_a_version_never_verified_is_named() -> None:
    """The chroot's apt got a newer Release than the host verified: a cvmfs it never saw."""
    installed = [*INSTALLED, Package("cvmfs-config", "9.9", "all", "cvmfs-config")]
    installed[2] = Package("cvmfs", "2.11.6~1", "amd64", "cvmfs")
    origins = package_origins(installed, SOURCES)
    assert unverified_repository_packages(installed, origins, SOURCES) == [
        "cvmfs 2.11.6~1 (amd64), which the verified indexes of repository:cvmfs do not list"
    ]
    # A package only the archive knows, or nobody, is reported as unknown, not refused.
    assert origins["dkms-thing"].origin == UNKNOWN
    assert (
        unverified_repository_packages(INSTALLED, package_origins(INSTALLED, SOURCES), SOURCES)
        == []
    )
