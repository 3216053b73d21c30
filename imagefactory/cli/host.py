"""``host check``: the build host's tools, accelerator, archives and versions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from imagefactory.cli.common import Parser, emit_json
from imagefactory.errors import EXIT_OK, EXIT_VERDICT
from imagefactory.settings import Settings
from imagefactory.vocab import Arch


def cmd_host_check(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.boot.qemu import UEFI_FIRMWARE
    from imagefactory.host.accel import choose_accel
    from imagefactory.host.tools import (
        BUILD_TOOLS,
        UEFI_TOOLS,
        flavour_problems,
        flavours,
        missing,
        tool_versions,
    )
    from imagefactory.mirrors import resolve_archive
    from imagefactory.vocab import Distro

    emulators = tuple(sorted({a.qemu_system for a in Arch}))
    every = missing((*BUILD_TOOLS, *UEFI_TOOLS, *emulators), Path(sys.executable).parent)
    absent = {t: p for t, p in every.items() if t in (*BUILD_TOOLS, "qemu-system-x86_64")}

    def firmware(arch: Arch) -> Path | None:
        found = UEFI_FIRMWARE.get(arch)
        return found.code if found is not None and found.present() else None

    flavour_report = {
        f.name: flavour_problems(f, absent=every, firmware=firmware) for f in flavours()
    }
    accel = choose_accel(settings.accel, "qemu-system-x86_64", settings.cache_dir / "accel.json")
    archives = {}
    for distro in Distro:
        release = distro.releases[-1]
        archive = resolve_archive(distro, release.codename, Arch.X86_64, settings.mirrors)
        archives[str(distro)] = {
            "mirror": archive.mirror,
            "security_mirror": archive.security_mirror,
            "origin": archive.origin,
        }
    versions = tool_versions()
    report: dict[str, Any] = {
        "settings": str(settings.source) if settings.source else None,
        "missing_tools": absent,
        "accel": accel,
        "tools": versions,
        "archives": archives,
        "flavours": flavour_report,
    }
    if args.json:
        emit_json(report)
    else:
        sys.stdout.write(f"settings: {report['settings'] or '(defaults)'}\n")
        sys.stdout.write(f"qemu accelerator: {accel}\n")
        for name, info in archives.items():
            sys.stdout.write(f"{name} archive: {info['mirror']} ({info['origin']})\n")
        for name, version in versions.items():
            sys.stdout.write(f"{name}: {version}\n")
        for name, problems in flavour_report.items():
            state = "ready" if not problems else "NOT READY: " + "; ".join(problems)
            sys.stdout.write(f"flavour {name}: {state}\n")
        for tool, package in absent.items():
            sys.stdout.write(f"MISSING {tool} (Debian package {package})\n")
    return EXIT_VERDICT if absent else EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    host = sub.add_parser("host", help="the build host")
    hsub = host.add_subparsers(dest="host_command", required=True, parser_class=Parser)
    p = hsub.add_parser(
        "check", parents=[common], help="tools, accelerator, archives and versions of this host"
    )
    p.set_defaults(func=cmd_host_check)
