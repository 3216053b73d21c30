"""The catalog commands (init, list, revoke, refresh, delegate, rotate-key, prune) and publish."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imagefactory.cli.common import MiB, Parser, emit_json, user_path
from imagefactory.errors import EXIT_OK, UsageError
from imagefactory.progress import Progress
from imagefactory.settings import Settings


def _catalog(args: argparse.Namespace) -> Any:
    from imagefactory.catalog.repo import Catalog

    return Catalog(args.catalog, args.keys)


def _page(args: argparse.Namespace) -> str | None:
    """Re-write the catalog's page after a change, from the verified new state.

    With ``--no-page`` (bulk publishing: one ``catalog render`` at the end instead
    of a render per change) nothing is written and the page, if any, still shows
    the catalog as it was; None then.
    """
    from imagefactory.page.write import write_page

    if args.no_page:
        return None
    return str(write_page(args.catalog).path)


def _page_line(args: argparse.Namespace, page: str | None) -> str:
    """What the text output says about the page."""
    if page is not None:
        return f"{page}: the catalog page"
    return (
        f"{args.catalog / 'index.html'}: not re-written (--no-page); it shows the catalog as"
        f" it was until 'imagefactory catalog render {args.catalog}'"
    )


def _add_no_page(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--no-page",
        action="store_true",
        help="do not re-write the catalog's page (index.html) after the change, so that a"
        " batch of changes renders it once, with 'catalog render DIR' at the end; until"
        " then the page shows the catalog as it was",
    )


def _expiries(text: str | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        role, sep, days = item.partition("=")
        try:
            out[role.strip()] = float(days.removesuffix("d"))
        except ValueError:
            sep = ""
        if not sep or out.get(role.strip(), 0) <= 0:
            raise UsageError(f"--expires: {item!r} is not ROLE=DAYS (e.g. timestamp=1,snapshot=7)")
    return out


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    catalog = _catalog(args)
    root = catalog.init(_expiries(args.expires))
    page = _page(args)
    if args.json:
        emit_json(
            {
                "catalog": str(catalog.directory),
                "keys": str(catalog.keys_dir),
                "root": str(root),
                "page": page,
            }
        )
    else:
        sys.stdout.write(f"{catalog.directory}: new catalog; keys in {catalog.keys_dir}\n")
        sys.stdout.write(f"{root}: the root metadata sites pin (pull --root)\n")
        if page is None:
            sys.stdout.write(_page_line(args, page) + "\n")
    return EXIT_OK


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.catalog.ops import list_images

    listing = list_images(_catalog(args))
    if args.json:
        emit_json(listing)
        return EXIT_OK
    out = sys.stdout
    out.write(
        f"catalog version {listing['version']}, timestamp expires"
        f" {listing['expires']['timestamp']}\n"
    )
    for image in listing["images"]:
        out.write(
            f"  {image.get('vo')}/{image.get('name')} {image.get('version')}"
            f"  {image.get('distro')} {image.get('release')} {image.get('arch')}"
            f" {image.get('format')}  expires {image.get('expires')}  [{image['role']}]\n"
        )
    for item in listing["revoked"]:
        out.write(
            f"  revoked: {item.get('vo')}/{item.get('name')} {item.get('version')}:"
            f" {item.get('reason')} ({item.get('revoked')})\n"
        )
    if not listing["images"] and not listing["revoked"]:
        out.write("  (no images)\n")
    return EXIT_OK


def _signers(keys: list[str] | None) -> list[Any]:
    from imagefactory.attest.keys import load_signer

    return [load_signer(k) for k in keys or []]


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.catalog.ops import revoke

    done = revoke(_catalog(args), args.name, args.version, args.reason, _signers(args.key))
    page = _page(args)
    if args.json:
        emit_json({**done, "page": page})
    else:
        for item in done["revoked"]:
            sys.stdout.write(
                f"{item['vo']}/{item['name']} {item['version']}: revoked ({item['reason']})\n"
            )
        sys.stdout.write(_page_line(args, page) + "\n")
    return EXIT_OK


def cmd_refresh(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.catalog.ops import refresh

    done = refresh(_catalog(args))
    done["page"] = _page(args)
    if args.json:
        emit_json(done)
    else:
        sys.stdout.write(
            f"catalog version {done['version']}: timestamp valid until"
            f" {done['timestamp_expires']}, snapshot until"
            f" {done['snapshot_expires']}\n"
        )
        if done["page"] is None:
            sys.stdout.write(_page_line(args, None) + "\n")
    return EXIT_OK


def cmd_delegate(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.attest.keys import load_public_key
    from imagefactory.catalog.ops import delegate

    keys = [load_public_key(p) for p in args.key]
    done = delegate(_catalog(args), args.vo, keys, args.threshold)
    done["page"] = _page(args)
    if args.json:
        emit_json(done)
    else:
        sys.stdout.write(
            f"VO {done['vo']}: role {done['role']}, {done['threshold']} of"
            f" {len(done['keyids'])} keys ({', '.join(done['keyids'])})\n"
        )
        if done["page"] is None:
            sys.stdout.write(_page_line(args, None) + "\n")
    return EXIT_OK


def cmd_rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.catalog.rotate import rotate_key

    done = rotate_key(_catalog(args), args.role)
    done["page"] = _page(args)
    if args.json:
        emit_json(done)
    else:
        sys.stdout.write(
            f"{done['role']} key rotated: now {done['keyid']}; retired"
            f" {', '.join(done['retired'])}\n"
            f"root version {done['root_version']} ({done['root']}): sites follow it from the"
            " root they pinned; a new site pins this one\n"
        )
        if done["page"] is None:
            sys.stdout.write(_page_line(args, None) + "\n")
    return EXIT_OK


def cmd_prune(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.catalog.prune import prune

    done = prune(_catalog(args), args.keep, dry_run=args.dry_run)
    if args.json:
        emit_json({"dry_run": args.dry_run, **done.to_dict()})
    else:
        verb = "would remove" if args.dry_run else "removed"
        sys.stdout.write(
            f"{verb} {len(done.metadata)} metadata files, {len(done.descriptors)} descriptors,"
            f" {len(done.images)} image versions ({done.bytes // MiB} MiB)\n"
        )
        for image in done.images:
            sys.stdout.write(f"  {image}\n")
    return EXIT_OK


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.catalog.publish import publish, publish_with_registry

    catalog = _catalog(args)
    progress = Progress(total=1, quiet=args.quiet)
    pushed = None
    with progress.step("publish", str(args.image)):

        def show(done: int, total: int) -> None:
            progress.status(f"copy and hash {done // MiB}/{total // MiB} MiB")

        signers = _signers(args.key)
        if args.registry:
            published, pushed = publish_with_registry(
                catalog,
                args.image,
                args.registry,
                vo=args.vo,
                signers=signers,
                on_progress=show,
            )
        else:
            published = publish(catalog, args.image, vo=args.vo, signers=signers, on_progress=show)
    page = _page(args)
    d = published.descriptor
    if args.json:
        out: dict[str, Any] = {
            "target": d.target_path,
            "role": published.role,
            "changed": published.changed,
            "descriptor": d.to_dict(),
            "page": page,
        }
        if pushed is not None:
            out["oci"] = {
                "manifest": pushed.manifest,
                "referrers": pushed.referrers,
                "referrers_via": pushed.referrers_via,
            }
        emit_json(out)
    else:
        what = "published" if published.changed else "already published, unchanged"
        sys.stdout.write(f"{d.vo}/{d.name} {d.version}: {what} (role {published.role})\n")
        sys.stdout.write(f"  page: {page}\n" if page else f"  {_page_line(args, None)}\n")
        if pushed is not None:
            sys.stdout.write(
                f"  OCI: {pushed.repository}@{pushed.manifest}"
                f" ({len(pushed.referrers)} referrers, {pushed.referrers_via})\n"
            )
    return EXIT_OK


def cmd_render(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.page.write import write_page

    page = write_page(args.catalog, args.out, args.root)
    if args.json:
        emit_json(page.to_dict())
        return EXIT_OK
    view = page.view
    revoked = sum(1 for i in view.images if i.revoked)
    sys.stdout.write(
        f"{page.path}: {len(view.images)} image versions ({revoked} revoked) of catalog"
        f" version {view.catalog_version}\n"
    )
    for path, code, message in view.refused:
        sys.stdout.write(f"  not shown: {path}: {code}: {message}\n")
    return EXIT_OK


def _register_render(csub: Any, common: argparse.ArgumentParser) -> None:
    p = csub.add_parser(
        "render",
        parents=[common],
        help="write the catalog's web page (index.html) from its verified state",
    )
    p.add_argument("catalog", type=user_path, metavar="DIR", help="the catalog directory")
    p.add_argument(
        "--out", type=user_path, metavar="FILE", help="where to write it (default: DIR/index.html)"
    )
    p.add_argument(
        "--root",
        type=user_path,
        metavar="ROOT.json",
        help="the root to verify against (default: DIR/metadata/root.json)",
    )
    p.set_defaults(func=cmd_render)


def _register_init(csub: Any, common: argparse.ArgumentParser, keys_help: str) -> None:
    p = csub.add_parser("init", parents=[common], help="create a catalog and its keys")
    p.add_argument("catalog", type=user_path, metavar="DIR", help="the catalog directory")
    p.add_argument("--keys", type=user_path, help=keys_help)
    p.add_argument(
        "--expires",
        help="validity in days per role, e.g. timestamp=1,snapshot=7,targets=90,vo=90,root=365",
    )
    _add_no_page(p)
    p.set_defaults(func=cmd_init)


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    keys_help = "the catalog's keys directory (default: DIR-keys beside the catalog)"
    catalog = sub.add_parser("catalog", help="the signed image catalog (a TUF repository)")
    csub = catalog.add_subparsers(dest="catalog_command", required=True, parser_class=Parser)
    _register_init(csub, common, keys_help)

    def with_catalog(p: argparse.ArgumentParser, *, changes_page: bool = True) -> None:
        p.add_argument(
            "--catalog", type=user_path, required=True, metavar="DIR", help="the catalog directory"
        )
        p.add_argument("--keys", type=user_path, help=keys_help)
        if changes_page:
            _add_no_page(p)

    p = csub.add_parser("list", parents=[common], help="the images and revocations")
    with_catalog(p, changes_page=False)
    p.set_defaults(func=cmd_list)

    _register_render(csub, common)

    p = csub.add_parser("revoke", parents=[common], help="revoke an image version, with a reason")
    p.add_argument("name")
    p.add_argument("version")
    p.add_argument("--reason", required=True, help="why (shown to every site)")
    p.add_argument("--key", action="append", help="the VO's key, to also withdraw the VO's entry")
    with_catalog(p)
    p.set_defaults(func=cmd_revoke)

    p = csub.add_parser(
        "refresh",
        parents=[common],
        help="re-sign snapshot and timestamp before they expire (from a timer)",
    )
    with_catalog(p)
    p.set_defaults(func=cmd_refresh)

    p = csub.add_parser("delegate", parents=[common], help="give a VO its own signing role")
    p.add_argument("vo")
    p.add_argument(
        "--key",
        type=user_path,
        action="append",
        required=True,
        help="a public key (PEM) of the VO; repeat for several",
    )
    p.add_argument("--threshold", type=int, default=1, help="signatures needed (default 1)")
    with_catalog(p)
    p.set_defaults(func=cmd_delegate)

    p = csub.add_parser(
        "rotate-key",
        parents=[common],
        help="replace one of the catalog's own keys (sites follow the new root)",
    )
    p.add_argument("role", choices=["root", "targets", "snapshot", "timestamp"])
    with_catalog(p)
    p.set_defaults(func=cmd_rotate_key)

    p = csub.add_parser(
        "prune",
        parents=[common],
        help="remove metadata, descriptors and images no recent snapshot refers to",
    )
    p.add_argument(
        "--keep", type=int, default=3, help="snapshots to keep with what they name (default 3)"
    )
    p.add_argument("--dry-run", action="store_true", help="say what would go; remove nothing")
    with_catalog(p, changes_page=False)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("publish", parents=[common], help="put a signed image into a catalog")
    p.add_argument("image", type=user_path, help="the signed image directory")
    with_catalog(p)
    p.add_argument("--registry", help="also push to this OCI registry: HOST[:PORT]/PROJECT")
    p.add_argument("--vo", help="the VO whose role publishes it (when the labels name several)")
    p.add_argument(
        "--key",
        action="append",
        help="the VO's signing key for its delegated role; repeat for a threshold",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_publish)
