"""The --require grammar: clauses, sets, negation, version comparison, and every refusal."""

from __future__ import annotations

from typing import Any

import pytest

from imagefactory.errors import EXIT_ERROR
from imagefactory.select.requirements import (
    MAX_LENGTH,
    RequirementError,
    parse_requirements,
    release_key,
)

VOS = ["atlas", "cms", "lhcb"]


def facts(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "image.name": "atlas-wn",
        "image.version": "1.10",
        "vo": ("atlas",),
        "os.distro": "debian",
        "os.version": "12",
        "os.codename": "bookworm",
        "os.arch": "x86_64",
        "disk.boot_mode": "bios",
        "disk.format": "qcow2",
        "trust.model": "non-persistent",
        "trust.root_policy": "none",
        "trust.fs_access": ("nfs", "cvmfs"),
        "trust.contextualisation": "none",
    }
    base.update(over)
    return base


def failures(text: str, **over: Any) -> list[str]:
    return parse_requirements([text], VOS).failures(facts(**over))


def problems(text: str) -> list[tuple[int, str, str | None]]:
    with pytest.raises(RequirementError) as caught:
        parse_requirements([text], VOS)
    assert caught.value.exit_code == EXIT_ERROR
    return [(p.column, p.message, p.hint) for p in caught.value.problems]


def test_the_issue_example_holds_for_a_matching_image() -> None:
    text = "distro=debian,release>=12,arch=x86_64,vo=atlas,root_policy=none"
    assert failures(text) == []


def test_each_failing_clause_is_named_with_the_image_value() -> None:
    found = failures("distro=ubuntu,arch=aarch64,vo=atlas", **{"os.arch": "x86_64"})
    assert found == [
        "distro=ubuntu: the image's distro is debian",
        "arch=aarch64: the image's arch is x86_64",
    ]


def test_a_set_matches_any_of_its_values_and_negation_excludes_each() -> None:
    assert failures("vo=atlas|cms") == []
    assert failures("vo=cms|lhcb") == ["vo=cms|lhcb: the image's vo is atlas"]
    assert failures("arch!=i386|aarch64") == []
    assert failures("arch!=i386|x86_64") == ["arch!=i386|x86_64: the image's arch is x86_64"]


def test_list_labels_match_when_any_of_their_values_is_in_the_set() -> None:
    assert failures("fs_access=cvmfs") == []
    assert failures("fs_access!=nfs") == ["fs_access!=nfs: the image's fs_access is cvmfs,nfs"]
    assert failures("vo=cms", vo=("atlas", "cms")) == []


@pytest.mark.parametrize(
    ("text", "release", "holds"),
    [
        ("release>=12", "12", True),
        ("release>=12", "11", False),
        ("release>12", "12", False),
        ("release>=12.0", "12", True),  # 12 and 12.0 are one release
        ("release<24.04", "22.04", True),
        ("release<24.04", "24.04", False),
        ("release>=9", "12", True),  # numbers, not strings: "12" < "9" as text
        ("release<=22.4", "22.04", True),  # components are numbers: 04 == 4
        ("release>22.04", "22.10", True),
        ("release>12", "12.1", True),
    ],
)
def test_release_compares_by_dotted_numbers(text: str, release: str, holds: bool) -> None:
    assert (failures(text, **{"os.version": release}) == []) is holds


def test_version_compares_piece_by_piece_not_as_text() -> None:
    assert failures("version>=1.9") == []  # the image is 1.10
    assert failures("version>1.10") == ["version>1.10: the image's version is 1.10"]
    assert failures("version<1.10.1") == []


def test_release_equality_also_takes_the_codename() -> None:
    assert failures("release=bookworm") == []
    assert failures("release=12") == []
    assert failures("release=trixie") == ["release=trixie: the image's release is 12"]


def test_an_image_whose_release_is_no_number_fails_a_comparison() -> None:
    assert failures("release>=12", **{"os.version": "sid"}) == [
        "release>=12: the image's release 'sid' is no number"
    ]


def test_release_key_drops_trailing_zeros_and_refuses_words() -> None:
    assert release_key("22.04") == (22, 4)
    assert release_key("12.0") == release_key("12") == (12,)
    assert release_key("bookworm") is None
    assert release_key("1..2") is None


def test_spaces_around_tokens_are_ignored_and_clauses_from_several_strings_add_up() -> None:
    parsed = parse_requirements([" distro = debian , arch=x86_64", "vo = atlas | cms"], VOS)
    assert str(parsed) == "distro=debian,arch=x86_64,vo=atlas|cms"


def test_no_requirement_matches_everything() -> None:
    assert parse_requirements([], VOS).failures(facts()) == []


def test_an_unknown_key_is_refused_at_its_column_with_did_you_mean() -> None:
    assert problems("distro=debian,dstro=ubuntu") == [
        (15, "unknown key 'dstro'", "did you mean 'distro'?")
    ]


def test_a_value_outside_the_vocabulary_is_refused_with_did_you_mean() -> None:
    [(column, message, hint)] = problems("root_policy=usr")
    assert (column, hint) == (13, "did you mean 'user'?")
    assert "not one of none, site-admin, user" in message
    [(_, _, hint)] = problems("arch=amd64")
    assert hint == "did you mean 'x86_64'?"  # the other tools' name, pointed at ours


def test_a_vo_the_policy_does_not_know_is_refused() -> None:
    [(column, message, hint)] = problems("vo=atlsa")
    assert column == 4
    assert "not a VO of the site policy" in message
    assert hint == "did you mean 'atlas'?"


def test_every_problem_of_a_string_is_reported_at_once() -> None:
    found = problems("arch>=x86_64,,release=bookwrm")
    assert [c for c, _, _ in found] == [5, 14, 23]
    assert "compares versions" in found[0][1]
    assert "empty clause" in found[1][1]
    assert found[2][2] == "did you mean 'bookworm'?"


@pytest.mark.parametrize(
    ("text", "column", "words"),
    [
        ("distro", 7, "expected one of"),
        ("=debian", 1, "expected a key"),
        ("release>=bookworm", 10, "not a release number"),
        ("release>=12|13", 10, "takes one value"),
        ("distro=", 8, "an empty value"),
        ("name=..", 6, "not a name"),
        ("version=../../etc", 9, "not a version"),
        ("distro=debian,", 15, "empty clause"),
        (",distro=debian", 1, "empty clause"),
        ("distro=deb\u0456an", 11, "not printable ASCII"),  # Cyrillic i
        ("distro=debian\0", 14, "NUL"),
        ("distro=debian\n,arch=x86_64", 14, "not printable ASCII"),
        ('distro=debian" || true', 8, "not one of"),
        ("", 1, "an empty requirement"),
    ],
)
def test_hostile_and_broken_strings_are_refused_at_their_column(
    text: str, column: int, words: str
) -> None:
    found = problems(text)
    assert found[0][0] == column, found
    assert words in found[0][1], found


def test_a_huge_string_is_refused_unread() -> None:
    [(column, message, _)] = problems("distro=debian," * (MAX_LENGTH // 8))
    assert column == MAX_LENGTH + 1
    assert "longer than" in message


def test_the_error_shows_a_look_alike_as_its_code_point() -> None:
    with pytest.raises(RequirementError) as caught:
        parse_requirements(["vo=\u0430tlas"], VOS)  # Cyrillic a
    assert "\\u0430tlas" in caught.value.render()
    assert caught.value.to_dict()["problems"] == [
        {
            "column": 4,
            "message": "character U+0430 is not printable ASCII",
            "hint": "requirements are ASCII: a look-alike letter is another key or value",
        }
    ]
