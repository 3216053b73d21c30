"""Untrusted names in refusals: shown, never interpreted by the reader's terminal."""

from __future__ import annotations

import re

from imagefactory.model.reason import printable

_NEWLINES = re.compile(r"[\n\t]")
MAX_SHOWN = 200


def shown(text: str) -> str:
    """``text`` quoted for a message: control and bidi characters escaped, length capped."""
    escaped = printable(_NEWLINES.sub(lambda m: f"\\x{ord(m.group()):02x}", text))
    if len(escaped) > MAX_SHOWN:
        escaped = escaped[:MAX_SHOWN] + "..."
    return "'" + escaped.replace("'", "\\'") + "'"
