"""qemu's option table, as the gate knows it: every option, whether it takes an argument.

qemu (``softmmu/vl.c``, ``lookup_opt``) reads its argv so: an element not
starting with ``-`` is a disk image (``-hda``, format probed); ``--name`` is
``-name``; an option with ``HAS_ARG`` in ``qemu-options.hx`` takes the *next*
element as its argument whatever it looks like; any other name is an error.
The table below is qemu 7.2's (``qemu-system-x86_64 -help`` plus the options
it hides). The gate reads argv with it so that it never takes an option's
argument for an option or the reverse; an option missing from the table is
refused, and reading stops there, since its arity is unknown.

:data:`ALLOWED` are the options the gate lets through (their arguments are
checked further in :mod:`imagefactory.gate.qemu`); every other known option is
refused by name, most with the reason in :data:`REFUSED_WHY`.
"""

from __future__ import annotations


def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: Options without an argument.
NO_ARG = _names(
    """
    S s h help version audio-help enable-kvm nodefaults no-user-config nographic
    no-reboot no-shutdown no-acpi no-hpet no-fd-bootchk mem-prealloc snapshot usb
    daemonize portrait full-screen win2k-hack singlestep only-migratable xen-attach
    xen-domid-restrict enable-sync-profile preconfig async-teardown
    """
)

#: Options taking the next argv element as their argument.
HAS_ARG = _names(
    """
    machine M cpu accel smp numa add-fd set global boot m mem-path k audio audiodev
    device name uuid fda fdb hda hdb hdc hdd cdrom blockdev drive mtdblock sd pflash
    fsdev virtfs iscsi display vga vnc spice rotate g action netdev nic net
    chardev tpmdev bios kernel append initrd dtb fw_cfg serial parallel monitor qmp
    qmp-pretty mon debugcon pidfile L option-rom rtc icount watchdog-action echr
    incoming loadvm chroot runas readconfig object plugin trace D d dfilter seed
    sandbox msg dump-vmstate overcommit compat smbios acpitable usbdevice gdb
    xen-domid
    """
)

#: What the gate lets through; each one's argument is checked in :mod:`.qemu`.
ALLOWED = _names(
    """
    S nodefaults no-user-config nographic no-reboot no-shutdown enable-kvm
    machine M accel cpu smp m name uuid display vga serial boot drive device netdev
    rtc k runas sandbox overcommit nic
    """
)

_DISK = "a disk given this way is opened by path, its format probed; use -drive"
_BOOT = "boot code that no verified image vouches for"
#: Why a known option is refused (the rest: "not in the gate's allowlist").
REFUSED_WHY = {
    **dict.fromkeys(("hda", "hdb", "hdc", "hdd", "cdrom", "fda", "fdb", "sd", "mtdblock"), _DISK),
    **dict.fromkeys(("kernel", "initrd", "append", "dtb"), "direct kernel boot: " + _BOOT),
    **dict.fromkeys(("bios", "pflash", "option-rom", "L"), "firmware from a path: " + _BOOT),
    "set": "changes any option of any drive or device after it was checked",
    "global": "sets properties (files, ROMs, drives) of devices the gate does not see",
    "readconfig": "drives and devices from a file the gate does not read",
    "incoming": "takes the whole machine state from elsewhere (exec: runs a shell command)",
    "loadvm": "restores a machine state the gate has not checked",
    "blockdev": "not supported by the gate; use -drive (the gate binds it to a descriptor)",
    "add-fd": "descriptors are the gate's own to hand out",
    "object": "objects open files (memory-backend-file, secret, rng) by path",
    "chardev": "character devices open files and sockets and run nothing the gate checks",
    "monitor": "a monitor can add disks by path after the gate checked",
    "qmp": "a monitor can add disks by path after the gate checked",
    "qmp-pretty": "a monitor can add disks by path after the gate checked",
    "mon": "a monitor can add disks by path after the gate checked",
    "fw_cfg": "hands files to the firmware",
    "smbios": "reads tables from a file",
    "acpitable": "reads tables from a file",
    "net": "network boot and host files (tftp=, bootfile=); use -netdev user + -device",
    "fsdev": "exports a host directory to the guest",
    "virtfs": "exports a host directory to the guest",
    "daemonize": "the gate must remain the hypervisor's process",
    "pidfile": "writes a host file as root",
    "D": "writes a host file as root",
    "trace": "reads and writes host files",
    "plugin": "loads a shared object into qemu",
    "mem-path": "guest memory in a host file",
    "usbdevice": "attaches host or file-backed USB devices",
    "chroot": "changes where relative paths resolve",
}
