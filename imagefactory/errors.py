"""The one error hierarchy of imagefactory.

Every error a user can see derives from :class:`ImageFactoryError`, carries a
message written for that user, and is caught exactly once, in ``cli.main()``.
Lower layers translate foreign exceptions at their boundary
(``raise BuildError(...) from exc``); nothing else escapes as a traceback.

Errors are grouped by who has to act:

* :class:`InputError`   -- the input (a recipe, a settings file, an argument) is
  wrong; the person who wrote it fixes it.
* :class:`HostError`    -- the build host lacks something (a tool, a
  capability); the host's admin fixes it.
* :class:`StageError`   -- a pipeline stage ran and failed (build, boot test).
* :class:`CommandError` -- an external command failed; raised only by
  :func:`imagefactory.run.run`.

Exit codes, the same in every command (the table is in README.md and
``imagefactory/cli/__init__.py``): ``0`` success; ``1`` the answer is "no": a
negative verdict or an invalid document (invalid recipe or policy, failed
audit or boot test, unsafe or denied image); ``2`` no answer: the work
stopped (bad usage, a file that cannot be read, missing tool, mirror, failed
build, internal error); ``130`` interrupted.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_VERDICT = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


class ImageFactoryError(Exception):
    """Base of every user-facing error."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        """The text shown to the user (without the ``error:`` prefix)."""
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message

    def to_dict(self) -> dict[str, object]:
        """The error as ``--json`` output shows it: its kind, message and hint."""
        return {"type": type(self).__name__, "message": self.message, "hint": self.hint}


class InputError(ImageFactoryError):
    """The user's input is wrong."""

    exit_code = EXIT_VERDICT


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a YAML document, pointing at its place.

    ``line`` and ``column`` are 1-based, as editors show them. ``path`` is the
    key path inside the document, e.g. ``.base.distro`` or ``.files[2].path``.
    """

    file: str
    line: int
    column: int
    path: str
    message: str
    hint: str | None = None

    def render(self) -> str:
        text = f"{self.file}:{self.line}:{self.column}: {self.path or '.'}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
        }


class DiagnosticsError(InputError):
    """A document has one or more problems; all of them are reported at once."""

    def __init__(self, kind: str, diagnostics: list[Diagnostic]) -> None:
        count = len(diagnostics)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{kind}: {count} {noun}")
        self.kind = kind
        self.diagnostics = diagnostics

    def render(self) -> str:
        lines = [self.message]
        lines += ["  " + d.render() for d in self.diagnostics]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "problems": [d.to_dict() for d in self.diagnostics]}


class RecipeError(DiagnosticsError):
    """A recipe (or one of the recipes it extends) is invalid."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__("invalid recipe", diagnostics)


class SettingsError(DiagnosticsError):
    """The build host's imagefactory settings file is invalid."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        super().__init__("invalid settings", diagnostics)


class UsageError(InputError):
    """The command line is wrong."""

    exit_code = EXIT_ERROR


class FileAccessError(ImageFactoryError):
    """A file or directory the user named cannot be read or written.

    Exit 2 in every command: the command could not give an answer, which is
    not the same as an answer of "no" (exit 1).
    """

    @classmethod
    def from_os_error(cls, path: object, what: str, exc: OSError) -> FileAccessError:
        """The error for ``exc`` on ``path``, in words ("no such file", ...)."""
        reason = (exc.strerror or str(exc)).lower()
        return cls(f"{path}: cannot {what}: {reason}")


class HostError(ImageFactoryError):
    """The host lacks a tool or capability."""


class ArchiveError(HostError):
    """The package archive (mirror) is unreachable or serves inconsistent files."""


class InconsistentArchiveError(ArchiveError):
    """The archive's package indexes disagree with its signed InRelease files."""

    def __init__(self, message: str, *, suites: tuple[str, ...], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        #: Each inconsistent index as ``SUITE/ARCH`` (``bookworm-security/i386``).
        self.suites = suites


class MissingToolError(HostError):
    """One or more external tools are not installed."""

    def __init__(self, missing: dict[str, str]) -> None:
        tools = ", ".join(sorted(missing))
        packages = " ".join(sorted(set(missing.values())))
        super().__init__(
            f"missing host tools: {tools}",
            hint=f"install the Debian packages: apt-get install {packages}"
            " (scripts/setup does this)",
        )
        self.missing = missing


class StageError(ImageFactoryError):
    """A pipeline stage failed."""


class BuildError(StageError):
    """The build stage failed."""


class BootTestError(StageError):
    """The image did not boot to userspace."""

    exit_code = EXIT_VERDICT


class GuestError(StageError):
    """libguestfs could not open, read or change a disk image."""


class TreeError(StageError):
    """An OS tree on the build host could not be read or changed safely (inside the tree)."""


class HardenError(StageError):
    """A hardening profile could not be loaded or applied."""


class AuditError(StageError):
    """A required audit check failed; :attr:`findings` lists each with its evidence."""

    exit_code = EXIT_VERDICT

    def __init__(self, message: str, findings: list[str], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.findings = findings

    def __str__(self) -> str:
        # Logs and test reports show str(): let them carry the evidence too.
        return self.render()

    def render(self) -> str:
        lines = [self.message, *("  " + f for f in self.findings)]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "findings": list(self.findings)}


class InspectionError(StageError):
    """A fresh inspection could not read what the image's labels claim."""


class LabelError(StageError):
    """Labels could not be made, or do not validate, or contradict the recipe."""


class CommandError(ImageFactoryError):
    """An external command failed. Raised only by :func:`imagefactory.run.run`."""

    def __init__(self, message: str, *, argv: list[str], returncode: int, output: str = "") -> None:
        super().__init__(message)
        self.argv = argv
        self.returncode = returncode
        self.output = output

    def to_dict(self) -> dict[str, object]:
        tail = self.output.rstrip().splitlines()[-40:]
        return {
            **super().to_dict(),
            "argv": self.argv,
            "returncode": self.returncode,
            "output": tail,
        }

    def render(self) -> str:
        text = self.message
        if self.output:
            tail = "\n".join(self.output.rstrip().splitlines()[-40:])
            text += "\n  last output:\n" + "\n".join("    " + line for line in tail.splitlines())
        return text


class CatalogError(ImageFactoryError):
    """The image catalog cannot be created, read, changed or trusted.

    ``code`` names the failure for scripts and tests (``catalog-rollback``,
    ``catalog-expired``, ``catalog-mix-and-match``, ...).
    """

    def __init__(self, message: str, *, code: str = "catalog", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class CatalogRefusedError(CatalogError):
    """The catalog's signed metadata failed a TUF check: nothing from it is used."""

    exit_code = EXIT_VERDICT


class TransportError(ImageFactoryError):
    """A download failed or served something other than what the catalog signed.

    ``code``: ``transport-timeout``, ``transport-redirect``, ``transport-too-long``,
    ``transport-truncated``, ``transport-digest-mismatch``, ``transport-not-found``, ...
    """

    def __init__(self, message: str, *, code: str = "transport", hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class StoreError(ImageFactoryError):
    """The site's image store cannot be used or changed (layout, ownership, disk full)."""
