"""Setuid bits are decided per inode: a hard link cannot strip an allowlisted binary."""

from __future__ import annotations

import stat

from imagefactory.audit import run_audit
from imagefactory.harden.apply import apply_profile
from imagefactory.profiles import load_profile
from imagefactory.vocab import RootPolicy
from tests.fakes.guest import unhardened_tree

PROFILE = load_profile("worker-node-default")


def test_hard_link_to_an_allowlisted_setuid_binary_is_removed_not_stripped() -> None:
    g = unhardened_tree()
    g.add("/usr/bin/chsh", b"\x7fELF chsh", 0o4755)
    g.add_hardlink("/var/tmp/chsh-copy", "/usr/bin/chsh")
    g.add("/usr/local/bin/own-setuid", b"\x7fELF", 0o4755)
    actions = apply_profile(g, PROFILE, RootPolicy.NONE)
    chsh = g.lstat("/usr/bin/chsh")
    assert chsh is not None
    assert chsh.mode & stat.S_ISUID, "the allowlisted name keeps its setuid bit"
    assert g.lstat("/var/tmp/chsh-copy") is None
    own = g.lstat("/usr/local/bin/own-setuid")
    assert own is not None
    assert not own.mode & stat.S_ISUID
    text = "\n".join(actions)
    assert "removed 1 extra hard link(s) to allowlisted setuid files: /var/tmp/chsh-copy" in text
    assert "off the allowlist: " in text
    assert "/usr/local/bin/own-setuid" in text
    report = run_audit(g, PROFILE, RootPolicy.NONE)
    assert "fs.setuid-allowlist" not in {c.id for c in report.failed}
