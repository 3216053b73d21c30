from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from imagefactory.builder import dib
from imagefactory.mirrors import BaseArchive
from imagefactory.recipe import load_recipe
from imagefactory.vocab import Distro
from tests.conftest import RECIPES

BIN = str(Path(sys.executable).parent)
ARCHIVE = BaseArchive(
    distro=Distro.DEBIAN,
    release="bookworm",
    mirror="http://mirror.test/debian",
    security_mirror="http://mirror.test/debian-security",
    origin="settings",
)


def _scripts(tmp_path: Path, *releases: str) -> Path:
    """A fake debootstrap scripts directory holding ``releases``."""
    scripts = tmp_path / "debootstrap-scripts"
    scripts.mkdir(exist_ok=True)
    for release in releases:
        (scripts / release).write_text("# a debootstrap script\n")
    return scripts


def test_exact_argv_and_environment_for_the_example_recipe(tmp_path: Path) -> None:
    recipe = load_recipe(RECIPES / "atlas-wn-debian12.yaml")
    call = dib.invocation(
        recipe,
        archive=ARCHIVE,
        elements_path=tmp_path / "elements",
        element_name="imagefactory-recipe",
        output_dir=tmp_path / "stage",
        image_cache=tmp_path / "cache",
        debootstrap_scripts=_scripts(tmp_path, "bookworm", "sid"),
    )
    assert call.argv == [
        f"{BIN}/disk-image-create",
        "-a",
        "amd64",
        "-t",
        "tar",
        "-o",
        f"{tmp_path}/stage/rootfs",
        "-n",
        "debian-minimal",
        "imagefactory-recipe",
    ]
    assert call.env == {
        "PATH": f"{BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "TMP_DIR": f"{tmp_path}/stage/dib-tmp",
        "ELEMENTS_PATH": f"{tmp_path}/elements",
        "DIB_RELEASE": "bookworm",
        "DIB_IMAGE_CACHE": f"{tmp_path}/cache",
        "DIB_DEBOOTSTRAP_CACHE": "1",
        "DIB_DEBIAN_USE_DEBOOTSTRAP_CACHE": "1",
        "DIB_DEBIAN_COMPONENTS": "main",
        "DIB_NETWORK_INTERFACE_NAMES": "eth0",
        "DIB_DISTRIBUTION_MIRROR": "http://mirror.test/debian",
        "DIB_DEBIAN_SECURITY_MIRROR": "http://mirror.test/debian-security",
    }
    assert call.tar_path == tmp_path / "stage" / "rootfs.tar"
    assert call.manifest_dir == tmp_path / "stage" / "rootfs.d" / "dib-manifests"


def test_a_build_asks_for_the_root_file_system_image(tmp_path: Path) -> None:
    recipe = load_recipe(RECIPES / "atlas-wn-debian12.yaml")
    kwargs = {
        "archive": ARCHIVE,
        "elements_path": tmp_path / "elements",
        "element_name": "imagefactory-recipe",
        "output_dir": tmp_path / "stage",
        "image_cache": tmp_path / "cache",
    }
    call = dib.invocation(recipe, output_type="raw", **kwargs)  # type: ignore[arg-type]
    assert call.argv[call.argv.index("-t") + 1] == "raw"
    assert call.argv[call.argv.index("-o") + 1] == str(tmp_path / "stage" / "rootfs")
    # Its root file system without a journal (staging only), DIB's config otherwise.
    config = yaml.safe_load(call.env["DIB_BLOCK_DEVICE_CONFIG"])
    assert config == [
        {
            "local_loop": {
                "name": "image0",
                "mkfs": {
                    "name": "mkfs_root",
                    "opts": "-i 4096 -O ^has_journal",
                    "mount": {
                        "mount_point": "/",
                        "fstab": {"options": "defaults", "fsck-passno": 1},
                    },
                },
            }
        }
    ]
    # A layer (a tar) has no block device.
    assert "DIB_BLOCK_DEVICE_CONFIG" not in dib.invocation(recipe, **kwargs).env  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="qcow2"):
        dib.invocation(recipe, output_type="qcow2", **kwargs)  # type: ignore[arg-type]


def test_ubuntu_i386_and_extra_elements(tmp_path: Path) -> None:
    recipe_path = tmp_path / "u.yaml"
    recipe_path.write_text(
        'name: u\nversion: "1"\nbase: {distro: ubuntu, release: "24.04"}\nvo: cms\n'
        "elements: [growroot]\n",
        encoding="utf-8",
    )
    recipe = load_recipe(recipe_path)
    archive = BaseArchive(Distro.UBUNTU, "noble", "http://mirror.test/ubuntu", None, "settings")
    call = dib.invocation(
        recipe,
        archive=archive,
        elements_path=tmp_path,
        element_name="imagefactory-recipe",
        output_dir=tmp_path,
        image_cache=tmp_path,
        keyrings={"ubuntu": Path("/k.gpg")},
        debootstrap_scripts=_scripts(tmp_path, "noble", "gutsy"),
    )
    assert call.argv[-3:] == ["ubuntu-minimal", "imagefactory-recipe", "growroot"]
    assert call.env["DIB_RELEASE"] == "noble"
    assert call.env["DIB_UBUNTU_MIRROR_DISTS"] == "updates,security"
    # the small VM kernel, as the element asks, not ubuntu-minimal's linux-image-generic
    assert call.env["DIB_UBUNTU_KERNEL"] == "linux-image-virtual"
    assert call.env["DIB_APT_KEYRING"] == "/k.gpg"
    assert "DIB_DEBIAN_SECURITY_MIRROR" not in call.env
    assert "DIB_DEBIAN_DEBOOTSTRAP_SCRIPT" not in call.env


def test_release_newer_than_the_hosts_debootstrap_uses_the_family_script(
    tmp_path: Path,
) -> None:
    recipe = load_recipe(RECIPES / "ubuntu2404.yaml")
    archive = BaseArchive(Distro.UBUNTU, "noble", "http://mirror.test/ubuntu", None, "settings")
    scripts = _scripts(tmp_path, "jammy", "gutsy")  # Debian 12's debootstrap: no noble
    call = dib.invocation(
        recipe,
        archive=archive,
        elements_path=tmp_path,
        element_name="x",
        output_dir=tmp_path,
        image_cache=tmp_path,
        debootstrap_scripts=scripts,
    )
    assert call.env["DIB_DEBIAN_DEBOOTSTRAP_SCRIPT"] == str(scripts / "gutsy")


def test_i386_uses_dib_arch_name() -> None:
    recipe = load_recipe(RECIPES / "debian12-i386.yaml")
    call = dib.invocation(
        recipe,
        archive=ARCHIVE,
        elements_path=Path("/e"),
        element_name="x",
        output_dir=Path("/o"),
        image_cache=Path("/c"),
    )
    assert call.argv[1:3] == ["-a", "i386"]


def test_phase_of_dib_lines() -> None:
    line = (
        "2026-11-25 06:20:18.271 | dib-run-parts Running "
        "/tmp/in_target.d/install.d/01-package-installs"
    )
    assert dib.phase_of(line) == "install.d/01-package-installs"
    assert dib.phase_of("Unpacking gpg (2.2.40) ...") is None


def test_apt_errors_and_progress_from_dib_lines() -> None:
    stamp = "2026-12-01 20:10:00.123 | "
    assert dib.apt_error(stamp + "E: Unable to locate package cvmfs\n") == (
        "E: Unable to locate package cvmfs"
    )
    assert dib.apt_error("E: Package 'x' has no installation candidate") == (
        "E: Package 'x' has no installation candidate"
    )
    assert dib.apt_error(stamp + "dpkg: error processing package foo (--configure):") == (
        "dpkg: error processing package foo (--configure):"
    )
    assert dib.apt_error(stamp + "Reading package lists...") is None
    assert dib.apt_error(stamp + "E: is not an error without apt's prefix at the start") == (
        "E: is not an error without apt's prefix at the start"
    )
    assert dib.apt_error("SOME E: inside a line") is None
    assert dib.apt_progress(stamp + "Setting up chrony (4.3-2+deb12u1) ...") == "setting up chrony"
    assert dib.apt_progress("Unpacking libc6:amd64 (2.36-9) ...") == "unpacking libc6"
    # As a real build log has them: DIB's "> " before a hook's output.
    assert dib.apt_progress(stamp + "> Unpacking linux-image-amd64 (6.1.192-3) ...") == (
        "unpacking linux-image-amd64"
    )
    assert dib.apt_error(stamp + "> E: Unable to locate package cvmfs") == (
        "E: Unable to locate package cvmfs"
    )
    assert dib.apt_progress("Preparing to unpack ...") is None
