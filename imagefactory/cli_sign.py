"""The command line of signing and verifying: ``key``, ``sign``, ``verify``, ``policy``.

Kept apart from :mod:`imagefactory.cli` (which only registers these parsers)
so each concern's commands live beside each other. ``verify`` exits 0 when
the image is allowed, 1 when it is denied and 2 when it could not decide (an
unreadable or invalid policy, a bad argument).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from imagefactory.cli import user_path
from imagefactory.errors import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_VERDICT,
    DiagnosticsError,
    ImageFactoryError,
)
from imagefactory.settings import Settings

MiB = 1024 * 1024


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def cmd_key_generate(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.attest.keys import generate_key

    key = generate_key(args.path)
    if args.json:
        _emit_json({"private": str(key.private), "public": str(key.public), "keyid": key.keyid})
    else:
        sys.stdout.write(f"{key.private}: private key (keep it secret; mode 0600)\n")
        sys.stdout.write(f"{key.public}: public key, id {key.keyid}\n")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.attest import sign

    if args.key:
        from imagefactory.attest.keys import load_signer

        written = sign.sign_with_key(args.image, load_signer(args.key, args.public_key))
    else:
        from sigstore.models import ClientTrustConfig
        from sigstore.sign import SigningContext

        from imagefactory.attest.keyless import identity_token, load_trust_config

        token = identity_token(args.identity_token)
        trust = (
            load_trust_config(args.trust_config)
            if args.trust_config
            else ClientTrustConfig.production()
        )
        written = sign.sign_keyless(args.image, SigningContext.from_trust_config(trust), token)
    if args.json:
        _emit_json({"image": str(args.image), "attestation": str(written)})
    else:
        sys.stdout.write(f"{written}: written\n")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return _verify(args, settings)
    except ImageFactoryError as exc:
        # An error is not a verdict: exit 2, whatever the error's usual code.
        sys.stderr.write(f"error: {exc.render()}\n")
        return EXIT_ERROR


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.progress import Progress
    from imagefactory.trust import load_policy
    from imagefactory.verify import VerifyOptions, verify_image
    from imagefactory.verify.cache import VerifiedCache, verify_cached

    policy = load_policy(args.policy)
    cache = VerifiedCache(args.cache) if args.cache else None
    verdicts = []
    progress = Progress(total=len(args.images), quiet=args.quiet)
    for image in args.images:
        with progress.step("verify", str(image)):

            def show(done: int, total: int) -> None:
                progress.status(f"digest {done // MiB}/{total // MiB} MiB")

            options = VerifyOptions(on_progress=show, inspector=_inspector(settings))
            if cache is not None:
                verdict = verify_cached(image, policy, cache, options)
            else:
                verdict = verify_image(image, policy, options)
        verdicts.append(verdict)
        if not args.json:
            sys.stdout.write(verdict.render() + "\n")
    allowed = all(v.allowed for v in verdicts)
    if args.json:
        _emit_json(
            {
                "allowed": allowed,
                "policy": str(args.policy),
                "policy_digest": policy.digest,
                "images": [v.to_dict() for v in verdicts],
            }
        )
    return EXIT_OK if allowed else EXIT_VERDICT


def cmd_policy_example(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.trust import EXAMPLE_POLICY

    sys.stdout.write(EXAMPLE_POLICY)
    return EXIT_OK


def cmd_policy_check(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.trust import load_policy

    try:
        policy = load_policy(args.policy)
    except DiagnosticsError as exc:
        if args.json:
            _emit_json(
                {
                    "policy": str(args.policy),
                    "ok": False,
                    "problems": [d.to_dict() for d in exc.diagnostics],
                }
            )
        else:
            sys.stdout.write(exc.render() + "\n")
        return EXIT_VERDICT
    summary: dict[str, dict[str, Any]] = {
        vo.name: {"signers": [s.name for s in vo.signers], "threshold": vo.threshold}
        for vo in policy.vos.values()
    }
    if args.json:
        _emit_json(
            {"policy": str(args.policy), "ok": True, "digest": policy.digest, "vos": summary}
        )
    else:
        vos = ", ".join(
            f"{name} ({len(info['signers'])} signers, threshold {info['threshold']})"
            for name, info in summary.items()
        )
        sys.stdout.write(f"{args.policy}: ok ({vos})\n")
    return EXIT_OK


def add_parsers(sub: Any, common: argparse.ArgumentParser, parser_class: type) -> None:
    """Register ``key``, ``sign``, ``verify`` and ``policy`` on the main parser's subparsers."""
    key = sub.add_parser("key", help="signing keys")
    ksub = key.add_subparsers(dest="key_command", required=True, parser_class=parser_class)
    p = ksub.add_parser(
        "generate", parents=[common], help="make an ECDSA P-256 key pair (PATH, PATH.pub)"
    )
    p.add_argument("path", type=user_path, help="where the private key goes (PATH.pub: public)")
    p.set_defaults(func=cmd_key_generate)

    p = sub.add_parser(
        "sign", parents=[common], help="attest an image directory (keyless, or with --key)"
    )
    p.add_argument("image", type=user_path, help="image directory (disk, labels.json, SBOM)")
    p.add_argument(
        "--key",
        help="private key: a PEM file, or a key URI (file2:, hsm:, gcpkms:, awskms:, ...)",
    )
    p.add_argument("--public-key", type=user_path, help="the public key (PEM) of a key URI")
    p.add_argument(
        "--trust-config",
        type=user_path,
        help="keyless: client trust config of a private Sigstore instance"
        " (default: the public-good instance)",
    )
    p.add_argument(
        "--identity-token",
        help="keyless: an OIDC token (default: the CI job's ambient credential)",
    )
    p.set_defaults(func=cmd_sign)

    p = sub.add_parser(
        "verify",
        parents=[common],
        help="may these images boot here? exit 0 allow, 1 deny, 2 error",
    )
    p.add_argument("images", type=user_path, nargs="+", metavar="IMAGE-DIR")
    p.add_argument("--policy", type=user_path, required=True, help="the site's trust policy (YAML)")
    p.add_argument(
        "--cache",
        type=user_path,
        help="verified cache directory: an unchanged image verified before is not re-hashed",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_verify)

    policy = sub.add_parser("policy", help="trust policy files")
    psub = policy.add_subparsers(dest="policy_command", required=True, parser_class=parser_class)
    p = psub.add_parser("example", parents=[common], help="print a commented starter policy")
    p.set_defaults(func=cmd_policy_example)
    p = psub.add_parser("check", parents=[common], help="validate a trust policy file")
    p.add_argument("policy", type=user_path)
    p.set_defaults(func=cmd_policy_check)

    add_gate_parsers(sub, common)


# -- the boot gate ---------------------------------------------------------------

DEFAULT_LIMITS = Path("/etc/imagefactory/policy.yaml")
DEFAULT_STORE = Path("/var/lib/imagefactory/images")
DEFAULT_CACHE = Path("/var/cache/imagefactory/verified")

HOOK_SCRIPT = """\
#!/bin/sh
# libvirt hook installed by 'imagefactory gate-hook-script' as
# /etc/libvirt/hooks/qemu (KVM/QEMU) or /etc/libvirt/hooks/libxl (Xen): before a
# domain starts (prepare), every disk must pass 'imagefactory verify' against the
# site's trust policy; a non-zero exit refuses the start, stderr says why.
exec {python} -m imagefactory gate-libvirt-hook {options} -- "$@"
"""


def _inspector(settings: Settings) -> Any:
    """The libguestfs inspection verify runs where the policy asks for one."""
    from imagefactory.verify.inspector import GuestInspector

    return GuestInspector(settings.accel, settings.cache_dir / "accel.json")


def _gate_config(args: argparse.Namespace, settings: Settings) -> Any:
    from imagefactory.gate.check import GateConfig
    from imagefactory.trust import load_policy
    from imagefactory.verify import VerifyOptions
    from imagefactory.verify.cache import VerifiedCache

    cache = None if args.no_cache else VerifiedCache(args.cache)
    options = VerifyOptions(inspector=_inspector(settings))
    return GateConfig(load_policy(args.policy), args.store, cache, options)


def cmd_gate(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.gate.check import check_disks
    from imagefactory.gate.qemu import qemu_disks
    from imagefactory.gate.xl import xl_disks
    from imagefactory.run import replace_process

    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        sys.stderr.write("error: imagefactory gate: no command given (gate ... -- qemu ...)\n")
        return EXIT_ERROR
    try:
        disks, refusals = (xl_disks if Path(command[0]).name == "xl" else qemu_disks)(command)
        result = check_disks(disks, _gate_config(args, settings), refusals)
    except ImageFactoryError as exc:
        sys.stderr.write(f"error: {exc.render()}\n")
        return EXIT_ERROR
    if not result.allowed:
        sys.stderr.write(result.render(f"command {command[0]}") + "\n")
        return EXIT_VERDICT
    return replace_process(command)  # never returns: the command replaces us


def cmd_gate_libvirt_hook(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.gate.libvirt import run_hook

    try:
        code, message = run_hook(
            args.hook_args, sys.stdin.buffer.read(), lambda: _gate_config(args, settings)
        )
    except ImageFactoryError as exc:
        sys.stderr.write(f"imagefactory gate: refusing: {exc.render()}\n")
        return EXIT_ERROR
    sys.stderr.write(message)
    return code


def cmd_gate_hook_script(args: argparse.Namespace, settings: Settings) -> int:
    import shlex

    options = ["--policy", str(args.policy), "--store", str(args.store)]
    options += ["--no-cache"] if args.no_cache else ["--cache", str(args.cache)]
    sys.stdout.write(
        HOOK_SCRIPT.format(python=shlex.quote(sys.executable), options=shlex.join(options))
    )
    return EXIT_OK


def add_gate_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    gate_options = argparse.ArgumentParser(add_help=False)
    gate_options.add_argument(
        "--policy",
        type=user_path,
        default=DEFAULT_LIMITS,
        help=f"trust policy (default {DEFAULT_LIMITS})",
    )
    gate_options.add_argument(
        "--store",
        type=user_path,
        default=DEFAULT_STORE,
        help=f"image store (default {DEFAULT_STORE})",
    )
    gate_options.add_argument(
        "--cache",
        type=user_path,
        default=DEFAULT_CACHE,
        help=f"verified cache (default {DEFAULT_CACHE})",
    )
    gate_options.add_argument("--no-cache", action="store_true", help="always verify in full")

    p = sub.add_parser(
        "gate",
        parents=[common, gate_options],
        help="verify the disks of a qemu command line, then run it: gate [...] -- qemu ...",
    )
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- and the qemu command line")
    p.set_defaults(func=cmd_gate)

    p = sub.add_parser(
        "gate-libvirt-hook",
        parents=[common, gate_options],
        help="the libvirt qemu hook (NAME OPERATION SUBOPERATION EXTRA, domain XML on stdin)",
    )
    p.add_argument("hook_args", nargs="*", metavar="ARG")
    p.set_defaults(func=cmd_gate_libvirt_hook)

    p = sub.add_parser(
        "gate-hook-script",
        parents=[common, gate_options],
        help="print the libvirt hook (install as /etc/libvirt/hooks/qemu and/or"
        " /etc/libvirt/hooks/libxl) that runs the gate",
    )
    p.set_defaults(func=cmd_gate_hook_script)
