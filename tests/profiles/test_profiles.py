"""Hardening profiles are data: loaded, checked, and digested for the cache key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from imagefactory.errors import HardenError
from imagefactory.profiles import PROFILE_DIR, ProfileError, load_profile, parse_profile

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


def _write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_profile_digest_changes_with_content(tmp_path: Path) -> None:
    data = _data()
    before = parse_profile(_write(tmp_path, data)).digest
    assert parse_profile(_write(tmp_path, data)).digest == before
    data["scratch"] = "/scratch2"
    assert parse_profile(_write(tmp_path, data)).digest != before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sysctl": {"kernel.x": [1, "lt"]}}, ".sysctl.kernel.x[1]: expected eq or ge"),
        ({"sysctl": {"kernel.x": 1}}, ".sysctl.kernel.x: expected [integer, eq|ge]"),
        ({"setuid_allowlist": ["usr/bin/su"]}, "expected an absolute, normalised guest path"),
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"setuid_alowlist": []}, "did you mean 'setuid_allowlist'?"),
        ({"seal": {"remove": [], "truncate_under": ["/../etc"]}}, "normalised guest path"),
    ],
)
def test_bad_profiles_are_refused_at_their_place(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = _write(tmp_path, {**_data(), **change})
    with pytest.raises(ProfileError) as exc:
        parse_profile(path)
    text = exc.value.render()
    assert f"{path}:" in text
    assert message in text, text


def test_unknown_profile_names_the_known_ones() -> None:
    with pytest.raises(HardenError) as exc:
        load_profile("../../etc/passwd")
    assert exc.value.hint is not None
    assert "worker-node-default" in exc.value.hint
