"""instantiate: an overlay on a verified store image, and everything it refuses."""

from __future__ import annotations

import os
import pwd
import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from imagefactory.diskformat import detect
from imagefactory.gate.overlay import OVERLAY, RECORD, read_record
from imagefactory.instances.make import instantiate
from imagefactory.instances.rundir import InstanceError, boot_id, check_job
from imagefactory.trust import load_policy
from imagefactory.verify.cache import VerifiedCache, verify_cached
from imagefactory.verify.labels import now_utc
from tests.instances.conftest import KEY, Site


def test_instantiate_makes_a_qcow2_overlay_naming_its_base_and_format(site: Site) -> None:
    instance = site.instantiate("12345")
    assert instance.overlay == site.run_dir / "12345" / OVERLAY
    assert instance.image == KEY
    info = detect(instance.overlay)
    disk = next(site.image.glob("*.raw"))
    assert info.format == "qcow2"
    assert info.backing_file == str(disk)
    assert info.details.get("backing_format") == "raw"
    record = read_record(site.run_dir / "12345" / RECORD)
    assert record is not None
    assert (record.job, record.image, record.base, record.boot_id) == (
        "12345",
        KEY,
        str(disk),
        boot_id(),
    )
    assert not record.started
    st = os.stat(site.run_dir)
    assert st.st_uid == 0
    assert st.st_mode & 0o777 == 0o755
    assert sorted(p.name for p in site.run_dir.iterdir()) == [".lock", "12345"]


def test_the_gate_accepts_the_overlay_and_marks_it_started(site: Site) -> None:
    instance = site.instantiate("12345_7")
    allowed, text = site.gate(instance.overlay)
    assert allowed, text
    record = read_record(instance.overlay.parent / RECORD)
    assert record is not None
    assert record.started


def test_a_path_through_a_symlink_is_resolved_first(site: Site, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(site.image)
    assert site.instantiate("123.0", link).image == KEY


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (lambda s: s.world.root / "src" / "atlas" / "atlas-wn" / "1.0", "not in the image store"),
        (lambda s: s.store / "atlas", "not an image directory of the store"),
        (lambda s: s.store / "atlas" / "atlas-wn", "not an image directory of the store"),
        (lambda s: s.store, "not in the image store"),
        (lambda s: s.store / ".pull", "not an image directory of the store"),
    ],
    ids=["outside", "vo-dir", "name-dir", "store-itself", "private-state"],
)
def test_refuses_what_is_not_a_store_entry(site: Site, where: object, message: str) -> None:
    with pytest.raises(InstanceError, match=message):
        site.instantiate("1", where(site))  # type: ignore[operator]
    assert not site.run_dir.exists()


def test_refuses_a_directory_pull_did_not_install(site: Site) -> None:
    copy = site.store / "atlas" / "atlas-wn" / "1.1"
    shutil.copytree(site.image, copy)
    with pytest.raises(InstanceError, match="not a complete entry of the store"):
        site.instantiate("1", copy)


def test_refuses_an_image_changed_since_it_was_verified(site: Site, tmp_path: Path) -> None:
    disk = next(site.image.glob("*.raw"))
    os.utime(disk)  # ctime changes: the verified cache's key no longer matches
    with pytest.raises(InstanceError, match="not verified as it is now"):
        site.instantiate("1")
    # A verify into the configured cache (unchanged content) makes it instantiable again.
    cache = VerifiedCache(tmp_path / "cache")
    policy = load_policy(site.world.policy_path)
    assert verify_cached(site.image, policy, cache).allowed
    instance = instantiate(
        site.image, "1", store=site.store, policy=policy, run_dir=site.run_dir, cache=cache
    )
    assert instance.overlay.exists()


def test_refuses_an_image_verified_under_another_policy(site: Site, tmp_path: Path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(site.world.policy_path.read_text() + "\n# another policy\n")
    with pytest.raises(InstanceError, match="another policy"):
        instantiate(
            site.image, "1", store=site.store, policy=load_policy(other), run_dir=site.run_dir
        )


def test_refuses_an_expired_image(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    later = now_utc() + timedelta(days=40)
    monkeypatch.setattr("imagefactory.instances.make.now_utc", lambda: later)
    with pytest.raises(InstanceError, match="endorsement expired"):
        site.instantiate("1")


def test_a_job_that_has_an_instance_is_refused(site: Site) -> None:
    site.instantiate("77")
    with pytest.raises(InstanceError, match="already has an instance"):
        site.instantiate("77")
    assert sorted(p.name for p in site.run_dir.iterdir()) == [".lock", "77"]


@pytest.mark.parametrize("job", ["12345", "12345_7", "123.0", "12345+1", "a-b", "x" * 64])
def test_batch_job_ids_are_accepted(job: str) -> None:
    assert check_job(job) == job


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("", "empty"),
        ("..", r"'\.\.'"),
        ("a..b", r"'\.\.'"),
        ("../etc", r"'\.\.'"),
        ("a/b", "character '/'"),
        ("a\0b", "U\\+0000"),
        ("x" * 65, "longer than 64"),
        ("\uff11\uff12\uff13", "U\\+FF11"),  # fullwidth digits
        ("123\u2024" + "0", "U\\+2024"),  # one dot leader, looks like '.'
        ("12\u0663", "U\\+0663"),  # Arabic-Indic digit three
        (".hidden", "must start with an ASCII letter or digit"),
        ("-rf", "must start with an ASCII letter or digit"),
        ("job\n", "U\\+000A"),
        ("a b", "U\\+0020"),
    ],
)
def test_hostile_job_ids_are_refused(site: Site, job: str, message: str) -> None:
    with pytest.raises(InstanceError, match=message):
        site.instantiate(job)
    assert not site.run_dir.exists()


def test_refuses_a_run_directory_others_can_write(site: Site) -> None:
    site.run_dir.mkdir(mode=0o777)
    site.run_dir.chmod(0o777)
    with pytest.raises(InstanceError, match="writable by group or others"):
        site.instantiate("1")


def test_owner_gets_the_overlay_file_and_the_job_directory_stays_roots(site: Site) -> None:
    nobody = pwd.getpwnam("nobody")
    overlay = instantiate(
        site.image,
        "1",
        store=site.store,
        policy=load_policy(site.world.policy_path),
        run_dir=site.run_dir,
        owner="nobody",
    ).overlay
    assert (overlay.stat().st_uid, overlay.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert overlay.parent.stat().st_uid == 0
    assert site.gate(overlay)[0]


def test_an_unknown_owner_is_refused_before_anything_is_made(site: Site) -> None:
    with pytest.raises(InstanceError, match="no such user"):
        instantiate(
            site.image,
            "1",
            store=site.store,
            policy=load_policy(site.world.policy_path),
            run_dir=site.run_dir,
            owner="no-such-user-here",
        )
    assert not site.run_dir.exists()


@pytest.mark.parametrize(
    "name",
    ["\x1b]0;owned\x07", "\u202eevil", "x" * 300, "atlas\u2215atlas-wn\u22151.0"],
    ids=["terminal-escape", "bidi", "long", "division-slash"],
)
def test_hostile_image_names_are_refused_and_shown_escaped(site: Site, name: str) -> None:
    with pytest.raises(InstanceError) as caught:
        site.instantiate("1", site.store / name)
    message = caught.value.message
    assert "not an image directory of the store" in message
    assert "\x1b" not in message
    assert "\u202e" not in message
    assert len(message) < 400
