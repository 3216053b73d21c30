"""``imagefactory run IMAGE-DIR``: start a worker node from a verified store image.

The command line is the gate's own, fixed and minimal: the architecture's qemu
(one the settings name), no default devices or user config, no display, the
serial console on stdio, the image's disk through a descriptor the gate
opened and verified, as a non-persistent node (``snapshot=on``: a temporary
overlay on top of the open, read-only image, discarded when qemu exits), no
network boot ROM, optionally a user-mode NIC. Firmware is qemu's packaged
default (SeaBIOS); kernels, initrds and other boot code are never passed. The
command then goes through the same reading and binding as any command given
to ``imagefactory gate --`` (:mod:`.qemu`, :mod:`.bind`), so ``run`` can start
nothing the gate would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imagefactory.gate.bind import bind_qemu
from imagefactory.gate.check import GateConfig
from imagefactory.gate.command import Refusal, resolve_hypervisor
from imagefactory.gate.qemu import parse_qemu
from imagefactory.gate.text import shown
from imagefactory.model.imagedir import LayoutError, load_image_dir
from imagefactory.run import replace_process
from imagefactory.vocab import Arch

_MACHINE = {Arch.X86_64: "pc", Arch.I386: "pc", Arch.AARCH64: "virt"}


@dataclass(frozen=True)
class StartOptions:
    """What a site may choose for a node; everything else is fixed."""

    accel: str = "tcg"
    memory_mib: int = 2048
    cpus: int = 2
    network: bool = True
    name: str | None = None


def start_argv(image_dir: Path, options: StartOptions) -> list[str]:
    """The fixed qemu command for the image in ``image_dir`` (before binding)."""
    image = load_image_dir(image_dir)
    try:
        arch = Arch(str(image.labels["os"]["arch"]))
        boot_mode = image.labels["disk"].get("boot_mode", "bios")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise LayoutError(f"{image.labels_path}: no usable os.arch / disk.boot_mode") from exc
    if boot_mode != "bios":
        raise LayoutError(
            f"{image.labels_path}: boot mode {shown(str(boot_mode))}:"
            " imagefactory run starts BIOS images only (UEFI firmware is not wired yet)"
        )
    disk = str(image.disk).replace(",", ",,")
    argv = [arch.qemu_system, "-machine", _MACHINE[arch], "-accel", options.accel]
    argv += ["-m", str(options.memory_mib), "-smp", str(options.cpus)]
    argv += ["-display", "none", "-serial", "stdio", "-no-reboot"]
    if options.name:
        argv += ["-name", options.name]
    argv += ["-drive", f"file={disk},format={image.declared_format},if=virtio,snapshot=on"]
    if options.network:
        argv += ["-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0"]
    else:
        argv += ["-nic", "none"]
    return argv


def start_node(  # noqa: RET503 -- replace_process never returns
    image_dir: Path, config: GateConfig, hypervisors: list[Path], options: StartOptions
) -> Refusal:
    """Verify the image and become qemu running it; returns only with a refusal."""
    argv = start_argv(image_dir, options)
    program = resolve_hypervisor(argv[0], hypervisors)
    if program is None:
        return Refusal(
            f"imagefactory run: {shown(argv[0])} is not a hypervisor the settings name"
            " (gate.hypervisors)"
        )
    argv[0] = str(program)
    with bind_qemu(parse_qemu(argv), config) as bound:
        if not bound.result.allowed:
            return Refusal(bound.result.render(f"image {image_dir}"))
        replace_process(bound.argv, pass_fds=bound.fds)
