"""``verify``: may these images boot here? Exit 0 allow, 1 deny, 2 error (never a verdict)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from imagefactory.cli.common import MiB, emit_json, user_path
from imagefactory.errors import EXIT_ERROR, EXIT_OK, EXIT_VERDICT
from imagefactory.settings import Settings


def inspector(settings: Settings) -> Any:
    """The libguestfs inspection verify runs where the policy asks for one."""
    from imagefactory.verify.inspector import GuestInspector

    return GuestInspector(settings.accel, settings.cache_dir / "accel.json", settings.appliance_dir)


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.progress import Progress
    from imagefactory.trust import load_policy
    from imagefactory.verify import VerifyOptions, verify_image
    from imagefactory.verify.cache import VerifiedCache, verify_cached
    from imagefactory.verify.private import stable_view

    policy = load_policy(args.policy)
    cache = VerifiedCache(args.cache) if args.cache else None
    verdicts = []
    progress = Progress(total=len(args.images), quiet=args.quiet)
    for image in args.images:
        with progress.step("verify", str(image)):

            def show(done: int, total: int) -> None:
                progress.status(f"digest {done // MiB}/{total // MiB} MiB")

            options = VerifyOptions(on_progress=show, inspector=inspector(settings))
            # A user's upload is verified on a private copy (verify/private.py).
            with stable_view(image, policy.max_virtual_size) as view:
                if cache is not None:
                    verdict = verify_cached(view, policy, cache, options)
                else:
                    verdict = verify_image(view, policy, options)
            verdict = dataclasses.replace(verdict, image=image)
        verdicts.append(verdict)
        if not args.json:
            sys.stdout.write(verdict.render() + "\n")
    allowed = all(v.allowed for v in verdicts)
    if args.json:
        emit_json(
            {
                "allowed": allowed,
                "policy": str(args.policy),
                "policy_digest": policy.digest,
                "images": [v.to_dict() for v in verdicts],
            }
        )
    return EXIT_OK if allowed else EXIT_VERDICT


def register(sub: Any, common: argparse.ArgumentParser) -> None:
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
    # An error is not a verdict: exit 2, whatever the error's usual code.
    p.set_defaults(func=cmd_verify, error_exit=EXIT_ERROR)
