"""Seeded random command lines, domain XML and xl configurations against the gates.

The property, for each parser: whatever input the gate accepts opens only
verified files. For qemu: every descriptor handed over is the verified disk and
no argument left names a file (only ``/dev/fdset/N``). For domain XML and xl,
which open by path: every path left in an accepted input is a verified disk, or
a hypervisor / device the settings and the allowlist name. The generators mix
the real option tables with hostile pieces (evil paths, dotted keys, ``,,``,
repeated keys, positional words). Seeds are fixed: a failure is reproducible.
"""

# ruff: noqa: S311 -- seeded test generators, not cryptography
from __future__ import annotations

import dataclasses
import os
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from imagefactory.gate.bind import bind_qemu
from imagefactory.gate.check import check_disks
from imagefactory.gate.domainxml import SCHEMA
from imagefactory.gate.libvirt import domain_disks
from imagefactory.gate.qemu import DEVICES, parse_qemu
from imagefactory.gate.qemuopts import HAS_ARG, NO_ARG
from imagefactory.gate.xl import SETTINGS, parse_xl
from tests.gate.conftest import Store

QEMU = "/usr/bin/qemu-system-x86_64"
ROUNDS = 3000
EVIL = "/tmp/evil.img"
KEYS = [
    "file", "format", "if", "readonly", "snapshot", "media", "id", "driver", "cache",
    "file.filename", "backing.file.filename", "backing.driver", "node-name", "romfile",
    "kernel", "initrd", "type", "accel", "drive", "netdev", "tftp", "bootfile", "order",
]  # fmt: skip
VALUES = ["raw", "qcow2", "on", "off", "virtio", "none", "pflash", "tcg", "n", "c", "d0", EVIL]


def _keyval(rng: random.Random, good: str) -> str:
    parts = []
    for _ in range(rng.randint(0, 5)):
        key = rng.choice(KEYS)
        value = rng.choice([*VALUES, good, good.replace("/", ",,/", 1)])
        parts.append(rng.choice([f"{key}={value}", key, f"{key}=", value]))
    if rng.random() < 0.3:
        parts.insert(0, rng.choice([*DEVICES, "loader", "pc", "user", "tap"]))
    sep = rng.choice([",", ",,", ","])
    return sep.join(parts)


def _qemu_argv(rng: random.Random, good: str) -> list[str]:
    options = sorted(HAS_ARG | NO_ARG)
    common = ["drive", "device", "machine", "netdev", "boot", "S", "m", "display"]
    argv = [QEMU]
    for _ in range(rng.randint(1, 6)):
        roll = rng.random()
        if roll < 0.05:
            argv.append(rng.choice([good, EVIL, "--", "-"]))
            continue
        name = rng.choice(common) if roll < 0.7 else rng.choice(options)
        argv.append(("--" if rng.random() < 0.1 else "-") + name)
        if name in HAS_ARG or rng.random() < 0.05:
            if name == "drive" and rng.random() < 0.5:
                extra = rng.choice(["", ",if=virtio", ",snapshot=on", ",media=cdrom"])
                argv.append(f"file={rng.choice([good, EVIL])},format=raw,readonly=on{extra}")
            else:
                argv.append(_keyval(rng, good))
    return argv


_FDSET = re.compile(r"/dev/fdset/[0-9]+\Z")


def _paths_in(word: str) -> list[str]:
    """Every value in ``word`` that names a path (after ``=`` or the whole word)."""
    return [v for v in re.split(r"(?<!,),(?!,)|=", word) if v.startswith("/")]


def test_fuzz_qemu_accepted_argv_opens_only_verified_files(images: Store) -> None:
    rng = random.Random(10)
    good = str(images.good)
    good_stat = os.stat(good)
    accepted = 0
    for _ in range(ROUNDS):
        argv = _qemu_argv(rng, good)
        with bind_qemu(parse_qemu(argv), images.config) as bound:
            if not bound.result.allowed:
                continue
            accepted += 1
            for fd in bound.fds:
                assert os.path.samestat(os.fstat(fd), good_stat), argv
            for word in bound.argv[1:]:
                for path in _paths_in(word):
                    assert _FDSET.match(path), (argv, word)
    assert accepted > 50  # the generator reaches the accepting paths


def _domain(rng: random.Random, good: str) -> str:
    """A domain document from the schema's own paths plus hostile elements."""
    paths = [*SCHEMA, "domain/os/kernel", "domain/devices/hostdev", "domain/os/nvram"]
    root = ET.Element("domain", {"type": "qemu"})
    nodes = {"domain": root}
    for _ in range(rng.randint(3, 14)):
        path = rng.choice(paths)
        parent_path, _, tag = path.rpartition("/")
        parent = nodes.get(parent_path)
        if parent is None:
            continue
        node = ET.SubElement(parent, tag)
        nodes.setdefault(path, node)
        spec = SCHEMA.get(path)
        names = sorted(spec.attrs) if spec else ["file"]
        for attr in rng.sample(names, k=min(len(names), rng.randint(0, 2))):
            node.set(attr, rng.choice(["file", "raw", "qcow2", "virtio", "no", "1", good, EVIL]))
        if rng.random() < 0.3:
            node.text = rng.choice([good, EVIL, "hvm", "/usr/bin/qemu-system-x86_64", "64"])
    return ET.tostring(root, encoding="unicode")


def test_fuzz_domain_xml_accepted_opens_only_verified_files(images: Store) -> None:
    rng = random.Random(11)
    good = str(images.good)
    hypervisors = ["/usr/bin/qemu-system-x86_64"]
    config = dataclasses.replace(images.config, hypervisors=tuple(hypervisors))
    accepted = 0
    for _ in range(ROUNDS):
        text = _domain(rng, good)
        disks, refusals = domain_disks(text, hypervisors, ())
        if refusals or not check_disks(disks, config).allowed:
            continue
        accepted += 1
        root = ET.fromstring(text)  # noqa: S314 -- generated here
        for node in root.iter():
            free_text = node.tag in ("title", "description")  # shown, never opened
            for value in [*node.attrib.values(), "" if free_text else (node.text or "").strip()]:
                if value.startswith("/"):
                    assert value in (good, *hypervisors, "/dev/urandom", "/dev/random"), text
    assert accepted > 50


def test_fuzz_xl_accepted_config_opens_only_verified_files(images: Store, tmp_path: Path) -> None:
    rng = random.Random(12)
    good = str(images.good)
    keys = [*SETTINGS, "kernel", "bootloader", "device_model_args", "pci"]
    accepted = 0
    config = tmp_path / "wn.cfg"
    for _ in range(ROUNDS // 3):
        lines = []
        for key in rng.sample(keys, k=rng.randint(1, 5)):
            value = rng.choice(
                [
                    f'["format=raw, vdev=xvda, target={rng.choice([good, EVIL])}"]',
                    f'"{rng.choice([good, EVIL, "hvm", "pty", "c"])}"',
                    "1",
                    '["bridge=br0"]',
                    '["format=raw, script=/tmp/x, target=/tmp/y"]',
                ]
            )
            lines.append(f"{key} {rng.choice(['=', '=', '+='])} {value}")
        config.write_text(rng.choice(["\n", "; "]).join(lines) + "\n")
        command = parse_xl(["xl", "create", str(config)])
        if command.refusals or not check_disks(command.disks, images.config).allowed:
            continue
        accepted += 1
        for path in re.findall(r"/[^\"',\s\]]+", config.read_text()):
            assert path == good, config.read_text()
    assert accepted > 10


@pytest.mark.parametrize("seed", [1, 2])
def test_fuzz_keyval_never_raises_other_errors(seed: int) -> None:
    """Random bytes as option arguments: a refusal or an acceptance, never an exception."""
    rng = random.Random(seed)
    alphabet = "ab=,.{}/\x1b\u202e\0 -"
    for _ in range(ROUNDS):
        word = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        option = rng.choice(["-drive", "-device", "-machine", "-boot", "-netdev", "-m", word])
        parse_qemu([QEMU, option, word])
