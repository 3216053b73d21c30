"""Facts read from the guest: OS, architecture, kernel, packages, patch date; all capped."""

from __future__ import annotations

import gzip

from imagefactory.guest.facts import (
    changelog_date,
    installed_packages,
    manifest_digest,
    os_facts,
    package_facts,
)
from imagefactory.guest.view import MAX_STRING, cap_text, guest_glob
from tests.fakes.guest import FakeGuest, unhardened_tree


def test_os_facts_come_from_the_image() -> None:
    facts = os_facts(unhardened_tree())
    assert facts.to_dict() == {
        "distro": "debian",
        "version": "12",
        "codename": "bookworm",
        "pretty_name": "Debian GNU/Linux 12 (bookworm)",
        "arch": "x86_64",
        "kernel": "6.1.0-28-amd64",
        "contextualisation": "none",
    }


def test_arch_is_read_from_the_elf_header_not_from_a_name() -> None:
    g = unhardened_tree()
    head = bytearray(g.nodes["/bin/sh"].data)
    head[18:20] = b"\x03\x00"  # EM_386
    g.add("/bin/sh", bytes(head), 0o755)
    assert os_facts(g).arch == "i386"
    g.add("/bin/sh", b"#!/bin/hostile\n", 0o755)
    assert os_facts(g).arch == "unknown"


def test_cloud_init_is_detected() -> None:
    g = unhardened_tree()
    g.add("/usr/bin/cloud-init", b"#!", 0o755)
    assert os_facts(g).contextualisation == "cloud-init"


def test_installed_packages_only_and_sorted() -> None:
    packages, malformed = installed_packages(unhardened_tree())
    assert [(p.name, p.version, p.arch, p.source) for p in packages] == [
        ("bash", "5.2.15-2+b7", "amd64", "bash"),
        ("libc6", "2.36-9+deb12u9", "amd64", "glibc"),
    ]
    assert malformed == 0


def test_hostile_package_entries_are_counted_not_labelled() -> None:
    g = FakeGuest()
    g.add(
        "/var/lib/dpkg/status",
        "Package: evil$(reboot)\nStatus: install ok installed\nArchitecture: amd64\n"
        "Version: 1\n\nPackage: ok\nStatus: install ok installed\nArchitecture: amd64\n"
        f"Version: {'9' * 500}\n\nPackage: good\nStatus: install ok installed\n"
        "Architecture: all\nVersion: 1.0\n",
    )
    packages, malformed = installed_packages(g)
    assert [p.name for p in packages] == ["good"]
    assert malformed == 2


def test_manifest_digest_depends_on_content_only() -> None:
    packages, _ = installed_packages(unhardened_tree())
    assert len(manifest_digest(packages)) == 64
    assert manifest_digest(packages) != manifest_digest(packages[:1])


def _changelog(date: str) -> bytes:
    text = (
        f"bash (5.2.15-2) unstable; urgency=medium\n\n  * fix\n\n -- Dev <d@example.org>  {date}\n"
    )
    return gzip.compress(text.encode() + b"older entries\n" * 10)


def test_patch_date_is_the_newest_changelog_entry() -> None:
    g = unhardened_tree()
    g.add("/usr/share/doc/bash/changelog.Debian.gz", _changelog("Tue, 05 Nov 2024 10:00:00 +0100"))
    g.add("/usr/share/doc/glibc/changelog.Debian.gz", _changelog("Sat, 16 Nov 2026 23:30:00 -0500"))
    facts = package_facts(g)
    assert facts.patch_date == "2026-11-17"  # the newest, in UTC
    assert facts.summary()["count"] == 2


def test_a_broken_changelog_gives_no_date() -> None:
    g = unhardened_tree()
    g.add("/usr/share/doc/bash/changelog.Debian.gz", b"\x1f\x8bnot really gzip")
    packages, _ = installed_packages(g)
    assert changelog_date(g, packages[0]) is None
    assert package_facts(g).patch_date is None


def test_guest_strings_are_capped_and_escaped() -> None:
    assert cap_text("a\x1b[31mred\nx") == "a\\x1b[31mred\\nx"
    assert len(cap_text("x" * 10_000)) == MAX_STRING
    g = FakeGuest()
    g.add("/etc/os-release", "ID=" + "d" * 5000 + "\nVERSION_ID=\x1b]0;pwned\x07\n")
    facts = os_facts(g)
    assert len(facts.distro) <= 128
    assert "\x1b" not in facts.version


def test_reads_are_capped() -> None:
    g = FakeGuest()
    g.add("/big", b"x" * 5000)
    assert g.read("/big", 100) == b"x" * 100


def test_guest_glob_matches_per_component() -> None:
    g = unhardened_tree()
    g.add("/home/a/.ssh/authorized_keys", "k")
    g.add("/home/b/.ssh/other", "k")
    assert guest_glob(g, "/home/*/.ssh/authorized_keys") == ["/home/a/.ssh/authorized_keys"]
    assert guest_glob(g, "/nope/*") == []
