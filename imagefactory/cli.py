"""The ``imagefactory`` command line.

Every error derives from :class:`~imagefactory.errors.ImageFactoryError` and
is caught once, here, in :func:`main`: the user sees ``error: <message>`` and
the error's exit code, never a traceback (``--debug`` shows one).

Exit codes: 0 success; 1 a negative verdict or invalid input (invalid recipe,
failed boot test, unsafe image); 2 an error that stopped the work (missing
tool, failed build, bad usage); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

from imagefactory import __version__
from imagefactory.errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_VERDICT,
    DiagnosticsError,
    ImageFactoryError,
    UsageError,
)
from imagefactory.settings import Settings, load_settings
from imagefactory.vocab import Arch

log = logging.getLogger("imagefactory")


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", hint=f"see {self.prog} --help")


def user_path(text: str) -> Path:
    """A path the user gave, made absolute against the working directory, once, here.

    Every later stage (and every tool it runs elsewhere, such as
    diskimage-builder) then sees the same file whatever its own working
    directory. Not normalised: ``a/../b`` stays as the kernel will resolve it.
    """
    if not text:
        raise argparse.ArgumentTypeError("an empty path names no file")
    if "\0" in text:
        raise argparse.ArgumentTypeError("a path cannot contain a NUL character")
    return Path(text).expanduser().absolute()


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


# -- commands ------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.recipe import load_recipe

    results: list[dict[str, Any]] = []
    failed = False
    for path in args.recipes:
        try:
            recipe = load_recipe(path, settings.build_limits())
        except DiagnosticsError as exc:
            failed = True
            results.append(
                {
                    "recipe": str(path),
                    "ok": False,
                    "problems": [d.to_dict() for d in exc.diagnostics],
                }
            )
            if not args.json:
                sys.stdout.write(exc.render() + "\n")
            continue
        results.append({"recipe": str(path), "ok": True, "digest": recipe.digest})
        if not args.json:
            sys.stdout.write(f"{path}: ok ({recipe.name} {recipe.version}, {recipe.digest})\n")
    if args.json:
        _emit_json({"ok": not failed, "recipes": results})
    return EXIT_VERDICT if failed else EXIT_OK


def cmd_recipe_schema(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.recipe import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2, sort_keys=False) + "\n"
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return EXIT_OK


def cmd_recipe_docs(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.recipe import recipe_reference_markdown

    sys.stdout.write(recipe_reference_markdown())
    return EXIT_OK


def cmd_recipe_show(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.recipe import load_recipe

    recipe = load_recipe(args.recipe, settings.build_limits())
    _emit_json({"digest": recipe.digest, "recipe": recipe.canonical()})
    return EXIT_OK


def cmd_build(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.builder.pipeline import BuildOptions, build
    from imagefactory.progress import Progress
    from imagefactory.recipe import load_recipe

    recipe = load_recipe(args.recipe, settings.build_limits())
    options = BuildOptions(
        use_cache=not args.no_cache,
        boot_test=args.boot_test,
        boot_timeout=args.boot_timeout,
        replace=args.replace,
        verbose=args.verbose,
    )
    result = build(recipe, settings, options, Progress(), output_root=args.output)
    if args.json:
        _emit_json(result.to_dict())
    else:
        state = "published" if result.published else "already up to date"
        source = " (from cache)" if result.cache_hit else ""
        sys.stdout.write(f"{result.directory}: {state}{source}\n")
        for name, info in result.record["disk"]["files"].items():
            sys.stdout.write(f"  {name}  {info['sha256']}\n")
        audit = result.record.get("audit")
        if audit:
            sys.stdout.write(
                f"  audit: {audit['pass']} pass, {audit['fail']} fail, {audit['warn']} warn; "
                "labels.json and sbom.cdx.json written\n"
            )
    return EXIT_OK


def cmd_boot_test(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.boot.qemu import boot_test
    from imagefactory.diskformat import check_safe
    from imagefactory.progress import Progress

    info = check_safe(args.image, declared_format=args.format)
    console = args.console_log or Path(f"{args.image.name}.console.log")
    progress = Progress(total=1, quiet=args.json)
    with progress.step("boot-test", f"boot {args.image} ({info.format}) under qemu"):
        result = boot_test(
            args.image,
            info.format,
            Arch(args.arch),
            console,
            accel_setting=settings.accel,
            accel_cache=settings.cache_dir / "accel.json",
            marker=args.marker,
            timeout=args.timeout,
        )
    if args.json:
        _emit_json(result.to_dict())
    else:
        verdict = "PASS" if result.passed else "FAIL"
        sys.stdout.write(
            f"{verdict}: {args.image}: {result.reason} ({result.accel}); console log: {console}\n"
        )
    return EXIT_OK if result.passed else EXIT_VERDICT


def cmd_inspect(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.host.accel import choose_guest_accel
    from imagefactory.inspection import inspect_image
    from imagefactory.profiles import load_profile
    from imagefactory.vocab import RootPolicy

    profile = load_profile(args.profile)
    result = inspect_image(
        args.image,
        profile,
        declared_format=args.format,
        root_policy=RootPolicy(args.root_policy),
        accel=lambda: choose_guest_accel(settings.accel, settings.cache_dir / "accel.json"),
    )
    if args.json:
        _emit_json(result.to_dict())
    else:
        data = result.to_dict()
        rows = [(f"disk.{k}", v) for k, v in data["disk"].items()]
        rows += [(f"os.{k}", v) for k, v in data["os"].items()]
        rows += [(f"packages.{k}", v) for k, v in data["packages"].items()]
        _table(rows)
        summary = result.audit.summary()
        sys.stdout.write(
            f"audit {profile.id} v{profile.version} (root policy {args.root_policy}): "
            f"{summary['pass']} pass, {summary['fail']} fail, {summary['warn']} warn\n"
        )
        for check in result.audit.results:
            if check.status != "pass" or args.verbose:
                sys.stdout.write(f"  {check.render()}\n")
    return EXIT_OK if result.audit.passed else EXIT_VERDICT


def _table(rows: list[tuple[str, Any]]) -> None:
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        if value is None or value == []:
            text = "-"
        else:
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        sys.stdout.write(f"{key:<{width}}  {text}\n")


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        rows: list[tuple[str, Any]] = []
        for key, inner in value.items():
            rows += _flatten(f"{prefix}.{key}" if prefix else str(key), inner)
        return rows
    return [(prefix, value)]


def cmd_labels_show(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.labels.make import read_labels

    labels = read_labels(args.image_dir)
    if args.json:
        _emit_json(labels)
    else:
        _table(_flatten("", labels))
    return EXIT_OK


def cmd_labels_export(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.labels.exports import image_list_entry, oci_annotations
    from imagefactory.labels.make import read_labels

    labels = read_labels(args.image_dir)
    if args.to == "oci":
        _emit_json(oci_annotations(labels))
    else:
        _emit_json(image_list_entry(labels, uri=args.uri))
    return EXIT_OK


def cmd_host_check(args: argparse.Namespace, settings: Settings) -> int:
    from imagefactory.host.accel import choose_accel
    from imagefactory.host.tools import BUILD_TOOLS, missing, tool_versions
    from imagefactory.mirrors import resolve_archive
    from imagefactory.vocab import Distro

    absent = missing((*BUILD_TOOLS, "qemu-system-x86_64"), Path(sys.executable).parent)
    accel = choose_accel(settings.accel, "qemu-system-x86_64", settings.cache_dir / "accel.json")
    archives = {}
    for distro in Distro:
        release = distro.releases[-1]
        archive = resolve_archive(distro, release.codename, Arch.X86_64, settings.mirrors)
        archives[str(distro)] = {
            "mirror": archive.mirror,
            "security_mirror": archive.security_mirror,
            "origin": archive.origin,
        }
    versions = tool_versions()
    report: dict[str, Any] = {
        "settings": str(settings.source) if settings.source else None,
        "missing_tools": absent,
        "accel": accel,
        "tools": versions,
        "archives": archives,
    }
    if args.json:
        _emit_json(report)
    else:
        sys.stdout.write(f"settings: {report['settings'] or '(defaults)'}\n")
        sys.stdout.write(f"qemu accelerator: {accel}\n")
        for name, info in archives.items():
            sys.stdout.write(f"{name} archive: {info['mirror']} ({info['origin']})\n")
        for name, version in versions.items():
            sys.stdout.write(f"{name}: {version}\n")
        for tool, package in absent.items():
            sys.stdout.write(f"MISSING {tool} (Debian package {package})\n")
    return EXIT_VERDICT if absent else EXIT_OK


# -- parser --------------------------------------------------------------------


def _add_image_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """``inspect`` and ``labels``: commands that read an image or its labels."""
    p = sub.add_parser(
        "inspect",
        parents=[common],
        help="facts and audit of any disk image, read-only, trusting nothing in it",
    )
    p.add_argument("image", type=user_path)
    p.add_argument(
        "--format",
        choices=["qcow2", "raw"],
        help="the format the image must have (checked, never auto-detected)",
    )
    p.add_argument("--profile", default="worker-node-default", help="hardening profile to audit")
    p.add_argument(
        "--root-policy",
        choices=["none", "site-admin", "user"],
        default="none",
        help="the root policy the image claims (what the audit expects)",
    )
    p.set_defaults(func=cmd_inspect)

    labels = sub.add_parser("labels", help="an image's labels.json")
    lsub = labels.add_subparsers(dest="labels_command", required=True, parser_class=_Parser)
    p = lsub.add_parser("show", parents=[common], help="validate and print labels.json")
    p.add_argument("image_dir", type=user_path, metavar="IMAGE-DIR")
    p.set_defaults(func=cmd_labels_show)
    p = lsub.add_parser(
        "export", parents=[common], help="labels as OCI annotations or a HEPiX image-list entry"
    )
    p.add_argument("image_dir", type=user_path, metavar="IMAGE-DIR")
    p.add_argument("--to", choices=["oci", "image-list"], required=True)
    p.add_argument("--uri", help="image-list: where the image can be downloaded (hv:uri)")
    p.set_defaults(func=cmd_labels_export)


def build_parser() -> argparse.ArgumentParser:
    # Common options are accepted before and after the subcommand; SUPPRESS keeps
    # a subcommand's parser from resetting a value given before it.
    common = _Parser(add_help=False)
    common.add_argument(
        "--settings", type=user_path, default=argparse.SUPPRESS, help="host settings file (YAML)"
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show tool output"
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="debug logging and tracebacks",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="machine-readable output on stdout",
    )

    parser = _Parser(
        prog="imagefactory",
        description="Recipes to trustworthy grid worker-node disk images.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"imagefactory {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("build", parents=[common], help="build a recipe into a disk image")
    p.add_argument("recipe", type=user_path, help="recipe YAML file")
    p.add_argument(
        "--output", type=user_path, help="output root (default: settings build.output_dir)"
    )
    p.add_argument("--no-cache", action="store_true", help="build even if the cache has it")
    p.add_argument("--boot-test", action="store_true", help="boot the image as the last step")
    p.add_argument("--boot-timeout", type=float, default=900.0, metavar="SECONDS")
    p.add_argument(
        "--replace",
        action="store_true",
        help="overwrite a different build already published under this version",
    )
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("validate", parents=[common], help="check recipes; prints ok or errors")
    p.add_argument("recipes", type=user_path, nargs="+", metavar="RECIPE")
    p.set_defaults(func=cmd_validate)

    recipe = sub.add_parser("recipe", help="recipe format tools")
    rsub = recipe.add_subparsers(dest="recipe_command", required=True, parser_class=_Parser)
    p = rsub.add_parser("schema", parents=[common], help="print the recipe JSON Schema")
    p.add_argument("--output", type=user_path, help="write to this file instead of stdout")
    p.set_defaults(func=cmd_recipe_schema)
    p = rsub.add_parser("docs", parents=[common], help="print the recipe reference (markdown)")
    p.set_defaults(func=cmd_recipe_docs)
    p = rsub.add_parser("show", parents=[common], help="print the resolved recipe as JSON")
    p.add_argument("recipe", type=user_path)
    p.set_defaults(func=cmd_recipe_show)

    p = sub.add_parser("boot-test", parents=[common], help="boot an image under qemu")
    p.add_argument("image", type=user_path)
    p.add_argument(
        "--format",
        choices=["qcow2", "raw"],
        help="the format the image must have (checked, never auto-detected)",
    )
    p.add_argument("--arch", choices=[a.value for a in Arch], default="x86_64")
    p.add_argument("--timeout", type=float, default=900.0, metavar="SECONDS")
    p.add_argument(
        "--marker",
        default=r"\blogin: ",
        help="regex on the serial console that proves userspace is up",
    )
    p.add_argument("--console-log", type=user_path, help="where to save the serial console")
    p.set_defaults(func=cmd_boot_test)

    _add_image_commands(sub, common)

    host = sub.add_parser("host", help="the build host")
    hsub = host.add_subparsers(dest="host_command", required=True, parser_class=_Parser)
    p = hsub.add_parser(
        "check", parents=[common], help="tools, accelerator, archives and versions of this host"
    )
    p.set_defaults(func=cmd_host_check)

    from imagefactory import cli_sign

    cli_sign.add_parsers(sub, common, _Parser)
    return parser


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``imagefactory`` command."""
    debug = False
    try:
        # The common options' defaults go into the namespace, not set_defaults():
        # that would change the actions shared with every subcommand's parser,
        # which would then reset a value given before the subcommand.
        defaults = argparse.Namespace(settings=None, verbose=False, debug=False, json=False)
        args = build_parser().parse_args(argv, namespace=defaults)
        debug = args.debug
        logging.basicConfig(
            level=logging.DEBUG if args.debug else logging.WARNING,
            format="%(levelname)s: %(message)s",
        )
        # SIGTERM (kill, CI cancel) unwinds like Ctrl-C, so every cleanup runs.
        signal.signal(signal.SIGTERM, _raise_interrupt)
        settings = load_settings(args.settings)
        result: int = args.func(args, settings)
        return result
    except ImageFactoryError as exc:
        if debug:
            log.exception("details")
        sys.stderr.write(f"error: {exc.render()}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; partial results were removed\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR
