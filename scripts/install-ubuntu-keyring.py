"""Install Ubuntu's archive keyring on a Debian host that does not package it.

debootstrap verifies an Ubuntu base against
/usr/share/keyrings/ubuntu-archive-keyring.gpg. Debian 12 has no package for
it, so this takes the ``ubuntu-keyring`` package from the Ubuntu archive that
imagefactory is configured to use (settings, host apt sources or
diskimage-builder's default), checks the .deb against the archive's package
index, and installs only the keyring file.

Trust: this is trust on first use -- the index cannot be checked before the
keyring exists. Sites that need more install the keyring from a source they
trust and point ``keyrings.ubuntu`` in the settings at it; this script then
does nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from imagefactory.mirrors import resolve_archive
from imagefactory.settings import load_settings
from imagefactory.vocab import Arch, Distro

KEYRING = Path("/usr/share/keyrings/ubuntu-archive-keyring.gpg")
MEMBER = "./usr/share/keyrings/ubuntu-archive-keyring.gpg"
MAX_INDEX = 64 * 1024 * 1024
MAX_DEB = 1024 * 1024


def fetch(url: str, limit: int) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as resp:  # noqa: S310 (mirror URL from settings/apt)
        data: bytes = resp.read(limit + 1)
    if len(data) > limit:
        raise SystemExit(f"{url}: larger than {limit} bytes")
    return data


def main() -> int:
    if KEYRING.exists():
        return 0
    settings = load_settings()
    release = Distro.UBUNTU.releases[-1]
    archive = resolve_archive(Distro.UBUNTU, release.codename, Arch.X86_64, settings.mirrors)
    index_url = f"{archive.mirror}/dists/{release.codename}/main/binary-amd64/Packages.gz"
    index = gzip.decompress(fetch(index_url, MAX_INDEX)).decode("utf-8", "replace")
    stanza = next(
        (s for s in index.split("\n\n") if s.startswith("Package: ubuntu-keyring\n")), None
    )
    if stanza is None:
        raise SystemExit(f"ubuntu-keyring not found in {index_url}")
    fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
    deb = fetch(f"{archive.mirror}/{fields['Filename']}", MAX_DEB)
    if hashlib.sha256(deb).hexdigest() != fields["SHA256"]:
        raise SystemExit("ubuntu-keyring .deb does not match the archive index; not installed")
    with tempfile.TemporaryDirectory() as tmp:
        deb_path = Path(tmp) / "ubuntu-keyring.deb"
        deb_path.write_bytes(deb)
        tar = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", str(deb_path)], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp, MEMBER], input=tar, check=True)
        KEYRING.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(tmp) / MEMBER, KEYRING)
    KEYRING.chmod(0o644)
    sys.stderr.write(
        f"setup: installed {KEYRING} from {archive.mirror} (ubuntu-keyring {fields['Version']})\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
