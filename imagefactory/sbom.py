"""CycloneDX SBOM of the packages installed in an image (read from the image).

One component per installed Debian/Ubuntu package, each with a package URL
(``pkg:deb/<distro>/<name>@<version>?arch=<arch>&distro=<distro>-<version>``),
the image itself as the metadata component. Serial number and timestamp are
derived from the image, so the same image gives the same SBOM bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass

from cyclonedx.model.bom import Bom
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from imagefactory import __version__
from imagefactory.guest.facts import OsFacts, Package
from imagefactory.model.imagedir import SBOM_NAME

SBOM_FILE = SBOM_NAME
SPEC_VERSION = "1.6"
#: Namespace of the SBOM serial numbers (uuid5 of the disk digest).
SBOM_NAMESPACE = uuid.UUID("6f1c3b53-8f55-4f31-9a87-1e0a3c2b7d10")


@dataclass(frozen=True)
class SbomRef:
    file: str
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {
            "file": self.file,
            "format": "CycloneDX",
            "spec_version": SPEC_VERSION,
            "sha256": self.sha256,
        }


def package_url(package: Package, facts: OsFacts) -> PackageURL:
    return PackageURL(
        type="deb",
        namespace=facts.distro,
        name=package.name,
        version=package.version,
        qualifiers={"arch": package.arch, "distro": f"{facts.distro}-{facts.version}"},
    )


def make_sbom(
    name: str,
    version: str,
    facts: OsFacts,
    packages: list[Package],
    *,
    disk_sha256: str,
    created: dt.datetime,
) -> str:
    """The SBOM as CycloneDX 1.6 JSON text."""
    bom = Bom(serial_number=uuid.uuid5(SBOM_NAMESPACE, disk_sha256))
    bom.metadata.timestamp = created
    root = Component(
        name=name,
        version=version,
        type=ComponentType.OPERATING_SYSTEM,
        bom_ref=f"image:{name}@{version}",
        description=f"{facts.pretty_name} ({facts.arch}), built by imagefactory {__version__}",
    )
    bom.metadata.component = root
    components = []
    for package in packages:
        purl = package_url(package, facts)
        components.append(
            Component(
                name=package.name,
                version=package.version,
                type=ComponentType.LIBRARY,
                purl=purl,
                bom_ref=purl.to_string(),
            )
        )
    bom.components.update(components)
    # The image contains every package: the root depends on all of them.
    bom.register_dependency(root, components)
    return str(JsonV1Dot6(bom).output_as_string(indent=2)) + "\n"


def sbom_ref(text: str) -> SbomRef:
    return SbomRef(SBOM_FILE, hashlib.sha256(text.encode("utf-8")).hexdigest())
