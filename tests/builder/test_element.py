from __future__ import annotations

import hashlib
import stat
from pathlib import Path

from imagefactory.builder.element import (
    ELEMENT_NAME,
    digest_files,
    element_files,
    write_element,
)
from imagefactory.recipe import BuildLimits, RepositoryAllowance, load_recipe
from tests.conftest import RECIPES


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


BASE = """\
name: t
version: "1"
base: {distro: debian, release: "12"}
vo: atlas
"""


def test_package_list_has_boot_packages_kernel_then_recipe_packages(tmp_path: Path) -> None:
    recipe = load_recipe(_write(tmp_path, "r.yaml", BASE + "packages: [less, chrony]\n"))
    files = element_files(recipe)
    assert files["package-installs.yaml"] == (
        b"systemd-sysv:\ninitramfs-tools:\ngrub-pc:\nlinux-image-amd64:\nless:\nchrony:\n",
        0o644,
    )
    # DIB's 'base' element is left out (-n); its dependencies come from here.
    assert files["element-deps"] == (
        b"dib-init-system\ninstall-types\npackage-installs\npkg-map\n",
        0o644,
    )
    script, mode = files["install.d/00-up-to-date"]
    assert script.decode().splitlines()[-1] == "install-packages -u"
    assert mode == 0o755


def test_i386_gets_the_686_kernel(tmp_path: Path) -> None:
    recipe = load_recipe(_write(tmp_path, "r.yaml", BASE.replace('"12"}', '"12", arch: i386}')))
    assert b"linux-image-686:\n" in element_files(recipe)["package-installs.yaml"][0]


def test_files_become_blobs_and_one_quoted_install_script(tmp_path: Path) -> None:
    recipe = load_recipe(
        _write(
            tmp_path,
            "r.yaml",
            BASE
            + "files:\n"
            + "  - {path: /etc/motd, content: hello}\n"
            + '  - {path: "/etc/x y/it\'s", content: a, mode: "0600", owner: daemon}\n',
        )
    )
    files = element_files(recipe)
    motd = hashlib.sha256(b"hello").hexdigest()
    other = hashlib.sha256(b"a").hexdigest()
    assert files[f"install.d/imagefactory-files/{motd}"] == (b"hello", 0o644)
    script, mode = files["install.d/50-imagefactory-files"]
    assert mode == 0o755
    assert script.decode().splitlines()[-2:] == [
        f'install -D -m 0644 -o root -g root "$src/{motd}" /etc/motd',
        f"install -D -m 0600 -o daemon -g root \"$src/{other}\" '/etc/x y/it'\"'\"'s'",
    ]


def test_services_script(tmp_path: Path) -> None:
    recipe = load_recipe(
        _write(
            tmp_path,
            "r.yaml",
            BASE + "services: {enable: [chrony.service], disable: [rsyslog.service]}\n",
        )
    )
    script, _ = element_files(recipe)["post-install.d/50-imagefactory-services"]
    assert script.decode().splitlines()[-2:] == [
        "systemctl enable chrony.service",
        "systemctl disable rsyslog.service",
    ]


def test_no_service_or_file_scripts_when_recipe_has_none(tmp_path: Path) -> None:
    files = element_files(load_recipe(_write(tmp_path, "r.yaml", BASE)))
    assert sorted(files) == [
        "README.rst",
        "element-deps",
        "finalise.d/90-imagefactory-bootloader",
        "install.d/00-up-to-date",
        "package-installs.yaml",
    ]


def test_scripts_go_to_their_phase_when_the_host_allows_them(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "r.yaml",
        BASE + "scripts:\n" + "  - {name: tune, phase: post-install, content: 'echo hi'}\n",
    )
    recipe = load_recipe(path, BuildLimits(allow_scripts=True))
    script, mode = element_files(recipe)["post-install.d/70-recipe-tune"]
    assert mode == 0o755
    assert script.decode().endswith("# recipe script 'tune'\necho hi\n")
    assert script.startswith(b"#!/bin/bash\n")


def test_bootloader_script_builds_core_img_with_the_images_own_grub(tmp_path: Path) -> None:
    files = element_files(load_recipe(_write(tmp_path, "r.yaml", BASE)))
    script = files["finalise.d/90-imagefactory-bootloader"][0].decode()
    assert (
        "grub-mkimage -O i386-pc -o /boot/grub/i386-pc/core.img"
        " -p '(hd0,msdos1)/boot/grub' biosdisk part_msdos ext2"
    ) in script


def test_written_element_matches_files_and_digest_is_stable(tmp_path: Path) -> None:
    recipe = load_recipe(RECIPES / "atlas-wn-debian12.yaml")
    first = write_element(recipe, tmp_path / "a")
    second = write_element(recipe, tmp_path / "b")
    assert first.digest == second.digest == digest_files(element_files(recipe))
    assert first.name == ELEMENT_NAME
    script = tmp_path / "a" / ELEMENT_NAME / "finalise.d/90-imagefactory-bootloader"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755


def test_digest_changes_with_content_and_mode() -> None:
    base = {"a": (b"x", 0o644)}
    assert digest_files(base) != digest_files({"a": (b"y", 0o644)})
    assert digest_files(base) != digest_files({"a": (b"x", 0o755)})
    assert digest_files(base) != digest_files({"b": (b"x", 0o644)})


def test_uefi_x86_64_takes_the_signed_shim_and_grub_instead_of_grub_pc(tmp_path: Path) -> None:
    recipe = load_recipe(_write(tmp_path, "r.yaml", BASE + "boot: uefi\n"))
    files = element_files(recipe)
    packages = files["package-installs.yaml"][0].decode().split()
    assert "grub-pc:" not in packages
    assert packages[:5] == [
        "systemd-sysv:",
        "initramfs-tools:",
        "grub-efi-amd64:",
        "grub-efi-amd64-signed:",
        "shim-signed:",
    ]
    script = files["finalise.d/90-imagefactory-bootloader"][0].decode()
    assert "vendor=debian\n" in script
    assert "suffix=x64\n" in script
    assert 'cp "$shim" "$esp/EFI/BOOT/BOOT${suffix^^}.EFI"' in script
    # Without shim and signed GRUB: an unsigned GRUB on the same removable path.
    assert 'grub-mkimage -O "$platform" -o "$esp/EFI/BOOT/BOOT${suffix^^}.EFI"' in script
    assert "core.img" not in script


def test_uefi_changes_the_element_digest(tmp_path: Path) -> None:
    bios = element_files(load_recipe(_write(tmp_path, "a.yaml", BASE)))
    uefi = element_files(load_recipe(_write(tmp_path, "b.yaml", BASE + "boot: uefi\n")))
    assert digest_files(bios) != digest_files(uefi)


def test_repositories_become_deb822_sources_signed_by_their_pinned_key(tmp_path: Path) -> None:
    fpr = "0123456789ABCDEF0123456789ABCDEF01234567"
    url = "https://repo.example.org/cvmfs"
    recipe = load_recipe(
        _write(
            tmp_path,
            "r.yaml",
            BASE + "packages: [cvmfs]\nrepositories:\n"
            f"  - {{name: cvmfs, url: {url}, suites: [bookworm-prod, extra],"
            f" components: [main, contrib], key: {{fingerprint: {fpr}}}, arch: [x86_64]}}\n",
        ),
        BuildLimits(allowed_repositories=(RepositoryAllowance(url, frozenset({fpr})),)),
    )
    key = b"\x99binary key packets"
    files = element_files(recipe, {"cvmfs": key})
    # Before the package installs (install.d), so cvmfs resolves from it.
    script, mode = files["pre-install.d/50-imagefactory-repositories"]
    assert mode == 0o755
    assert script.decode().splitlines()[-4:] == [
        "install -d -m 0755 /etc/apt/keyrings /etc/apt/sources.list.d",
        'install -m 0644 "$src/cvmfs.gpg" /etc/apt/keyrings/cvmfs.gpg',
        'install -m 0644 "$src/cvmfs.sources" /etc/apt/sources.list.d/cvmfs.sources',
        "apt-get update",
    ]
    assert files["pre-install.d/imagefactory-repositories/cvmfs.gpg"] == (key, 0o644)
    sources, _ = files["pre-install.d/imagefactory-repositories/cvmfs.sources"]
    assert sources.decode().splitlines()[1:] == [
        "Types: deb",
        f"URIs: {url}",
        "Suites: bookworm-prod extra",
        "Components: main contrib",
        "Signed-By: /etc/apt/keyrings/cvmfs.gpg",
        "Architectures: amd64",
    ]
    # Another key is another element (and another cache key).
    assert digest_files(files) != digest_files(element_files(recipe, {"cvmfs": key + b"x"}))
    assert "pre-install.d/50-imagefactory-repositories" not in element_files(
        load_recipe(_write(tmp_path, "plain.yaml", BASE))
    )
