"""The output adaptors: ClassAd machine ads and job Requirements read back by HTCondor's own
ClassAd parser (both syntaxes), hostile label values refused, and the Glance mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import classad2 as classad
import pytest

from imagefactory.errors import UsageError
from imagefactory.select.adaptors import (
    AdaptorError,
    classad_string,
    glance_image_options,
    glance_properties,
    job_requirements,
    machine_ad,
    machine_ad_lines,
)
from imagefactory.select.candidates import Image
from imagefactory.select.requirements import parse_requirements
from tests.select.test_requirements import facts

VOS = ["atlas", "cms", "lhcb"]


def image(**over: Any) -> Image:
    data = facts(**over)
    data.update(
        {
            "image.created": "2026-11-24T09:00:00Z",
            "image.expires": "2026-12-24T09:00:00Z",
            "disk.size": 812345678,
            "disk.virtual_size": 2147483648,
            "disk.sha256": "ab" * 32,
        }
    )
    data.update(over)
    return Image(
        "atlas/atlas-wn/1.10", Path("/var/lib/imagefactory/images/atlas/atlas-wn/1.10"), data
    )


def parsed_ad(img: Image) -> Any:
    """The machine ad as HTCondor reads it: old syntax (cron/config lines) and new syntax."""
    lines = machine_ad_lines(machine_ad(img))
    old = classad.parseOne("\n".join(lines) + "\n", classad.ParserType.Old)
    new = classad.parseOne("[" + "; ".join(lines) + "]", classad.ParserType.New)
    assert dict(old) == dict(new)
    return old


def test_the_machine_ad_reads_back_as_the_labels_say() -> None:
    ad = parsed_ad(image(vo=("atlas", "cms")))
    assert ad["ImagefactoryImage"] == "/var/lib/imagefactory/images/atlas/atlas-wn/1.10"
    assert ad["ImagefactoryImageKey"] == "atlas/atlas-wn/1.10"
    assert ad["ImagefactoryDistro"] == "debian"
    assert ad["ImagefactoryRelease"] == "12"
    assert (ad["ImagefactoryReleaseMajor"], ad["ImagefactoryReleaseMinor"]) == (12, 0)
    assert ad["ImagefactoryVOs"] == "atlas,cms"
    assert ad["ImagefactoryFsAccess"] == "nfs,cvmfs"
    assert ad["ImagefactoryRootPolicy"] == "none"
    assert ad["ImagefactoryDiskSize"] == 812345678
    assert ad["ImagefactoryExpires"] == 1798102800  # 2026-12-24T09:00:00Z


@pytest.mark.parametrize(
    "value",
    [
        '12" ; Requirements = true ; X = "',  # closing the string early
        'sid"\nStart = true',  # and a second line
    ],
)
def test_a_quote_in_a_label_stays_inside_its_string(value: str) -> None:
    if "\n" in value:
        with pytest.raises(AdaptorError, match="ImagefactoryRelease"):
            machine_ad(image(**{"os.version": value}))
        return
    ad = parsed_ad(image(**{"os.version": value}))
    assert ad["ImagefactoryRelease"] == value
    assert "Requirements" not in ad
    assert "X" not in ad


@pytest.mark.parametrize(
    "value",
    ["a\\b", "end\\", "tab\there", "nul\0", "bell\x07", "\u0430tlas", "bidi\u202eevil"],
)
def test_a_value_no_classad_spells_alike_in_both_syntaxes_is_refused(value: str) -> None:
    with pytest.raises(AdaptorError) as caught:
        classad_string(value, "ImagefactoryCodename")
    assert "ImagefactoryCodename" in caught.value.message
    assert caught.value.message.endswith("refused")


def test_requirements_match_exactly_the_machine_ads_select_accepts() -> None:
    text = "distro=debian,release>=12,release<24.04,arch!=i386|aarch64,vo=cms|atlas"
    requirements = parse_requirements([text], VOS)
    expression = classad.ExprTree(job_requirements(requirements))
    cases: list[tuple[dict[str, Any], bool]] = [
        ({}, True),
        ({"os.version": "11"}, False),
        ({"os.version": "22.04"}, True),
        ({"os.version": "24.04"}, False),
        ({"os.version": "12.1"}, True),
        ({"os.arch": "aarch64"}, False),
        ({"vo": ("lhcb",)}, False),
        ({"vo": ("lhcb", "cms")}, True),
        ({"os.distro": "ubuntu"}, False),
    ]
    for over, expected in cases:
        img = image(**over)
        assert (requirements.failures(img.facts) == []) is expected, over
        assert expression.eval(parsed_ad(img)) is expected, over


def test_requirements_compare_strings_case_sensitively_and_negate_lists() -> None:
    requirements = parse_requirements(["fs_access!=nfs,release=bookworm"], VOS)
    expression = classad.ExprTree(job_requirements(requirements))
    assert expression.eval(parsed_ad(image(**{"trust.fs_access": ("cvmfs",)}))) is True
    assert expression.eval(parsed_ad(image())) is False
    assert expression.eval(parsed_ad(image(**{"os.codename": "Bookworm"}))) is False


def test_no_requirement_is_true_and_a_version_ordering_has_no_classad_form() -> None:
    assert job_requirements(parse_requirements([], VOS)) == "true"
    with pytest.raises(UsageError, match="no ordering of image versions"):
        job_requirements(parse_requirements(["version>=1.2"], VOS))
    with pytest.raises(UsageError, match="at most two components"):
        job_requirements(parse_requirements(["release>=12.1.1"], VOS))


@pytest.mark.parametrize(
    ("arch", "glance", "firmware"),
    [("x86_64", "x86_64", "bios"), ("i386", "i686", "bios"), ("aarch64", "aarch64", "uefi")],
)
def test_glance_properties_use_glances_names(arch: str, glance: str, firmware: str) -> None:
    props = glance_properties(image(**{"os.arch": arch, "disk.boot_mode": firmware}))
    assert props["architecture"] == glance
    assert props["hw_firmware_type"] == firmware
    assert props["os_type"] == "linux"
    assert (props["os_distro"], props["os_version"]) == ("debian", "12")
    assert props["imagefactory_image"] == "atlas/atlas-wn/1.10"
    assert ("hw_machine_type" in props) is (arch == "aarch64")
    assert glance_image_options(image()) == {"disk_format": "qcow2", "container_format": "bare"}


@pytest.mark.parametrize("value", ["12 --property x=y", "12;rm", "", "12\u00a0"])
def test_a_glance_value_a_shell_would_split_or_read_is_refused(value: str) -> None:
    with pytest.raises(AdaptorError, match="os_version"):
        glance_properties(image(**{"os.version": value}))
