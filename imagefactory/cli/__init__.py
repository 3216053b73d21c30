"""The ``imagefactory`` command line: one module per command group.

Every error derives from :class:`~imagefactory.errors.ImageFactoryError` and
is caught once, here, in :func:`main`: the user sees ``error: <message>`` and
an exit code, never a traceback (``--debug`` shows one). A command may
declare the exit code its errors get (``set_defaults(error_exit=...)``:
``verify`` and the gate answer 2 for an error, never a verdict's 1).

Exit codes, one table for every command (README.md has it too):

====  =====================================================================
0     success; the image is allowed
1     the answer is "no": invalid recipe, policy or settings; failed audit or
      boot test; an unsafe, non-disk or denied image; ``select``: no image of
      the store matches
2     no answer, the work stopped: bad usage; a file the user named cannot
      be read or written (:class:`~imagefactory.errors.FileAccessError`);
      missing tool; mirror; failed build; an internal error (a bug)
130   interrupted
====  =====================================================================

With ``--json`` stdout always holds one JSON document: a command's result,
or, when it fails, ``{"ok": false, "exit_code": N, "error": {...}}`` written
here.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from imagefactory import __version__
from imagefactory.cli import (
    boot,
    build,
    cache,
    catalog,
    gate,
    host,
    image,
    instances,
    lint,
    recipe,
    select,
    sign,
    store,
    trust,
    verify,
)
from imagefactory.cli.common import Parser, user_path
from imagefactory.errors import EXIT_ERROR, EXIT_INTERRUPTED, ImageFactoryError
from imagefactory.settings import load_settings

__all__ = ["build_parser", "main"]

log = logging.getLogger("imagefactory")

#: The command groups, in the order ``--help`` lists them.
COMMAND_GROUPS = (
    build,
    cache,
    recipe,
    lint,
    boot,
    image,
    host,
    sign,
    verify,
    trust,
    gate,
    catalog,
    store,
    select,
    instances,
)


def build_parser() -> argparse.ArgumentParser:
    # Common options are accepted before and after the subcommand; SUPPRESS keeps
    # a subcommand's parser from resetting a value given before it.
    common = Parser(add_help=False)
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
    parser = Parser(
        prog="imagefactory",
        description="Recipes to trustworthy grid worker-node disk images.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"imagefactory {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for group in COMMAND_GROUPS:
        group.register(sub, common)
    return parser


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``imagefactory`` command."""
    debug = False
    args: argparse.Namespace | None = None
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
        declared = getattr(args, "error_exit", None)
        code = int(declared) if declared is not None else exc.exit_code
        _emit_json_error(args, argv, exc.to_dict(), code)
        return code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; partial results were removed\n")
        _emit_json_error(args, argv, {"type": "Interrupted", "message": "interrupted"}, 130)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as exc:  # the last resort: a bug must not end in a traceback
        # Every expected failure is an ImageFactoryError; reaching this is a bug
        # in imagefactory, reported as one (with --debug: the traceback).
        if debug:
            log.exception("details")
        message = f"internal error (a bug in imagefactory): {type(exc).__name__}: {exc}"
        sys.stderr.write(f"error: {message}\n  hint: run again with --debug and report it\n")
        _emit_json_error(args, argv, {"type": "InternalError", "message": message}, EXIT_ERROR)
        return EXIT_ERROR


def _emit_json_error(
    args: argparse.Namespace | None,
    argv: Sequence[str] | None,
    error: dict[str, object],
    code: int,
) -> None:
    """With ``--json``, a failure is a JSON result on stdout too, never an empty stdout.

    ``--json`` is looked up in the raw arguments when parsing itself failed
    (a usage error), since no namespace exists then.
    """
    if args is not None:
        wanted = bool(args.json)
    else:
        raw = sys.argv[1:] if argv is None else list(argv)
        wanted = "--json" in (raw[: raw.index("--")] if "--" in raw else raw)
    if wanted:
        sys.stdout.write(
            json.dumps({"ok": False, "exit_code": code, "error": error}, indent=2, sort_keys=True)
            + "\n"
        )
