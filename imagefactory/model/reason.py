"""One finding against an image or a request: the type every stage reports with.

A :class:`Reason` has a stable ``code`` (what scripts and tests match on), the
``step`` that found it, and a message for people. The stages that find things
own their tables of codes (:data:`imagefactory.diskformat.REASONS`,
:data:`imagefactory.verify.verdict.REASONS`) and register them here, so a
code nobody documented cannot be reported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: C0/C1 controls, DEL and the bidirectional overrides: what a terminal acts on.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every control or bidi character escaped (``\\x1b``): names read
    from hostile files or requests are shown, never interpreted by the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


DENY = "deny"
NOTE = "note"

_KNOWN: dict[str, str] = {}


def register_codes(table: Mapping[str, str]) -> None:
    """Make the codes of ``table`` (code -> meaning) reportable."""
    _KNOWN.update(table)


@dataclass(frozen=True)
class Reason:
    """One finding: a stable ``code``, the ``step`` that found it, and a message for people.

    ``severity`` is ``deny`` (refused) or ``note`` (a finding that did not
    decide the verdict, e.g. a stray attestation by an unknown key next to
    enough valid ones). ``detail`` refines ``code`` (the disk-format code of
    an ``unsafe-disk``).
    """

    code: str
    step: str
    message: str
    severity: str = DENY
    detail: str | None = None

    def __post_init__(self) -> None:
        if self.code not in _KNOWN:
            raise ValueError(f"unknown reason code {self.code!r}")
        if self.severity not in (DENY, NOTE):
            raise ValueError(f"unknown severity {self.severity!r}")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "code": self.code,
            "step": self.step,
            "severity": self.severity,
            "message": self.message,
        }
        if self.detail is not None:
            data["detail"] = self.detail
        return data

    def render(self) -> str:
        code = f"{self.code}:{self.detail}" if self.detail else self.code
        return printable(f"[{self.step}] {code}: {self.message}")
