"""The hardening applies every profile item and the audit proves it; each item left
undone is caught by exactly its check, with evidence (on the in-memory guest)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from imagefactory.audit import run_audit
from imagefactory.harden.apply import SSHD_DROPIN, SYSCTL_FILE, apply_profile
from imagefactory.profiles import load_profile
from imagefactory.vocab import RootPolicy
from tests.fakes.guest import FakeGuest, unhardened_tree

PROFILE = load_profile("worker-node-default")


def hardened(policy: RootPolicy = RootPolicy.NONE) -> FakeGuest:
    g = unhardened_tree()
    apply_profile(g, PROFILE, policy)
    return g


def test_unhardened_tree_fails_the_audit_with_evidence() -> None:
    report = run_audit(unhardened_tree(), PROFILE, RootPolicy.NONE)
    failed = {r.id for r in report.failed}
    assert {
        "ssh.no-host-keys",
        "root.no-user-sudo",
        "fs.setuid-allowlist",
        "fs.no-world-writable",
        "sysctl.kernel.yama.ptrace_scope",
        "seal.machine-id",
        "seal.logs",
        "seal.caches",
        "seal.shell-history",
        "services.removed",
        "hepix.no-credentials",
    } <= failed
    setuid = report.by_id("fs.setuid-allowlist")
    assert [e.to_dict() for e in setuid.evidence] == [
        {"path": "/usr/lib/polkit-1/polkit-agent-helper-1", "value": "mode 4755"}
    ]


@pytest.mark.parametrize("policy", list(RootPolicy))
def test_hardening_passes_every_check(policy: RootPolicy) -> None:
    report = run_audit(hardened(policy), PROFILE, policy)
    assert [r.render() for r in report.results if r.status != "pass"] == []
    assert report.passed
    # every profile item has a check: 12 sysctl rules, 3 mounts, the rest fixed.
    assert len(report.results) >= 12 + 3 + 20


def test_root_policy_is_enforced_not_recorded() -> None:
    none = hardened(RootPolicy.NONE)
    assert "PermitRootLogin no\n" in none.text(SSHD_DROPIN)
    assert "# imagefactory (root policy none): %sudo" in none.text("/etc/sudoers")
    site = hardened(RootPolicy.SITE_ADMIN)
    assert "PermitRootLogin prohibit-password\n" in site.text(SSHD_DROPIN)
    assert "\n%sudo" not in site.text("/etc/sudoers")
    user = hardened(RootPolicy.USER)
    assert "\n%sudo ALL=(ALL:ALL) ALL\n" in user.text("/etc/sudoers")
    # user root still only by key; the site-admin image audited as "none" fails.
    report = run_audit(site, PROFILE, RootPolicy.NONE)
    assert [r.id for r in report.failed] == ["ssh.permitrootlogin"]


def test_root_with_a_password_is_locked() -> None:
    g = unhardened_tree()
    g.add("/etc/shadow", "root:$6$salt$hash:19000:0:99999:7:::\nbob::19000::::::\n", 0o640)
    apply_profile(g, PROFILE, RootPolicy.NONE)
    assert g.text("/etc/shadow").startswith("root:!$6$salt$hash:")
    assert "\nbob:!:" in g.text("/etc/shadow")


def _undo_authorized_keys(g: FakeGuest) -> str:
    g.add("/root/.ssh/authorized_keys", "ssh-ed25519 AAAA user@laptop\n", 0o600)
    return "/root/.ssh/authorized_keys"


def _undo_root_login(g: FakeGuest) -> str:
    g.write(SSHD_DROPIN, ("PermitRootLogin yes\n" + g.text(SSHD_DROPIN)).encode())
    return SSHD_DROPIN


def _undo_world_writable(g: FakeGuest) -> str:
    g.chmod("/etc/motd", 0o666) if "/etc/motd" in g.nodes else g.add("/etc/motd", "hi", 0o666)
    return "/etc/motd"


def _undo_setuid(g: FakeGuest) -> str:
    g.add("/usr/local/bin/rootshell", b"elf", 0o4755)
    return "/usr/local/bin/rootshell"


def _undo_sysctl(g: FakeGuest) -> str:
    text = g.text(SYSCTL_FILE).replace("kernel.kptr_restrict = 1", "kernel.kptr_restrict = 0")
    g.write(SYSCTL_FILE, text.encode())
    return SYSCTL_FILE


def _undo_tmp_mount(g: FakeGuest) -> str:
    text = g.text("/etc/fstab").replace(
        "defaults,nodev,nosuid,mode=1777 0 0\n", "defaults 0 0\n", 1
    )
    g.write("/etc/fstab", text.encode())
    return "/etc/fstab"


def _undo_machine_id(g: FakeGuest) -> str:
    g.write("/etc/machine-id", b"0123456789abcdef0123456789abcdef\n")
    return "/etc/machine-id"


def _undo_history(g: FakeGuest) -> str:
    g.add("/root/.bash_history", "sudo -i\n")
    return "/root/.bash_history"


def _undo_host_key(g: FakeGuest) -> str:
    g.add("/etc/ssh/ssh_host_rsa_key", "PRIVATE", 0o600)
    return "/etc/ssh/ssh_host_rsa_key"


def _undo_grid_cert(g: FakeGuest) -> str:
    g.add("/etc/grid-security/hostkey.pem", "PRIVATE", 0o400)
    return "/etc/grid-security/hostkey.pem"


def _undo_local_user(g: FakeGuest) -> str:
    g.write(
        "/etc/passwd", (g.text("/etc/passwd") + "alice:x:1000:1000::/home/alice:/bin/sh\n").encode()
    )
    return "/etc/passwd"


def _undo_sudo(g: FakeGuest) -> str:
    g.add("/etc/sudoers.d/alice", "alice ALL=(ALL) NOPASSWD: ALL\n", 0o440)
    return "/etc/sudoers.d/alice"


def _undo_logs(g: FakeGuest) -> str:
    g.add("/var/log/auth.log", "secret session\n")
    return "/var/log/auth.log"


def _undo_service(g: FakeGuest) -> str:
    g.add_link("/etc/systemd/system/multi-user.target.wants/rpcbind.service", "/lib/z")
    return "/etc/systemd/system/multi-user.target.wants/rpcbind.service"


def _undo_userns(g: FakeGuest) -> str:
    g.add("/etc/sysctl.d/zzz-local.conf", "user.max_user_namespaces = 0\n")
    return "/etc/sysctl.d/zzz-local.conf"


def _undo_fuse(g: FakeGuest) -> str:
    g.add("/etc/modprobe.d/no-fuse.conf", "blacklist fuse\n")
    return "/etc/modprobe.d/no-fuse.conf"


UNDO: dict[str, tuple[Callable[[FakeGuest], str], set[str]]] = {
    "authorized_keys": (_undo_authorized_keys, {"ssh.no-authorized-keys", "hepix.no-credentials"}),
    "root login": (_undo_root_login, {"ssh.permitrootlogin"}),
    "world-writable": (_undo_world_writable, {"fs.no-world-writable"}),
    "setuid": (_undo_setuid, {"fs.setuid-allowlist"}),
    "sysctl": (_undo_sysctl, {"sysctl.kernel.kptr_restrict"}),
    "tmp mount": (_undo_tmp_mount, {"fs.mount:/tmp"}),
    "machine-id": (_undo_machine_id, {"seal.machine-id"}),
    "history": (_undo_history, {"seal.shell-history"}),
    "host key": (_undo_host_key, {"ssh.no-host-keys", "hepix.no-credentials"}),
    "grid cert": (_undo_grid_cert, {"hepix.no-credentials"}),
    "local user": (_undo_local_user, {"accounts.no-local-users"}),
    "sudo": (_undo_sudo, {"root.no-user-sudo"}),
    "logs": (_undo_logs, {"seal.logs"}),
    "service": (_undo_service, {"services.removed"}),
    "userns": (_undo_userns, {"kernel.userns-enabled"}),
    "fuse": (_undo_fuse, {"kernel.fuse-allowed"}),
}


@pytest.mark.parametrize("item", sorted(UNDO))
def test_audit_catches_the_item_left_undone(item: str) -> None:
    undo, expected = UNDO[item]
    g = hardened()
    path = undo(g)
    report = run_audit(g, PROFILE, RootPolicy.NONE)
    assert {r.id for r in report.failed} == expected
    for check in report.failed:
        assert check.evidence, check.id
        assert any(e.path == path for e in check.evidence), check.render()
    assert not report.passed


def test_missing_logging_services_only_warn() -> None:
    g = hardened()
    g.remove("/lib/systemd/system/auditd.service")
    report = run_audit(g, PROFILE, RootPolicy.NONE)
    assert report.passed
    assert report.by_id("services.logging").status == "warn"
    assert report.summary()["warn"] == 1


def test_device_nodes_in_the_image_are_not_world_writable_files() -> None:
    report = run_audit(hardened(), PROFILE, RootPolicy.NONE)
    assert report.by_id("fs.no-world-writable").passed


def test_evidence_never_contains_a_password_hash() -> None:
    g = hardened()
    g.write("/etc/shadow", b"root:$6$salt$SECRETHASH:19000:0:99999:7:::\n")
    report = run_audit(g, PROFILE, RootPolicy.NONE)
    check = report.by_id("root.password-locked")
    assert check.status == "fail"
    assert "SECRETHASH" not in str(report.to_dict())
    assert check.evidence[0].value == "root password set"


def test_declared_file_systems_need_their_client_in_the_image() -> None:
    g = hardened()
    assert run_audit(g, PROFILE, RootPolicy.NONE).passed
    report = run_audit(g, PROFILE, RootPolicy.NONE, fs_access=("nfs", "cvmfs"))
    check = report.by_id("labels.fs_access")
    assert not check.passed
    assert not report.passed
    assert [e.value for e in check.evidence] == [
        "fs_access nfs: the NFS client (nfs-common) is not installed",
        "fs_access cvmfs: the CernVM-FS client (cvmfs) is not installed",
    ]
    g.add("/usr/sbin/mount.nfs", b"\x7fELF", 0o755)
    g.add("/usr/bin/cvmfs2", b"\x7fELF", 0o755)
    passed = run_audit(g, PROFILE, RootPolicy.NONE, fs_access=("nfs", "cvmfs"))
    assert passed.passed
    assert [e.path for e in passed.by_id("labels.fs_access").examined] == [
        "/usr/sbin/mount.nfs",
        "/usr/bin/cvmfs2",
    ]
    assert run_audit(hardened(), PROFILE, RootPolicy.NONE, fs_access=("none",)).passed


def test_every_enabled_unit_is_listed_and_a_listening_socket_must_be_allowed() -> None:
    g = hardened()
    assert run_audit(g, PROFILE, RootPolicy.NONE).passed
    enabled = run_audit(g, PROFILE, RootPolicy.NONE).by_id("services.enabled")
    # A passing check still shows what it passed on.
    assert enabled.passed
    assert "/etc/systemd/system/multi-user.target.wants/chrony.service" in {
        e.path for e in enabled.examined
    }
    assert enabled.to_dict()["source"].startswith("CIS")
    g.add(
        "/lib/systemd/system/iscsid.socket",
        "[Socket]\nListenStream=@ISCSIADM_ABSTRACT_NAMESPACE\n",
    )
    g.add_link("/etc/systemd/system/sockets.target.wants/iscsid.socket", "/lib/x")
    g.add_link("/etc/systemd/system/multi-user.target.wants/packagekit.service", "/lib/y")
    report = run_audit(g, PROFILE, RootPolicy.NONE)
    assert {r.id for r in report.failed} == {"services.listening"}
    [listening] = report.by_id("services.listening").evidence
    assert listening.path == "/etc/systemd/system/sockets.target.wants/iscsid.socket"
    assert listening.value == (
        "listens on ListenStream=@ISCSIADM_ABSTRACT_NAMESPACE, not on the allowlist"
    )
    warned = report.by_id("services.enabled")
    assert warned.status == "warn"
    assert {e.path.rsplit("/", 1)[1] for e in warned.evidence} == {
        "iscsid.socket",
        "packagekit.service",
    }


def test_every_check_names_its_rule_source() -> None:
    report = run_audit(unhardened_tree(), PROFILE, RootPolicy.NONE, fs_access=("nfs",))
    unsourced = [r.id for r in report.results if not r.to_dict()["source"]]
    assert unsourced == []
