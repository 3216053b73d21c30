"""The ``imagefactory`` command line: one module per command group.

Every error derives from :class:`~imagefactory.errors.ImageFactoryError` and
is caught once, here, in :func:`main`: the user sees ``error: <message>`` and
an exit code, never a traceback (``--debug`` shows one). A command may
declare the exit code its errors get (``set_defaults(error_exit=...)``:
``verify`` and the gate answer 2 for an error, never a verdict's 1).

Exit codes: 0 success; 1 a negative verdict or invalid input (invalid recipe,
failed boot test, unsafe image, denied image); 2 an error that stopped the
work (missing tool, failed build, bad usage); 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from imagefactory import __version__
from imagefactory.cli import (
    boot,
    build,
    catalog,
    gate,
    host,
    image,
    lint,
    recipe,
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
        return int(declared) if declared is not None else exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted; partial results were removed\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_ERROR
