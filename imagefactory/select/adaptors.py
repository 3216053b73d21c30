"""The chosen image in the forms batch systems and clouds read.

* :func:`machine_ad` -- HTCondor ClassAd attributes for a machine ad, one
  ``Name = value`` line each (the form of ``STARTD_CRON`` output and
  ``condor_status -long``);
* :func:`job_requirements` -- the requirement as a job's ``Requirements``
  expression over those attributes;
* :func:`glance_properties` -- OpenStack Glance image properties
  (``os_distro``, ``os_version``, ``architecture`` in Glance's names, ...).

ClassAd strings are written so that both ClassAd syntaxes read them the same:
old ClassAds (config files, cron output) take a backslash literally except
before a quote, new ClassAds treat it as an escape. The only character
escaped is therefore ``"`` (as ``\\"``, the same in both); a value with a
backslash, a control character or a non-ASCII character has no spelling
both read alike and is refused, naming the attribute. Glance values are
refused unless they are plain words (``[A-Za-z0-9._:/+-]``), so that the
``--property k=v`` lines survive a shell's word splitting unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from imagefactory.errors import InputError, UsageError
from imagefactory.model.reason import printable
from imagefactory.select.candidates import Image
from imagefactory.select.requirements import KEYS, ORDERING, Clause, Requirements, release_key
from imagefactory.vocab import Arch

PREFIX = "Imagefactory"

#: Requirement key -> machine-ad attribute (string, or a comma-separated string list).
ATTRIBUTES: Mapping[str, str] = {
    "name": "ImagefactoryName",
    "version": "ImagefactoryVersion",
    "vo": "ImagefactoryVOs",
    "distro": "ImagefactoryDistro",
    "release": "ImagefactoryRelease",
    "codename": "ImagefactoryCodename",
    "arch": "ImagefactoryArch",
    "boot_mode": "ImagefactoryBootMode",
    "format": "ImagefactoryFormat",
    "model": "ImagefactoryModel",
    "root_policy": "ImagefactoryRootPolicy",
    "fs_access": "ImagefactoryFsAccess",
    "contextualisation": "ImagefactoryContextualisation",
}
RELEASE_MAJOR = "ImagefactoryReleaseMajor"
RELEASE_MINOR = "ImagefactoryReleaseMinor"

#: Glance's ``architecture`` names (its metadefs follow libosinfo): i386 images are ``i686``.
GLANCE_ARCH: Mapping[str, str] = {arch.value: arch.glance for arch in Arch}
_GLANCE_VALUE = re.compile(r"^[A-Za-z0-9._:/+-]{1,255}$")


class AdaptorError(InputError):
    """A label value cannot be written in the output format requested."""


def classad_string(value: str, attribute: str) -> str:
    """``value`` as a ClassAd string literal both ClassAd syntaxes read alike."""
    for index, char in enumerate(value):
        if char == "\\" or not (char.isascii() and char.isprintable()):
            raise AdaptorError(
                f"{attribute}: the value {printable(ascii(value)[:80])} has"
                f" {char!a} at position {index + 1}, which no ClassAd string literal"
                " spells the same in old and new ClassAd syntax; refused",
                hint="the image's labels carry it; ask its VO, or use --json",
            )
    return '"' + value.replace('"', '\\"') + '"'


def machine_ad(image: Image) -> list[tuple[str, str | int]]:
    """``(attribute, value)`` pairs describing ``image`` for a machine ad.

    Every string value is checked with :func:`classad_string` here, so a
    value no ClassAd spells is refused whichever form (lines or JSON) is asked for.
    """
    facts = image.facts
    strings: list[tuple[str, str]] = [
        ("ImagefactoryImage", str(image.path)),
        ("ImagefactoryImageKey", image.key),
    ]
    for key, attribute in ATTRIBUTES.items():
        value = facts[KEYS[key].label]
        strings.append((attribute, ",".join(value) if isinstance(value, tuple) else str(value)))
    strings.append(("ImagefactoryDiskSha256", str(facts["disk.sha256"])))
    out: list[tuple[str, str | int]] = []
    for attribute, text in strings:
        classad_string(text, attribute)
        out.append((attribute, text))
    release = release_key(facts["os.version"])
    if release is not None:
        out.append((RELEASE_MAJOR, release[0]))
        out.append((RELEASE_MINOR, release[1] if len(release) > 1 else 0))
    out.append(("ImagefactoryDiskSize", int(facts["disk.size"])))
    for attribute, when in (
        ("ImagefactoryCreated", image.created),
        ("ImagefactoryExpires", image.expires),
    ):
        if when is not None:
            out.append((attribute, int(when.timestamp())))
    return out


def machine_ad_lines(pairs: list[tuple[str, str | int]]) -> list[str]:
    """``Attribute = literal`` lines of :func:`machine_ad`'s pairs."""
    return [f"{a} = {classad_string(v, a) if isinstance(v, str) else int(v)}" for a, v in pairs]


def job_requirements(requirements: Requirements) -> str:
    """The requirements as a ClassAd expression over :func:`machine_ad`'s attributes.

    Strings compare with ``=?=`` / ``=!=`` (case-sensitive, never
    ``UNDEFINED``); list attributes with ``stringListMember``; release
    comparisons over the major and minor release numbers. An empty requirement
    is ``true``.
    """
    parts = [_clause_expression(c) for c in requirements.clauses]
    return " && ".join(parts) if parts else "true"


def _clause_expression(clause: Clause) -> str:
    key = clause.key
    attribute = ATTRIBUTES[key.name]
    if clause.op in ORDERING:
        if key.name != "release":
            raise UsageError(
                f"{clause.text}: ClassAds have no ordering of image versions;"
                " compare release, or require version=VALUE",
            )
        return _release_comparison(clause)
    tests = []
    for value in clause.values:
        if key.many:
            test = f'stringListMember({classad_string(value, attribute)}, {attribute}, ",")'
            tests.append(test if clause.op == "=" else f"!{test}")
            continue
        target = attribute
        if key.name == "release" and release_key(value) is None:
            target = ATTRIBUTES["codename"]  # release=bookworm names the codename
        op = "=?=" if clause.op == "=" else "=!="
        tests.append(f"{target} {op} {classad_string(value, target)}")
    joined = (" || " if clause.op == "=" else " && ").join(tests)
    return f"({joined})"


def _release_comparison(clause: Clause) -> str:
    wanted = release_key(clause.values[0])
    if wanted is None or len(wanted) > 2:
        raise UsageError(
            f"{clause.text}: the machine ad carries the major and minor release;"
            " compare at most two components",
        )
    major, minor = wanted[0], wanted[1] if len(wanted) > 1 else 0
    strict = {">=": ">", ">": ">", "<=": "<", "<": "<"}[clause.op]
    return (
        f"({RELEASE_MAJOR} {strict} {major} || ({RELEASE_MAJOR} == {major}"
        f" && {RELEASE_MINOR} {clause.op} {minor}))"
    )


def glance_properties(image: Image) -> dict[str, str]:
    """Glance image properties for ``image`` (every value a plain word, see the module doc)."""
    facts = image.facts
    props = {
        "os_type": "linux",
        "os_distro": str(facts["os.distro"]),
        "os_version": str(facts["os.version"]),
        "architecture": GLANCE_ARCH[str(facts["os.arch"])],
        "hw_firmware_type": str(facts["disk.boot_mode"]),
        "imagefactory_image": image.key,
        "imagefactory_vo": ",".join(facts["vo"]),
        "imagefactory_model": str(facts["trust.model"]),
        "imagefactory_root_policy": str(facts["trust.root_policy"]),
        "imagefactory_expires": str(facts["image.expires"]),
        "imagefactory_sha256": str(facts["disk.sha256"]),
    }
    if facts["os.arch"] == "aarch64":
        props["hw_machine_type"] = "virt"  # Nova's only arm64 machine type
    for key, value in props.items():
        if not _GLANCE_VALUE.fullmatch(value):
            raise AdaptorError(
                f"glance property {key}: the value {printable(ascii(value)[:80])} is not a"
                " plain word ([A-Za-z0-9._:/+-], at most 255 characters); refused",
                hint="the image's labels carry it; ask its VO, or use --json",
            )
    return props


def glance_image_options(image: Image) -> dict[str, str]:
    """The ``openstack image create`` options beside the properties: formats."""
    return {"disk_format": str(image.facts["disk.format"]), "container_format": "bare"}
