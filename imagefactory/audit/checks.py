"""Every audit check: a profile item or a HEPiX endorsement rule, with evidence.

Each check reads the image through a :class:`~imagefactory.guest.view.GuestView`
and returns a :class:`CheckResult` whose evidence names the guest path and the
value found there (never a secret: password fields are reported as ``set``,
``empty`` or ``locked``). A check id is stable; tests and labels refer to it.
"""

from __future__ import annotations

import fnmatch
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from imagefactory.guest import configs
from imagefactory.guest.view import (
    Entry,
    GuestView,
    cap_text,
    guest_glob,
    read_text,
    world_writable,
)
from imagefactory.profiles import Profile, root_login_value
from imagefactory.vocab import RootPolicy

#: Most evidence items kept per check (the count is always complete).
MAX_EVIDENCE = 50
HISTORY_NAMES = (".bash_history", ".python_history", ".lesshst", ".viminfo", ".wget-hsts")
LOCAL_UID_MIN = 1000
NOBODY_UID = 65534


@dataclass(frozen=True)
class Evidence:
    path: str
    value: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "value": self.value}


@dataclass(frozen=True)
class CheckResult:
    id: str
    title: str
    required: bool
    passed: bool
    evidence: tuple[Evidence, ...] = ()
    #: How many offending items there were (evidence is capped).
    count: int = 0
    #: What the check looked at, passing or not (capped like the evidence):
    #: a passing check shows what it passed on.
    examined: tuple[Evidence, ...] = ()
    #: Where the rule comes from (HEPiX endorsement policy, a CIS benchmark topic).
    source: str = ""

    @property
    def status(self) -> str:
        if self.passed:
            return "pass"
        return "fail" if self.required else "warn"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "status": self.status,
            "required": self.required,
            "count": self.count,
            "evidence": [e.to_dict() for e in self.evidence],
            "examined": [e.to_dict() for e in self.examined],
            "source": self.source or rule_source(self.id),
        }

    def render(self) -> str:
        shown = "; ".join(f"{e.path}: {e.value}" for e in self.evidence[:5])
        more = f" (+{self.count - 5} more)" if self.count > 5 else ""
        return f"[{self.status.upper()}] {self.id}: {self.title}" + (
            f" -- {shown}{more}" if shown else ""
        )


@dataclass(frozen=True)
class AuditReport:
    profile: str
    profile_version: str
    results: tuple[CheckResult, ...]

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == "fail"]

    @property
    def passed(self) -> bool:
        return not self.failed

    def summary(self) -> dict[str, int]:
        counts = {"pass": 0, "fail": 0, "warn": 0}
        for r in self.results:
            counts[r.status] += 1
        return counts

    def by_id(self, check_id: str) -> CheckResult:
        for r in self.results:
            if r.id == check_id:
                return r
        raise KeyError(check_id)

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "profile_version": self.profile_version,
            "passed": self.passed,
            "summary": self.summary(),
            "checks": [r.to_dict() for r in self.results],
        }


@dataclass
class _Ctx:
    guest: GuestView
    profile: Profile
    root_policy: RootPolicy
    #: The site file systems the image declares (its recipe's ``fs_access``);
    #: ``None`` when nothing is declared to check (``inspect`` of an upload).
    fs_access: tuple[str, ...] | None = None
    out: list[CheckResult] = field(default_factory=list)
    _walk: Sequence[Entry] | None = None

    @property
    def walk(self) -> Sequence[Entry]:
        if self._walk is None:
            self._walk = self.guest.walk("/")
        return self._walk

    def add(
        self,
        check_id: str,
        title: str,
        bad: Sequence[Evidence],
        *,
        required: bool = True,
        examined: Sequence[Evidence] = (),
    ) -> None:
        self.out.append(
            CheckResult(
                check_id,
                title,
                required,
                passed=not bad,
                evidence=tuple(bad[:MAX_EVIDENCE]),
                count=len(bad),
                examined=tuple(examined[:MAX_EVIDENCE]),
                source=rule_source(check_id),
            )
        )


_HEPIX = "HEPiX VM image endorsement policy (2010)"
_CIS = "CIS Debian Linux benchmark"
#: Where each check's rule comes from, by check id prefix (longest prefix wins).
#: CIS topics are named, not numbered: item numbers differ between benchmark
#: versions and are not verified here.
RULE_SOURCES: dict[str, str] = {
    "ssh.no-host-keys": f"{_HEPIX}: no host keys baked in",
    "ssh.no-authorized-keys": f"{_HEPIX}: no credentials baked in",
    "ssh.": f"{_CIS}: SSH server configuration",
    "accounts.": f"{_HEPIX}: no local user accounts; {_CIS}: password fields not empty",
    "root.": f"{_HEPIX}: root access per the endorsed root policy",
    "fs.mount:": f"{_CIS}: /tmp, /var/tmp, /dev/shm mounted nodev,nosuid",
    "fs.scratch": "THREATS.md 3: job scratch exec-capable, outside /tmp",
    "fs.setuid-allowlist": f"{_CIS}: audit SUID/SGID executables",
    "fs.no-world-writable": f"{_CIS}: no world-writable files",
    "fs.no-unowned": f"{_CIS}: no unowned files or directories",
    "sysctl.": f"{_CIS}: kernel parameters (ASLR, ptrace, core dumps, BPF, links)",
    "kernel.": "WLCG: Apptainer needs user namespaces, CVMFS needs FUSE",
    "services.removed": f"{_CIS}: remove services a server does not need",
    "services.enabled": f"{_CIS}: only needed services enabled",
    "services.listening": f"{_CIS}: no services listening that the node does not need",
    "services.logging": f"{_CIS}: auditd and a syslog daemon installed",
    "seal.": f"{_HEPIX}: image sealed (machine id, logs, caches, history)",
    "hepix.": f"{_HEPIX}: no credentials, host keys or certificates baked in",
    "labels.fs_access": "imagefactory: what the labels declare is true of the image",
}


def rule_source(check_id: str) -> str:
    """The rule source of a check id (longest matching prefix), or ``""``."""
    best = max((p for p in RULE_SOURCES if check_id.startswith(p)), key=len, default="")
    return RULE_SOURCES.get(best, "")


def _ev(path: str, value: str) -> Evidence:
    return Evidence(cap_text(path), cap_text(value))


# -- SSH, accounts, root -------------------------------------------------------


def check_ssh(c: _Ctx) -> None:
    settings = configs.sshd_settings(c.guest)
    wanted = {"permitrootlogin": root_login_value(c.root_policy)}
    wanted |= {k.lower(): v for k, v in c.profile.ssh_settings.items()}
    for key, value in wanted.items():
        bad = []
        if settings is not None:
            got = settings.get(key)
            actual = got.value.lower() if got else _SSHD_DEFAULTS.get(key, "")
            if actual != value.lower():
                path = got.path if got else configs.SSHD_CONFIG
                bad.append(_ev(path, f"{key} {actual or '(unset)'}, want {value}"))
        c.add(f"ssh.{key}", f"sshd {key} is {value} (or sshd absent)", bad)
    keys = [_ev(p, "host key baked in") for p in guest_glob(c.guest, "/etc/ssh/ssh_host_*")]
    c.add("ssh.no-host-keys", "no SSH host keys baked in", keys)
    homes = ["/root", *guest_glob(c.guest, "/home/*")]
    auth = [
        _ev(f"{home}/.ssh/{name}", "authorized keys baked in")
        for home in homes
        for name in ("authorized_keys", "authorized_keys2")
        if c.guest.lstat(f"{home}/.ssh/{name}") is not None
    ]
    c.add("ssh.no-authorized-keys", "no authorized_keys baked in", auth)


#: sshd's compiled-in defaults for the keys we check (OpenSSH 9).
_SSHD_DEFAULTS = {
    "permitrootlogin": "prohibit-password",
    "permitemptypasswords": "no",
    "passwordauthentication": "yes",
    "kbdinteractiveauthentication": "yes",
}


def check_accounts(c: _Ctx) -> None:
    passwd = configs.colon_file(read_text(c.guest, "/etc/passwd") or "", 7)
    local = [
        _ev("/etc/passwd", f"{row[0]} uid {row[2]}")
        for row in passwd
        if row[2].isdigit() and LOCAL_UID_MIN <= int(row[2]) != NOBODY_UID
    ]
    c.add("accounts.no-local-users", "no local user accounts baked in", local)
    shadow = configs.colon_file(read_text(c.guest, "/etc/shadow") or "", 9)
    empty = [
        _ev("/etc/shadow", f"{row[0]}: empty password")
        for row in shadow
        if configs.password_state(row[1]) == "empty"
    ]
    c.add("accounts.no-empty-passwords", "no account has an empty password", empty)
    root = next((row for row in shadow if row[0] == "root"), None)
    state = configs.password_state(root[1]) if root else "missing"
    bad = [] if state == "locked" else [_ev("/etc/shadow", f"root password {state}")]
    c.add("root.password-locked", "root has no usable password (key-only or none)", bad)
    if c.root_policy is not RootPolicy.USER:
        rules = [_ev(s.path, s.value) for s in configs.sudo_user_rules(c.guest)]
        members = configs.group_members(c.guest, ("sudo", "admin", "wheel"))
        rules += [_ev("/etc/group", f"{g}: {','.join(m)}") for g, m in members.items()]
        c.add(
            "root.no-user-sudo",
            f"no sudo for users (root policy {c.root_policy})",
            rules,
        )


# -- file systems --------------------------------------------------------------


def check_filesystems(c: _Ctx) -> None:
    fstab = configs.fstab_entries(read_text(c.guest, "/etc/fstab") or "")
    by_mount = {e.mountpoint: e for e in fstab}
    for mountpoint in c.profile.mounts:
        entry = by_mount.get(mountpoint)
        need = c.profile.required_mount_options
        if entry is None:
            bad = [_ev("/etc/fstab", f"{mountpoint} not mounted separately")]
        else:
            missing = [o for o in need if o not in entry.options]
            bad = [_ev("/etc/fstab", f"{mountpoint} lacks {','.join(missing)}")] if missing else []
        c.add(f"fs.mount:{mountpoint}", f"{mountpoint} mounted {','.join(need)}", bad)
    scratch = c.guest.lstat(c.profile.scratch)
    bad = []
    if scratch is None or not scratch.is_dir:
        bad = [_ev(c.profile.scratch, "missing")]
    elif (entry := by_mount.get(c.profile.scratch)) and "noexec" in entry.options:
        bad = [_ev("/etc/fstab", f"{c.profile.scratch} is noexec")]
    c.add("fs.scratch", f"job scratch {c.profile.scratch} exists and is exec-capable", bad)

    setuid, writable, unowned = [], [], []
    uids = {row[2] for row in configs.colon_file(read_text(c.guest, "/etc/passwd") or "", 7)}
    gids = {row[2] for row in configs.colon_file(read_text(c.guest, "/etc/group") or "", 4)}
    for e in c.walk:
        if e.is_symlink:
            continue
        special = e.mode & (stat.S_ISUID | stat.S_ISGID)
        if e.is_file and special and e.path not in c.profile.setuid_allowlist:
            setuid.append(_ev(e.path, f"mode {e.perms}"))
        if world_writable(e):
            writable.append(_ev(e.path, f"mode {e.perms}"))
        if str(e.uid) not in uids or str(e.gid) not in gids:
            unowned.append(_ev(e.path, f"owner {e.uid}:{e.gid}"))
    c.add("fs.setuid-allowlist", "setuid/setgid files are on the allowlist", setuid)
    c.add("fs.no-world-writable", "no world-writable files (sticky dirs excepted)", writable)
    c.add("fs.no-unowned", "no files owned by unknown users or groups", unowned)


# -- kernel ----------------------------------------------------------------------


def check_kernel(c: _Ctx) -> None:
    values = configs.sysctl_settings(c.guest)
    for rule in c.profile.sysctl:
        got = values.get(rule.key)
        bad = []
        if got is None:
            bad = [_ev("/etc/sysctl.d", f"{rule.key} not set")]
        else:
            try:
                ok = rule.satisfied_by(int(got.value))
            except ValueError:
                ok = False
            if not ok:
                bad = [_ev(got.path, f"{rule.key} = {got.value}")]
        c.add(f"sysctl.{rule.key}", rule.describe(), bad)
    off = [
        _ev(values[k].path, f"{k} = {values[k].value}")
        for k in c.profile.sysctl_keep_enabled
        if k in values and values[k].value.strip() == "0"
    ]
    c.add("kernel.userns-enabled", "user namespaces stay enabled (Apptainer)", off)
    blocked = []
    for path in guest_glob(c.guest, "/etc/modprobe.d/*.conf"):
        for raw in (read_text(c.guest, path) or "").splitlines():
            words = raw.split()
            if (
                len(words) >= 2
                and words[0] in ("blacklist", "install")
                and (words[1] in c.profile.keep_modules)
            ):
                blocked.append(_ev(path, raw.strip()))
    c.add("kernel.fuse-allowed", "FUSE is not blocked (CVMFS)", blocked)


# -- services ----------------------------------------------------------------------


def check_services(c: _Ctx) -> None:
    enabled = configs.enabled_units(c.guest, c.profile.services_remove)
    c.add(
        "services.removed",
        "services a worker node does not need are not enabled",
        [_ev(p, "enabled") for p in enabled],
    )
    # Every enabled unit, listed, against the profile's allowlist: an unknown
    # one is a warning; an unknown *listening socket* fails (iscsid.socket).
    units = configs.all_enabled_units(c.guest)
    allowed = c.profile.services_allowed
    listed = [_ev(link, "enabled") for link, _ in units]
    extra = [
        _ev(link, "enabled, not on the allowlist")
        for link, name in units
        if not _allowed(name, allowed)
    ]
    c.add(
        "services.enabled",
        "every enabled unit is on the profile's allowlist",
        extra,
        required=False,
        examined=listed,
    )
    sockets = []
    listening = []
    for link, name in units:
        if not name.endswith(".socket"):
            continue
        for address in configs.socket_listens(c.guest, name):
            sockets.append(_ev(link, f"listens on {address}"))
            if not _allowed(name, allowed):
                listening.append(_ev(link, f"listens on {address}, not on the allowlist"))
    c.add(
        "services.listening",
        "no socket unit listens unless the profile allows it",
        listening,
        examined=sockets,
    )
    absent = [
        _ev(f"/lib/systemd/system/{u}", "not installed")
        for u in c.profile.services_required
        if configs.unit_installed(c.guest, u) is None
    ]
    c.add("services.logging", "auditd and syslog are installed", absent, required=False)


# -- declared capabilities -----------------------------------------------------------

#: What provides each site file system a recipe may declare in ``fs_access``:
#: any one of these files in the image (its client's mount helper or tool).
FS_ACCESS_CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "nfs": ("the NFS client (nfs-common)", ("/usr/sbin/mount.nfs", "/sbin/mount.nfs")),
    "cvmfs": (
        "the CernVM-FS client (cvmfs)",
        ("/usr/bin/cvmfs2", "/usr/sbin/mount.cvmfs", "/sbin/mount.cvmfs"),
    ),
    "dcap": (
        "the dCache dcap client (dcap, libdcap1)",
        ("/usr/bin/dccp", "/usr/lib/x86_64-linux-gnu/libdcap.so.1", "/usr/lib64/libdcap.so.1"),
    ),
    "rfio": ("the RFIO client (rfcp)", ("/usr/bin/rfcp",)),
}


def check_fs_access(c: _Ctx) -> None:
    if c.fs_access is None:
        return
    missing, found = [], []
    for fs in c.fs_access:
        if fs not in FS_ACCESS_CLIENTS:
            continue  # 'none' declares nothing to provide
        what, paths = FS_ACCESS_CLIENTS[fs]
        present = [p for p in paths if c.guest.lstat(p) is not None]
        if present:
            found.append(_ev(present[0], f"fs_access {fs}: {what}"))
        else:
            missing.append(_ev(" or ".join(paths), f"fs_access {fs}: {what} is not installed"))
    c.add(
        "labels.fs_access",
        "every file system the labels declare has its client in the image",
        missing,
        examined=found,
    )


def _allowed(unit: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(unit, p) for p in patterns)


# -- seal ----------------------------------------------------------------------------


def check_seal(c: _Ctx) -> None:
    mid = c.guest.read("/etc/machine-id", 4096)
    bad = [] if not (mid or b"").strip() else [_ev("/etc/machine-id", "machine id set")]
    dbus = c.guest.read("/var/lib/dbus/machine-id", 4096)
    if dbus and dbus.strip():
        bad.append(_ev("/var/lib/dbus/machine-id", "machine id set"))
    c.add("seal.machine-id", "machine-id is empty (generated at first boot)", bad)
    logs = [
        _ev(e.path, f"{e.size} bytes")
        for top in c.profile.seal_truncate_under
        for e in c.guest.walk(top)
        if e.is_file and e.size > 0
    ]
    c.add("seal.logs", "log files are empty", logs)
    caches = [
        _ev(p, "present")
        for pattern in c.profile.seal_remove
        if not pattern.startswith(("/etc/ssh/", "/root/", "/home/"))
        for p in guest_glob(c.guest, pattern)
        if not _is_empty_dir(c.guest, p)
    ]
    c.add("seal.caches", "caches, temporary files and seeds removed", caches)
    homes = ["/root", *guest_glob(c.guest, "/home/*")]
    history = [
        _ev(f"{h}/{n}", "present")
        for h in homes
        for n in HISTORY_NAMES
        if c.guest.lstat(f"{h}/{n}") is not None
    ]
    c.add("seal.shell-history", "no shell or tool history", history)


def _is_empty_dir(guest: GuestView, path: str) -> bool:
    entry = guest.lstat(path)
    return entry is not None and entry.is_dir and not guest.listdir(path)


# -- HEPiX endorsement ----------------------------------------------------------------


def check_credentials(c: _Ctx) -> None:
    found = [
        _ev(p, "credential or certificate baked in")
        for pattern in c.profile.credentials
        for p in guest_glob(c.guest, pattern)
    ]
    c.add("hepix.no-credentials", "no credentials, keys or certificates baked in", found)


CHECKS: tuple[Callable[[_Ctx], None], ...] = (
    check_ssh,
    check_accounts,
    check_filesystems,
    check_kernel,
    check_services,
    check_fs_access,
    check_seal,
    check_credentials,
)


def run_audit(
    guest: GuestView,
    profile: Profile,
    root_policy: RootPolicy,
    *,
    fs_access: tuple[str, ...] | None = None,
) -> AuditReport:
    """Every check of ``profile`` (plus the HEPiX rules) against ``guest``.

    With ``fs_access`` (what the labels will declare), each declared site file
    system must have its client in the image.
    """
    c = _Ctx(guest, profile, root_policy, fs_access)
    # The file-system walk first: a read-only libguestfs guest answers the other
    # checks' lookups from it instead of one appliance round trip each.
    c.walk  # noqa: B018
    for check in CHECKS:
        check(c)
    return AuditReport(profile.id, profile.version, tuple(c.out))
