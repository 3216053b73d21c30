"""``boot-test``: boot an image under qemu and wait for the login prompt."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from imagefactory.cli.common import STATED_FORMATS, emit_json, user_path
from imagefactory.errors import EXIT_OK, EXIT_VERDICT, UsageError
from imagefactory.settings import Settings
from imagefactory.vocab import Arch, BootMode


def cmd_boot_test(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.boot.qemu import boot_test
    from imagefactory.diskformat import check_safe
    from imagefactory.diskprobe import boot_mode, require_disk, require_file
    from imagefactory.progress import Progress

    # The arguments first: a bad --marker is known before any file is read.
    try:
        re.compile(args.marker)
    except re.error as exc:
        raise UsageError(
            f"--marker {args.marker!r} is not a regular expression: {exc}",
            hint=r"the default is '\blogin: '",
        ) from exc
    require_file(args.image)
    info = check_safe(args.image, declared_format=args.format)
    # Before qemu: a file with no partition table would only time out.
    require_disk(args.image, info.format)
    console = args.console_log or Path(f"{args.image.name}.console.log")
    progress = Progress(total=1, quiet=args.json)
    # Unless stated: the firmware the disk's partition table asks for (GPT + ESP: UEFI).
    mode = BootMode(args.boot_mode) if args.boot_mode else boot_mode(args.image, info.format)
    how = "" if args.boot_mode else ", read from its partition table"
    with progress.step("boot-test", f"boot {args.image} ({info.format}, {mode}{how}) under qemu"):
        result = boot_test(
            args.image,
            info.format,
            Arch(args.arch),
            console,
            accel_setting=settings.accel,
            accel_cache=settings.cache_dir / "accel.json",
            marker=args.marker,
            timeout=args.timeout,
            boot_mode=mode,
        )
    if args.json:
        emit_json(result.to_dict())
    else:
        verdict = "PASS" if result.passed else "FAIL"
        sys.stdout.write(
            f"{verdict}: {args.image}: {result.reason} ({result.accel}); console log: {console}\n"
        )
    return EXIT_OK if result.passed else EXIT_VERDICT


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("boot-test", parents=[common], help="boot an image under qemu")
    p.add_argument("image", type=user_path)
    p.add_argument(
        "--format",
        choices=STATED_FORMATS,
        help="the format the image must have (checked, never auto-detected)",
    )
    p.add_argument("--arch", choices=[a.value for a in Arch], default="x86_64")
    p.add_argument(
        "--boot-mode",
        choices=[m.value for m in BootMode],
        help="the firmware: bios, or uefi (OVMF on x86_64, AAVMF on aarch64); default: read"
        " from the disk (a GPT with an EFI system partition is uefi)",
    )
    p.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS")
    p.add_argument(
        "--marker",
        default=r"\blogin: ",
        help="regex on the serial console that proves userspace is up",
    )
    p.add_argument("--console-log", type=user_path, help="where to save the serial console")
    p.set_defaults(func=cmd_boot_test)
