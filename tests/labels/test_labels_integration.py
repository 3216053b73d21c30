"""On a real image built by this session: hardening proven by the audit, the audit
proven to catch each item deliberately left undone, labels from the image itself."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import pytest

from imagefactory.build.pipeline import BuildOptions, BuildResult, build
from imagefactory.guest.handle import open_guest
from imagefactory.guest.inspect import inspect_image
from imagefactory.harden.apply import SYSCTL_FILE
from imagefactory.harden.profile import load_profile
from imagefactory.labels.make import read_labels
from imagefactory.progress import Progress
from imagefactory.recipe import load_recipe
from imagefactory.settings import load_settings
from tests.integration_images import BUILT_RECIPE

pytestmark = pytest.mark.integration

PROFILE = load_profile("worker-node-default")


def _disk(result: BuildResult) -> Path:
    return result.directory / "site-base-debian12-1.0.qcow2"


def test_built_image_is_hardened_audited_and_labelled(built_image: BuildResult) -> None:
    directory = built_image.directory
    labels = read_labels(directory)  # validates against the schema
    audit = json.loads((directory / "audit.json").read_text())
    assert audit["passed"] is True
    assert [c["id"] for c in audit["checks"] if c["status"] != "pass"] == []
    assert labels["audit"]["passed"] is True
    assert labels["audit"]["checks"] == len(audit["checks"])
    assert labels["os"]["distro"] == "debian"
    assert labels["os"]["version"] == "12"
    assert labels["os"]["arch"] == "x86_64"
    assert labels["os"]["kernel"] == built_image.record["disk"]["kernel"]
    assert labels["disk"]["boot_mode"] == "bios"
    assert labels["disk"]["virtual_size"] == 2 << 30
    disk_bytes = _disk(built_image).read_bytes()
    assert labels["disk"]["sha256"] == hashlib.sha256(disk_bytes).hexdigest()
    assert labels["disk"]["sha512"] == hashlib.sha512(disk_bytes).hexdigest()
    assert built_image.record["disk"]["files"][labels["disk"]["file"]]["sha256"] == (
        "sha256:" + labels["disk"]["sha256"]
    )
    sbom = (directory / "sbom.cdx.json").read_bytes()
    assert labels["sbom"]["sha256"] == hashlib.sha256(sbom).hexdigest()
    components = json.loads(sbom)["components"]
    assert len(components) == labels["packages"]["count"]
    assert all(c["purl"].startswith("pkg:deb/debian/") for c in components)
    # Observed in the image, not copied from DIB's manifest: every installed package
    # is in the manifest, but packages removed later in the build are not labelled.
    manifest = {p["name"].split(":")[0] for p in built_image.record["packages"]}
    assert {c["name"] for c in components} <= manifest
    assert labels["packages"]["patch_date"] is not None


def test_audit_catches_each_item_left_undone_on_the_real_image(
    built_image: BuildResult, tmp_path: Path
) -> None:
    copy = tmp_path / "undone.qcow2"
    shutil.copyfile(_disk(built_image), copy)
    with open_guest(copy, "qcow2", readonly=False) as guest:
        guest.mkdir("/root/.ssh", 0o700)
        guest.write("/root/.ssh/authorized_keys", b"ssh-ed25519 AAAA user@laptop\n", 0o600)
        guest.mkdir("/etc/ssh", 0o755)
        guest.write(
            "/etc/ssh/sshd_config",
            b"PermitRootLogin yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n",
        )
        guest.chmod("/etc/motd", 0o666)
        guest.write("/usr/local/bin/rootshell", b"\x7fELF", 0o4755)
        sysctl = (guest.read(SYSCTL_FILE) or b"").replace(
            b"kernel.kptr_restrict = 1", b"kernel.kptr_restrict = 0"
        )
        guest.write(SYSCTL_FILE, sysctl)
        guest.write("/etc/machine-id", b"0123456789abcdef0123456789abcdef\n", 0o444)
        guest.write("/root/.bash_history", b"sudo -i\n", 0o600)
    result = inspect_image(copy, PROFILE, declared_format="qcow2")
    failed = {c.id: c for c in result.audit.failed}
    assert set(failed) == {
        "ssh.no-authorized-keys",
        "hepix.no-credentials",
        "ssh.permitrootlogin",
        "fs.no-world-writable",
        "fs.setuid-allowlist",
        "sysctl.kernel.kptr_restrict",
        "seal.machine-id",
        "seal.shell-history",
    }
    evidence = {cid: {(e.path, e.value) for e in c.evidence} for cid, c in failed.items()}
    assert ("/root/.ssh/authorized_keys", "authorized keys baked in") in evidence[
        "ssh.no-authorized-keys"
    ]
    assert ("/etc/ssh/sshd_config", "permitrootlogin yes, want no") in evidence[
        "ssh.permitrootlogin"
    ]
    assert evidence["fs.no-world-writable"] == {("/etc/motd", "mode 0666")}
    assert evidence["fs.setuid-allowlist"] == {("/usr/local/bin/rootshell", "mode 4755")}
    assert evidence["sysctl.kernel.kptr_restrict"] == {(SYSCTL_FILE, "kernel.kptr_restrict = 0")}
    assert evidence["seal.machine-id"] == {("/etc/machine-id", "machine id set")}
    assert evidence["seal.shell-history"] == {("/root/.bash_history", "present")}
    # The facts come from the image: the same OS, read without trusting it.
    assert result.os.distro == "debian"
    assert result.info.format == "qcow2"


def test_a_cached_rebuild_still_audits_and_labels(built_image: BuildResult, tmp_path: Path) -> None:
    settings = load_settings()
    recipe = load_recipe(BUILT_RECIPE, settings.build_policy())
    again = build(
        recipe, settings, BuildOptions(), Progress(stream=io.StringIO()), output_root=tmp_path
    )
    assert again.cache_hit
    first, second = read_labels(built_image.directory), read_labels(again.directory)
    assert second["disk"] == first["disk"]
    assert second["image"]["uuid"] == first["image"]["uuid"]
    assert second["audit"] == first["audit"]
    assert second["packages"] == first["packages"]
    assert (again.directory / "sbom.cdx.json").read_bytes() == (
        built_image.directory / "sbom.cdx.json"
    ).read_bytes()
    assert again.record["hardening"]["profile"] == "worker-node-default"
