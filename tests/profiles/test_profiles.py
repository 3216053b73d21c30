"""Hardening profiles are data: loaded, checked, and digested for the cache key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from imagefactory.errors import HardenError
from imagefactory.profiles import PROFILE_DIR, load_profile, parse_profile

REPO = Path(__file__).resolve().parents[2]


def test_default_profile_covers_threats_section_3() -> None:
    profile = load_profile("worker-node-default")
    assert profile.id == "worker-node-default"
    keys = {rule.key for rule in profile.sysctl}
    assert {
        "kernel.randomize_va_space",
        "kernel.yama.ptrace_scope",
        "fs.suid_dumpable",
        "kernel.kptr_restrict",
        "kernel.dmesg_restrict",
        "kernel.unprivileged_bpf_disabled",
        "net.core.bpf_jit_harden",
        "kernel.kexec_load_disabled",
        "fs.protected_hardlinks",
        "fs.protected_symlinks",
        "fs.protected_fifos",
    } <= keys
    assert set(profile.mounts) == {"/tmp", "/var/tmp", "/dev/shm"}
    assert "user.max_user_namespaces" in profile.sysctl_keep_enabled
    assert "fuse" in profile.keep_modules
    assert "/usr/bin/fusermount3" in profile.setuid_allowlist
    assert profile.digest.startswith("sha256:")


def test_label_data_is_the_top_level_labels_dir_and_profiles_are_not_labels() -> None:
    from imagefactory.data import LABELS_DIR

    top = REPO / "labels"
    assert top.is_dir()
    assert not top.is_symlink()  # the folder users and editors point at is the real one
    assert LABELS_DIR.resolve() == top.resolve()
    assert sorted(p.name for p in top.iterdir()) == ["schema", "vocab"]
    assert (PROFILE_DIR / "worker-node-default.yaml").is_file()
    assert not PROFILE_DIR.resolve().is_relative_to(top.resolve())


def _data() -> dict[str, object]:
    data = yaml.safe_load((PROFILE_DIR / "worker-node-default.yaml").read_text())
    assert isinstance(data, dict)
    return data


def test_profile_digest_changes_with_content() -> None:
    data = _data()
    before = parse_profile(data, "p").digest
    data["scratch"] = "/scratch2"
    assert parse_profile(data, "p").digest != before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sysctl": {"kernel.x": [1, "lt"]}}, ".sysctl.kernel.x: expected [integer, eq|ge]"),
        ({"setuid_allowlist": ["usr/bin/su"]}, "is not an absolute guest path"),
        ({"bogus": 1}, "unknown keys: bogus"),
        ({"seal": {"remove": [], "truncate_under": ["/../etc"]}}, "not an absolute guest path"),
    ],
)
def test_bad_profiles_are_refused(change: dict[str, object], message: str) -> None:
    data = {**_data(), **change}
    with pytest.raises(HardenError) as exc:
        parse_profile(data, "p.yaml")
    assert message in exc.value.message


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(HardenError) as exc:
        load_profile("../../etc/passwd")
    assert exc.value.hint is not None
    assert "worker-node-default" in exc.value.hint
