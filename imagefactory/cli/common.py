"""What every command module shares: the parser class, path arguments, output."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NoReturn

from imagefactory.errors import UsageError
from imagefactory.vocab import DiskFormat, RootPolicy

#: Disk formats a user may state for ``--format`` (checked, never auto-detected).
STATED_FORMATS = [str(f) for f in DiskFormat]
ROOT_POLICIES = [str(p) for p in RootPolicy]
MiB = 1024 * 1024


class Parser(argparse.ArgumentParser):
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


def catalog_location(text: str) -> str:
    """A catalog's URL as given, or its directory made absolute (see :func:`user_path`)."""
    if "://" in text:
        return text
    return str(user_path(text))


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def table(rows: list[tuple[str, Any]]) -> None:
    """Print ``key  value`` rows aligned; lists joined, empty values as ``-``."""
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        if value is None or value == []:
            text = "-"
        else:
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
        sys.stdout.write(f"{key:<{width}}  {text}\n")


def flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    """A nested mapping as dotted-key rows for :func:`table`."""
    if isinstance(value, dict):
        rows: list[tuple[str, Any]] = []
        for key, inner in value.items():
            rows += flatten(f"{prefix}.{key}" if prefix else str(key), inner)
        return rows
    return [(prefix, value)]
