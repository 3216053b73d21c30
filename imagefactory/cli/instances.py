"""``instantiate``, ``discard``, ``instances [list|gc]``: non-persistent worker nodes.

A batch system's prologue runs ``instantiate IMAGE --job ID`` (IMAGE as
``select`` prints it) and boots the overlay it prints; the epilogue runs
``discard --job ID``. ``instances`` lists what lives in the run directory,
``instances gc`` removes what belongs to no live job.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import Any

from imagefactory.cli.common import Parser, emit_json, user_path
from imagefactory.cli.gate import (
    DEFAULT_CACHE,
    DEFAULT_RUN_DIR,
    DEFAULT_TRUST_POLICY,
    add_store_option,
)
from imagefactory.errors import EXIT_OK
from imagefactory.settings import Settings


def cmd_instantiate(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.instances.make import instantiate
    from imagefactory.trust import load_policy
    from imagefactory.verify.cache import VerifiedCache

    instance = instantiate(
        args.image,
        args.job,
        store=args.store,
        policy=load_policy(args.policy),
        run_dir=args.run_dir,
        cache=VerifiedCache(args.cache),
        owner=args.owner,
    )
    if args.json:
        emit_json({"ok": True, **instance.to_dict()})
    else:
        sys.stdout.write(f"{instance.overlay}\n")
    return EXIT_OK


def cmd_discard(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.instances.live import discard

    result = discard(args.run_dir, args.job)
    if args.json:
        emit_json({"ok": True, "job": args.job, "known": bool(result.removed), **result.to_dict()})
    else:
        for item in result.removed:
            sys.stderr.write(f"discarded {item['kind']} {item['path']}\n")
        for note in result.notes:
            sys.stderr.write(f"note: {note}\n")
    return EXIT_OK


def _age(seconds: float) -> str:
    return str(timedelta(seconds=int(seconds)))


def cmd_instances(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.instances.live import entries

    found = [e.to_dict() for e in entries(args.run_dir)]
    if args.json:
        emit_json({"ok": True, "run_dir": str(args.run_dir), "instances": found})
        return EXIT_OK
    for e in found:
        state = (
            "in use by " + ",".join(map(str, e["in_use_by"]))
            if e["in_use_by"]
            else ("started" if e["started"] else "not started")
        )
        age = _age(e["age_seconds"])
        line = f"{e['job']}  {e['image'] or '-'}  {e['kind']}  age {age}  {state}"
        if e["gone"]:
            line += f"  (gc: {e['gone']})"
        sys.stdout.write(line + "\n")
    if not found:
        sys.stdout.write(f"(no instances in {args.run_dir})\n")
    return EXIT_OK


def cmd_gc(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.instances.live import gc, parse_alive_cmd

    result = gc(
        args.run_dir,
        dry_run=args.dry_run,
        alive_cmd=parse_alive_cmd(args.alive_cmd),
        store=args.store,
    )
    if args.json:
        emit_json({"ok": True, "dry_run": args.dry_run, **result.to_dict()})
        return EXIT_OK
    verb = "would remove" if args.dry_run else "removed"
    for item in result.removed:
        sys.stdout.write(f"{verb} {item['kind']} {item['path']}: {item['why']}\n")
    for item in result.kept:
        sys.stdout.write(f"kept {item['path']}: {item['why']}\n")
    for key in result.retired_removed:
        sys.stdout.write(f"removed retired image {key} from the store\n")
    for note in result.notes:
        sys.stderr.write(f"note: {note}\n")
    if not (result.removed or result.kept or result.retired_removed):
        sys.stdout.write("nothing to remove\n")
    return EXIT_OK


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    run_dir = argparse.ArgumentParser(add_help=False)
    run_dir.add_argument(
        "--run-dir",
        type=user_path,
        default=DEFAULT_RUN_DIR,
        help=f"where the overlays and their records are (default {DEFAULT_RUN_DIR})",
    )
    store = argparse.ArgumentParser(add_help=False)
    add_store_option(store)

    p = sub.add_parser(
        "instantiate",
        parents=[common, run_dir, store],
        help="a job's copy-on-write overlay on a verified store image; prints its path",
    )
    p.add_argument(
        "image", type=user_path, help="the image directory in the store (as select prints it)"
    )
    p.add_argument("--job", required=True, help="the batch job's ID (e.g. $SLURM_JOB_ID)")
    p.add_argument(
        "--policy",
        type=user_path,
        default=DEFAULT_TRUST_POLICY,
        help=f"trust policy the image was verified under (default {DEFAULT_TRUST_POLICY})",
    )
    p.add_argument(
        "--cache",
        type=user_path,
        default=DEFAULT_CACHE,
        help=f"verified cache, besides the store's own (default {DEFAULT_CACHE})",
    )
    p.add_argument(
        "--owner",
        help="give the overlay file to this user: the one the hypervisor runs qemu as"
        " (libvirt-qemu), for domains whose disk says <seclabel model='dac' relabel='no'/>",
    )
    p.set_defaults(func=cmd_instantiate)

    p = sub.add_parser(
        "discard",
        parents=[common, run_dir],
        help="remove a job's overlay and every record of it (an unknown job is no error)",
    )
    p.add_argument("--job", required=True, help="the batch job's ID")
    p.set_defaults(func=cmd_discard)

    p = sub.add_parser(
        "instances",
        parents=[common, run_dir],
        help="the live overlays: job, base image, age, started (gc: remove stale ones)",
    )
    p.set_defaults(func=cmd_instances)
    isub = p.add_subparsers(dest="instances_command", parser_class=Parser)
    q = isub.add_parser("list", parents=[common, run_dir], help="the live overlays (the default)")
    q.set_defaults(func=cmd_instances)
    q = isub.add_parser(
        "gc",
        parents=[common, run_dir, store],
        help="remove overlays whose job is gone, leftovers of killed runs, unheld retired images",
    )
    q.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    q.add_argument(
        "--alive-cmd",
        help="ask the batch system: CMD JOB exits 0 if the job is alive, 1 if it is gone"
        " (e.g. contrib/slurm/job-alive.sh)",
    )
    q.set_defaults(func=cmd_gc)
