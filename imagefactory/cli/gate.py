"""``gate``, ``gate-libvirt-hook``, ``gate-hook-script``: the boot gate on a hypervisor host.

An error (bad policy, unreadable store) refuses the start with exit 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from imagefactory.cli.common import emit_json, user_path
from imagefactory.cli.verify import inspector
from imagefactory.errors import EXIT_ERROR, EXIT_OK, EXIT_VERDICT, UsageError
from imagefactory.settings import Settings

DEFAULT_TRUST_POLICY = Path("/etc/imagefactory/policy.yaml")
DEFAULT_STORE = Path("/var/lib/imagefactory/images")
DEFAULT_CACHE = Path("/var/cache/imagefactory/verified")
DEFAULT_RUN_DIR = Path("/var/lib/imagefactory/run")


def add_store_option(parser: argparse.ArgumentParser) -> None:
    """``--store``, as every command that reads the site's image store takes it."""
    parser.add_argument(
        "--store",
        type=user_path,
        default=DEFAULT_STORE,
        help=f"the image store (default {DEFAULT_STORE})",
    )


HOOK_SCRIPT = """\
#!/bin/sh
# libvirt hook installed by 'imagefactory gate-hook-script' as
# /etc/libvirt/hooks/qemu (KVM/QEMU) or /etc/libvirt/hooks/libxl (Xen): before a
# domain starts (prepare), every disk must pass 'imagefactory verify' against the
# site's trust policy; a non-zero exit refuses the start, stderr says why.
exec {python} -m imagefactory gate-libvirt-hook {options} -- "$@"
"""


def _gate_config(args: argparse.Namespace, settings: Settings) -> Any:
    from imagefactory.gate.check import GateConfig
    from imagefactory.trust import load_policy
    from imagefactory.verify import VerifyOptions
    from imagefactory.verify.cache import VerifiedCache

    cache = None if args.no_cache else VerifiedCache(args.cache)
    options = VerifyOptions(inspector=inspector(settings))
    return GateConfig(
        load_policy(args.policy),
        args.store,
        cache,
        options,
        hypervisors=tuple(str(h) for h in settings.hypervisors),
        firmware=tuple(str(f) for f in settings.firmware),
        run_dir=args.run_dir,
    )


def cmd_gate(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.gate.command import gate_command

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UsageError(
            "imagefactory gate: no command given", hint="gate [OPTIONS] -- qemu-system-x86_64 ..."
        )
    refusal = gate_command(command, _gate_config(args, settings), settings.hypervisors)
    sys.stderr.write(refusal.message + "\n")  # gate_command returns only to refuse
    if args.json:
        emit_json({"ok": False, "allowed": False, "refusal": refusal.message})
    return EXIT_VERDICT


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.gate.start import StartOptions, start_argv, start_node
    from imagefactory.host.accel import choose_accel

    qemu = start_argv(args.image, StartOptions())[0]
    accel = choose_accel(settings.accel, qemu, settings.cache_dir / "accel.json")
    options = StartOptions(accel, args.memory, args.cpus, not args.no_network, args.name)
    config = _gate_config(args, settings)
    refusal = start_node(args.image, config, list(settings.hypervisors), options)
    sys.stderr.write(refusal.message + "\n")  # start_node returns only to refuse
    if args.json:
        emit_json({"ok": False, "allowed": False, "refusal": refusal.message})
    return EXIT_VERDICT


def cmd_gate_libvirt_hook(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.gate.libvirt import run_hook

    code, message = run_hook(
        args.hook_args, sys.stdin.buffer.read(), lambda: _gate_config(args, settings)
    )
    sys.stderr.write(message)
    if args.json:
        emit_json({"ok": code == EXIT_OK, "exit_code": code, "message": message})
    return code


def cmd_gate_hook_script(args: argparse.Namespace, settings: Settings) -> int:
    import shlex

    options = ["--policy", str(args.policy), "--store", str(args.store)]
    options += ["--no-cache"] if args.no_cache else ["--cache", str(args.cache)]
    options += ["--run-dir", str(args.run_dir)]
    script = HOOK_SCRIPT.format(python=shlex.quote(sys.executable), options=shlex.join(options))
    if args.json:
        emit_json({"ok": True, "script": script})
    else:
        sys.stdout.write(script)
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    gate_options = argparse.ArgumentParser(add_help=False)
    gate_options.add_argument(
        "--policy",
        type=user_path,
        default=DEFAULT_TRUST_POLICY,
        help=f"trust policy (default {DEFAULT_TRUST_POLICY})",
    )
    add_store_option(gate_options)
    gate_options.add_argument(
        "--cache",
        type=user_path,
        default=DEFAULT_CACHE,
        help=f"verified cache (default {DEFAULT_CACHE})",
    )
    gate_options.add_argument("--no-cache", action="store_true", help="always verify in full")
    gate_options.add_argument(
        "--run-dir",
        type=user_path,
        default=DEFAULT_RUN_DIR,
        help="where imagefactory's overlays and their records are (the only overlays accepted)",
    )

    p = sub.add_parser(
        "gate",
        parents=[common, gate_options],
        help="verify the disks of a qemu command line, then run it: gate [...] -- qemu ...",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- and the qemu command line")
    p.set_defaults(func=cmd_gate, error_exit=EXIT_ERROR)

    p = sub.add_parser(
        "run",
        parents=[common, gate_options],
        help="start a worker node from a verified store image (fixed qemu command, disk"
        " through a verified descriptor, non-persistent)",
    )
    p.add_argument("image", type=user_path, help="the image directory in the store")
    p.add_argument("--memory", type=int, default=2048, help="MiB of guest memory")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--name", help="the guest's name")
    p.add_argument("--no-network", action="store_true", help="no NIC at all")
    p.set_defaults(func=cmd_run, error_exit=EXIT_ERROR)

    p = sub.add_parser(
        "gate-libvirt-hook",
        parents=[common, gate_options],
        help="the libvirt qemu hook (NAME OPERATION SUBOPERATION EXTRA, domain XML on stdin)",
    )
    p.add_argument("hook_args", nargs="*", metavar="ARG")
    p.set_defaults(func=cmd_gate_libvirt_hook, error_exit=EXIT_ERROR)

    p = sub.add_parser(
        "gate-hook-script",
        parents=[common, gate_options],
        help="print the libvirt hook (install as /etc/libvirt/hooks/qemu and/or"
        " /etc/libvirt/hooks/libxl) that runs the gate",
    )
    p.set_defaults(func=cmd_gate_hook_script)
