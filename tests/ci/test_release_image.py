"""The release container image (ci/Containerfile) built for real, with buildah, and used.

What ci/release.gitlab-ci.yml does on a release tag, here with nothing but the
checkout and the host's package mirror: the wheel built from this checkout
(``pip wheel --no-deps``, as the release-wheel job), and ``buildah build`` of
the real Containerfile with ``--isolation chroot`` (the release-image job sets
``BUILDAH_ISOLATION=chroot``). Then the image is used as a CI job uses it:
``imagefactory --version`` and a real ``validate`` of the example recipe run
inside it (``buildah run``), and its labels and command are read back.

The one difference is the base. The Containerfile's ``FROM ${BASE}`` defaults
to ``debian:bookworm`` from a registry; this host has no registry to pull from,
so the test makes a Debian 12 base itself, from the debootstrap tarball that
diskimage-builder keeps in imagefactory's cache (or, without one, a
``debootstrap --variant=minbase`` from the host's mirror), and passes it as
``--build-arg BASE``. The base carries what this host needs to reach its
package registries, taken from the host and nowhere else: the Debian mirror
imagefactory would build from (settings, else the host's apt sources), the
host's CA certificates and pip's configuration. buildah's storage is private
to the test (``--root``/``--runroot`` under its temporary directory).

It took 10 minutes here with the machine loaded (load average 15; ``buildah
build`` alone about 6 of them: the Debian packages of ``scripts/setup
--debian-packages`` are downloaded and installed in the image), so it carries
the ``release`` marker, outside CI's default set: ``scripts/test -m release``
runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imagefactory import __version__
from imagefactory.mirrors import resolve_archive
from imagefactory.settings import load_settings
from imagefactory.vocab import Arch, Distro
from tests.conftest import RECIPES, REPO, require_integration_host, require_or_skip

CONTAINERFILE = REPO / "ci" / "Containerfile"
#: What the Containerfile COPYs from the build context, beside the wheel.
CONTEXT_FILES = ("scripts/setup", "scripts/install-ubuntu-keyring.py", "ci/install-wheel")
BASE = "localhost/imagefactory-test-base:bookworm"
IMAGE = f"localhost/imagefactory:{__version__}"
#: The Debian base diskimage-builder caches (see the build's dib step).
DIB_TARBALL = "debootstrap-debian-bookworm-amd64.tar.gz"


@dataclass
class Buildah:
    """buildah with a storage of its own, chroot isolation and no pulling."""

    root: Path
    log: Path

    def argv(self, *args: str) -> list[str]:
        storage = ["--root", str(self.root / "root"), "--runroot", str(self.root / "runroot")]
        return ["buildah", *storage, "--storage-driver", "overlay", *args]

    def __call__(self, *args: str, timeout: float = 600) -> str:
        done = subprocess.run(
            self.argv(*args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "BUILDAH_ISOLATION": "chroot"},
        )
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"$ {' '.join(self.argv(*args))}\n{done.stdout}{done.stderr}\n")
        assert done.returncode == 0, (
            f"buildah {' '.join(args)}: exit {done.returncode}\n{done.stdout[-4000:]}"
            f"\n{done.stderr[-4000:]}"
        )
        return done.stdout

    def clean(self) -> None:
        """Every container and image gone, the storage's own mounts undone, the files removed."""
        for args in (["rm", "--all"], ["rmi", "--all", "--force"]):
            subprocess.run(self.argv(*args), capture_output=True, check=False, timeout=300)
        mounts = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(f"{self.root}/")
        ]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def buildah(tmp_path: Path) -> Iterator[Buildah]:
    require_integration_host()
    require_or_skip(shutil.which("buildah") is not None, "buildah is not installed")
    made = Buildah(tmp_path / "buildah", tmp_path / "buildah.log")
    made.root.mkdir()
    try:
        yield made
    finally:
        made.clean()


def _debian_rootfs(tmp_path: Path) -> Path:
    """A Debian 12 amd64 root file system as a tarball: DIB's cached one, else debootstrap."""
    settings = load_settings()
    cached = settings.dib_image_cache / DIB_TARBALL
    if cached.is_file():
        return cached
    archive = resolve_archive(Distro.DEBIAN, "bookworm", Arch.X86_64, settings.mirrors)
    tree = tmp_path / "debootstrap"
    subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(tree), archive.mirror],
        check=True,
        capture_output=True,
        timeout=1200,
    )
    tarball = tmp_path / "debian-bookworm.tar.gz"
    subprocess.run(["tar", "-C", str(tree), "-czf", str(tarball), "."], check=True, timeout=600)
    shutil.rmtree(tree)
    return tarball


def _apt_sources() -> str:
    """deb822 sources for bookworm from the mirror imagefactory would use (never a name of ours)."""
    settings = load_settings()
    archive = resolve_archive(Distro.DEBIAN, "bookworm", Arch.X86_64, settings.mirrors)
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    stanzas = [(archive.mirror, "bookworm bookworm-updates")]
    if archive.security_mirror:
        stanzas.append((archive.security_mirror, "bookworm-security"))
    return "\n".join(
        f"Types: deb\nURIs: {uri}\nSuites: {suites}\nComponents: main\nSigned-By: {keyring}\n"
        for uri, suites in stanzas
    )


def make_base(buildah: Buildah, tmp_path: Path) -> None:
    """The Debian 12 base in buildah's storage under BASE."""
    sources = tmp_path / "debian.sources"
    sources.write_text(_apt_sources(), encoding="utf-8")
    container = buildah("from", "scratch").strip()
    buildah("add", container, str(_debian_rootfs(tmp_path)), "/")
    buildah("copy", container, str(sources), "/etc/apt/sources.list.d/debian.sources")
    # The host's trust anchors as a local CA file: update-ca-certificates (run when the
    # Containerfile installs ca-certificates) keeps them in the bundle.
    buildah(
        "copy",
        container,
        "/etc/ssl/certs/ca-certificates.crt",
        "/usr/local/share/ca-certificates/host-trust.crt",
    )
    if Path("/etc/pip.conf").is_file():
        buildah("copy", container, "/etc/pip.conf", "/etc/pip.conf")
    buildah("commit", "--rm", container, BASE)


def build_context(tmp_path: Path) -> Path:
    """The build context: the Containerfile's sources from this checkout, and the wheel."""
    context = tmp_path / "context"
    for name in (*CONTEXT_FILES, "ci/Containerfile"):
        target = context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--wheel-dir",
         str(context / "wheelhouse"), str(REPO)],
        check=True,
        timeout=600,
    )  # fmt: skip
    return context


def test_every_file_the_containerfile_copies_is_in_the_context() -> None:
    """The context above holds what the Containerfile COPYs (so the test builds the real one)."""
    copied: list[str] = []
    for line in CONTAINERFILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("COPY "):
            copied += line.split()[1:-1]
    assert copied == [*CONTEXT_FILES, "wheelhouse/imagefactory-${VERSION}-py3-none-any.whl"]
    first = next(
        line for line in CONTAINERFILE.read_text().splitlines() if line.startswith("FROM ")
    )
    assert first == "FROM ${BASE}"
    assert "ARG BASE=debian:bookworm" in CONTAINERFILE.read_text()


# ``slow`` too, so that a developer's ``-m "not slow"`` (which replaces the default
# ``-m``) does not start a ten-minute image build either.
@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.release
def test_the_release_image_builds_and_runs_imagefactory(buildah: Buildah, tmp_path: Path) -> None:
    make_base(buildah, tmp_path)
    context = build_context(tmp_path)
    buildah(
        "build",
        "--isolation",
        "chroot",
        "--pull=never",
        "--file",
        str(context / "ci" / "Containerfile"),
        "--build-arg",
        f"VERSION={__version__}",
        "--build-arg",
        f"BASE={BASE}",
        "--tag",
        IMAGE,
        str(context),
        timeout=3600,
    )

    config = json.loads(buildah("inspect", "--type", "image", IMAGE))["OCIv1"]
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == "imagefactory"
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert config["config"]["Cmd"] == ["imagefactory", "--help"]

    # Used as a CI job uses it: the VO's checkout in the working directory.
    container = buildah("from", "--pull=never", IMAGE).strip()
    buildah("copy", container, str(RECIPES), "/builds/vo/recipes")

    def inside(*argv: str) -> str:
        return buildah(
            "run", "--isolation", "chroot", "--workingdir", "/builds/vo", container, "--", *argv
        )

    assert inside("imagefactory", "--version") == f"imagefactory {__version__}\n"
    validated = inside("imagefactory", "validate", "recipes/atlas-wn-debian12.yaml")
    assert validated.startswith(
        "/builds/vo/recipes/atlas-wn-debian12.yaml: ok (atlas-wn-debian12 1.0, sha256:"
    ), validated
    linted = inside("imagefactory", "lint", "recipes/atlas-wn-debian12.yaml", "--format", "json")
    assert json.loads(linted)["ok"] is True
    # What the release's wheel needs of the Debian side: libguestfs' binding through
    # the venv's system site-packages, and every tool of every flavour (host check's
    # own list), the Ubuntu keyring among them.
    inside("/opt/imagefactory/bin/python", "-c", "import guestfs")
    host = json.loads(inside("imagefactory", "--json", "host", "check"))
    assert host["missing_tools"] == {}, host
    assert {flavour: lacks for flavour, lacks in host["flavours"].items() if lacks} == {}
    assert host["tools"]["imagefactory"] == __version__
    inside("test", "-s", "/usr/share/keyrings/ubuntu-archive-keyring.gpg")
    with contextlib.suppress(AssertionError):
        buildah("rm", container)
