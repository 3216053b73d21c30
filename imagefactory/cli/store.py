"""``pull``, ``store list`` and ``store export``: the site's verified image store."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from imagefactory.cli.common import MiB, Parser, catalog_location, emit_json, user_path
from imagefactory.cli.gate import (
    DEFAULT_RUN_DIR,
    DEFAULT_TRUST_POLICY,
    add_store_option,
)
from imagefactory.errors import EXIT_OK, EXIT_VERDICT
from imagefactory.progress import Progress
from imagefactory.settings import Settings


def cmd_pull(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.cli.verify import inspector
    from imagefactory.instances.rundir import RunDir
    from imagefactory.store.pull import PullOptions, parse_select, pull, read_root
    from imagefactory.trust import load_policy
    from imagefactory.verify.pipeline import VerifyOptions

    select = parse_select(args.select)
    root = read_root(args.root)
    policy = load_policy(args.policy)
    progress = Progress(total=1, quiet=args.quiet)
    with progress.step("pull", f"{args.catalog} into {args.store}"):

        def show(what: str, done: int, total: int) -> None:
            progress.status(f"{what} {done // MiB}/{total // MiB} MiB")

        options = PullOptions(
            select=select,
            verify=VerifyOptions(inspector=inspector(settings)),
            timeout=args.timeout,
            on_progress=show,
            oci=args.oci,
            instances=RunDir(args.run_dir),
        )
        result = pull(args.catalog, root, policy, args.store, options)
    if args.json:
        emit_json({**result.to_dict(), "ok": result.ok})
    else:
        for event in result.events:
            sys.stdout.write(f"{event.image}: {event.action} ({event.code}): {event.message}\n")
        sys.stdout.write(
            f"{len(result.by_action('installed'))} installed,"
            f" {len(result.by_action('kept'))} kept, {len(result.by_action('removed'))} removed,"
            f" {len(result.by_action('refused'))} refused; {result.image_bytes} image bytes,"
            f" {result.metadata_bytes} metadata bytes transferred\n"
        )
    return EXIT_OK if result.ok else EXIT_VERDICT


def cmd_store_list(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.store.export import store_list
    from imagefactory.store.layout import Store

    entries = store_list(Store(args.store))
    if args.json:
        emit_json(entries)
    else:
        for e in entries:
            sys.stdout.write(
                f"{e['image']}  {e.get('os', '-')} {e.get('format', '-')}"
                f"  expires {e.get('expires', '-')}  {e.get('disk', e.get('problem'))}\n"
            )
        if not entries:
            sys.stdout.write("(the store is empty)\n")
    return EXIT_OK


def cmd_store_export(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.store.export import image_list
    from imagefactory.store.layout import Store

    sys.stdout.write(json.dumps(image_list(Store(args.store)), indent=2, sort_keys=True) + "\n")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "pull",
        parents=[common],
        help="bring the image store in line with a catalog (verified images only)",
    )
    p.add_argument(
        "--catalog",
        type=catalog_location,
        required=True,
        metavar="URL-or-DIR",
        help="the catalog: a directory, or an http(s):// URL of one",
    )
    p.add_argument(
        "--root",
        type=user_path,
        required=True,
        help="the catalog's root metadata, pinned (got out of band)",
    )
    p.add_argument(
        "--policy",
        type=user_path,
        default=DEFAULT_TRUST_POLICY,
        help=f"the site trust policy (default {DEFAULT_TRUST_POLICY})",
    )
    p.add_argument(
        "--select", help="labels to select by, e.g. distro=debian,release=12,arch=x86_64,vo=atlas"
    )
    p.add_argument(
        "--oci",
        action="store_true",
        help="fetch files from the OCI registry the catalog names, by digest",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds without data before a transfer is given up (default 30)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.add_argument(
        "--run-dir",
        type=user_path,
        default=DEFAULT_RUN_DIR,
        help="the instances' run directory: an image one of them uses is retired, not removed",
    )
    add_store_option(p)
    p.set_defaults(func=cmd_pull)

    store = sub.add_parser("store", help="the site's image store")
    ssub = store.add_subparsers(dest="store_command", required=True, parser_class=Parser)
    p = ssub.add_parser("list", parents=[common], help="the images in the store")
    add_store_option(p)
    p.set_defaults(func=cmd_store_list)
    p = ssub.add_parser("export", parents=[common], help="the store as a HEPiX image list")
    p.add_argument("--to", choices=["image-list"], required=True)
    add_store_option(p)
    p.set_defaults(func=cmd_store_export)
