"""CycloneDX SBOM of the packages installed in an image (read from the image).

One component per installed Debian/Ubuntu package, each with a package URL
(``pkg:deb/<distro>/<name>@<version>?arch=<arch>&distro=<distro>-<version>``),
the image itself as the metadata component. Serial number and timestamp are
derived from the image, so the same image gives the same SBOM bytes.

Each component says why it is there (``imagefactory:role``) and where it came
from (``imagefactory:origin``: the distribution's archive or a named
third-party repository, matched by name, version and architecture in the
indexes the build verified; a package of a repository also carries the purl
qualifier ``repository_url``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from imagefactory import __version__
from imagefactory.errors import InputError
from imagefactory.guest.facts import OsFacts, Package
from imagefactory.model.imagedir import SBOM_NAME

if TYPE_CHECKING:
    from packageurl import PackageURL

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


#: Why a package is in the image (the SBOM property ``imagefactory:role``).
REQUESTED = "requested"  # named by the recipe, or a boot essential the build adds
DEPENDENCY = "dependency"  # a Depends/Pre-Depends of a requested package
BASE = "base"  # debootstrap's base system: Essential, Priority required/important
UNEXPLAINED = "unexplained"  # none of these: a surprise worth a look
BASE_PRIORITIES = ("required", "important")


@dataclass(frozen=True)
class Role:
    """Why one package is installed: its role, and the packages that pulled it in."""

    role: str
    required_by: tuple[str, ...] = ()


def package_roles(packages: list[Package], requested: set[str]) -> dict[str, Role]:
    """The role of each installed package (by name).

    A requested package is ``requested``; a package its dependencies reach
    (through virtual names too) is a ``dependency`` of the packages that
    depend on it directly; the base system and what it depends on is ``base``;
    everything else is ``unexplained`` (a Recommends that slipped in, or a
    package a DIB element installed on its own).
    """
    by_name = {p.name: p for p in packages}
    providers: dict[str, list[str]] = {}
    for package in packages:
        for virtual in package.provides:
            providers.setdefault(virtual, []).append(package.name)

    def resolve(name: str) -> list[str]:
        if name in by_name:
            return [name]
        return providers.get(name, [])

    roles: dict[str, Role] = {}
    parents: dict[str, list[str]] = {}

    def walk(roots: list[str], role: str) -> None:
        queue = list(roots)
        while queue:
            name = queue.pop(0)
            for dep_name in by_name[name].depends:
                for dep in resolve(dep_name):
                    if dep in roles or dep == name:
                        continue
                    parents.setdefault(dep, [])
                    if name not in parents[dep]:
                        parents[dep].append(name)
                    if dep not in pending:
                        pending[dep] = role
                        queue.append(dep)

    pending: dict[str, str] = {}
    wanted = sorted(n for n in requested if n in by_name)
    for name in wanted:
        roles[name] = Role(REQUESTED)
    walk(wanted, DEPENDENCY)
    for name, role in pending.items():
        roles[name] = Role(role, tuple(sorted(parents.get(name, []))))
    pending = {}
    base = sorted(
        p.name
        for p in packages
        if p.name not in roles and (p.essential or p.priority in BASE_PRIORITIES)
    )
    for name in base:
        roles[name] = Role(BASE)
    walk(base, BASE)
    for name, role in pending.items():
        roles.setdefault(name, Role(role, tuple(sorted(parents.get(name, [])))))
    for package in packages:
        roles.setdefault(package.name, Role(UNEXPLAINED))
    return roles


#: Where a package came from (the SBOM property ``imagefactory:origin``): the
#: distribution's archive, ``repository:NAME`` (a recipe repository), or neither.
ARCHIVE = "archive"
REPOSITORY_PREFIX = "repository:"
AMBIGUOUS = "ambiguous"  # several verified indexes list this very package
UNKNOWN = "unknown"  # no verified index lists it (name, version and architecture)


@dataclass(frozen=True)
class OriginSource:
    """One verified source of packages: the archive's indexes, or one repository's."""

    #: :data:`ARCHIVE` or ``repository:NAME``.
    origin: str
    #: The repository's base URL (the purl's ``repository_url``); ``None`` for the archive,
    #: which the purl's ``distro`` qualifier names.
    url: str | None
    #: Whether its verified indexes list (name, version, architecture).
    lists: Callable[[str, str, str], bool]
    #: Whether they list the name at all (any version).
    knows: Callable[[str], bool]


@dataclass(frozen=True)
class Origin:
    """Where one installed package came from, as the verified indexes say."""

    origin: str
    url: str | None = None
    #: For :data:`AMBIGUOUS`: every source that lists it.
    candidates: tuple[str, ...] = ()


def package_origins(
    packages: Sequence[Package], sources: Sequence[OriginSource]
) -> dict[str, Origin]:
    """The origin of each installed package (by name), matched in the verified indexes.

    A package is matched by name, version and architecture in the indexes the
    build verified before diskimage-builder ran: listed by one source, it came
    from there; by several, it is :data:`AMBIGUOUS` (with the candidates; apt's
    pinning decided, and nothing here guesses which); by none, :data:`UNKNOWN`.
    """
    out: dict[str, Origin] = {}
    for package in packages:
        found = [s for s in sources if s.lists(package.name, package.version, package.arch)]
        if len(found) == 1:
            out[package.name] = Origin(found[0].origin, found[0].url)
        elif found:
            out[package.name] = Origin(AMBIGUOUS, candidates=tuple(s.origin for s in found))
        else:
            out[package.name] = Origin(UNKNOWN)
    return out


def unverified_repository_packages(
    packages: Sequence[Package], origins: Mapping[str, Origin], sources: Sequence[OriginSource]
) -> list[str]:
    """Installed packages of a third-party repository in a version its verified indexes lack.

    The chroot's apt fetches the repository's Release again, after the build
    host verified it: a repository that published in between gives the image
    a package the cache key and the verification never saw. Such a package
    is named here (with the repositories that list its name), so the build
    can refuse it rather than sign it.
    """
    found = []
    for package in packages:
        origin = origins.get(package.name)
        if origin is None or origin.origin != UNKNOWN:
            continue
        repos = [s.origin for s in sources if s.origin != ARCHIVE and s.knows(package.name)]
        if repos:
            found.append(
                f"{package.name} {package.version} ({package.arch}), which the verified"
                f" indexes of {', '.join(repos)} do not list"
            )
    return found


def package_url(package: Package, facts: OsFacts, repository_url: str | None = None) -> PackageURL:
    """The package's purl; ``repository_url`` for a package of a third-party repository.

    The purl spec's ``deb`` type has no default repository: ``distro`` implies
    the distribution's archive, ``repository_url`` names another one.
    """
    from packageurl import PackageURL  # only a build that writes an SBOM needs it

    qualifiers = {"arch": package.arch, "distro": f"{facts.distro}-{facts.version}"}
    if repository_url is not None:
        qualifiers["repository_url"] = repository_url
    return PackageURL(
        type="deb",
        namespace=facts.distro,
        name=package.name,
        version=package.version,
        qualifiers=qualifiers,
    )


def make_sbom(
    name: str,
    version: str,
    facts: OsFacts,
    packages: list[Package],
    *,
    disk_sha256: str,
    created: dt.datetime,
    requested: set[str] | None = None,
    repositories: Sequence[str] = (),
    origins: Mapping[str, Origin] | None = None,
) -> str:
    """The SBOM as CycloneDX 1.6 JSON text.

    ``repositories`` (``NAME URL FINGERPRINT`` of each third-party apt
    repository the recipe added) are properties ``imagefactory:repository``
    of the image component: where packages besides the distribution's may
    come from, and the key apt trusts for each.

    With ``requested`` (the package names the build asked for), every
    component carries ``imagefactory:role`` (see :func:`package_roles`) and,
    for a dependency, ``imagefactory:required-by``.

    With ``origins`` (:func:`package_origins`), every component carries
    ``imagefactory:origin`` (``archive``, ``repository:NAME``, ``ambiguous``
    with ``imagefactory:origin-candidates``, or ``unknown``), and a package of
    a third-party repository the purl qualifier ``repository_url``.
    """
    # cyclonedx costs ~40 ms to import: only the label step, not every command, pays it.
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.output.json import JsonV1Dot6

    roles = package_roles(packages, requested) if requested is not None else {}
    bom = Bom(serial_number=uuid.uuid5(SBOM_NAMESPACE, disk_sha256))
    bom.metadata.timestamp = created
    root = Component(
        name=name,
        version=version,
        type=ComponentType.OPERATING_SYSTEM,
        bom_ref=f"image:{name}@{version}",
        description=f"{facts.pretty_name} ({facts.arch}), built by imagefactory {__version__}",
        properties=[Property(name="imagefactory:repository", value=r) for r in repositories],
    )
    bom.metadata.component = root
    components = []
    for package in packages:
        origin = origins.get(package.name) if origins is not None else None
        purl = package_url(package, facts, origin.url if origin is not None else None)
        properties = []
        role = roles.get(package.name)
        if role is not None:
            properties.append(Property(name="imagefactory:role", value=role.role))
            if role.required_by:
                by = ", ".join(role.required_by)
                properties.append(Property(name="imagefactory:required-by", value=by))
        if origin is not None:
            properties.append(Property(name="imagefactory:origin", value=origin.origin))
            if origin.candidates:
                listed = ", ".join(origin.candidates)
                properties.append(Property(name="imagefactory:origin-candidates", value=listed))
        components.append(
            Component(
                name=package.name,
                version=package.version,
                type=ComponentType.LIBRARY,
                purl=purl,
                bom_ref=purl.to_string(),
                properties=properties,
            )
        )
    bom.components.update(components)
    # The image contains every package: the root depends on all of them.
    bom.register_dependency(root, components)
    return str(JsonV1Dot6(bom).output_as_string(indent=2)) + "\n"


def sbom_ref(text: str) -> SbomRef:
    return SbomRef(SBOM_FILE, hashlib.sha256(text.encode("utf-8")).hexdigest())


@dataclass(frozen=True)
class SbomPackage:
    """One package as an SBOM lists it: its version and role (``None`` if not marked)."""

    name: str
    version: str
    role: str | None


#: The most components an SBOM read back may list (a worker node has a few hundred).
MAX_SBOM_COMPONENTS = 100_000


def sbom_packages(data: bytes, where: str) -> dict[str, SbomPackage]:
    """The packages of a CycloneDX SBOM made by :func:`make_sbom`, by name.

    The SBOM may come from elsewhere (a catalog): it is parsed strictly, and
    anything that is not a CycloneDX document listing named, versioned
    components is refused, naming ``where``.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InputError(f"{where}: the SBOM is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("bomFormat") != "CycloneDX":
        raise InputError(f"{where}: not a CycloneDX SBOM (no bomFormat CycloneDX)")
    components = doc.get("components", [])
    if not isinstance(components, list) or len(components) > MAX_SBOM_COMPONENTS:
        raise InputError(f"{where}: 'components' is not a list of at most {MAX_SBOM_COMPONENTS}")
    out: dict[str, SbomPackage] = {}
    for index, item in enumerate(components):
        name = item.get("name") if isinstance(item, dict) else None
        version = item.get("version") if isinstance(item, dict) else None
        if not isinstance(name, str) or not isinstance(version, str) or not name:
            raise InputError(f"{where}: components[{index}] has no name and version")
        role = None
        properties = item.get("properties", [])
        for prop in properties if isinstance(properties, list) else []:
            if isinstance(prop, dict) and prop.get("name") == "imagefactory:role":
                value = prop.get("value")
                role = value if isinstance(value, str) else None
        out[name] = SbomPackage(name, version, role)
    return out
