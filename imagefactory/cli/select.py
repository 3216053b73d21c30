"""``select``: the best verified image of the store for a job's requirements.

Exit 0: an image was chosen (its path, or the ``--format`` asked for, on
stdout); 1: no image of the store matches (``--explain`` says why, for each);
2: an error (bad ``--require``, unreadable policy or store): never the "no
match" answer.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imagefactory.cli.common import emit_json, user_path
from imagefactory.cli.gate import DEFAULT_TRUST_POLICY, add_store_option
from imagefactory.errors import EXIT_ERROR, EXIT_OK, EXIT_VERDICT
from imagefactory.settings import Settings

FORMATS = ("path", "classad", "classad-requirements", "glance")


def _require_help() -> str:
    from imagefactory.select.requirements import KEYS

    return (
        "what the image must be: KEY OP VALUE clauses, comma-separated, all must hold;"
        " OP is = or != (a set: vo=atlas|cms), or >=, >, <=, < for release and version"
        " (compared by dotted numbers: release>=12). Keys: " + ", ".join(KEYS) + "."
        " May be repeated."
    )


def cmd_select(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.select.adaptors import job_requirements
    from imagefactory.select.choose import select_image
    from imagefactory.select.ranks import Rank
    from imagefactory.select.requirements import parse_requirements
    from imagefactory.trust import load_policy

    policy = load_policy(args.policy)
    requirements = parse_requirements(args.require or [], sorted(policy.vos))
    if args.format == "classad-requirements":
        # What a job asks of a machine: from the requirement alone, the store is not read.
        expression = job_requirements(requirements)
        if args.json:
            emit_json({"ok": True, "requirements": str(requirements), "classad": expression})
        else:
            sys.stdout.write(expression + "\n")
        return EXIT_OK
    selection = select_image(
        args.store,
        policy,
        requirements,
        Rank(args.rank),
        cache_dir=args.cache,
        explain=args.explain,
    )
    if args.json:
        emit_json(_json_result(selection, args))
    else:
        _print(selection, args)
    return EXIT_OK if selection.ok else EXIT_VERDICT


def _counts(selection: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in selection.explanations:
        counts[e.status] = counts.get(e.status, 0) + 1
    return counts


def _no_match(selection: Any) -> tuple[str, str]:
    counts = _counts(selection)
    summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "it is empty"
    required = str(selection.requirements)
    what = f"matches {required}" if required else "can be used"
    return (
        f"no image in {selection.store} {what} ({len(selection.explanations)} images: {summary})",
        "run again with --explain: it says for every image why it was not chosen",
    )


def _json_result(selection: Any, args: argparse.Namespace) -> dict[str, Any]:
    from imagefactory.select.adaptors import glance_image_options, glance_properties, machine_ad

    chosen = selection.chosen
    result: dict[str, Any] = {
        "ok": selection.ok,
        "exit_code": EXIT_OK if selection.ok else EXIT_VERDICT,
        "store": str(selection.store),
        "requirements": str(selection.requirements),
        "rank": str(selection.rank),
        "image": str(chosen.path) if chosen else None,
        "key": chosen.key if chosen else None,
        "counts": _counts(selection),
    }
    if chosen is not None:
        result["labels"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in chosen.facts.items()
        }
        if args.format == "classad":
            result["classad"] = dict(machine_ad(chosen))
        elif args.format == "glance":
            result["glance"] = {
                **glance_image_options(chosen),
                "properties": glance_properties(chosen),
            }
    else:
        message, hint = _no_match(selection)
        result["error"] = {"type": "NoImageMatches", "message": message, "hint": hint}
    if args.explain:
        result["explain"] = [e.to_dict() for e in selection.explanations]
    return result


def _print(selection: Any, args: argparse.Namespace) -> None:
    from imagefactory.select.adaptors import (
        glance_image_options,
        glance_properties,
        machine_ad,
        machine_ad_lines,
    )

    if args.explain:
        # stderr: stdout stays the one answer a prologue captures.
        for explanation in selection.explanations:
            sys.stderr.write(explanation.render() + "\n")
        if not selection.explanations:
            sys.stderr.write(f"(the store {selection.store} holds no image)\n")
    chosen = selection.chosen
    if chosen is None:
        message, hint = _no_match(selection)
        sys.stderr.write(f"error: {message}\n  hint: {hint}\n")
        return
    if args.format == "classad":
        for line in machine_ad_lines(machine_ad(chosen)):
            sys.stdout.write(line + "\n")
    elif args.format == "glance":
        for option, value in glance_image_options(chosen).items():
            sys.stdout.write(f"--{option.replace('_', '-')} {value}\n")
        for key, value in glance_properties(chosen).items():
            sys.stdout.write(f"--property {key}={value}\n")
    else:
        sys.stdout.write(f"{chosen.path}\n")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    from imagefactory.select.ranks import Rank

    p = sub.add_parser(
        "select",
        parents=[common],
        help="the best verified image of the store for a job's requirements"
        " (exit 0 chosen, 1 none matches, 2 error)",
    )
    p.add_argument("--require", action="append", metavar="REQUIREMENTS", help=_require_help())
    p.add_argument(
        "--rank",
        choices=[str(r) for r in Rank],
        default=str(Rank.NEWEST),
        help="which matching image wins: newest (created, default), version, release, smallest"
        " (disk file); ties go to the first by vo/name/version",
    )
    p.add_argument(
        "--explain",
        action="store_true",
        help="for every image of the store: chosen, or why not (on stderr; in --json: explain)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="path",
        help="path (default): the image directory; classad: machine-ad attributes;"
        " classad-requirements: the requirement as a job's Requirements expression (reads no"
        " store); glance: openstack image create options and --property lines",
    )
    add_store_option(p)
    p.add_argument(
        "--policy",
        type=user_path,
        default=DEFAULT_TRUST_POLICY,
        help=f"the site trust policy (default {DEFAULT_TRUST_POLICY})",
    )
    p.add_argument(
        "--cache",
        type=user_path,
        help="the verified cache pull keeps (default STORE/.pull/verify-cache)",
    )
    # An error is not the "no image matches" answer: exit 2, whatever the error's usual code.
    p.set_defaults(func=cmd_select, error_exit=EXIT_ERROR)
