"""Untrusted names in refusals: shown, never interpreted by the reader's terminal."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
MAX_SHOWN = 200


def shown(text: str) -> str:
    """``text`` quoted for a message: control and bidi characters escaped, length capped."""
    escaped = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    if len(escaped) > MAX_SHOWN:
        escaped = escaped[:MAX_SHOWN] + "..."
    return "'" + escaped.replace("'", "\\'") + "'"
