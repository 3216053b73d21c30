"""On a real image built by this session: hardening proven by the audit, the audit
proven to catch each item deliberately left undone, labels from the image itself."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from imagefactory.builder.pipeline import BuildResult
from imagefactory.guest.handle import open_guest
from imagefactory.harden.apply import SYSCTL_FILE
from imagefactory.host.accel import choose_guest_accel
from imagefactory.inspection import inspect_image
from imagefactory.labels.make import disk_digests
from imagefactory.model.labels import Labels
from imagefactory.profiles import load_profile
from imagefactory.settings import load_settings
from tests.integration_images import EXAMPLE, Builder

pytestmark = pytest.mark.integration

PROFILE = load_profile("worker-node-default")


def _accel() -> str:
    settings = load_settings()
    return choose_guest_accel(settings.accel, settings.cache_dir / "accel.json")


def _disk(result: BuildResult) -> Path:
    (name,) = result.record["disk"]["files"]
    return result.directory / str(name)


def test_built_image_is_hardened_audited_and_labelled(built_image: BuildResult) -> None:
    directory = built_image.directory
    labels = Labels.read(directory).to_dict()  # validates against the schema
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
    sha256, sha512 = disk_digests(_disk(built_image))
    assert (labels["disk"]["sha256"], labels["disk"]["sha512"]) == (sha256, sha512)
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


#: check id -> (guest path, evidence value) of the item deliberately left undone.
UNDONE = {
    "ssh.no-authorized-keys": ("/root/.ssh/authorized_keys", "authorized keys baked in"),
    "ssh.permitrootlogin": ("/etc/ssh/sshd_config", "permitrootlogin yes, want no"),
    "ssh.permitemptypasswords": ("/etc/ssh/sshd_config", "permitemptypasswords yes, want no"),
    "ssh.no-host-keys": ("/etc/ssh/ssh_host_ed25519_key", "host key baked in"),
    "hepix.no-credentials": (
        "/etc/grid-security/hostkey.pem",
        "credential or certificate baked in",
    ),
    "accounts.no-local-users": ("/etc/passwd", "alice uid 1000"),
    "accounts.no-empty-passwords": ("/etc/shadow", "alice: empty password"),
    "root.password-locked": ("/etc/shadow", "root password set"),
    "root.no-user-sudo": ("/etc/sudoers.d/alice", "alice ALL=(ALL) NOPASSWD: ALL"),
    "fs.mount:/tmp": ("/etc/fstab", "/tmp lacks nodev,nosuid"),
    "fs.scratch": ("/scratch", "missing"),
    "fs.no-world-writable": ("/etc/motd", "mode 0666"),
    "fs.setuid-allowlist": ("/usr/local/bin/rootshell", "mode 4755"),
    "fs.no-unowned": ("/usr/local/bin/orphan", "owner 4242:4242"),
    "sysctl.kernel.kptr_restrict": (SYSCTL_FILE, "kernel.kptr_restrict = 0"),
    "kernel.userns-enabled": ("/etc/sysctl.d/zzz-site.conf", "user.max_user_namespaces = 0"),
    "kernel.fuse-allowed": ("/etc/modprobe.d/no-fuse.conf", "blacklist fuse"),
    "services.removed": ("/etc/systemd/system/multi-user.target.wants/rpcbind.service", "enabled"),
    "seal.machine-id": ("/etc/machine-id", "machine id set"),
    "seal.logs": ("/var/log/auth.log", "15 bytes"),
    "seal.caches": ("/var/cache/apt/pkgcache.bin", "present"),
    "seal.shell-history": ("/root/.bash_history", "present"),
}


def test_audit_catches_each_item_left_undone_on_the_real_image(
    built_image: BuildResult, tmp_path: Path
) -> None:
    copy = tmp_path / "undone.qcow2"
    shutil.copyfile(_disk(built_image), copy)
    with open_guest(copy, "qcow2", readonly=False, accel=_accel()) as guest:
        g = guest.g
        guest.mkdir("/root/.ssh", 0o700)
        guest.write("/root/.ssh/authorized_keys", b"ssh-ed25519 AAAA user@laptop\n", 0o600)
        guest.mkdir("/etc/ssh", 0o755)
        guest.write(
            "/etc/ssh/sshd_config",
            b"PermitRootLogin yes\nPermitEmptyPasswords yes\nPasswordAuthentication no\n"
            b"KbdInteractiveAuthentication no\n",
        )
        guest.write("/etc/ssh/ssh_host_ed25519_key", b"PRIVATE\n", 0o600)
        guest.mkdir("/etc/grid-security", 0o755)
        guest.write("/etc/grid-security/hostkey.pem", b"PRIVATE\n", 0o400)
        passwd = (guest.read("/etc/passwd") or b"") + b"alice:x:1000:1000::/nonexistent:/bin/sh\n"
        guest.write("/etc/passwd", passwd)
        group = (guest.read("/etc/group") or b"") + b"alice:x:1000:\n"
        guest.write("/etc/group", group)
        shadow = (guest.read("/etc/shadow") or b"").decode()
        shadow = "\n".join(
            "root:$6$salt$hash:19000:0:99999:7:::" if line.startswith("root:") else line
            for line in shadow.splitlines()
        )
        guest.write("/etc/shadow", (shadow + "\nalice::19000:0:99999:7:::\n").encode(), 0o640)
        guest.write("/etc/sudoers.d/alice", b"alice ALL=(ALL) NOPASSWD: ALL\n", 0o440)
        fstab = (guest.read("/etc/fstab") or b"").replace(
            b"tmpfs /tmp tmpfs defaults,nodev,nosuid,mode=1777", b"tmpfs /tmp tmpfs defaults"
        )
        guest.write("/etc/fstab", fstab)
        guest.remove("/scratch")
        guest.chmod("/etc/motd", 0o666)
        guest.write("/usr/local/bin/rootshell", b"\x7fELF", 0o4755)
        guest.write("/usr/local/bin/orphan", b"#!/bin/sh\n", 0o755)
        g.chown(4242, 4242, "/usr/local/bin/orphan")
        sysctl = (guest.read(SYSCTL_FILE) or b"").replace(
            b"kernel.kptr_restrict = 1", b"kernel.kptr_restrict = 0"
        )
        guest.write(SYSCTL_FILE, sysctl)
        guest.write("/etc/sysctl.d/zzz-site.conf", b"user.max_user_namespaces = 0\n")
        guest.write("/etc/modprobe.d/no-fuse.conf", b"blacklist fuse\n")
        g.mkdir_p("/etc/systemd/system/multi-user.target.wants")
        g.ln_s(
            "/lib/systemd/system/rpcbind.service",
            "/etc/systemd/system/multi-user.target.wants/rpcbind.service",
        )
        guest.write("/etc/machine-id", b"0123456789abcdef0123456789abcdef\n", 0o444)
        guest.write("/var/log/auth.log", b"session opened\n")
        guest.write("/var/cache/apt/pkgcache.bin", b"cache")
        guest.write("/root/.bash_history", b"sudo -i\n", 0o600)
        # Hostile content the audit must survive: a fifo where a config file is
        # expected (a naive reader blocks), a symlink loop, an escape-laden name.
        g.mkfifo(0o644, "/etc/sysctl.d/50-fifo.conf")
        g.ln_s("/etc/sysctl.d/51-loop.conf", "/etc/sysctl.d/51-loop.conf")
        guest.write("/etc/motd.d\x1b[2J", b"x", 0o4755)
    result = inspect_image(copy, PROFILE, declared_format="qcow2", accel=_accel)
    failed = {c.id: c for c in result.audit.failed}
    assert set(failed) == set(UNDONE)
    for check_id, (path, value) in UNDONE.items():
        evidence = {(e.path, e.value) for e in failed[check_id].evidence}
        assert (path, value) in evidence, (check_id, evidence)
    hostile = {e.path for e in failed["fs.setuid-allowlist"].evidence}
    assert "/etc/motd.d\\x1b[2J" in hostile  # escaped, never printed raw
    # The facts come from the image, read without trusting it.
    assert result.os.distro == "debian"
    assert result.info.format == "qcow2"


def test_a_cached_rebuild_serves_the_same_audit_sbom_and_labels(
    built_image: BuildResult, build_recipe: Builder, tmp_path: Path
) -> None:
    again = build_recipe(EXAMPLE, tmp_path, boot_test=False)
    assert again.cache_hit
    assert "audit" not in again.record["timings"]  # from the verified cache entry, not re-run
    assert json.loads((again.directory / "audit.json").read_text()) == json.loads(
        (built_image.directory / "audit.json").read_text()
    )
    first, second = (
        Labels.read(built_image.directory).to_dict(),
        Labels.read(again.directory).to_dict(),
    )
    assert second["disk"] == first["disk"]
    assert second["image"]["uuid"] == first["image"]["uuid"]
    assert second["audit"] == first["audit"]
    assert second["packages"] == first["packages"]
    assert (again.directory / "sbom.cdx.json").read_bytes() == (
        built_image.directory / "sbom.cdx.json"
    ).read_bytes()
    assert again.record["hardening"]["profile"] == "worker-node-default"
