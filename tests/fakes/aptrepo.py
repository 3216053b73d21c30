"""A real signed apt repository, made by the tests: not a fake of one.

A tiny ``.deb`` built with ``dpkg-deb --build``, indexed with
``apt-ftparchive`` (Packages, Packages.xz, Release), signed with an ed25519
key made with ``gpg --quick-gen-key`` in a temporary GNUPGHOME, and served on
127.0.0.1 by :mod:`tests.store.httpserver`. The unit tests verify it with
:mod:`imagefactory.aptrepo`; the integration test installs from it with apt
inside a diskimage-builder chroot.
"""

from __future__ import annotations

import lzma
import subprocess
from dataclasses import dataclass
from pathlib import Path

SUITE = "wn-stable"
COMPONENT = "main"
PACKAGE = "hello-wn"
PACKAGE_VERSION = "1.0-1"
#: The file the package installs, and its content.
PACKAGE_FILE = "/usr/share/hello-wn/hello.txt"
PACKAGE_TEXT = "hello from a third-party repository\n"


def _run(argv: list[str], cwd: Path | None = None) -> str:
    return subprocess.run(argv, cwd=cwd, check=True, capture_output=True, text=True).stdout


@dataclass(frozen=True)
class SigningKey:
    """A test OpenPGP key in its own GNUPGHOME."""

    home: Path
    fingerprint: str

    def gpg(self, *args: str) -> list[str]:
        return ["gpg", "--homedir", str(self.home), "--batch", "--yes", *args]

    def export(self, armor: bool = True) -> bytes:
        argv = self.gpg("--export", *(["--armor"] if armor else []), self.fingerprint)
        return subprocess.run(argv, check=True, capture_output=True).stdout

    def stop(self) -> None:
        subprocess.run(
            ["gpgconf", "--homedir", str(self.home), "--kill", "gpg-agent"],
            check=False,
            capture_output=True,
        )


def make_key(home: Path, name: str = "imagefactory test repository") -> SigningKey:
    """A fresh ed25519 signing key without a passphrase."""
    home.mkdir(mode=0o700, parents=True)
    _run(
        [
            "gpg",
            "--homedir",
            str(home),
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            f"{name} <repo@example.org>",
            "ed25519",
            "sign",
            "never",
        ]
    )
    listing = _run(["gpg", "--homedir", str(home), "--with-colons", "--list-keys"])
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr")
    )
    return SigningKey(home, fingerprint)


def build_deb(work: Path, name: str = PACKAGE, version: str = PACKAGE_VERSION) -> Path:
    """A tiny architecture-independent package that installs :data:`PACKAGE_FILE`."""
    tree = work / f"{name}-tree"
    (tree / "DEBIAN").mkdir(parents=True)
    target = tree / PACKAGE_FILE.lstrip("/")
    target.parent.mkdir(parents=True)
    target.write_text(PACKAGE_TEXT)
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: imagefactory tests <repo@example.org>\nSection: misc\nPriority: optional\n"
        "Description: a package from a third-party test repository\n"
    )
    deb = work / f"{name}_{version}_all.deb"
    _run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(tree), str(deb)])
    return deb


def make_repository(
    root: Path,
    key: SigningKey | None,
    debs: list[Path],
    *,
    suite: str = SUITE,
    arch: str = "amd64",
    detached: bool = False,
) -> Path:
    """An apt repository under ``root`` (``dists/``, ``pool/``); returns ``root``.

    Signed with ``key`` as ``InRelease`` (or ``Release.gpg`` with
    ``detached``); ``key=None`` leaves the Release unsigned.
    """
    pool = root / "pool" / COMPONENT
    pool.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        (pool / deb.name).write_bytes(deb.read_bytes())
    binary = root / "dists" / suite / COMPONENT / f"binary-{arch}"
    binary.mkdir(parents=True, exist_ok=True)
    packages = _run(["apt-ftparchive", "packages", f"pool/{COMPONENT}"], cwd=root)
    (binary / "Packages").write_text(packages)
    (binary / "Packages.xz").write_bytes(lzma.compress(packages.encode()))
    sign(root, key, suite=suite, arch=arch, detached=detached)
    return root


def sign(
    root: Path,
    key: SigningKey | None,
    *,
    suite: str = SUITE,
    arch: str = "amd64",
    detached: bool = False,
) -> None:
    """(Re)write the suite's Release from its indexes and sign it."""
    dists = root / "dists" / suite
    for name in ("Release", "InRelease", "Release.gpg"):
        (dists / name).unlink(missing_ok=True)
    options = {
        "Origin": "imagefactory-tests",
        "Label": "imagefactory-tests",
        "Suite": suite,
        "Codename": suite,
        "Architectures": arch,
        "Components": COMPONENT,
    }
    argv = ["apt-ftparchive"]
    for field, value in options.items():
        argv += ["-o", f"APT::FTPArchive::Release::{field}={value}"]
    release = _run([*argv, "release", "."], cwd=dists)
    (dists / "Release").write_text(release)
    if key is None:
        return
    user = ["--local-user", key.fingerprint, "--digest-algo", "SHA512"]
    if detached:
        out = ["--armor", "--detach-sign", "--output", str(dists / "Release.gpg")]
        _run(key.gpg(*user, *out, str(dists / "Release")))
    else:
        out = ["--clearsign", "--output", str(dists / "InRelease")]
        _run(key.gpg(*user, *out, str(dists / "Release")))
        (dists / "Release").unlink()
