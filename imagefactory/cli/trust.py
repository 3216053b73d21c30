"""``policy example|check``: the site's trust policy files."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imagefactory.cli.common import Parser, emit_json, user_path
from imagefactory.errors import EXIT_OK, EXIT_VERDICT, DiagnosticsError
from imagefactory.settings import Settings


def cmd_policy_example(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.trust import EXAMPLE_POLICY

    if args.json:
        emit_json({"ok": True, "policy": EXAMPLE_POLICY})
    else:
        sys.stdout.write(EXAMPLE_POLICY)
    return EXIT_OK


def cmd_policy_check(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.trust import load_policy

    try:
        policy = load_policy(args.policy)
    except DiagnosticsError as exc:
        if args.json:
            emit_json(
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
        emit_json({"policy": str(args.policy), "ok": True, "digest": policy.digest, "vos": summary})
    else:
        vos = ", ".join(
            f"{name} ({len(info['signers'])} signers, threshold {info['threshold']})"
            for name, info in summary.items()
        )
        sys.stdout.write(f"{args.policy}: ok ({vos})\n")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    policy = sub.add_parser("policy", help="trust policy files")
    psub = policy.add_subparsers(dest="policy_command", required=True, parser_class=Parser)
    p = psub.add_parser("example", parents=[common], help="print a commented starter policy")
    p.set_defaults(func=cmd_policy_example)
    p = psub.add_parser("check", parents=[common], help="validate a trust policy file")
    p.add_argument("policy", type=user_path)
    p.set_defaults(func=cmd_policy_check)
