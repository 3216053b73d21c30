"""The SBOM says why each package is there: requested, dependency (of what), base, or not."""

from __future__ import annotations

import datetime as dt
import json

from imagefactory.guest.facts import OsFacts, Package, installed_packages
from imagefactory.sbom import make_sbom, package_roles
from tests.fakes.guest import FakeGuest

STATUS = """\
Package: base-files
Status: install ok installed
Priority: required
Essential: yes
Architecture: amd64
Version: 12.4
Depends: libc6 (>= 2.36)

Package: libc6
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 2.36-9

Package: chrony
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 4.3-2
Depends: libc6 (>= 2.34), adduser, timelib:any | libtime2 (>= 1), mail-transport-agent
Pre-Depends: init-system-helpers (>= 1.54~)

Package: init-system-helpers
Status: install ok installed
Priority: optional
Architecture: all
Version: 1.65

Package: adduser
Status: install ok installed
Priority: important
Architecture: all
Version: 3.134

Package: libtime2
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 1

Package: exim4-daemon-light
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 4.96
Provides: mail-transport-agent

Package: open-iscsi
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 2.1.8
Depends: libc6

Package: removed-one
Status: deinstall ok config-files
Architecture: amd64
Version: 1
"""


def _packages() -> list[Package]:
    guest = FakeGuest()
    guest.add("/var/lib/dpkg/status", STATUS)
    packages, malformed = installed_packages(guest)
    assert malformed == 0
    return packages


def test_depends_are_read_with_every_alternative_and_no_qualifiers() -> None:
    chrony = next(p for p in _packages() if p.name == "chrony")
    assert chrony.depends == (
        "libc6",
        "adduser",
        "timelib",
        "libtime2",
        "mail-transport-agent",
        "init-system-helpers",
    )


def test_roles() -> None:
    roles = package_roles(_packages(), {"chrony", "not-installed"})
    summary = {name: (r.role, r.required_by) for name, r in roles.items()}
    assert summary == {
        "chrony": ("requested", ()),
        "libc6": ("dependency", ("chrony",)),
        # requested's dependencies win over the base: the recipe needs it either way
        "adduser": ("dependency", ("chrony",)),
        "libtime2": ("dependency", ("chrony",)),
        "exim4-daemon-light": ("dependency", ("chrony",)),  # through the virtual name
        "init-system-helpers": ("dependency", ("chrony",)),
        "base-files": ("base", ()),
        "open-iscsi": ("unexplained", ()),
    }


def test_sbom_components_carry_their_role() -> None:
    facts = OsFacts("debian", "12", "bookworm", "Debian 12", "x86_64", "6.1.0-28-amd64", "none")
    text = make_sbom(
        "wn",
        "1",
        facts,
        _packages(),
        disk_sha256="0" * 64,
        created=dt.datetime(2026, 12, 1, tzinfo=dt.UTC),
        requested={"chrony"},
    )
    props = {
        c["name"]: {p["name"]: p["value"] for p in c.get("properties", [])}
        for c in json.loads(text)["components"]
    }
    assert props["chrony"] == {"imagefactory:role": "requested"}
    assert props["libc6"] == {
        "imagefactory:role": "dependency",
        "imagefactory:required-by": "chrony",
    }
    assert props["open-iscsi"] == {"imagefactory:role": "unexplained"}
