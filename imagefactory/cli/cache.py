"""``cache list`` and ``cache prune``: the build cache's entries and its size limit."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imagefactory.cli.common import MiB, Parser, emit_json
from imagefactory.errors import EXIT_OK
from imagefactory.fsutil import parse_size
from imagefactory.settings import DEFAULT_CACHE_MAX_SIZE_TEXT, Settings


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _line(item: Any) -> str:
    data = item.to_dict()
    return (
        f"  {data['kind']:<6}  {data['key'][:12]}  {item.size // MiB:>7} MiB"
        f"  used {data['last_used']}  {data['label']}\n"
    )


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.builder.cacheprune import scan

    items = scan(settings.cache_dir)
    total = sum(item.size for item in items)
    if args.json:
        emit_json(
            {
                "cache_dir": str(settings.cache_dir),
                "limit_bytes": settings.cache_max_size,
                "bytes": total,
                "entries": [item.to_dict() for item in items],
            }
        )
        return EXIT_OK
    sys.stdout.write(
        f"{settings.cache_dir}: {len(items)} entries, {total // MiB} MiB"
        f" (build.cache_max_size {settings.cache_max_size // MiB} MiB),"
        " least recently used first\n"
    )
    for item in items:
        sys.stdout.write(_line(item))
    return EXIT_OK


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.builder.cacheprune import prune

    limit = settings.cache_max_size if args.max_size is None else args.max_size
    done = prune(settings.cache_dir, limit, dry_run=args.dry_run)
    if args.json:
        emit_json({"cache_dir": str(settings.cache_dir), "dry_run": args.dry_run, **done.to_dict()})
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    sys.stdout.write(
        f"{settings.cache_dir}: {verb} {len(done.removed)} entries ({done.freed // MiB} MiB)"
        f" and {len(done.leftovers)} left-overs of interrupted builds;"
        f" {len(done.kept)} entries kept ({done.kept_bytes // MiB} MiB, limit {limit // MiB} MiB)\n"
    )
    for item in done.removed:
        sys.stdout.write(_line(item))
    for path in done.leftovers:
        sys.stdout.write(f"  {path}\n")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    cache = sub.add_parser(
        "cache", help="the build cache: finished builds and OS-tree layers (build.cache_dir)"
    )
    csub = cache.add_subparsers(dest="cache_command", required=True, parser_class=Parser)
    p = csub.add_parser(
        "list", parents=[common], help="the entries, least recently used first, and their sizes"
    )
    p.set_defaults(func=cmd_list)
    p = csub.add_parser(
        "prune",
        parents=[common],
        help="remove the least recently used entries until the cache fits its size limit",
    )
    p.add_argument(
        "--max-size",
        type=_size,
        metavar="SIZE",
        help="the limit for this run, like 20G (default: build.cache_max_size,"
        f" {DEFAULT_CACHE_MAX_SIZE_TEXT} unless set)",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    p.set_defaults(func=cmd_prune)
