"""qemu's ``key=value,...`` option strings, read the strict way.

qemu has two readers for these strings: ``util/qemu-option.c`` (QemuOpts:
``-drive``, ``-netdev``, ``-device``, ...) and ``util/keyval.c`` (``-blockdev``,
``-machine``, ``-object``, ...). Both split on ``,`` with ``,,`` a literal comma
and take an implied first key (``-device virtio-blk-pci`` is
``driver=virtio-blk-pci``). Where they differ, they differ on forms this
reader refuses, so that a string read here means the same to either:

* an element without ``=`` after the first (QemuOpts reads ``readonly`` as
  ``readonly=on`` and ``noreadonly`` as ``readonly=off``; keyval refuses it);
* a repeated key (QemuOpts lets the last win for most options, keyval
  refuses it);
* a dotted key (keyval makes it a nested option, ``-drive`` hands it to the
  block layer: ``file.filename=``, ``backing.file.filename=``);
* a JSON argument (``{...}``, which ``-device``, ``-blockdev``, ``-object``,
  ``-netdev`` and ``-audiodev`` accept as an alternative syntax);
* ``help`` or ``?`` anywhere (qemu prints help and exits).
"""

from __future__ import annotations

import re

#: A key both readers accept and read alike: no dots, no ``=``, no commas.
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")


class KeyvalError(ValueError):
    """The option string uses a form that is refused (the message says which)."""


def split_escaped(text: str) -> list[str]:
    """``text`` split on single commas, ``,,`` read as a literal comma (both readers' rule)."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1 : i + 2] == ",":
                current.append(",")
                i += 2
                continue
            parts.append("".join(current))
            current = []
        else:
            current.append(text[i])
        i += 1
    parts.append("".join(current))
    return parts


def parse_keyval(text: str, implied: str | None = None) -> dict[str, str]:
    """The keys and values of ``text``; raises :class:`KeyvalError` for a refused form.

    ``implied`` names the key a first element without ``=`` sets (qemu's
    ``implied_key`` / ``firstname``), if the option has one.
    """
    if text.lstrip().startswith("{"):
        raise KeyvalError("JSON option syntax is not accepted here; write key=value,...")
    out: dict[str, str] = {}
    for n, part in enumerate(split_escaped(text)):
        key, sep, value = part.partition("=")
        if not sep:
            if n == 0 and implied is not None and part:
                key, value = implied, part
            else:
                raise KeyvalError(f"{part!r}: write key=value (a bare key reads differently)")
        if not _KEY.match(key):
            raise KeyvalError(f"key {key!r} is not a plain option name (dotted or empty)")
        if key in out:
            raise KeyvalError(f"{key}= given twice")
        if key == "help" or value in ("help", "?"):
            raise KeyvalError(f"{key}={value}: a help request")
        out[key] = value
    return out
