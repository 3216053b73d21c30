"""Apply a hardening profile to a mounted, writable guest (one appliance launch).

Every edit goes through a :class:`~imagefactory.guest.view.GuestEditor`. The
root policy is enforced here: ``none`` locks root, sets ``PermitRootLogin no``
and removes every user sudo rule; ``site-admin`` locks root's password and
lets root in only with a key (the site's contextualisation key, injected at
instantiation, never baked in) and removes user sudo; ``user`` keeps sudo but
still allows root only by key. Sealing comes last.

Returns the list of actions taken, for the build log.
"""

from __future__ import annotations

import stat

from imagefactory.guest import configs
from imagefactory.guest.view import GuestEditor, guest_glob, read_text, world_writable
from imagefactory.profiles import Profile, root_login_value
from imagefactory.vocab import RootPolicy

SSHD_DROPIN = f"{configs.SSHD_DROPIN_DIR}/00-imagefactory.conf"
SYSCTL_FILE = "/etc/sysctl.d/zz-imagefactory-hardening.conf"
SUDO_GROUPS = ("sudo", "admin", "wheel")
HEADER = "# Written by imagefactory hardening profile {id} v{version}; do not edit.\n"


def _mode(guest: GuestEditor, path: str, default: int) -> int:
    entry = guest.lstat(path)
    return stat.S_IMODE(entry.mode) if entry is not None else default


def harden_ssh(guest: GuestEditor, profile: Profile, policy: RootPolicy) -> list[str]:
    text = read_text(guest, configs.SSHD_CONFIG)
    if text is None:
        return ["ssh: sshd not installed, nothing to configure"]
    lines = [HEADER.format(id=profile.id, version=profile.version)]
    lines.append(f"PermitRootLogin {root_login_value(policy)}\n")
    lines += [f"{k} {v}\n" for k, v in profile.ssh_settings.items()]
    guest.mkdir(configs.SSHD_DROPIN_DIR, 0o755)
    guest.write(SSHD_DROPIN, "".join(lines).encode(), 0o644)
    actions = [f"ssh: wrote {SSHD_DROPIN}"]
    include = f"Include {configs.SSHD_DROPIN_DIR}/*.conf"
    if include not in text:
        # sshd takes the first value it reads: the drop-ins must come first.
        guest.write(configs.SSHD_CONFIG, f"{include}\n{text}".encode(), 0o644)
        actions.append(f"ssh: {configs.SSHD_CONFIG} now includes the drop-ins first")
    return actions


def harden_root(guest: GuestEditor, policy: RootPolicy) -> list[str]:
    actions = []
    text = read_text(guest, "/etc/shadow")
    if text is not None:
        rows = []
        for raw in text.splitlines():
            fields = raw.split(":")
            if len(fields) > 1 and (
                configs.password_state(fields[1]) == "empty"
                or (fields[0] == "root" and configs.password_state(fields[1]) == "set")
            ):
                fields[1] = "!" + fields[1]
                actions.append(f"accounts: locked the password of {fields[0]}")
            rows.append(":".join(fields))
        guest.write(
            "/etc/shadow", ("\n".join(rows) + "\n").encode(), _mode(guest, "/etc/shadow", 0o640)
        )
    if policy is RootPolicy.USER:
        return actions
    for name in guest.listdir("/etc/sudoers.d"):
        if name != "README":
            guest.remove(f"/etc/sudoers.d/{name}")
            actions.append(f"sudo: removed /etc/sudoers.d/{name} (root policy {policy})")
    rules = {s.value for s in configs.sudo_user_rules(guest) if s.path == "/etc/sudoers"}
    sudoers = read_text(guest, "/etc/sudoers")
    if sudoers is not None and rules:
        out = [f"# imagefactory (root policy {policy}): {line}" if line.strip() in rules else line
               for line in sudoers.splitlines()]  # fmt: skip
        guest.write("/etc/sudoers", ("\n".join(out) + "\n").encode(), 0o440)
        actions.append(f"sudo: disabled {len(rules)} user rule(s) in /etc/sudoers")
    for path, width, member_field in (("/etc/group", 4, 3), ("/etc/gshadow", 4, 3)):
        group_text = read_text(guest, path)
        if group_text is None:
            continue
        out, changed = [], False
        for raw in group_text.splitlines():
            fields = raw.split(":")
            if len(fields) >= width and fields[0] in SUDO_GROUPS and fields[member_field]:
                fields[member_field] = ""
                changed = True
            out.append(":".join(fields))
        if changed:
            guest.write(path, ("\n".join(out) + "\n").encode(), _mode(guest, path, 0o644))
            actions.append(f"sudo: emptied the sudo groups in {path}")
    return actions


def harden_filesystems(guest: GuestEditor, profile: Profile) -> list[str]:
    text = read_text(guest, "/etc/fstab") or ""
    keep = [
        line for line in text.splitlines()
        if not (len(line.split()) >= 2 and line.split()[1] in profile.mounts)
    ]  # fmt: skip
    for mountpoint, spec in profile.mounts.items():
        fstype, options = spec.split(None, 1)
        keep.append(f"{fstype} {mountpoint} {fstype} {options} 0 0")
    guest.write("/etc/fstab", ("\n".join(keep) + "\n").encode(), 0o644)
    guest.mkdir(profile.scratch, 0o1777)
    actions = [f"fs: {', '.join(profile.mounts)} mounted nodev,nosuid; {profile.scratch} created"]
    entries = [e for e in guest.walk("/") if not e.is_symlink]
    # Setuid bits belong to the inode, not the name: a hard link to an
    # allowlisted binary under another name shares its mode, so stripping the
    # bit there would strip it from the allowlisted name too. That other name
    # is removed instead, and a setuid inode keeps only its allowlisted names.
    allowed = {e.ino for e in entries if e.is_file and e.path in profile.setuid_allowlist}
    stripped: list[str] = []
    unlinked: list[str] = []
    fixed: list[str] = []
    for entry in entries:
        mode = stat.S_IMODE(entry.mode)
        new = mode
        special = mode & (stat.S_ISUID | stat.S_ISGID)
        if entry.is_file and special and entry.path not in profile.setuid_allowlist:
            if entry.ino in allowed:
                guest.remove(entry.path)
                unlinked.append(entry.path)
                continue
            new &= ~(stat.S_ISUID | stat.S_ISGID)
            stripped.append(entry.path)
        if world_writable(entry):
            new &= ~stat.S_IWOTH
            fixed.append(entry.path)
        if new != mode:
            guest.chmod(entry.path, new)
    actions.append(
        f"fs: removed setuid/setgid from {len(stripped)} file(s) off the allowlist"
        f"{_named(stripped)}"
    )
    if unlinked:
        actions.append(
            f"fs: removed {len(unlinked)} extra hard link(s) to allowlisted setuid files"
            f"{_named(unlinked)}"
        )
    actions.append(f"fs: removed world write from {len(fixed)} file(s){_named(fixed)}")
    return actions


def _named(paths: list[str], limit: int = 20) -> str:
    """``: a, b, c`` (at most ``limit`` names, then a count), or nothing."""
    if not paths:
        return ""
    shown = ", ".join(paths[:limit])
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return f": {shown}{more}"


def harden_kernel(guest: GuestEditor, profile: Profile) -> list[str]:
    lines = [HEADER.format(id=profile.id, version=profile.version)]
    lines += [f"{rule.key} = {rule.value}\n" for rule in profile.sysctl]
    guest.write(SYSCTL_FILE, "".join(lines).encode(), 0o644)
    return [f"kernel: wrote {len(profile.sysctl)} settings to {SYSCTL_FILE}"]


def harden_services(guest: GuestEditor, profile: Profile) -> list[str]:
    actions = []
    for link in configs.enabled_units(guest, profile.services_remove):
        guest.remove(link)
        actions.append(f"services: disabled {link}")
    return actions or ["services: nothing to disable"]


def seal(guest: GuestEditor, profile: Profile) -> list[str]:
    removed: list[str] = []
    for pattern in profile.seal_remove:
        for path in guest_glob(guest, pattern):
            guest.remove(path)
            removed.append(path)
    truncated: list[str] = []
    for top in profile.seal_truncate_under:
        for entry in guest.walk(top):
            if entry.is_file and entry.size > 0:
                guest.truncate(entry.path)
                truncated.append(entry.path)
    guest.write("/etc/machine-id", b"", 0o444)
    # Named, so build.json says which files the seal touched (HEPiX: no
    # host identity, logs or histories baked in).
    return [
        f"seal: removed {len(removed)} path(s){_named(removed)}",
        f"seal: emptied {len(truncated)} log(s){_named(truncated)}",
        "seal: cleared /etc/machine-id",
    ]


def apply_profile(guest: GuestEditor, profile: Profile, policy: RootPolicy) -> list[str]:
    """Apply every item of ``profile``; sealing last. Returns what was done."""
    actions = harden_ssh(guest, profile, policy)
    actions += harden_root(guest, policy)
    actions += harden_kernel(guest, profile)
    actions += harden_services(guest, profile)
    actions += harden_filesystems(guest, profile)
    actions += seal(guest, profile)
    return actions
