"""The boot mode is read from the disk: UEFI needs an ESP that holds a loader."""

from __future__ import annotations

import pytest

from imagefactory.guest.handle import ESP_GPT_TYPE, Guest, boot_mode

LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


class FakeHandle:
    """The few libguestfs calls boot_mode makes, over one disk /dev/sda."""

    def __init__(self, table: str, types: list[str], esp_files: dict[str, str]) -> None:
        self.table = table
        self.types = types
        #: Path on the ESP (as the ESP's own root sees it) -> "dir" or "file".
        self.esp_files = esp_files
        self.root_dirs = {"/", "/boot", "/boot/efi"}
        self.mounted: dict[str, str] = {}
        self.unmounted: list[str] = []

    def list_devices(self) -> list[str]:
        return ["/dev/sda"]

    def part_get_parttype(self, device: str) -> str:
        return self.table

    def list_partitions(self) -> list[str]:
        return [f"/dev/sda{n + 1}" for n in range(len(self.types))]

    def part_to_dev(self, partition: str) -> str:
        return partition.rstrip("0123456789")

    def part_to_partnum(self, partition: str) -> int:
        return int(partition.removeprefix("/dev/sda"))

    def part_get_gpt_type(self, device: str, number: int) -> str:
        return self.types[number - 1]

    def mount_ro(self, partition: str, where: str) -> None:
        self.mounted[where] = partition

    def umount(self, where: str) -> None:
        self.unmounted.append(where)
        del self.mounted[where]

    def _esp_path(self, path: str) -> str | None:
        for where in self.mounted:
            if path == where or path.startswith(where + "/"):
                return path[len(where) :] or "/"
        return None

    def is_dir(self, path: str, followsymlinks: bool = False) -> bool:
        inner = self._esp_path(path)
        if inner is None:
            return path in self.root_dirs
        return inner == "/" or self.esp_files.get(inner) == "dir"

    def is_file(self, path: str, followsymlinks: bool = False) -> bool:
        inner = self._esp_path(path)
        return inner is not None and self.esp_files.get(inner) == "file"

    def ls(self, path: str) -> list[str]:
        inner = self._esp_path(path)
        assert inner is not None
        prefix = inner.rstrip("/") + "/"
        return sorted(
            {p[len(prefix) :].split("/")[0] for p in self.esp_files if p.startswith(prefix)}
        )


def _guest(handle: FakeHandle) -> Guest:
    return Guest(
        g=handle,
        readonly=True,
        root="/dev/sda2",
        mountpoints={"/": "/dev/sda2"},
        accel="tcg",
        launch_seconds=0.0,
    )


LOADER = {"/EFI": "dir", "/EFI/BOOT": "dir", "/EFI/BOOT/BOOTX64.EFI": "file"}


def test_a_gpt_disk_whose_esp_holds_the_removable_loader_is_uefi() -> None:
    handle = FakeHandle("gpt", [ESP_GPT_TYPE.lower(), LINUX], LOADER)
    assert boot_mode(_guest(handle)) == "uefi"
    assert handle.unmounted == ["/boot/efi"]  # looked at, and unmounted again
    assert handle.mounted == {}


def test_fat_names_match_in_any_case() -> None:
    files = {"/efi": "dir", "/efi/boot": "dir", "/efi/boot/bootaa64.efi": "file"}
    assert boot_mode(_guest(FakeHandle("gpt", [ESP_GPT_TYPE, LINUX], files))) == "uefi"


@pytest.mark.parametrize(
    ("table", "types", "files"),
    [
        ("msdos", [LINUX], LOADER),  # MBR: BIOS, whatever a partition holds
        ("gpt", [LINUX], {}),  # GPT without an ESP
        ("gpt", [ESP_GPT_TYPE, LINUX], {}),  # an empty ESP
        ("gpt", [ESP_GPT_TYPE, LINUX], {"/EFI": "dir", "/EFI/debian": "dir"}),
        # a loader only under a vendor directory needs an NVRAM entry no image brings
        (
            "gpt",
            [ESP_GPT_TYPE, LINUX],
            {"/EFI": "dir", "/EFI/BOOT": "dir", "/EFI/BOOT/grubx64.efi": "file"},
        ),
        # a directory named like a loader is not one
        (
            "gpt",
            [ESP_GPT_TYPE, LINUX],
            {"/EFI": "dir", "/EFI/BOOT": "dir", "/EFI/BOOT/BOOTX64.EFI": "dir"},
        ),
    ],
)
def test_without_an_esp_holding_a_loader_it_is_bios(
    table: str, types: list[str], files: dict[str, str]
) -> None:
    assert boot_mode(_guest(FakeHandle(table, types, files))) == "bios"


def test_an_esp_with_nowhere_to_mount_it_is_not_taken_for_uefi() -> None:
    handle = FakeHandle("gpt", [ESP_GPT_TYPE, LINUX], LOADER)
    handle.root_dirs = {"/"}
    assert boot_mode(_guest(handle)) == "bios"
